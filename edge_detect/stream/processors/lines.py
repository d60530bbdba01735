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

Outputs: ``line_cross`` events in ``metadata["events"]``; ``metadata["lines"]`` = ``{NAME: {"xyxy", "in",
"out"}}`` (live counts, for drawing); :meth:`LineCounter.summary` = ``{"lines": {NAME: {"in", "out",
"by_class": {CLASS: {"in", "out"}}}}}``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Union

import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.stream.geometry import ANCHORS, Hysteresis, anchor_points, as_segment, crossing_t, signed_distance
from edge_detect.stream.processors.base import register_processor
from edge_detect.stream.processors._common import (class_allowed, class_name, media_time, parse_named_numbers,
                                                   region_specs, resolve_class_filter)
from edge_detect.events import Counts
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
    last_seen: float = 0.0


@dataclass
class _Line:
    spec: LineSpec
    seg: np.ndarray
    anchor: str
    classes: Optional[Set[Union[int, str]]]
    tracks: Dict[int, _TrackState] = field(default_factory=dict)


@register_processor("lines")
class LineCounter:
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

    def __init__(self, lines: Union[Mapping[str, Any], Sequence[Any]] = (),
                 source_lines: Optional[Mapping[str, Any]] = None, anchor: str = "bottom_center",
                 hysteresis_px: float = 4.0, extent_margin_px: float = 0.0, recount: bool = False,
                 classes: Optional[Sequence[Union[int, str]]] = None, names: Sequence[str] = (),
                 forget_s: float = 10.0, fps: Optional[float] = None) -> None:
        if anchor not in ANCHORS:
            raise ConfigError(f"lines anchor: expected one of {', '.join(ANCHORS)}, got {anchor!r}")
        for what, value in (("hysteresis_px", hysteresis_px), ("extent_margin_px", extent_margin_px),
                            ("forget_s", forget_s)):
            if not value >= 0:
                raise ConfigError(f"lines {what}: expected >= 0, got {value}")
        self._options = dict(lines=lines, source_lines=source_lines, anchor=anchor, hysteresis_px=hysteresis_px,
                             extent_margin_px=extent_margin_px, recount=recount, classes=classes, names=names,
                             forget_s=forget_s, fps=fps)
        self.names = tuple(names)
        self.hysteresis_px, self.extent_margin_px = float(hysteresis_px), float(extent_margin_px)
        self.recount, self.forget_s, self.fps = bool(recount), float(forget_s), fps
        self._anchor = anchor
        self._default_cls = resolve_class_filter(classes, self.names, "lines")
        self._lines: List[_Line] = [self._make(spec) for spec in line_specs(lines)]
        self._source_lines = {str(sid): [self._make(spec) for spec in line_specs(v)]
                              for sid, v in (source_lines or {}).items()}
        if not self._lines and not any(self._source_lines.values()):
            raise ConfigError("lines: expected at least one line, got none")
        self._bound = not self._source_lines
        self._warned = False
        self._sid = ""
        self.tally = Counts()  # this counter's own events (live overlay, standalone use); a run counts on the bus

    def _make(self, spec: LineSpec) -> _Line:
        cls = resolve_class_filter(spec.classes, self.names, f"line {spec.name}") \
            if spec.classes is not None else self._default_cls
        return _Line(spec, as_segment(spec.xyxy, f"line {spec.name}"), spec.anchor or self._anchor, cls)

    def _bind(self, source_id: str) -> None:
        """Add the lines of ``source_id`` (once, on the first frame)."""
        extra = self._source_lines.get(str(source_id), [])
        names = {ln.spec.name for ln in extra}
        self._lines = [ln for ln in self._lines if ln.spec.name not in names] + extra
        self._bound = True

    def clone(self) -> "LineCounter":
        """Same lines and settings, zero counts."""
        return LineCounter(**self._options)

    def _line_counts(self) -> Dict[str, Dict[str, Any]]:
        known = self.tally.summary(self._sid).get("lines", {})
        return {ln.spec.name: known.get(ln.spec.name, {"in": 0, "out": 0, "by_class": {}}) for ln in self._lines}

    @property
    def counts(self) -> Dict[str, Dict[str, int]]:
        """``{NAME: {"in": n, "out": m}}`` of this counter's own events so far (:attr:`tally`)."""
        return {k: {"in": v["in"], "out": v["out"]} for k, v in self._line_counts().items()}

    def regions(self, source_id: str) -> Dict[str, List[str]]:
        """``{"lines": [names]}`` counted on ``source_id`` (declared to the run's Counts)."""
        extra = self._source_lines.get(str(source_id), [])
        names = [ln.spec.name for ln in self._lines if ln.spec.name not in {e.spec.name for e in extra}]
        return {"lines": names + [ln.spec.name for ln in extra]}

    def summary(self) -> Dict[str, Any]:
        """Nothing: the run's counts are kept by :class:`~edge_detect.events.Counts` from the events."""
        return {}

    def finish(self, frame: Frame) -> List[Dict[str, Any]]:
        """End of the source: nothing to flush (crossings are reported when they happen)."""
        return []

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """Update the counts with one frame's tracked detections (``xyxy`` original-frame pixels).

        Returns:
            ``detections`` itself, with ``line_cross`` events appended to ``metadata["events"]`` and live counts
            in ``metadata["lines"]``.
        """
        if not self._bound:
            self._bind(frame.source_id)
        self._sid = str(frame.source_id)
        events: List[Any] = detections.metadata.setdefault("events", [])
        first_new = len(events)
        now = media_time(frame, self.fps)
        ended = {int(e["track_id"]) for e in events if e.get("type") == "object_end"}
        if detections.track_id is None:
            if len(detections) and not self._warned:
                LOGGER.warning("lines: detections carry no track_id; run a tracker before the lines processor")
                self._warned = True
            ids = np.full(len(detections), -1, np.int64)
        else:
            ids = detections.track_id
        anchors: Dict[str, np.ndarray] = {}
        tracked = np.flatnonzero(ids >= 1).tolist()
        ids_list, cls_list = ids.tolist(), detections.class_id.tolist()
        for ln in self._lines:
            if ln.anchor not in anchors:
                anchors[ln.anchor] = anchor_points(detections.xyxy, ln.anchor)
            pts = anchors[ln.anchor]
            dist = signed_distance(pts, ln.seg).tolist() if len(pts) else []
            seg = ln.seg.tolist()
            pts_list = pts.tolist()
            for i in tracked:
                cid = cls_list[i]
                if not class_allowed(cid, ln.classes, self.names):
                    continue
                tid = ids_list[i]
                st = ln.tracks.get(tid)
                if st is None:
                    st = ln.tracks[tid] = _TrackState(Hysteresis(self.hysteresis_px))
                p, d = pts_list[i], dist[i]
                if st.prev is not None and not (st.prev_d > 0 and d > 0) and not (st.prev_d < 0 and d < 0):
                    t = crossing_t(st.prev, st.prev_d, p, d, seg)
                    if t is not None:
                        st.cross_t = t
                state, changed = st.hyst.update(d)
                if changed:
                    if self._within(ln, st.cross_t, frame.shape) and (self.recount or not st.counted):
                        self._count(ln, "in" if state > 0 else "out", tid, cid, frame, events)
                        st.counted += 1
                    st.cross_t = None
                st.prev, st.prev_d, st.last_seen = p, d, now
            for tid in [k for k, s in ln.tracks.items() if k in ended or now - s.last_seen > self.forget_s]:
                del ln.tracks[tid]
        self.tally.add(self._sid, events[first_new:])
        counts = self.counts
        detections.metadata["lines"] = {ln.spec.name: {"xyxy": [float(v) for v in ln.seg], **counts[ln.spec.name]}
                                        for ln in self._lines}
        return detections

    def _within(self, ln: _Line, t: Optional[float], shape_hw: tuple) -> bool:
        """Whether position ``t`` along the segment counts: within ``[0, 1]`` plus the margin; past an endpoint that
        lies on (or beyond) the frame's border the extent is open, since anchors clipped to the border sit exactly
        at that end."""
        if t is None:
            return False
        length = float(np.hypot(ln.seg[2] - ln.seg[0], ln.seg[3] - ln.seg[1]))
        margin = self.extent_margin_px / length
        h, w = shape_hw
        on_border = [x <= 1 or y <= 1 or x >= w - 1 or y >= h - 1 for x, y in (ln.seg[:2], ln.seg[2:])]
        return (on_border[0] or t >= -margin) and (on_border[1] or t <= 1.0 + margin)

    def _count(self, ln: _Line, direction: str, tid: int, cid: int, frame: Frame, events: List[Event]) -> None:
        cname = class_name(cid, self.names)
        events.append(LineCross(ln.spec.name, direction, tid, cname, frame=int(frame.index),
                                wall_time=float(frame.wall_time)))
        LOGGER.debug("line %s: track %d (%s) %s at frame %d", ln.spec.name, tid, cname, direction, frame.index)
