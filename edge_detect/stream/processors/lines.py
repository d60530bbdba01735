"""Line crossing counts: how many tracked objects crossed a directed segment, in which direction.

Runs after a tracker (it needs ``track_id``; detections with ``track_id < 1`` are ignored). For every line and
every track the processor follows one point of the box, the *anchor* (default ``bottom_center``; see
:mod:`edge_detect.stream.geometry`), frame to frame:

* **Side.** The anchor's signed distance to the directed line ``(x1, y1) -> (x2, y2)``: right of the line as
  seen in the image (``y`` axis pointing down) is positive. ``in`` = the anchor went from the **left** of the
  line to its **right**, ``out`` = right to left. E.g. for ``gate=320,0,320,360`` (drawn top to bottom) ``in``
  is a move from right to left across the picture; reverse the points to reverse the meaning.
* **Hysteresis.** The side only changes once the anchor is more than ``hysteresis_px`` pixels beyond the line
  (:class:`~edge_detect.stream.geometry.Hysteresis`): jitter of a few pixels around the line, or touching the
  line and going back, never counts; one real crossing counts once.
* **Extent.** A side change counts only when the anchor's path crossed the infinite line within the segment
  (``extent_margin_px`` of tolerance at the ends): the last point where the path between two consecutive
  observations met the line is kept until the side changes. An end drawn on the frame's border (within 1 px)
  is open: boxes are clipped to the frame, so an anchor on the border crosses exactly at that end.
* **Gaps.** Observations need not be consecutive frames: an object hidden for a while (the tracker keeps its
  id) that reappears on the other side counts once, where its path from the last sighting met the line.
* **Once per line.** A track is counted at most once per line (its first crossing) unless ``recount=True``,
  which counts every (hysteresis-debounced) crossing: a walker going in and coming back out then counts
  ``in`` 1 and ``out`` 1.
* The first sighting only sets the side (an object appearing already past the line is not a crossing).
* **Class filter.** ``classes`` (names or ids) restrict what a line counts; the class is the track's
  (the tracker's majority class, so flicker does not move counts between classes).

Outputs: :class:`~edge_detect.types.LineCross` events (``line_cross``) in ``metadata["events"]``;
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

from edge_detect.stream.geometry import Hysteresis, as_segment, crossing_t, signed_distance
from edge_detect.stream.processors._common import class_name, parse_named_numbers, region_specs
from edge_detect.stream.processors.base import register_processor
from edge_detect.stream.processors.region import Region, RegionCounter
from edge_detect.types import Detections, Event, Frame, LineCross

__all__ = ["LineSpec", "LineCounter", "line_specs"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineSpec:
    """One counting line.

    Attributes:
        name: the line's name in events and summaries.
        xyxy: ``(x1, y1, x2, y2)`` source-frame pixels; the direction matters (see module doc).
        classes: count only these classes (names or ids); ``None`` = all.
        anchor: box anchor for this line (``None`` = the processor's).
    """

    name: str
    xyxy: tuple
    classes: Optional[tuple] = None
    anchor: Optional[str] = None


def line_specs(lines: Union[Mapping[str, Any], Sequence[Any]]) -> List[LineSpec]:
    """Normalize lines given as ``{name: [x1, y1, x2, y2]}``, ``{name: {"xyxy"|"points": [...], "classes":
    [...], "anchor": ...}}``, ``LineSpec`` objects or ``"NAME=x1,y1,x2,y2"`` strings.

    Raises:
        ConfigError: bad geometry, unknown keys, an unknown anchor or duplicate names.
    """
    return region_specs(lines, kind="line", spec_type=LineSpec, points_key="xyxy", form="NAME=x1,y1,x2,y2",
                        parse=lambda text: parse_named_numbers(text, "--line", count=4), check=as_segment)


@dataclass
class _TrackState:
    hyst: Hysteresis
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
        hysteresis_px: dead band around the line, pixels.
        extent_margin_px: tolerance beyond the segment's ends, pixels.
        recount: count every crossing of a track, not only its first per line.
        classes: default class filter for lines without their own.
        names: class names of the model (for filters by name and the events' ``class_name``).
        forget_s: drop the per-track state of tracks unseen for this many seconds of stream time (tracks that
            ended with an ``object_end`` event are dropped at once).
        fps: stream frame rate for the stream clock (``None`` = timestamps).

    Raises:
        ConfigError: bad geometry, anchor, class names or negative distances.
    """

    name = "lines"
    KIND = "line"
    SPECS = staticmethod(line_specs)

    def __init__(self, lines: Union[Mapping[str, Any], Sequence[Any]] = (),
                 source_lines: Optional[Mapping[str, Any]] = None, anchor: str = "bottom_center",
                 hysteresis_px: float = 4.0, extent_margin_px: float = 0.0, recount: bool = False,
                 classes: Optional[Sequence[Union[int, str]]] = None, names: Sequence[str] = (),
                 forget_s: float = 10.0, fps: Optional[float] = None) -> None:
        options = dict(lines=lines, source_lines=source_lines, anchor=anchor, hysteresis_px=hysteresis_px,
                       extent_margin_px=extent_margin_px, recount=recount, classes=classes, names=names,
                       forget_s=forget_s, fps=fps)
        super().__init__(lines, source_lines, anchor, classes, names, forget_s, fps, options,
                         {"hysteresis_px": hysteresis_px, "extent_margin_px": extent_margin_px, "forget_s": forget_s})
        self.hysteresis_px, self.extent_margin_px = float(hysteresis_px), float(extent_margin_px)
        self.recount, self.forget_s = bool(recount), float(forget_s)
        self._warned = False

    def _geometry(self, spec: LineSpec) -> np.ndarray:
        return as_segment(spec.xyxy, f"line {spec.name}")

    @property
    def counts(self) -> Dict[str, Dict[str, int]]:
        """``{NAME: {"in": n, "out": m}}`` of this counter's own events so far (:attr:`tally`)."""
        known = self.tally.summary(self._sid).get("lines", {})
        return {r.spec.name: {k: known.get(r.spec.name, {}).get(k, 0) for k in ("in", "out")}
                for r in self._regions}

    def _track_ids(self, detections: Detections) -> np.ndarray:
        if detections.track_id is None and len(detections) and not self._warned:
            LOGGER.warning("lines: detections carry no track_id; run a tracker before the lines processor")
            self._warned = True
        return super()._track_ids(detections)

    def _distance(self, region: Region, pts: np.ndarray) -> np.ndarray:
        return signed_distance(pts, region.geometry)

    def _step(self, region: Region, tid: int, cid: int, point: Sequence[float], dist: float, frame: Frame,
              events: List[Event]) -> None:
        """Where the anchor's path met the line since the last sighting; a side change counts (:meth:`_crossing`)."""
        st = region.state.get(tid)
        if st is None:
            st = region.state[tid] = _TrackState(Hysteresis(self.hysteresis_px))
        if st.prev is not None and not (st.prev_d > 0 and dist > 0) and not (st.prev_d < 0 and dist < 0):
            t = crossing_t(st.prev, st.prev_d, point, dist, region.geometry.tolist())
            if t is not None:
                st.cross_t = t
        side, changed = st.hyst.update(dist)
        if changed:
            direction = self._crossing(region, st, side, frame.shape)
            if direction is not None:
                cname = class_name(cid, self.names)
                events.append(LineCross(region.spec.name, direction, tid, cname, frame=int(frame.index),
                                        wall_time=float(frame.wall_time)))
                LOGGER.debug("line %s: track %d (%s) %s at frame %d", region.spec.name, tid, cname, direction,
                             frame.index)
                st.counted += 1
            st.cross_t = None
        st.prev, st.prev_d = tuple(point), dist

    def _crossing(self, region: Region, st: _TrackState, side: int, shape_hw: tuple) -> Optional[str]:
        """The crossing decision, on a debounced side change to ``side`` (``+1`` right of the line, ``-1`` left):
        ``"in"`` / ``"out"`` when it counts (the path met the segment, and the track has not been counted on this
        line unless ``recount``), else ``None``."""
        if not self._within(region, st.cross_t, shape_hw) or (st.counted and not self.recount):
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
