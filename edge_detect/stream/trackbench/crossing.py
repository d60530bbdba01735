"""The per-crossing-event counting rule (issue 21 item 5), as the benchmark runs it beside today's
:class:`~edge_detect.stream.processors.lines.LineCounter` ("once per track and line").

A crossing is decided from a track's own path: every time the anchor of a track changes side of a line (beyond
the hysteresis band, at a point of the path within the segment) that is one ``in`` or ``out`` event, with the
track's direction at that moment. A track that is wrongly re-used for a second object therefore cannot swallow
that object's crossing, and an object that crosses and comes back counts twice (``in`` and ``out``), which is
what happened. Jitter and turning back at the line stay inside the band and never count.

Before a track is confirmed the tracker already followed it for a few frames; with ``use_trail`` the counter
starts a new track's side from the first point of the track's ``data["trail"]`` (bottom-centre points, oldest
first, as :class:`~edge_detect.stream.processors.bytetrack.ByteTrack` outputs them), so a fast object confirmed
after it crossed still counts. Trails only hold bottom-centre points: with another anchor they are not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_detect.stream.geometry import Hysteresis, anchor_points, as_segment, crossing_t, signed_distance
from edge_detect.stream.processors._common import media_time
from edge_detect.types import Detections, Frame

__all__ = ["CrossingCounter"]


@dataclass
class _State:
    hyst: Hysteresis
    prev: Optional[Tuple[float, float]] = None
    prev_d: float = 0.0
    cross_t: Optional[float] = None
    last_seen: float = 0.0


@dataclass
class _Line:
    name: str
    seg: np.ndarray
    counts: Dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    tracks: Dict[int, _State] = field(default_factory=dict)


class CrossingCounter:
    """Counts every crossing event of every track (see module doc).

    Args:
        lines: ``{name: (x1, y1, x2, y2)}`` source-frame pixels; ``in`` = from the line's left to its right as
            seen in the image (:mod:`edge_detect.stream.geometry`).
        anchor: box anchor followed (:data:`~edge_detect.stream.geometry.ANCHORS`).
        hysteresis_px: dead band around the line, pixels (at least).
        hysteresis_frac: the band is at least this fraction of the box's width too (box noise and sway grow
            with the object's size: a 100 px wide object standing on the line moves its anchor several pixels).
        extent_margin_px: tolerance beyond the segment's ends (an end on the frame border is open).
        use_trail: start a new track's side from its ``data["trail"]`` (``bottom_center`` anchor only).
        forget_s: forget tracks unseen this long (stream seconds) or ended (``object_end``).
        fps: stream frame rate for the stream clock (``None`` = timestamps).
    """

    def __init__(self, lines: Mapping[str, Sequence[float]], anchor: str = "bottom_center",
                 hysteresis_px: float = 4.0, hysteresis_frac: float = 0.1, extent_margin_px: float = 0.0,
                 use_trail: bool = True,
                 forget_s: float = 10.0, fps: Optional[float] = None) -> None:
        self._lines = [_Line(name, as_segment(seg, f"line {name}")) for name, seg in lines.items()]
        self.anchor, self.band, self.margin = anchor, float(hysteresis_px), float(extent_margin_px)
        self.band_frac = float(hysteresis_frac)
        self.use_trail = bool(use_trail) and anchor == "bottom_center"
        self.forget_s, self.fps = float(forget_s), fps

    @property
    def counts(self) -> Dict[str, Dict[str, int]]:
        """``{NAME: {"in": n, "out": m}}`` so far."""
        return {ln.name: dict(ln.counts) for ln in self._lines}

    def update(self, detections: Detections, frame: Frame) -> List[Dict[str, Any]]:
        """Count one frame's tracked detections (``xyxy`` original-frame pixels, ``track_id >= 1`` only).

        Returns:
            The ``line_cross`` events of this frame (``line``, ``direction``, ``track_id``, ``frame``).
        """
        now = media_time(frame, self.fps)
        ids = detections.track_id if detections.track_id is not None else np.full(len(detections), -1)
        ended = {int(e["track_id"]) for e in detections.metadata.get("events", []) if e.get("type") == "object_end"}
        pts = anchor_points(detections.xyxy, self.anchor)
        bands = np.maximum(self.band, self.band_frac * (detections.xyxy[:, 2] - detections.xyxy[:, 0]))
        trail = detections.data.get("trail") if self.use_trail else None
        events: List[Dict[str, Any]] = []
        for ln in self._lines:
            for i in np.flatnonzero(ids >= 1).tolist():
                tid = int(ids[i])
                st = ln.tracks.get(tid)
                if st is None:
                    st = ln.tracks[tid] = _State(Hysteresis(float(bands[i])))
                    for p in (trail[i][:-1] if trail is not None else ()):  # the path before confirmation
                        if np.isfinite(p).all():
                            self._step(ln, st, (float(p[0]), float(p[1])), frame, tid, events)
                st.hyst.band = float(bands[i])
                self._step(ln, st, (float(pts[i, 0]), float(pts[i, 1])), frame, tid, events)
                st.last_seen = now
            for tid in [k for k, s in ln.tracks.items() if k in ended or now - s.last_seen > self.forget_s]:
                del ln.tracks[tid]
        return events

    def _step(self, ln: _Line, st: _State, p: Tuple[float, float], frame: Frame, tid: int,
              events: List[Dict[str, Any]]) -> None:
        d = float(signed_distance(np.asarray([p]), ln.seg)[0])
        if st.prev is not None and not (st.prev_d > 0 and d > 0) and not (st.prev_d < 0 and d < 0):
            t = crossing_t(st.prev, st.prev_d, p, d, ln.seg)
            if t is not None:
                st.cross_t = t
        state, changed = st.hyst.update(d)
        if changed:
            if self._within(ln, st.cross_t, frame.shape):
                direction = "in" if state > 0 else "out"
                ln.counts[direction] += 1
                events.append({"type": "line_cross", "line": ln.name, "direction": direction, "track_id": tid,
                               "frame": int(frame.index)})
            st.cross_t = None
        st.prev, st.prev_d = p, d

    def _within(self, ln: _Line, t: Optional[float], shape_hw: Tuple[int, int]) -> bool:
        if t is None:
            return False
        length = float(np.hypot(ln.seg[2] - ln.seg[0], ln.seg[3] - ln.seg[1]))
        margin = self.margin / length
        h, w = shape_hw
        on_border = [x <= 1 or y <= 1 or x >= w - 1 or y >= h - 1 for x, y in (ln.seg[:2], ln.seg[2:])]
        return (on_border[0] or t >= -margin) and (on_border[1] or t <= 1.0 + margin)
