"""The vocabulary of sources: capture options, counters, kinds, and the :class:`Reader` protocol plugins implement.

A :class:`~edge_detect.stream.sources.Source` runs a capture thread around one :class:`Reader` (made by a
factory, so the source can reopen it after a loss). The reader does the I/O; the source does the queueing,
dropping, counting, pacing and reconnection the :class:`SourceKind` and :class:`CaptureOptions` ask for.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from edge_detect.config import suggest_key
from edge_detect.errors import SourceError
from edge_detect.urls import mask_credentials, url_host

__all__ = ["CaptureOptions", "SourceStats", "SourceKind", "SOURCE_KINDS", "KINDS", "source_kind", "ReadResult",
           "READ_STATUSES", "Reader", "ReaderBase"]


@dataclass(frozen=True)
class CaptureOptions:
    """Capture settings of a source (all optional; ``None`` = the kind's default).

    Attributes:
        live: treat the source as live (keep newest frame, drop stale) or not (back-pressure, no drops);
            default: the kind's (:attr:`SourceKind.live`): cameras, streams and GStreamer pipelines are live,
            files and images are not.
        queue_size: frames buffered between capture and the pipeline for non-live sources (live: 1).
        reconnect: reopen after a loss (default: the kind's: on for cameras, streams, GStreamer; files never).
        open_timeout_s: FFmpeg open timeout for network streams.
        read_timeout_s: FFmpeg read timeout for network streams; the watchdog also abandons any read stuck
            for ``read_timeout_s + 1`` seconds and reconnects.
        backoff_initial_s: first wait before reconnecting; doubles after each failed attempt...
        backoff_max_s: ...up to this cap.
        max_reconnect_attempts: give up after this many failed attempts in a row (``None`` = never).
        fourcc: camera pixel format, e.g. ``"MJPG"`` (V4L2 USB cameras need it for high resolutions/fps).
        width, height, fps: requested camera mode (the camera may pick the closest it supports); ``fps`` also
            paces ``realtime`` image sources.
        buffersize: camera driver buffer count (``CAP_PROP_BUFFERSIZE``), 1 keeps latency low.
        rtsp_transport: ``"tcp"`` or ``"udp"``; sets ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (process-wide) if unset.
        realtime: for files and image sources: pace reading to the file's frame rate, or ``fps`` for images and
            files without one (simulates a camera).
        loop: for files and image sources: start again from the first frame at the end, forever (a demo or test
            camera); frame indices and ``pts_ms`` keep increasing across passes, so trackers and counters see one
            continuous stream. Live sources ignore it.
    """

    live: Optional[bool] = None
    queue_size: int = 8
    reconnect: Optional[bool] = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_reconnect_attempts: Optional[int] = None
    fourcc: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    buffersize: Optional[int] = None
    rtsp_transport: Optional[str] = None
    realtime: bool = False
    loop: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.queue_size >= 1, "queue_size", ">= 1", self.queue_size),
            (self.open_timeout_s > 0, "open_timeout_s", "> 0", self.open_timeout_s),
            (self.read_timeout_s > 0, "read_timeout_s", "> 0", self.read_timeout_s),
            (0 < self.backoff_initial_s <= self.backoff_max_s, "backoff_initial_s",
             f"in (0, backoff_max_s={self.backoff_max_s}]", self.backoff_initial_s),
            (self.fourcc is None or len(self.fourcc) == 4, "fourcc", "4 characters like 'MJPG'", self.fourcc),
            (self.rtsp_transport in (None, "tcp", "udp"), "rtsp_transport", "'tcp' or 'udp'",
             self.rtsp_transport),
        ]
        for ok, name, expected, actual in checks:
            if not ok:
                raise SourceError(f"capture option {name}: expected {expected}, got {actual!r}")


@dataclass
class SourceStats:
    """Counters of one source, updated by its capture thread.

    Attributes:
        read: frames decoded and handed to the queue.
        dropped: frames discarded because a newer one arrived before the consumer took it (live only).
        corrupt: frames that could not be decoded and were skipped.
        reconnects: successful reconnections after a loss.
        empty: empty (repeat-frame) packets of a file skipped: the container repeats the previous picture, so
            nothing is lost (AVI drop frames; see the package doc).
        decode_cpu_ms: CPU time of the capture thread in ``read()`` (``time.thread_time``), all frames.
    """

    read: int = 0
    dropped: int = 0
    corrupt: int = 0
    reconnects: int = 0
    empty: int = 0
    decode_cpu_ms: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ kinds


def _safe_id(text: str, fallback: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``; ``fallback`` when empty."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or fallback


def _file_id(target: Any) -> str:
    return Path(target).stem


def _images_id(target: Sequence[Path]) -> str:
    return (target[0].parent.name or "images") if len(target) > 1 else target[0].stem


def _camera_id(target: Union[int, str]) -> str:
    return f"cam{target}" if isinstance(target, int) else Path(target).name


def _url_id(target: Any) -> str:
    """The host (and port) only: never anything of the userinfo (up to the authority's last ``@``)."""
    return _safe_id(url_host(str(target)), "stream")


def _describe(target: Any) -> str:
    return mask_credentials(target)


def _describe_images(target: Sequence[Path]) -> str:
    return mask_credentials(target[0].parent if len(target) > 1 else target[0])


@dataclass(frozen=True)
class SourceKind:
    """What a kind of source is, and the defaults that follow from it (instead of checks on kind names).

    Attributes:
        name: the kind's name (``Source.kind``, the run summary's ``kind``).
        live: frames arrive in real time whether taken or not: keep the newest and count the stale ones
            dropped (:attr:`CaptureOptions.live` overrides it), never pace reading, guard reads with the
            watchdog; a read failure is a loss, not the end.
        reconnect: reopen the reader after a loss (:attr:`CaptureOptions.reconnect` overrides it).
        default_id: ``target -> id`` stamped on frames when none is given (masked of credentials).
        describe: ``target -> text`` shown as ``Source.uri`` and in logs, credentials masked.
    """

    name: str
    live: bool
    reconnect: bool
    default_id: Callable[[Any], str] = _url_id
    describe: Callable[[Any], str] = _describe


#: The built-in kinds (see the package doc's table). Plugins may pass their own :class:`SourceKind`.
SOURCE_KINDS: Dict[str, SourceKind] = {k.name: k for k in (
    SourceKind("file", live=False, reconnect=False, default_id=_file_id),
    SourceKind("images", live=False, reconnect=False, default_id=_images_id, describe=_describe_images),
    SourceKind("camera", live=True, reconnect=True, default_id=_camera_id),
    SourceKind("stream", live=True, reconnect=True, default_id=_url_id),
    SourceKind("gstreamer", live=True, reconnect=True, default_id=lambda target: "gst"),
)}
KINDS = tuple(SOURCE_KINDS)


def source_kind(kind: Union[str, SourceKind]) -> SourceKind:
    """The :class:`SourceKind` record of ``kind`` (a record passes through).

    Raises:
        SourceError: an unknown kind name.
    """
    if isinstance(kind, SourceKind):
        return kind
    try:
        return SOURCE_KINDS[str(kind)]
    except KeyError:
        raise SourceError(f"source kind: expected one of {', '.join(SOURCE_KINDS)} or a SourceKind, got "
                          f"{kind!r}{suggest_key(str(kind), SOURCE_KINDS)}") from None


# ----------------------------------------------------------------------------------------------- readers

#: ``ReadResult.status`` values: a frame, an undecodable frame (skip, count, go on), the end, a lost connection.
READ_STATUSES = ("ok", "corrupt", "end", "lost")


@dataclass
class ReadResult:
    """One read attempt of a :class:`Reader`.

    Attributes:
        status: ``"ok"`` (``image`` holds the frame), ``"corrupt"`` (this frame could not be decoded: the source
            counts it in ``stats.corrupt`` and reads on), ``"end"`` (no more frames) or ``"lost"`` (the
            connection dropped: a reconnecting source reopens its reader with backoff, any other one ends).
        image: the frame, BGR ``uint8 (H, W, 3)``, for ``"ok"``.
        pts_ms: presentation timestamp in milliseconds from the container, or ``None`` (live sources).
        skipped: frames known to be missing before this one (a timestamp gap): counted as corrupt.
        path: the image file the frame came from (image sources), else ``None``.
        empty: slots before this one that the container left empty on purpose (AVI drop frames: the previous
            picture repeats); counted in ``stats.empty``, not as corrupt.
    """

    status: str
    image: Optional[np.ndarray] = None
    pts_ms: Optional[float] = None
    skipped: int = 0
    path: Optional[Path] = None
    empty: int = 0

    def __post_init__(self) -> None:
        if self.status not in READ_STATUSES:
            raise SourceError(f"ReadResult status: expected one of {', '.join(READ_STATUSES)}, got {self.status!r}")
        if self.status == "ok" and self.image is None:
            raise SourceError("ReadResult: expected an image with status 'ok', got None")


@runtime_checkable
class Reader(Protocol):
    """What a :class:`~edge_detect.stream.sources.Source` reads from: implement it to add a kind of input.

    ``read()`` is called from the source's capture thread only, one call at a time; it may block (a network
    read) — the source's watchdog abandons a live source's read stuck longer than ``read_timeout_s + 1`` s,
    and ``Source.close()`` never waits on it: a reader must tolerate being released by the abandoned thread
    when that read returns. ``release()`` is called once, from the thread that read last.

    Optional attributes (read with a ``None`` default; :class:`ReaderBase` provides them):
        fps: nominal frame rate (``float``), or ``None`` when unknown.
        expected_frames: number of frames announced up front (files, image lists), or ``None``.
    """

    def read(self) -> ReadResult:
        """The next frame or what happened instead (see :class:`ReadResult`)."""
        ...

    def release(self) -> None:
        """Free the device, file or connection."""
        ...


class ReaderBase:
    """Convenience base of a :class:`Reader`: ``fps`` and ``expected_frames`` unknown, nothing to release."""

    fps: Optional[float] = None
    expected_frames: Optional[int] = None

    def read(self) -> ReadResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self) -> None:
        """Nothing to free by default."""
