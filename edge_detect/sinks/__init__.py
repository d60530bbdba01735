"""Outputs of a run: display window, annotated video file, JSON Lines, MJPEG-over-HTTP preview.

:func:`open_sink` picks a sink from a kind or a path::

    open_sink("display")                 # window per source; q / Esc stops the run; disabled when headless
    open_sink("out.mp4")                 # annotated H.264 yuv420p mp4 with +faststart (plays in browsers)
    open_sink("dets.jsonl")              # one JSON line per processed frame, flushed as it goes
    open_sink("mjpeg://127.0.0.1:8080")  # multipart/x-mixed-replace preview; also "preview:8080"

Every sink implements :class:`Sink`: ``start(streams)`` once before the first frame (the sources' ids and
frame rates), ``write(result)`` per processed frame in order, ``close()`` exactly once (also on Ctrl-C /
SIGTERM: the pipeline closes sinks in ``finally``). A sink sets ``stop_requested`` to end the run (the
display's q / Esc).

The JSON line of a frame::

    {"source": "vtest", "frame": 12, "pts_ms": 1200.0, "wall_time": 1718000000.123,
     "detections": [{"xyxy": [x1, y1, x2, y2], "score": 0.87, "class_id": 0, "class_name": "person"}]}

``xyxy`` is in original-frame pixels; ``wall_time`` is Unix seconds at capture; ``track_id`` is added to a
detection when a tracker runs.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from edge_detect._optional import require
from edge_detect.errors import MissingDependencyError, SinkError
from edge_detect.types import Detections, Frame

__all__ = [
    "Sink",
    "Result",
    "StreamInfo",
    "open_sink",
    "DisplaySink",
    "VideoSink",
    "JsonlSink",
    "MjpegPreviewSink",
    "display_available",
    "VIDEO_SUFFIXES",
]

LOGGER = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class StreamInfo:
    """What a sink knows about a source before frames arrive: its id and nominal frame rate (or ``None``)."""

    source_id: str
    fps: Optional[float] = None


@dataclass(eq=False)
class Result:
    """One processed frame handed to every sink.

    Attributes:
        frame: the captured :class:`Frame` (BGR ``uint8 (H, W, 3)``, ids, timestamps, stage timings).
        detections: :class:`Detections` in original-frame pixels (``track_id`` set when tracking).
        names: class names, index = class id.
        fps: current processing rate of the run (frames/s) for overlays.
    """

    frame: Frame
    detections: Detections
    names: Sequence[str] = ()
    fps: float = 0.0
    _annotated: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def annotated(self) -> np.ndarray:
        """The frame with boxes, labels, scores and the FPS overlay drawn (a copy; computed once, shared)."""
        if self._annotated is None:
            self._annotated = render(self.frame.image, self.detections, self.names, self.fps)
        return self._annotated

    def record(self) -> Dict[str, Any]:
        """The JSON-ready line of this frame (see module doc)."""
        return {
            "source": self.frame.source_id,
            "frame": int(self.frame.index),
            "pts_ms": None if self.frame.pts_ms is None else round(float(self.frame.pts_ms), 3),
            "wall_time": round(float(self.frame.wall_time), 6),
            "detections": self.detections.to_records(self.names),
        }


def render(image: np.ndarray, detections: Detections, names: Sequence[str], fps: Optional[float]) -> np.ndarray:
    """Draw detections and the FPS overlay on a copy of ``image`` with :mod:`edge_detect.stream.annotate`."""
    from edge_detect.stream.annotate import draw_detections, draw_fps

    out = draw_detections(image, detections, names, copy=True)
    return draw_fps(out, fps) if fps is not None else out


class Sink:
    """Base class of sinks (see module doc for the life cycle)."""

    name = "sink"
    stop_requested = False

    def start(self, streams: Sequence[StreamInfo]) -> None:
        """Called once before the first ``write`` with the sources of the run."""

    def write(self, result: Result) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release; called exactly once."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ display


def display_available() -> Tuple[bool, str]:
    """``(True, "")`` when a window can be shown, else ``(False, reason)``.

    Checks that OpenCV has a GUI backend (``cv2.getBuildInformation()``; headless wheels have none) and, on
    Linux, that ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set.
    """
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui.group(1).upper() == "NONE":
        return False, "this OpenCV build has no GUI support (opencv-python-headless?)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY / WAYLAND_DISPLAY not set)"
    return True, ""


class DisplaySink(Sink):
    """One window per source with the annotated frame; ``q`` or Esc sets ``stop_requested``.

    On a headless machine it logs the reason once and does nothing.
    """

    name = "display"

    def __init__(self, window: str = "edge-detect") -> None:
        self.window = window
        self.enabled, reason = display_available()
        if not self.enabled:
            LOGGER.warning("display disabled: %s; use --save-video or --preview-port to see the output", reason)
        self._windows: List[str] = []

    def write(self, result: Result) -> None:
        if not self.enabled:
            return
        title = f"{self.window} [{result.frame.source_id}]"
        if title not in self._windows:
            self._windows.append(title)
        cv2.imshow(title, result.annotated)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            LOGGER.info("display: quit key pressed")
            self.stop_requested = True

    def close(self) -> None:
        if self.enabled and self._windows:
            try:
                cv2.destroyAllWindows()
            except cv2.error as exc:  # window already gone
                LOGGER.debug("destroyAllWindows: %s", exc)


# ------------------------------------------------------------------------------------------------ video


class _AvWriter:
    """H.264 (libx264) yuv420p mp4 with the moov atom up front (``movflags=+faststart``) via PyAV."""

    def __init__(self, path: Path, size: Tuple[int, int], fps: float, crf: int, preset: str, threads: int) -> None:
        av = require("av", "video")
        self.w, self.h = size
        self.path = path
        self.container = av.open(str(path), mode="w", container_options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.stream.codec_context.thread_count = threads
        self.stream.codec_context.time_base = Fraction(1, 1) / rate
        self._av = av
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: self.h, : self.w]), format="bgr24")
        vf.pts = self.frames
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class _CvWriter:
    """``cv2.VideoWriter`` fallback ('avc1', then 'mp4v')."""

    def __init__(self, path: Path, size: Tuple[int, int], fps: float) -> None:
        self.w, self.h = size
        self.frames = 0
        for fourcc in ("avc1", "mp4v"):
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if self.writer.isOpened():
                LOGGER.warning("%s: written with cv2.VideoWriter fourcc %r (install 'edge-detect[video]' for "
                               "browser-friendly H.264 yuv420p + faststart)", path, fourcc)
                return
        raise SinkError(f"{path}: cannot open a video writer (tried PyAV libx264, cv2 'avc1', 'mp4v')")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(np.ascontiguousarray(image[: self.h, : self.w]))
        self.frames += 1

    def close(self) -> None:
        self.writer.release()


def _libx264_available() -> bool:
    try:
        av = require("av", "video")
        av.codec.Codec("libx264", "w")
        return True
    except (MissingDependencyError, ValueError) as exc:  # av's UnknownCodecError is a ValueError
        LOGGER.debug("libx264 via PyAV unavailable: %s", exc)
        return False


class VideoSink(Sink):
    """Annotated video file, one frame per processed frame (so its frame count equals ``processed``).

    With several sources, one file per source: ``out.mp4`` -> ``out_<source_id>.mp4``.

    Args:
        path: output path (``.mp4`` recommended; parent folders are created).
        fps: frame rate written in the file; default: the source's nominal rate, else 25.
        crf, preset: libx264 quality / speed.
        threads: encoder threads (1 keeps cores free for inference).
        annotate: draw detections (``False`` writes the raw frames).
    """

    name = "video"

    def __init__(self, path: Union[str, os.PathLike], fps: Optional[float] = None, crf: int = 23,
                 preset: str = "veryfast", threads: int = 1, annotate: bool = True) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise SinkError(f"video sink {self.path}: expected a suffix in {VIDEO_SUFFIXES}, got "
                            f"'{self.path.suffix}'")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"video sink {self.path}: cannot create folder ({exc})") from exc
        self.fps, self.crf, self.preset, self.threads, self.annotate = fps, crf, preset, threads, annotate
        self._use_av = self.path.suffix.lower() in (".mp4", ".m4v", ".mov", ".mkv") and _libx264_available()
        if not self._use_av:
            LOGGER.warning("PyAV with libx264 not available: %s falls back to cv2.VideoWriter", self.path)
        self._streams: Dict[str, StreamInfo] = {}
        self._writers: Dict[str, Any] = {}
        self.paths: Dict[str, Path] = {}

    def start(self, streams: Sequence[StreamInfo]) -> None:
        self._streams = {s.source_id: s for s in streams}
        for s in streams:
            self.paths[s.source_id] = self.path if len(streams) <= 1 else \
                self.path.with_name(f"{self.path.stem}_{s.source_id}{self.path.suffix}")

    def _open(self, source_id: str, image: np.ndarray) -> Any:
        h, w = image.shape[:2]
        size = (w - w % 2, h - h % 2)  # yuv420p needs even sizes
        info = self._streams.get(source_id)
        fps = self.fps or (info.fps if info and info.fps else 25.0)
        path = self.paths.setdefault(source_id, self.path if not self.paths else
                                     self.path.with_name(f"{self.path.stem}_{source_id}{self.path.suffix}"))
        try:
            writer = _AvWriter(path, size, fps, self.crf, self.preset, self.threads) if self._use_av \
                else _CvWriter(path, size, fps)
        except OSError as exc:
            raise SinkError(f"video sink {path}: cannot open for writing ({exc})") from exc
        LOGGER.info("writing %s (%dx%d @ %.2f fps, %s)", path, size[0], size[1], fps,
                    "libx264 yuv420p" if self._use_av else "cv2.VideoWriter")
        return writer

    def write(self, result: Result) -> None:
        image = result.annotated if self.annotate else result.frame.image
        sid = result.frame.source_id
        writer = self._writers.get(sid)
        if writer is None:
            writer = self._writers[sid] = self._open(sid, image)
        if image.shape[1] < writer.w or image.shape[0] < writer.h:
            image = cv2.resize(image, (writer.w, writer.h))
        writer.write(image)

    @property
    def frames(self) -> Dict[str, int]:
        """Frames written per source id."""
        return {sid: w.frames for sid, w in self._writers.items()}

    def close(self) -> None:
        for sid, writer in self._writers.items():
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - finalize the others, then report
                LOGGER.error("video sink %s: finalizing failed: %s", self.paths.get(sid), exc)
            else:
                LOGGER.info("video written: %s (%d frames)", self.paths.get(sid), writer.frames)
        self._writers = {}


# ------------------------------------------------------------------------------------------------ JSONL


class JsonlSink(Sink):
    """One JSON object per line and per processed frame (see module doc), flushed after every line."""

    name = "jsonl"

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f: Optional[io.TextIOBase] = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"JSONL sink {self.path}: cannot open for writing ({exc})") from exc
        self.lines = 0

    def write(self, result: Result) -> None:
        if self._f is None:
            raise SinkError(f"JSONL sink {self.path}: write after close")
        self._f.write(json.dumps(result.record(), separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


# ------------------------------------------------------------------------------------------------ MJPEG


class _PreviewServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: "MjpegPreviewSink"


class _PreviewHandler(BaseHTTPRequestHandler):
    server: _PreviewServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        LOGGER.debug("preview %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        sink = self.server.sink
        url = urlparse(self.path)
        sid = parse_qs(url.query).get("source", [None])[0] or url.path.strip("/") or None
        if sid in ("", "stream", "video", "stream.mjpg"):
            sid = None
        if sid is not None and sid not in sink.source_ids():
            self.send_error(404, f"unknown source {sid!r}; known: {sink.source_ids()}")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={sink.BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        sink._stream_to(self.wfile, sid)


class MjpegPreviewSink(Sink):
    """MJPEG-over-HTTP preview (``multipart/x-mixed-replace``) served from a background thread.

    ``GET /`` streams the first source, ``GET /<source_id>`` (or ``/?source=<id>``) a given one. Frames are
    JPEG-encoded only while a client is connected. Bound to ``127.0.0.1`` unless ``host`` says otherwise.

    Also usable on its own (tests, demos): :meth:`publish` pushes any BGR image.

    Args:
        port: TCP port (0 = any free port; read :attr:`port` afterwards).
        host: bind address; ``"0.0.0.0"`` exposes the preview to the network.
        quality: JPEG quality 1..100.
        annotate: publish the annotated frame (``False``: the raw frame).

    Raises:
        SinkError: the address cannot be bound (port in use, bad host).
    """

    name = "preview"
    BOUNDARY = "frame"

    def __init__(self, port: int = 8080, host: str = "127.0.0.1", quality: int = 80, annotate: bool = True) -> None:
        if not 1 <= int(quality) <= 100:
            raise SinkError(f"preview quality: expected 1..100, got {quality}")
        self.quality, self.annotate = int(quality), annotate
        try:
            self._server = _PreviewServer((host, int(port)), _PreviewHandler)
        except OSError as exc:
            raise SinkError(f"preview server: cannot listen on {host}:{port} ({exc})") from exc
        self._server.sink = self
        self.host, self.port = host, int(self._server.server_address[1])
        self._cond = threading.Condition()
        self._latest: Dict[str, Tuple[int, bytes]] = {}
        self._order: List[str] = []
        self._clients = 0
        self._closed = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"preview-{self.port}", daemon=True)
        self._thread.start()
        LOGGER.info("MJPEG preview on %s", self.url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def clients(self) -> int:
        """Connected viewers."""
        return self._clients

    def source_ids(self) -> List[str]:
        with self._cond:
            return list(self._order)

    def start(self, streams: Sequence[StreamInfo]) -> None:
        with self._cond:
            for s in streams:
                if s.source_id not in self._order:
                    self._order.append(s.source_id)

    def publish(self, image: np.ndarray, source_id: str = "0", force: bool = False) -> None:
        """Make ``image`` (BGR ``uint8 (H, W, 3)``) the current frame of ``source_id``.

        Encoding is skipped when nobody watches, unless ``force``.
        """
        with self._cond:
            if source_id not in self._order:
                self._order.append(source_id)
            if not self._clients and not force:
                return
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            LOGGER.warning("preview: JPEG encoding failed for a frame of %s", source_id)
            return
        with self._cond:
            seq = self._latest.get(source_id, (0, b""))[0] + 1
            self._latest[source_id] = (seq, buf.tobytes())
            self._cond.notify_all()

    def write(self, result: Result) -> None:
        """Publish the (annotated) frame; nothing is drawn or encoded while nobody watches."""
        image = (result.annotated if self.annotate else result.frame.image) if self._clients \
            else result.frame.image
        self.publish(image, result.frame.source_id)

    def _stream_to(self, wfile: Any, source_id: Optional[str]) -> None:
        with self._cond:
            self._clients += 1
        seen = 0
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or self._next(source_id, seen) is not None, 1.0)
                    if self._closed:
                        return
                    item = self._next(source_id, seen)
                if item is None:
                    continue
                seen, jpeg = item
                wfile.write(f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n".encode("ascii") + jpeg + b"\r\n")
                wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            LOGGER.debug("preview client left: %s", exc)
        finally:
            with self._cond:
                self._clients -= 1

    def _next(self, source_id: Optional[str], seen: int) -> Optional[Tuple[int, bytes]]:
        sid = source_id if source_id is not None else (self._order[0] if self._order else None)
        item = self._latest.get(sid) if sid is not None else None
        return item if item is not None and item[0] != seen else None

    def close(self) -> None:
        """Stop serving: viewers' connections end, the port is released."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


