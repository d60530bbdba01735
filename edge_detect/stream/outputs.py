"""The run's sinks as the pipeline calls them: in order, on the sinks stage, with one failure policy.

A sink whose ``write`` raises is dropped (closed) and the run stops (``stopped_by = "sink_error"``); the other
sinks get every frame processed until then and are finalized normally. A sink whose ``close`` raises is reported
(``"<sink>: finalizing failed: ..."``). A sink that stopped working but lets the run go on sets
:attr:`~edge_detect.types.Sink.error` (**degraded**, e.g. the recorder on a full disk): it is listed in the
summary's ``sink_errors`` and ``degraded``, and nothing stops. Sinks added while the run goes on are started with
the run's context.

Every failure is logged once, at error level, with ``extra={"in_summary": True}``: it is also in the summary's
``sink_errors``, and a caller that reports those itself (the CLI's one error line) may filter these records out.

Events emitted by sinks (:meth:`~edge_detect.types.RunContext.emit`, from any thread) wait in a bounded queue
(:data:`EMIT_QUEUE`; beyond it the oldest is dropped and counted in :attr:`Outputs.emit_dropped`) until the
pipeline's sinks stage takes them (:meth:`Outputs.take_emitted`) between two frames. At the end, sinks that emit
(:attr:`~edge_detect.types.Sink.emits`) are closed first and what they emitted meanwhile is delivered to the others
before those close.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from edge_detect.types import Event, Result, RunContext, Sink

__all__ = ["Outputs", "EMIT_QUEUE", "IN_SUMMARY"]

LOGGER = logging.getLogger(__name__)
#: ``extra`` of the log records of failures that the summary's ``sink_errors`` holds too (module doc)
IN_SUMMARY = {"in_summary": True}

#: emitted events waiting for the sinks stage at most
EMIT_QUEUE = 1024


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Outputs:
    """The sinks of a run (see module doc).

    Args:
        sinks: opened sinks, written in this order.
        stop: ``stop(reason)`` of the run, called with ``"sink_error"`` when a sink fails to write.
    """

    def __init__(self, sinks: Sequence[Sink], stop: Callable[[str], None]) -> None:
        self.sinks: List[Sink] = list(sinks)
        self._all: List[Sink] = list(sinks)  # also those dropped after a failure: their counters count
        self._stop = stop
        self.errors: List[str] = []
        self._emitted: Deque[Tuple[Event, str]] = deque()
        self._emit_lock = threading.Lock()
        self.emit_dropped = 0

    def emit(self, event: Event, source_id: str) -> None:
        """Queue an event a sink emitted (any thread; never waits; the oldest is dropped beyond
        :data:`EMIT_QUEUE`)."""
        with self._emit_lock:
            if len(self._emitted) >= EMIT_QUEUE:
                self._emitted.popleft()
                self.emit_dropped += 1
                if self.emit_dropped == 1 or self.emit_dropped % 100 == 0:
                    LOGGER.warning("emitted events: queue full (%d), dropped %d so far", EMIT_QUEUE,
                                   self.emit_dropped)
            self._emitted.append((event, source_id))

    def take_emitted(self) -> List[Tuple[Event, str]]:
        """The emitted events waiting, oldest first (the queue is emptied)."""
        with self._emit_lock:
            out = list(self._emitted)
            self._emitted.clear()
        return out

    def start(self, context: RunContext) -> None:
        for sink in self.sinks:
            sink.start(context)

    def add(self, sink: Sink, context: RunContext) -> None:
        """Start ``sink`` and write to it from the next frame on."""
        sink.start(context)
        self.sinks.append(sink)
        self._all.append(sink)

    def remove(self, sink: Sink) -> None:
        """Stop writing to ``sink`` and close it (a finalizing failure is reported)."""
        if sink in self.sinks:
            self.sinks.remove(sink)
            self._close(sink)

    def write(self, result: Result) -> None:
        for sink in list(self.sinks):
            try:
                sink.write(result)
            except Exception as exc:  # noqa: BLE001 - one failing output must not lose the others
                self._failed(sink, exc)

    @property
    def stop_requested(self) -> bool:
        return any(s.stop_requested for s in self.sinks)

    def _failed(self, sink: Sink, exc: BaseException) -> None:
        msg = _first_line(exc)
        self.errors.append(f"{sink.name}: writing failed: {msg}")
        LOGGER.error("%s sink: writing failed: %s; finishing the run and finalizing the other outputs", sink.name, msg,
                     extra=IN_SUMMARY)
        if sink in self.sinks:
            self.sinks.remove(sink)
            try:
                sink.close()
            except Exception as close_exc:  # noqa: BLE001 - already failed; the first error is the one reported
                LOGGER.debug("closing the failed %s sink: %s", sink.name, close_exc)
        self._stop("sink_error")

    def _close(self, sink: Sink) -> None:
        try:
            sink.close()
        except Exception as exc:  # noqa: BLE001 - close every sink, then report
            self.errors.append(f"{sink.name}: finalizing failed: {_first_line(exc)}")
            LOGGER.error("closing %s sink failed: %s", sink.name, _first_line(exc), extra=IN_SUMMARY)

    def abandon(self) -> None:
        """Every sink stops waiting for deliveries (:meth:`~edge_detect.types.Sink.abandon`; signal-safe)."""
        for sink in list(self._all):
            sink.abandon()

    def close_all(self, deliver: Optional[Callable[[], None]] = None) -> None:
        """Close every sink: those that emit events first, then ``deliver()`` (what they emitted reaches the
        others), then the rest."""
        emitters = [s for s in self.sinks if s.emits]
        for sink in emitters:
            self.sinks.remove(sink)
            self._close(sink)
        if deliver is not None and emitters:
            try:
                deliver()
            except Exception as exc:  # noqa: BLE001 - the other sinks must still be finalized
                self.errors.append(f"emitted events: delivery failed: {_first_line(exc)}")
                LOGGER.error("delivering the emitted events at close failed: %s", _first_line(exc),
                             extra=IN_SUMMARY)
        for sink in list(self.sinks):
            self._close(sink)

    def degraded(self) -> List[str]:
        """``"<sink>: <error>"`` for every sink that stopped working while the run went on
        (:attr:`~edge_detect.types.Sink.error`)."""
        return [f"{sink.name}: {sink.error}" for sink in list(self._all) if sink.error]

    def thread_cpu_ms(self) -> Dict[str, float]:
        """The sinks' own threads' CPU milliseconds by entry (:meth:`~edge_detect.types.Sink.thread_cpu_ms`), summed."""
        out: Dict[str, float] = {}
        for sink in list(self._all):
            for key, ms in sink.thread_cpu_ms().items():
                out[key] = out.get(key, 0.0) + float(ms)
        return out

    def counters(self) -> Dict[str, Dict[str, int]]:
        """Every sink's :meth:`~edge_detect.types.Sink.counters`, a second output of one name as ``name#2``."""
        out: Dict[str, Dict[str, int]] = {}
        for sink in list(self._all):
            for name, st in sink.counters().items():
                key, n = name, 2
                while key in out:
                    key, n = f"{name}#{n}", n + 1
                out[key] = dict(st)
        return out
