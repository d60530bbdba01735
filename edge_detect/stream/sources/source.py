""":class:`Source`: a capture thread around a :class:`~edge_detect.stream.sources.base.Reader`, a bounded queue,
counters, reconnection with backoff, and a watchdog for reads that hang.

Threads of one source: the consumer (``read()`` / iteration), the current capture thread, and for live
reconnecting sources a watchdog. The capture *generation* (``_gen``) names the current capture thread: the
watchdog abandons a thread stuck in ``Reader.read()`` by bumping the generation and starting a new thread, and
``close()`` stops them. The generation, the current thread and the I/O marker (``_io``) change only under
``_lock``, so a read that returns just as the watchdog gives up on it either completes (the watchdog sees no read
in progress) or is discarded (its thread sees a newer generation): never both, never two emitting threads.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

from edge_detect.errors import SourceError
from edge_detect.stream.sources.base import CaptureOptions, ReadResult, Reader, SourceKind, SourceStats, source_kind
from edge_detect.types import Frame
from edge_detect.urls import mask_credentials

__all__ = ["Source"]

LOGGER = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


class Source:
    """A started or startable capture: iterate it for :class:`~edge_detect.types.Frame` objects, ``close()`` when done.

    Built by :func:`~edge_detect.stream.sources.open_source` (or
    :func:`~edge_detect.stream.sources.source_from_reader` for a plugin's reader). Thread-safe for one consumer.

    Args:
        kind: a :class:`SourceKind` or the name of a built-in one.
        target: what the reader opens (path, index, URL, pipeline, image list...).
        source_id: id stamped on every frame.
        opts: capture options.
        reader_factory: ``() -> Reader``; called now (errors surface to the caller) unless ``start_offline``, and
            again for each reconnection.
        start_offline: do not open now; the capture thread connects with the reconnection backoff.
        uri: the text shown for the source (default: the kind's description of ``target``); masked of credentials.

    Attributes:
        source_id: id stamped on every frame.
        uri: the source string with credentials masked.
        kind: the kind's name (``file``, ``images``, ``camera``, ``stream``, ``gstreamer`` or a plugin's).
        source_kind: the :class:`SourceKind` record.
        is_live: live sources drop stale frames; others apply back-pressure.
        reconnect: whether a lost reader is reopened.
        fps: the nominal frame rate reported by the reader, or ``None``.
        expected_frames: number of frames announced by the reader (files, images), else ``None``.
        stats: :class:`SourceStats` counters.
        offline: ``True`` while a source opened with ``offline_ok`` has not connected yet.
    """

    #: the watchdog abandons a read stuck for ``read_timeout_s`` plus this margin...
    WATCHDOG_MARGIN_S = 1.0
    #: ...checking this often
    WATCHDOG_POLL_S = 0.25
    #: ``close()`` gives a capture thread blocked in reader I/O (a read or an open) this long, then abandons it
    CLOSE_IO_GRACE_S = 0.2

    def __init__(self, kind: Union[str, SourceKind], target: Any, source_id: str, opts: CaptureOptions,
                 reader_factory: Callable[[], Reader], start_offline: bool = False,
                 uri: Optional[str] = None) -> None:
        self.source_kind = source_kind(kind)
        self.kind = self.source_kind.name
        self._target, self.source_id, self.opts = target, source_id, opts
        self.uri = mask_credentials(uri) if uri is not None else self.source_kind.describe(target)
        self.is_live = opts.live if opts.live is not None else self.source_kind.live
        self.reconnect = opts.reconnect if opts.reconnect is not None else self.source_kind.reconnect
        self._factory = reader_factory
        self._reader: Optional[Reader] = None if start_offline else reader_factory()
        self.offline = start_offline
        self.fps: Optional[float] = getattr(self._reader, "fps", None)
        self.expected_frames: Optional[int] = getattr(self._reader, "expected_frames", None)
        self.loops = bool(opts.loop) and not self.is_live  # a looping file never ends (no expected length)
        if self.loops:
            self.expected_frames = None
        self.stats = SourceStats()
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=1 if self.is_live else opts.queue_size)
        self._qlock = threading.Lock()
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._lock = threading.Lock()  # guards _gen, _thread and _io (see the module doc)
        self._gen = 0
        self._io: Optional[Tuple[str, float]] = None  # ("read" | "open", since) while the current thread waits on I/O
        self._thread: Optional[threading.Thread] = None
        self._watchdog: Optional[threading.Thread] = None
        self._listeners: List[threading.Event] = []  # set whenever a frame is queued or the source ends
        self._index = 0
        self._started_at = 0.0
        self._pts_offset = 0.0  # added to pts_ms from the second pass of a looping file on
        self._last_pts: Optional[float] = None  # pts_ms of the last frame emitted (after the offset)
        self._pass_read = 0  # frames emitted in the current pass of a looping file

    def __repr__(self) -> str:
        return f"Source(id={self.source_id!r}, kind={self.kind}, uri={self.uri!r}, live={self.is_live})"

    # ----------------------------------------------------------------------------------------- lifecycle

    def add_listener(self, event: threading.Event) -> None:
        """Set ``event`` whenever a frame is queued or the source ends (lets one consumer wait on many sources)."""
        if event not in self._listeners:
            self._listeners.append(event)

    def rename(self, source_id: str) -> None:
        """Change the id stamped on frames; only before the capture starts.

        Raises:
            SourceError: the source has already started.
        """
        if self._thread is not None:
            raise SourceError(f"{self.uri}: expected rename() before start(), got a started source")
        self.source_id = str(source_id)

    def start(self) -> "Source":
        """Start the capture thread (idempotent; iteration starts it too; a closed source stays closed)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return self
            self._started_at = time.perf_counter()
            self._thread = self._spawn(self._gen, self._reader)
            self._reader = None  # the capture thread owns it now
        if self.reconnect and self.source_kind.live:
            self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.source_id}", daemon=True)
            self._watchdog.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop capturing and release the device/file. Frames still queued are discarded.

        Never waits on the reader's I/O: a capture thread blocked in a read or an open (a stalled stream) gets
        :attr:`CLOSE_IO_GRACE_S` and is then abandoned; it releases its reader itself when that call returns.
        Any other capture thread is joined for up to ``timeout`` seconds.
        """
        with self._lock:
            self._stop.set()
            thread, reader, self._reader = self._thread, self._reader, None
        self._drain()
        if thread is not None:
            self._join(thread, timeout)
        elif reader is not None:
            reader.release()
        self._ended.set()
        self._signal()

    def _join(self, thread: threading.Thread, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while thread.is_alive():
            now, io = time.perf_counter(), self._io
            if io is not None and now - io[1] >= self.CLOSE_IO_GRACE_S:
                LOGGER.info("%s: capture thread blocked in %s for %.1f s; not waiting for it (it releases the "
                            "reader when the call returns)", self.uri, io[0], now - io[1])
                return
            if now >= deadline:
                LOGGER.warning("%s: capture thread did not stop within %.1f s", self.uri, timeout)
                return
            thread.join(min(0.02, deadline - now))

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def exhausted(self) -> bool:
        """True once the source has ended (EOF, gave up reconnecting, closed) and no frame is left queued."""
        return self._ended.is_set() and self._queue.empty()

    # ----------------------------------------------------------------------------------------- consumer

    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame, or ``None`` if none arrived within ``timeout`` seconds or the source is exhausted.

        ``timeout=None`` waits until a frame arrives or the source ends.
        """
        self.start()
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            try:
                return self._queue.get(timeout=0.05 if deadline is None
                                       else max(0.0, min(0.05, deadline - time.perf_counter())))
            except queue.Empty:
                if self.exhausted or (deadline is not None and time.perf_counter() >= deadline):
                    return None

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read(timeout=None)
            if frame is None:
                return
            yield frame

    # ----------------------------------------------------------------------------------------- producer

    def _spawn(self, gen: int, reader: Optional[Reader]) -> threading.Thread:
        t = threading.Thread(target=self._capture, args=(gen, reader), name=f"capture-{self.source_id}",
                             daemon=True)
        t.start()
        return t

    def _current(self, gen: int) -> bool:
        return not self._stop.is_set() and gen == self._gen

    def _capture(self, gen: int, reader: Optional[Reader]) -> None:
        try:
            while self._current(gen):
                if reader is None:
                    reader = self._reopen(gen)
                    if reader is None:
                        break
                got = self._timed_read(gen, reader)
                if got is None:  # abandoned by the watchdog while blocked in read()
                    break
                outcome = self._consume(*got)
                if outcome == "stop":
                    break
                if outcome == "loop":
                    reader.release()
                    reader = self._rewind(gen)
                    if reader is None:
                        break
                    continue
                if outcome == "lost":
                    reader.release()
                    reader = None
                    if self._current(gen):
                        LOGGER.warning("%s: stream lost at %s (after %d frames); reconnecting", self.uri, _now(),
                                       self.stats.read)
        except Exception:  # noqa: BLE001 - a capture thread must never die silently
            LOGGER.exception("%s: capture thread failed", self.uri)
        finally:
            if reader is not None:
                reader.release()
            with self._lock:
                current = gen == self._gen
                if current:
                    self._io = None
            if current:
                self._ended.set()
                self._signal()

    def _timed_read(self, gen: int, reader: Reader) -> Optional[Tuple[ReadResult, float]]:
        """``reader.read()`` with the I/O marker set; ``None`` when this thread was superseded or the source
        closed meanwhile."""
        with self._lock:
            if gen != self._gen:
                return None
            self._io = ("read", time.perf_counter())
        t0, c0 = time.perf_counter(), time.thread_time()
        res = reader.read()
        decode_ms = (time.perf_counter() - t0) * 1e3
        cpu_ms = (time.thread_time() - c0) * 1e3
        with self._lock:
            if gen != self._gen:
                return None
            self._io = None
        if self._stop.is_set():  # closed meanwhile: the frame is not wanted
            return None
        self.stats.decode_cpu_ms += cpu_ms
        return res, decode_ms

    def _consume(self, res: ReadResult, decode_ms: float) -> str:
        """Count and queue one read; ``"go"`` on, ``"lost"`` (reopen the reader) or ``"stop"``."""
        if res.skipped:
            self.stats.corrupt += res.skipped
            self._index += res.skipped
            LOGGER.warning("%s: %d frame(s) could not be decoded before frame %d; skipped", self.uri, res.skipped,
                           self._index)
        if res.empty:  # the container repeats the previous picture: nothing lost
            if not self.stats.empty:
                LOGGER.info("%s: the file has empty (repeat-frame) packets, first before frame %d; skipped, not "
                            "corrupt", self.uri, self._index + res.empty)
            self.stats.empty += res.empty
            self._index += res.empty
        if res.status == "ok":
            self._emit(res, decode_ms)
        elif res.status == "corrupt":
            self.stats.corrupt += 1
            self._index += 1
        elif res.status == "end" and self.loops and self._pass_read:
            return "loop"
        elif res.status == "end" or not self.reconnect:
            self._log_end()
            return "stop"
        else:
            return "lost"
        return "go"

    def _log_end(self) -> None:
        exp = self.expected_frames
        if exp and self.stats.read + self.stats.corrupt + self.stats.empty < exp:
            LOGGER.warning("%s: stream ended after %d decoded (+%d corrupt, +%d empty) of %d frames announced by "
                           "the container (truncated or undecodable tail)", self.uri, self.stats.read,
                           self.stats.corrupt, self.stats.empty, exp)
        else:
            LOGGER.info("%s: end of stream after %d frames (%d corrupt, %d empty repeat packets)", self.uri,
                        self.stats.read, self.stats.corrupt, self.stats.empty)

    def _emit(self, res: ReadResult, decode_ms: float) -> None:
        rate = self.fps or self.opts.fps  # images have no rate of their own: the fps option sets it
        if self.opts.realtime and rate and not self.source_kind.live:
            delay = self._started_at + self._index / rate - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
        pts = None if res.pts_ms is None else res.pts_ms + self._pts_offset
        frame = Frame(res.image, self.source_id, self._index, pts, time.perf_counter(), time.time(),
                      {"decode": decode_ms}, path=None if res.path is None else str(res.path))
        self._last_pts = pts
        self._pass_read += 1
        self._index += 1
        self.stats.read += 1
        self._put(frame)

    def _put(self, item: Any) -> None:
        if self.is_live:
            with self._qlock:
                if self._queue.full():
                    try:
                        self._queue.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass
                self._queue.put_nowait(item)
        else:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
        self._signal()

    def _signal(self) -> None:
        for event in self._listeners:
            event.set()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _rewind(self, gen: int) -> Optional[Reader]:
        """A looping file's next pass: a fresh reader from the factory; ``pts_ms`` goes on one frame interval after
        the last frame's. ``None`` when stopped meanwhile, or when the file cannot be opened again (the source
        ends)."""
        if self._last_pts is not None:
            self._pts_offset = self._last_pts + (1000.0 / self.fps if self.fps else 0.0)
        self._pass_read = 0
        LOGGER.debug("%s: looping (frame %d)", self.uri, self._index)
        try:
            return self._open(gen)
        except SourceError as exc:
            LOGGER.error("%s: cannot reopen to loop (%s); the source ends", self.uri, mask_credentials(str(exc)))
            return None

    # ------------------------------------------------------------------------------------- reconnection

    def _open(self, gen: int) -> Optional[Reader]:
        """One reader from the factory, with the I/O marker set; ``None`` when superseded or stopped meanwhile
        (the reader is then released here)."""
        with self._lock:
            if not self._current(gen):
                return None
            self._io = ("open", time.perf_counter())
        try:
            reader = self._factory()
        finally:
            with self._lock:
                if gen == self._gen:
                    self._io = None
        if not self._current(gen):
            reader.release()
            return None
        return reader

    def _reopen(self, gen: int) -> Optional[Reader]:
        """Reopen with exponential backoff; ``None`` when stopped, superseded or out of attempts."""
        lost_at = time.perf_counter()
        delay, attempts = self.opts.backoff_initial_s, 0
        while self._current(gen):
            if self.opts.max_reconnect_attempts is not None and attempts >= self.opts.max_reconnect_attempts:
                LOGGER.error("%s: giving up at %s after %d failed reconnection attempts", self.uri, _now(),
                             attempts)
                return None
            if self._stop.wait(delay):
                return None
            attempts += 1
            try:
                reader = self._open(gen)
            except SourceError as exc:
                LOGGER.info("%s: reconnection attempt %d failed (%s); next in %.1f s", self.uri, attempts,
                            mask_credentials(str(exc)), min(delay * 2, self.opts.backoff_max_s))
                delay = min(delay * 2, self.opts.backoff_max_s)
                continue
            if reader is None:
                return None
            self._log_back(reader, lost_at, attempts)
            return reader
        return None

    def _log_back(self, reader: Reader, lost_at: float, attempts: int) -> None:
        if self.offline:  # first connection of a source that started offline: not a reconnection
            self.offline = False
            self.fps = getattr(reader, "fps", None)
            LOGGER.warning("%s: online at %s after %.1f s (attempt %d)", self.uri, _now(),
                           time.perf_counter() - lost_at, attempts)
            return
        self.stats.reconnects += 1
        LOGGER.warning("%s: stream back at %s after %.1f s down (attempt %d, reconnect #%d)", self.uri, _now(),
                       time.perf_counter() - lost_at, attempts, self.stats.reconnects)

    def _watch(self) -> None:
        """Abandon a read stuck longer than ``read_timeout_s + WATCHDOG_MARGIN_S``: a new capture thread (next
        generation) reconnects; the stuck one exits, releasing its reader, when its read returns."""
        limit = self.opts.read_timeout_s + self.WATCHDOG_MARGIN_S
        while not self._stop.wait(self.WATCHDOG_POLL_S) and not self._ended.is_set():
            with self._lock:
                io = self._io
                stuck = time.perf_counter() - io[1] if io is not None and io[0] == "read" else 0.0
                if stuck <= limit or self._stop.is_set():
                    continue
                self._gen += 1
                self._io = None
                self._thread = self._spawn(self._gen, None)
            LOGGER.warning("%s: no frame for %.1f s at %s (read stuck); abandoning it and reconnecting", self.uri,
                           stuck, _now())
