"""Event envelope, schema, object_update throttling, merging of event sinks, snapshots and retention."""
from __future__ import annotations

import os
import time

import cv2
import pytest

from fakes_events import make_result

from edge_detect.sinks import open_sink
from edge_detect.sinks.base import Sink
from edge_detect.sinks.events import (SCHEMA_VERSION, EventBuilder, EventsSink, EventTransport, arrange_sinks,
                                      load_schema, validate_event)
from edge_detect.sinks.snapshots import SnapshotWriter
from edge_detect.types import event_types

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed (pip install -e '.[dev]')")


class ListTransport(EventTransport):
    name = "list"

    def __init__(self):
        self.events, self.stats, self.closed = [], [], 0

    def send(self, event):
        self.events.append(dict(event))

    def send_stats(self, source_id, stats):
        self.stats.append((source_id, stats))

    def close(self):
        self.closed += 1


LINE = {"type": "line_cross", "line": "gate", "direction": "out", "track_id": 3, "class_name": "car"}


def test_envelope_fields_and_schema():
    b = EventBuilder(update_interval_s=0)
    evs = b.build(make_result(7, 1700000000.5, events=[LINE, {**LINE, "direction": "in", "frame": 6}]))
    assert [e["seq"] for e in evs] == [1, 2] and len({e["id"] for e in evs}) == 2
    e = evs[0]
    assert {k: e[k] for k in ("schema", "type", "source", "frame", "wall_time", "line", "direction", "track_id")} == \
        {"schema": SCHEMA_VERSION, "type": "line_cross", "source": "cam", "frame": 7, "wall_time": 1700000000.5,
         "line": "gate", "direction": "out", "track_id": 3}
    assert evs[1]["frame"] == 6  # a processor's own frame wins
    for ev in evs:
        validate_event(ev)
    assert b.build(make_result(8, 1700000001.0, source="other", events=[LINE]))[0]["seq"] == 1  # per source
    assert b.build(make_result(9, 1700000001.0, events=[LINE]))[0]["seq"] == 3


@pytest.mark.parametrize("event, path", [
    ({"type": "line_cross", "line": "g", "direction": "sideways", "track_id": 1, "class_name": "p"}, "direction"),
    ({"type": "line_cross", "direction": "in", "track_id": 1, "class_name": "p"}, "line"),
    ({"type": "zone_exit", "zone": "z", "track_id": 1, "class_name": "p"}, "dwell_s"),
    ({"type": "object_new", "track_id": 1, "class_name": "p", "score": 0.5, "xyxy": [1, 2, 3]}, "xyxy"),
    ({"type": "object_end", "track_id": 1, "class_name": "p", "first_seen": 1.0, "first_frame": 0,
      "last_frame": 3, "best_score": 0.9}, "last_seen"),
    ({"type": "teleport"}, "type"),
    ({**LINE, "speed_px_s": -3.0}, "speed_px_s"),
    ({"type": "object_end", "track_id": 1, "class_name": "p", "first_seen": 1.0, "last_seen": 2.0, "first_frame": 0,
      "last_frame": 3, "best_score": 0.9, "exited": "sideways"}, "exited"),
])
def test_schema_rejects_bad_events(event, path):
    ev = EventBuilder().build(make_result(1, 1.0, events=[event]))[0]
    with pytest.raises(jsonschema.ValidationError) as info:
        validate_event(ev)
    assert path in str(info.value)


def test_schema_is_package_data_and_valid():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]["type"]["enum"]) == {"line_cross", "zone_enter", "zone_exit", "dwell", "object_new",
                                                         "object_update", "object_end", "clip_saved"}
    assert set(schema["properties"]["type"]["enum"]) == set(event_types())  # one typed class per schema type


def test_object_update_throttled_per_track_and_forgotten_after_end():
    b = EventBuilder(update_interval_s=2.0)
    updates = []
    for i in range(50):  # 10 FPS for 5 s, tracks 1 and 2 visible all along
        events = [{"type": "object_end", "track_id": 2, "class_name": "person", "first_seen": 0.0, "last_seen": 2.5,
                   "first_frame": 0, "last_frame": 25, "best_score": 0.8}] if i == 25 else []
        for ev in b.build(make_result(i, 100.0 + i / 10, events=events, track_ids=(1, 2) if i < 25 else (1,))):
            if ev["type"] == "object_update":
                validate_event(ev)
                updates.append((ev["track_id"], ev["frame"], ev["first_seen"]))
    assert updates == [(1, 20, 100.0), (2, 20, 100.0), (1, 40, 100.0)]
    assert EventBuilder(update_interval_s=0).build(make_result(60, 200.0)) == []