# ------------------------------------------------------------------------------------------------ factory


def open_sink(spec: Union[str, os.PathLike, Sink], **options: Any) -> Sink:
    """Build a sink from a kind or path (see module doc); a :class:`Sink` instance is returned as is.

    Args:
        spec: ``"display"``, a ``.mp4``/``.mkv``/``.mov``/``.avi`` path, a ``.jsonl`` path,
            ``"mjpeg://HOST:PORT"`` / ``"preview:PORT"``.
        **options: passed to the sink class (e.g. ``fps=`` for video, ``quality=`` for preview).

    Raises:
        SinkError: unknown kind or the sink cannot be opened.
    """
    if isinstance(spec, Sink):
        return spec
    s = str(spec)
    if s in ("display", "show", "window"):
        return DisplaySink(**options)
    m = re.fullmatch(r"(?:mjpeg://|preview:(?://)?)(?:([^:/]+):)?(\d+)/?", s)
    if m:
        return MjpegPreviewSink(port=int(m.group(2)), host=m.group(1) or options.pop("host", "127.0.0.1"),
                                **options)
    suffix = Path(s).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return JsonlSink(s, **options)
    if suffix in VIDEO_SUFFIXES:
        return VideoSink(s, **options)
    raise SinkError(f"sink {s!r}: expected 'display', a video path ({', '.join(VIDEO_SUFFIXES)}), a JSONL path "
                    f"({', '.join(JSONL_SUFFIXES)}) or 'mjpeg://HOST:PORT'")
