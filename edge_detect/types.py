"""The data types that flow through every stage: :class:`Detections`, :class:`Frame`, :class:`LetterboxInfo`,
:class:`Result`, the typed :class:`Event` family (``line_cross``, ``zone_enter``...), and where the stream side
meets the outputs: the :class:`Sink` protocol, :class:`StreamInfo` and the :class:`RunContext` a sink is started
with. Nothing here imports ``edge_detect.stream`` or ``edge_detect.sinks``.

Conventions, everywhere in edge-detect:

* Boxes are ``xyxy`` = ``(x1, y1, x2, y2)`` with ``0 <= x1 <= x2`` and ``0 <= y1 <= y2``, float32, in
  **original-frame pixels** (the frame as captured, before letterboxing), unless a name says ``letterbox``.
* Images are BGR ``uint8`` arrays of shape ``(H, W, 3)`` (OpenCV order).
* ``class_id`` indexes the model's class names (COCO: 0..79).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import (TYPE_CHECKING, Any, Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple, Type,
                    Union, overload)

import numpy as np

__all__ = ["Detections", "Frame", "LetterboxInfo", "Result", "Event", "LineCross", "ZoneEnter", "ZoneExit", "Dwell",
           "ObjectNew", "ObjectStart", "ObjectUpdate", "ObjectEnd", "ClipSaved", "GenericEvent", "as_event",
           "event_types", "StreamInfo", "RunContext", "Sink"]

if TYPE_CHECKING:
    from edge_detect.events import Counts, EventBus

LOGGER = logging.getLogger(__name__)


def _check(cond: bool, what: str, expected: str, actual: Any) -> None:
    if not cond:
        raise ValueError(f"{what}: expected {expected}, got {actual}")


@dataclass(eq=False)
class Detections:
    """Detections of one image, the single type passed from postprocess to tracker to sinks.

    Attributes:
        xyxy: float32 ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in original-frame pixels.
        score: float32 ``(N,)`` confidence, ``objectness * class probability`` for YOLOv5.
        class_id: int32 ``(N,)`` class index.
        track_id: optional int64 ``(N,)`` track identity assigned by a tracker (-1 = unassigned).
        data: extra per-box fields, each an array whose first axis has length ``N`` (processors attach their
            results here, e.g. ``data["anchor_xy"]``); indexing a :class:`Detections` indexes these too.
        metadata: per-frame fields that are not per box (e.g. ``metadata["events"]``, the list of
            :class:`Event` objects the processors returned); shared, not indexed.

    Arrays are converted to the dtypes above on creation; shapes are validated and a mismatch raises
    ``ValueError`` saying expected vs actual.
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    track_id: Optional[np.ndarray] = None
    data: Dict[str, np.ndarray] = field(default_factory=dict)
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4) if np.size(self.xyxy) == 0 \
            else np.asarray(self.xyxy, dtype=np.float32)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        _check(self.xyxy.ndim == 2 and self.xyxy.shape[1] == 4, "Detections.xyxy", "shape (N, 4)",
               self.xyxy.shape)
        n = self.xyxy.shape[0]
        _check(self.score.shape == (n,), "Detections.score", f"shape ({n},)", self.score.shape)
        _check(self.class_id.shape == (n,), "Detections.class_id", f"shape ({n},)", self.class_id.shape)
        if self.track_id is not None:
            self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            _check(self.track_id.shape == (n,), "Detections.track_id", f"shape ({n},)", self.track_id.shape)
        for key, value in list(self.data.items()):
            value = np.asarray(value)
            _check(value.ndim >= 1 and value.shape[0] == n, f"Detections.data[{key!r}]", f"first axis {n}",
                   value.shape)
            self.data[key] = value

    @classmethod
    def empty(cls) -> "Detections":
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def from_array(cls, rows: np.ndarray) -> "Detections":
        """Build from YOLOv5-style rows ``(N, 6)`` = ``[x1, y1, x2, y2, score, class]``."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        return cls(rows[:, :4], rows[:, 4], rows[:, 5].round().astype(np.int32))

    def to_array(self) -> np.ndarray:
        """float32 ``(N, 6)`` rows ``[x1, y1, x2, y2, score, class]``."""
        return np.concatenate(
            [self.xyxy, self.score[:, None], self.class_id[:, None].astype(np.float32)], axis=1
        ) if len(self) else np.zeros((0, 6), np.float32)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> "Detections":
        """Select with an int, slice, boolean mask or index array; always returns ``Detections``."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index],
            self.score[index],
            self.class_id[index],
            None if self.track_id is None else self.track_id[index],
            {k: v[index] for k, v in self.data.items()},
            self.metadata,
        )

    def __iter__(self) -> Iterator["Detections"]:
        for i in range(len(self)):
            yield self[i]

    def to_records(self, names: Optional[Sequence[str]] = None, ndigits: int = 2) -> list:
        """JSON-ready list of ``{"xyxy", "score", "class_id", "class_name"[, "track_id"]}`` dicts."""
        out = []
        for i in range(len(self)):
            cid = int(self.class_id[i])
            rec = {
                "xyxy": [round(float(v), ndigits) for v in self.xyxy[i]],
                "score": round(float(self.score[i]), 5),
                "class_id": cid,
                "class_name": names[cid] if names is not None and 0 <= cid < len(names) else str(cid),
            }
            if self.track_id is not None:
                rec["track_id"] = int(self.track_id[i])
            out.append(rec)
        return out


