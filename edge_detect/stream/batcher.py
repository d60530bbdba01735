"""Gathering frames across sources into batches, the per-source gate hook, and preprocessing into a ring of input
buffers (the pipeline's ``preprocess`` thread).

**Gathering.** :meth:`Batcher.gather` takes frames from the sources in round robin (several from one source when it
has them queued, in order) until it holds the batch size or ``batch_wait_s`` has passed since it took the first
one (default: one frame interval of the fastest source, 5..100 ms; 40 ms when no rate is known): a stalled or slow
source never holds the others for longer than that. A static-batch model always gets batches of its own size
(partial ones padded by the detector); a dynamic-batch model any ``1..N``. With minimum-rectangle letterboxing
(``same_shape_batches``), a batch only holds frames of one image size (a frame of another size is held for the next
batch, and no later frame of its source joins this one), so each frame is letterboxed exactly as it would be alone.

**The gate hook** (motion gating and the like). :meth:`Batcher.set_gate` installs, per source, a callable
``gate(frame) -> bool | [Region, ...]`` run on the preprocess thread for each gathered frame of that source, before
preprocessing: ``True`` = the frame needs inference; a non-empty list of :class:`~edge_detect.stream.regions.Region`
s = it needs inference on those crops only (region inference: each crop is one row of the input batch, letterboxed
like a frame; the pipeline maps their boxes back to the frame with
:func:`~edge_detect.stream.regions.regions_to_frame`); ``False`` (or ``[]``) marks it (``frame.skip_inference =
True``): it skips letterboxing and the backend, keeps its place in the batch and in its source's order, and reaches
the processors with empty detections carrying ``detections.metadata["inferred"] = False`` (a tracker can then
predict only). A gate must be cheap and must not block; an exception in it counts as ``True`` (logged once per
source). A batch whose frames were all gated out makes no backend call. The time a gate takes is the frame's
``motion`` stage (``frame.timings["motion"]``, ms; its CPU is :attr:`Batch.gate_cpu_ms`, not counted in
``preprocess``). A gate object may also have ``observe(frame, detections)``, which the pipeline calls on the
sinks-stage thread after the processors of each frame of its source (the feedback of
:class:`~edge_detect.stream.gating.SourceGate`), and ``figures()``, merged into its source's figures,
``use_model_hw(hw)``, called when it is installed with the model's input ``(h, w)`` regions are planned for
(``None`` when the detector's ``input_hw`` is unknown or it takes the device path: regions are then not asked for,
and a list returned all the same infers the whole frame), and ``inferred_whole(frame, regions)``, called when the
regions it asked for a frame did not fit the batch (below).

**Rows.** :attr:`Batch.rows` lists, per input row, the frame index and its region (``None``: the whole frame).
A batch holds at most the model's rows (a static batch's size; for a dynamic batch the larger of the gathered
size and the detector's ``batch_size``): when the crops of the gathered frames would exceed that, frames are
inferred whole instead of in regions, from the last one back, until they fit (each frame needs one row then).
A batch with regions is letterboxed into a batch the detector allocates (its row count follows the motion, so
no ring of buffers per count is kept; with minimum-rectangle letterboxing, rows of different sizes are letterboxed
together to the smallest rectangle that holds each, :func:`edge_detect.preprocess.preprocess`).

**Input buffers.** When the detector preallocates inputs (:meth:`~edge_detect.detector.DetectorLike.buffer_hw`),
frames are letterboxed straight into a ring of batches per input shape, sized so that a buffer is never refilled
while a queued or running inference still reads it: 4 (one being filled, one waiting in the hand-over, one being
inferred, one spare), plus one per asynchronous request that may be in flight.

**Device input.** When the detector's ``input_device`` is not ``"cpu"``, a frame's ``device_image`` (if its source
set one) is handed to ``preprocess`` instead of its host image.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from edge_detect.detector import DetectorLike, InferHandle
from edge_detect.errors import ConfigError
from edge_detect.stream.regions import Region
from edge_detect.stream.sources import Source
from edge_detect.types import Frame

__all__ = ["Batch", "Batcher", "Gate", "Row", "effective_batch"]

LOGGER = logging.getLogger(__name__)

Gate = Callable[[Frame], Union[bool, Sequence[Region]]]
Row = Tuple[int, Optional[Region]]  # (index into Batch.frames, the crop of that frame or None for the whole frame)


@dataclass(eq=False)
class Batch:
    """Frames travelling together from the batcher to the sinks stage.

    Attributes:
        frames: the gathered frames, in order.
        inferred: indices into ``frames`` of the frames that go to the backend (the others were gated out).
        rows: one :data:`Row` per input row: ``(frame index, region or None)``; a frame inferred whole has one
            row, one inferred in regions one per region, in order.
        data: the preprocessed input batch (``None`` when no frame needs inference).
        infos: one letterbox info per row.
        outputs: the backend outputs, once known.
        handle: an asynchronous inference in flight.
        t0: ``perf_counter`` when inference started.
        failed: the :class:`~edge_detect.errors.TransientBackendError` of its inference (frames dropped).
        gate_cpu_ms: CPU milliseconds the gates took on this batch (the ``motion`` stage).
    """

    frames: List[Frame]
    inferred: List[int]
    rows: List[Row] = field(default_factory=list)
    data: Any = None
    infos: List[Any] = field(default_factory=list)
    outputs: Any = None
    handle: Optional[InferHandle] = None
    t0: float = 0.0
    failed: Optional[BaseException] = None
    gate_cpu_ms: float = 0.0


def effective_batch(detector: DetectorLike, requested: int) -> int:
    """The batch the pipeline gathers: a static-batch model's own size, else ``requested``."""
    static = int(detector.static_batch)
    if static > 0:
        if requested not in (1, static):
            LOGGER.warning("batch: the model has a static batch of %d, got %d; using %d (export with --dynamic "
                           "for other sizes)", static, requested, static)
        return static
    return requested


