"""Polygon zones: which tracked objects are inside, entries, exits, occupancy and dwell time.

Runs after a tracker (detections with ``track_id < 1`` are ignored). A track is **inside** a zone when its
anchor point (default ``bottom_center``) is inside the polygon (even-odd rule), with hysteresis: it enters once
the anchor is more than ``hysteresis_px`` inside the boundary and exits once it is more than ``hysteresis_px``
outside, so jitter on the edge never toggles it. A track first seen already inside enters at that frame.

A track that disappears while inside stays inside (it may be hidden) until the tracker ends it (its
``object_end`` event, which the tracker appends to the same frame's events before this processor runs) or, with
trackers that emit no end events, until unseen for ``lost_s`` seconds of stream time; it then exits with the
dwell time up to its last sighting.

Outputs: ``zone_enter`` / ``zone_exit`` (with ``dwell_s``, seconds of stream time inside) events in
``metadata["events"]``; ``metadata["zones"]`` = ``{NAME: {"polygon", "inside": [ids], "occupancy",
"entered", "exited"}}`` (live, for drawing); :meth:`ZoneCounter.summary` = ``{"zones": {NAME: {"entered",
"exited", "occupancy", "max_occupancy"}}}``; :meth:`ZoneCounter.dwell` for the tracks inside now.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Union

import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.stream.geometry import ANCHORS, Hysteresis, anchor_points, as_polygon, polygon_signed_distance
from edge_detect.stream.processors.base import register_processor
from edge_detect.stream.processors._common import (class_allowed, class_name, media_time, parse_named_numbers,
                                                   region_specs, resolve_class_filter)
from edge_detect.events import Counts
from edge_detect.types import Detections, Event, Frame, ZoneEnter, ZoneExit

__all__ = ["ZoneSpec", "ZoneCounter", "zone_specs"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZoneSpec:
    """One zone.

    Attributes:
        name: the zone's name in events and summaries.
        polygon: flat ``(x1, y1, x2, y2, x3, y3, ...)`` source-frame pixels, at least 3 points.
        classes: only these classes (names or ids); ``None`` = all.
        anchor: box anchor for this zone (``None`` = the processor's).
    """

    name: str
    polygon: tuple
    classes: Optional[tuple] = None
    anchor: Optional[str] = None


def zone_specs(zones: Union[Mapping[str, Any], Sequence[Any]]) -> List[ZoneSpec]:
    """Normalize zones given as ``{name: [x1, y1, x2, y2, x3, y3, ...]}`` (flat or pairs), ``{name: {"polygon"|
    "points": [...], "classes": [...], "anchor": ...}}``, ``ZoneSpec`` objects or ``"NAME=x1,y1,..."`` strings.

    Raises:
        ConfigError: bad geometry, unknown keys, an unknown anchor or duplicate names.
    """
    return region_specs(zones, kind="zone", spec_type=ZoneSpec, points_key="polygon",
                        form="NAME=x1,y1,x2,y2,x3,y3[,...]",
                        parse=lambda text: parse_named_numbers(text, "--zone", min_count=6), check=as_polygon)


@dataclass
class _Occupant:
    enter_time: float
    last_seen: float
    class_name: str


@dataclass
class _Zone:
    spec: ZoneSpec
    polygon: np.ndarray
    anchor: str
    classes: Optional[Set[Union[int, str]]]
    inside: Dict[int, _Occupant] = field(default_factory=dict)
    hyst: Dict[int, Hysteresis] = field(default_factory=dict)
    seen: Dict[int, float] = field(default_factory=dict)


@register_processor("zones")
class ZoneCounter:
    """Zone occupancy and entry/exit counting (see module doc); one instance per source (:meth:`clone`).

    Args:
        zones: zones of every source, see :func:`zone_specs`.
        source_zones: ``{source_id: zones}``: more zones for one source only (a zone of the same name replaces the
            common one); the chain of clones serving a source picks its zones from its first frame's ``source_id``.
        anchor: default box anchor.
        hysteresis_px: dead band around the boundary, pixels.
        classes: default class filter for zones without their own.
        names: class names of the model.
        lost_s: a track unseen this long (stream seconds) leaves the zones even without an ``object_end``.
        fps: stream frame rate for the stream clock (``None`` = timestamps).

    Raises:
        ConfigError: bad geometry, anchor, class names or negative values.
    """

    name = "zones"

    def __init__(self, zones: Union[Mapping[str, Any], Sequence[Any]] = (),
                 source_zones: Optional[Mapping[str, Any]] = None, anchor: str = "bottom_center",
                 hysteresis_px: float = 4.0, classes: Optional[Sequence[Union[int, str]]] = None,
                 names: Sequence[str] = (), lost_s: float = 3.0, fps: Optional[float] = None) -> None:
        if anchor not in ANCHORS:
            raise ConfigError(f"zones anchor: expected one of {', '.join(ANCHORS)}, got {anchor!r}")
        for what, value in (("hysteresis_px", hysteresis_px), ("lost_s", lost_s)):
            if not value >= 0:
                raise ConfigError(f"zones {what}: expected >= 0, got {value}")
        self._options = dict(zones=zones, source_zones=source_zones, anchor=anchor, hysteresis_px=hysteresis_px,
                             classes=classes, names=names, lost_s=lost_s, fps=fps)
        self.names, self.hysteresis_px, self.lost_s, self.fps = tuple(names), float(hysteresis_px), float(lost_s), fps
        self._anchor = anchor
        self._default_cls = resolve_class_filter(classes, self.names, "zones")
        self._zones: List[_Zone] = [self._make(spec) for spec in zone_specs(zones)]
        self._source_zones = {str(sid): [self._make(spec) for spec in zone_specs(v)]
                              for sid, v in (source_zones or {}).items()}
        if not self._zones and not any(self._source_zones.values()):
            raise ConfigError("zones: expected at least one zone, got none")
        self._bound = not self._source_zones
        self._now = 0.0
        self._sid = ""
        self.tally = Counts()  # this counter's own events (live overlay, standalone use); a run counts on the bus

    def _make(self, spec: ZoneSpec) -> _Zone:
        cls = resolve_class_filter(spec.classes, self.names, f"zone {spec.name}") \
            if spec.classes is not None else self._default_cls
        return _Zone(spec, as_polygon(spec.polygon, f"zone {spec.name}"), spec.anchor or self._anchor, cls)

    def _bind(self, source_id: str) -> None:
        """Add the zones of ``source_id`` (once, on the first frame)."""
        extra = self._source_zones.get(str(source_id), [])
        names = {z.spec.name for z in extra}
        self._zones = [z for z in self._zones if z.spec.name not in names] + extra
        self._bound = True

    def clone(self) -> "ZoneCounter":
        """Same zones and settings, empty state."""
        return ZoneCounter(**self._options)

    def inside(self, zone: str) -> List[int]:
        """Track ids inside ``zone`` now, sorted."""
        return sorted(self._zone(zone).inside)

    def dwell(self, zone: str) -> Dict[int, float]:
        """``{track_id: seconds inside so far}`` for the tracks inside ``zone`` (stream time, up to the last frame)."""
        return {tid: self._now - occ.enter_time for tid, occ in sorted(self._zone(zone).inside.items())}

    def _zone(self, name: str) -> _Zone:
        for z in self._zones:
            if z.spec.name == name:
                return z
        raise KeyError(f"zone {name!r}: expected one of {[z.spec.name for z in self._zones]}")

    def zone_counts(self) -> Dict[str, Dict[str, int]]:
        """``{NAME: {"entered", "exited", "occupancy", "max_occupancy"}}`` of this counter's own events so far."""
        known = self.tally.summary(self._sid).get("zones", {})
        zero = {"entered": 0, "exited": 0, "occupancy": 0, "max_occupancy": 0}
        return {z.spec.name: dict(known.get(z.spec.name, zero)) for z in self._zones}

    def regions(self, source_id: str) -> Dict[str, List[str]]:
        """``{"zones": [names]}`` counted on ``source_id`` (declared to the run's Counts)."""
        extra = self._source_zones.get(str(source_id), [])
        names = [z.spec.name for z in self._zones if z.spec.name not in {e.spec.name for e in extra}]
        return {"zones": names + [z.spec.name for z in extra]}

    def summary(self) -> Dict[str, Any]:
        """Nothing: the run's counts are kept by :class:`~edge_detect.events.Counts` from the events."""
        return {}

    def finish(self, frame: Frame) -> List[Dict[str, Any]]:
        """End of the source: nothing is flushed (the summary keeps who is still inside)."""
        return []

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """Update zone membership with one frame's tracked detections (``xyxy`` original-frame pixels).

        Returns:
            ``detections`` itself with ``zone_enter`` / ``zone_exit`` events appended to ``metadata["events"]``
            and the live state in ``metadata["zones"]``.
        """
        if not self._bound:
            self._bind(frame.source_id)
        self._sid = str(frame.source_id)
        events: List[Any] = detections.metadata.setdefault("events", [])
        first_new = len(events)
        now = self._now = media_time(frame, self.fps)
        ended = {int(e["track_id"]) for e in events if e.get("type") == "object_end"}
        ids = detections.track_id if detections.track_id is not None else np.full(len(detections), -1, np.int64)
        anchors: Dict[str, np.ndarray] = {}
        tracked = np.flatnonzero(ids >= 1).tolist()
        ids_list, cls_list = ids.tolist(), detections.class_id.tolist()
        for z in self._zones:
            if z.anchor not in anchors:
                anchors[z.anchor] = anchor_points(detections.xyxy, z.anchor)
            pts = anchors[z.anchor]
            dist = polygon_signed_distance(pts, z.polygon).tolist() if len(pts) else []
            for i in tracked:
                cid = cls_list[i]
                if not class_allowed(cid, z.classes, self.names):
                    continue
                tid = ids_list[i]
                hyst = z.hyst.get(tid)
                if hyst is None:
                    hyst = z.hyst[tid] = Hysteresis(self.hysteresis_px)
                state, _ = hyst.update(dist[i])
                z.seen[tid] = now
                if tid in z.inside:
                    z.inside[tid].last_seen = now
                if state == 1 and tid not in z.inside:
                    z.inside[tid] = _Occupant(now, now, class_name(cid, self.names))
                    events.append(ZoneEnter(z.spec.name, tid, z.inside[tid].class_name, frame=int(frame.index),
                                            wall_time=float(frame.wall_time)))
                elif state == -1 and tid in z.inside:
                    self._exit(z, tid, now, frame, events)
            for tid in [k for k, t in z.seen.items() if k in ended or now - t > self.lost_s]:
                if tid in z.inside:
                    self._exit(z, tid, z.inside[tid].last_seen, frame, events)
                z.seen.pop(tid, None)
                z.hyst.pop(tid, None)
        self.tally.add(self._sid, events[first_new:])
        counts = self.zone_counts()
        detections.metadata["zones"] = {
            z.spec.name: {"polygon": z.polygon.tolist(), "inside": sorted(z.inside), "occupancy": len(z.inside),
                          "entered": counts[z.spec.name]["entered"], "exited": counts[z.spec.name]["exited"]}
            for z in self._zones}
        return detections

    def _exit(self, z: _Zone, tid: int, until: float, frame: Frame, events: List[Event]) -> None:
        occ = z.inside.pop(tid)
        events.append(ZoneExit(z.spec.name, tid, occ.class_name, round(max(until - occ.enter_time, 0.0), 3),
                               frame=int(frame.index), wall_time=float(frame.wall_time)))
