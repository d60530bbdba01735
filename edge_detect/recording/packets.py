"""Encoded video for the recorder: a ring of packets per source, where packets come from, and the clip writer.

Three packet sources, one ring type:

* :class:`FilePackets`: a file whose codec an mp4 can hold as is (H.264 / H.265): its packets are demuxed (never
  decoded) by the recorder's own thread, only as far as the pipeline has processed (:meth:`FilePackets.advance`),
  so the ring stays small. Packets are copied byte for byte into the clip: no re-encode, almost no CPU.
* :class:`LivePackets`: a network stream (RTSP...) with such a codec: a second, demux-only connection read by its
  own thread (the way a camera's recording stream is kept apart from its detection stream), reconnecting with
  backoff after an outage. Its packets are stamped with the wall-clock time they arrived; the timestamps of a new
  connection (which start again from zero) are moved onto the first connection's timeline, so a clip that spans
  an outage keeps its timing.
* :class:`EncodedFrames`: anything else (cameras, image folders, other codecs), or annotated clips: the frames the
  pipeline processed are encoded to H.264 with a short GOP as they arrive, by one encoder thread (the recorder's).

Times are seconds on the source's stream clock (see :mod:`edge_detect.recording.clips`). The ring keeps at least
``keep_s`` seconds, always from a keyframe, so a clip can start on the keyframe at or before its start. How far
back that keyframe can be is the source's **keyframe reach** (the longest time from a keyframe to a later packet
before the next keyframe: about the GOP): :attr:`PacketRing.keyframe_reach_s` as packets come,
:func:`probe_keyframe_reach` for a file before it is read. A source whose keyframes are far apart (a file with one
keyframe every 25 s, a camera's "smart codec") would give clips that start that much too early, so the recorder
encodes such a source's frames instead (``record.max_gop_s``).

:class:`ClipWriter` writes a fragmented mp4 (``movflags=frag_keyframe+empty_moov+default_base_moof``, flushed
after every packet): a clip that is cut short by a crash still plays up to its last fragment.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Deque, List, Optional, Tuple

import numpy as np

from edge_detect._optional import require

__all__ = ["Packet", "EncodedTemplate", "PacketRing", "FilePackets", "LivePackets", "EncodedFrames", "ClipWriter",
           "REMUX_CODECS", "FRAGMENTED_MP4", "probe_codec", "probe_keyframe_reach"]

LOGGER = logging.getLogger(__name__)

#: codecs an mp4 clip takes as they are (stream copy)
REMUX_CODECS = ("h264", "hevc")
#: muxer options of a crash-safe mp4: the moov up front, a fragment per keyframe, every packet flushed
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
_TB90K = Fraction(1, 90000)


@dataclass(frozen=True)
class EncodedTemplate:
    """Codec parameters of the packets :class:`EncodedFrames` makes (H.264 with in-band parameter sets)."""

    codec: str
    width: int
    height: int


@dataclass(frozen=True)
class Packet:
    """One encoded video packet, immutable (a copy of the demuxer's or encoder's packet).

    Attributes:
        t: stream time in seconds (presentation time).
        data: the packet's bytes, exactly as demuxed / encoded.
        pts, dts, duration: in ``time_base`` units (``duration`` may be 0 when unknown).
        time_base: the packets' time base.
        keyframe: whether a decoder can start here.
        seq: position in its ring (0, 1, 2... for the life of the ring).
    """

    t: float
    data: bytes
    pts: int
    dts: int
    duration: int
    time_base: Fraction
    keyframe: bool
    seq: int


class PacketRing:
    """The last ``keep_s`` seconds of one source's packets, from a keyframe (thread-safe).

    Args:
        keep_s: seconds to keep behind the newest packet (pre-roll plus a GOP is enough).
        max_packets: hard cap on the packets held (a stream with no keyframes must not grow without bound);
            packets over it are dropped oldest first and counted in :attr:`dropped`.
    """

    def __init__(self, keep_s: float, max_packets: int = 20000) -> None:
        self.keep_s = float(keep_s)
        self.max_packets = int(max_packets)
        self._items: Deque[Packet] = deque()
        self._lock = threading.Lock()
        self._seq = 0
        self.dropped = 0
        self.keyframe_reach_s = 0.0  # the longest a packet so far came after the keyframe before it (module doc)
        self._last_key_t: Optional[float] = None

    def append(self, t: float, data: bytes, pts: int, dts: int, duration: int, time_base: Fraction,
               keyframe: bool) -> Packet:
        """Add a packet (in decode order) and trim what is older than needed."""
        with self._lock:
            pkt = Packet(t, data, pts, dts, duration, time_base, keyframe, self._seq)
            self._seq += 1
            self._items.append(pkt)
            if keyframe:
                self._last_key_t = t
            elif self._last_key_t is not None and t - self._last_key_t > self.keyframe_reach_s:
                self.keyframe_reach_s = t - self._last_key_t
            self._trim(t)
            return pkt

    def _trim(self, newest_t: float) -> None:
        """Drop packets before the last keyframe that is at least ``keep_s`` old (then the cap)."""
        horizon = newest_t - self.keep_s
        keep_from = 0
        for i, p in enumerate(self._items):
            if p.t > horizon:
                break
            if p.keyframe:
                keep_from = i
        for _ in range(keep_from):
            self._items.popleft()
        while len(self._items) > self.max_packets:
            self._items.popleft()
            self.dropped += 1

    def newest_t(self) -> Optional[float]:
        """Time of the newest packet, ``None`` when empty."""
        with self._lock:
            return self._items[-1].t if self._items else None

    def since(self, t0: float, after_seq: int = -1, until: Optional[float] = None) -> List[Packet]:
        """Packets from the last keyframe at or before ``t0`` (or the first keyframe after it), newer than
        ``after_seq``, with ``t <= until`` when given; decode order."""
        with self._lock:
            items = list(self._items)
        start = None
        for i, p in enumerate(items):
            if p.keyframe and (p.t <= t0 or start is None):
                start = i
            if p.t > t0 and start is not None:
                break
        if start is None:
            return []
        return [p for p in items[start:] if p.seq > after_seq and (until is None or p.t <= until)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _copy(ring: PacketRing, packet: Any, t: float, shift: int = 0) -> Packet:
    return ring.append(t, bytes(packet), int(packet.pts) + shift, int(packet.dts) + shift, int(packet.duration or 0),
                       packet.time_base, bool(packet.is_keyframe))


class _DemuxBase:
    """What :class:`FilePackets` and :class:`LivePackets` share: the ring and the stream to copy from."""

    ring: PacketRing
    template: Any = None  # the PyAV video stream the clips copy their codec parameters from
    cpu_s = 0.0  # CPU seconds of a reading thread of its own (LivePackets), 0 when read on the recorder's thread
    unsupported: Optional[str] = None  # the codec, when an mp4 cannot take it as is (the recorder encodes instead)
    _lock = threading.Lock()  # replaced per instance where a thread of its own swaps the template

    def open_writer(self, path: Path) -> Optional["ClipWriter"]:
        """A :class:`ClipWriter` for ``path`` with this source's codec parameters, ``None`` while they are not
        known yet (a live stream not connected)."""
        with self._lock:
            return None if self.template is None else ClipWriter(path, self.template)

    def advance(self, now: float) -> None:
        """Make sure the ring holds the packets up to stream time ``now`` (files); live sources fill by themselves."""

    def close(self) -> None:
        """Stop reading and release the input."""


def probe_codec(uri: str, timeout_s: float = 10.0) -> Optional[str]:
    """The video codec name of ``uri`` as PyAV sees it (``"h264"``...), ``None`` when it cannot be opened."""
    av = require("av", "video")
    try:
        with av.open(uri, timeout=timeout_s) as container:
            return container.streams.video[0].codec_context.name if container.streams.video else None
    except (av.error.FFmpegError, OSError, IndexError):
        return None


def probe_keyframe_reach(path: str, window_s: float = 60.0) -> float:
    """The keyframe reach of a video file's first ``window_s`` seconds (module doc), from its packets alone (demuxed,
    never decoded): with one keyframe in that window, the window itself (or the file, when shorter); 0.0 when the
    file cannot be read."""
    av = require("av", "video")
    reach, last_key = 0.0, None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = stream.start_time or 0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = float((packet.pts - start) * packet.time_base)
                if packet.is_keyframe:
                    last_key = t if last_key is None else max(last_key, t)
                elif last_key is not None:
                    reach = max(reach, t - last_key)
                if t > window_s:
                    break
    except (av.error.FFmpegError, OSError, IndexError):
        return 0.0
    return reach


class FilePackets(_DemuxBase):
    """Packets of a video file, demuxed on demand up to the pipeline's progress (module doc).

    Args:
        path: the video file (the same file the pipeline decodes).
        keep_s: ring length in seconds.
    """

    def __init__(self, path: str, keep_s: float) -> None:
        av = require("av", "video")
        self.ring = PacketRing(keep_s)
        self._container = av.open(str(path))
        self.template = self._container.streams.video[0]
        self._start = self.template.start_time or 0
        self._iter = self._container.demux(self.template)
        self._ended = False

    def advance(self, now: float) -> None:
        """Demux until the newest packet is past ``now`` (or the file ends)."""
        newest = self.ring.newest_t()
        while not self._ended and (newest is None or newest <= now):
            try:
                packet = next(self._iter)
            except StopIteration:
                self._ended = True
                break
            if packet.dts is None or packet.pts is None:  # the demuxer's final empty packet
                continue
            newest = _copy(self.ring, packet, float((packet.pts - self._start) * packet.time_base)).t

    def close(self) -> None:
        self._container.close()


class LivePackets(_DemuxBase):
    """A network stream read by a demux-only thread into the ring, stamped with arrival wall time (module doc).

    Args:
        uri: the stream (credentials allowed; never logged unmasked).
        keep_s: ring length in seconds.
        label: what log lines call the stream (masked URI or source id).
        timeout_s: open / read timeout.
        backoff_max_s: longest wait between reconnection attempts.
    """

    def __init__(self, uri: str, keep_s: float, label: str, timeout_s: float = 10.0,
                 backoff_max_s: float = 10.0) -> None:
        self._av = require("av", "video")
        self.uri, self.label = uri, label
        self.timeout_s, self.backoff_max_s = timeout_s, backoff_max_s
        self.ring = PacketRing(keep_s)
        self.reconnects = 0
        self._origin: Optional[float] = None  # wall time of the first connection's timestamp 0
        self._lock = threading.Lock()  # guards template / _container (a clip may be opened from them meanwhile)
        self._container: Any = None  # the connection the template belongs to: open until the next one replaces it
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"record-demux-{label}", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Whether the stream's codec parameters (:attr:`template`) are known within ``timeout`` s."""
        return self._ready.wait(timeout)

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._read_once()
                backoff = 0.5
            except (self._av.error.FFmpegError, OSError) as exc:
                LOGGER.warning("recorder: %s: stream lost (%s); retrying in %.1f s", self.label,
                               str(exc).splitlines()[0] if str(exc) else type(exc).__name__, backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max_s)

    def _read_once(self) -> None:
        options = {"rtsp_transport": "tcp"} if self.uri.lower().startswith("rtsp") else {}
        container = self._av.open(self.uri, options=options, timeout=self.timeout_s)
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in REMUX_CODECS:  # e.g. MJPEG over HTTP: nothing to copy; the recorder encodes frames instead
            container.close()
            LOGGER.info("recorder: %s: %s cannot be copied into an mp4 clip: encoding the frames", self.label, codec)
            self.unsupported = codec
            self._stop.set()
            return
        with self._lock:  # the previous connection (and its template) goes only now: a clip may copy it meanwhile
            old, self._container = self._container, container
            if self.template is not None:
                self.reconnects += 1
                LOGGER.info("recorder: %s: stream back", self.label)
            self.template = stream
        if old is not None:
            old.close()
        self._ready.set()
        t0: Optional[float] = None
        shift = 0
        for packet in container.demux(stream):
            if self._stop.is_set():
                return
            if packet.dts is None or packet.pts is None:
                continue
            now = time.time()
            if t0 is None:  # arrival time of the first packet, then the stream's own clock
                t0 = now - float(packet.pts * packet.time_base)
                self._origin = t0 if self._origin is None else self._origin
                shift = int(round((t0 - self._origin) / packet.time_base))  # onto the first timeline
            t = t0 + float(packet.pts * packet.time_base)
            _copy(self.ring, packet, min(t, now + 1.0), shift)
            self.cpu_s = time.thread_time()  # this thread's CPU so far (the recorder's share, run summary)
        raise OSError("end of stream")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1.0)
        if self._thread.is_alive():  # still inside a read: its connection goes with the process, never under it
            return
        with self._lock:
            container, self._container = self._container, None
        if container is not None:
            container.close()