@dataclass(frozen=True)
class LetterboxInfo:
    """How an original frame was mapped into the network input (to undo it on the boxes).

    Attributes:
        orig_shape: ``(h, w)`` of the original frame in pixels.
        input_shape: ``(h, w)`` of the letterboxed image (the network input size).
        ratio: scale factor applied to the original frame (same on both axes).
        pad: ``(left, top)`` padding in letterbox pixels, as fractional halves (YOLOv5's ``dw, dh``).
    """

    orig_shape: Tuple[int, int]
    input_shape: Tuple[int, int]
    ratio: float
    pad: Tuple[float, float]

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` boxes from letterbox pixels to original pixels, clipped to the frame.

        Args:
            xyxy: float ``(N, 4)`` boxes in letterbox pixels.

        Returns:
            float32 ``(N, 4)`` boxes in original-frame pixels, clipped to ``[0, w] x [0, h]``.
        """
        from edge_detect.boxes import scale_boxes

        return scale_boxes(np.asarray(xyxy, dtype=np.float32).reshape(-1, 4), self.ratio, self.pad,
                           clip_hw=self.orig_shape)


@dataclass(eq=False)
class Frame:
    """One captured frame plus where and when it came from.

    Attributes:
        image: BGR uint8 ``(H, W, 3)``.
        source_id: the id of the source that produced it (``"0"``, ``"cam1"``, a file stem...).
        index: 0-based index of the frame within its source (counting every frame read, decoded or not).
        pts_ms: presentation timestamp in milliseconds when the container gives one, else ``None``.
        capture_time: ``time.perf_counter()`` when the frame left the decoder (start of glass-to-glass).
        wall_time: Unix time in seconds at capture.
        timings: per-stage durations in milliseconds, filled by the pipeline as the frame travels.
        path: the image file the frame was read from (image sources), else ``None``.
        device_image: optional handle to the same picture already on an accelerator (e.g. a CUDA tensor or buffer
            decoded by the GPU), set by a source that decodes there; owned by the source and valid for the
            frame's life. A detector whose ``input_device`` is not ``"cpu"`` is given it instead of ``image``;
            ``image`` stays the host copy for drawing and recording.
        skip_inference: set by the batcher's gate hook (:mod:`edge_detect.stream.batcher`): the frame skipped the
            backend and reaches the processors with empty detections (``metadata["inferred"] = False``).
    """

    image: np.ndarray
    source_id: str = "0"
    index: int = 0
    pts_ms: Optional[float] = None
    capture_time: float = 0.0
    wall_time: float = 0.0
    timings: dict = field(default_factory=dict)
    path: Optional[str] = None
    device_image: Any = None
    skip_inference: bool = False

    @property
    def shape(self) -> Tuple[int, int]:
        """``(h, w)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(eq=False)
class Result:
    """One processed frame handed to every sink.

    Attributes:
        frame: the captured :class:`Frame` (BGR ``uint8 (H, W, 3)``, ids, timestamps, stage timings).
        detections: :class:`Detections` in original-frame pixels (``track_id`` set when tracking; events of the
            frame in ``detections.metadata["events"]``).
        names: class names, index = class id.
        fps: current processing rate of the run (frames/s) for overlays.
        final: ``True`` for the end-of-source result the pipeline emits when processors return final events
            (``finish``): ``frame`` is the source's last frame again, ``detections`` are empty and carry those
            events. Image sinks (video, display, preview) skip it; JSONL writes it.
        emitted: ``True`` for a result carrying events a sink emitted into the run (:meth:`RunContext.emit`, e.g.
            the recorder's ``clip_saved``): ``frame`` is the source's latest processed frame again, ``detections``
            are empty and carry those events. Like :attr:`final` it brings no new image (:attr:`events_only`).

    The JSON line of :meth:`record`::

        {"source": "vtest", "frame": 12, "pts_ms": 1200.0, "wall_time": 1718000000.123,
         "detections": [{"xyxy": [x1, y1, x2, y2], "score": 0.87, "class_id": 0, "class_name": "person"}],
         "events": []}

    ``xyxy`` is in original-frame pixels; ``wall_time`` is Unix seconds at capture; ``track_id`` is added to a
    detection when a tracker runs; ``events`` is always present (a list of event dicts, possibly empty). The
    end-of-source line (:attr:`final`) repeats the source's last frame number with no detections, only the events
    returned by the processors' ``finish()`` (e.g. ``object_end`` of the tracks still open), and ``"final": true``.
    A line of events a sink emitted (:attr:`emitted`: ``clip_saved``) repeats the source's latest frame number with
    no detections and ``"emitted": true``.
    A frame the detector did not run on (motion gating, a detect rate: :attr:`Frame.skip_inference`) says
    ``"inferred": false``; its detections are the tracker's predicted boxes (none without a tracker). A frame the
    detector ran on in regions (region inference) has ``"regions": [[x1, y1, x2, y2], ...]``, the crops in
    original-frame pixels.
    """

    frame: Frame
    detections: Detections
    names: Sequence[str] = ()
    fps: float = 0.0
    final: bool = False
    emitted: bool = False
    _annotated: Optional[np.ndarray] = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def events_only(self) -> bool:
        """No new image: an end-of-source result (:attr:`final`) or events a sink emitted (:attr:`emitted`). Image
        sinks (video, display, preview, image files) skip these; JSONL and the event sinks write their events."""
        return self.final or self.emitted

    @property
    def events(self) -> List["Event"]:
        """The frame's events, typed (``detections.metadata["events"]``, each through :func:`as_event`; empty list
        when none)."""
        return [as_event(e) for e in self.detections.metadata.get("events", ())]

    @property
    def annotated(self) -> np.ndarray:
        """The frame with boxes, labels, scores and the FPS overlay drawn (a copy; computed once, shared by the
        sinks' threads)."""
        with self._lock:
            if self._annotated is None:
                from edge_detect.annotate import render

                self._annotated = render(self.frame.image, self.detections, self.names, self.fps)
            return self._annotated

    def record(self) -> Dict[str, Any]:
        """The JSON-ready line of this frame (see class doc)."""
        return {
            "source": self.frame.source_id,
            "frame": int(self.frame.index),
            "pts_ms": None if self.frame.pts_ms is None else round(float(self.frame.pts_ms), 3),
            "wall_time": round(float(self.frame.wall_time), 6),
            "detections": self.detections.to_records(self.names),
            "events": [e.to_dict() for e in self.events],
            **({"inferred": False} if self.frame.skip_inference else {}),
            **({"regions": self.detections.metadata["regions"]} if "regions" in self.detections.metadata else {}),
            **({"final": True} if self.final else {}),
            **({"emitted": True} if self.emitted else {}),
        }


# ------------------------------------------------------------------------------------------------- events

_EVENT_CLASSES: Dict[str, Type["Event"]] = {}


def _optional() -> Any:
    """An optional event field: ``None`` by default, and left out of :meth:`Event.to_dict` while ``None``."""
    return field(default=None, metadata={"omit_if_none": True})


@dataclass(frozen=True, eq=False, kw_only=True)
class Event(Mapping):
    """One event of one frame of one source: the base of the typed event family.

    Processors return events of these types (appended to ``detections.metadata["events"]``); the pipeline turns
    any plain dict a third-party processor appended into one (:func:`as_event`) and publishes them with their
    :class:`Result` on the bus (:mod:`edge_detect.events`). Fields are those of the JSON Schema of events
    (``edge_detect/schemas/events.schema.json``) minus the envelope (``schema``, ``seq``, ``source``), which the
    event sinks add.

    **Ids, assigned once.** The pipeline gives every event its :attr:`id` (uuid4 hex, :meth:`with_id`) when it
    publishes it: after the source's processor chain (and its ``finish``), and when a sink emits one into the run
    (:meth:`RunContext.emit`). Every output then carries the same id for the same event: the JSONL line's
    ``events``, the MQTT / webhook envelope (:meth:`~edge_detect.sinks.events.EventBuilder.envelope` keeps an
    existing id), the dashboard's event store, and the recorder's ``clip_saved`` (``events``: the ids it covers).

    An event reads like the dict it serializes to (``event["type"]``, ``event.get("track_id")``: a read-only
    :class:`~collections.abc.Mapping` over :meth:`to_dict`), so code written against event dicts keeps working,
    and compares equal to that dict.

    Attributes:
        id: uuid4 hex, set by the pipeline when the event is published (``None`` before).
        frame: index of the frame in its source (``None``: the frame the event is published with).
        wall_time: Unix seconds when that frame was captured (``None``: the frame's).
        extra: further fields, serialized after the typed ones.
    """

    TYPE: ClassVar[str] = ""
    id: Optional[str] = None
    frame: Optional[int] = None
    wall_time: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("TYPE"):
            _EVENT_CLASSES[cls.TYPE] = cls

    @property
    def type(self) -> str:
        """The event type (``"line_cross"``...)."""
        return self.TYPE

    def with_id(self) -> "Event":
        """This event when it has an :attr:`id`, else a copy with a new one (uuid4 hex)."""
        return self if self.id else dataclasses.replace(self, id=uuid.uuid4().hex)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON-ready dict: ``type``, ``id`` when set, the typed fields in declaration order (optional ones only
        when set), ``frame`` and ``wall_time`` when set, then :attr:`extra`."""
        out: Dict[str, Any] = {"type": self.type}
        if self.id:
            out["id"] = self.id
        for f in fields(self):
            if f.name not in ("id", "frame", "wall_time", "extra"):
                value = getattr(self, f.name)
                if value is not None or not f.metadata.get("omit_if_none"):
                    out[f.name] = value
        if self.frame is not None:
            out["frame"] = self.frame
        if self.wall_time is not None:
            out["wall_time"] = self.wall_time
        out.update(self.extra)
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    @staticmethod
    def from_dict(data: Mapping) -> "Event":
        """The typed event of a dict (its ``type`` picks the class; fields beyond the class's go to ``extra``); a
        :class:`GenericEvent` keeping the dict as it is when the type is unknown or a typed field is missing."""
        cls = _EVENT_CLASSES.get(str(data.get("type")))
        if cls is None:
            return GenericEvent(data=dict(data))
        names = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "type"}
        try:
            return cls(**kwargs, extra=extra)
        except TypeError:  # a typed field is missing: keep what was given
            return GenericEvent(data=dict(data))


def as_event(event: Any) -> Event:
    """``event`` itself when it is an :class:`Event`, else the typed event of a mapping (:meth:`Event.from_dict`).

    Raises:
        TypeError: neither an Event nor a mapping.
    """
    if isinstance(event, Event):
        return event
    if isinstance(event, Mapping):
        return Event.from_dict(event)
    raise TypeError(f"event: expected an edge_detect.types.Event or a dict with a 'type', got {type(event).__name__}")


def event_types() -> List[str]:
    """The types of the typed event classes (``line_cross``, ``zone_enter``...)."""
    return list(_EVENT_CLASSES)


@dataclass(frozen=True, eq=False)
class LineCross(Event):
    """A track crossed a counting line (:mod:`edge_detect.stream.processors.lines`): ``direction`` ``"in"`` (from
    the left of the directed line to its right, as seen in the image) or ``"out"``; the object's speed then
    (pixels per second of stream time, from the tracker; ``speed_m_s`` with a ground scale ``meters_per_px``),
    when known."""

    TYPE: ClassVar[str] = "line_cross"
    line: str
    direction: str
    track_id: int
    class_name: str
    speed_px_s: Optional[float] = _optional()
    speed_m_s: Optional[float] = _optional()


@dataclass(frozen=True, eq=False)
class ZoneEnter(Event):
    """A track entered a zone (:mod:`edge_detect.stream.processors.zones`), at ``speed_px_s`` (``speed_m_s``) when
    known (as :class:`LineCross`)."""

    TYPE: ClassVar[str] = "zone_enter"
    zone: str
    track_id: int
    class_name: str
    speed_px_s: Optional[float] = _optional()
    speed_m_s: Optional[float] = _optional()


@dataclass(frozen=True, eq=False)
class _ZoneTime(Event):
    """A track and a time spent in a zone (the fields of :class:`ZoneExit` and :class:`Dwell`), and the object's
    speed at its last sighting when known (as :class:`LineCross`)."""

    zone: str
    track_id: int
    class_name: str
    dwell_s: float
    speed_px_s: Optional[float] = _optional()
    speed_m_s: Optional[float] = _optional()


class ZoneExit(_ZoneTime):
    """A track left a zone after ``dwell_s`` seconds of stream time inside."""

    TYPE: ClassVar[str] = "zone_exit"


class Dwell(_ZoneTime):
    """A track has stayed ``dwell_s`` seconds in a zone and is still inside (for dwell alarms; no built-in
    processor emits it yet)."""

    TYPE: ClassVar[str] = "dwell"


@dataclass(frozen=True, eq=False)
class ObjectNew(Event):
    """A tracker confirmed a new track: its class, score and box ``xyxy`` (original-frame pixels); ``entered``:
    the frame edge it came in through (``left``/``top``/``right``/``bottom``, ``""`` = it appeared inside the
    picture), when the tracker tells."""

    TYPE: ClassVar[str] = "object_new"
    track_id: int
    class_name: str
    score: float
    xyxy: List[float]
    entered: Optional[str] = _optional()


ObjectStart = ObjectNew  # the lifecycle name; the JSON type stays "object_new" (schema 1)


@dataclass(frozen=True, eq=False)
class ObjectUpdate(Event):
    """A track still present (throttled by the event sinks): latest score and box, when it was first seen."""

    TYPE: ClassVar[str] = "object_update"
    track_id: int
    class_name: str
    score: float
    xyxy: List[float]
    first_seen: float


@dataclass(frozen=True, eq=False)
class ObjectEnd(Event):
    """A tracker dropped a track (or its source ended): first/last sighting (Unix seconds and frames), best
    score; when the tracker tells, ``dwell_s`` (seconds of stream time from the first to the last sighting) and
    the frame edges it came in and left through (``entered`` / ``exited``: ``left``/``top``/``right``/``bottom``,
    ``""`` = inside the picture)."""

    TYPE: ClassVar[str] = "object_end"
    track_id: int
    class_name: str
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    best_score: float
    dwell_s: Optional[float] = _optional()
    entered: Optional[str] = _optional()
    exited: Optional[str] = _optional()


@dataclass(frozen=True, eq=False)
class ClipSaved(Event):
    """A recorder closed a clip (:mod:`edge_detect.recording`).

    Attributes:
        path: the clip (``DIR/{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4``).
        start_time, end_time: the Unix seconds its first and last frame show.
        start, end: the same on the source's own clock: the file's presentation time in seconds (files), Unix
            seconds (live sources).
        duration_s: ``end - start``.
        thumbnail: a JPEG of the clip's best frame (highest detection score), or ``None``.
        events: the ids of the events the clip covers, in order.
        trigger: the id of the event that opened the clip (the first of :attr:`events`), or ``None``.
    """

    TYPE: ClassVar[str] = "clip_saved"
    path: str
    start_time: float
    end_time: float
    start: Optional[float] = None
    end: Optional[float] = None
    duration_s: Optional[float] = None
    thumbnail: Optional[str] = None
    events: List[str] = field(default_factory=list)
    trigger: Optional[str] = None


@dataclass(frozen=True, eq=False)
class GenericEvent(Event):
    """An event of a type without a class (a third-party processor's dict), kept exactly as given."""

    data: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id is None and self.data.get("id"):
            object.__setattr__(self, "id", str(self.data["id"]))

    @property
    def type(self) -> str:
        return str(self.data.get("type", "unknown"))

    def to_dict(self) -> Dict[str, Any]:
        out = dict(self.data)
        if self.id and "id" not in out:
            out["id"] = self.id
        return out


# ------------------------------------------------------------------------------------------------- sinks


@dataclass(frozen=True)
class StreamInfo:
    """What a sink knows about a source before frames arrive.

    Attributes:
        source_id: the id stamped on the source's frames.
        fps: nominal frame rate, or ``None``.
        live: a camera / stream: frames are timed by their capture time, not by the nominal rate.
        uri: the source string with credentials masked (``""`` when not known).
        kind: ``file``, ``images``, ``camera``, ``stream``, ``gstreamer``... (``""`` when not known).
        expected_frames: frames announced by the container, else ``None``.
    """

    source_id: str
    fps: Optional[float] = None
    live: bool = False
    uri: str = ""
    kind: str = ""
    expected_frames: Optional[int] = None


class RunContext(Sequence[StreamInfo]):
    """What a sink may read of its run, handed to :meth:`Sink.start` (read-only; the sink never sees the pipeline).

    A sequence of the run's :class:`StreamInfo` (``for s in context``, ``len(context)``: the sources at start;
    sources added later arrive with frames of an unknown id), plus:

    Attributes:
        names: the model's class names (index = class id).
        model: the model's name or path (``""`` when not known).
        bus: the run's :class:`~edge_detect.events.EventBus` (subscribe for more than ``write``; its ``counts``).
        stats: a function returning a snapshot of the run's figures: ``{"sources": {id: {"read", "processed",
            "dropped", "corrupt", "reconnects", ...}}, "sinks": {name: {"queued", "sent", "dropped", "failed"}}}``.
        standalone: a context made for a sink used outside a pipeline (:meth:`of` a plain list): nobody publishes
            on its bus, so a sink that reads counts feeds them itself.

    A sink may also **emit events into the run** (:meth:`emit`: the recorder's ``clip_saved``), and look up a source
    that was added after the run started (:meth:`stream`).
    """

    def __init__(self, streams: Sequence[StreamInfo] = (), names: Sequence[str] = (), bus: Optional["EventBus"] = None,
                 stats: Optional[Callable[[], Dict[str, Any]]] = None, model: str = "",
                 standalone: bool = False, emit: Optional[Callable[["Event", str], None]] = None,
                 lookup: Optional[Callable[[str], Optional[StreamInfo]]] = None) -> None:
        if bus is None:
            from edge_detect.events import EventBus

            bus = EventBus()
        self._streams = tuple(streams)
        self.names = tuple(names)
        self.bus = bus
        self.model = str(model)
        self.standalone = bool(standalone)
        self._stats = stats
        self._emit = emit
        self._lookup = lookup

    @classmethod
    def of(cls, value: Union["RunContext", Sequence[StreamInfo], None]) -> "RunContext":
        """``value`` itself, or a standalone context around a plain list of streams."""
        if isinstance(value, RunContext):
            return value
        return cls(list(value or ()), standalone=True)

    @property
    def counts(self) -> "Counts":
        """The run's :class:`~edge_detect.events.Counts` (``bus.counts``)."""
        return self.bus.counts

    @property
    def streams(self) -> Tuple[StreamInfo, ...]:
        return self._streams

    def stats(self) -> Dict[str, Any]:
        """The run's figures now (see class doc; empty sections when the context has no stats function)."""
        if self._stats is None:
            return {"sources": {}, "sinks": {}}
        return self._stats()

    def emit(self, event: Union["Event", Mapping], source_id: str) -> None:
        """Hand an event of ``source_id`` to the run, from any thread; returns at once (never waits).

        The pipeline gives it its id (:meth:`Event.with_id`) and delivers it on its sinks stage between two frames:
        published on the bus (the counts, the dashboard's event store, every subscriber) and written to every sink
        in a :class:`Result` with :attr:`Result.emitted` set (a JSONL line, an MQTT / webhook event...). A sink
        that emits sets :attr:`Sink.emits`: at the end of the run it is closed before the others, and what it
        emitted while closing is still delivered to them. Without a pipeline (a standalone context) the event is
        dropped (logged at debug level).

        Raises:
            TypeError: ``event`` is neither an :class:`Event` nor a mapping with a ``type``.
        """
        ev = as_event(event)
        if self._emit is None:
            LOGGER.debug("no run to emit into: %s event of %s dropped", ev.type, source_id)
            return
        self._emit(ev, str(source_id))

    def stream(self, source_id: str) -> Optional[StreamInfo]:
        """The :class:`StreamInfo` of ``source_id``: one of the sources at start, or one added later (when the run
        knows it), else ``None``."""
        for s in self._streams:
            if s.source_id == source_id:
                return s
        return self._lookup(source_id) if self._lookup is not None else None

    @overload
    def __getitem__(self, index: int) -> StreamInfo: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StreamInfo]: ...

    def __getitem__(self, index: Any) -> Any:
        return self._streams[index]

    def __len__(self) -> int:
        return len(self._streams)


class Sink:
    """Base class of sinks: where processed frames go (registry and specs: :mod:`edge_detect.sinks.base`).

    Life cycle: ``start(context)`` once before the first frame (a :class:`RunContext`: the sources, the model's
    names, the event bus and counts, a stats function), ``write(result)`` per processed frame in order (and the
    end-of-source results, ``result.final``), ``close()`` exactly once (also on Ctrl-C / SIGTERM). ``write`` must
    return at once: no file or network I/O on the caller's thread (derive from
    :class:`~edge_detect.sinks.threaded.ThreadedSink` for that). A sink sets ``stop_requested`` to end the run
    (the display's q / Esc). An exception raised by ``write`` ends the run with an error; the other sinks are
    still closed.

    Attributes:
        error: ``None`` while the sink works. A sink that stopped working but lets the run go on (**degraded**:
            the recorder on a full disk) sets it to one line saying why; the run summary lists it in
            ``sink_errors`` (and ``degraded``), the run and the other outputs go on, and the CLI's exit code stays
            0. (A sink whose failure must end the run raises from ``write`` instead.)
        emits: the sink emits events into the run (:meth:`RunContext.emit`); it is closed before the others.
    """

    name = "sink"
    stop_requested = False
    error: Optional[str] = None
    emits: bool = False

    def start(self, context: Union[RunContext, Sequence[StreamInfo]]) -> None:
        """Called once before the first ``write`` (a plain list of streams is accepted: :meth:`RunContext.of`)."""

    def write(self, result: Result) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release; called exactly once."""

    def abandon(self) -> None:
        """Stop waiting for deliveries: a ``close`` in progress or to come gives up what is still queued for the
        network (counted ``failed``) instead of waiting out its timeouts; files are still finalized. Called from a
        signal handler (the second Ctrl-C / SIGTERM of ``run``): set flags only, take no lock. Default: nothing."""

    def counters(self) -> Dict[str, Dict[str, int]]:
        """Delivery counters per output name, ``{name: {"queued", "sent", "dropped", "failed"}}``; ``{}`` for a
        sink that neither queues nor drops. Merged into the run summary's ``sinks`` section."""
        return {}

    def thread_cpu_ms(self) -> Dict[str, float]:
        """CPU milliseconds the sink's own threads spent so far, by entry name (``{"record": ms}``); ``{}`` (the
        default) for a sink that does not measure them. Each entry goes into the run summary's
        ``cpu_ms_per_frame`` (per processed frame) and is no longer counted under ``inference``."""
        return {}

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
