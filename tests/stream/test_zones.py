"""edge_detect.stream.processors.zones: occupancy, entries/exits, dwell, hidden occupants (fake detector)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.errors import ConfigError
from edge_detect.stream.processors.bytetrack import ByteTrack
from edge_detect.stream.processors.zones import ZoneCounter, ZoneSpec, zone_specs
from edge_detect.stream.processors.iou import IoUTracker
from edge_detect.types import Detections
from synthetic_world import Actor, FakeDetector, World, events_of, run_processors

NAMES = ["person", "bicycle", "car"]
BAY = (200, 150, 440, 150, 440, 330, 200, 330)  # x 200..440, y 150..330


def zones(world, spec, detector=None, tracker=None, **kwargs):
    zc = ZoneCounter(spec, names=NAMES, **kwargs)
    out = run_processors(world, detector or FakeDetector(world, noise_px=0.5, seed=21),
                         [tracker or ByteTrack(names=NAMES), zc])
    return zc, out


def test_enter_dwell_exit():
    # bottom-centre enters x > 204 at frame 11 (4 px hysteresis), stays, leaves x < 196 at frame ~41
    w = Actor("w", [(0, 100, 250), (10, 200, 250), (20, 300, 250), (30, 300, 250), (40, 200, 250),
                    (50, 100, 250)], height=100, crop=1)
    world = World([w], 51)
    zc, out = zones(world, {"bay": BAY})
    (enter,) = events_of(out, "zone_enter")
    (leave,) = events_of(out, "zone_exit")
    assert set(enter) == {"type", "zone", "track_id", "class_name", "speed_px_s", "frame", "wall_time"}
    assert set(leave) == set(enter) | {"dwell_s"}
    assert (enter["zone"], enter["track_id"], enter["class_name"], enter["frame"]) == ("bay", 1, "person", 11)
    assert leave["frame"] == 41 and leave["dwell_s"] == pytest.approx(3.0)  # 30 frames at 10 fps
    assert enter["speed_px_s"] == pytest.approx(100, rel=0.1) and leave["speed_px_s"] == pytest.approx(100, rel=0.1)
    zc, out = zones(world, {"bay": {"polygon": BAY, "meters_per_px": 0.02}}, meters_per_px=0.5)
    (enter,) = events_of(out, "zone_enter")
    assert enter["speed_m_s"] == pytest.approx(enter["speed_px_s"] * 0.02, abs=1e-3)  # the zone's scale first
    assert zc.tally.summary() == {"zones": {"bay": {"entered": 1, "exited": 1, "occupancy": 0, "max_occupancy": 1}}}


def test_occupancy_and_max_occupancy():
    actors = [Actor(f"p{i}", [(0, 60, 170 + 50 * i), (10 + 5 * i, 230 + 50 * i, 170 + 50 * i),
                               (40, 230 + 50 * i, 170 + 50 * i)], height=40, crop=1) for i in range(4)]
    actors[3].keyframes.append((45, 460, 320))  # the last one leaves the frame to the right... and is gone
    world = World(actors, 60)
    zc, out = zones(world, {"bay": BAY})
    occupancy = [d.metadata["zones"]["bay"]["occupancy"] for d in out]
    assert max(occupancy) == 4 and occupancy[40] == 4
    assert out[40].metadata["zones"]["bay"]["inside"] == [1, 2, 3, 4]
    assert zc.inside("bay") == [1, 2, 3]  # three never left (absent after frame 40: still "inside", hidden?)
    summary = zc.tally.summary()["zones"]["bay"]
    assert summary == {"entered": 4, "exited": 1, "occupancy": 3, "max_occupancy": 4}
    dwell = zc.dwell("bay")
    assert sorted(dwell) == [1, 2, 3] and all(v > 2.0 for v in dwell.values())


def test_hidden_occupant_stays_inside_and_ended_track_exits():
    w = Actor("w", [(0, 100, 250), (10, 300, 250), (80, 300, 250)], height=100, crop=1)
    world = World([w], 81)
    hidden = set(range(20, 30))  # hidden 1 s inside the zone
    det = FakeDetector(world, noise_px=0.5)
    gone = set(range(40, 81))  # then gone for good: the tracker ends it after its 2 s buffer
    zc, out = zones(world, {"bay": BAY}, detector=lambda f: Detections.empty() if f in hidden | gone else det(f))
    assert [e["type"] for d in out for e in d.metadata["events"] if e["type"].startswith("zone")] == \
        ["zone_enter", "zone_exit"]
    (leave,) = events_of(out, "zone_exit")
    (end,) = events_of(out, "object_end")
    assert leave["frame"] == end["frame"]  # exits when the tracker ends the track...
    enter_frame = events_of(out, "zone_enter")[0]["frame"]
    assert leave["dwell_s"] == pytest.approx((39 - enter_frame) / 10)  # ...with the dwell up to its last sighting
    assert all(d.metadata["zones"]["bay"]["occupancy"] == 1 for d in out[20:30])


def test_lost_timeout_without_end_events():
    w = Actor("w", [(0, 100, 250), (40, 300, 250), (60, 300, 250)], height=100, crop=1)
    world = World([w], 61)
    det = FakeDetector(world, noise_px=0.0)

    zc, out = zones(world, {"bay": BAY}, detector=lambda f: Detections.empty() if f > 30 else det(f),
                    tracker=IoUTracker(), lost_s=1.5)  # no end events
    (leave,) = events_of(out, "zone_exit")
    assert leave["frame"] == 46  # unseen for more than 1.5 s after frame 30
    assert zc.tally.summary()["zones"]["bay"]["occupancy"] == 0


def test_boundary_jitter_enters_once():
    rng = np.random.default_rng(1)
    jit = {f: (float(rng.uniform(-3, 3)), 0.0) for f in range(10, 40)}
    w = Actor("w", [(0, 100, 250), (10, 200, 250), (40, 200, 250), (50, 300, 250)], height=100, crop=1, jitter=jit)
    world = World([w], 51)
    zc, out = zones(world, {"bay": BAY})
    assert zc.tally.summary()["zones"]["bay"] == {"entered": 1, "exited": 0, "occupancy": 1, "max_occupancy": 1}
    zc, _ = zones(world, {"bay": BAY}, hysteresis_px=0)
    assert zc.tally.summary()["zones"]["bay"]["entered"] > 1


def test_first_seen_inside_enters_and_class_filter():
    actors = [Actor("p", [(0, 300, 250), (20, 300, 250)], 80, 1, class_id=0),
              Actor("car", [(0, 380, 300), (20, 380, 300)], 80, 1, class_id=2)]
    world = World(actors, 21)
    zc, out = zones(world, {"bay": BAY, "cars": {"polygon": BAY, "classes": ["car"]}})
    assert zc.tally.summary()["zones"]["bay"]["entered"] == 2
    assert zc.tally.summary()["zones"]["cars"]["entered"] == 1
    cars = [e for e in events_of(out, "zone_enter") if e["zone"] == "cars"]
    assert [e["class_name"] for e in cars] == ["car"] and cars[0]["frame"] == 2  # on confirmation (3 hits)


def test_concave_zone_and_anchor():
    notch = (0, 0, 480, 0, 480, 120, 160, 120, 160, 360, 0, 360)  # an L: the lower right is outside
    w = Actor("w", [(0, 80, 300), (40, 400, 300)], height=200, crop=1)  # walks from the L's leg into the notch
    world = World([w], 41)
    zc, out = zones(world, {"l": notch})
    assert [e["type"] for e in events_of(out, "zone_enter") + events_of(out, "zone_exit")] == ["zone_enter",
                                                                                             "zone_exit"]
    zc, _ = zones(world, {"l": {"polygon": notch, "anchor": "top_center"}})  # the head stays in the L's arm
    assert zc.tally.summary()["zones"]["l"] == {"entered": 1, "exited": 0, "occupancy": 1, "max_occupancy": 1}


@pytest.mark.parametrize("spec, message", [
    (["bay=0,0,10,0"], "--zone bay: expected an even number of at least 6 numbers"),
    (["bay=0,0,10,0,10"], "--zone bay: expected an even number of at least 6 numbers"),
    (["bay=0,0,10,10,20,20"], "zone bay: expected a polygon with a non-zero area"),
    (["bay:0,0,1,0,1,1"], "--zone: expected NAME=x1,y1,x2,y2,x3,y3[,...], got 'bay:0,0,1,0,1,1'"),
    (["a=0,0,1,0,1,1", "a=0,0,2,0,2,2"], "zones: expected unique names, got 'a' twice"),
    ({"z": {"polygon": [0, 0, 1, 0, 1, 1], "classes": ["unicorn"]}}, "zone z classes: expected a class name"),
    ({"z": {"poly": [0, 0, 1, 0, 1, 1]}}, "zone z: unknown key 'poly'"),
    ({}, "zones: expected at least one zone, got none"),
])
def test_bad_zone_configs(spec, message):
    with pytest.raises(ConfigError) as info:
        ZoneCounter(spec, names=NAMES)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_zone_specs_forms_agree():
    flat = zone_specs(["z=0,0,10,0,10,10"])[0].polygon
    pairs = zone_specs({"z": [[0, 0], [10, 0], [10, 10]]})[0].polygon
    assert flat == (0.0, 0.0, 10.0, 0.0, 10.0, 10.0) and pairs == (0, 0, 10, 0, 10, 10)
    assert zone_specs([ZoneSpec("z", flat, ("car",))])[0].classes == ("car",)
