"""Typed events (exact JSON, dict compatibility), the in-process bus (inline, queued and pull subscribers) and
Counts (the one place counts are kept)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from edge_detect.events import Counts, EventBus
from edge_detect.types import (Detections, Frame, GenericEvent, LineCross, ObjectEnd, Result, ZoneEnter, ZoneExit,
                               as_event)


def _result(index: int, events=(), source: str = "cam") -> Result:
    dets = Detections.empty()
    dets.metadata["events"] = list(events)
    return Result(Frame(np.zeros((4, 4, 3), np.uint8), source, index), dets, ("person", "car"))


def test_typed_events_serialize_to_todays_json_and_read_like_dicts():
    cross = LineCross("gate", "in", 7, "person", frame=12, wall_time=1.5)
    assert json.dumps(cross.to_dict()) == ('{"type": "line_cross", "line": "gate", "direction": "in", "track_id": 7, '
                                           '"class_name": "person", "frame": 12, "wall_time": 1.5}')
    assert cross["type"] == "line_cross" and cross.get("track_id") == 7 and cross == cross.to_dict()
    leave = ZoneExit("bay", 3, "car", 2.5, frame=4, wall_time=9.0)
    assert list(leave) == ["type", "zone", "track_id", "class_name", "dwell_s", "frame", "wall_time"]
    end = as_event({"type": "object_end", "track_id": 1, "class_name": "person", "first_seen": 1.0, "last_seen": 2.0,
                    "first_frame": 5, "last_frame": 55, "best_score": 0.9, "note": "x"})
    assert isinstance(end, ObjectEnd) and end.extra == {"note": "x"} and end["note"] == "x"
    custom = {"type": "tick", "n": 1}
    assert isinstance(as_event(custom), GenericEvent) and as_event(custom).to_dict() == custom
    incomplete = {"type": "line_cross", "direction": "in"}  # a typed field missing: kept as given
    assert as_event(incomplete).to_dict() == incomplete
    with pytest.raises(TypeError, match="expected an edge_detect.types.Event or a dict"):
        as_event(3)


def test_result_record_serializes_typed_events():
    r = _result(3, [ZoneEnter("bay", 1, "person", frame=3, wall_time=0.5), {"type": "tick"}])
    assert r.record()["events"] == [{"type": "zone_enter", "zone": "bay", "track_id": 1, "class_name": "person",
                                     "frame": 3, "wall_time": 0.5}, {"type": "tick"}]
    assert json.loads(json.dumps(r.record()))["events"][1] == {"type": "tick"}


def test_bus_inline_subscriber_runs_on_the_publishing_thread():
    bus = EventBus()
    threads = []
    bus.subscribe(lambda r: threads.append(threading.current_thread()), inline=True, name="inline")
    bus.publish(_result(0))
    assert threads == [threading.current_thread()]
    with pytest.raises(ValueError, match="expected a callback with inline=True"):
        bus.subscribe(None, inline=True)


def test_bus_slow_subscriber_drops_its_oldest_and_never_slows_the_publisher():
    bus = EventBus()
    release, holding = threading.Event(), threading.Event()
    got = []

    def slow(result):
        holding.set()
        release.wait(10)
        got.append(result.frame.index)

    sub = bus.subscribe(slow, name="slow", queue_size=3)
    pull = bus.subscribe(name="pull", queue_size=100)
    bus.publish(_result(0))
    assert holding.wait(10)
    for i in range(1, 20):  # the slow callback holds frame 0 while 19 more are published
        bus.publish(_result(i))
    release.set()
    sub.close()
    assert got[0] == 0 and got[-3:] == [17, 18, 19] and len(got) == 4
    assert sub.stats() == {"queued": 0, "delivered": 4, "dropped": 16, "failed": 0}
    assert [pull.get(0).frame.index for _ in range(20)] == list(range(20)) and pull.get(0) is None
    assert bus.counts.source("cam")["events"] == {}


def test_bus_subscriber_failure_is_counted_not_raised():
    bus = EventBus()
    sub = bus.subscribe(lambda r: 1 / 0, inline=True, name="bad")
    bus.publish(_result(0))
    assert sub.failed == 1


def test_counts_lines_zones_by_class_per_source_and_summed():
    c = Counts()
    c.declare("a", lines=["gate", "idle"], zones=["bay"])
    c.add("a", [LineCross("gate", "in", 1, "person"), LineCross("gate", "out", 2, "car"),
                ZoneEnter("bay", 1, "person"), ZoneEnter("bay", 2, "car")])
    c.add("a", [ZoneExit("bay", 1, "person", 1.0)])
    c.add("b", [{"type": "line_cross", "line": "gate", "direction": "in", "track_id": 5, "class_name": "person"},
                {"type": "tick"}])
    assert c.summary("a") == {
        "lines": {"gate": {"in": 1, "out": 1, "by_class": {"car": {"in": 0, "out": 1}, "person": {"in": 1, "out": 0}}},
                  "idle": {"in": 0, "out": 0, "by_class": {}}},
        "zones": {"bay": {"entered": 2, "exited": 1, "occupancy": 1, "max_occupancy": 2}}}
    assert c.summary()["lines"]["gate"] == {"in": 2, "out": 1, "by_class": {"car": {"in": 0, "out": 1},
                                                                            "person": {"in": 2, "out": 0}}}
    assert "zones" not in c.summary("b") and c.source("b")["events"] == {"line_cross": 1, "tick": 1}
    assert c.source("a")["zones"]["bay"]["by_class"] == {"person": {"entered": 1, "exited": 1},
                                                         "car": {"entered": 1, "exited": 0}}
    assert c.snapshot()["total"]["events"] == {"line_cross": 3, "zone_enter": 2, "zone_exit": 1, "tick": 1}


def test_bus_feeds_its_counts_before_other_subscribers():
    bus = EventBus()
    seen = []
    bus.subscribe(lambda r: seen.append(bus.counts.summary("cam")["lines"]["g"]["in"]), inline=True)
    bus.publish(_result(0, [LineCross("g", "in", 1, "person")]))
    assert seen == [1]


def test_bus_close_lets_callback_threads_deliver_what_they_hold():
    bus = EventBus()
    got = []
    bus.subscribe(lambda r: (time.sleep(0.01), got.append(r.frame.index)), name="q", queue_size=50)
    for i in range(5):
        bus.publish(_result(i))
    bus.close()
    assert got == [0, 1, 2, 3, 4]
