"""A long live run keeps a flat memory (issue 26 item 9a: ~11 MB an hour crept in a 50-minute camera run).

A fake detector (no model) reports churning tracks -- a new object every other frame, each crossing a line and a
zone within ``LIFE`` frames, so ids keep growing -- and the real pipeline runs them through ByteTrack, lines and
zones, the event bus (Counts, a queued subscriber), a JSONL sink, the events hub (object_update throttle, a counting
transport, stats messages), the Prometheus metrics and the periodic stats line. The Python allocations held are
measured with tracemalloc (traced from the start) at a warm-up frame and at the end, every queue drained first:
they must not grow with the frames processed. The full investigation (100k frames, per allocation site) is
``python tests/stream/test_memory_flat.py 100000`` (see the module's ``main``).
"""
from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from edge_detect.sinks.events import EventTransport
from edge_detect.stream.sources import ReaderBase, ReadResult, SourceKind, register_source, source_from_reader
from edge_detect.types import Detections

H, W = 360, 480
GAP, LIFE = 2, 16  # a new track every 2 frames, each visible 16 frames (crossing x=240 and the zone's edge)
_IMAGE = np.zeros((H, W, 3), np.uint8)


class _ChurnReader(ReaderBase):
    """``n`` black frames of a 25 fps stream (pts every 40 ms: the processors' stream clock advances)."""

    fps = 25.0

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0

    def read(self) -> ReadResult:
        if self.i >= self.n:
            return ReadResult("end")
        self.i += 1
        return ReadResult("ok", _IMAGE, pts_ms=(self.i - 1) * 40.0)


@register_source("test-churn")
def _open_churn(uri: str, source_id: Any = None, offline_ok: bool = False, **options: Any):
    n = int(str(uri).split("://", 1)[1])
    return source_from_reader(lambda: _ChurnReader(n), SourceKind("test-churn", live=False, reconnect=False), uri,
                              source_id=source_id or "cam", offline_ok=offline_ok, **options)


