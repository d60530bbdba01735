"""The server's bounded in-memory store of events, fed by its subscription to the app's event bus.

Each stored event is the JSON of ``edge_detect/schemas/events.schema.json``: the event's own ``to_dict()`` with the
envelope filled in where the event lacks it (``schema``, ``id`` (uuid4 hex), per-source ``seq``, ``source``,
``frame``, ``wall_time``), plus ``snapshot_url`` / ``clip_url`` where the server can serve a picture or a clip of
it. The oldest events are dropped beyond ``capacity``; a small JPEG thumbnail of the event's frame is kept for the
newest ``thumbnails`` events (about 5-10 kB each).

Recording (clips): a recorder publishes ``clip_saved`` events on the bus, carrying ``clip`` (the MP4's path; the
typed event's ``path`` is read too), ``thumbnail`` (a JPEG's path) and ``events`` (the ids of the events the clip
covers); they are stored like any event and their files served by ``GET /events/{id}/clip.mp4`` and
``/snapshot.jpg``. The stored events a clip covers get its ``clip`` too, so ``/events/{id}/clip.mp4`` of a
``line_cross`` plays the clip around it. Clips written before this process started
(the recorder's files on disk) come in through a :class:`RecordingIndex` given to the store: its events are
merged into ``GET /events`` answers. No recorder: ``recordings=None``.
"""
from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.server.app_protocol import ResultLike

__all__ = ["EventStore", "RecordingIndex", "THUMBNAIL_TYPES", "event_file"]

LOGGER = logging.getLogger(__name__)

#: event types whose frame gets an in-memory thumbnail (object_update/object_new are too frequent to be worth it)
THUMBNAIL_TYPES = frozenset({"line_cross", "zone_enter", "zone_exit", "dwell", "clip_saved"})
_THUMB_WIDTH = 240


class RecordingIndex(Protocol):
    """The recorder's clips on disk, as events (hook for ``edge_detect`` recording; see module doc)."""

    def events(self, since: Optional[float], source: Optional[str], limit: int) -> List[Dict[str, Any]]:
        """``clip_saved`` event dicts (with ``id``, ``source``, ``wall_time``, ``clip`` and optionally
        ``thumbnail`` paths) newer than ``since`` (Unix seconds), of ``source`` (``None``: all), newest ``limit``."""


