"""Video sink: annotated H.264 yuv420p video that survives a crash, one file per source.

**Crash-safe by default** (PyAV with libx264): an ``.mp4`` / ``.mov`` / ``.m4v`` is a *fragmented* MP4 (the index
up front, ``movflags=frag_keyframe+empty_moov+default_base_moof``): a keyframe and a fragment every ``fragment_s``
(1 s), each fragment written out when it is complete. A process killed at any moment (SIGKILL, a power cut) leaves
a file that plays up to its last complete fragment: it loses the last ``fragment_s`` at most, plus the frames still
waiting for the encoder (the sink's queue, 8 frames). The encoder keeps no frames back (``tune=zerolatency``: no
B-frames, no look-ahead). A ``.mkv`` is written in clusters of ``fragment_s`` the same way. A clean stop finalizes
the file normally: every processed frame is in it. Fragmented MP4 plays in browsers, VLC, ffmpeg and OpenCV.

**Segments** (``segment_s``): a new file every ``segment_s`` seconds (cut on a keyframe), ``out.mp4`` ->
``out_00000.mp4``, ``out_00001.mp4``... (``.mkv`` likewise; a path with a ``%05d``-style pattern is used as given);
each segment is crash-safe as above, and closed segments are complete files.

``fragment_s=0`` writes a plain MP4 with the index up front (``+faststart``), readable only once closed. Without
PyAV (or for ``.avi``) ``cv2.VideoWriter`` is used: it can neither fragment nor segment (a crash loses the whole
file), which it says when it opens.

Drawing and encoding run on the sink's own thread (:class:`~edge_detect.sinks.threaded.ThreadedSink`, policy
``never_drop``: every processed frame is written; a full queue holds the pipeline back like a file source does).
"""
from __future__ import annotations

import logging
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import cv2
import numpy as np

from edge_detect._optional import require
from edge_detect.errors import MissingDependencyError, SinkError
from edge_detect.sinks.base import VIDEO_SUFFIXES, Result, StreamInfo, per_source_path, register_sink
from edge_detect.sinks.threaded import ThreadedSink
from edge_detect.types import RunContext

__all__ = ["VideoSink"]

LOGGER = logging.getLogger(__name__)


#: time base of the written frames' timestamps (the MPEG 90 kHz clock)
_TIME_BASE = Fraction(1, 90000)
#: muxer flags of a fragmented MP4: the index up front, a fragment per keyframe
_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
_MP4_LIKE = (".mp4", ".m4v", ".mov")


def segment_pattern(path: Path) -> Path:
    """The file name pattern of segments: ``path`` itself when it holds a ``%d``-style pattern, else
    ``stem_%05d.suffix``."""
    return path if re.search(r"%0?\d*d", path.name) else path.with_name(f"{path.stem}_%05d{path.suffix}")


def container_setup(path: Path, fragment_s: float,
                    segment_s: Optional[float]) -> Tuple[str, Optional[str], Dict[str, str]]:
    """``(target, format, container options)`` of a video file (module doc): fragmented / clustered every
    ``fragment_s`` (``0``: a plain ``+faststart`` file), as segments of ``segment_s`` when given."""
    mp4 = path.suffix.lower() in _MP4_LIKE
    if fragment_s <= 0:
        per = {"movflags": "+faststart"} if mp4 else {}
    elif mp4:
        per = {"movflags": _FRAGMENTED, "flush_packets": "1"}
    else:  # Matroska: written cluster by cluster
        per = {"cluster_time_limit": str(max(int(fragment_s * 1000), 1)), "flush_packets": "1"}
    if not segment_s:
        return str(path), None, per
    return str(segment_pattern(path)), "segment", {
        "segment_time": f"{segment_s:g}", "segment_format": "mp4" if mp4 else "matroska", "reset_timestamps": "1",
        **({"segment_format_options": ":".join(f"{k}={v}" for k, v in per.items())} if per else {})}


