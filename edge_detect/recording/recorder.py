"""The event recorder's core: clips with pre- and post-roll around events, per source, with retention.

:class:`Recorder` is fed every processed frame of a run (a :class:`~edge_detect.types.Result` with its events) on
ONE thread that is not the pipeline's (the recorder sink's worker). Per source it keeps a ring of encoded packets
(:mod:`edge_detect.recording.packets`: remuxed from the source where its codec allows, else encoded frames), plans
clips with :class:`~edge_detect.recording.clips.ClipPlanner` and writes each clip progressively as a fragmented mp4
(what was written survives a crash) named ``DIR/{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4``, with a thumbnail
``.jpg`` of the clip's best frame. When a clip closes, a :class:`~edge_detect.types.ClipSaved` event (path, start,
end, duration, thumbnail, the ids of the events it covers) is handed to ``publish``. Retention runs on the same
thread every ``retention_interval_s``.

A failure to write (disk full, folder not writable) stops the recorder with one log line; the error is kept in
:attr:`Recorder.error` for the run summary, and the run goes on.
"""
from __future__ import annotations

import difflib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.recording.clips import Clip, ClipPlanner
from edge_detect.recording.packets import (REMUX_CODECS, ClipWriter, EncodedFrames, FilePackets, LivePackets,
                                           probe_codec, probe_keyframe_reach)
from edge_detect.recording.retention import (THUMB_SUFFIX, clip_id, clip_path, delete_clips, plan_retention,
                                             scan_clips)
from edge_detect.types import ClipSaved, event_types

__all__ = ["RecordConfig", "RetainConfig", "Recorder", "RecordedStream"]

LOGGER = logging.getLogger(__name__)

_OBJECT_START = ("object_new", "object_start")


@dataclass(frozen=True)
class RetainConfig:
    """Retention of clips: delete those older than ``days`` and the oldest while the folder is over ``max_gb``
    (``None``: no limit of that kind)."""

    days: Optional[float] = 7.0
    max_gb: Optional[float] = 20.0

    def __post_init__(self) -> None:
        if self.days is not None and self.days <= 0:
            raise ConfigError(f"record.retain.days: expected > 0 or null, got {self.days}")
        if self.max_gb is not None and self.max_gb <= 0:
            raise ConfigError(f"record.retain.max_gb: expected > 0 or null, got {self.max_gb}")


@dataclass(frozen=True)
class RecordConfig:
    """What and how to record.

    Attributes:
        dir: the folder clips go to (``None`` only in a config section whose folder comes from elsewhere, e.g.
            ``--record DIR``: a recorder needs one).
        pre_s, post_s: seconds before the first / after the last event of a clip.
        max_clip_s: the longest clip.
        on: event selectors that start or extend a clip: an event type (``line_cross``, ``zone_enter``,
            ``zone_exit``, ``object_new``...) or ``TYPE:CLASS`` (``object_new:person``; ``object_start`` is an
            alias of ``object_new``).
        annotate: clips of annotated frames (boxes drawn; encoded) instead of the source's own pixels (remuxed
            where the codec allows: evidence, and almost no CPU).
        retain: retention limits.
        retention_interval_s: seconds between two retention passes.
        max_gop_s: a source whose keyframes are further apart than this (its keyframe reach:
            :mod:`edge_detect.recording.packets`) has its frames encoded instead of its packets copied, so that a
            clip starts ``pre_s`` before its event and not up to a whole GOP earlier.
    """

    dir: Optional[str] = None
    pre_s: float = 5.0
    post_s: float = 5.0
    max_clip_s: float = 120.0
    on: Tuple[str, ...] = ("line_cross", "zone_enter")
    annotate: bool = False
    retain: RetainConfig = field(default_factory=RetainConfig)
    retention_interval_s: float = 60.0
    max_gop_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.max_gop_s > 0:
            raise ConfigError(f"record.max_gop_s: expected > 0 seconds, got {self.max_gop_s}")
        if not 0 <= self.pre_s <= 60:
            raise ConfigError(f"record.pre_s: expected 0..60 seconds, got {self.pre_s}")
        if not 0 <= self.post_s <= 600:
            raise ConfigError(f"record.post_s: expected 0..600 seconds, got {self.post_s}")
        if not self.max_clip_s > 0:
            raise ConfigError(f"record.max_clip_s: expected > 0, got {self.max_clip_s}")
        if not self.on:
            raise ConfigError("record.on: expected at least one event type (e.g. [line_cross]), got none")
        known = set(event_types()) | set(_OBJECT_START)
        for sel in self.on:
            want = sel.partition(":")[0]
            close = difflib.get_close_matches(want, sorted(known), n=1, cutoff=0.75)
            if want not in known and close:  # a typo of a known type (other types: third-party processors')
                raise ConfigError(f"record.on: unknown event type {want!r} (did you mean {close[0]!r}?)")

    def matches(self, event: Dict[str, Any]) -> bool:
        """Whether ``event`` (a JSON-ready event dict) starts or extends a clip."""
        etype = event.get("type")
        for sel in self.on:
            want, _, cls = sel.partition(":")
            if want in _OBJECT_START:
                ok = etype in _OBJECT_START
            else:
                ok = etype == want
            if ok and (not cls or event.get("class_name") == cls):
                return True
        return False


