"""Outputs that do their I/O on a thread of their own: :class:`QueueWorker` and the :class:`ThreadedSink` base.

No sink's ``write`` does file or network I/O on the caller's thread (the pipeline's sink stage): it hands the item
to a bounded queue that one worker thread drains. The queue's **drop policy** is named:

=========================  ===================================================================================
``drop_oldest``            full: the oldest waiting item is dropped (counted in ``dropped``); ``put`` never
                           waits. Live things (events to a broker, previews) keep the newest.
``block_with_timeout``     full: ``put`` waits up to ``block_timeout_s`` for room, then drops the item it was
                           given (counted). Bounded back-pressure.
``never_drop``             full: ``put`` waits until there is room (back-pressure on the pipeline, as a file
                           source applies it). Files: every frame is written. A worker that failed makes
                           ``put`` raise its error instead of waiting.
=========================  ===================================================================================

Counters (:meth:`QueueWorker.queue_stats`): ``queued`` (waiting or being handled now), ``sent`` (handled),
``dropped`` (policy), ``failed`` (the handler raised or gave up, or left undelivered at close). ``close`` drains
with a deadline (``close_timeout_s``): what is still queued then is counted ``failed``. :meth:`QueueWorker.abandon`
(the second signal of a run) ends that wait at once; a ``never_drop`` sink (files) ignores it and drains.

:class:`QueueWorker` is the queue and its thread (the MQTT and webhook transports derive from it);
:class:`ThreadedSink` is a :class:`~edge_detect.types.Sink` built on it (video, JSONL, image files, the event
hub's snapshots): ``prepare(result)`` runs on the caller's thread (cheap: pick what to keep), ``handle(item)`` on
the worker (the I/O), ``finalize()`` once drained.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, ClassVar, Deque, Dict, Optional, Sequence, Union

from edge_detect.errors import ConfigError
from edge_detect.types import Result, RunContext, Sink, StreamInfo

__all__ = ["POLICIES", "QueueWorker", "ThreadedSink"]

LOGGER = logging.getLogger(__name__)

POLICIES = ("drop_oldest", "block_with_timeout", "never_drop")


class QueueWorker:
    """A bounded queue drained in order by one thread (see module doc).

    Args:
        queue_size: items waiting at most.
        policy: one of :data:`POLICIES`.
        block_timeout_s: ``block_with_timeout``: longest wait for room.
        close_timeout_s: :meth:`close_worker` waits this long for the queue to drain.

    Subclasses implement :meth:`handle` and may override :meth:`ready` (hold items back, e.g. while a broker is
    unreachable) and :meth:`in_flight` (items handed on but not yet confirmed). ``self._cond`` guards the queue
    and the counters; a subclass may use it for its own state (and ``notify_all`` it when :meth:`ready` may have
    changed).

    Raises:
        ConfigError: an unknown policy or a size below 1.
    """

    worker_name: ClassVar[str] = "worker"
    #: the handler's errors reach the caller (:meth:`raise_if_failed` on the next ``write`` / ``close``), which
    #: reports them: the worker logs them at debug level only (one report per failure)
    errors_reach_caller: ClassVar[bool] = False

    def __init__(self, queue_size: int = 1000, policy: str = "drop_oldest", block_timeout_s: float = 1.0,
                 close_timeout_s: float = 5.0) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"drop policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
        if int(queue_size) < 1 or block_timeout_s < 0 or close_timeout_s < 0:
            raise ConfigError(f"queue: expected queue_size >= 1 and timeouts >= 0, got {queue_size}, "
                              f"{block_timeout_s}, {close_timeout_s}")
        self.queue_size, self.policy = int(queue_size), policy
        self.block_timeout_s, self.close_timeout_s = float(block_timeout_s), float(close_timeout_s)
        self._cond = threading.Condition()
        self._queue: Deque[Any] = deque()
        self._busy = False
        self._closing = False
        self._abort = threading.Event()  # set at close: handlers stop retrying
        self._abandoned = False  # abandon(): waits for the queue to drain end now (a plain flag: signal-safe)
        self.sent = self.dropped = self.failed = 0
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------------------------- hooks

    def handle(self, item: Any) -> Optional[bool]:
        """Deliver one item, on the worker thread. ``True``: sent; ``False``: failed (given up); ``None``: the
        subclass counts it itself later (e.g. on the broker's acknowledgement). An exception counts as failed and
        is kept (:meth:`raise_if_failed`)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the worker may take the next item now (called with ``_cond`` held); default always."""
        return True

    def in_flight(self) -> int:
        """Items handed on by :meth:`handle` and not yet confirmed (called with ``_cond`` held); default 0."""
        return 0

    def on_drop(self) -> None:
        """Called (with ``_cond`` held) after an item was dropped by the policy; default: log now and then."""
        if self.dropped == 1 or self.dropped % 100 == 0:
            LOGGER.warning("%s: queue full (%d): dropped %d so far (%s)", self.worker_name, self.queue_size,
                           self.dropped, self.policy)

    # ------------------------------------------------------------------------------------------- queue

    def start_worker(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"{self.worker_name}-worker", daemon=True)
            self._thread.start()

    def put(self, item: Any) -> bool:
        """Queue ``item`` under the drop policy; ``False`` when it was dropped.

        Raises:
            the worker's error (``never_drop``, once the handler failed): no waiting for a dead worker.
        """
        with self._cond:
            if self._closing:
                self.failed += 1
                return False
            if len(self._queue) >= self.queue_size:
                if self.policy == "drop_oldest":
                    self._queue.popleft()
                    self.dropped += 1
                    self.on_drop()
                elif not self._wait_for_room():
                    self.dropped += 1
                    self.on_drop()
                    return False
            self._queue.append(item)
            self._cond.notify_all()
            return True

    def _wait_for_room(self) -> bool:
        """``block_with_timeout`` / ``never_drop``: wait (``_cond`` held) for room; ``False`` on timeout."""
        def room() -> bool:
            return len(self._queue) < self.queue_size or self._closing or self._error is not None

        if self.policy == "block_with_timeout":
            return self._cond.wait_for(room, self.block_timeout_s) and len(self._queue) < self.queue_size
        while not self._cond.wait_for(room, 0.5):
            continue
        if self._error is not None:
            raise self._error
        return len(self._queue) < self.queue_size

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: (self._queue and self.ready()) or (self._closing and not self._queue),
                                    0.5)
                if self._closing and not self._queue:
                    return
                if not self._queue or not self.ready():
                    continue
                item = self._queue.popleft()
                self._busy = True
                self._cond.notify_all()
            outcome: Optional[bool] = False
            try:
                outcome = self.handle(item)
            except Exception as exc:  # noqa: BLE001 - kept and re-raised on the caller's side
                LOGGER.log(logging.DEBUG if self.errors_reach_caller else logging.ERROR, "%s: %s", self.worker_name,
                           str(exc).splitlines()[0] if str(exc) else repr(exc))
                with self._cond:
                    self._error = self._error or exc
            with self._cond:
                if outcome is True:
                    self.sent += 1
                elif outcome is False:
                    self.failed += 1
                self._busy = False
                self._cond.notify_all()

    def requeue_front(self, item: Any) -> None:
        """Put ``item`` back at the head of the queue (a handler that could not hand it on yet)."""
        with self._cond:
            self._queue.appendleft(item)
            self._cond.notify_all()

    def pending(self) -> int:
        """Items waiting, being handled or in flight."""
        with self._cond:
            return len(self._queue) + int(self._busy) + self.in_flight()

    def queue_stats(self) -> Dict[str, int]:
        """``{"queued", "sent", "dropped", "failed"}`` (``queued``: waiting, being handled or in flight now)."""
        with self._cond:
            return {"queued": len(self._queue) + int(self._busy) + self.in_flight(), "sent": self.sent,
                    "dropped": self.dropped, "failed": self.failed}

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending (``True``) or ``timeout`` seconds passed, or :meth:`abandon` was called
        (``False``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if not self._queue and not self._busy and not self.in_flight() or \
                        (self._error is not None and self.policy == "never_drop"):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._abandoned:
                    return False
                self._cond.wait(min(left, 0.1))  # short slices: abandon() sets a flag and notifies nobody

    def abandon(self) -> None:
        """Stop waiting for the queue to drain: :meth:`flush` returns now, :meth:`close_worker` counts what is
        left ``failed`` and hardly waits for the worker. Sets a flag only (safe in a signal handler)."""
        self._abandoned = True

    def close_worker(self, join_s: float = 5.0) -> int:
        """Drain for up to ``close_timeout_s``, then stop: items still waiting are counted ``failed`` and
        returned; handlers see :attr:`_abort` set (stop retrying)."""
        self.flush(self.close_timeout_s)
        with self._cond:
            self._closing = True
            left = len(self._queue)
            self.failed += left
            self._queue.clear()
            self._cond.notify_all()
        self._abort.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(min(join_s, 0.5) if self._abandoned else join_s)  # a daemon stuck in a request
        return left

    def raise_if_failed(self) -> None:
        """Raise the first error of the handler, if any (once)."""
        with self._cond:
            error, self._error = self._error, None
        if error is not None:
            raise error


class ThreadedSink(QueueWorker, Sink):
    """A sink whose I/O runs on its own worker thread (see module doc).

    Subclasses set the class defaults ``policy`` / ``queue_size`` (files: ``never_drop``) and implement
    :meth:`handle` (the I/O, on the worker); they may override :meth:`open` (at start, on the caller's thread: no
    slow I/O), :meth:`prepare` (on the caller's thread: what to queue, ``None`` to skip) and :meth:`finalize`
    (after the queue drained, on the closing thread). A handler error is raised by the next ``write`` or by
    ``close`` (the pipeline then stops the run as for any failed output).
    """

    default_policy: ClassVar[str] = "never_drop"
    default_queue_size: ClassVar[int] = 16
    errors_reach_caller: ClassVar[bool] = True

    def __init__(self, queue_size: Optional[int] = None, policy: Optional[str] = None, block_timeout_s: float = 1.0,
                 close_timeout_s: float = 60.0) -> None:
        QueueWorker.__init__(self, queue_size or self.default_queue_size, policy or self.default_policy,
                             block_timeout_s, close_timeout_s)
        self.context = RunContext.of(None)
        self._closed = False

    @property
    def worker_name(self) -> str:  # type: ignore[override]
        return f"{self.name} sink"

    def start(self, context: Union[RunContext, Sequence[StreamInfo]]) -> None:
        self.context = RunContext.of(context)
        self.open(self.context)
        self.start_worker()

    def open(self, context: RunContext) -> None:
        """Set up from the run's context, on the caller's thread (default: nothing)."""

    def prepare(self, result: Result) -> Any:
        """What to queue for ``result``, on the caller's thread (default: the result; ``None`` = nothing)."""
        return result

    def write(self, result: Result) -> None:
        """Queue ``prepare(result)``; returns at once unless the policy is ``never_drop`` and the queue is full.

        Raises:
            SinkError (or the handler's error): the worker failed on an earlier item.
        """
        self.raise_if_failed()
        self.start_worker()
        item = self.prepare(result)
        if item is not None:
            self.put(item)

    def finalize(self) -> None:
        """After the queue drained: flush and release (default: nothing)."""

    def abandon(self) -> None:
        """:meth:`QueueWorker.abandon`, except for ``never_drop`` sinks: files keep every processed frame."""
        if self.policy != "never_drop":
            QueueWorker.abandon(self)

    def close(self) -> None:
        """Drain within ``close_timeout_s`` (what is left is counted failed and logged), :meth:`finalize`, then
        raise the handler's error if there was one. Idempotent."""
        if self._closed:
            return
        self._closed = True
        left = self.close_worker()
        if left:
            LOGGER.error("%s: %d item(s) not written within %.1f s at close", self.worker_name, left,
                         self.close_timeout_s)
        try:
            self.finalize()
        finally:
            self.raise_if_failed()

    def counters(self) -> Dict[str, Dict[str, int]]:
        """``{name: queue_stats()}``."""
        return {self.name: self.queue_stats()}
