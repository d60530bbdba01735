"""Runtime changes of a running :class:`~edge_detect.stream.pipeline.Pipeline`, applied between two batches.

:meth:`RuntimeChanges.apply` hands a change to the pipeline's calling thread (the sinks stage), which runs it
after one batch and before the next, so a batch never sees half a change; when the pipeline is not running the
change runs at once. The operations (adding, removing and pausing sources, replacing a source's chain,
installing a gate, adding and removing sinks) are what :class:`~edge_detect.app.App` exposes.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, List

from edge_detect.stream.sources import Source, rename_duplicate_ids
from edge_detect.types import Sink

__all__ = ["RuntimeChanges"]


class RuntimeChanges:
    """The runtime operations of the pipeline (mixin; the pipeline provides ``batcher``, ``chains``,
    ``outputs``, ``stats``, ``sources``, ``context()`` and sets ``_running`` / ``_runner``)."""

    _ops: "queue.Queue[Any]"
    _running: bool
    _runner: Any
    _retired: Dict[str, Source]
    _finished: set
    batcher: Any
    chains: Any
    outputs: Any
    stats: Any
    sources: List[Source]

    def context(self) -> Any:
        raise NotImplementedError

    def apply(self, change: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``change()`` on the pipeline's calling thread between two batches (directly when not running) and
        return its result (or raise its exception).

        Raises:
            TimeoutError: the run did not reach a batch boundary within ``timeout`` seconds.
        """
        if not self._running or threading.current_thread() is self._runner:
            return change()
        done: Future = Future()
        self._ops.put((change, done))
        return done.result(timeout)

    def _run_ops(self) -> None:
        while True:
            try:
                change, done = self._ops.get_nowait()
            except queue.Empty:
                return
            try:
                done.set_result(change())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller of apply()
                done.set_exception(exc)

    def add_source(self, source: Source) -> str:
        """(Between batches) read ``source`` too, with a fresh chain; returns its id (made unique: the id of a removed
        source is free again once its last frames have gone through)."""
        if source.source_id in self._finished:
            self._retired.pop(source.source_id, None)
        rename_duplicate_ids([source], [s.source_id for s in self.sources] + list(self._retired))
        self.chains.build(source.source_id)
        self._finished.discard(source.source_id)
        self.batcher.add_source(source)
        return source.source_id

    def remove_source(self, source_id: str) -> None:
        """(Between batches) stop reading ``source_id`` and close it; frames already taken still go through and
        its chain is finished once they have."""
        src = next((s for s in self.sources if s.source_id == source_id), None)
        if src is None:
            raise KeyError(source_id)
        self.stats.dropped("dropped_in_pipeline", self.batcher.remove_source(source_id))
        src.close()
        self._retired[source_id] = src

    def update_chain(self, source_id: str, build: Callable[[List[Any]], List[Any]]) -> None:
        """(Between batches) replace the chain of ``source_id`` by ``build(current_chain)`` (new regions are
        declared to the counts; counts carry on)."""
        self.chains.update(source_id, build)

    def set_gate(self, source_id: str, gate: Any) -> None:
        """Install (``None``: remove) the pre-inference gate of ``source_id`` (:meth:`~edge_detect.stream.batcher.
        Batcher.set_gate`; e.g. a :class:`~edge_detect.stream.gating.SourceGate`); the run then reports the
        ``motion`` stage."""
        if gate is not None:
            self.stats.with_gates = True
        self.batcher.set_gate(source_id, gate)

    def add_sink(self, sink: Sink) -> None:
        """(Between batches) start ``sink`` with the run's context and write to it from the next frame on."""
        self.outputs.add(sink, self.context())

    def remove_sink(self, sink: Sink) -> None:
        """(Between batches) stop writing to ``sink`` and close it."""
        self.outputs.remove(sink)

