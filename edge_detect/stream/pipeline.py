"""The capture -> detect -> sinks loop, with its stages overlapped in threads.

Threads and queues::

    capture thread per source ──(Source queue: live keeps newest / files block)──┐
                                                                                  v
    "preprocess" thread: gather up to `batch` frames (round robin over the sources, bounded wait)
                         -> Detector.preprocess (letterbox, normalize, pad a static batch)
                                                                                  │ queue of 1 (a list of frames)
                                                                                  v
    "infer" thread:   Detector.infer on the whole batch (the only thread that touches the backend)
                                                                                  │ bounded queue (queue_size)
                                                                                  v
    calling thread:   Detector.postprocess -> per frame: processors (per-source chain) -> sinks (annotate once,
                      write each), frames in the order they were gathered

Decoding, inference and postprocessing+sinks run at the same time (OpenCV, ONNX Runtime and TensorRT release
the GIL), so the end-to-end rate approaches the slowest stage, normally inference. Sinks run in the calling
thread because GUI toolkits want the main thread.

Each :class:`~edge_detect.types.Frame` carries its capture time and the durations of the stages
``decode``, ``preprocess``, ``inference``, ``postprocess``, ``processors`` and ``sinks`` (milliseconds; with
batching, the preprocess / inference / postprocess time of the frame's whole batch). Glass-to-glass latency is
``time when the last sink returned - capture_time``.

Batching (``batch=N``): the preprocess thread takes frames from the sources in round robin (several from one source
when it has them queued, in order) until it holds ``N`` frames or ``batch_wait_s`` has passed since it took the
first one (default: one frame interval of the fastest source, 5..100 ms), then runs one backend call on them: a
stalled or slow source never holds the others for longer than that. A model with a static batch size ``B`` always
gets batches of ``B`` (``N`` is taken from the model; partial batches are padded by the detector); a dynamic-batch
model gets any ``1..N``. With a dynamic-shape model letterboxing to the minimum rectangle, a batch only holds frames
of one image size (a frame of another size waits for the next batch), so each frame is letterboxed exactly as it
would be alone. Results are per frame as with ``batch=1``; frame order within a source is preserved, and
each source keeps its own processor chain, so per-source outputs stay separate.

With a dynamic-shape model the :class:`~edge_detect.detector.Detector` letterboxes to the minimum rectangle of
the stream's aspect ratio (e.g. 640x384 for 16:9) instead of a padded square.

Processors (trackers, line / zone counters; :mod:`edge_detect.stream.processors`) run per source: the pipeline
keeps one chain of :meth:`~edge_detect.stream.processors.Processor.clone` copies per source, so state never mixes
between cameras. Each chain's optional ``finish(last_frame)`` is called once its source has ended and all its frames
went through the sinks (the other sources go on), else at the end of the run; events it returns reach the sinks
in one end-of-source :class:`~edge_detect.types.Result` (``final=True``). Each processor's
``summary()`` is merged into the run summary, per source under ``sources[id]`` and summed over sources at the top
level (e.g. ``"lines": {...}``).

Live sources wait in no queue: when every source is live (cameras, streams, or ``live=True``), each hand-over
between the threads (preprocess -> infer, infer -> sinks) keeps only the newest batch: a batch still waiting when a
newer one is ready is dropped and counted (``dropped_in_pipeline`` per source, included in ``dropped``), so a frame's
glass-to-glass time stays close to the sum of the stage times. Files (or a mix) keep the no-drop back-pressure.

Input buffers: with a :class:`~edge_detect.detector.Detector` the preprocess thread letterboxes straight into a
small ring of preallocated input batches (one ring per input shape), sized so that a buffer is never refilled
while a queued or running inference still reads it.

Frames in flight: when the detector's backend has several asynchronous infer requests
(:attr:`~edge_detect.detector.Detector.max_in_flight`, e.g. OpenVINO with ``hint="throughput"``), the infer thread
starts each batch with ``infer_async`` and hands its handle on at once; the sinks stage waits for the outputs,
postprocesses and releases the request, so up to that many batches infer at the same time (the ``inference``
time is then submit -> outputs ready).

CPU cost: each stage thread measures its own CPU time (``time.thread_time``) and the capture threads theirs for
decoding; :attr:`RunSummary.cpu_ms_per_frame` gives them per processed frame, with ``inference`` = the process
CPU time (``time.process_time``) left after the other stages (the inference runtime's worker threads).

Stopping: sources exhausted, ``max_frames`` processed, ``duration`` seconds elapsed, a sink asking to stop
(display q / Esc), or ``stop_event`` set (the CLI sets it from SIGINT / SIGTERM handlers). Frames already in
flight are finished, then every sink is closed (video files finalized) and every source released, also when
an exception escapes.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from edge_detect.errors import ConfigError, ModelError
from edge_detect.events import EventBus, merge_counts
from edge_detect.stats import RateMeter, StageTimer, nan_to_none, percentiles
from edge_detect.stream.sources import Source
from edge_detect.types import Detections, Frame, Result, RunContext, Sink, StreamInfo, as_event

__all__ = ["Pipeline", "RunSummary", "STAGES", "merge_summaries"]

LOGGER = logging.getLogger(__name__)

STAGES = ("decode", "preprocess", "inference", "postprocess", "processors", "sinks")
_END = object()


@dataclass
class RunSummary:
    """What a run did. Times in milliseconds unless the name says ``_s``.

    Attributes:
        frames_read: frames decoded by all sources (including those later dropped).
        processed: frames that went through every stage and every sink.
        dropped: stale frames discarded by live sources (consumer slower than the source).
        corrupt: frames that failed to decode and were skipped.
        reconnects: successful reconnections of network streams / cameras.
        fps: ``processed / (last sink done - first frame taken)``.
        duration_s: wall time of :meth:`Pipeline.run`.
        stages: ``{stage: {"mean_ms", "p95_ms"}}`` for :data:`STAGES`.
        latency_ms: glass-to-glass ``{"p50", "p95", "p99"}`` (capture -> last sink done).
        sources: per source id: ``uri`` (credentials masked), ``kind``, ``live``, ``read``, ``processed``,
            ``dropped``, ``corrupt``, ``empty`` (repeat-frame packets skipped), ``reconnects``,
            ``expected_frames`` (container count or ``None``). Processor summaries of the source are merged in
            (e.g. ``"lines"``).
        stopped_by: ``"end"``, ``"max_frames"``, ``"duration"``, ``"sink"`` (a sink asked to stop: the display's
            q / Esc), ``"sink_error"`` (a sink failed), ``"interrupt"``, ``"error"``, or when ``stop_event`` was set:
            its ``reason`` attribute if it has one (the CLI sets ``"SIGINT"`` / ``"SIGTERM"``), else
            ``"stop_event"``.
        sink_errors: one line per sink that failed to write or to finalize (``"<sink>: <message>"``); the run
            stops at the first write failure, every other sink is still finalized.
        batch: ``{"size": N, "calls": backend calls, "mean_frames": real frames per call}``.
        cpu_ms_per_frame: CPU milliseconds per processed frame for ``decode``, ``preprocess``, ``inference``,
            ``postprocess``, ``processors``, ``sinks`` and ``total`` (process CPU time / processed; module doc).
        sinks: per output that queues (``video``, ``jsonl``, ``mqtt``, ``webhook``, ``snapshots``...):
            ``{"queued", "sent", "dropped", "failed"}`` at the end of the run (a second output of one name is
            ``name#2``).
        extra: processor summaries summed over sources (numbers added, dicts merged), merged into
            :meth:`to_dict` at the top level (e.g. ``{"lines": {...}, "zones": {...}}``).
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


def _unique_ids(sources: Sequence[Source]) -> None:
    seen: Dict[str, int] = {}
    for src in sources:
        base = src.source_id
        if base in seen:
            seen[base] += 1
            src.rename(f"{base}-{seen[base]}")
        else:
            seen[base] = 0


def _effective_batch(detector: Any, requested: int) -> int:
    """The batch the pipeline gathers: a static-batch model's own size, else ``requested``."""
    spec = getattr(getattr(detector, "backend", None), "input_spec", None)
    static = int(getattr(spec, "batch", -1) or -1) if spec is not None else -1
    if static > 0:
        if requested not in (1, static):
            LOGGER.warning("batch: the model has a static batch of %d, got %d; using %d (export with --dynamic "
                           "for other sizes)", static, requested, static)
        return static
    return requested


merge_summaries = merge_counts  # processor summaries merge like counts: numbers added, dicts merged


@dataclass
class _Pending:
    """An asynchronous inference handed to the sinks stage: ``handle.wait()`` / ``release()``, started at ``t0``."""

    handle: Any
    t0: float


class Pipeline:
    """Run a detector over sources into sinks with overlapped stages (see module doc).

    Args:
        sources: opened :class:`Source` objects (:func:`~edge_detect.stream.sources.open_source`), or one.
        detector: a :class:`~edge_detect.detector.Detector` or any object with ``preprocess(images) ->
            (batch, infos)``, ``infer(batch) -> outputs``, ``postprocess(outputs, infos) -> [Detections]``
            and ``names``.
        sinks: opened :class:`Sink` objects (:func:`~edge_detect.sinks.open_sink`).
        processors: :class:`~edge_detect.stream.processors.Processor` objects, run in this order; each source
            gets its own chain of clones (the objects passed are not used themselves).
        tracker: shorthand for a tracker processor put first in ``processors``.
        max_frames: stop after this many processed frames (all sources together).
        duration: stop after this many seconds.
        progress: tqdm bar when every source is a file with a known length, else a periodic stats log line.
        stop_event: set it (from another thread or a signal handler) to stop cleanly.
        queue_size: batches in flight between the inference and the sinks stage.
        stats_interval_s: period of the stats log line for live sources.
        batch: frames per backend call, gathered across sources (see module doc); a static-batch model uses its
            own batch size instead.
        batch_wait_s: longest wait for more frames once a batch has its first one (``None``: one frame interval
            of the fastest source with a known rate, clamped to 5..100 ms; 40 ms when no rate is known).

    ``run()`` consumes the sources and sinks: it closes all of them before returning.
    """

    def __init__(self, sources: Union[Source, Sequence[Source]], detector: Any, sinks: Sequence[Sink] = (),
                 processors: Sequence[Any] = (), tracker: Any = None, max_frames: Optional[int] = None,
                 duration: Optional[float] = None,
                 progress: bool = True, stop_event: Optional[threading.Event] = None, queue_size: int = 2,
                 stats_interval_s: float = 10.0, batch: int = 1, batch_wait_s: Optional[float] = None,
                 bus: Optional[EventBus] = None) -> None:
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames: expected >= 1, got {max_frames}")
        if duration is not None and duration <= 0:
            raise ConfigError(f"duration: expected > 0 seconds, got {duration}")
        if queue_size < 1:
            raise ConfigError(f"queue_size: expected >= 1, got {queue_size}")
        if int(batch) < 1:
            raise ConfigError(f"batch: expected >= 1, got {batch}")
        if batch_wait_s is not None and batch_wait_s < 0:
            raise ConfigError(f"batch_wait_s: expected >= 0 seconds, got {batch_wait_s}")
        srcs = [sources] if isinstance(sources, Source) else list(sources)
        if not srcs:
            raise ConfigError("sources: expected at least one source, got none")
        for s in srcs:
            if not isinstance(s, Source):
                raise ConfigError(f"sources: expected opened Source objects (open_source(uri)), got {s!r}")
        for s in sinks:
            if not isinstance(s, Sink):
                raise ConfigError(f"sinks: expected opened Sink objects (open_sink(spec)), got {s!r}")
        procs = ([tracker] if tracker is not None else []) + list(processors)
        for p in procs:
            if not (callable(getattr(p, "update", None)) and callable(getattr(p, "clone", None))):
                raise ConfigError(f"processors: expected objects with update(detections, frame) and clone(), "
                                  f"got {p!r}")
        self.sources: List[Source] = list(srcs)
        _unique_ids(self.sources)
        self.sinks: List[Sink] = list(sinks)
        self._all_sinks: List[Sink] = list(sinks)  # also those dropped after a failure: their counters count
        self.bus = bus if bus is not None else EventBus()
        self.detector = detector
        self.names = tuple(getattr(detector, "names", ()) or ())
        self.processors = procs
        self._chains: Dict[str, List[Any]] = {s.source_id: self._chain(s.source_id) for s in self.sources}
        self.batch = _effective_batch(detector, int(batch))
        rates = [s.fps for s in self.sources if s.fps]
        self.batch_wait_s = float(batch_wait_s) if batch_wait_s is not None else \
            (min(max(1.0 / max(rates), 0.005), 0.1) if rates else 0.04)
        self.batch_sizes: List[int] = []
        # minimum-rectangle letterboxing (dynamic-shape models) sizes a batch after its largest image: batch only
        # frames of one shape so that every frame is letterboxed exactly as it would be alone
        self._same_shape = bool(getattr(detector, "dynamic_hw", False) and getattr(detector, "auto", False))
        self._pending: Dict[int, Frame] = {}  # source index -> a frame held for the next batch (other shape)
        self._take_lock = threading.Lock()
        self._taken = [0] * len(self.sources)  # frames taken from each source by the preprocess thread
        self._finished: set = set()  # source ids whose processor chains have been finished
        self._last_frame: Dict[str, Frame] = {}
        self.max_frames, self.duration, self.progress = max_frames, duration, progress
        self.stop_event = stop_event or threading.Event()
        self.stats_interval_s = stats_interval_s
        self.timer = StageTimer(STAGES)
        self.latencies: List[float] = []
        # all sources live: newest-only hand-overs (module doc), so one waiting batch at most between stages
        self._live = all(s.is_live for s in self.sources)
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=1 if self._live else queue_size)
        self._pre_queue: "queue.Queue[Any]" = queue.Queue(maxsize=1)
        self._handover_drops: Dict[str, int] = {s.source_id: 0 for s in self.sources}
        self._cpu_ms: Dict[str, float] = {k: 0.0 for k in STAGES}
        self._cpu_lock = threading.Lock()
        self._rings: Dict[Any, Any] = {}
        in_flight = getattr(detector, "max_in_flight", 1)
        self._in_flight = int(in_flight) if isinstance(in_flight, int) else 1
        self._slots = threading.Semaphore(self._in_flight)
        self._cpu0: Optional[float] = None
        self._halt = threading.Event()
        self._abort = threading.Event()  # consumers gone: producers stop waiting for room in the queues
        self._notify = threading.Event()
        self._error: Optional[BaseException] = None
        self._stopped_by = "end"
        self._sink_errors: List[str] = []
        self._processed: Dict[str, int] = {s.source_id: 0 for s in self.sources}
        self._t_first: Optional[float] = None
        self._t_last: Optional[float] = None
        self._ran = False

    def _chain(self, source_id: str) -> List[Any]:
        """Fresh clones of the processors for ``source_id``; their lines / zones declared to the bus's Counts."""
        chain = [p.clone() for p in self.processors]
        for proc in chain:
            regions = proc.regions(source_id) if callable(getattr(proc, "regions", None)) else {}
            self.bus.counts.declare(source_id, **regions)
        return chain

    # ------------------------------------------------------------------------------------------- infer stage

    def _gather(self, start: int, limit: int) -> List[Frame]:
        """Up to ``limit`` frames, round robin over the sources from ``start`` (see module doc for the wait).

        Returns an empty list after a short wait when no source has a frame (the caller re-checks the stop
        conditions).
        """
        frames: List[Frame] = []
        held: set = set()
        n = len(self.sources)
        deadline: Optional[float] = None
        rr = start
        while len(frames) < limit:
            self._notify.clear()
            got = False
            for k in range(n):
                if len(frames) >= limit:
                    break
                i = (rr + k) % n
                if i in held:
                    continue
                frame = self._pending.pop(i, None)
                if frame is None:
                    with self._take_lock:  # read and count together (see _finish_ended_sources)
                        frame = self.sources[i].read(timeout=0)
                        if frame is not None:
                            self._taken[i] += 1
                if frame is None:
                    continue
                if self._same_shape and frames and frame.image.shape != frames[0].image.shape:
                    self._pending[i] = frame  # next batch; no later frame of this source joins this one
                    held.add(i)
                    continue
                frames.append(frame)
                got = True
            rr += 1
            if len(frames) >= limit or self._halt.is_set():
                break
            if got:
                if deadline is None:
                    deadline = time.perf_counter() + self.batch_wait_s
                continue
            if not frames:
                self._notify.wait(0.05)
                break
            remaining = deadline - time.perf_counter() if deadline is not None else 0.0
            if remaining <= 0 or all(s.exhausted for s in self.sources):
                break
            self._notify.wait(min(remaining, 0.05))
        return frames

    def _stop_reason(self) -> str:
        return str(getattr(self.stop_event, "reason", None) or "stop_event")

    def _stop(self, reason: str) -> None:
        if not self._halt.is_set():
            self._stopped_by = reason
            self._halt.set()

    def _preprocess_loop(self, t_start: float) -> None:
        """Pick frames (round robin), check the stop conditions, letterbox; hand over to the infer thread."""
        dispatched, rr = 0, 0
        cap = self.batch
        try:
            while not self._halt.is_set():
                if self.stop_event.is_set():
                    self._stop(self._stop_reason())
                    break
                if self.max_frames is not None and dispatched >= self.max_frames:
                    self._stop("max_frames")
                    break
                if self.duration is not None and time.perf_counter() - t_start >= self.duration:
                    self._stop("duration")
                    break
                limit = cap if self.max_frames is None else min(cap, self.max_frames - dispatched)
                frames = self._gather(rr, limit)
                if not frames:
                    if not self._pending and all(s.exhausted for s in self.sources):
                        self._stop("end")
                        break
                    continue
                rr += 1
                if self._t_first is None:
                    self._t_first = time.perf_counter()
                t0, c0 = time.perf_counter(), time.thread_time()
                images = [f.image for f in frames]
                out = self._input_buffer(images)
                if out is not None:
                    batch, infos = self.detector.preprocess(images, out=out)
                else:
                    batch, infos = self.detector.preprocess(images)
                ms = (time.perf_counter() - t0) * 1e3
                self._add_cpu("preprocess", c0)
                for f in frames:
                    f.timings["preprocess"] = ms
                self.batch_sizes.append(len(frames))
                self._put(self._pre_queue, (frames, batch, infos))
                dispatched += len(frames)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            self._error = exc
            self._stop("error")
        finally:
            self._put(self._pre_queue, _END, force=True)

    def _infer_loop(self) -> None:
        """Run the backend on preprocessed frames; the only thread that touches the backend."""
        try:
            while True:
                try:
                    item = self._pre_queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                frames, batch, infos = item
                t0 = time.perf_counter()
                if self._in_flight > 1:
                    # async: several batches infer at once; the sinks stage waits for each (module doc)
                    while not self._slots.acquire(timeout=0.1):  # at most max_in_flight handles alive
                        if self._abort.is_set():
                            return
                    handle = self.detector.infer_async(batch)
                    self._put(self._queue, (frames, _Pending(handle, t0), infos))
                    continue
                outputs = self.detector.infer(batch)
                ms = (time.perf_counter() - t0) * 1e3  # CPU: the rest of process time (module doc)
                for f in frames:
                    f.timings["inference"] = ms
                self._put(self._queue, (frames, outputs, infos))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            self._error = exc
            self._stop("error")
        finally:
            self._put(self._queue, _END, force=True)

    def _add_cpu(self, stage: str, c0: float) -> None:
        """Add this thread's CPU time since ``c0`` (``time.thread_time()``) to ``stage``."""
        ms = (time.thread_time() - c0) * 1e3
        with self._cpu_lock:
            self._cpu_ms[stage] += ms

    def _input_buffer(self, images: Sequence[Any]) -> Any:
        """The next preallocated input batch for ``images`` (ring per shape), or ``None`` (no buffer support).

        A ring holds 4 batches: one being filled, one waiting in the hand-over queue, one being inferred, one
        spare; with asynchronous inference, one more per request that may be in flight (a batch is read until
        its handle's ``wait()``, and the infer thread cannot start more than that many).
        """
        make = getattr(self.detector, "input_buffer", None)
        target = getattr(self.detector, "target_hw", None)
        if make is None or target is None:
            return None
        hw = tuple(target(tuple(images[0].shape[:2])))
        spec = getattr(getattr(self.detector, "backend", None), "input_spec", None)
        rows = spec.batch if spec is not None and spec.batch > 0 else len(images)
        key = (hw, rows)
        ring = self._rings.get(key)
        if ring is None:  # + the batches that may be inferring asynchronously at once
            size = 4 + (self._in_flight if self._in_flight > 1 else 0)
            ring = self._rings[key] = {"buffers": [make(hw, rows) for _ in range(size)], "next": 0}
        buf = ring["buffers"][ring["next"]]
        ring["next"] = (ring["next"] + 1) % len(ring["buffers"])
        return buf

    def _put(self, q: "queue.Queue[Any]", item: Any, force: bool = False) -> None:
        """Hand ``item`` to the next stage.

        Files: wait while the next stage is busy (frames in flight are never dropped). All sources live: keep only
        the newest, a batch still waiting in ``q`` is replaced by ``item`` and its frames counted as dropped.

        Only once the consumers are gone (:attr:`_abort`: an error, an interrupt or the end of :meth:`run`) is an
        item dropped, or, for the end marker (``force``), an item evicted to make room for it.
        """
        if self._live and not force:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                try:  # one producer per queue: after this get there is room for the put below
                    stale = q.get_nowait()
                except queue.Empty:
                    stale = None
                if stale is not None and stale is not _END:
                    if isinstance(stale[1], _Pending):
                        stale[1].handle.release()
                        self._slots.release()
                    for frame in stale[0]:
                        self._handover_drops[frame.source_id] = self._handover_drops.get(frame.source_id, 0) + 1
                q.put_nowait(item)
                return
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._abort.is_set():
                    continue
                if not force:
                    return
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass

    # ------------------------------------------------------------------------------------------- sink stage

    def _finish(self, item: Any, rate: RateMeter) -> int:
        """Postprocess one batch, then run each frame through its source's processors and the sinks."""
        frames, outputs, infos = item
        pending = outputs if isinstance(outputs, _Pending) else None
        if pending is not None:
            outputs = pending.handle.wait()
            ms = (time.perf_counter() - pending.t0) * 1e3
            for f in frames:
                f.timings["inference"] = ms
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            dets_list = self.detector.postprocess(outputs, infos)
        finally:
            if pending is not None:
                pending.handle.release()
                self._slots.release()
        post_ms = (time.perf_counter() - t0) * 1e3
        self._add_cpu("postprocess", c0)
        if len(dets_list) != len(frames):
            raise ModelError(f"postprocess: expected {len(frames)} detection sets (one per frame of the batch), "
                             f"got {len(dets_list)}")
        for frame, dets in zip(frames, dets_list):
            self._finish_frame(frame, dets, post_ms, rate)
        return len(frames)

    def _finish_frame(self, frame: Frame, dets: Detections, post_ms: float, rate: RateMeter) -> None:
        t1, c1 = time.perf_counter(), time.thread_time()
        for proc in self._chains.get(frame.source_id, ()):
            dets = proc.update(dets, frame)
        dets.metadata["events"] = [as_event(e) for e in dets.metadata.get("events", ())]
        t_proc = time.perf_counter()
        self._add_cpu("processors", c1)
        c_proc = time.thread_time()
        result = Result(frame, dets, self.names, rate.rate)
        self.bus.publish(result)
        for sink in list(self.sinks):
            try:
                sink.write(result)
            except Exception as exc:  # noqa: BLE001 - one failing output must not lose the others
                self._sink_failed(sink, exc, "writing")
        t2 = time.perf_counter()
        self._add_cpu("sinks", c_proc)
        self._last_frame[frame.source_id] = frame
        frame.timings["postprocess"] = post_ms
        if self.processors:
            frame.timings["processors"] = (t_proc - t1) * 1e3
        frame.timings["sinks"] = (t2 - t_proc) * 1e3
        for stage in STAGES:
            if stage in frame.timings:
                self.timer.add(stage, frame.timings[stage])
        self.latencies.append((t2 - frame.capture_time) * 1e3)
        self._processed[frame.source_id] = self._processed.get(frame.source_id, 0) + 1
        self._t_last = t2
        rate.tick(t2)
        if any(s.stop_requested for s in self.sinks):
            self._stop("sink")

    def _bar(self) -> Any:
        if not self.progress or any(s.is_live or not s.expected_frames for s in self.sources):
            return None
        from tqdm import tqdm

        total = sum(s.expected_frames or 0 for s in self.sources)
        if self.max_frames is not None:
            total = min(total, self.max_frames)
        return tqdm(total=total, unit="frame", desc="run", dynamic_ncols=True)

    def _log_stats(self, rate: RateMeter, since: int) -> None:
        recent = self.latencies[since:]
        p = percentiles(recent, (50, 95))
        LOGGER.info("stats: processed %d, %.1f FPS, read %d, dropped %d, corrupt %d, reconnects %d, "
                    "latency p50 %.0f / p95 %.0f ms", sum(self._processed.values()), rate.rate,
                    sum(s.stats.read for s in self.sources), sum(s.stats.dropped for s in self.sources),
                    sum(s.stats.corrupt for s in self.sources), sum(s.stats.reconnects for s in self.sources),
                    p[50], p[95])

    def run(self) -> RunSummary:
        """Process until a stop condition (see module doc); returns the :class:`RunSummary`.

        Raises:
            Whatever a stage raised (after closing sinks and sources). ``KeyboardInterrupt`` is re-raised
            after the sinks are finalized.
        """
        if self._ran:
            raise RuntimeError("Pipeline.run() can be called once: sources and sinks are closed afterwards")
        self._ran = True
        t_start = time.perf_counter()
        self._cpu0 = time.process_time()
        context = self.context()
        for src in self.sources:
            src.add_listener(self._notify)
            src.start()
        bar = None
        interrupted: Optional[BaseException] = None
        workers = [threading.Thread(target=self._preprocess_loop, args=(t_start,), name="preprocess", daemon=True),
                   threading.Thread(target=self._infer_loop, name="infer", daemon=True)]
        try:
            for sink in self.sinks:
                sink.start(context)
            bar = self._bar()
            rate = RateMeter(2.0)
            last_log, logged = time.perf_counter(), 0
            for worker in workers:
                worker.start()
            while True:
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self.stop_event.is_set():
                        self._stop(self._stop_reason())
                    continue
                if item is _END:
                    break
                done = self._finish(item, rate)
                self._finish_ended_sources()
                if self.stop_event.is_set():
                    self._stop(self._stop_reason())
                if bar is not None:
                    bar.update(done)
                elif self.progress and time.perf_counter() - last_log >= self.stats_interval_s:
                    self._log_stats(rate, logged)
                    last_log, logged = time.perf_counter(), len(self.latencies)
            if self._error is None:
                self._finish_chains()
        except KeyboardInterrupt as exc:
            interrupted = exc
            self._stop("interrupt")
        except BaseException:
            self._stop("error")
            raise
        finally:
            self._halt.set()
            self._abort.set()
            for worker in workers:
                if worker.is_alive():
                    worker.join(5.0)
            if bar is not None:
                bar.close()
            self._close_all()
        if self._error is not None:
            raise self._error
        summary = self.summary(time.perf_counter() - t_start)
        LOGGER.info("%s", summary.format())
        if interrupted is not None:
            raise interrupted
        return summary

    def context(self) -> RunContext:
        """The read-only :class:`~edge_detect.types.RunContext` the sinks are started with."""
        streams = [StreamInfo(s.source_id, s.fps, s.is_live, s.uri, s.kind, s.expected_frames) for s in self.sources]
        return RunContext(streams, self.names, self.bus, self.stats_snapshot)

    def stats_snapshot(self) -> Dict[str, Any]:
        """The run's figures now: per source ``read``, ``processed``, ``dropped`` (all causes), ``corrupt``,
        ``reconnects``...; per sink output its delivery counters (see :meth:`RunContext.stats`)."""
        per = self._per_source()
        return {"sources": per, "sinks": self._sink_stats()}

    def _sink_stats(self) -> Dict[str, Dict[str, int]]:
        out: Dict[str, Dict[str, int]] = {}
        for sink in self._all_sinks:
            for name, st in sink.counters().items():
                key, n = name, 2
                while key in out:
                    key, n = f"{name}#{n}", n + 1
                out[key] = dict(st)
        return out

    def _finish_ended_sources(self) -> None:
        """Finish the chain of every source that has ended and whose frames have all been through the sinks."""
        if not self.processors:
            return
        for i, src in enumerate(self.sources):
            sid = src.source_id
            if sid in self._finished:
                continue
            with self._take_lock:
                ended = src.exhausted and self._taken[i] == self._processed.get(sid, 0)
            if ended:
                self._finish_chain(sid)

    def _finish_chains(self) -> None:
        """At the end of the run: finish the chains of the sources not finished yet (module doc)."""
        for sid in self._chains:
            if sid not in self._finished:
                self._finish_chain(sid)

    def _finish_chain(self, sid: str) -> None:
        """Call the optional ``finish(last_frame)`` of the source's processors; write returned events."""
        self._finished.add(sid)
        frame = self._last_frame.get(sid)
        if frame is None:
            return
        events: List[Any] = []
        for proc in self._chains.get(sid, ()):
            finish = getattr(proc, "finish", None)
            if callable(finish):
                events += [as_event(e) for e in finish(frame) or ()]
        if not events:
            return
        result = Result(frame, Detections.empty(), self.names, 0.0, final=True)
        result.detections.metadata["events"] = events
        self.bus.publish(result)
        for sink in list(self.sinks):
            try:
                sink.write(result)
            except Exception as exc:  # noqa: BLE001 - one failing output must not lose the others
                self._sink_failed(sink, exc, "writing")

    def _sink_failed(self, sink: Sink, exc: BaseException, doing: str) -> None:
        """Record a sink failure, drop the sink (closing it) and stop the run; the other sinks carry on to
        their normal finalization."""
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._sink_errors.append(f"{sink.name}: {doing} failed: {msg}")
        LOGGER.error("%s sink: %s failed: %s; finishing the run and finalizing the other outputs", sink.name,
                     doing, msg)
        if sink in self.sinks:
            self.sinks.remove(sink)
            try:
                sink.close()
            except Exception as close_exc:  # noqa: BLE001 - already failed; the first error is the one reported
                LOGGER.debug("closing the failed %s sink: %s", sink.name, close_exc)
        self._stop("sink_error")

    def _close_all(self) -> None:
        for src in self.sources:
            src.close()
        for sink in list(self.sinks):
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - close every sink, then report
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._sink_errors.append(f"{sink.name}: finalizing failed: {msg}")
                LOGGER.error("closing %s sink failed: %s", sink.name, msg)

    def _cpu_per_frame(self, processed: int) -> Dict[str, float]:
        """CPU ms per processed frame per stage (module doc); empty before any frame or without process CPU."""
        if not processed or self._cpu0 is None:
            return {}
        total = (time.process_time() - self._cpu0) * 1e3
        with self._cpu_lock:
            per = dict(self._cpu_ms)
        per["decode"] = sum(getattr(s.stats, "decode_cpu_ms", 0.0) for s in self.sources)
        per["inference"] = max(total - sum(v for k, v in per.items() if k != "inference"), 0.0)
        out = {k: per[k] / processed for k in STAGES if k != "processors" or self.processors}
        out["total"] = total / processed
        return out

    def _per_source(self) -> Dict[str, Dict[str, Any]]:
        per_source = {
            s.source_id: {"uri": s.uri, "kind": s.kind, "live": s.is_live, **s.stats.to_dict(),
                          "processed": self._processed.get(s.source_id, 0), "expected_frames": s.expected_frames}
            for s in self.sources
        }
        for sid, n in self._handover_drops.items():  # newest-only hand-overs of live runs (module doc)
            per_source[sid]["dropped_in_pipeline"] = n
            per_source[sid]["dropped"] = per_source[sid]["dropped"] + n
        return per_source

    def summary(self, duration_s: float) -> RunSummary:
        """The :class:`RunSummary` of what has run so far."""
        processed = sum(self._processed.values())
        span = (self._t_last - self._t_first) if self._t_first is not None and self._t_last is not None else 0.0
        stages = {k: {"mean_ms": v["mean_ms"], "p95_ms": v["p95_ms"]} for k, v in self.timer.summary().items()}
        p = percentiles(self.latencies, (50, 95, 99))
        per_source = self._per_source()
        chain_summaries = {sid: merge_summaries([p.summary() for p in chain if hasattr(p, "summary")]
                                                + [self.bus.counts.summary(sid)])
                           for sid, chain in self._chains.items()}
        for sid, extra in chain_summaries.items():
            for key, value in extra.items():
                per_source[sid].setdefault(key, value)
        return RunSummary(
            frames_read=sum(s.stats.read for s in self.sources),
            processed=processed,
            dropped=sum(s["dropped"] for s in per_source.values()),
            corrupt=sum(s.stats.corrupt for s in self.sources),
            reconnects=sum(s.stats.reconnects for s in self.sources),
            fps=processed / span if span > 0 else 0.0,
            duration_s=duration_s,
            stages=stages,
            latency_ms={"p50": p[50], "p95": p[95], "p99": p[99]},
            sources=per_source,
            stopped_by=self._stopped_by,
            batch={"size": self.batch, "calls": len(self.batch_sizes),
                   "mean_frames": (sum(self.batch_sizes) / len(self.batch_sizes)) if self.batch_sizes else 0.0},
            sink_errors=list(self._sink_errors),
            sinks=self._sink_stats(),
            cpu_ms_per_frame=self._cpu_per_frame(processed),
            extra=merge_summaries(list(chain_summaries.values())),
        )