class _AvWriter:
    """H.264 (libx264) yuv420p via PyAV, crash-safe as the module doc says; each frame is stamped with its own
    time, so irregular timing (live sources, repeat-frame gaps) plays at the right speed."""

    def __init__(self, path: Path, size: Tuple[int, int], fps: float, crf: int, preset: str, threads: int,
                 fragment_s: float = 1.0, segment_s: Optional[float] = None) -> None:
        av = require("av", "video")
        self.w, self.h = size
        self.path = path
        target, fmt, options = container_setup(path, fragment_s, segment_s)
        self.container = av.open(target, mode="w", format=fmt, container_options=options)
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
        opts = {"crf": str(crf), "preset": preset}
        if fragment_s > 0:  # a keyframe per fragment, nothing held back in the encoder
            gop = str(max(int(round(fps * fragment_s)), 1))
            opts.update(g=gop, keyint_min=gop, tune="zerolatency")
        self.stream.options = opts
        self.stream.codec_context.thread_count = threads
        self.stream.codec_context.time_base = _TIME_BASE
        self.stream.time_base = _TIME_BASE
        self._av = av
        self.frames = 0
        self._last_pts = -1

    def write(self, image: np.ndarray, t_ms: float) -> None:
        """Encode ``image`` shown from ``t_ms`` milliseconds after the first frame."""
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: self.h, : self.w]), format="bgr24")
        pts = max(int(round(t_ms * 90)), self._last_pts + 1)  # strictly increasing
        vf.pts, vf.time_base = pts, _TIME_BASE
        self._last_pts = pts
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class _CvWriter:
    """``cv2.VideoWriter`` fallback ('avc1', then 'mp4v'): constant frame rate, so a frame is repeated to cover
    the time until the next one (timing kept, frame count = slots, not processed frames)."""

    def __init__(self, path: Path, size: Tuple[int, int], fps: float) -> None:
        self.w, self.h = size
        self.fps = fps
        self.frames = 0
        for fourcc in ("avc1", "mp4v"):
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if self.writer.isOpened():
                LOGGER.warning("%s: written with cv2.VideoWriter fourcc %r: not crash-safe (a kill or power cut "
                               "loses the whole file; no fragments, no segments) and not browser-friendly; install "
                               "'edge-detect[video]' (PyAV) for fragmented H.264", path, fourcc)
                return
        raise SinkError(f"{path}: cannot open a video writer (tried PyAV libx264, cv2 'avc1', 'mp4v')")

    def write(self, image: np.ndarray, t_ms: float) -> None:
        """Write ``image`` into every frame slot from ``t_ms`` on that is not yet filled (at least once)."""
        repeats = max(1, int(round(t_ms * self.fps / 1000.0)) + 1 - self.frames)
        img = np.ascontiguousarray(image[: self.h, : self.w])
        for _ in range(repeats):
            self.writer.write(img)
        self.frames += repeats

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


