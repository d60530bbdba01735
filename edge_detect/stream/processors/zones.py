"""Polygon zones: which tracked objects are inside, entries, exits, occupancy and dwell time.

Runs after a tracker (detections with ``track_id < 1`` are ignored). A track is **inside** a zone when its
anchor point (default ``bottom_center``) is inside the polygon (even-odd rule), with hysteresis: it enters once
the anchor is more than ``hysteresis_px`` inside the boundary and exits once it is more than ``hysteresis_px``
outside, so jitter on the edge never toggles it. A track first seen already inside enters at that frame.

A track that disappears while inside stays inside (it may be hidden) until the tracker ends it (its
``object_end`` event, which the tracker appends to the same frame's events before this processor runs) or, with
trackers that emit no end events, until unseen for ``lost_s`` seconds of stream time; it then exits with the
dwell time up to its last sighting.

Outputs: :class:`~edge_detect.types.ZoneEnter` / :class:`~edge_detect.types.ZoneExit` (with ``dwell_s``, seconds
of stream time inside) events in ``metadata["events"]``, with the object's ``speed_px_s`` on entering and at its
last sighting inside when the tracker gives it, and ``speed_m_s`` with a ground scale (the zone's
``meters_per_px``, else the processor's, else the tracker's); ``metadata["zones"]`` = ``{NAME: {"polygon", "inside":
[ids], "occupancy", "entered", "exited"}}`` (live, for drawing); :meth:`ZoneCounter.dwell` for the tracks inside
now. The run's counts (``{"zones": {NAME: {"entered", "exited", "occupancy", "max_occupancy"}}}`` in the summary)
are kept by :class:`~edge_detect.events.Counts` from the events; :attr:`ZoneCounter.tally` holds this counter's
own. The skeleton is :class:`~edge_detect.stream.processors.region.RegionCounter`'s.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from edge_detect.stream.geometry import Hysteresis, as_polygon, polygon_signed_distance
from edge_detect.stream.processors._common import class_name, parse_named_numbers, region_specs
from edge_detect.stream.processors.base import register_processor
from edge_detect.stream.processors.region import Region, RegionCounter, SpeedRef
from edge_detect.types import Event, Frame, ZoneEnter, ZoneExit

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
        meters_per_px: ground scale for the events' ``speed_m_s`` here (``None`` = the processor's).
    """

    name: str
    polygon: tuple
    classes: Optional[tuple] = None
    anchor: Optional[str] = None
    meters_per_px: Optional[float] = None


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
    speed: SpeedRef = ((None, None), 0)  # the speed at the last sighting (RegionCounter._speed)


@dataclass
class _ZoneTrack:
    hyst: Hysteresis
    inside: Optional[_Occupant] = None


@register_processor("zones")
class ZoneCounter(RegionCounter):
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
        meters_per_px: ground scale for the events' ``speed_m_s`` in zones without their own.

    Raises:
        ConfigError: bad geometry, anchor, class names or negative values.
    """

    name = "zones"
    KIND = "zone"
    SPECS = staticmethod(zone_specs)

    def __init__(self, zones: Union[Mapping[str, Any], Sequence[Any]] = (),
                 source_zones: Optional[Mapping[str, Any]] = None, anchor: str = "bottom_center",
                 hysteresis_px: float = 4.0, classes: Optional[Sequence[Union[int, str]]] = None,
                 names: Sequence[str] = (), lost_s: float = 3.0, fps: Optional[float] = None,
                 meters_per_px: Optional[float] = None) -> None:
        options = dict(zones=zones, source_zones=source_zones, anchor=anchor, hysteresis_px=hysteresis_px,
                       classes=classes, names=names, lost_s=lost_s, fps=fps, meters_per_px=meters_per_px)
        super().__init__(zones, source_zones, anchor, classes, names, lost_s, fps, options,
                         {"hysteresis_px": hysteresis_px, "lost_s": lost_s}, meters_per_px)
        self.hysteresis_px, self.lost_s = float(hysteresis_px), float(lost_s)

    def _geometry(self, spec: ZoneSpec) -> np.ndarray:
        return as_polygon(spec.polygon, f"zone {spec.name}")

    @staticmethod
    def _inside(region: Region) -> Dict[int, _Occupant]:
        return {tid: st.inside for tid, st in region.state.items() if st.inside is not None}

    def inside(self, zone: str) -> List[int]:
        """Track ids inside ``zone`` now, sorted."""
        return sorted(self._inside(self._region(zone)))

    def dwell(self, zone: str) -> Dict[int, float]:
        """``{track_id: seconds inside so far}`` for the tracks inside ``zone`` (stream time, up to the last frame)."""
        return {tid: self._now - occ.enter_time for tid, occ in sorted(self._inside(self._region(zone)).items())}

    def zone_counts(self) -> Dict[str, Dict[str, int]]:
        """``{NAME: {"entered", "exited", "occupancy", "max_occupancy"}}`` of this counter's own events so far."""
        known = self.tally.summary(self._sid).get("zones", {})
        zero = {"entered": 0, "exited": 0, "occupancy": 0, "max_occupancy": 0}
        return {r.spec.name: dict(known.get(r.spec.name, zero)) for r in self._regions}

    def _distance(self, region: Region, pts: np.ndarray) -> np.ndarray:
        return polygon_signed_distance(pts, region.geometry)  # > 0 inside

    def _step(self, region: Region, tid: int, cid: int, point: Sequence[float], dist: float, frame: Frame,
              events: List[Event]) -> None:
        """Enter once the anchor is ``hysteresis_px`` inside, exit once it is that far outside."""
        st = region.state.get(tid)
        if st is None:
            st = region.state[tid] = _ZoneTrack(Hysteresis(self.hysteresis_px))
        side, _ = st.hyst.update(dist)
        if st.inside is not None:
            st.inside.last_seen, st.inside.speed = self._now, self._speed(tid)
        if side == 1 and st.inside is None:
            st.inside = _Occupant(self._now, self._now, class_name(cid, self.names), self._speed(tid))
            events.append(ZoneEnter(region.spec.name, tid, st.inside.class_name,
                                    **self._speed_fields(region, st.inside.speed), frame=int(frame.index),
                                    wall_time=float(frame.wall_time)))
        elif side == -1 and st.inside is not None:
            self._exit(region, tid, st, self._now, frame, events)

    def _forget(self, region: Region, tid: int, frame: Frame, events: List[Event]) -> None:
        """Ended or lost: a track inside exits with the dwell time up to its last sighting."""
        st = region.state.pop(tid, None)
        if st is not None and st.inside is not None:
            self._exit(region, tid, st, st.inside.last_seen, frame, events)

    def _exit(self, region: Region, tid: int, st: _ZoneTrack, until: float, frame: Frame,
              events: List[Event]) -> None:
        occ, st.inside = st.inside, None
        events.append(ZoneExit(region.spec.name, tid, occ.class_name, round(max(until - occ.enter_time, 0.0), 3),
                               **self._speed_fields(region, occ.speed), frame=int(frame.index),
                               wall_time=float(frame.wall_time)))

    def _live(self) -> Dict[str, Any]:
        counts = self.zone_counts()
        out = {}
        for r in self._regions:
            inside = sorted(self._inside(r))
            out[r.spec.name] = {"polygon": r.geometry.tolist(), "inside": inside, "occupancy": len(inside),
                                "entered": counts[r.spec.name]["entered"], "exited": counts[r.spec.name]["exited"]}
        return out