class EncodedFrames:
    """Frames encoded to H.264 (libx264, yuv420p, a keyframe every ``gop_s``) into a ring as they arrive.

    Args:
        keep_s: ring length in seconds.
        gop_s: seconds between keyframes (a clip starts at most this much before its planned start).
        crf, preset: libx264 quality / speed.
    """

    cpu_s = 0.0  # encoded on the recorder's thread: nothing of its own

    def __init__(self, keep_s: float, gop_s: float = 1.0, crf: int = 26, preset: str = "veryfast") -> None:
        self._av = require("av", "video")
        self.ring = PacketRing(keep_s)
        self.gop_s, self.crf, self.preset = gop_s, crf, preset
        self._codec: Any = None
        self._size: Optional[Tuple[int, int]] = None
        self._last_key_t: Optional[float] = None
        self._last_pts = -1
        self._pending: Deque[float] = deque()
        self.template = None

    def open_writer(self, path: Path) -> Optional["ClipWriter"]:
        """A :class:`ClipWriter` for ``path``, ``None`` before the first frame (the size is not known yet)."""
        return None if self.template is None else ClipWriter(path, self.template)

    def _open(self, w: int, h: int) -> None:
        ctx = self._av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        ctx.time_base = _TB90K
        ctx.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency"}
        ctx.thread_count = 1  # on the recorder's thread only: its CPU is measured (``record``), cores stay free
        ctx.open()
        self._codec, self._size = ctx, (w - w % 2, h - h % 2)
        self.template = EncodedTemplate("h264", w - w % 2, h - h % 2)

    def add(self, image: np.ndarray, t: float) -> None:
        """Encode one BGR ``uint8 (H, W, 3)`` frame shown from stream time ``t``."""
        h, w = image.shape[:2]
        if self._codec is None:
            self._open(w, h)
        cw, ch = self._size
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:ch, :cw]), format="bgr24")
        pts = max(int(round(t * 90000)), self._last_pts + 1)
        self._last_pts = pts
        frame.pts, frame.time_base = pts, _TB90K
        if self._last_key_t is None or t - self._last_key_t >= self.gop_s:
            frame.pict_type = self._av.video.frame.PictureType.I
            self._last_key_t = t
        for packet in self._codec.encode(frame):
            self._append(packet)

    def _append(self, packet: Any) -> None:
        pts = int(packet.pts)
        self.ring.append(pts / 90000.0, bytes(packet), pts, int(packet.dts), int(packet.duration or 0), _TB90K,
                         bool(packet.is_keyframe))

    def advance(self, now: float) -> None:
        """Nothing to read: frames are added by :meth:`add`."""

    def close(self) -> None:
        if self._codec is not None:
            for packet in self._codec.encode(None):
                self._append(packet)