class Batcher:
    """Gathers frames across sources and preprocesses them (see module doc). Sources may be added, removed,
    paused and gated while the pipeline runs (thread-safe).

    Args:
        sources: opened sources.
        detector: the :class:`~edge_detect.detector.DetectorLike` doing the preprocessing.
        batch: frames per backend call requested (a static-batch model's own size wins).
        batch_wait_s: longest wait for more frames once a batch has its first one (``None``: see module doc).
        in_flight: asynchronous requests that may read input buffers at once.
        notify: set by the sources when a frame is queued (the batcher waits on it).
    """

    def __init__(self, sources: Sequence[Source], detector: DetectorLike, batch: int, batch_wait_s: Optional[float],
                 in_flight: int, notify: threading.Event) -> None:
        if int(batch) < 1:
            raise ConfigError(f"batch: expected >= 1, got {batch}")
        if batch_wait_s is not None and batch_wait_s < 0:
            raise ConfigError(f"batch_wait_s: expected >= 0 seconds, got {batch_wait_s}")
        self.detector = detector
        self.size = effective_batch(detector, int(batch))
        self._wait_given = batch_wait_s
        self._in_flight = in_flight
        self._notify = notify
        self._lock = threading.Lock()
        self._sources: List[Source] = list(sources)
        self._held: Dict[str, Frame] = {}  # source id -> a frame held for the next batch (another size)
        self._taken: Dict[str, int] = {s.source_id: 0 for s in sources}
        self._paused: Set[str] = set()
        self._gates: Dict[str, Gate] = {}
        self._gate_failed: Set[str] = set()
        self._rings: Dict[Any, Dict[str, Any]] = {}
        self.batch_wait_s = self._default_wait()
        model_hw = detector.input_hw if detector.input_device == "cpu" else None  # crops of host images only
        self.model_hw: Optional[Tuple[int, int]] = None if model_hw is None else (int(model_hw[0]), int(model_hw[1]))
        static = int(detector.static_batch)
        self.max_rows = static if static > 0 else max(self.size, int(detector.batch_size or 0))

    def _default_wait(self) -> float:
        if self._wait_given is not None:
            return float(self._wait_given)
        rates = [s.fps for s in self._sources if s.fps]
        return min(max(1.0 / max(rates), 0.005), 0.1) if rates else 0.04

    # ------------------------------------------------------------------------------------------- sources

    @property
    def sources(self) -> List[Source]:
        with self._lock:
            return list(self._sources)

    def add_source(self, source: Source) -> None:
        """Start reading ``source`` from the next gather on (it is started and signals the batcher)."""
        source.add_listener(self._notify)
        source.start()
        with self._lock:
            self._sources.append(source)
            self._taken.setdefault(source.source_id, 0)
            self.batch_wait_s = self._default_wait()

    def remove_source(self, source_id: str) -> List[Frame]:
        """Stop reading ``source_id``; returns the frame it had held back (taken, never to be processed)."""
        with self._lock:
            self._sources = [s for s in self._sources if s.source_id != source_id]
            self._paused.discard(source_id)
            self._gates.pop(source_id, None)
            held = self._held.pop(source_id, None)
        return [held] if held is not None else []

    def set_enabled(self, source_id: str, enabled: bool) -> None:
        """Pause (``False``: its frames are not taken; a live source keeps dropping stale ones, a file waits) or
        resume a source."""
        with self._lock:
            (self._paused.discard if enabled else self._paused.add)(source_id)

    def set_gate(self, source_id: str, gate: Optional[Gate]) -> None:
        """Install (or remove, ``None``) the pre-inference gate of a source (module doc)."""
        if gate is not None and callable(getattr(gate, "use_model_hw", None)):
            gate.use_model_hw(self.model_hw)  # type: ignore[attr-defined]
        with self._lock:
            if gate is None:
                self._gates.pop(source_id, None)
            else:
                self._gates[source_id] = gate
            self._gate_failed.discard(source_id)

    def gate_of(self, source_id: str) -> Optional[Gate]:
        """The gate of a source, or ``None``."""
        with self._lock:
            return self._gates.get(source_id)

    def taken(self, source_id: str) -> int:
        """Frames taken from the source so far (read together with its ``exhausted`` under the same lock)."""
        with self._lock:
            return self._taken.get(source_id, 0)

    def ended(self, source: Source, settled: int) -> bool:
        """Whether ``source`` has ended and all it gave (``settled`` of them done) has gone through."""
        with self._lock:
            return source.exhausted and self._taken.get(source.source_id, 0) == settled \
                and source.source_id not in self._held

    def idle_and_exhausted(self) -> bool:
        """No frame held back and every source ended."""
        with self._lock:
            return not self._held and all(s.exhausted for s in self._sources)

    # ------------------------------------------------------------------------------------------- gathering

    def _take(self, src: Source) -> Optional[Frame]:
        with self._lock:  # read and count together (see ended())
            if src.source_id in self._paused:
                return None
            frame = self._held.pop(src.source_id, None)
            if frame is None:
                frame = src.read(timeout=0)
                if frame is not None:
                    self._taken[src.source_id] = self._taken.get(src.source_id, 0) + 1
            return frame

    def gather(self, start: int, limit: int, halt: threading.Event) -> List[Frame]:
        """Up to ``limit`` frames, round robin over the sources from ``start`` (module doc for the wait).

        Returns an empty list after a short wait when no source has a frame (the caller re-checks the stop
        conditions).
        """
        frames: List[Frame] = []
        held: Set[str] = set()
        deadline: Optional[float] = None
        rr = start
        while len(frames) < limit:
            self._notify.clear()
            got = self._sweep(rr, limit, frames, held)
            rr += 1
            if len(frames) >= limit or halt.is_set():
                break
            if got:
                deadline = deadline if deadline is not None else time.perf_counter() + self.batch_wait_s
                continue
            if not frames:
                self._notify.wait(0.05)
                break
            remaining = deadline - time.perf_counter() if deadline is not None else 0.0
            if remaining <= 0 or all(s.exhausted for s in self.sources):
                break
            self._notify.wait(min(remaining, 0.05))
        return frames

    def _sweep(self, rr: int, limit: int, frames: List[Frame], held: Set[str]) -> bool:
        """One round over the sources from ``rr``; whether any frame was added."""
        sources = self.sources
        got = False
        for k in range(len(sources)):
            if len(frames) >= limit:
                break
            src = sources[(rr + k) % len(sources)]
            if src.source_id in held:
                continue
            frame = self._take(src)
            if frame is None:
                continue
            if self.detector.same_shape_batches and frames and frame.image.shape != frames[0].image.shape:
                with self._lock:
                    self._held[src.source_id] = frame  # next batch; no later frame of this source joins this one
                held.add(src.source_id)
                continue
            frames.append(frame)
            got = True
        return got

    # ------------------------------------------------------------------------------------------- preprocessing

    def _gate(self, frame: Frame) -> Tuple[Union[bool, List[Region]], float]:
        """``(the gate's answer, gate CPU ms)``: ``True`` / ``False`` or a list of regions (module doc); the gate's
        wall time is the frame's ``motion`` stage."""
        with self._lock:
            gate = self._gates.get(frame.source_id)
        if gate is None:
            return True, 0.0
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            answer = gate(frame)
            if isinstance(answer, (list, tuple)):
                return (list(answer) if answer and self.model_hw is not None else bool(answer),
                        (time.thread_time() - c0) * 1e3)
            return bool(answer), (time.thread_time() - c0) * 1e3
        except Exception as exc:  # noqa: BLE001 - a broken gate must not stop inference
            if frame.source_id not in self._gate_failed:
                self._gate_failed.add(frame.source_id)
                LOGGER.error("gate of source %s failed (%s); its frames are inferred", frame.source_id, exc)
            return True, (time.thread_time() - c0) * 1e3
        finally:
            frame.timings["motion"] = (time.perf_counter() - t0) * 1e3

    def prepare(self, frames: List[Frame]) -> Batch:
        """Gate, then letterbox the frames (or regions of frames) that need inference into one input batch
        (timings in ``motion`` and ``preprocess``)."""
        inferred: List[int] = []
        asked: Dict[int, List[Region]] = {}
        gate_cpu_ms = 0.0
        for i, frame in enumerate(frames):
            answer, cpu_ms = self._gate(frame)
            frame.skip_inference = not answer
            gate_cpu_ms += cpu_ms
            if answer:
                inferred.append(i)
            if isinstance(answer, list):
                asked[i] = answer
        batch = Batch(frames, inferred, self._rows(frames, inferred, asked), gate_cpu_ms=gate_cpu_ms)
        t0 = time.perf_counter()
        if inferred:
            images = [self._row_image(frames[i], region) for i, region in batch.rows]
            out = None if asked else self._input_buffer(frames[inferred[0]].shape, len(images))
            batch.data, batch.infos = self.detector.preprocess(images, out=out)
        ms = (time.perf_counter() - t0) * 1e3
        for f in frames:
            f.timings["preprocess"] = ms
        return batch

    def _rows(self, frames: List[Frame], inferred: List[int], asked: Dict[int, List[Region]]) -> List[Row]:
        """The input rows (module doc): frames asked in regions are inferred whole, from the last back, while
        their crops would not fit :attr:`max_rows` (their gate is told: ``inferred_whole``)."""
        regions = dict(asked)
        while regions and len(inferred) + sum(len(r) - 1 for r in regions.values()) > self.max_rows:
            i = max(regions)
            gate = self.gate_of(frames[i].source_id)
            if callable(getattr(gate, "inferred_whole", None)):
                gate.inferred_whole(frames[i], regions[i])  # type: ignore[union-attr]
            regions.pop(i)
        rows: List[Row] = []
        for i in inferred:
            rows.extend([(i, r) for r in regions[i]] if i in regions else [(i, None)])
        return rows

    def _row_image(self, frame: Frame, region: Optional[Region]) -> Any:
        return self._image(frame) if region is None else region.crop(frame.image)

    def _image(self, frame: Frame) -> Any:
        if self.detector.input_device != "cpu" and frame.device_image is not None:
            return frame.device_image
        return frame.image

    def _input_buffer(self, image_hw: Tuple[int, int], count: int) -> Any:
        """The next preallocated input batch for ``count`` images of ``image_hw`` (ring per shape), or ``None``
        (module doc)."""
        hw = self.detector.buffer_hw(image_hw)
        if hw is None:
            return None
        rows = self.detector.static_batch or count
        key = (tuple(hw), rows)
        ring = self._rings.get(key)
        if ring is None:
            size = 4 + (self._in_flight if self._in_flight > 1 else 0)
            ring = self._rings[key] = {"buffers": [self.detector.input_buffer(tuple(hw), rows) for _ in range(size)],
                                       "next": 0}
        buf = ring["buffers"][ring["next"]]
        ring["next"] = (ring["next"] + 1) % len(ring["buffers"])
        return buf
