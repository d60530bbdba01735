"""Hand-overs between the pipeline's stage threads and the window of inferences in flight.

**Hand-overs** (:class:`Handover`): the bounded queue between two stage threads. Files (or a mix of sources) keep
the no-drop back-pressure: the producer waits while the next stage is busy. When every source is live, a hand-over
keeps only the newest batch: a batch still waiting when a newer one is ready is dropped (its frames counted
``dropped_in_pipeline``), so a frame's glass-to-glass time stays close to the sum of the stage times. Once the
consumer is gone (an error, an interrupt, the end of the run) items are dropped instead of waited on, and the end
marker evicts what is in its way.

**In flight** (:class:`InFlight`): the infer thread starts each batch. With a detector that has several
asynchronous requests (``max_in_flight > 1``, e.g. OpenVINO with ``hint="throughput"``) it starts it with
``infer_async`` and hands the handle on at once (at most ``max_in_flight`` handles alive); the sinks stage waits
for the outputs (:meth:`InFlight.collect`) and releases the request, so up to that many batches infer at the same
time (the ``inference`` time is then submit -> outputs ready). A :class:`~edge_detect.errors.TransientBackendError`
from starting or finishing an inference marks the batch failed: its frames are dropped (``dropped_backend``) and
the run goes on.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from edge_detect.detector import DetectorLike
from edge_detect.errors import TransientBackendError
from edge_detect.stream.batcher import Batch

__all__ = ["Handover", "InFlight", "END"]

LOGGER = logging.getLogger(__name__)

END = object()  # end marker of a hand-over


class Handover:
    """A bounded queue between two stage threads (see module doc).

    Args:
        maxsize: items waiting at most (1 when ``live``).
        live: newest-only: a waiting item is replaced by a newer one and passed to ``on_drop``.
        abort: set once the consumers are gone.
        on_drop: called as ``on_drop(item, stale)`` with every item dropped: ``stale=True`` when a newer one
            replaced it (its frames count as ``dropped_in_pipeline``), ``False`` when discarded because the run is
            aborting (only its request is released).
    """

    def __init__(self, maxsize: int, live: bool, abort: threading.Event,
                 on_drop: Callable[[Any, bool], None]) -> None:
        self._q: "queue.Queue[Any]" = queue.Queue(maxsize=1 if live else maxsize)
        self.live, self._abort, self._on_drop = live, abort, on_drop

    @property
    def maxsize(self) -> int:
        return self._q.maxsize

    def get(self, timeout: float) -> Any:
        """The next item; raises :class:`queue.Empty` after ``timeout`` seconds."""
        return self._q.get(timeout=timeout)

    def put(self, item: Any, force: bool = False) -> None:
        """Hand ``item`` on (``force``: the end marker, which must get through)."""
        if self.live and not force:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:  # one producer per queue: after this get there is room for the put below
                    stale = self._q.get_nowait()
                except queue.Empty:
                    stale = None
                if stale is not None and stale is not END:
                    self._on_drop(stale, True)
                self._q.put_nowait(item)
                return
        while True:
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._abort.is_set():
                    continue
                if not force:
                    if item is not END:
                        self._on_drop(item, False)
                    return
                try:
                    stale = self._q.get_nowait()
                except queue.Empty:
                    continue
                if stale is not END:
                    self._on_drop(stale, False)


class InFlight:
    """Starts and finishes inferences, at most ``detector.max_in_flight`` at once (see module doc)."""

    def __init__(self, detector: DetectorLike, abort: threading.Event) -> None:
        self.detector = detector
        self.size = max(1, int(detector.max_in_flight))
        self._slots = threading.Semaphore(self.size)
        self._abort = abort

    def submit(self, batch: Batch) -> bool:
        """Start (async) or run (sync) the inference of ``batch`` on the infer thread; ``False`` when the run is
        aborting while waiting for a free request. A batch with nothing to infer passes as it is."""
        if batch.data is None:
            return True
        batch.t0 = time.perf_counter()
        try:
            if self.size > 1:
                while not self._slots.acquire(timeout=0.1):  # at most max_in_flight handles alive
                    if self._abort.is_set():
                        return False
                try:
                    batch.handle = self.detector.infer_async(batch.data)
                except BaseException:
                    self._slots.release()
                    raise
                return True
            batch.outputs = self.detector.infer(batch.data)
            self._stamp(batch)
        except TransientBackendError as exc:
            self._failed(batch, exc)
        return True

    def collect(self, batch: Batch) -> None:
        """On the sinks stage: wait for an async batch's outputs (stamping ``inference``); the request is released
        by :meth:`release` once they are used."""
        if batch.handle is None:
            return
        try:
            batch.outputs = batch.handle.wait()
            self._stamp(batch)
        except TransientBackendError as exc:
            self._failed(batch, exc)
            self.release(batch)

    def release(self, batch: Batch) -> None:
        """Free the request of an async batch (after its outputs were used, or when it is dropped)."""
        if batch.handle is not None:
            handle, batch.handle = batch.handle, None
            try:
                handle.release()
            finally:
                self._slots.release()

    @staticmethod
    def _stamp(batch: Batch) -> None:
        ms = (time.perf_counter() - batch.t0) * 1e3
        for f in batch.frames:
            f.timings["inference"] = ms

    @staticmethod
    def _failed(batch: Batch, exc: BaseException) -> None:
        batch.failed = exc
        LOGGER.warning("inference failed (%s): %d frame(s) dropped, going on", exc, len(batch.frames))
