"""The skeleton that line and zone counters share: :class:`RegionCounter`.

A region counter follows one anchor point of every tracked box (``track_id >= 1``) against named regions (lines,
zones), per source. The base owns what does not depend on the kind of region: option checks, the common and
per-source region definitions (bound on the first frame), :meth:`clone`, the anchor points computed once per
anchor kind and frame, the class filter, **predicted boxes** (a frame the detector did not run on,
``metadata["inferred"] is False``, carries the tracker's predictions: they keep a track known, never step it, so
a crossing or an entry is only ever decided on observed boxes), forgetting tracks (ended by an ``object_end`` of the same frame or
unseen for ``forget_after_s`` of stream time), the declaration of the regions to the run's
:class:`~edge_detect.events.Counts`, the :attr:`tally` of its own events (for the live overlay) and the speed
fields of the events (:meth:`_speed`, :meth:`_speed_fields`: the tracker's ``data["speed_px_s"]`` of the object,
and in metres per second with the region's ``meters_per_px``, else the processor's, else the tracker's
``data["speed_m_s"]``).

A subclass gives the region kind (``KIND``, ``SPECS``: the spec parser), the geometry of a spec
(:meth:`_geometry`), the anchor's signed distance to a region (:meth:`_distance`), one track's step
(:meth:`_step`), what forgetting a track does (:meth:`_forget`) and the live state drawn on the frame
(:meth:`_live`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.events import Counts
from edge_detect.stream.geometry import ANCHORS, anchor_points
from edge_detect.stream.processors._common import check_scale, class_allowed, media_time, resolve_class_filter
from edge_detect.types import Detections, Event, Frame

__all__ = ["RegionCounter", "Region", "SpeedRef"]

LOGGER = logging.getLogger(__name__)

RegionSpecs = Union[Mapping[str, Any], Sequence[Any]]
#: a frame's (``speed_px_s``, ``speed_m_s``) columns (lists, ``None`` when absent) and a row in them
SpeedRef = Tuple[Tuple[Optional[list], Optional[list]], int]


@dataclass
class Region:
    """One configured region of a counter: its spec, geometry (a segment or a polygon, source-frame pixels),
    anchor, class filter, when each track was last seen, and the kind's per-track state. ``primed`` turns true
    after the region's first frame: the tracks of that frame were there before the region (a region added or
    rebuilt while running), so their past is not replayed against it."""

    spec: Any
    geometry: np.ndarray
    anchor: str
    classes: Optional[Set[Union[int, str]]]
    last_seen: Dict[int, float] = field(default_factory=dict)
    state: Dict[int, Any] = field(default_factory=dict)
    primed: bool = False


class RegionCounter:
    """Base of :class:`~edge_detect.stream.processors.lines.LineCounter` and
    :class:`~edge_detect.stream.processors.zones.ZoneCounter` (see module doc); one instance per source.

    Args:
        regions: the regions of every source (the subclass's spec forms).
        source_regions: ``{source_id: regions}``: more regions for one source only (a region of the same name
            replaces the common one), picked from the first frame's ``source_id``.
        anchor: default box anchor (:data:`~edge_detect.stream.geometry.ANCHORS`).
        classes: default class filter for regions without their own (names or ids).
        names: class names of the model.
        forget_after_s: drop the state of tracks unseen this long (stream seconds).
        fps: stream frame rate for the stream clock (``None`` = timestamps).
        options: the subclass's constructor arguments (for :meth:`clone`).
        distances: the subclass's options that must be ``>= 0`` (name -> value), checked here.
        meters_per_px: ground scale of the regions without their own, for the events' ``speed_m_s``.

    Raises:
        ConfigError: bad geometry, anchor, class names, negative distances or scale; no region at all.
    """

    name: ClassVar[str] = "regions"
    KIND: ClassVar[str] = "region"  # "line" / "zone": messages and the Counts kind (+ "s")
    SPECS: ClassVar[Callable[[RegionSpecs], List[Any]]]

    def __init__(self, regions: RegionSpecs, source_regions: Optional[Mapping[str, Any]], anchor: str,
                 classes: Optional[Sequence[Union[int, str]]], names: Sequence[str], forget_after_s: float,
                 fps: Optional[float], options: Dict[str, Any], distances: Mapping[str, float],
                 meters_per_px: Optional[float] = None) -> None:
        kinds = f"{self.KIND}s"
        self.meters_per_px = check_scale(meters_per_px, f"{kinds} meters_per_px")
        if anchor not in ANCHORS:
            raise ConfigError(f"{kinds} anchor: expected one of {', '.join(ANCHORS)}, got {anchor!r}")
        for what, value in distances.items():
            if not value >= 0:
                raise ConfigError(f"{kinds} {what}: expected >= 0, got {value}")
        self._options = dict(options)
        self.names = tuple(names)
        self.forget_after_s, self.fps = float(forget_after_s), fps
        self._anchor = anchor
        self._default_cls = resolve_class_filter(classes, self.names, kinds)
        self._regions: List[Region] = [self._make(spec) for spec in type(self).SPECS(regions)]
        self._source_regions = {str(sid): [self._make(spec) for spec in type(self).SPECS(v)]
                                for sid, v in (source_regions or {}).items()}
        if not self._regions and not any(self._source_regions.values()):
            raise ConfigError(f"{kinds}: expected at least one {self.KIND}, got none")
        self._bound = not self._source_regions
        self._sid = ""
        self._now = 0.0
        self._detections: Optional[Detections] = None  # this frame's, and the row of each track id in them,
        self._rows: Dict[int, int] = {}  # for the per-row data a subclass's step reads (:meth:`_row`)
        self._speeds: Tuple[Optional[list], Optional[list]] = (None, None)  # this frame's speed_px_s, speed_m_s
        self.tally = Counts()  # this counter's own events (live overlay, standalone use); a run counts on the bus

    # ------------------------------------------------------------------------------------------- set-up

    def _geometry(self, spec: Any) -> np.ndarray:
        """The region's geometry from its spec (raises ConfigError)."""
        raise NotImplementedError

    def _make(self, spec: Any) -> Region:
        cls = resolve_class_filter(spec.classes, self.names, f"{self.KIND} {spec.name}") \
            if spec.classes is not None else self._default_cls
        return Region(spec, self._geometry(spec), spec.anchor or self._anchor, cls)

    def _bind(self, source_id: str) -> None:
        """Add the regions of ``source_id`` (once, on the first frame)."""
        extra = self._source_regions.get(str(source_id), [])
        names = {r.spec.name for r in extra}
        self._regions = [r for r in self._regions if r.spec.name not in names] + extra
        self._bound = True

    def clone(self) -> "RegionCounter":
        """Same regions and settings, fresh state."""
        return type(self)(**self._options)

    def regions(self, source_id: str) -> Dict[str, List[str]]:
        """``{"lines"|"zones": [names]}`` counted on ``source_id`` (the pipeline declares them to the run's
        :class:`~edge_detect.events.Counts`, so they are listed before they count)."""
        extra = self._source_regions.get(str(source_id), [])
        taken = {r.spec.name for r in extra}
        names = [r.spec.name for r in self._regions if r.spec.name not in taken] + [r.spec.name for r in extra]
        return {f"{self.KIND}s": names}

    def _region(self, name: str) -> Region:
        for r in self._regions:
            if r.spec.name == name:
                return r
        raise KeyError(f"{self.KIND} {name!r}: expected one of {[r.spec.name for r in self._regions]}")

    def summary(self) -> Dict[str, Any]:
        """Nothing: the run's counts are kept by :class:`~edge_detect.events.Counts` from the events."""
        return {}

    def finish(self, frame: Frame) -> List[Event]:
        """End of the source: nothing to flush (events are reported when they happen)."""
        return []

    # ------------------------------------------------------------------------------------------- per frame

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """Follow the tracked anchors of one frame (``xyxy`` original-frame pixels) against every region.

        Returns:
            ``detections`` itself, with this counter's events appended to ``metadata["events"]`` and its live
            state in ``metadata[KIND + "s"]`` (:meth:`_live`).
        """
        if not self._bound:
            self._bind(frame.source_id)
        self._sid = str(frame.source_id)
        events: List[Any] = detections.metadata.setdefault("events", [])
        first_new = len(events)
        now = self._now = media_time(frame, self.fps)
        ended = {int(e["track_id"]) for e in events if e.get("type") == "object_end"}
        ids = self._track_ids(detections)
        tracked = np.flatnonzero(ids >= 1).tolist()
        observed = detections.metadata.get("inferred") is not False  # else: the tracker's predicted boxes
        ids_list, cls_list = ids.tolist(), detections.class_id.tolist()
        self._detections, self._rows = detections, {ids_list[i]: i for i in tracked}
        self._speeds = (_column(detections, "speed_px_s"), _column(detections, "speed_m_s"))
        anchors: Dict[str, np.ndarray] = {}
        for region in self._regions:
            if region.anchor not in anchors:
                anchors[region.anchor] = anchor_points(detections.xyxy, region.anchor)
            pts = anchors[region.anchor]
            dist = self._distance(region, pts).tolist() if len(pts) else []
            pts_list = pts.tolist()
            for i in tracked:
                if class_allowed(cls_list[i], region.classes, self.names):
                    if observed:
                        self._step(region, ids_list[i], cls_list[i], pts_list[i], dist[i], frame, events)
                    region.last_seen[ids_list[i]] = now
            for tid in [k for k, t in region.last_seen.items() if k in ended or now - t > self.forget_after_s]:
                self._forget(region, tid, frame, events)
                region.last_seen.pop(tid, None)
            region.primed = True
        self.tally.add(self._sid, events[first_new:])
        detections.metadata[f"{self.KIND}s"] = self._live()
        return detections

    def _row(self, tid: int) -> int:
        """The row of track ``tid`` in this frame's detections (``self._detections``), during :meth:`update`."""
        return self._rows[tid]

    def _speed(self, tid: int) -> "SpeedRef":
        """Where track ``tid``'s speed of this frame is (the tracker's ``speed_px_s`` / ``speed_m_s`` columns and
        its row: read only when an event needs it, :meth:`_speed_fields`)."""
        return self._speeds, self._rows[tid]

    def _speed_fields(self, region: Region, ref: "SpeedRef") -> Dict[str, float]:
        """The events' optional ``speed_px_s`` / ``speed_m_s`` keyword arguments for a :meth:`_speed` reference
        (none where unknown): metres per second with the region's ``meters_per_px``, else the processor's, else
        the tracker's."""
        (px_col, m_col), row = ref
        px = px_col[row] if px_col is not None and px_col[row] == px_col[row] else None  # NaN: unknown
        m_s = m_col[row] if m_col is not None and m_col[row] == m_col[row] else None
        out: Dict[str, float] = {}
        if px is not None:
            out["speed_px_s"] = round(px, 2)
        scale = getattr(region.spec, "meters_per_px", None) or self.meters_per_px
        if scale is not None and px is not None:
            m_s = px * scale
        if m_s is not None:
            out["speed_m_s"] = round(m_s, 3)
        return out

    def _track_ids(self, detections: Detections) -> np.ndarray:
        return detections.track_id if detections.track_id is not None else \
            np.full(len(detections), -1, np.int64)

    def _distance(self, region: Region, pts: np.ndarray) -> np.ndarray:
        """Signed distance of each anchor ``(N, 2)`` to the region, pixels (the kind's sign convention)."""
        raise NotImplementedError

    def _step(self, region: Region, tid: int, cid: int, point: Sequence[float], dist: float, frame: Frame,
              events: List[Event]) -> None:
        """One tracked anchor of this frame (class filter passed); append events."""
        raise NotImplementedError

    def _forget(self, region: Region, tid: int, frame: Frame, events: List[Event]) -> None:
        """Track ``tid`` ended or was unseen too long: drop its state (append events if that means any)."""
        region.state.pop(tid, None)

    def _live(self) -> Dict[str, Any]:
        """The live state drawn on the frame (``metadata[KIND + "s"]``)."""
        raise NotImplementedError


def _column(detections: Detections, key: str) -> Optional[list]:
    """``detections.data[key]`` as a list of floats (``None`` when absent or not one value per row)."""
    col = detections.data.get(key)
    if col is None or np.ndim(col) != 1 or len(col) != len(detections):
        return None
    return np.asarray(col, np.float64).tolist()