class VideoSink(ThreadedSink):
    """Annotated video file, one frame per processed frame (so its frame count equals ``processed``).

    With several sources, one file per source: ``out.mp4`` -> ``out_<source_id>.mp4``.

    Args:
        path: output path (``.mp4`` recommended; parent folders are created).
        fps: constant frame rate: frame ``k`` is shown at ``k / fps`` whatever its own timing. Default: each
            frame keeps its own time -- the container timestamp for files (gaps such as AVI repeat packets keep
            their length), the capture time for live sources (a 10 fps camera is written at 10 fps, whatever
            rate it announces); the source's nominal rate (else 25) is only recorded as the stream rate.
        crf, preset: libx264 quality / speed.
        threads: encoder threads (1 keeps cores free for inference).
        annotate: draw detections (``False`` writes the raw frames).
        queue_size: frames waiting for the encoder at most (then ``write`` waits: files never drop).
        fragment_s: seconds per fragment and between keyframes (crash safety, module doc); ``0``: a plain
            ``+faststart`` MP4 that is only readable once closed.
        segment_s: a new file every this many seconds (``out_00000.mp4``...; module doc); ``None``: one file.

    Raises:
        SinkError: an unknown suffix, an unwritable folder, or ``segment_s`` where only cv2.VideoWriter can write.
    """

    name = "video"
    default_policy = "never_drop"
    default_queue_size = 8

    def __init__(self, path: Union[str, os.PathLike], fps: Optional[float] = None, crf: int = 23,
                 preset: str = "veryfast", threads: int = 1, annotate: bool = True,
                 queue_size: Optional[int] = None, fragment_s: float = 1.0, segment_s: Optional[float] = None) -> None:
        super().__init__(queue_size=queue_size)
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise SinkError(f"video sink {self.path}: expected a suffix in {VIDEO_SUFFIXES}, got "
                            f"'{self.path.suffix}'")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"video sink {self.path}: cannot create folder ({exc})") from exc
        self.fps, self.crf, self.preset, self.threads, self.annotate = fps, crf, preset, threads, annotate
        if fragment_s < 0 or (segment_s is not None and segment_s <= 0):
            raise SinkError(f"video sink {self.path}: expected fragment_s >= 0 and segment_s > 0, got "
                            f"{fragment_s}, {segment_s}")
        self.fragment_s, self.segment_s = float(fragment_s), segment_s
        self._use_av = self.path.suffix.lower() in (".mp4", ".m4v", ".mov", ".mkv") and _libx264_available()
        if not self._use_av:
            if segment_s:
                raise SinkError(f"video sink {self.path}: segments need PyAV with libx264 and a .mp4/.mkv/.mov "
                                "suffix (pip install 'edge-detect[video]'); cv2.VideoWriter cannot cut them")
            LOGGER.warning("PyAV with libx264 not available: %s falls back to cv2.VideoWriter", self.path)
        self._streams: Dict[str, StreamInfo] = {}
        self._writers: Dict[str, Any] = {}
        self._written: Dict[str, int] = {}  # frames per source of the files already finalized
        self._origin: Dict[str, float] = {}  # per source: the first frame's time (pts or capture time), ms
        self.paths: Dict[str, Path] = {}

    def open(self, context: RunContext) -> None:
        self._streams = {s.source_id: s for s in context}
        for s in context:
            self.paths[s.source_id] = self.path if len(context) <= 1 else \
                per_source_path(self.path, s.source_id)

    def _open(self, source_id: str, image: np.ndarray) -> Any:
        h, w = image.shape[:2]
        size = (w - w % 2, h - h % 2)  # yuv420p needs even sizes
        if min(size) < 2:
            raise SinkError(f"video sink {self.path}: expected frames of at least 2x2 pixels, got {w}x{h}")
        info = self._streams.get(source_id)
        fps = self.fps or (info.fps if info and info.fps else 25.0)
        path = self.paths.setdefault(source_id, self.path if not self.paths else
                                     per_source_path(self.path, source_id))
        try:
            writer = _AvWriter(path, size, fps, self.crf, self.preset, self.threads, self.fragment_s,
                               self.segment_s) if self._use_av else _CvWriter(path, size, fps)
        except OSError as exc:
            raise SinkError(f"video sink {path}: cannot open for writing ({exc})") from exc
        LOGGER.info("writing %s (%dx%d @ %.2f fps, %s)", segment_pattern(path) if self.segment_s else path, size[0],
                    size[1], fps, self._describe() if self._use_av else "cv2.VideoWriter")
        return writer

    def _describe(self) -> str:
        kind = f"fragments of {self.fragment_s:g} s" if self.fragment_s > 0 else "faststart, not crash-safe"
        seg = f", segments of {self.segment_s:g} s" if self.segment_s else ""
        return f"libx264 yuv420p, {kind}{seg}"

    def prepare(self, result: Result) -> Optional[Result]:
        return None if result.events_only else result  # events only (end of source, emitted): no new image

    def handle(self, result: Result) -> bool:
        """Draw (unless ``annotate=False``) and encode one frame, on the sink's thread."""
        image = result.annotated if self.annotate else result.frame.image
        sid = result.frame.source_id
        writer = self._writers.get(sid)
        if writer is None:
            writer = self._writers[sid] = self._open(sid, image)
        if image.shape[1] < writer.w or image.shape[0] < writer.h:
            image = cv2.resize(image, (writer.w, writer.h))
        writer.write(image, self._time_ms(result, writer))
        return True

    def _time_ms(self, result: Result, writer: Any) -> float:
        """When this frame is shown, in ms after the source's first written frame (see ``fps`` in the class doc)."""
        frame, sid = result.frame, result.frame.source_id
        info = self._streams.get(sid)
        if self.fps:
            return writer.frames * 1000.0 / self.fps
        if info is not None and info.live:
            t = frame.capture_time * 1000.0
        elif frame.pts_ms is not None:
            t = float(frame.pts_ms)
        else:
            t = frame.index * 1000.0 / (info.fps if info and info.fps else 25.0)
        return t - self._origin.setdefault(sid, t)

    @property
    def frames(self) -> Dict[str, int]:
        """Frames written per source id (also after :meth:`close`)."""
        return {**self._written, **{sid: w.frames for sid, w in self._writers.items()}}

    def finalize(self) -> None:
        """Finalize every file; raises :class:`SinkError` naming the ones that failed (after trying all)."""
        failed = []
        for sid, writer in self._writers.items():
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - finalize the others, then report
                LOGGER.error("video sink %s: finalizing failed: %s", self.paths.get(sid), exc)
                failed.append(f"{self.paths.get(sid)} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            else:
                LOGGER.info("video written: %s (%d frames)", self.paths.get(sid), writer.frames)
        self._written.update({sid: w.frames for sid, w in self._writers.items()})
        self._writers = {}
        if failed:
            raise SinkError(f"video sink: expected finalized files, got {len(failed)} failure(s): {'; '.join(failed)}")



@register_sink(*VIDEO_SUFFIXES)
def _open_video(target: str, fps: Optional[float] = None, crf: int = 23, preset: str = "veryfast",
                threads: int = 1, annotate: bool = True, fragment_s: float = 1.0,
                segment_s: Optional[float] = None) -> VideoSink:
    return VideoSink(target, fps=fps, crf=crf, preset=preset, threads=threads, annotate=annotate,
                     fragment_s=fragment_s, segment_s=segment_s)
