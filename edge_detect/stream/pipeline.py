"""The capture -> detect -> processors -> bus -> sinks loop, its stages overlapped in threads: a thin composition of
:class:`~edge_detect.stream.batcher.Batcher` (gathering, gate hook, input buffers),
:class:`~edge_detect.stream.inflight.InFlight` (hand-overs, asynchronous inference),
:class:`~edge_detect.stream.chains.Chains` (per-source processors), :class:`~edge_detect.stream.outputs.Outputs`
(the sinks' failure policy) and :class:`~edge_detect.stream.runstats.RunStats` (figures, the one ``dropped``)::

    capture thread per source ──(Source queue: live keeps newest / files block)──┐
    "preprocess" thread: gather (round robin, bounded wait) -> gate -> DetectorLike.preprocess
                                                    │ Handover of 1 batch
    "infer" thread:      DetectorLike.infer (or infer_async, up to max_in_flight at once)
                                                    │ Handover (queue_size)
    calling thread:      postprocess -> per frame: its source's chain -> publish the Result on the bus (Counts
                         first) -> sinks; runtime changes applied between two batches

Decoding, inference and postprocessing+sinks run at the same time (the runtimes release the GIL), so the rate
approaches the slowest stage. Sinks are called on the calling thread (GUI toolkits want the main thread); those
that do I/O queue it to their own thread (:class:`~edge_detect.sinks.threaded.ThreadedSink`). Each
:class:`~edge_detect.types.Frame` carries its capture time and the durations of the stages ``decode``,
``preprocess``, ``inference``, ``postprocess``, ``processors`` and ``sinks`` (ms; with batching, its batch's);
glass-to-glass latency is ``time the last sink returned - capture_time``. A batch whose inference raises
:class:`~edge_detect.errors.TransientBackendError` is dropped (``dropped_backend``) and the run goes on.

Each source's chain ``finish(last_frame)`` runs once its source ended and all its frames went through (else at
the end of the run); its events reach the bus and the sinks in one end-of-source Result (``final=True``). Counts
come from the bus; other processor ``summary()`` figures are merged into the summary, per source and summed.

Every event gets its id once, when the chain returns it (:meth:`~edge_detect.types.Event.with_id`). Events a sink
emits into the run (:meth:`~edge_detect.types.RunContext.emit`, e.g. the recorder's ``clip_saved``, from the sink's
own thread) are delivered on the sinks stage between two batches (and while it waits for one): with their id, on
the bus and to every sink, in a Result with ``emitted=True`` carrying the source's latest frame.

Runtime changes (:meth:`Pipeline.apply`, used by :class:`~edge_detect.app.App`): add / remove / pause a source,
replace a chain, install a gate, add / remove a sink, all between two batches. Stopping: sources exhausted,
``max_frames``, ``duration``, a sink asking (display q / Esc), :meth:`Pipeline.stop`, or ``stop_event``; frames in
flight are finished, every sink is closed and every source released, also when an exception escapes. With
``keep_alive`` (a served app: ``edge-detect serve``, ``run --http``) the run does not end when its sources have ended,
and may start with none: it waits for sources added at run time until stopped.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edge_detect.detector import as_detector_like
from edge_detect.errors import ConfigError, ModelError
from edge_detect.events import EventBus, merge_counts
from edge_detect.stream.batcher import Batch, Batcher, Gate
from edge_detect.stream.chains import Chains
from edge_detect.stream.inflight import END, Handover, InFlight
from edge_detect.stream.outputs import Outputs
from edge_detect.stream.regions import regions_to_frame
from edge_detect.stream.runstats import STAGES, RunStats, RunSummary
from edge_detect.stream.runtime import RuntimeChanges
from edge_detect.stream.sources import Source, rename_duplicate_ids
from edge_detect.types import Detections, Frame, Result, RunContext, Sink, StreamInfo

__all__ = ["Pipeline", "RunSummary", "STAGES", "merge_summaries"]

LOGGER = logging.getLogger(__name__)

merge_summaries = merge_counts  # processor summaries merge like counts: numbers added, dicts merged
_OPS_POLL_S = 0.01  # the sinks stage's wait for a batch between two looks at the runtime changes asked




def _check(sources: Sequence[Any], sinks: Sequence[Any], procs: Sequence[Any], max_frames: Optional[int],
           duration: Optional[float], queue_size: int, keep_alive: bool) -> None:
    checks = [(max_frames is None or max_frames >= 1, "max_frames", ">= 1", max_frames),
              (duration is None or duration > 0, "duration", "> 0 seconds", duration),
              (queue_size >= 1, "queue_size", ">= 1", queue_size)]
    for ok, name, expected, actual in checks:
        if not ok:
            raise ConfigError(f"{name}: expected {expected}, got {actual}")
    if not sources and not keep_alive:
        raise ConfigError("sources: expected at least one source, got none")
    for s in sources:
        if not isinstance(s, Source):
            raise ConfigError(f"sources: expected opened Source objects (open_source(uri)), got {s!r}")
    for s in sinks:
        if not isinstance(s, Sink):
            raise ConfigError(f"sinks: expected opened Sink objects (open_sink(spec)), got {s!r}")
    for p in procs:
        if not (callable(getattr(p, "update", None)) and callable(getattr(p, "clone", None))):
            raise ConfigError(f"processors: expected objects with update(detections, frame) and clone(), got {p!r}")


def _stream_info(src: Source) -> StreamInfo:
    return StreamInfo(src.source_id, src.fps, src.is_live, src.uri, src.kind, src.expected_frames)


def _per_frame(batch: Batch, found: Sequence[Detections]) -> Dict[int, Detections]:
    """``{frame index: Detections in original-frame pixels}`` from one Detections per row of ``batch``: a frame's
    region rows are mapped back and merged (:func:`~edge_detect.stream.regions.regions_to_frame`; the regions go
    to ``metadata["regions"]`` as ``[[x1, y1, x2, y2], ...]``)."""
    rows: Dict[int, List[Any]] = {}
    for (i, region), dets in zip(batch.rows, found):
        rows.setdefault(i, []).append((region, dets))
    out: Dict[int, Detections] = {}
    for i, parts in rows.items():
        if parts[0][0] is None:
            out[i] = parts[0][1]
            continue
        regions = [r for r, _ in parts]
        out[i] = regions_to_frame([d for _, d in parts], regions, batch.frames[i].shape)
        out[i].metadata["regions"] = [list(r.xyxy) for r in regions]
    return out


class Pipeline(RuntimeChanges):
    """Run a detector over sources into the bus and the sinks with overlapped stages (see module doc).

    Args:
        sources: opened :class:`Source` objects (:func:`~edge_detect.stream.sources.open_source`), or one.
        detector: a :class:`~edge_detect.detector.DetectorLike` (a :class:`~edge_detect.detector.Detector`), or
            any object with ``names``, ``preprocess(images)``, ``infer(batch)`` and ``postprocess(outputs, infos)``
            (:func:`~edge_detect.detector.as_detector_like`).
        sinks: opened :class:`Sink` objects (:func:`~edge_detect.sinks.open_sink`), called in this order.
        processors: :class:`~edge_detect.stream.processors.Processor` prototypes, run in this order; each source
            gets its own chain of clones.
        tracker: shorthand for a tracker processor put first in ``processors``.
        max_frames, duration: stop after this many processed frames (all sources) / seconds.
        progress: tqdm bar when every source is a file with a known length, else a periodic stats log line.
        stop_event: set it (from another thread or a signal handler) to stop cleanly (its ``reason`` attribute,
            if any, becomes ``stopped_by``); or call :meth:`stop`.
        queue_size: batches in flight between the inference and the sinks stage.
        stats_interval_s: period of the stats log line.
        batch, batch_wait_s: frames per backend call and the gathering wait (:mod:`~edge_detect.stream.batcher`).
        bus: the :class:`~edge_detect.events.EventBus` to publish on (default: a new one; an App passes its own so
            counts carry on across pipelines).
        gates: ``{source_id: gate}`` pre-inference gates (:meth:`~edge_detect.stream.batcher.Batcher.set_gate`).
        keep_alive: run until stopped, also with no source or every source ended (sources are added at run time).

    ``run()`` consumes the sources and sinks: it closes all of them before returning.
    """

    def __init__(self, sources: Union[Source, Sequence[Source]], detector: Any, sinks: Sequence[Sink] = (),
                 processors: Sequence[Any] = (), tracker: Any = None, max_frames: Optional[int] = None,
                 duration: Optional[float] = None, progress: bool = True, stop_event: Optional[threading.Event] = None,
                 queue_size: int = 2, stats_interval_s: float = 10.0, batch: int = 1,
                 batch_wait_s: Optional[float] = None, bus: Optional[EventBus] = None,
                 gates: Optional[Dict[str, Gate]] = None, keep_alive: bool = False) -> None:
        srcs = [sources] if isinstance(sources, Source) else list(sources)
        procs = ([tracker] if tracker is not None else []) + list(processors)
        _check(srcs, sinks, procs, max_frames, duration, queue_size, keep_alive)
        self.keep_alive = bool(keep_alive)
        rename_duplicate_ids(srcs)
        self.detector = detector
        self._det = as_detector_like(detector)
        self.names = tuple(self._det.names)
        self.outputs = Outputs(sinks, self.stop)
        self.bus = bus if bus is not None else EventBus()
        self.processors = procs
        self._abort = threading.Event()  # consumers gone: producers stop waiting for room in the queues
        self._halt = threading.Event()
        self._notify = threading.Event()
        self.stats = RunStats(with_processors=bool(procs))
        self.batcher = Batcher(srcs, self._det, batch, batch_wait_s, self._det.max_in_flight, self._notify)
        self.batch = self.batcher.size
        self.inflight = InFlight(self._det, self._abort)
        live = bool(srcs) and all(s.is_live for s in srcs)  # newest-only hand-overs (edge_detect.stream.inflight)
        self._pre_q = Handover(1, live, self._abort, self._dropped)
        self._post_q = Handover(queue_size, live, self._abort, self._dropped)
        self.chains = Chains(procs, self.bus.counts)
        for src in srcs:
            self.chains.build(src.source_id)
        self._retired: Dict[str, Source] = {}  # removed sources whose last frames may still be in flight
        self._finished: set = set()
        self._last_frame: Dict[str, Frame] = {}
        for sid, gate in (gates or {}).items():
            self.set_gate(sid, gate)
        self.max_frames, self.duration, self.progress = max_frames, duration, progress
        self.stop_event = stop_event or threading.Event()
        self.stats_interval_s = stats_interval_s
        self._ops: "queue.Queue[Any]" = queue.Queue()
        self._running = False
        self._error: Optional[BaseException] = None
        self._stopped_by = "end"
        self._ran = False

    # ------------------------------------------------------------------------------------------- public state

    @property
    def sources(self) -> List[Source]:
        """The sources being read now."""
        return self.batcher.sources

    @property
    def input_device(self) -> str:
        """Where the detector's input batches live (``"cpu"``: the host path)."""
        return self._det.input_device

    @property
    def sinks(self) -> List[Sink]:
        """The sinks written now, in order."""
        return self.outputs.sinks

    def context(self) -> RunContext:
        """The read-only :class:`~edge_detect.types.RunContext` the sinks are started with (emitting into this
        run, looking up sources added later)."""
        streams = [_stream_info(s) for s in self.sources]
        return RunContext(streams, self.names, self.bus, self.stats_snapshot, emit=self.outputs.emit,
                          lookup=self._stream_info)

    def _stream_info(self, source_id: str) -> Optional[StreamInfo]:
        src = next((s for s in list(self.sources) if s.source_id == source_id), None)
        return None if src is None else _stream_info(src)

    def source_figures(self, source: Source) -> Dict[str, Any]:
        """The figures of one source now: :meth:`RunStats.source_figures` plus its gate's ``figures()``
        (``motion_frames``, ``detect``; :class:`~edge_detect.stream.gating.SourceGate`)."""
        out = self.stats.source_figures(source)
        gate = self.batcher.gate_of(source.source_id)
        if gate is not None and callable(getattr(gate, "figures", None)):
            out.update(gate.figures())
        return out

    def stats_snapshot(self) -> Dict[str, Any]:
        """The run's figures now: per source (:meth:`source_figures`), per sink output its counters, CPU ms per
        frame per stage."""
        return {"sources": {s.source_id: self.source_figures(s) for s in self.sources},
                "sinks": self.outputs.counters(), "cpu_ms_per_frame": self.cpu_per_frame()}

    def cpu_per_frame(self) -> Dict[str, float]:
        """CPU ms per processed frame per stage so far (:meth:`RunStats.cpu_per_frame`)."""
        return self.stats.cpu_per_frame(sum(s.stats.decode_cpu_ms for s in self.sources))

    def stop(self, reason: str = "stop") -> None:
        """Stop the run cleanly (frames in flight are finished, outputs finalized); ``reason`` -> ``stopped_by``."""
        if not self._halt.is_set():
            self._stopped_by = reason
            self._halt.set()

    def abandon(self, reason: str = "stop") -> None:
        """:meth:`stop`, and the outputs stop waiting for deliveries (network queues give up what is left, counted
        ``failed``; files are still finalized). Sets flags only: safe in a signal handler."""
        self.stop(reason)
        self.outputs.abandon()

    # ------------------------------------------------------------------------------------------- chains

    def _finish_ended_sources(self) -> None:
        """Finish the chain of every source that has ended (or was removed) and whose frames have all gone
        through."""
        for src in self.sources + list(self._retired.values()):
            sid = src.source_id
            if sid not in self._finished and self.batcher.ended(src, self.stats.settled(sid)):
                self._finish_chain(sid)

    def _finish_chain(self, sid: str) -> None:
        """Call the optional ``finish(last_frame)`` of the source's processors; publish and write their events."""
        self._finished.add(sid)
        frame = self._last_frame.pop(sid, None) if sid in self._retired else self._last_frame.get(sid)
        events = self.chains.finish(sid, frame) if frame is not None else []
        if events:
            result = Result(frame, Detections.empty(), self.names, 0.0, final=True)
            result.detections.metadata["events"] = events
            self.bus.publish(result)
            self.outputs.write(result)

    # ------------------------------------------------------------------------------------------- stage threads

    def _stop_reason(self) -> str:
        return str(getattr(self.stop_event, "reason", None) or "stop_event")

    def _check_stop(self, dispatched: int) -> bool:
        if self.stop_event.is_set():
            self.stop(self._stop_reason())
        elif self.max_frames is not None and dispatched >= self.max_frames:
            self.stop("max_frames")
        elif self.duration is not None and time.perf_counter() - self.stats.t_start >= self.duration:
            self.stop("duration")
        return self._halt.is_set()

    def _preprocess_loop(self) -> None:
        """Gather (round robin), check the stop conditions, gate and letterbox; hand over to the infer thread."""
        dispatched, rr = 0, 0
        try:
            while not self._check_stop(dispatched):
                cap = self.batcher.size
                limit = cap if self.max_frames is None else min(cap, self.max_frames - dispatched)
                frames = self.batcher.gather(rr, limit, self._halt)
                if not frames:
                    if not self.keep_alive and self.batcher.idle_and_exhausted():
                        self.stop("end")
                    continue
                rr += 1
                self.stats.batch_started(len(frames))
                c0 = time.thread_time()
                batch = self.batcher.prepare(frames)
                self.stats.add_cpu("preprocess", c0, less_ms=batch.gate_cpu_ms)
                if batch.gate_cpu_ms:
                    self.stats.add_cpu_ms("motion", batch.gate_cpu_ms)
                self._pre_q.put(batch)
                dispatched += len(frames)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            self._error = exc
            self.stop("error")
        finally:
            self._pre_q.put(END, force=True)

    def _infer_loop(self) -> None:
        """Run the backend on preprocessed batches; the only thread that starts inferences."""
        try:
            while True:
                try:
                    batch = self._pre_q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if batch is END or not self.inflight.submit(batch):
                    break
                self._post_q.put(batch)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            self._error = exc
            self.stop("error")
        finally:
            self._post_q.put(END, force=True)

    def _dropped(self, batch: Batch, stale: bool) -> None:
        """A hand-over dropped ``batch``: release its request; a stale one counts as ``dropped_in_pipeline``."""
        self.inflight.release(batch)
        if stale:
            self.stats.dropped("dropped_in_pipeline", batch.frames)

    # ------------------------------------------------------------------------------------------- sinks stage

    def _finish(self, batch: Batch) -> int:
        """Postprocess one batch, then run each frame through its chain, the bus and the sinks."""
        self.inflight.collect(batch)
        if batch.failed is not None:
            self.stats.dropped("dropped_backend", batch.frames)
            return len(batch.frames)
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            found = self._det.postprocess(batch.outputs, batch.infos) if batch.inferred else []
        finally:
            self.inflight.release(batch)
        post_ms = (time.perf_counter() - t0) * 1e3
        self.stats.add_cpu("postprocess", c0)
        if len(found) != len(batch.rows):
            raise ModelError(f"postprocess: expected {len(batch.rows)} detection sets (one per input row of the "
                             f"batch), got {len(found)}")
        per_frame = _per_frame(batch, found)
        for i, frame in enumerate(batch.frames):
            dets = per_frame.get(i)
            if dets is None:  # gated out: no inference (module doc of edge_detect.stream.batcher)
                dets = Detections.empty()
                dets.metadata["inferred"] = False
                frame.timings.setdefault("inference", 0.0)
            self._finish_frame(frame, dets, post_ms)
        return len(batch.frames)

    def _finish_frame(self, frame: Frame, dets: Detections, post_ms: float) -> None:
        t1, c1 = time.perf_counter(), time.thread_time()
        dets = self.chains.run(dets, frame)
        gate = self.batcher.gate_of(frame.source_id)
        if gate is not None and callable(getattr(gate, "observe", None)):
            gate.observe(frame, dets)  # the gate's feedback: the tracks it reads (edge_detect.stream.gating)
        t_proc = time.perf_counter()
        self.stats.add_cpu("processors", c1)
        c_proc = time.thread_time()
        result = Result(frame, dets, self.names, self.stats.rate.rate)
        self.bus.publish(result)
        self.outputs.write(result)
        t2 = time.perf_counter()
        self.stats.add_cpu("sinks", c_proc)
        self._last_frame[frame.source_id] = frame
        frame.timings["postprocess"] = post_ms
        if self.processors:
            frame.timings["processors"] = (t_proc - t1) * 1e3
        frame.timings["sinks"] = (t2 - t_proc) * 1e3
        self.stats.frame_done(frame, t2)
        if self.outputs.stop_requested:
            self.stop("sink")

    def _deliver_emitted(self) -> None:
        """Publish and write the events sinks emitted (module doc), one Result per event."""
        for event, sid in self.outputs.take_emitted():
            frame = self._last_frame.get(sid) or Frame(np.zeros((1, 1, 3), np.uint8), sid)
            dets = Detections.empty()
            dets.metadata["events"] = [event.with_id()]
            result = Result(frame, dets, self.names, self.stats.rate.rate, emitted=True)
            self.bus.publish(result)
            self.outputs.write(result)

    # ------------------------------------------------------------------------------------------- run

    def _bar(self) -> Any:
        if not self.progress or self.keep_alive or any(s.is_live or not s.expected_frames for s in self.sources):
            return None
        from edge_detect.progress import progress

        total = sum(s.expected_frames or 0 for s in self.sources)
        return progress(total=min(total, self.max_frames) if self.max_frames else total, unit="frame", desc="run",
                        dynamic_ncols=True)  # a bar on a terminal, plain log lines when stderr is a file or pipe

    def _consume(self) -> None:
        """The sinks stage: finish batches until the end marker; runtime changes between batches."""
        bar, last_log = self._bar(), time.perf_counter()
        try:
            while True:
                self._run_ops()
                self._deliver_emitted()
                try:  # a short wait: a runtime change asked while no batch comes is applied within 10 ms
                    batch = self._post_q.get(timeout=_OPS_POLL_S)
                except queue.Empty:
                    self._check_stop(0)
                    continue
                if batch is END:
                    break
                done = self._finish(batch)
                self._finish_ended_sources()
                self._check_stop(0)
                if bar is not None:
                    bar.update(done)
                elif self.progress and time.perf_counter() - last_log >= self.stats_interval_s:
                    LOGGER.info("%s", self.stats.stats_line(self.sources, self.outputs.counters()))
                    last_log = time.perf_counter()
        finally:
            if bar is not None:
                bar.close()

    def run(self) -> RunSummary:
        """Process until a stop condition (see module doc); returns the :class:`RunSummary`.

        Raises:
            Whatever a stage raised (after closing sinks and sources). ``KeyboardInterrupt`` is re-raised
            after the sinks are finalized.
        """
        if self._ran:
            raise RuntimeError("Pipeline.run() can be called once: sources and sinks are closed afterwards")
        self._ran, self._runner = True, threading.current_thread()
        self.stats.start()
        for src in self.sources:
            src.add_listener(self._notify)
            src.start()
        interrupted: Optional[BaseException] = None
        workers = [threading.Thread(target=self._preprocess_loop, name="preprocess", daemon=True),
                   threading.Thread(target=self._infer_loop, name="infer", daemon=True)]
        try:
            self.outputs.start(self.context())
            self._running = True
            for worker in workers:
                worker.start()
            self._consume()
            if self._error is None:
                for sid in self.chains.source_ids:
                    if sid not in self._finished:
                        self._finish_chain(sid)
        except KeyboardInterrupt as exc:
            interrupted = exc
            self.stop("interrupt")
        except BaseException:
            self.stop("error")
            raise
        finally:
            self._shutdown(workers)
        if self._error is not None:
            raise self._error
        summary = self.summary()
        LOGGER.info("%s", summary.format())
        if interrupted is not None:
            raise interrupted
        return summary

    def _shutdown(self, workers: Sequence[threading.Thread]) -> None:
        self._halt.set()
        self._abort.set()
        self._running = False
        self._run_ops()  # changes asked for while stopping: applied (there is no batch left)
        for worker in workers:
            if worker.is_alive():
                worker.join(5.0)
        for src in self.sources:
            src.close()
        self._deliver_emitted()
        self.outputs.close_all(self._deliver_emitted)

    def summary(self) -> RunSummary:
        """The :class:`RunSummary` of what has run so far (sources removed during the run included)."""
        current = {s.source_id for s in self.sources}
        sources = self.sources + [s for sid, s in self._retired.items() if sid not in current]
        per_source = {s.source_id: self.source_figures(s) for s in sources}
        parts = self.chains.summaries()
        for sid, extra in parts.items():
            for key, value in extra.items():
                if sid in per_source:
                    per_source[sid].setdefault(key, value)
        decode = sum(s.stats.decode_cpu_ms for s in sources)
        return self.stats.summary(per_source, self._stopped_by, self.batch, self.outputs.errors,
                                  self.outputs.counters(), merge_summaries(list(parts.values())), decode,
                                  degraded=self.outputs.degraded(), sink_cpu_ms=self.outputs.thread_cpu_ms())
