"""The figures of a run: stage timers, CPU time, glass-to-glass latency, per-source counters and drops, and the
:class:`RunSummary` built from them.

**Dropped, one definition.** A frame a source read is *dropped* when it never reaches the sinks for one of three
reasons, all counted per source and summed into ``dropped`` everywhere (the periodic stats line, the summary, the
App's status, the MQTT stats, the metrics):

* ``dropped_capture``: a live source kept only its newest frame (the consumer was slower; ``Source.stats.dropped``);
* ``dropped_in_pipeline``: a newest-only hand-over between two stages of an all-live run replaced a waiting batch;
* ``dropped_backend``: the batch's inference failed with :class:`~edge_detect.errors.TransientBackendError`.

CPU cost: each stage thread measures its own CPU time (``time.thread_time``) and the capture threads theirs for
decoding; ``cpu_ms_per_frame`` gives them per processed frame, with ``inference`` = the process CPU time
(``time.process_time``) left after the other stages (the inference runtime's worker threads). With a gate
installed (motion gating, a detect rate: :mod:`edge_detect.stream.gating`) the gates' CPU is its own stage,
``motion`` (taken out of ``preprocess``).

**Inference calls.** Per source, ``inference_calls`` = processed frames the detector ran on and
``skipped_frames`` = processed frames a gate kept from it (``inference_calls + skipped_frames = processed``);
a gate adds ``motion_frames`` (frames in which its motion detector saw motion) and its ``detect`` figures.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from edge_detect.stats import RateMeter, StageTimer, nan_to_none, percentiles
from edge_detect.types import Frame

__all__ = ["RunStats", "RunSummary", "STAGES", "GATE_STAGE", "PIPELINE_DROPS"]

LOGGER = logging.getLogger(__name__)

STAGES = ("decode", "preprocess", "inference", "postprocess", "processors", "sinks")
GATE_STAGE = "motion"  # the gates' stage (motion detection and the detect decision), only in runs with a gate
PIPELINE_DROPS = ("dropped_in_pipeline", "dropped_backend")  # per source, beside the capture's own ``dropped``


@dataclass
class RunSummary:
    """What a run did. Times in milliseconds unless the name says ``_s``.

    Attributes:
        frames_read: frames decoded by all sources (including those later dropped).
        processed: frames that went through every stage and every sink.
        dropped: frames read but never processed, all causes (module doc: capture, in pipeline, backend).
        corrupt: frames that failed to decode and were skipped.
        reconnects: successful reconnections of network streams / cameras.
        fps: ``processed / (last sink done - first frame taken)``.
        duration_s: wall time of the run.
        stages: ``{stage: {"mean_ms", "p95_ms"}}`` for :data:`STAGES` (and ``motion`` with a gate).
        latency_ms: glass-to-glass ``{"p50", "p95", "p99"}`` (capture -> last sink done).
        sources: per source id: ``uri`` (credentials masked), ``kind``, ``live``, ``read``, ``processed``,
            ``dropped`` (all causes: the capture's drops plus ``dropped_in_pipeline`` and ``dropped_backend``, both
            listed), ``corrupt``, ``empty`` (repeat-frame packets skipped), ``reconnects``,
            ``expected_frames`` (container count or ``None``), ``inference_calls``, ``skipped_frames``,
            ``motion_frames`` (and ``detect`` with a gate; module doc). The source's counts and processor summaries are
            merged in (e.g. ``"lines"``).
        stopped_by: ``"end"``, ``"max_frames"``, ``"duration"``, ``"sink"`` (a sink asked to stop: the display's
            q / Esc), ``"sink_error"`` (a sink failed), ``"interrupt"``, ``"error"``, ``"stop"`` (the App was
            stopped; or the reason given to it), or when ``stop_event`` was set: its ``reason`` attribute if it has
            one, else ``"stop_event"``.
        sink_errors: one line per sink that failed to write or to finalize (``"<sink>: <message>"``); the run
            stops at the first write failure, every other sink is still finalized.
        batch: ``{"size": N, "calls": backend calls, "mean_frames": real frames per call}``.
        cpu_ms_per_frame: CPU milliseconds per processed frame for ``decode``, ``preprocess``, ``inference``,
            ``postprocess``, ``processors``, ``sinks``, ``motion`` (with a gate) and ``total`` (process CPU time /
            processed; module doc).
        inference_calls, skipped_frames, motion_frames: the sums over sources of the per-source figures (module
            doc: frames the detector ran on, frames gated out, frames with motion).
        sinks: per output that queues (``video``, ``jsonl``, ``mqtt``, ``webhook``, ``snapshots``...):
            ``{"queued", "sent", "dropped", "failed"}`` at the end of the run (a second output of one name is
            ``name#2``).
        extra: counts and processor summaries summed over sources (numbers added, dicts merged), merged into
            :meth:`to_dict` at the top level (e.g. ``{"lines": {...}, "zones": {...}, "tracker": {...}}``).
    """

    frames_read: int = 0
    processed: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0
    fps: float = 0.0
    duration_s: float = 0.0
    stages: Dict[str, Dict[str, float]] = field(default_factory=dict)
    latency_ms: Dict[str, float] = field(default_factory=dict)
    sources: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    stopped_by: str = "end"
    batch: Dict[str, Any] = field(default_factory=dict)
    sink_errors: List[str] = field(default_factory=list)
    cpu_ms_per_frame: Dict[str, float] = field(default_factory=dict)
    sinks: Dict[str, Dict[str, int]] = field(default_factory=dict)
    inference_calls: int = 0
    skipped_frames: int = 0
    motion_frames: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (``nan`` -> ``None``); :attr:`extra` keys at the top level."""
        out = asdict(self)
        extra = out.pop("extra")
        for key, value in extra.items():
            out.setdefault(key, value)
        return nan_to_none(out)

    def format(self) -> str:
        """Multi-line human-readable summary (``-`` where nothing was measured, never ``nan``)."""
        lines = [
            f"run summary ({self.stopped_by}): read {self.frames_read}, processed {self.processed}, "
            f"dropped {self.dropped}, corrupt {self.corrupt}, reconnects {self.reconnects}, "
            f"{self.fps:.1f} FPS over {self.duration_s:.1f} s",
            "  stages (mean / p95 ms): " + ", ".join(
                f"{k} {_num(v['mean_ms'])}/{_num(v['p95_ms'])}" for k, v in self.stages.items()),
            "  latency ms: " + ", ".join(f"{k} {_num(v)}" for k, v in self.latency_ms.items()),
        ]
        if self.cpu_ms_per_frame:
            lines.append("  CPU ms per frame: " + ", ".join(f"{k} {_num(v)}" for k, v in self.cpu_ms_per_frame.items()))
        if self.skipped_frames or self.motion_frames:
            lines.append(f"  inference on {self.inference_calls} of {self.processed} frames ({self.skipped_frames} "
                         f"skipped, motion in {self.motion_frames})")
        lines += [f"  sink failed: {e}" for e in self.sink_errors]
        for sid, s in self.sources.items():
            exp = f" of {s['expected_frames']}" if s.get("expected_frames") else ""
            lines.append(f"  {sid} [{s['uri']}]: read {s['read']}{exp}, processed {s['processed']}, dropped "
                         f"{s['dropped']}, corrupt {s['corrupt']}, reconnects {s['reconnects']}")
        for name, c in (self.extra.get("lines") or {}).items():
            lines.append(f"  line {name}: in {c.get('in', 0)}, out {c.get('out', 0)}")
        for name, c in (self.extra.get("zones") or {}).items():
            lines.append(f"  zone {name}: entered {c.get('entered', 0)}, exited {c.get('exited', 0)}, occupancy "
                         f"{c.get('occupancy', 0)} (max {c.get('max_occupancy', 0)})")
        return "\n".join(lines)


def _num(value: Optional[float]) -> str:
    """``12.3``, or ``-`` for a figure that was not measured (``None`` / ``nan``)."""
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


class RunStats:
    """The run's measurements, shared by the pipeline's threads (see module doc).

    Args:
        with_processors: report the ``processors`` stage CPU (only when the run has processors).

    Attributes:
        with_gates: report the ``motion`` stage (set when a gate is installed).
    """

    def __init__(self, with_processors: bool = False) -> None:
        self.timer = StageTimer(STAGES)
        self.latencies: List[float] = []
        self.batch_sizes: List[int] = []
        self.rate = RateMeter(2.0)
        self.with_processors = with_processors
        self.with_gates = False
        self._lock = threading.Lock()
        self._cpu_ms: Dict[str, float] = {k: 0.0 for k in STAGES + (GATE_STAGE,)}
        self._inferred: Dict[str, int] = {}
        self._cpu0: Optional[float] = None
        self._processed: Dict[str, int] = {}
        self._drops: Dict[str, Dict[str, int]] = {}  # source -> {"dropped_in_pipeline": n, "dropped_backend": n}
        self._last: Dict[str, float] = {}  # source -> perf_counter of its last processed frame
        self.t_start = 0.0
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None

    def start(self) -> None:
        self.t_start = time.perf_counter()
        self._cpu0 = time.process_time()

    def add_cpu(self, stage: str, c0: float, less_ms: float = 0.0) -> None:
        """Add this thread's CPU time since ``c0`` (``time.thread_time()``), less ``less_ms`` already counted in
        another stage, to ``stage``."""
        self.add_cpu_ms(stage, (time.thread_time() - c0) * 1e3 - less_ms)

    def add_cpu_ms(self, stage: str, ms: float) -> None:
        """Add ``ms`` CPU milliseconds to ``stage``."""
        with self._lock:
            self._cpu_ms[stage] += max(ms, 0.0)

    def batch_started(self, frames: int) -> None:
        """A batch of ``frames`` real frames leaves the batcher."""
        with self._lock:
            if self.t_first is None:
                self.t_first = time.perf_counter()
            self.batch_sizes.append(frames)

    def dropped(self, kind: str, frames: Iterable[Frame]) -> None:
        """Count ``frames`` dropped in the pipeline (``dropped_in_pipeline`` / ``dropped_backend``)."""
        with self._lock:
            for f in frames:
                per = self._drops.setdefault(f.source_id, {})
                per[kind] = per.get(kind, 0) + 1

    def frame_done(self, frame: Frame, t_end: float) -> None:
        """Record a frame that went through every sink at ``t_end`` (its stage timings, latency, counters)."""
        for stage in STAGES + (GATE_STAGE,):
            if stage in frame.timings:
                self.timer.add(stage, frame.timings[stage])
        with self._lock:
            self.latencies.append((t_end - frame.capture_time) * 1e3)
            self._processed[frame.source_id] = self._processed.get(frame.source_id, 0) + 1
            if not frame.skip_inference:
                self._inferred[frame.source_id] = self._inferred.get(frame.source_id, 0) + 1
            self._last[frame.source_id] = t_end
            self.t_last = t_end
        self.rate.tick(t_end)

    def processed(self, source_id: Optional[str] = None) -> int:
        with self._lock:
            return sum(self._processed.values()) if source_id is None else self._processed.get(source_id, 0)

    def settled(self, source_id: str) -> int:
        """Frames of the source that are done: processed or dropped in the pipeline."""
        with self._lock:
            return self._processed.get(source_id, 0) + sum(self._drops.get(source_id, {}).values())

    def last_frame_age_s(self, source_id: str) -> Optional[float]:
        """Seconds since the source's last processed frame, or ``None`` before any."""
        with self._lock:
            t = self._last.get(source_id)
        return None if t is None else time.perf_counter() - t

    def source_figures(self, source: Any) -> Dict[str, Any]:
        """The per-source figures of one opened :class:`~edge_detect.stream.sources.Source` (module doc)."""
        processed = self.processed(source.source_id)
        out = {"uri": source.uri, "kind": source.kind, "live": source.is_live, **source.stats.to_dict(),
               "processed": processed, "expected_frames": source.expected_frames}
        with self._lock:
            drops = {k: self._drops.get(source.source_id, {}).get(k, 0) for k in PIPELINE_DROPS}
            inferred = self._inferred.get(source.source_id, 0)
        out.update(inference_calls=inferred, skipped_frames=processed - inferred, motion_frames=0)
        out.update(drops)
        out["dropped"] = out["dropped"] + sum(drops.values())  # capture + pipeline + backend: one definition
        return out

    def stats_line(self, sources: Sequence[Any], since: int) -> str:
        """The periodic stats log line (the same ``dropped`` as the summary)."""
        figures = [self.source_figures(s) for s in sources]
        with self._lock:
            recent = self.latencies[since:]
        p = percentiles(recent, (50, 95))
        return (f"stats: processed {self.processed()}, {self.rate.rate:.1f} FPS, read "
                f"{sum(f['read'] for f in figures)}, dropped {sum(f['dropped'] for f in figures)}, corrupt "
                f"{sum(f['corrupt'] for f in figures)}, reconnects {sum(f['reconnects'] for f in figures)}, "
                f"latency p50 {p[50]:.0f} / p95 {p[95]:.0f} ms")

    def stage_means(self) -> Dict[str, float]:
        """``{stage: mean ms}`` so far (``nan`` for stages without samples)."""
        return {k: v["mean_ms"] for k, v in self.timer.summary().items()}

    def cpu_per_frame(self, decode_cpu_ms: float) -> Dict[str, float]:
        """CPU ms per processed frame per stage (module doc); empty before any frame."""
        processed = self.processed()
        if not processed or self._cpu0 is None:
            return {}
        total = (time.process_time() - self._cpu0) * 1e3
        with self._lock:
            per = dict(self._cpu_ms)
        per["decode"] = decode_cpu_ms
        per["inference"] = max(total - sum(v for k, v in per.items() if k != "inference"), 0.0)
        stages = STAGES + ((GATE_STAGE,) if self.with_gates else ())
        out = {k: per[k] / processed for k in stages if k != "processors" or self.with_processors}
        out["total"] = total / processed
        return out

    def summary(self, per_source: Mapping[str, Dict[str, Any]], stopped_by: str, batch: int,
                sink_errors: Sequence[str], sinks: Mapping[str, Dict[str, int]], extra: Dict[str, Any],
                decode_cpu_ms: float) -> RunSummary:
        """The :class:`RunSummary` of what has run so far (``per_source``: :meth:`source_figures` plus counts)."""
        processed = self.processed()
        span = (self.t_last - self.t_first) if self.t_first is not None and self.t_last is not None else 0.0
        stages = {k: {"mean_ms": v["mean_ms"], "p95_ms": v["p95_ms"]} for k, v in self.timer.summary().items()}
        with self._lock:
            p = percentiles(self.latencies, (50, 95, 99))
            sizes = list(self.batch_sizes)
        per = dict(per_source)
        return RunSummary(
            frames_read=sum(s["read"] for s in per.values()), processed=processed,
            dropped=sum(s["dropped"] for s in per.values()), corrupt=sum(s["corrupt"] for s in per.values()),
            reconnects=sum(s["reconnects"] for s in per.values()), fps=processed / span if span > 0 else 0.0,
            duration_s=time.perf_counter() - self.t_start, stages=stages,
            latency_ms={"p50": p[50], "p95": p[95], "p99": p[99]}, sources=per, stopped_by=stopped_by,
            batch={"size": batch, "calls": len(sizes), "mean_frames": (sum(sizes) / len(sizes)) if sizes else 0.0},
            sink_errors=list(sink_errors), sinks=dict(sinks), cpu_ms_per_frame=self.cpu_per_frame(decode_cpu_ms),
            inference_calls=sum(s.get("inference_calls", 0) for s in per.values()),
            skipped_frames=sum(s.get("skipped_frames", 0) for s in per.values()),
            motion_frames=sum(s.get("motion_frames", 0) for s in per.values()), extra=extra)
