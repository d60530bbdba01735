"""ThreadedSink / QueueWorker: write never does the I/O, named drop policies, counters, close with a deadline."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_detect.errors import ConfigError, SinkError
from edge_detect.sinks.threaded import QueueWorker, ThreadedSink
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.sources import open_source
from edge_detect.types import Detections, Frame, Result


def _result(i: int) -> Result:
    return Result(Frame(np.zeros((8, 8, 3), np.uint8), "cam", i), Detections.empty(), ("x",))


class BlockingSink(ThreadedSink):
    """Its I/O blocks up to ``block_s`` per item (a hung disk or server) until released."""

    name = "blocking"
    default_policy = "drop_oldest"
    default_queue_size = 4

    def __init__(self, block_s: float = 2.0, **kw) -> None:
        super().__init__(**kw)
        self.block_s, self.entered, self.release, self.handled = block_s, threading.Event(), threading.Event(), []

    def handle(self, result):
        self.entered.set()
        self.release.wait(self.block_s)
        self.handled.append(result.frame.index)
        return True


def test_write_returns_while_the_io_is_still_blocked():
    sink = BlockingSink(block_s=30)
    sink.start([])
    sink.write(_result(0))
    assert sink.entered.wait(10)  # the worker is inside the blocking I/O with frame 0...
    for i in range(1, 11):  # ...and ten more writes return without waiting for it (they would hang otherwise)
        sink.write(_result(i))
    assert not sink.release.is_set() and sink.handled == []
    assert sink.queue_stats() == {"queued": 5, "sent": 0, "dropped": 6, "failed": 0}  # 1 in I/O + 4 newest
    sink.release.set()
    sink.close()
    assert sink.handled == [0, 7, 8, 9, 10] and sink.counters() == {
        "blocking": {"queued": 0, "sent": 5, "dropped": 6, "failed": 0}}


def test_never_drop_waits_for_room_and_every_item_is_handled():
    sink = BlockingSink(block_s=0.0, policy="never_drop", queue_size=2)
    sink.release.set()
    sink.start([])
    for i in range(30):
        sink.write(_result(i))
    sink.close()
    assert sink.handled == list(range(30)) and sink.queue_stats()["dropped"] == 0


def test_block_with_timeout_drops_the_offered_item_after_the_wait():
    sink = BlockingSink(block_s=30, policy="block_with_timeout", queue_size=1, block_timeout_s=0.05)
    sink.start([])
    sink.write(_result(0))
    assert sink.entered.wait(10)
    sink.write(_result(1))  # queued
    sink.write(_result(2))  # no room within 50 ms: dropped
    assert sink.queue_stats()["dropped"] == 1
    sink.release.set()
    sink.close()
    assert sink.handled == [0, 1]


def test_close_drains_with_a_deadline_and_counts_what_is_left_as_failed():
    sink = BlockingSink(block_s=30, policy="never_drop", queue_size=8, close_timeout_s=0.2)
    sink.start([])
    for i in range(5):
        sink.write(_result(i))
    assert sink.entered.wait(10)
    t = threading.Timer(1.0, sink.release.set)  # the hung I/O ends a second after the deadline
    t.start()
    sink.close()
    t.join()
    assert sink.queue_stats()["failed"] == 4 and sink.handled == [0]


def test_handler_error_surfaces_on_the_next_write_or_at_close():
    class Broken(ThreadedSink):
        name = "broken"

        def handle(self, item):
            raise SinkError("disk full")

    sink = Broken()
    sink.start([])
    sink.write(_result(0))
    assert sink.flush(10)
    with pytest.raises(SinkError, match="disk full"):
        sink.write(_result(1))
    sink2 = Broken()
    sink2.write(_result(0))
    with pytest.raises(SinkError, match="disk full"):
        sink2.close()


def test_worker_options_are_checked():
    with pytest.raises(ConfigError, match="drop policy: expected one of drop_oldest, block_with_timeout, never_drop"):
        QueueWorker(policy="newest")
    with pytest.raises(ConfigError, match="expected queue_size >= 1"):
        QueueWorker(queue_size=0)


class FakeDetector:
    names = ("person",)

    def preprocess(self, images):
        return np.zeros((len(images), 3, 8, 8), np.float32), [im.shape[:2] for im in images]

    def infer(self, batch):
        time.sleep(0.005)
        return [batch]

    def postprocess(self, outputs, infos):
        return [Detections.empty() for _ in infos]


def _fps(video, sinks):
    return Pipeline([open_source(video)], FakeDetector(), sinks, max_frames=150, progress=False).run()


def test_a_sink_with_blocking_io_does_not_hold_the_pipeline(video):
    sink = BlockingSink(block_s=2.0, close_timeout_s=0.1)
    s = _fps(video, [sink])
    assert s.processed == 150 and s.sinks["blocking"]["dropped"] >= 100  # its I/O kept up with a few frames
    assert s.sinks["blocking"]["failed"] >= 1  # the queued ones were given up at the close deadline
    assert s.sinks["blocking"]["sent"] + s.sinks["blocking"]["dropped"] + s.sinks["blocking"]["failed"] == 150


@pytest.mark.perf
def test_pipeline_fps_unchanged_by_a_sink_whose_io_blocks_2s(video):
    """Opt-in (timed): the run's frame rate with a sink whose every write blocks 2 s on I/O is within 10 % of the
    rate without it."""
    base = max(_fps(video, []).fps for _ in range(2))
    slow = max(_fps(video, [BlockingSink(block_s=2.0, close_timeout_s=0.1)]).fps for _ in range(2))
    assert slow >= 0.9 * base, (slow, base)