@dataclass(frozen=True)
class RecordedStream:
    """What the recorder needs to know of a source: id, URI (to remux from), whether it is a file, whether live."""

    source_id: str
    uri: str
    is_file: bool
    live: bool


class _SourceState:
    """One source's packets, planner, open clip and best frame."""

    def __init__(self, planner: ClipPlanner, packets: Any, remux: bool) -> None:
        self.planner = planner
        self.packets = packets
        self.remux = remux
        self.writer: Optional[ClipWriter] = None
        self.clip: Optional[Clip] = None
        self.path: Optional[Path] = None  # the open clip's file
        self.waiting = False  # the open clip waits for the stream's codec parameters
        self.events: List[Dict[str, Any]] = []
        self.best: Tuple[float, Optional[np.ndarray]] = (-1.0, None)
        self.last_t: Optional[float] = None
        self.wall_offset = 0.0  # Unix seconds - stream seconds, at the open clip's first event


class Recorder:
    """Clips around events (module doc).

    Args:
        config: :class:`RecordConfig`.
        streams: the sources of the run (more: :meth:`add_stream`).
        publish: ``publish(event, source_id)`` with each :class:`~edge_detect.types.ClipSaved` (on the recorder's
            thread; it must not block).
        annotate: ``f(result) -> BGR image`` with boxes drawn (used when ``config.annotate``; default: the
            result's own ``annotated`` image).
    """

    def __init__(self, config: RecordConfig, streams: Sequence[RecordedStream],
                 publish: Callable[[ClipSaved, str], None] = lambda event, source_id: None,
                 annotate: Optional[Callable[[Any], np.ndarray]] = None) -> None:
        if not config.dir:
            raise ConfigError("record.dir: expected the folder clips go to, got none")
        self.config = config
        self.root = Path(config.dir)
        self.streams = {s.source_id: s for s in streams}
        self.publish = publish
        self.annotate = annotate or (lambda result: result.annotated)
        self.error: Optional[str] = None
        self.clips_saved = 0
        self.deleted = 0
        self._states: Dict[str, _SourceState] = {}
        self._next_retention = 0.0

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Create the folder and open the live sources' recording connections (their pre-roll starts now)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stream in list(self.streams.values()):
            self.add_stream(stream)

    def add_stream(self, stream: RecordedStream) -> None:
        """Record ``stream`` too (a source added while the run goes on); a live one's recording connection opens
        now. Call before its first frame (on the recorder's thread)."""
        self.streams[stream.source_id] = stream
        if stream.live and not self.config.annotate and self.error is None:
            self._state(stream.source_id, None)

    def handle(self, result: Any) -> None:
        """One processed frame of any source (in order per source), with its events; results that bring no new
        frame (``result.events_only``) are skipped."""
        if self.error is not None or result.events_only:
            return
        try:
            self._handle(result)
        except (OSError, ValueError, RuntimeError) as exc:  # av.error.* derive from OSError/ValueError
            self._fail(exc)

    def close(self) -> None:
        """End of run: every open clip ends at its source's last frame; a last retention pass."""
        try:
            for sid, st in self._states.items():
                if self.error is None:
                    for clip in st.planner.flush(st.last_t):
                        self._finish_clip(sid, st, clip)
                st.packets.close()
                if st.writer is not None:
                    st.writer.close()
            if self.error is None:
                self._retention(force=True)
        except (OSError, ValueError, RuntimeError) as exc:
            self._fail(exc)

    # ------------------------------------------------------------------ per frame

    def _handle(self, result: Any) -> None:
        frame = result.frame
        stream = self.streams.get(frame.source_id)
        t = _clock(frame, stream)
        st = self._state(frame.source_id, frame.image)
        st.last_t = t
        if st.remux and (st.packets.unsupported or (st.clip is None and self._gop_too_long(frame.source_id, st))):
            st.packets.close()  # a live stream whose codec an mp4 cannot take as is, or keyframes too far apart
            st.packets, st.remux = EncodedFrames(self.config.pre_s + 10.0), False
            st.writer = None
        if st.remux:
            st.packets.advance(t)
        else:
            st.packets.add(self.annotate(result) if self.config.annotate else frame.image, t)
        for event in result.events:
            if self.config.matches(event):
                self._on_event(frame, st, event, t)
        if st.clip is not None:
            if st.writer is None:
                self._open_writer(frame.source_id, st)
            self._consider_best(st, result)
            self._write_until(st, min(t, st.clip.end))
        for clip in st.planner.advance(t):
            self._finish_clip(frame.source_id, st, clip)
        self._retention()

    def _gop_too_long(self, sid: str, st: _SourceState) -> bool:
        """Whether the copied packets' keyframes turned out further apart than ``max_gop_s`` (said once)."""
        reach = st.packets.ring.keyframe_reach_s
        if reach <= self.config.max_gop_s:
            return False
        LOGGER.info("recorder: %s: keyframes up to %.1f s apart (record.max_gop_s: %g): encoding the frames from "
                    "now on, so that clips start pre_s before their event", sid, reach, self.config.max_gop_s)
        return True

    def _on_event(self, frame: Any, st: _SourceState, event: Dict[str, Any], t: float) -> None:
        eid = str(event.get("id") or uuid.uuid4().hex)
        clip = st.planner.on_event(t, eid)
        st.events.append(event)
        if st.clip is not clip:  # a new clip: the previous one, if any, was closed by the planner
            for done in st.planner.closed():
                self._finish_clip(frame.source_id, st, done)
            st.clip = clip
            st.events = [event]
            st.best = (-1.0, None)
            st.wall_offset = float(frame.wall_time) - t
            st.path = clip_path(self.root, frame.source_id, frame.wall_time, eid)
            st.writer = None
            self._open_writer(frame.source_id, st)

    def _open_writer(self, sid: str, st: _SourceState) -> None:
        """Open the clip's file once the source's codec parameters are known (a live stream's recording connection
        may still be connecting: the clip then starts with what its ring holds when it is)."""
        assert st.path is not None
        st.writer = st.packets.open_writer(st.path)
        if st.writer is None and not st.waiting:
            LOGGER.warning("recorder: %s: no packets of the stream yet: the clip starts once they arrive", sid)
        st.waiting = st.writer is None

    def _write_until(self, st: _SourceState, until: float) -> None:
        writer, clip = st.writer, st.clip
        if writer is None or clip is None:
            return
        for packet in st.packets.ring.since(clip.start, after_seq=writer.last_seq, until=until):
            writer.write(packet)

    def _consider_best(self, st: _SourceState, result: Any) -> None:
        dets = result.detections
        if not len(dets):
            return
        score = float(np.max(dets.score))
        if score > st.best[0]:
            st.best = (score, self.annotate(result).copy())

    def _finish_clip(self, sid: str, st: _SourceState, clip: Clip) -> None:
        if st.clip is not clip:
            return
        if st.writer is None:  # the stream never delivered packets while the clip was open
            LOGGER.warning("recorder: %s: no packets of the stream during the clip of event %s: nothing recorded",
                           sid, clip.event_id)
            st.clip, st.waiting = None, False
            return
        self._write_until(st, clip.end)
        writer = st.writer
        writer.close()
        st.writer, st.clip = None, None
        thumb = writer.path.with_suffix(THUMB_SUFFIX)
        if st.best[1] is not None:
            _write_jpeg(thumb, st.best[1])
        start = writer.first_t if writer.first_t is not None else clip.start
        end = writer.end_t if writer.end_t is not None else clip.end
        self.clips_saved += 1
        off = st.wall_offset
        self.publish(ClipSaved(
            id=clip_id(self.root, writer.path), path=str(writer.path), start_time=round(start + off, 3), end_time=round(end + off, 3),
            start=round(start, 3), end=round(end, 3), duration_s=round(max(end - start, 0.0), 3),
            thumbnail=str(thumb) if st.best[1] is not None else None,
            events=[str(e.get("id")) for e in st.events if e.get("id")], trigger=clip.event_id,
            extra={"frames": writer.packets}), sid)

    # ------------------------------------------------------------------ setup, retention, failure

    def _state(self, sid: str, image: Optional[np.ndarray]) -> _SourceState:
        st = self._states.get(sid)
        if st is not None:
            return st
        stream = self.streams.get(sid) or RecordedStream(sid, "", False, False)
        keep_s = self.config.pre_s + 10.0
        packets, remux = None, False
        if not self.config.annotate and stream.uri and (stream.is_file or stream.live):
            codec = probe_codec(stream.uri) if stream.is_file else None
            reach = probe_keyframe_reach(stream.uri) if stream.is_file and codec in REMUX_CODECS else 0.0
            if reach > self.config.max_gop_s:
                LOGGER.info("recorder: %s: keyframes up to %.1f s apart (record.max_gop_s: %g): clips copied from it "
                            "would start up to that much too early", sid, reach, self.config.max_gop_s)
            elif stream.is_file and codec in REMUX_CODECS:
                packets, remux = FilePackets(stream.uri, keep_s), True
            elif stream.live and _is_network(stream.uri):
                packets, remux = LivePackets(stream.uri, keep_s, label=sid), True
        if packets is None:
            packets = EncodedFrames(keep_s)
        LOGGER.info("recorder: %s: %s", sid, "copying the source's packets (no re-encode)" if remux
                    else "encoding the frames (H.264)")
        st = self._states[sid] = _SourceState(
            ClipPlanner(self.config.pre_s, self.config.post_s, self.config.max_clip_s), packets, remux)
        return st

    def reader_cpu_s(self) -> float:
        """CPU seconds of the packet readers' own threads (live sources' demux-only connections)."""
        return sum(float(st.packets.cpu_s) for st in list(self._states.values()))

    def open_paths(self) -> set:
        """The clips being written now."""
        return {st.writer.path for st in self._states.values() if st.writer is not None}

    def _retention(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_retention:
            return
        self._next_retention = now + self.config.retention_interval_s
        retain = self.config.retain
        max_bytes = None if retain.max_gb is None else int(retain.max_gb * 1e9)
        doomed = plan_retention(scan_clips(self.root), self.open_paths(), retain.days, max_bytes)
        if doomed:
            self.deleted += delete_clips(doomed)
            LOGGER.info("recorder: retention deleted %d clip(s)", len(doomed))

    def _fail(self, exc: BaseException) -> None:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.error = f"recording stopped: {msg}"
        LOGGER.error("recorder: %s (detection and the other outputs go on)", self.error)
        for st in self._states.values():
            if st.writer is not None:
                try:
                    st.writer.close()
                except (OSError, ValueError, RuntimeError):
                    pass
                st.writer = None


def _clock(frame: Any, stream: Optional[RecordedStream]) -> float:
    """The frame's time on its source's stream clock: container time for files, capture wall time for live."""
    if stream is not None and stream.live:
        return float(frame.wall_time)
    if frame.pts_ms is not None:
        return float(frame.pts_ms) / 1000.0
    return float(frame.wall_time)


def _is_network(uri: str) -> bool:
    return uri.split("://", 1)[0].lower() in ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "tcp")


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    """Write a JPEG atomically (temporary name, then rename)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(buf.tobytes())
    os.replace(tmp, path)
