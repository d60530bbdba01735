"""Video sources: files, cameras, network streams, GStreamer pipelines and image folders behind one iterator.

:func:`open_source` turns a path or URI into a :class:`Source`: an iterator of :class:`~edge_detect.types.Frame`
(BGR ``uint8 (H, W, 3)``) fed by a capture thread through a bounded queue.

===================  ===========================================  ==========  ==============================
kind                 examples                                     live        on read failure
===================  ===========================================  ==========  ==============================
``file``             ``video.mp4``, ``file:///data/a.avi``        no          end of stream
``images``           ``frames/``, ``"frames/*.jpg"``, ``a.png``   no          unreadable image: skip, count
``camera``           ``0``, ``/dev/video2`` (V4L2 on Linux)       yes         reconnect (unplug/replug)
``stream``           ``rtsp://``, ``rtmp://``, ``http(s)://``     yes         reconnect with backoff
``gstreamer``        ``"... ! appsink"`` or ``gst:...``           yes         reconnect with backoff
===================  ===========================================  ==========  ==============================

* **Live** sources keep only the newest frame: when the consumer is slower than the source, stale frames are
  dropped and counted (``stats.dropped``), so latency stays bounded. **Files** never drop: the capture
  thread blocks on a full queue (back-pressure), so every decodable frame is delivered.
* Network streams use FFmpeg's open/read timeouts (``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``..._READ_TIMEOUT_MSEC``)
  plus a watchdog that abandons a read stuck longer than the timeout, then reconnect with exponential
  backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``). Loss and return are logged with
  timestamps; ``stats.reconnects`` counts successful reconnections.
* Frames that fail to decode are skipped and counted in ``stats.corrupt`` (for files: gaps in the
  presentation timestamps; for image folders: unreadable images); never fatal. AVI "drop frame" chunks (empty
  packets: the previous picture repeats) also leave timestamp gaps; they are told apart with a demux-only PyAV
  pass (a slot with no packet at all is empty, one whose packet did not decode is corrupt) and counted in
  ``stats.empty``, not as corruption. The frames keep their container timestamps (``pts_ms``), so a saved video
  shows each picture for as long as the original did.
* Credentials in URLs are masked (:func:`mask_credentials`) in every log line, ``repr`` and ``Source.uri``.
"""
from __future__ import annotations

import dataclasses
import glob as _glob
import importlib
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_detect.config import from_mapping, override
from edge_detect.errors import ConfigError, SourceError
from edge_detect.paths import IMAGE_SUFFIXES
from edge_detect.types import Frame
from edge_detect.urls import mask_credentials

__all__ = [
    "CaptureOptions",
    "Source",
    "SourceStats",
    "open_source",
    "open_images",
    "register_source",
    "source_schemes",
    "parse_source",
    "mask_credentials",
    "gstreamer_available",
    "jetson_csi_pipeline",
    "jetson_rtsp_pipeline",
    "IMAGE_SUFFIXES",
    "STREAM_SCHEMES",
]

LOGGER = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")

# URL scheme -> factory(uri, source_id=None, offline_ok=False, **options) -> Source, for sources that are not
# files, cameras, OpenCV/FFmpeg streams or GStreamer pipelines (which open_source handles itself).
_SOURCE_FACTORIES: Dict[str, Callable[..., "Source"]] = {}


def register_source(scheme: str) -> Callable[[Callable[..., "Source"]], Callable[..., "Source"]]:
    """Decorator: open URIs ``<scheme>://...`` with the decorated factory.

    The factory is called as ``factory(uri, source_id=..., offline_ok=..., **options)`` and returns a
    :class:`Source`. The built-in stream schemes (:data:`STREAM_SCHEMES`) and ``file`` cannot be taken over.

    Raises:
        ConfigError: ``scheme`` is not a valid URL scheme, or is built in.
    """
    key = str(scheme).lower()
    if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", key):
        raise ConfigError(f"register_source: expected a URL scheme such as 'myproto', got {scheme!r}")
    if key in STREAM_SCHEMES or key == "file":
        raise ConfigError(f"register_source: '{key}' is a built-in source scheme")

    def deco(factory: Callable[..., "Source"]) -> Callable[..., "Source"]:
        _SOURCE_FACTORIES[key] = factory
        return factory

    return deco