class ClipWriter:
    """One clip as a fragmented mp4 of copied packets (module doc). Timestamps start at 0.

    Args:
        path: the ``.mp4`` to write (its folder is created).
        template: the PyAV stream or codec context the packets come from (codec parameters).
    """

    def __init__(self, path: Path, template: Any) -> None:
        av = require("av", "video")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._container = av.open(str(path), "w", format="mp4", options=dict(FRAGMENTED_MP4))
        if isinstance(template, EncodedTemplate):  # our encoder: parameter sets travel in the keyframes
            self._stream = self._container.add_stream(template.codec, rate=25)
            self._stream.width, self._stream.height, self._stream.pix_fmt = template.width, template.height, "yuv420p"
            self._stream.time_base = _TB90K
        else:
            self._stream = self._container.add_stream_from_template(template)
        self._av = av
        self._offset: Optional[int] = None
        self._last_dts: Optional[int] = None
        self.first_t: Optional[float] = None
        self.last_t: Optional[float] = None
        self.end_t: Optional[float] = None  # when the last frame stops showing (its time plus its duration, if known)
        self.packets = 0
        self.last_seq = -1

    def write(self, packet: Packet) -> None:
        """Copy one packet in (decode order); its bytes are written unchanged."""
        if self._offset is None:
            self._offset = packet.dts
            self.first_t = packet.t
        q = self._av.Packet(packet.data)
        dts = packet.dts - self._offset
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1
        q.dts, q.pts = dts, max(packet.pts - self._offset, dts)
        q.duration, q.time_base = packet.duration, packet.time_base
        q.is_keyframe = packet.keyframe
        q.stream = self._stream
        self._container.mux(q)
        self._last_dts = dts
        self.last_t = packet.t if self.last_t is None else max(self.last_t, packet.t)
        shown = packet.t + float(packet.duration * packet.time_base) if packet.duration > 0 else packet.t
        self.end_t = shown if self.end_t is None else max(self.end_t, shown)
        self.packets += 1
        self.last_seq = packet.seq

    def close(self) -> None:
        """Finalize the file."""
        self._container.close()

