"""The run's sinks as the pipeline calls them: in order, on the sinks stage, with one failure policy.

A sink whose ``write`` raises is dropped (closed) and the run stops (``stopped_by = "sink_error"``); the other
sinks get every frame processed until then and are finalized normally. A sink whose ``close`` raises is reported
(``"<sink>: finalizing failed: ..."``). Sinks added while the run goes on are started with the run's context.

Every failure is logged once, at error level, with ``extra={"in_summary": True}``: it is also in the summary's
``sink_errors``, and a caller that reports those itself (the CLI's one error line) may filter these records out.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Sequence

from edge_detect.types import Result, RunContext, Sink

__all__ = ["Outputs", "IN_SUMMARY"]

LOGGER = logging.getLogger(__name__)
#: ``extra`` of the log records of failures that the summary's ``sink_errors`` holds too (module doc)
IN_SUMMARY = {"in_summary": True}


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

    def close_all(self) -> None:
        for sink in list(self.sinks):
            self._close(sink)

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