def source_schemes() -> List[str]:
    """Every URL scheme :func:`open_source` accepts: the built-in stream schemes, ``file`` and registered ones."""
    return [*STREAM_SCHEMES, "file", *sorted(_SOURCE_FACTORIES)]
KINDS = ("file", "images", "camera", "stream", "gstreamer")

def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CaptureOptions:
    """Capture settings of a source (all optional; ``None`` = the kind's default).

    Attributes:
        live: treat the source as live (keep newest frame, drop stale) or not (back-pressure, no drops);
            default: cameras, streams and GStreamer pipelines are live, files and images are not.
        queue_size: frames buffered between capture and the pipeline for non-live sources (live: 1).
        reconnect: reopen after a loss (default: on for cameras, streams, GStreamer; files never).
        open_timeout_s: FFmpeg open timeout for network streams.
        read_timeout_s: FFmpeg read timeout for network streams; the watchdog also abandons any read stuck
            for ``read_timeout_s + 1`` seconds and reconnects.
        backoff_initial_s: first wait before reconnecting; doubles after each failed attempt...
        backoff_max_s: ...up to this cap.
        max_reconnect_attempts: give up after this many failed attempts in a row (``None`` = never).
        fourcc: camera pixel format, e.g. ``"MJPG"`` (V4L2 USB cameras need it for high resolutions/fps).
        width, height, fps: requested camera mode (the camera may pick the closest it supports).
        buffersize: camera driver buffer count (``CAP_PROP_BUFFERSIZE``), 1 keeps latency low.
        rtsp_transport: ``"tcp"`` or ``"udp"``; sets ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (process-wide) if unset.
        realtime: for files: pace reading to the file's frame rate (simulates a camera).
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
            nothing is lost (AVI drop frames; see the module doc).
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


# --------------------------------------------------------------------------------------------- parsing


def gstreamer_available() -> bool:
    """Whether this OpenCV build was compiled with GStreamer (``cv2.getBuildInformation()``)."""
    return re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None


def parse_source(uri: Union[str, int, os.PathLike]) -> Tuple[str, Any]:
    """Classify a source string into ``(kind, target)``; see the module table for the kinds.

    ``target`` is: a path (file), a list of image paths (images), an int index or ``/dev/videoN`` path
    (camera), the URL (stream) or the pipeline string (gstreamer).

    Raises:
        SourceError: nothing matches (missing file, empty folder, unknown URL scheme).
    """
    if isinstance(uri, int):
        return "camera", uri
    s = str(uri).strip()
    if not s:
        raise SourceError("source: expected a path, camera index, URL or GStreamer pipeline, got ''")
    if s.startswith("gst:"):
        return "gstreamer", s[4:].strip()
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://", s)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            s = s[len("file://"):]
        elif scheme in STREAM_SCHEMES:
            return "stream", s
        elif "!" not in s:
            raise SourceError(f"source {mask_credentials(s)}: unknown URL scheme '{scheme}'; expected one of "
                              f"{', '.join(source_schemes())}")
    if "!" in s and not Path(s).exists():
        return "gstreamer", s
    if s.isdigit():
        return "camera", int(s)
    if re.fullmatch(r"/dev/video\d+", s):
        return "camera", s
    p = Path(s).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise SourceError(f"source folder {p}: expected images ({', '.join(IMAGE_SUFFIXES)}), found none")
        return "images", files
    if any(c in s for c in "*?["):
        files = sorted(Path(f) for f in _glob.glob(str(p), recursive=True)
                       if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"source glob {s!r}: expected matching images, found none")
        return "images", files
    if p.is_file():
        return ("images", [p]) if p.suffix.lower() in IMAGE_SUFFIXES else ("file", p)
    raise SourceError(f"source not found: {mask_credentials(s)} (expected a video file, image folder or glob, "
                      "camera index, /dev/videoN, rtsp/rtmp/http(s) URL or GStreamer pipeline)")


def jetson_csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30,
                        flip: int = 0, out_width: Optional[int] = None, out_height: Optional[int] = None) -> str:
    """GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc``) ending in a BGR ``appsink``.

    Args:
        sensor_id: CSI port of the camera.
        width, height, fps: sensor mode requested from Argus.
        flip: ``nvvidconv flip-method`` (0 none, 2 rotate 180...).
        out_width, out_height: size delivered to the app (default: the sensor mode).
    """
    ow, oh = out_width or width, out_height or height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, format=NV12, framerate={fps}/1 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, width={ow}, height={oh}, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def jetson_rtsp_pipeline(url: str, codec: str = "h264", latency_ms: int = 200,
                         width: Optional[int] = None, height: Optional[int] = None) -> str:
    """GStreamer pipeline decoding an RTSP H.264/H.265 stream with the Jetson hardware decoder (``nvv4l2decoder``).

    Args:
        url: ``rtsp://`` URL (credentials allowed; they are masked in logs).
        codec: ``"h264"`` or ``"h265"``.
        latency_ms: ``rtspsrc`` jitter-buffer latency.
        width, height: optional resize in ``nvvidconv``.

    Raises:
        SourceError: unknown codec.
    """
    if codec not in ("h264", "h265"):
        raise SourceError(f"jetson_rtsp_pipeline codec: expected 'h264' or 'h265', got {codec!r}")
    size = f", width={width}, height={height}" if width and height else ""
    return (
        f"rtspsrc location={url} latency={latency_ms} ! rtp{codec}depay ! {codec}parse ! nvv4l2decoder ! "
        f"nvvidconv ! video/x-raw, format=BGRx{size} ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


def _default_id(kind: str, target: Any) -> str:
    if kind == "file":
        return Path(target).stem
    if kind == "images":
        return target[0].parent.name or "images" if len(target) > 1 else target[0].stem
    if kind == "camera":
        return f"cam{target}" if isinstance(target, int) else Path(target).name
    if kind == "stream":  # the host only: never anything of the userinfo (up to the authority's last "@")
        authority = re.split(r"[/?#\s]", re.sub(r"^[^:]+://", "", str(target)), maxsplit=1)[0]
        host = authority.rsplit("@", 1)[-1]
        return re.sub(r"[^A-Za-z0-9_.-]", "_", host) or "stream"
    return "gst"


# --------------------------------------------------------------------------------------------- readers


@dataclass
class _Read:
    """One read attempt: ``status`` is ``"ok"``, ``"corrupt"`` (skip, continue) or ``"end"``/``"lost"``."""

    status: str
    image: Optional[np.ndarray] = None
    pts_ms: Optional[float] = None
    skipped: int = 0  # frames known to be missing before this one (timestamp gap): could not be decoded
    path: Optional[Path] = None  # the image file (image sources)
    empty: int = 0  # slots before this one that the container left empty (AVI drop frames: a repeat)


class _CvReader:
    """A ``cv2.VideoCapture`` opened from ``target`` with ``api`` and open ``params``."""

    def __init__(self, kind: str, target: Any, opts: CaptureOptions, name: str) -> None:
        self.kind, self.name = kind, name
        api, params = self._api_params(kind, opts)
        self.cap = cv2.VideoCapture(target if not isinstance(target, Path) else str(target), api, params)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open {kind} source {name}"
                              + (" (is the server/camera up? credentials right?)" if kind != "file" else ""))
        if kind == "camera":
            self._configure_camera(opts)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps: Optional[float] = float(fps) if fps and 0 < fps < 1000 else None
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT) if kind == "file" else 0
        self.expected_frames: Optional[int] = int(count) if count and count > 0 else None
        self._last_pts: Optional[float] = None
        self._target = target
        self._data_slots: Optional[Any] = None  # frame slots that hold a packet (AVI only, built on first gap)

    @staticmethod
    def _api_params(kind: str, opts: CaptureOptions) -> Tuple[int, List[int]]:
        if kind == "gstreamer":
            return cv2.CAP_GSTREAMER, []
        if kind == "camera":
            return (cv2.CAP_V4L2 if os.name == "posix" and os.uname().sysname == "Linux" else cv2.CAP_ANY), []
        if kind == "stream":
            if opts.rtsp_transport and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{opts.rtsp_transport}"
            return cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(opts.open_timeout_s * 1000),
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(opts.read_timeout_s * 1000)]
        return cv2.CAP_FFMPEG, []

    def _configure_camera(self, opts: CaptureOptions) -> None:
        if opts.fourcc:
            self.cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*opts.fourcc))
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, opts.width), (cv2.CAP_PROP_FRAME_HEIGHT, opts.height),
                            (cv2.CAP_PROP_FPS, opts.fps), (cv2.CAP_PROP_BUFFERSIZE, opts.buffersize)):
            if value is not None:
                self.cap.set(prop, float(value))
        LOGGER.info("camera %s: %dx%d @ %.1f fps", self.name, self.cap.get(cv2.CAP_PROP_FRAME_WIDTH),
                    self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT), self.cap.get(cv2.CAP_PROP_FPS))

    def read(self) -> _Read:
        ok, img = self.cap.read()
        if not ok or img is None or img.size == 0:
            return _Read("end" if self.kind == "file" else "lost")
        if self.kind != "file":
            return _Read("ok", img)
        pts = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        skipped = empty = 0
        if self.fps and self._last_pts is not None:
            step = 1000.0 / self.fps
            if pts > self._last_pts:  # a gap of more than one frame interval = frames lost in decoding...
                skipped = max(0, int(round((pts - self._last_pts) / step)) - 1)
                if skipped:  # ...or slots the container left empty on purpose
                    first = int(round(self._last_pts / step)) + 1
                    data = self._slots_with_data()
                    if data is not None:
                        empty = sum(1 for s in range(first, first + skipped) if s not in data)
                        skipped -= empty
            else:  # FFmpeg reports 0 for frames flushed from the decoder at the end: extrapolate
                pts = self._last_pts + step
        self._last_pts = pts
        return _Read("ok", img, pts, skipped, empty=empty)

    def _slots_with_data(self) -> Optional[Any]:
        """Frame slots (``round(pts * fps)``) that carry a packet, for AVI files; ``None`` elsewhere or without
        PyAV (then every gap counts as corrupt). Demux only, no decoding; computed once."""
        if self._data_slots is None:
            self._data_slots = _avi_slots_with_data(Path(self._target), self.fps or 0.0)
        return self._data_slots or None

    def release(self) -> None:
        self.cap.release()


def _avi_slots_with_data(path: Path, fps: float) -> Any:
    """Set of frame slots holding a non-empty video packet in an AVI file, or ``frozenset()`` when it is not an
    AVI, PyAV is missing or the file cannot be demuxed (FFmpeg's AVI demuxer returns no packet for an empty
    "drop frame" chunk, so an empty slot is one without a packet)."""
    if path.suffix.lower() != ".avi" or fps <= 0:
        return frozenset()
    try:
        av = importlib.import_module("av")
    except ImportError:
        LOGGER.info("%s: PyAV not installed ('edge-detect[video]'): timestamp gaps count as corrupt frames, "
                    "also where the AVI repeats a frame with an empty packet", path)
        return frozenset()
    slots = set()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    slots.add(int(round(float(packet.pts * stream.time_base) * fps)))
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        LOGGER.info("%s: cannot demux with PyAV (%s): timestamp gaps count as corrupt frames", path, exc)
        return frozenset()
    return frozenset(slots)


class _ImageReader:
    """Reads a list of image files in order; unreadable files are reported as corrupt."""

    fps: Optional[float] = None

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.expected_frames: Optional[int] = len(self.paths)
        self._i = 0

    def read(self) -> _Read:
        if self._i >= len(self.paths):
            return _Read("end")
        path = self.paths[self._i]
        self._i += 1
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            LOGGER.warning("skipping %s: not a decodable image", path)
            return _Read("corrupt")
        return _Read("ok", img, path=path)

    def release(self) -> None:
        pass


# --------------------------------------------------------------------------------------------- source


_END = object()


class Source:
    """A started or startable capture: iterate it for :class:`Frame` objects, ``close()`` when done.

    Built by :func:`open_source`; not meant to be constructed directly. Thread-safe for one consumer.

    Attributes:
        source_id: id stamped on every frame.
        uri: the source string with credentials masked.
        kind: one of ``file``, ``images``, ``camera``, ``stream``, ``gstreamer``.
        is_live: live sources drop stale frames; others apply back-pressure.
        fps: the nominal frame rate reported by the container/camera, or ``None``.
        expected_frames: number of frames announced by the container (files, images), else ``None``.
        stats: :class:`SourceStats` counters.
        offline: ``True`` while a source opened with ``offline_ok`` has not connected yet.
    """

    def __init__(self, kind: str, target: Any, source_id: str, opts: CaptureOptions,
                 reader_factory: Callable[[], Any], start_offline: bool = False) -> None:
        self.kind, self._target, self.source_id, self.opts = kind, target, source_id, opts
        self.uri = mask_credentials(target if kind != "images" else (target[0].parent if len(target) > 1
                                                                     else target[0]))
        self.is_live = opts.live if opts.live is not None else kind in ("camera", "stream", "gstreamer")
        self.reconnect = opts.reconnect if opts.reconnect is not None else kind in ("camera", "stream",
                                                                                    "gstreamer")
        self._factory = reader_factory
        # first open: errors surface to the caller, unless the source may start offline (then the capture
        # thread connects with the reconnection backoff)
        self._reader = None if start_offline else reader_factory()
        self.offline = start_offline
        self.fps: Optional[float] = getattr(self._reader, "fps", None)
        self.expected_frames: Optional[int] = getattr(self._reader, "expected_frames", None)
        self.stats = SourceStats()
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=1 if self.is_live else opts.queue_size)
        self._qlock = threading.Lock()
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._gen = 0
        self._beat = time.perf_counter()
        self._in_read = False
        self._thread: Optional[threading.Thread] = None
        self._watchdog: Optional[threading.Thread] = None
        self._listeners: List[threading.Event] = []  # set whenever a frame is queued or the source ends
        self._index = 0
        self._started_at = 0.0

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
        """Start the capture thread (idempotent; iteration starts it too)."""
        if self._thread is None:
            self._started_at = time.perf_counter()
            self._thread = self._spawn(self._gen, self._reader)
            if self.reconnect and self.kind in ("stream", "camera", "gstreamer"):
                self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.source_id}",
                                                  daemon=True)
                self._watchdog.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop capturing and release the device/file. Frames still queued are discarded."""
        self._stop.set()
        self._drain()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._reader is not None:
            self._reader.release()
        self._ended.set()

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
                item = self._queue.get(timeout=0.05 if deadline is None
                                       else max(0.0, min(0.05, deadline - time.perf_counter())))
            except queue.Empty:
                if self.exhausted or (deadline is not None and time.perf_counter() >= deadline):
                    return None
                continue
            return item

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read(timeout=None)
            if frame is None:
                return
            yield frame

    # ----------------------------------------------------------------------------------------- producer

    def _spawn(self, gen: int, reader: Any) -> threading.Thread:
        t = threading.Thread(target=self._capture, args=(gen, reader), name=f"capture-{self.source_id}",
                             daemon=True)
        t.start()
        return t

    def _capture(self, gen: int, reader: Any) -> None:
        try:
            while not self._stop.is_set() and gen == self._gen:
                if reader is None:
                    reader = self._reopen(gen)
                    if reader is None:
                        break
                self._beat, self._in_read = time.perf_counter(), True
                t0, c0 = time.perf_counter(), time.thread_time()
                res = reader.read()
                decode_ms = (time.perf_counter() - t0) * 1e3
                self.stats.decode_cpu_ms += (time.thread_time() - c0) * 1e3
                self._in_read = False
                if gen != self._gen:  # abandoned by the watchdog while blocked in read()
                    break
                if res.skipped:
                    self.stats.corrupt += res.skipped
                    self._index += res.skipped
                    LOGGER.warning("%s: %d frame(s) could not be decoded before frame %d; skipped",
                                   self.uri, res.skipped, self._index)
                if res.empty:  # the container repeats the previous picture: nothing lost
                    if not self.stats.empty:
                        LOGGER.info("%s: the file has empty (repeat-frame) packets, first before frame %d; "
                                    "skipped, not corrupt", self.uri, self._index + res.empty)
                    self.stats.empty += res.empty
                    self._index += res.empty
                if res.status == "ok":
                    self._emit(res, decode_ms)
                elif res.status == "corrupt":
                    self.stats.corrupt += 1
                    self._index += 1
                elif res.status == "end" or not self.reconnect:
                    self._log_end()
                    break
                else:  # lost
                    reader.release()
                    reader = None
                    LOGGER.warning("%s: stream lost at %s (after %d frames); reconnecting", self.uri, _now(),
                                   self.stats.read)
        except Exception:  # noqa: BLE001 - a capture thread must never die silently
            LOGGER.exception("%s: capture thread failed", self.uri)
        finally:
            if reader is not None:
                reader.release()
            if gen == self._gen:
                self._ended.set()
                self._signal()

    def _log_end(self) -> None:
        exp = self.expected_frames
        if self.kind == "file" and exp and self.stats.read + self.stats.corrupt + self.stats.empty < exp:
            LOGGER.warning("%s: stream ended after %d decoded (+%d corrupt, +%d empty) of %d frames announced by "
                           "the container (truncated or undecodable tail)", self.uri, self.stats.read,
                           self.stats.corrupt, self.stats.empty, exp)
        else:
            LOGGER.info("%s: end of stream after %d frames (%d corrupt, %d empty repeat packets)", self.uri,
                        self.stats.read, self.stats.corrupt, self.stats.empty)

    def _emit(self, res: _Read, decode_ms: float) -> None:
        if self.opts.realtime and self.fps and not self.is_live_stream:
            due = self._started_at + self._index / self.fps
            delay = due - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
        frame = Frame(res.image, self.source_id, self._index, res.pts_ms, time.perf_counter(), time.time(),
                      {"decode": decode_ms}, path=None if res.path is None else str(res.path))
        self._index += 1
        self.stats.read += 1
        self._put(frame)

    @property
    def is_live_stream(self) -> bool:
        return self.kind in ("camera", "stream", "gstreamer")

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

    def _reopen(self, gen: int) -> Optional[Any]:
        """Reopen with exponential backoff; ``None`` when stopped, superseded or out of attempts."""
        lost_at = time.perf_counter()
        delay, attempts = self.opts.backoff_initial_s, 0
        while not self._stop.is_set() and gen == self._gen:
            if self.opts.max_reconnect_attempts is not None and attempts >= self.opts.max_reconnect_attempts:
                LOGGER.error("%s: giving up at %s after %d failed reconnection attempts", self.uri, _now(),
                             attempts)
                return None
            if self._stop.wait(delay):
                return None
            attempts += 1
            try:
                reader = self._factory()
            except SourceError as exc:
                LOGGER.info("%s: reconnection attempt %d failed (%s); next in %.1f s", self.uri, attempts,
                            mask_credentials(str(exc)), min(delay * 2, self.opts.backoff_max_s))
                delay = min(delay * 2, self.opts.backoff_max_s)
                continue
            if self.offline:  # first connection of a source that started offline: not a reconnection
                self.offline = False
                self.fps = getattr(reader, "fps", None)
                LOGGER.warning("%s: online at %s after %.1f s (attempt %d)", self.uri, _now(),
                               time.perf_counter() - lost_at, attempts)
                return reader
            self.stats.reconnects += 1
            LOGGER.warning("%s: stream back at %s after %.1f s down (attempt %d, reconnect #%d)", self.uri,
                           _now(), time.perf_counter() - lost_at, attempts, self.stats.reconnects)
            return reader
        return None

    def _watch(self) -> None:
        limit = self.opts.read_timeout_s + 1.0
        while not self._stop.wait(0.25) and not self._ended.is_set():
            if self._in_read and time.perf_counter() - self._beat > limit:
                LOGGER.warning("%s: no frame for %.1f s at %s (read stuck); abandoning it and reconnecting",
                               self.uri, time.perf_counter() - self._beat, _now())
                self._gen += 1
                self._in_read = False
                self._beat = time.perf_counter()
                self._thread = self._spawn(self._gen, None)


