"""The figures of a run: stage timers, CPU time, glass-to-glass latency, per-source counters and drops, and the
:class:`RunSummary` built from them.

**Dropped, one definition.** A frame a source read is *dropped* when it never reaches the sinks for one of three
reasons, all counted per source and summed into ``dropped`` everywhere (the periodic stats line, the summary, the
App's status, the MQTT stats, the metrics):

* ``dropped_capture``: a live source kept only its newest frame (the consumer was slower; ``Source.stats.dropped``);
* ``dropped_in_pipeline``: a newest-only hand-over between two stages of an all-live run replaced a waiting batch;
* ``dropped_backend``: the batch's inference failed with :class:`~edge_detect.errors.TransientBackendError`.

**Bounded memory.** A live run may go on for months: every figure kept here has a fixed size. Stage times and
latencies are :class:`~edge_detect.stats.Reservoir` s (exact count and mean of every frame, percentiles from a
uniform sample of at most :data:`RESERVOIR` frames: exact for shorter runs), batch sizes are two counters (plus the
last :data:`RECENT` sizes), the stats line's latencies are those since the previous line (at most :data:`RECENT`).

CPU cost: each stage thread measures its own CPU time (``time.thread_time``) and the capture threads theirs for
decoding; ``cpu_ms_per_frame`` gives them per processed frame, with ``inference`` = the process CPU time
(``time.process_time``) left after the other stages (the inference runtime's worker threads). Sinks that measure
their own threads (:meth:`~edge_detect.types.Sink.thread_cpu_ms`: the recorder's ``record``) get entries of their own,
taken out of ``inference``. With a gate installed (motion gating, a detect rate: :mod:`edge_detect.stream.gating`)
the gates' CPU is its own stage, ``motion`` (taken out of ``preprocess``).

**Inference calls.** Per source, ``inference_calls`` = processed frames the detector ran on and
``skipped_frames`` = processed frames a gate kept from it (``inference_calls + skipped_frames = processed``);
a gate adds ``motion_frames`` (frames in which its motion detector saw motion) and its ``detect`` figures.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence

from edge_detect.stats import RateMeter, Reservoir, StageTimer, nan_to_none, percentiles
from edge_detect.types import Frame

__all__ = ["RunStats", "RunSummary", "STAGES", "GATE_STAGE", "PIPELINE_DROPS", "format_deliveries"]

LOGGER = logging.getLogger(__name__)

STAGES = ("decode", "preprocess", "inference", "postprocess", "processors", "sinks")
GATE_STAGE = "motion"  # the gates' stage (motion detection and the detect decision), only in runs with a gate
PIPELINE_DROPS = ("dropped_in_pipeline", "dropped_backend")  # per source, beside the capture's own ``dropped``
RESERVOIR = 10_000  # samples kept per stage and for latency (module doc)
RECENT = 10_000  # recent batch sizes kept; latencies kept for the next stats line


def format_deliveries(sinks: Mapping[str, Mapping[str, int]]) -> str:
    """``"video 795 sent; webhook 0 sent, 26 failed"``: each output's delivery counters (``sent``, then ``dropped``,
    ``failed`` and ``queued`` where not zero), for the stats line, the summary and the end-of-run warning."""
    parts = []
    for name, c in sinks.items():
        extra = [f"{c.get(k, 0)} {k}" for k in ("dropped", "failed", "queued") if c.get(k, 0)]
        parts.append(", ".join([f"{name} {c.get('sent', 0)} sent", *extra]))
    return "; ".join(parts)


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
            stops at the first write failure, every other sink is still finalized. Degraded sinks are listed too.
        degraded: the lines of :attr:`sink_errors` from sinks that stopped working while the run and the other
            outputs went on (:attr:`~edge_detect.types.Sink.error`: the recorder on a full disk); not a failure
            of the run (the CLI's exit code stays 0).
        batch: ``{"size": N, "calls": backend calls, "mean_frames": real frames per call}``.
        cpu_ms_per_frame: CPU milliseconds per processed frame for ``decode``, ``preprocess``, ``inference``,
            ``postprocess``, ``processors``, ``sinks``, ``motion`` (with a gate), the sinks' own measured threads
            (``record``: the recorder's) and ``total`` (process CPU time / processed; module doc).
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
    degraded: List[str] = field(default_factory=list)
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

    def undelivered(self) -> Dict[str, Dict[str, int]]:
        """The outputs that dropped or failed to deliver something (event transports that gave up, a snapshot
        queue that overflowed...): ``{name: counters}`` from :attr:`sinks`, empty when every output delivered."""
        return {k: dict(v) for k, v in self.sinks.items() if v.get("dropped", 0) or v.get("failed", 0)}

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
            regions = [s["detect"]["regions"] for s in self.sources.values() if (s.get("detect") or {}).get("regions")]
            cut = (f"; in regions {sum(r['frames'] for r in regions)} frames, {sum(r['crops'] for r in regions)} crops"
                   if regions else "")
            lines.append(f"  inference on {self.inference_calls} of {self.processed} frames ({self.skipped_frames} "
                         f"skipped, motion in {self.motion_frames}{cut})")
        if self.sinks:
            lines.append(f"  outputs: {format_deliveries(self.sinks)}")
        lines += [f"  sink {'degraded' if e in self.degraded else 'failed'}: {e}" for e in self.sink_errors]
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
        self.timer = StageTimer(STAGES, reservoir=RESERVOIR)
        self.latency = Reservoir(RESERVOIR)  # glass-to-glass ms of every processed frame
        self._recent: Deque[float] = deque(maxlen=RECENT)  # latencies since the last stats line
        self.batch_sizes: Deque[int] = deque(maxlen=RECENT)  # the most recent batch sizes
        self.batch_calls = self.batch_frames = 0
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
            self.batch_calls += 1
            self.batch_frames += frames

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
        latency = (t_end - frame.capture_time) * 1e3
        with self._lock:
            self.latency.add(latency)
            self._recent.append(latency)
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

    def stats_line(self, sources: Sequence[Any], outputs: Optional[Mapping[str, Mapping[str, int]]] = None) -> str:
        """The periodic stats log line: latencies of the frames since the previous line, the same ``dropped`` as
        the summary; with ``outputs``, each output's delivery counters (a webhook that fails shows here while the
        run goes on)."""
        figures = [self.source_figures(s) for s in sources]
        with self._lock:
            recent = list(self._recent)
            self._recent.clear()
        p = percentiles(recent, (50, 95))
        return (f"stats: processed {self.processed()}, {self.rate.rate:.1f} FPS, read "
                f"{sum(f['read'] for f in figures)}, dropped {sum(f['dropped'] for f in figures)}, corrupt "
                f"{sum(f['corrupt'] for f in figures)}, reconnects {sum(f['reconnects'] for f in figures)}, "
                f"latency p50 {p[50]:.0f} / p95 {p[95]:.0f} ms"
                + (f"; outputs: {format_deliveries(outputs)}" if outputs else ""))

    def stage_means(self) -> Dict[str, float]:
        """``{stage: mean ms}`` so far (``nan`` for stages without samples)."""
        return {k: v["mean_ms"] for k, v in self.timer.summary().items()}

    def cpu_per_frame(self, decode_cpu_ms: float, sink_cpu_ms: Optional[Mapping[str, float]] = None
                      ) -> Dict[str, float]:
        """CPU ms per processed frame per stage, plus the sinks' measured threads (``sink_cpu_ms``: entry -> ms;
        module doc); empty before any frame."""
        processed = self.processed()
        if not processed or self._cpu0 is None:
            return {}
        total = (time.process_time() - self._cpu0) * 1e3
        with self._lock:
            per = dict(self._cpu_ms)
        per["decode"] = decode_cpu_ms
        extra = {k: float(v) for k, v in (sink_cpu_ms or {}).items() if k not in per}
        per["inference"] = max(total - sum(v for k, v in per.items() if k != "inference") - sum(extra.values()), 0.0)
        stages = STAGES + ((GATE_STAGE,) if self.with_gates else ())
        out = {k: per[k] / processed for k in stages if k != "processors" or self.with_processors}
        out.update({k: v / processed for k, v in extra.items()})
        out["total"] = total / processed
        return out

    def summary(self, per_source: Mapping[str, Dict[str, Any]], stopped_by: str, batch: int,
                sink_errors: Sequence[str], sinks: Mapping[str, Dict[str, int]], extra: Dict[str, Any],
                decode_cpu_ms: float, degraded: Sequence[str] = (),
                sink_cpu_ms: Optional[Mapping[str, float]] = None) -> RunSummary:
        """The :class:`RunSummary` of what has run so far (``per_source``: :meth:`source_figures` plus counts;
        ``sink_errors``: the failed sinks, ``degraded``: those that went on degraded; ``sink_cpu_ms``: the sinks'
        measured threads)."""
        processed = self.processed()
        span = (self.t_last - self.t_first) if self.t_first is not None and self.t_last is not None else 0.0
        stages = {k: {"mean_ms": v["mean_ms"], "p95_ms": v["p95_ms"]} for k, v in self.timer.summary().items()}
        with self._lock:
            kept = self.latency.values()
            calls, frames = self.batch_calls, self.batch_frames
        p = percentiles(kept, (50, 95, 99))
        per = dict(per_source)
        return RunSummary(
            frames_read=sum(s["read"] for s in per.values()), processed=processed,
            dropped=sum(s["dropped"] for s in per.values()), corrupt=sum(s["corrupt"] for s in per.values()),
            reconnects=sum(s["reconnects"] for s in per.values()), fps=processed / span if span > 0 else 0.0,
            duration_s=time.perf_counter() - self.t_start, stages=stages,
            latency_ms={"p50": p[50], "p95": p[95], "p99": p[99]}, sources=per, stopped_by=stopped_by,
            batch={"size": batch, "calls": calls, "mean_frames": frames / calls if calls else 0.0},
            sink_errors=list(sink_errors) + list(degraded), degraded=list(degraded), sinks=dict(sinks),
            cpu_ms_per_frame=self.cpu_per_frame(decode_cpu_ms, sink_cpu_ms),
            inference_calls=sum(s.get("inference_calls", 0) for s in per.values()),
            skipped_frames=sum(s.get("skipped_frames", 0) for s in per.values()),
            motion_frames=sum(s.get("motion_frames", 0) for s in per.values()), extra=extra)
