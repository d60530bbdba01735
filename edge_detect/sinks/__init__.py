"""Outputs of a run, one module per sink, opened from a spec by :func:`open_sink` (registry in :mod:`.base`)::

    open_sink("display")                 # window per source; q / Esc stops the run; disabled when headless
    open_sink("out.mp4")                 # annotated H.264 yuv420p mp4 with +faststart (plays in browsers)
    open_sink("dets.jsonl")              # one JSON line per processed frame, flushed as it goes
    open_sink("mjpeg://127.0.0.1:8080")  # multipart/x-mixed-replace preview; also "preview:8080"

Modules: :mod:`.base` (:func:`register_sink`, :func:`open_sink`; re-exports :class:`~edge_detect.types.Sink`,
:class:`~edge_detect.types.StreamInfo` and :class:`~edge_detect.types.RunContext`, which live with the shared
types), :mod:`.threaded` (:class:`ThreadedSink`: bounded queue, named drop policy, counters; every sink that writes
files or talks to the network derives from it), :mod:`.display`, :mod:`.video`, :mod:`.jsonl`, :mod:`.mjpeg`,
:mod:`.files`, :mod:`.events` (+ :mod:`.mqtt`, :mod:`.webhook`, :mod:`.snapshots`), :mod:`.metrics`. A sink sees
its run only through the :class:`~edge_detect.types.RunContext` given to ``start`` (sources, class names, the event
bus and its counts, a stats function), never the pipeline. The sink classes are imported lazily from here
(``from edge_detect.sinks import JsonlSink``). The JSON line format is documented on
:class:`edge_detect.types.Result`.
"""
from __future__ import annotations

import importlib
from typing import Any

from edge_detect.sinks.base import (
    JSONL_SUFFIXES,
    SINK_MODULES,
    VIDEO_SUFFIXES,
    RunContext,
    Sink,
    StreamInfo,
    open_sink,
    register_sink,
    resolve_sink,
    sink_kinds,
)
from edge_detect.types import Result

_LAZY = {
    "DisplaySink": "edge_detect.sinks.display",
    "display_available": "edge_detect.sinks.display",
    "VideoSink": "edge_detect.sinks.video",
    "JsonlSink": "edge_detect.sinks.jsonl",
    "MjpegPreviewSink": "edge_detect.sinks.mjpeg",
    "ThreadedSink": "edge_detect.sinks.threaded",
}

__all__ = ["Sink", "Result", "StreamInfo", "RunContext", "open_sink", "register_sink", "resolve_sink", "sink_kinds",
           "SINK_MODULES", "VIDEO_SUFFIXES", "JSONL_SUFFIXES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_detect.sinks' has no attribute {name!r}")
