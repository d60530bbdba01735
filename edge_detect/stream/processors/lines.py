"""Line crossing counts: how many tracked objects crossed a directed segment, in which direction.

Runs after a tracker (it needs ``track_id``; detections with ``track_id < 1`` are ignored). For every line and
every track the processor follows one point of the box, the *anchor* (default ``bottom_center``; see
:mod:`edge_detect.stream.geometry`), frame to frame:

* **Side.** The anchor's signed distance to the directed line ``(x1, y1) -> (x2, y2)``: right of the line as
  seen in the image (``y`` axis pointing down) is positive. ``in`` = the anchor went from the **left** of the
  line to its **right**, ``out`` = right to left. E.g. for ``gate=320,0,320,360`` (drawn top to bottom) ``in``
  is a move from right to left across the picture; reverse the points to reverse the meaning.
* **Per crossing** (``count="crossing"``, the default). A crossing is decided from the track's own path: every
  side change of its anchor counts, with the direction of that moment. A track id wrongly handed from one
  object to the next therefore cannot swallow the second object's crossing, and a walker who crosses and comes
  back counts ``out`` 1 and ``in`` 1 (what happened). ``count="once"`` counts a track at most once per line
  (its first crossing); ``recount=True`` / ``False`` are the old spellings of ``"crossing"`` / ``"once"``.
* **Hysteresis.** The side only changes once the anchor is beyond a dead band around the line,
  ``max(hysteresis_px, hysteresis_frac * box width)`` pixels (:class:`~edge_detect.stream.geometry.Hysteresis`;
  box noise and sway grow with the object: a 100 px wide person standing on the line moves its anchor several
  pixels); and a side change only counts once the anchor has been beyond the band on the new side in
  ``confirm_frames`` observations in a row (2 by default; a crossing still pending when the track ends or the
  source ends counts then): jitter on the line, and a box that jumps for a frame, count at most once, touching
  the line and going back counts nothing.
* **Extent.** A side change counts only when the anchor's path crossed the infinite line within the segment
  (``extent_margin_px`` of tolerance at the ends): the last point where the path between two consecutive
  observations met the line is kept until the side changes. An end drawn on the frame's border (within 1 px)
  is open: boxes are clipped to the frame, so an anchor on the border crosses exactly at that end.
* **Gaps.** Observations need not be consecutive frames: an object hidden for a while (the tracker keeps its
  id) that reappears on the other side counts once, where its path from the last sighting met the line.
* **First sighting.** It only sets the side (an object appearing already past the line is not a crossing),
  except that with ``use_trail`` the path the tracker followed before confirming the track is replayed first
  (the non-NaN points of ``data["trail"]``, bottom-centre points, oldest first, as
  :class:`~edge_detect.stream.processors.bytetrack.ByteTrack` outputs them; lines with another anchor do not use
  them): a fast object confirmed after it crossed still counts.
* **Class filter.** ``classes`` (names or ids) restrict what a line counts; the class is the track's
  (the tracker's majority class, so flicker does not move counts between classes).

Outputs: :class:`~edge_detect.types.LineCross` events (``line_cross``; with the object's ``speed_px_s`` when the
tracker gives it, and ``speed_m_s`` with a ground scale: the line's ``meters_per_px``, else the processor's,
else the tracker's) in ``metadata["events"]``;
``metadata["lines"]`` = ``{NAME: {"xyxy", "in", "out"}}`` (live counts, for drawing). The run's counts
(``{"lines": {NAME: {"in", "out", "by_class": {CLASS: {"in", "out"}}}}}`` in the summary) are kept by
:class:`~edge_detect.events.Counts` from the events; :attr:`LineCounter.tally` holds this counter's own.

The skeleton (options, per-source lines, clone, anchors, class filter, forgetting tracks) is
:class:`~edge_detect.stream.processors.region.RegionCounter`'s; what counts as a crossing is decided in one place,
:meth:`LineCounter._crossing`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.stream.geometry import Hysteresis, as_segment, crossing_t, signed_distance
from edge_detect.stream.processors._common import class_name, parse_named_numbers, region_specs
from edge_detect.stream.processors.base import register_processor
from edge_detect.stream.processors.region import Region, RegionCounter, SpeedRef
from edge_detect.types import Detections, Event, Frame, LineCross

__all__ = ["LineSpec", "LineCounter", "line_specs", "COUNT_RULES"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineSpec:
    """One counting line.

    Attributes:
        name: the line's name in events and summaries.
        xyxy: ``(x1, y1, x2, y2)`` source-frame pixels; the direction matters (see module doc).
        classes: count only these classes (names or ids); ``None`` = all.
        anchor: box anchor for this line (``None`` = the processor's).
        meters_per_px: ground scale for the events' ``speed_m_s`` here (``None`` = the processor's).
    """

    name: str
    xyxy: tuple
    classes: Optional[tuple] = None
    anchor: Optional[str] = None
    meters_per_px: Optional[float] = None


def line_specs(lines: Union[Mapping[str, Any], Sequence[Any]]) -> List[LineSpec]:
    """Normalize lines given as ``{name: [x1, y1, x2, y2]}``, ``{name: {"xyxy"|"points": [...], "classes":
    [...], "anchor": ...}}``, ``LineSpec`` objects or ``"NAME=x1,y1,x2,y2"`` strings.

    Raises:
        ConfigError: bad geometry, unknown keys, an unknown anchor or duplicate names.
    """
    return region_specs(lines, kind="line", spec_type=LineSpec, points_key="xyxy", form="NAME=x1,y1,x2,y2",
                        parse=lambda text: parse_named_numbers(text, "--line", count=4), check=as_segment)


#: the counting rules (:class:`LineCounter` ``count``)
COUNT_RULES = ("crossing", "once")


def _count_rule(count: Optional[str], recount: Optional[bool]) -> str:
    """``count``, with ``recount`` as its old spelling (``True`` = ``"crossing"``, ``False`` = ``"once"``).

    Raises:
        ConfigError: an unknown rule, or ``recount`` saying the opposite of ``count``.
    """
    if count is not None and count not in COUNT_RULES:
        raise ConfigError(f"lines count: expected one of {', '.join(COUNT_RULES)}, got {count!r}")
    if recount is None:
        return count or COUNT_RULES[0]
    alias = "crossing" if recount else "once"
    if count is not None and count != alias:
        raise ConfigError(f"lines: count {count!r} and recount {recount} disagree; expected only count "
                          f"(recount {recount} means count {alias!r})")
    return alias


@dataclass
class _TrackState:
    hyst: Hysteresis
    class_id: int = -1
    speed: SpeedRef = ((None, None), 0)  # the speed at the last sighting (RegionCounter._speed)
    prev: Optional[tuple] = None
    prev_d: float = 0.0
    cross_t: Optional[float] = None
    counted: int = 0


@register_processor("lines")
class LineCounter(RegionCounter):
    """Counts crossings of one or more lines (see module doc); one instance per source (:meth:`clone`).

    Args:
        lines: lines of every source, see :func:`line_specs`.
        source_lines: ``{source_id: lines}``: more lines for one source only (a line of the same name replaces the
            common one); the chain of clones serving a source picks its lines from its first frame's ``source_id``.
        anchor: default box anchor (:data:`~edge_detect.stream.geometry.ANCHORS`).
        hysteresis_px: dead band around the line, pixels (at least).
        hysteresis_frac: the band is at least this fraction of the box's width too.
        confirm_frames: observations in a row beyond the band on the new side before a side change counts.
        extent_margin_px: tolerance beyond the segment's ends, pixels.
        count: ``"crossing"`` (default): every crossing of a track's path counts; ``"once"``: a track counts at
            most once per line.
        recount: the old spelling of ``count`` (``True`` = ``"crossing"``, ``False`` = ``"once"``).
        use_trail: on a track's first sighting, replay its ``data["trail"]`` (``bottom_center`` lines only).
        meters_per_px: ground scale for the events' ``speed_m_s`` on lines without their own (``None``: the
            tracker's ``speed_m_s`` when it has a scale).
        classes: default class filter for lines without their own.
        names: class names of the model (for filters by name and the events' ``class_name``).
        forget_s: drop the per-track state of tracks unseen for this many seconds of stream time (tracks that
            ended with an ``object_end`` event are dropped at once).
        fps: stream frame rate for the stream clock (``None`` = timestamps).

    Raises:
        ConfigError: bad geometry, anchor, class names, negative distances, an unknown ``count``.
    """

    name = "lines"
    KIND = "line"
    SPECS = staticmethod(line_specs)

    def __init__(self, lines: Union[Mapping[str, Any], Sequence[Any]] = (),
                 source_lines: Optional[Mapping[str, Any]] = None, anchor: str = "bottom_center",
                 hysteresis_px: float = 4.0, hysteresis_frac: float = 0.1, extent_margin_px: float = 0.0,
                 count: Optional[str] = None, recount: Optional[bool] = None, confirm_frames: int = 2,
                 use_trail: bool = True, meters_per_px: Optional[float] = None,
                 classes: Optional[Sequence[Union[int, str]]] = None, names: Sequence[str] = (),
                 forget_s: float = 10.0, fps: Optional[float] = None) -> None:
        options = dict(lines=lines, source_lines=source_lines, anchor=anchor, hysteresis_px=hysteresis_px,
                       hysteresis_frac=hysteresis_frac, extent_margin_px=extent_margin_px, count=count,
                       recount=recount, confirm_frames=confirm_frames, use_trail=use_trail,
                       meters_per_px=meters_per_px, classes=classes, names=names, forget_s=forget_s,
                       fps=fps)
        self.count = _count_rule(count, recount)
        if not (isinstance(confirm_frames, int) and confirm_frames >= 1):
            raise ConfigError(f"lines confirm_frames: expected an integer >= 1, got {confirm_frames!r}")
        self.confirm_frames = confirm_frames
        super().__init__(lines, source_lines, anchor, classes, names, forget_s, fps, options,
                         {"hysteresis_px": hysteresis_px, "hysteresis_frac": hysteresis_frac,
                          "extent_margin_px": extent_margin_px, "forget_s": forget_s}, meters_per_px)
        self.hysteresis_px, self.hysteresis_frac = float(hysteresis_px), float(hysteresis_frac)
        self.extent_margin_px, self.forget_s = float(extent_margin_px), float(forget_s)
        self.use_trail = bool(use_trail)
        self._warned = False

    @property
    def recount(self) -> bool:
        """Whether every crossing counts (``count == "crossing"``)."""
        return self.count == "crossing"

    def _geometry(self, spec: LineSpec) -> np.ndarray:
        return as_segment(spec.xyxy, f"line {spec.name}")

    @property
    def counts(self) -> Dict[str, Dict[str, int]]:
        """``{NAME: {"in": n, "out": m}}`` of this counter's own events so far (:attr:`tally`)."""
        known = self.tally.summary(self._sid).get("lines", {})
        return {r.spec.name: {k: known.get(r.spec.name, {}).get(k, 0) for k in ("in", "out")}
                for r in self._regions}

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """:meth:`RegionCounter.update <edge_detect.stream.processors.region.RegionCounter.update>` (the boxes'
        widths taken once per frame for the bands)."""
        xyxy = detections.xyxy.reshape(-1, 4)
        self._widths: List[float] = (xyxy[:, 2] - xyxy[:, 0]).tolist()
        return super().update(detections, frame)

    def _track_ids(self, detections: Detections) -> np.ndarray:
        if detections.track_id is None and len(detections) and not self._warned:
            LOGGER.warning("lines: detections carry no track_id; run a tracker before the lines processor")
            self._warned = True
        return super()._track_ids(detections)

    def _distance(self, region: Region, pts: np.ndarray) -> np.ndarray:
        return signed_distance(pts, region.geometry)

    def _step(self, region: Region, tid: int, cid: int, point: Sequence[float], dist: float, frame: Frame,
              events: List[Event]) -> None:
        """Set the track's band from its box width; on its first sighting replay its trail (:meth:`_trail`);
        then follow the anchor (:meth:`_advance`)."""
        row = self._row(tid)
        band = self.hysteresis_frac * self._widths[row]
        band = band if band > self.hysteresis_px else self.hysteresis_px
        st = region.state.get(tid)
        first = st is None
        if first:
            st = region.state[tid] = _TrackState(Hysteresis(band, self.confirm_frames))
        st.hyst.band = band
        st.class_id, st.speed = cid, (self._speeds, row)  # the speed is read only for an event (_speed_fields)
        if first:
            trail = self._trail(region, row)
            if len(trail):
                for p, d in zip(trail.tolist(), signed_distance(trail, region.geometry).tolist()):
                    self._advance(region, st, tid, cid, p, d, frame, events)
        self._advance(region, st, tid, cid, point, dist, frame, events)

    def _trail(self, region: Region, row: int) -> np.ndarray:
        """float64 ``(K, 2)``: the finite points of the row's ``data["trail"]`` before this frame's (oldest first);
        empty without ``use_trail``, a trail, or on a line whose anchor is not ``bottom_center``."""
        trail = self._detections.data.get("trail") if self.use_trail and region.anchor == "bottom_center" else None
        if trail is None or trail.ndim != 3:
            return np.empty((0, 2))
        pts = np.asarray(trail[row, :-1], np.float64)
        return pts[np.isfinite(pts).all(axis=1)]

    def _advance(self, region: Region, st: _TrackState, tid: int, cid: int, point: Sequence[float], dist: float,
                 frame: Frame, events: List[Event]) -> None:
        """Where the anchor's path met the line since the last point; a side change counts (:meth:`_crossing`)."""
        if st.prev is not None and not (st.prev_d > 0 and dist > 0) and not (st.prev_d < 0 and dist < 0):
            t = crossing_t(st.prev, st.prev_d, point, dist, region.geometry.tolist())
            if t is not None:
                st.cross_t = t
        side, changed = st.hyst.update(dist)
        if changed:
            self._side_changed(region, st, tid, side, frame, events)
        st.prev, st.prev_d = tuple(point), dist

    def _side_changed(self, region: Region, st: _TrackState, tid: int, side: int, frame: Frame,
                      events: List[Event]) -> None:
        """A confirmed side change: the event when it counts (:meth:`_crossing`)."""
        direction = self._crossing(region, st, side, frame.shape)
        if direction is not None:
            cname = class_name(st.class_id, self.names)
            events.append(LineCross(region.spec.name, direction, tid, cname, **self._speed_fields(region, st.speed),
                                    frame=int(frame.index), wall_time=float(frame.wall_time)))
            LOGGER.debug("line %s: track %d (%s) %s at frame %d", region.spec.name, tid, cname, direction,
                         frame.index)
            st.counted += 1
        st.cross_t = None

    def _forget(self, region: Region, tid: int, frame: Frame, events: List[Event]) -> None:
        """Ended or unseen too long: a crossing still pending confirmation counts now."""
        st = region.state.pop(tid, None)
        if st is not None:
            side, changed = st.hyst.flush()
            if changed:
                self._side_changed(region, st, tid, side, frame, events)

    def finish(self, frame: Frame) -> List[Event]:
        """End of the source: the crossings still pending confirmation count (every track is forgotten)."""
        events: List[Event] = []
        for region in self._regions:
            for tid in list(region.state):
                self._forget(region, tid, frame, events)
            region.last_seen.clear()
        self.tally.add(self._sid, events)
        return events

    def _crossing(self, region: Region, st: _TrackState, side: int, shape_hw: tuple) -> Optional[str]:
        """The crossing decision, on a debounced side change to ``side`` (``+1`` right of the line, ``-1`` left):
        ``"in"`` / ``"out"`` when it counts (the path met the segment, and with ``count="once"`` the track has not
        been counted on this line yet), else ``None``."""
        if not self._within(region, st.cross_t, shape_hw) or (st.counted and self.count == "once"):
            return None
        return "in" if side > 0 else "out"

    def _within(self, region: Region, t: Optional[float], shape_hw: tuple) -> bool:
        """Whether position ``t`` along the segment counts: within ``[0, 1]`` plus the margin; past an endpoint that
        lies on (or beyond) the frame's border the extent is open, since anchors clipped to the border sit exactly
        at that end."""
        if t is None:
            return False
        seg = region.geometry
        length = float(np.hypot(seg[2] - seg[0], seg[3] - seg[1]))
        margin = self.extent_margin_px / length
        h, w = shape_hw
        on_border = [x <= 1 or y <= 1 or x >= w - 1 or y >= h - 1 for x, y in (seg[:2], seg[2:])]
        return (on_border[0] or t >= -margin) and (on_border[1] or t <= 1.0 + margin)

    def _live(self) -> Dict[str, Any]:
        counts = self.counts
        return {r.spec.name: {"xyxy": [float(v) for v in r.geometry], **counts[r.spec.name]} for r in self._regions}
