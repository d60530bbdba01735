"""edge_detect.stream.processors.lines: exact counts and directions on scripted scenes (fake detector)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.errors import ConfigError
from edge_detect.stream.processors._common import parse_named_numbers
from edge_detect.stream.processors.bytetrack import ByteTrack
from edge_detect.stream.processors.lines import LineCounter, LineSpec, line_specs
from edge_detect.types import Detections
from synthetic_world import GATE, Actor, FakeDetector, World, events_of, gate_scene, run_processors

NAMES = ["person", "bicycle", "car"]


def count(world, lines, detector=None, tracker=None, **kwargs):
    lc = LineCounter(lines, names=NAMES, **kwargs)
    out = run_processors(world, detector or FakeDetector(world, noise_px=1.0, seed=11),
                         [tracker or ByteTrack(names=NAMES), lc])
    return lc, out


def walker(keys, height=100, crop=1, **kw):
    return Actor("w", keys, height=height, crop=crop, **kw)


def test_gate_scene_exact_counts_and_events():
    world, expected = gate_scene()
    lc, out = count(world, {"gate": GATE})
    assert lc.counts == {"gate": expected}
    crossings = events_of(out, "line_cross")
    # a (id 1) left->right = out, c (id 2) right->left = in, at the same frames; b (3) hidden: in; e (5): out
    assert [(e["track_id"], e["direction"]) for e in crossings] == [(1, "out"), (2, "in"), (3, "in"), (5, "out")]
    assert crossings[0]["frame"] == crossings[1]["frame"]  # simultaneous
    assert 66 <= crossings[2]["frame"] <= 78  # b counted when it reappears from behind the pillar
    assert set(crossings[0]) == {"type", "line", "direction", "track_id", "class_name", "speed_px_s", "frame",
                                 "wall_time"}
    assert crossings[0]["speed_px_s"] == pytest.approx(440 / 4.4, rel=0.1)  # a: 440 px in 44 frames at 10 fps
    assert crossings[0]["class_name"] == "person" and crossings[0]["line"] == "gate"
    assert crossings[0]["wall_time"] == pytest.approx(world.frame(crossings[0]["frame"]).wall_time)
    assert lc.tally.summary() == {"lines": {"gate": {"in": 2, "out": 2, "by_class": {"person": {"in": 2, "out": 2}}}}}
    assert out[-1].metadata["lines"] == {"gate": {"xyxy": list(GATE), "in": 2, "out": 2}}


# line, walker from -> to (bottom-centre x, y): expected direction ("in" = left of the line to its right)
DIRECTION_TABLE = [
    ((240, 0, 240, 360), (60, 200), (420, 200), "out"),   # downward line, walking left->right
    ((240, 0, 240, 360), (420, 200), (60, 200), "in"),
    ((240, 360, 240, 0), (60, 200), (420, 200), "in"),    # upward line
    ((240, 360, 240, 0), (420, 200), (60, 200), "out"),
    ((0, 180, 480, 180), (240, 120), (240, 300), "in"),   # rightward line, walking down
    ((0, 180, 480, 180), (240, 300), (240, 120), "out"),
    ((480, 180, 0, 180), (240, 120), (240, 300), "out"),  # leftward line
    ((100, 100, 400, 300), (300, 120), (150, 300), "in"),  # diagonal, walking down-left
]


@pytest.mark.parametrize("line, start, end, direction", DIRECTION_TABLE)
def test_direction_table(line, start, end, direction):
    world = World([walker([(0, *start), (60, *end)], height=60)], 61)
    lc, out = count(world, {"l": line})
    assert lc.counts["l"] == {"in": int(direction == "in"), "out": int(direction == "out")}
    assert [e["direction"] for e in events_of(out, "line_cross")] == [direction]


def test_touch_and_go_back_does_not_count():
    # reaches 2 px past the line (inside the 4 px band), waits, walks back
    world = World([walker([(0, 40, 200), (20, 242, 200), (24, 242, 200), (44, 40, 200)])], 45)
    lc, _ = count(world, {"gate": GATE}, detector=FakeDetector(world, noise_px=0.5, seed=3))
    assert lc.counts["gate"] == {"in": 0, "out": 0}


def test_jitter_on_the_line_counts_once_per_real_crossing():
    rng = np.random.default_rng(5)
    jit = {f: (float(rng.uniform(-3, 3)), 0.0) for f in range(20, 40)}  # +-3 px around the line, 20 frames
    world = World([walker([(0, 40, 200), (20, 240, 200), (40, 240, 200), (60, 440, 200)], jitter=jit)], 61)
    for rule in ("once", "crossing"):  # even counting every crossing, hysteresis makes it one
        lc, out = count(world, {"gate": GATE}, detector=FakeDetector(world, noise_px=0.5, seed=3), count=rule)
        assert lc.counts["gate"] == {"in": 0, "out": 1}
    # without the band nor the confirmation the same jitter counts many crossings; the band alone makes it one
    det = lambda: FakeDetector(world, noise_px=0.5, seed=3)  # noqa: E731
    lc, _ = count(world, {"gate": GATE}, detector=det(), hysteresis_px=0, hysteresis_frac=0, confirm_frames=1)
    assert lc.counts["gate"]["out"] + lc.counts["gate"]["in"] > 3
    lc, _ = count(world, {"gate": GATE}, detector=det(), confirm_frames=1)
    assert lc.counts["gate"] == {"in": 0, "out": 1}


def test_jitter_wider_than_4px_on_a_wide_box_counts_once():
    # a 100 px wide vehicle (0.1 x width = 10 px band) standing on the line shaking +-7 px for 30 frames
    rng = np.random.default_rng(9)
    jit = {f: (float(rng.choice([-7.0, 7.0])), 0.0) for f in range(20, 50)}
    world = World([Actor("car", [(0, 40, 250), (20, 240, 250), (50, 240, 250), (70, 440, 250)], height=70,
                         crop=5, class_id=2, jitter=jit)], 71)
    lc, out = count(world, {"gate": GATE}, detector=FakeDetector(world, noise_px=0.5, seed=4))
    assert lc.counts["gate"] == {"in": 0, "out": 1}
    lc, _ = count(world, {"gate": GATE}, detector=FakeDetector(world, noise_px=0.5, seed=4), hysteresis_frac=0)
    assert lc.counts["gate"]["in"] >= 1  # a 4 px band alone: the shaking counts back and forth


def test_every_crossing_counts_by_default_and_once_per_track_on_request():
    # crosses left->right, comes back right->left, crosses again left->right
    keys = [(0, 60, 200), (15, 300, 200), (18, 300, 200), (33, 160, 200), (36, 160, 200), (51, 420, 200)]
    world = World([walker(keys)], 52)
    for kwargs in ({}, {"count": "crossing"}, {"recount": True}):
        lc, out = count(world, {"gate": GATE}, **kwargs)
        assert lc.count == "crossing" and lc.counts["gate"] == {"in": 1, "out": 2}
        assert [e["direction"] for e in events_of(out, "line_cross")] == ["out", "in", "out"]
    for kwargs in ({"count": "once"}, {"recount": False}):
        lc, _ = count(world, {"gate": GATE}, **kwargs)
        assert lc.count == "once" and lc.counts["gate"] == {"in": 0, "out": 1}


@pytest.mark.parametrize("kwargs, message", [
    ({"count": "twice"}, "lines count: expected one of crossing, once, got 'twice'"),
    ({"count": "once", "recount": True}, "lines: count 'once' and recount True disagree"),
    ({"hysteresis_frac": -0.1}, "lines hysteresis_frac: expected >= 0, got -0.1"),
    ({"confirm_frames": 0}, "lines confirm_frames: expected an integer >= 1, got 0"),
    ({"meters_per_px": 0}, "lines meters_per_px: expected a number > 0 (metres per pixel) or null, got 0"),
])
def test_bad_counting_rule_options(kwargs, message):
    with pytest.raises(ConfigError) as info:
        LineCounter({"gate": GATE}, **kwargs)
    assert message in str(info.value)


def test_a_track_id_reused_for_a_second_object_cannot_swallow_its_crossing():
    # an identity error: a tracker hands a's id to b, who comes back the other way 1 s after a left
    world = World([walker([(0, 40, 200), (30, 500, 200)]), walker([(40, 500, 220), (70, 40, 220)])], 71)
    det = FakeDetector(world, noise_px=1.0, seed=5)

    def one_id(f):
        d = det(f)
        return Detections(d.xyxy, d.score, d.class_id, np.ones(len(d), np.int64))

    counts = {}
    for rule in ("crossing", "once"):
        lc = LineCounter({"gate": GATE}, count=rule)
        run_processors(world, one_id, [lc])
        counts[rule] = lc.counts["gate"]
    assert counts == {"crossing": {"in": 1, "out": 1}, "once": {"in": 0, "out": 1}}


def test_a_fast_object_confirmed_after_it_crossed_still_counts():
    # 60 px/frame (1.5 widths): sighted at x 20, 80, confirmed on its third sighting at 140, past the line at 100
    world = World([walker([(0, 20, 200), (7, 440, 200)], height=130)], 8)
    line = {"l": (100, 0, 100, 360)}
    lc, out = count(world, line)
    assert lc.counts["l"] == {"in": 0, "out": 1}
    (ev,) = events_of(out, "line_cross")
    assert ev["frame"] == 3 and ev["track_id"] == 1  # its second observation past the line (confirm_frames 2)
    assert count(world, line, use_trail=False)[0].counts["l"] == {"in": 0, "out": 0}  # first sighting past it
    assert count(world, line, anchor="center")[0].counts["l"] == {"in": 0, "out": 0}  # trails are feet points


def _line_from(world, start, lines, **kwargs):
    """Track every frame; a fresh LineCounter (a line drawn, or the chain rebuilt, while running) from ``start``."""
    det, tracker, lc = FakeDetector(world, noise_px=1.0, seed=11), ByteTrack(names=NAMES), None
    out = []
    for f in range(world.frames):
        frame, dets = world.frame(f), tracker.update(det(f), world.frame(f))
        if f == start:
            lc = LineCounter(lines, names=NAMES, **kwargs)
        out.append(lc.update(dets, frame) if lc is not None else dets)
    return lc, out


def test_a_line_drawn_after_a_crossing_does_not_count_it_but_counts_the_next():
    # walks right past x 200 (frame ~10), then back left (frame ~30); the line appears at frame 15, between them
    world = World([walker([(0, 100, 200), (20, 300, 200), (40, 100, 200)])], 41)
    line = {"l": (200, 0, 200, 360)}
    assert count(world, line)[0].counts["l"] == {"in": 1, "out": 1}  # from the start: both
    lc, out = _line_from(world, 15, line)
    assert lc.counts["l"] == {"in": 1, "out": 0}  # the trail before the line is not replayed against it
    (ev,) = events_of(out, "line_cross")
    assert ev["direction"] == "in" and ev["frame"] > 30


def test_a_line_drawn_before_the_crossing_counts_it_at_the_same_frame():
    world = World([walker([(0, 100, 200), (20, 300, 200)])], 25)
    line = {"l": (200, 0, 200, 360)}
    whole = events_of(count(world, line)[1], "line_cross")
    lc, out = _line_from(world, 4, line)
    assert [(e["direction"], e["frame"]) for e in events_of(out, "line_cross")] == \
        [(e["direction"], e["frame"]) for e in whole] == [("out", whole[0]["frame"])]


def test_a_crossing_still_pending_when_the_track_ends_counts():
    # seen on the far side of the line on one frame only before it vanishes: counted when its track ends
    world = World([walker([(0, 40, 200), (20, 250, 200)])], 60)  # vanishes after frame 20 (x 250, 10 px past it)
    lc, out = count(world, {"gate": GATE})
    (ev,) = events_of(out, "line_cross")
    end = [e["frame"] for e in events_of(out, "object_end")]
    assert ev["direction"] == "out" and [ev["frame"]] == end
    short = World(world.actors, 25)  # the source ends while the track is lost
    lc, out = count(short, {"gate": GATE})
    assert events_of(out, "line_cross") == [] and lc.counts["gate"] == {"in": 0, "out": 0}  # still pending
    (ev,) = lc.finish(short.frame(24))
    assert (ev["direction"], ev["frame"]) == ("out", 24) and lc.counts["gate"] == {"in": 0, "out": 1}
    assert lc.finish(short.frame(24)) == []


def test_crossing_outside_the_segment_does_not_count():
    world = World([walker([(0, 60, 300), (30, 420, 300)]), Actor("v", [(0, 60, 150), (30, 420, 150)], 100, 1)], 31)
    lc, out = count(world, {"short": (240, 0, 240, 200)})  # only the upper 200 px: v crosses it, w passes below
    assert lc.counts["short"] == {"in": 0, "out": 1}
    (ev,) = events_of(out, "line_cross")
    v_id = next(int(t) for t, b in zip(out[5].track_id, out[5].xyxy) if b[3] < 200)
    assert ev["track_id"] == v_id
    lc, _ = count(world, {"short": (240, 0, 240, 200)}, extent_margin_px=120)  # a margin reaching y 320
    assert lc.counts["short"] == {"in": 0, "out": 2}


@pytest.mark.parametrize("line, keys, direction", [
    ((0, 345, 480, 345), [(0, 240, 250), (20, 240, 420)], "in"),      # 15 px above the bottom edge, walking out
    ((460, 0, 460, 360), [(0, 300, 200), (20, 520, 200)], "out"),     # 20 px from the right edge
    ((20, 360, 20, 0), [(0, 200, 200), (20, -60, 200)], "out"),       # 20 px from the left edge
])
def test_line_near_the_frame_edge_counts(line, keys, direction):
    world = World([walker(keys)], keys[-1][0] + 1)
    lc, _ = count(world, {"edge": line})
    assert lc.counts["edge"] == {"in": int(direction == "in"), "out": int(direction == "out")}


def test_simultaneous_crossings_in_both_directions():
    actors = [Actor(f"p{i}", [(0, 40 if i % 2 else 440, 60 + 70 * i), (60, 440 if i % 2 else 40, 60 + 70 * i)],
                    height=55, crop=1) for i in range(5)]
    world = World(actors, 61)
    lc, out = count(world, {"gate": GATE})
    assert lc.counts["gate"] == {"in": 3, "out": 2}
    frames = {e["frame"] for e in events_of(out, "line_cross")}
    assert len(frames) == 1 and len({e["track_id"] for e in events_of(out, "line_cross")}) == 5


def test_hidden_crossing_counts_once_with_stitching_and_is_missed_without():
    from test_bytetrack import slowing_walker

    world = slowing_walker(12.0)  # hidden ~1 s behind the pillar [180, 300] while crossing x = 240
    lc, _ = count(world, {"gate": GATE})
    assert lc.counts["gate"] == {"in": 0, "out": 1}
    lc, _ = count(world, {"gate": GATE}, tracker=ByteTrack(stitch=False))
    assert lc.counts["gate"] == {"in": 0, "out": 0}  # the split tracks each only saw one side


def test_class_filters_and_by_class():
    actors = [Actor("p", [(0, 40, 100), (60, 440, 100)], 60, 1, class_id=0),
              Actor("car", [(0, 40, 250), (60, 440, 250)], 60, 1, class_id=2),
              Actor("bike", [(0, 440, 340), (60, 40, 340)], 60, 1, class_id=1)]
    world = World(actors, 61)
    specs = {"all": GATE, "cars": {"xyxy": GATE, "classes": ["car"]}, "ids": {"points": GATE, "classes": [0, 1]}}
    lc, _ = count(world, specs)
    assert lc.tally.summary()["lines"] == {
        "all": {"in": 1, "out": 2, "by_class": {"bicycle": {"in": 1, "out": 0}, "car": {"in": 0, "out": 1},
                                                "person": {"in": 0, "out": 1}}},
        "cars": {"in": 0, "out": 1, "by_class": {"car": {"in": 0, "out": 1}}},
        "ids": {"in": 1, "out": 1, "by_class": {"bicycle": {"in": 1, "out": 0}, "person": {"in": 0, "out": 1}}},
    }


def test_anchor_choice_matters():
    # a tall box whose top crosses a horizontal line while its bottom stays below it
    world = World([walker([(0, 240, 330), (20, 240, 260)], height=150)], 21)
    line = {"l": (0, 150, 480, 150)}
    assert count(world, line)[0].counts["l"] == {"in": 0, "out": 0}
    assert count(world, line, anchor="top_center")[0].counts["l"] == {"in": 0, "out": 1}


def test_untracked_and_unconfirmed_detections_are_ignored():
    lc = LineCounter({"gate": GATE})
    world = World([walker([(0, 40, 200), (30, 440, 200)])], 31)
    det = FakeDetector(world)
    for f in range(31):
        d = det(f)
        lc.update(Detections(d.xyxy, d.score, d.class_id, np.full(len(d), -1)), world.frame(f))
        lc.update(det(f), world.frame(f))  # no track_id at all
    assert lc.counts == {"gate": {"in": 0, "out": 0}}


def test_clone_keeps_lines_and_resets_counts():
    world, expected = gate_scene()
    lc, _ = count(world, {"gate": GATE})
    twin = lc.clone()
    assert twin.counts == {"gate": {"in": 0, "out": 0}}
    run_processors(world, FakeDetector(world, seed=11), [ByteTrack(), twin])
    assert twin.counts == {"gate": expected}


@pytest.mark.parametrize("name", ["gäte", "门", "Tor_2-b.x", "ÉTÉ"])
def test_line_names_take_unicode_letters(name):
    assert parse_named_numbers(f"{name}=1,2,3,4", "--line", count=4) == (name, [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("name", ["a/b", "a+b", "a#", "a b", "a\tb"])
def test_line_names_refuse_topic_and_path_characters(name):
    with pytest.raises(ConfigError, match="expected a name of letters, digits"):
        parse_named_numbers(f"{name}=1,2,3,4", "--line", count=4)


@pytest.mark.parametrize("text, count_, message", [
    ("gate", 4, "--line: expected NAME=x1,y1,x2,y2, got 'gate'"),
    ("=1,2,3,4", 4, "--line: expected a name of letters, digits, '_', '-' or '.' before '=', got ''"),
    ("g ate=1,2,3,4", 4, "--line: expected a name of letters"),
    ("gate=1,2,3", 4, "--line gate: expected 4 numbers (NAME=x1,y1,x2,y2), got 3"),
    ("gate=1,2,3,4,5", 4, "--line gate: expected 4 numbers (NAME=x1,y1,x2,y2), got 5"),
    ("gate=1,2,x,4", 4, "--line gate: expected numbers separated by commas, got '1,2,x,4'"),
    ("gate=1,,3,4", 4, "--line gate: expected numbers separated by commas"),
    ("gate=1,2,nan,4", 4, "--line gate: expected finite numbers"),
])
def test_parse_line_flag_errors(text, count_, message):
    with pytest.raises(ConfigError) as info:
        parse_named_numbers(text, "--line", count=count_)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("lines, message", [
    (["gate=0,0,0,0"], "line gate: expected two distinct endpoints"),
    (["a=0,0,1,1", "a=5,5,6,6"], "lines: expected unique names, got 'a' twice"),
    ({"g": {"xyxy": [0, 0, 1, 1], "colour": "red"}}, "line g: unknown key 'colour'"),
    ({"g": {"classes": ["car"]}}, "line g: expected 'xyxy: [x1, y1, x2, y2]', got no points"),
    ({"g": {"xyxy": [0, 0, 1, 1], "anchor": "feet"}}, "line g anchor: expected one of bottom_center"),
    ({"g": {"xyxy": [0, 0, 1, 1], "classes": ["unicorn"]}}, "line g classes: expected a class name of the model"),
    ({"g": {"xyxy": [0, 0, 1, 1], "classes": [7]}}, "line g classes: expected ids in [0, 2], got 7"),
    ({"g": {"xyxy": [0, 0, 1, 1], "meters_per_px": -1}}, "line g meters_per_px: expected a number > 0 (metres per "
                                                          "pixel) or null, got -1"),
    ({"g": {"xyxy": [0, 0, 1, 1], "scale": 1}}, "line g: unknown key 'scale'; expected xyxy (or points), classes, "
                                                "anchor, meters_per_px"),
    ({}, "lines: expected at least one line, got none"),
    ([42], "lines: expected NAME=x1,y1,x2,y2 or a mapping of names to points, got 42"),
])
def test_bad_line_configs(lines, message):
    with pytest.raises(ConfigError) as info:
        LineCounter(lines, names=NAMES)
    assert message in str(info.value)


def test_line_specs_forms_agree():
    a = line_specs(["gate=1,2,3,4"])
    b = line_specs({"gate": [1, 2, 3, 4]})
    c = line_specs({"gate": {"xyxy": [[1, 2], [3, 4]]}})
    d = line_specs([LineSpec("gate", (1, 2, 3, 4))])
    assert [s.xyxy for s in a + b + c + d] == [(1.0, 2.0, 3.0, 4.0)] + [(1, 2, 3, 4)] * 3


@pytest.mark.parametrize("line, counted", [
    ((240, 0, 240, 360), 1),      # drawn to the frame's bottom border: the end is open
    ((240, 0, 240, 359.5), 1),    # within 1 px of it: open too (the feet at y 360 are past its end)
    ((240, 0, 240, 350), 0),      # ends 10 px above the feet: a crossing below its end
    ((240, 0, 240, 350.5), 0),
])
def test_segment_end_on_the_frame_border_is_open(line, counted):
    # feet exactly on the frame's bottom edge (y 360, boxes clipped there), crossing from right to left
    world = World([walker([(0, 420, 375), (60, 60, 375)], height=120)], 61)
    lc, _ = count(world, {"g": line}, detector=FakeDetector(world, noise_px=0.0))
    assert lc.counts["g"] == {"in": counted, "out": 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gate_scene_with_missed_detections(seed):
    """10 % of the boxes missed at random on top of the pillar and 1.5 px noise: same ids, same counts."""
    from test_bytetrack import ids_per_actor

    world, expected = gate_scene()
    lc, out = count(world, {"gate": GATE}, detector=FakeDetector(world, noise_px=1.5, seed=seed, dropout=0.1))
    assert lc.counts["gate"] == expected
    assert all(len(ids) == 1 for ids in ids_per_actor(world, out).values())