def open_source(uri: Union[str, int, os.PathLike], source_id: Optional[str] = None, offline_ok: bool = False,
                **options: Any) -> Source:
    """Open a video source; see the module doc for kinds, live behaviour and reconnection.

    Args:
        uri: path, glob, camera index, ``/dev/videoN``, URL or GStreamer pipeline.
        source_id: id stamped on every frame (default: file stem, ``cam0``, stream host, ``gst``...).
        offline_ok: a live, reconnecting source (camera, stream, GStreamer) that cannot be opened now is
            returned offline (``Source.offline``) instead of raising; its capture thread keeps trying to connect
            with the reconnection backoff (used when one of several sources is down at start).
        **options: :class:`CaptureOptions` fields (unknown names are rejected with a suggestion), or
            ``capture=CaptureOptions(...)`` plus individual fields overriding it.

    Returns:
        A :class:`Source` (not yet started: iteration or ``start()`` starts the capture thread).

    Raises:
        SourceError: not found, cannot be opened, GStreamer missing, or an invalid option.
        ConfigError: an unknown option name.
    """
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://", str(uri).strip()) if not isinstance(uri, int) else None
    if scheme and scheme.group(1).lower() in _SOURCE_FACTORIES:
        return _SOURCE_FACTORIES[scheme.group(1).lower()](uri, source_id=source_id, offline_ok=offline_ok, **options)
    base = options.pop("capture", None)
    if base is not None:
        opts = override(base, options)
    else:
        opts = from_mapping(options, CaptureOptions, where="capture options")
    kind, target = parse_source(uri)
    if kind == "gstreamer" and not gstreamer_available():
        raise SourceError("GStreamer pipeline given but this OpenCV build has no GStreamer "
                          "(cv2.getBuildInformation(): 'GStreamer: NO'); on Jetson use the system OpenCV "
                          "built with GStreamer")
    sid = mask_credentials(source_id) if source_id else _default_id(kind, target)  # ids never carry secrets
    name = mask_credentials(target if kind != "images" else target[0].parent)
    if kind == "images":
        factory: Callable[[], Any] = lambda: _ImageReader(target)  # noqa: E731
    else:
        factory = lambda: _CvReader(kind, target, opts, name)  # noqa: E731
    try:
        src = Source(kind, target, sid, opts, factory)
    except SourceError as exc:
        reconnects = opts.reconnect if opts.reconnect is not None else kind in ("camera", "stream", "gstreamer")
        if not (offline_ok and reconnects):
            raise
        LOGGER.warning("%s source %s is offline (%s); starting without it and retrying in the background", kind,
                       name, mask_credentials(str(exc)))
        return Source(kind, target, sid, opts, factory, start_offline=True)
    LOGGER.info("opened %s source %r as %r (live=%s, fps=%s, frames=%s)", kind, src.uri, sid, src.is_live,
                src.fps, src.expected_frames)
    return src


def open_images(paths: Sequence[Union[str, os.PathLike]], source_id: Optional[str] = None,
                **options: Any) -> Source:
    """A source over an explicit list of image files, read in the given order (``edge-detect detect``).

    Each frame's ``index`` is the file's position in ``paths`` and ``path`` the file; an undecodable file is
    skipped with a warning and counted in ``stats.corrupt``. Never live, never drops a frame.

    Args:
        paths: image files (any suffix OpenCV reads).
        source_id: id stamped on every frame (default: the first file's folder name).
        **options: :class:`CaptureOptions` fields (``queue_size``...).

    Raises:
        SourceError: ``paths`` is empty.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise SourceError("images: expected at least one image file, got none")
    opts = from_mapping(options, CaptureOptions, where="capture options")
    sid = source_id or _default_id("images", files)
    src = Source("images", files, sid, opts, lambda: _ImageReader(files))
    LOGGER.info("opened images source %r as %r (%d files)", src.uri, sid, len(files))
    return src