class EventStore:
    """Bounded store of the events of a run (see module doc). Thread-safe: :meth:`on_result` runs on a bus
    thread, the queries on the server's.

    Args:
        capacity: events kept (oldest dropped first).
        thumbnails: events whose frame thumbnail is kept in memory (0 = none).
        recordings: the recorder's clips on disk, or ``None``.
    """

    def __init__(self, capacity: int = 2000, thumbnails: int = 200,
                 recordings: Optional[RecordingIndex] = None) -> None:
        self._events: Deque[Dict[str, Any]] = deque(maxlen=int(capacity))
        self._by_id: Dict[str, Dict[str, Any]] = {}
        self._thumbs: "OrderedDict[str, bytes]" = OrderedDict()
        self._max_thumbs = int(thumbnails)
        self._seq: Dict[str, int] = {}
        self._cursor = itertools.count(1)
        self.last_cursor = 0
        self.recordings = recordings
        self.dropped = 0
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------- feeding

    def on_result(self, result: ResultLike) -> None:
        """Bus callback: store the events of one processed frame (and the thumbnail of its frame)."""
        events = list(result.events)
        if not events:
            return
        frame = result.frame
        thumb: Optional[bytes] = None
        for event in events:
            record = self._record(event.to_dict(), str(frame.source_id), int(frame.index), float(frame.wall_time))
            if self._max_thumbs and record["type"] in THUMBNAIL_TYPES and thumb is None:
                thumb = _thumbnail(result.annotated, record.get("xyxy"))
            self.add(record, thumb if record["type"] in THUMBNAIL_TYPES else None)

    def _record(self, data: Dict[str, Any], source: str, frame: int, wall_time: float) -> Dict[str, Any]:
        record = dict(data)
        record.setdefault("schema", 1)
        record.setdefault("source", source)
        record.setdefault("frame", frame)
        record.setdefault("wall_time", wall_time)
        return record

    def add(self, record: Dict[str, Any], thumbnail: Optional[bytes] = None) -> Dict[str, Any]:
        """Store one event dict (envelope completed, see module doc); returns the stored dict."""
        with self._lock:
            record = dict(record)
            record["id"] = str(record.get("id") or uuid.uuid4().hex)
            if record.get("type") == "clip_saved" and "clip" not in record and record.get("path"):
                record["clip"] = record["path"]  # the typed ClipSaved event names its file `path`
            if record.get("type") == "clip_saved" and record.get("clip"):
                for covered in record.get("events") or ():  # the events the clip covers play it too
                    if isinstance(covered, str) and covered in self._by_id:
                        self._by_id[covered]["clip"] = record["clip"]
            source = str(record.get("source", ""))
            if not isinstance(record.get("seq"), int):
                self._seq[source] = self._seq.get(source, 0) + 1
                record["seq"] = self._seq[source]
            record["_cursor"] = self.last_cursor = next(self._cursor)
            if len(self._events) == self._events.maxlen:
                old = self._events.popleft()
                self._by_id.pop(old["id"], None)
                self._thumbs.pop(old["id"], None)
                self.dropped += 1
            self._events.append(record)
            self._by_id[record["id"]] = record
            if thumbnail is not None:
                self._thumbs[record["id"]] = thumbnail
                while len(self._thumbs) > self._max_thumbs:
                    self._thumbs.popitem(last=False)
            return record

    # -------------------------------------------------------------------------------------------- queries

    def query(self, since: Optional[float] = None, types: Optional[Sequence[str]] = None,
              source: Optional[str] = None, limit: int = 100) -> List[Dict[str, Any]]:
        """The newest ``limit`` events (oldest first) with ``wall_time > since``, of one of ``types``, of
        ``source``; the recorder's clips merged in (deduplicated by id)."""
        with self._lock:
            found = [e for e in self._events if _match(e, since, types, source)]
        if self.recordings is not None and (not types or "clip_saved" in types):
            known = {e["id"] for e in found}
            for e in self.recordings.events(since, source, limit):
                if e.get("id") not in known:
                    found.append(self._record(e, str(e.get("source", "")), int(e.get("frame", 0)),
                                              float(e.get("wall_time", 0.0))))
            found.sort(key=lambda e: float(e.get("wall_time", 0.0)))
        return [self.public(e) for e in found[-int(limit):]]

    def after(self, cursor: int, limit: int = 200) -> Tuple[List[Dict[str, Any]], int]:
        """``(events stored after cursor, oldest first, at most limit; the cursor to ask with next time)``;
        start with cursor 0 (every stored event) or :attr:`last_cursor` (only new ones)."""
        with self._lock:
            newer = [e for e in reversed(self._events) if e["_cursor"] > cursor][:int(limit)]
            last = self.last_cursor
        return [self.public(e) for e in reversed(newer)], last

    def get(self, event_id: str) -> Optional[Dict[str, Any]]:
        """The stored event dict of ``event_id`` (with its file paths), or ``None``."""
        with self._lock:
            found = self._by_id.get(event_id)
        if found is None and self.recordings is not None:
            found = next((e for e in self.recordings.events(None, None, 100000) if e.get("id") == event_id), None)
        return found

    def thumbnail(self, event_id: str) -> Optional[bytes]:
        """The in-memory JPEG thumbnail of ``event_id``'s frame, or ``None``."""
        with self._lock:
            return self._thumbs.get(event_id)

    def public(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """``record`` as the API returns it: without internals, with ``snapshot_url`` / ``clip_url`` when
        servable."""
        out = {k: v for k, v in record.items() if not k.startswith("_")}
        base = f"/api/v1/events/{record['id']}"
        if record["id"] in self._thumbs or event_file(record, "thumbnail", "snapshot") is not None:
            out["snapshot_url"] = f"{base}/snapshot.jpg"
        if event_file(record, "clip") is not None:
            out["clip_url"] = f"{base}/clip.mp4"
        return out

    def stats(self) -> Dict[str, int]:
        """``{"stored", "dropped", "thumbnails"}``."""
        with self._lock:
            return {"stored": len(self._events), "dropped": self.dropped, "thumbnails": len(self._thumbs)}


def event_file(record: Dict[str, Any], *keys: str) -> Optional[Path]:
    """The first existing file named by ``record[key]`` for ``keys``, or ``None``."""
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value:
            path = Path(value)
            if path.is_file():
                return path
    return None


def _match(event: Dict[str, Any], since: Optional[float], types: Optional[Iterable[str]],
           source: Optional[str]) -> bool:
    if since is not None and float(event.get("wall_time", 0.0)) <= since:
        return False
    if types and event.get("type") not in types:
        return False
    return source is None or event.get("source") == source


def _thumbnail(image: np.ndarray, xyxy: Any = None) -> Optional[bytes]:
    """A ``_THUMB_WIDTH``-pixel-wide JPEG of ``image`` (BGR), with ``xyxy`` (original pixels) boxed."""
    if image is None or getattr(image, "ndim", 0) != 3:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, _THUMB_WIDTH / max(w, 1))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if isinstance(xyxy, (list, tuple)) and len(xyxy) == 4:
        p = [int(round(float(v) * scale)) for v in xyxy]
        cv2.rectangle(small, (p[0], p[1]), (p[2], p[3]), (0, 255, 255), 2)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return buf.tobytes() if ok else None