class ChurnDetector:
    """The detector stand-in: the boxes of the objects alive at each frame; calls ``hooks[frame]()`` (on the
    pipeline's sink stage, between frames) to take measurements."""

    names = ("person", "car", "bus")

    def __init__(self, hooks: Dict[int, Any]) -> None:
        self.frame, self.hooks = 0, hooks

    def preprocess(self, images):
        return np.zeros((len(images), 3, 8, 8), np.float32), [im.shape[:2] for im in images]

    def infer(self, batch):
        return [batch]

    def postprocess(self, outputs, infos) -> List[Detections]:
        out = []
        for _ in infos:
            f = self.frame
            self.frame += 1
            if f in self.hooks:
                self.hooks[f]()
            alive = range(max(0, (f - LIFE) // GAP + 1), f // GAP + 1)
            boxes = [[x - 12, y - 40, x + 12, y] for k in alive
                     for x, y in [(120 + (f - k * GAP) * 15.0, 60 + (k * 37) % 7 * 40.0)]]
            b = np.array(boxes, np.float32).reshape(-1, 4)
            out.append(Detections(b, np.full(len(b), 0.9, np.float32), np.array([k % 3 for k in alive], np.int64)))
        return out


class _Counting(EventTransport):
    """An event transport that only counts (no network)."""

    name = "counting"

    def __init__(self) -> None:
        self.events = self.stats = 0

    def send(self, event) -> None:
        self.events += 1

    def send_stats(self, source_id, stats) -> None:
        self.stats += 1

    def queue_stats(self) -> Dict[str, int]:
        return {"queued": 0, "sent": self.events, "dropped": 0, "failed": 0}


def churn_run(frames: int, warm: int, out: Path, depth: int = 1) -> Dict[str, Any]:
    """Run ``frames`` churning frames; returns the figures and the tracemalloc snapshots at ``warm`` and at the
    end (queues drained before each)."""
    from edge_detect.events import EventBus
    from edge_detect.sinks import open_sink
    from edge_detect.sinks.events import EventsSink, arrange_sinks
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.stream.processors import make_processor
    from edge_detect.stream.sources import open_source

    transport = _Counting()
    hub = EventsSink([transport], update_interval_s=0.2, stats_interval_s=0.05)
    jsonl = open_sink(str(out))
    metrics = open_sink("metrics://127.0.0.1:0")
    bus = EventBus()
    pulled = bus.subscribe(name="dashboard", queue_size=64)  # nobody pulls: its bounded queue drops the oldest
    snaps: Dict[str, Any] = {}

    def measure(name: str) -> None:
        for sink in (jsonl, hub):
            sink.flush(30)
        gc.collect()
        snaps[name] = (tracemalloc.take_snapshot(), time.perf_counter())

    det = ChurnDetector({warm: lambda: measure("warm"), frames - 1: lambda: measure("end")})
    names = det.names
    procs = [make_processor("bytetrack", names=names, buffer_s=0.3),  # ended tracks leave after ~8 frames
             make_processor("lines", lines={"gate": [240, 0, 240, H]}, names=names),
             make_processor("zones", zones={"bay": [240, 0, W, 0, W, H, 240, H]}, names=names)]
    pipe = Pipeline([open_source(f"test-churn://{frames}")], det, arrange_sinks([jsonl, hub, metrics]),
                    processors=procs, stats_interval_s=0.05, progress=True, bus=bus)
    tracemalloc.start(depth)  # from the start: what the warm-up held and later freed counts too
    try:
        summary = pipe.run()
    finally:
        tracemalloc.stop()
        pulled.close()
    return {"summary": summary, "events": transport.events, "stats_messages": transport.stats,
            "counts": bus.counts.summary(), "warm": snaps["warm"], "end": snaps["end"], "measured": frames - 1 - warm}


def growth(result: Dict[str, Any]) -> tuple:
    """``(bytes held at the end minus at warm-up, per frame measured, the 10 sites that grew most)``."""
    (warm, _), (end, _) = result["warm"], result["end"]
    diff = end.compare_to(warm, "lineno")
    total = sum(d.size_diff for d in diff)
    return total, total / result["measured"], diff[:10]


def test_churning_tracks_keep_memory_flat(tmp_path, monkeypatch):
    # the run's fixed-size figures, made small so that they are full by the warm-up frame
    monkeypatch.setattr("edge_detect.stream.runstats.RESERVOIR", 500)
    monkeypatch.setattr("edge_detect.stream.runstats.RECENT", 200)
    frames, warm = 3000, 800  # 1100 new track ids after warm-up, each crossing the line and the zone
    result = churn_run(frames, warm, tmp_path / "out.jsonl")
    s = result["summary"]
    assert s.processed == frames and s.dropped == 0
    assert frames // GAP - LIFE // GAP <= result["counts"]["lines"]["gate"]["out"] <= frames // GAP  # each once
    # object_new, line_cross, zone_enter, zone_exit, object_end of every track but those still in view at the end
    assert result["events"] >= 5 * (frames // GAP - LIFE // GAP) and result["stats_messages"] > 0
    total, per_frame, top = growth(result)
    sites = "\n".join(str(d) for d in top)
    # before the fix: ~230 B/frame (every latency and stage time of the run kept: ~11 MB an hour at 12.5 fps)
    assert per_frame < 20, f"{total} B retained over {result['measured']} frames:\n{sites}"


def test_the_app_runs_a_plugin_scheme_source():
    """An App config may name a :func:`register_source` scheme (its check before opening knew only the built-in
    ones)."""
    from edge_detect.app import App
    from edge_detect.app_config import load_app_config

    app = App(load_app_config(None, {"sources": ["test-churn://30"], "outputs.show": False,
                                     "server.progress": False}), detector=ChurnDetector({}))
    assert app.run().processed == 30


def main(argv: List[str]) -> None:  # pragma: no cover - the investigation, by hand
    frames = int(argv[1]) if len(argv) > 1 else 100_000
    t0 = time.perf_counter()
    result = churn_run(frames, frames // 10, Path("/tmp/edge_detect_churn.jsonl"), depth=8)
    total, per_frame, top = growth(result)
    print(f"{frames} frames in {time.perf_counter() - t0:.0f} s; retained since frame {frames // 10}: {total / 1e6:.3f} "
          f"MB = {per_frame:.1f} B/frame = {per_frame * 90_000 / 1e6:.2f} MB per hour at 25 fps")
    for d in top:
        print(d)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv)