def test_events_sink_fans_out_same_events_and_writes_snapshot_first(tmp_path):
    a, b = ListTransport(), ListTransport()
    seen = []

    class Check(ListTransport):
        def send(self, event):  # the snapshot exists when a transport gets the event
            seen.append(os.path.getsize(event["snapshot"]) > 0)

    sink = EventsSink([a, b, Check()], snapshots=SnapshotWriter(tmp_path, crop=True), update_interval_s=0,
                      stats_interval_s=0)
    sink.start([])
    sink.write(make_result(3, 10.0, events=[LINE, {**LINE, "track_id": 1}]))
    sink.write(make_result(4, 10.1))
    sink.close()
    assert a.events == b.events and len(a.events) == 2 and seen == [True, True]
    assert a.events[0]["snapshot"] == str(tmp_path / "cam" / "cam-00000003.jpg")
    assert "snapshot_crop" not in a.events[0]  # track 3 is not in the frame
    crop = cv2.imread(a.events[1]["snapshot_crop"])
    assert crop.shape == (58, 40, 3)  # box x 8..40, y 8..56 plus 10 % margins: x 4..44, y 3..61
    assert cv2.imread(a.events[0]["snapshot"]).shape == (64, 96, 3)
    assert a.closed == b.closed == 1


def test_snapshot_retention_by_count_and_age(tmp_path):
    old = tmp_path / "cam" / "cam-00000001.jpg"
    old.parent.mkdir()
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    w = SnapshotWriter(tmp_path, keep=3, max_age_s=600)
    assert old.exists()  # nothing deleted before the first write (a run that fails at start deletes nothing)
    w.write(make_result(10, 1.0), [{}])
    assert not old.exists()  # older than max_age_s, from an earlier run
    for i in range(1, 5):
        w.write(make_result(10 + i, 1.0), [{}])
    assert [p.name for p in w.files] == ["cam-00000012.jpg", "cam-00000013.jpg", "cam-00000014.jpg"]
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == [p.name for p in w.files]


class Other(Sink):
    name = "other"

    def write(self, result):
        pass


def test_arrange_sinks_merges_event_sinks_and_puts_metrics_last(tmp_path):
    mq, wh = EventsSink([ListTransport()]), EventsSink([ListTransport()])
    settings = open_sink("events", snapshots=str(tmp_path / "s"), update_interval_s=1.5)
    last = Other()
    last.runs_last = True
    first = Other()
    out = arrange_sinks([last, mq, first, wh, settings])
    hub = out[0]
    assert out == [hub, first, last]
    assert hub is settings and len(hub.transports) == 2 and hub.builder.update_interval_s == 1.5
    assert hub.snapshots is not None
    hub.close()


def test_object_end_carries_the_last_snapshot_that_showed_the_object(tmp_path):
    t = ListTransport()
    sink = EventsSink([t], snapshots=SnapshotWriter(tmp_path), update_interval_s=0, stats_interval_s=0)
    sink.start([])
    new = {"type": "object_new", "track_id": 1, "class_name": "person", "score": 0.8, "xyxy": [8, 8, 40, 56]}
    end = {"type": "object_end", "track_id": 1, "class_name": "person", "first_seen": 1.0, "last_seen": 1.2,
           "first_frame": 3, "last_frame": 4, "best_score": 0.8}
    sink.write(make_result(3, 1.0, events=[new], track_ids=(1,)))
    sink.write(make_result(4, 1.1, events=[{**LINE, "track_id": 1}], track_ids=(1, 2)))
    sink.write(make_result(9, 1.5, events=[end], track_ids=(2,)))
    sink.close()
    ended = t.events[-1]
    validate_event(ended)
    assert ended["snapshot"].endswith("cam-00000009.jpg") and ended["last_snapshot"].endswith("cam-00000004.jpg")
    assert "last_snapshot" not in t.events[0] and (1, 2) == (t.events[0]["track_id"], len(sink._track_snaps) + 1)
