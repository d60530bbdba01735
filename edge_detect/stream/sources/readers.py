"""The built-in readers: :class:`OpenCVReader` (files, cameras, network streams, GStreamer) and :class:`ImageReader`.

Both implement :class:`~edge_detect.stream.sources.base.Reader`; :func:`~edge_detect.stream.sources.open_source`
picks one per kind. OpenCV's and FFmpeg's own log lines are kept off stderr while a capture opens
(:func:`quiet_libraries`): a camera that is absent or a refused URL gives one error of ours, not library noise.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import cv2

from edge_detect.errors import SourceError
from edge_detect.stream.sources.base import CaptureOptions, ReaderBase, ReadResult, source_kind

__all__ = ["OpenCVReader", "ImageReader", "quiet_libraries", "FFMPEG_LOGLEVEL_ENV"]

LOGGER = logging.getLogger(__name__)

#: Environment variable OpenCV reads ONCE, at its first FFmpeg use, for FFmpeg's log level. edge-detect sets it to
#: 8 (fatal only) unless it is already set: ``OPENCV_FFMPEG_LOGLEVEL=24`` shows FFmpeg's warnings again.
FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"

_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_saved_cv_level: Optional[int] = None


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep OpenCV's ``[ WARN:...]`` lines and FFmpeg's messages off stderr inside the block.

    OpenCV's log level is lowered to errors for the block and restored after it (nested and concurrent blocks
    share one save/restore). FFmpeg's level can only be set before its first use, process-wide: the first block
    sets :data:`FFMPEG_LOGLEVEL_ENV` unless the user set it. Our own error messages report what failed.
    """
    global _quiet_depth, _saved_cv_level
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            os.environ.setdefault(FFMPEG_LOGLEVEL_ENV, "8")
            _saved_cv_level = cv2.utils.logging.getLogLevel()
            if _saved_cv_level > cv2.utils.logging.LOG_LEVEL_ERROR:
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _saved_cv_level is not None:
                cv2.utils.logging.setLogLevel(_saved_cv_level)


def _camera_device(target: Union[int, str]) -> str:
    return f"/dev/video{target}" if isinstance(target, int) else str(target)


def _open_hint(kind: str, target: Any) -> str:
    """Why a capture of ``kind`` may not open: the tail of the error message."""
    if kind == "camera":
        device = _camera_device(target)
        if sys.platform.startswith("linux") and not os.path.exists(device):
            return f": no such camera ({device} does not exist)"
        return ": the camera does not exist, is busy (in use by another program) or is not a capture device"
    hints = {"stream": " (is the server up and the URL right? credentials right?)",
             "gstreamer": " (try the pipeline with gst-launch-1.0; it must end in an appsink)",
             "file": ": not a video OpenCV/FFmpeg can decode"}
    return hints.get(kind, "")


class OpenCVReader(ReaderBase):
    """A ``cv2.VideoCapture`` over a file, camera, network stream or GStreamer pipeline.

    File reads carry the container's timestamps (``pts_ms``); a gap of more than one frame interval reports the
    missing frames as ``skipped`` (undecodable) or, for AVI files read with PyAV at hand, ``empty`` where the
    container holds no packet at all (a deliberate repeat).

    Args:
        target: a path (``file``), an index or ``/dev/videoN`` (``camera``), a URL (``stream``) or a pipeline
            string (``gstreamer``).
        kind: one of ``file``, ``camera``, ``stream``, ``gstreamer``.
        options: capture options (timeouts for streams, mode for cameras).
        name: the masked name used in messages (default: the kind's description of ``target``).

    Raises:
        SourceError: the capture cannot be opened (the message says why it may be and never asks a camera about
            credentials).
    """

    def __init__(self, target: Any, kind: str = "file", options: Optional[CaptureOptions] = None,
                 name: Optional[str] = None) -> None:
        opts = options or CaptureOptions()
        self.kind = source_kind(kind)
        self.name = name or self.kind.describe(target)
        api, params = self._api_params(self.kind.name, opts)
        with quiet_libraries():
            self.cap = cv2.VideoCapture(target if not isinstance(target, Path) else str(target), api, params)
            opened = self.cap.isOpened()
        if not opened:
            self.cap.release()
            raise SourceError(f"cannot open {self.kind.name} source {self.name}{_open_hint(self.kind.name, target)}")
        if self.kind.name == "camera":
            self._configure_camera(opts)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT) if not self.kind.live else 0
        self.expected_frames = int(count) if count and count > 0 else None
        self._last_pts: Optional[float] = None
        self._target = target
        self._data_slots: Optional[Any] = None  # frame slots that hold a packet (AVI only, built on first gap)

    @staticmethod
    def _api_params(kind: str, opts: CaptureOptions) -> Tuple[int, List[int]]:
        if kind == "gstreamer":
            return cv2.CAP_GSTREAMER, []
        if kind == "camera":
            return (cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY), []
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

    def read(self) -> ReadResult:
        """The next frame; ``"end"`` at a file's end, ``"lost"`` when a live capture stops delivering."""
        ok, img = self.cap.read()
        if not ok or img is None or img.size == 0:
            return ReadResult("lost" if self.kind.live else "end")
        if self.kind.live:
            return ReadResult("ok", img)
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
        return ReadResult("ok", img, pts, skipped, empty=empty)

    def _slots_with_data(self) -> Optional[Any]:
        """Frame slots (``round(pts * fps)``) that carry a packet, for AVI files; ``None`` elsewhere or without
        PyAV (then every gap counts as corrupt). Demux only, no decoding; computed once."""
        if self._data_slots is None:
            self._data_slots = _avi_slots_with_data(Path(self._target), self.fps or 0.0)
        return self._data_slots or None

    def release(self) -> None:
        """Release the capture (idempotent)."""
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
        with av.logging.Capture(), av.open(str(path)) as container:  # PyAV's FFmpeg messages: not on stderr
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    slots.add(int(round(float(packet.pts * stream.time_base) * fps)))
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        LOGGER.info("%s: cannot demux with PyAV (%s): timestamp gaps count as corrupt frames", path, exc)
        return frozenset()
    return frozenset(slots)


class ImageReader(ReaderBase):
    """Reads a list of image files in order; an unreadable file is reported as ``"corrupt"`` (skipped, counted).

    Args:
        paths: image files (any format OpenCV decodes), read in this order.
    """

    def __init__(self, paths: Sequence[Union[str, "os.PathLike[str]"]]) -> None:
        self.paths = [Path(p) for p in paths]
        self.expected_frames = len(self.paths)
        self._i = 0

    def read(self) -> ReadResult:
        """The next image (BGR ``uint8 (H, W, 3)``, ``path`` set), ``"corrupt"`` or ``"end"``."""
        if self._i >= len(self.paths):
            return ReadResult("end")
        path = self.paths[self._i]
        self._i += 1
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            LOGGER.info("skipping %s: not a decodable image (counted as corrupt in the summary)", path)
            return ReadResult("corrupt")
        return ReadResult("ok", img, path=path)
