"""Plane geometry for line and zone analytics: anchors, side of a directed segment, polygons, hysteresis.

Pure numpy, no state except :class:`Hysteresis`. Coordinates are **image pixels** of the source frame: ``x`` to
the right, ``y`` **down** (OpenCV / array convention), so "left" and "right" below are as a person looking at
the picture sees them.

Side of a directed line
-----------------------
For the directed segment ``A = (x1, y1) -> B = (x2, y2)`` and a point ``P``::

    cross(P) = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    signed distance d(P) = cross(P) / |AB|      (pixels)

``d > 0`` means ``P`` is on the **right** of the line as seen in the image when walking from ``A`` to ``B``;
``d < 0`` on its left. (With ``y`` down the usual mathematical sign flips: the same formula in a ``y``-up frame
would call this side "left".) Examples, ``P`` on each side of a line through the middle of a 640x360 frame:

=============================  ====================  =====================  ==========================
line ``A -> B``                points "right"       points "left"          so ``in`` (left->right) is
=============================  ====================  =====================  ==========================
``(0, 180) -> (640, 180)``     below (larger y)     above (smaller y)      moving **down**
``(640, 180) -> (0, 180)``     above                below                  moving **up**
``(320, 0) -> (320, 360)``     left (smaller x)     right (larger x)       moving **right to left**
``(320, 360) -> (320, 0)``     right (larger x)     left (smaller x)       moving **left to right**
=============================  ====================  =====================  ==========================

Anchors
-------
A box is reduced to one point, its *anchor* (:data:`ANCHORS`): ``bottom_center`` (default for lines and zones:
where a person or vehicle touches the ground), ``center``, ``top_center``, the four corners, ``center_left``,
``center_right``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from edge_detect.errors import ConfigError

__all__ = ["ANCHORS", "MAX_COORD", "anchor_points", "as_segment", "as_polygon", "signed_distance", "side_of_line",
           "segment_intersection_t", "crossing_t", "point_in_polygon", "polygon_signed_distance", "Hysteresis"]

#: anchor name -> (fx, fy): the point ``(x1 + fx * (x2 - x1), y1 + fy * (y2 - y1))`` of an xyxy box.
ANCHORS = {
    "bottom_center": (0.5, 1.0), "center": (0.5, 0.5), "top_center": (0.5, 0.0),
    "top_left": (0.0, 0.0), "top_right": (1.0, 0.0), "bottom_left": (0.0, 1.0), "bottom_right": (1.0, 1.0),
    "center_left": (0.0, 0.5), "center_right": (1.0, 0.5),
}


def anchor_points(xyxy: np.ndarray, anchor: str = "bottom_center") -> np.ndarray:
    """The anchor point of each box.

    Args:
        xyxy: float ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in image pixels.
        anchor: a key of :data:`ANCHORS`.

    Returns:
        float64 ``(N, 2)`` points ``(x, y)`` in the same pixels.

    Raises:
        ConfigError: unknown anchor name.
    """
    if anchor not in ANCHORS:
        raise ConfigError(f"anchor: expected one of {', '.join(ANCHORS)}, got {anchor!r}")
    fx, fy = ANCHORS[anchor]
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] + fx * (b[:, 2] - b[:, 0]), b[:, 1] + fy * (b[:, 3] - b[:, 1])], axis=1)


#: the largest coordinate magnitude a line or zone may have, pixels (beyond it distances and drawing overflow)
MAX_COORD = 1e6


def _check_coords(values: np.ndarray, what: str, form: str) -> None:
    """Raise unless every value is finite and within :data:`MAX_COORD` (one message for both)."""
    if not (np.isfinite(values).all() and (np.abs(values) <= MAX_COORD).all()):
        raise ConfigError(f"{what}: expected {form} with |v| <= {MAX_COORD:.0f} px, got "
                          f"{np.atleast_1d(values).tolist()}")


def as_segment(line: Sequence[float], what: str = "line") -> np.ndarray:
    """Validate ``(x1, y1, x2, y2)``: float64 ``(4,)``, finite and within :data:`MAX_COORD`, endpoints distinct.

    Raises:
        ConfigError: wrong length, a non-finite or out-of-range value, or a zero-length segment.
    """
    try:
        seg = np.asarray(line, np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected 4 numbers x1,y1,x2,y2, got {line!r}") from exc
    if seg.shape != (4,):
        raise ConfigError(f"{what}: expected 4 finite numbers x1,y1,x2,y2, got {np.atleast_1d(seg).tolist()}")
    _check_coords(seg, what, "4 finite numbers x1,y1,x2,y2")
    if seg[0] == seg[2] and seg[1] == seg[3]:
        raise ConfigError(f"{what}: expected two distinct endpoints, got a zero-length line at "
                          f"({seg[0]:g}, {seg[1]:g})")
    return seg


def as_polygon(points: Sequence[float], what: str = "zone") -> np.ndarray:
    """Validate a polygon given flat ``[x1, y1, x2, y2, ...]`` or as pairs: float64 ``(K, 2)``, ``K >= 3``, values
    finite and within :data:`MAX_COORD`.

    Raises:
        ConfigError: odd number of values, fewer than 3 vertices, non-finite or out-of-range values or zero area.
    """
    try:
        arr = np.asarray(points, np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected x,y pairs of numbers, got {points!r}") from exc
    flat = arr.reshape(-1)
    if flat.size % 2:
        raise ConfigError(f"{what}: expected an even number of values (x,y pairs), got {flat.size}")
    poly = flat.reshape(-1, 2)
    if len(poly) < 3:
        raise ConfigError(f"{what}: expected at least 3 points, got {len(poly)}")
    _check_coords(flat, what, "finite numbers")
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area <= 0:
        raise ConfigError(f"{what}: expected a polygon with a non-zero area, got collinear points {flat.tolist()}")
    return poly


def signed_distance(points: np.ndarray, line: Sequence[float]) -> np.ndarray:
    """Signed distance of points to the infinite line through the directed segment (see module doc).

    Args:
        points: float ``(N, 2)`` image pixels.
        line: ``(x1, y1, x2, y2)``.

    Returns:
        float64 ``(N,)`` pixels, ``> 0`` right of the line as seen in the image, ``< 0`` left, ``0`` on it.
    """
    x1, y1, x2, y2 = (float(v) for v in line)
    p = np.asarray(points, np.float64).reshape(-1, 2)
    length = np.hypot(x2 - x1, y2 - y1)
    return ((x2 - x1) * (p[:, 1] - y1) - (y2 - y1) * (p[:, 0] - x1)) / length


def side_of_line(points: np.ndarray, line: Sequence[float]) -> np.ndarray:
    """``+1`` right of the directed line (as seen in the image), ``-1`` left, ``0`` exactly on it; int ``(N,)``."""
    return np.sign(signed_distance(points, line)).astype(np.int64)


def segment_intersection_t(p0: Sequence[float], p1: Sequence[float], line: Sequence[float]) -> Optional[float]:
    """Where the path ``p0 -> p1`` meets the infinite line, as a position along the segment.

    Args:
        p0, p1: ``(x, y)`` start and end of the path (image pixels).
        line: ``(x1, y1, x2, y2)``.

    Returns:
        ``t`` with the meeting point ``A + t (B - A)``: ``0 <= t <= 1`` lies within the segment's extent;
        ``None`` when the path does not reach the line (both ends strictly on the same side) or runs along it.
    """
    d0, d1 = signed_distance(np.array([p0, p1], np.float64), line)
    return crossing_t(p0, float(d0), p1, float(d1), line)


def crossing_t(p0: Sequence[float], d0: float, p1: Sequence[float], d1: float,
               line: Sequence[float]) -> Optional[float]:
    """:func:`segment_intersection_t` given the signed distances ``d0``, ``d1`` of ``p0``, ``p1`` (scalar maths,
    for per-track loops)."""
    if (d0 > 0 and d1 > 0) or (d0 < 0 and d1 < 0) or d0 == d1:
        return None
    s = d0 / (d0 - d1)
    qx, qy = p0[0] + s * (p1[0] - p0[0]), p0[1] + s * (p1[1] - p0[1])
    ax, ay, bx, by = (float(v) for v in line)
    abx, aby = bx - ax, by - ay
    return ((qx - ax) * abx + (qy - ay) * aby) / (abx * abx + aby * aby)


def point_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule containment (a point exactly on an edge may go either way; use hysteresis for that).

    Args:
        points: float ``(N, 2)`` image pixels.
        polygon: float ``(K, 2)`` vertices in order (either orientation, not necessarily convex).

    Returns:
        bool ``(N,)``.
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    x, y = p[:, 0:1], p[:, 1:2]
    ax, ay = poly[:, 0][None, :], poly[:, 1][None, :]
    bx, by = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    straddles = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
    crossings = straddles & (x < x_cross)
    return (crossings.sum(axis=1) % 2).astype(bool)


def polygon_signed_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance to the polygon's boundary, positive inside, negative outside.

    Args:
        points: float ``(N, 2)`` image pixels.
        polygon: float ``(K, 2)`` vertices.

    Returns:
        float64 ``(N,)`` pixels.
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    a, b = poly[None, :, :], np.roll(poly, -1, axis=0)[None, :, :]
    ab = b - a
    ap = p[:, None, :] - a
    denom = np.maximum((ab ** 2).sum(-1), 1e-12)
    t = np.clip((ap * ab).sum(-1) / denom, 0.0, 1.0)
    dist = np.sqrt(((ap - t[..., None] * ab) ** 2).sum(-1)).min(axis=1) if len(poly) else np.zeros(len(p))
    return np.where(point_in_polygon(p, poly), dist, -dist)


class Hysteresis:
    """A two-state switch driven by a signed value with a dead band: the state only changes once the value is
    beyond ``±band`` on the other side (for ``confirm`` values in a row), so jitter inside the band never toggles
    it, and with ``confirm > 1`` neither does a lone excursion beyond it.

    ``update(v)`` returns ``(state, changed)``: ``state`` is ``+1`` / ``-1`` once known (``None`` while the
    value has only been inside the band), ``changed`` is true exactly when a known state flipped. The first
    value outside the band sets the state without counting as a change (no confirmation needed). A value
    inside the band, or beyond it on the current side, restarts the count of values in a row on the other side
    (:attr:`run`; :attr:`pending` while it is above 0).

    ============================  ========  ======================  ==========
    values fed (band 2)           confirm   states                  changes
    ============================  ========  ======================  ==========
    -5, -1, 1, -1, 1, 5           1         -1,-1,-1,-1,-1,+1       one, at 5
    -5, -1, 1.5, -3               1         -1,-1,-1,-1             none
    -5, 3, -3, 3, 1, 3, 4         2         -1,-1,-1,-1,-1,-1,+1    one, at 4
    ============================  ========  ======================  ==========
    """

    def __init__(self, band: float, confirm: int = 1) -> None:
        if not band >= 0:
            raise ConfigError(f"hysteresis band: expected >= 0 pixels, got {band}")
        if not int(confirm) >= 1:
            raise ConfigError(f"hysteresis confirm: expected >= 1 values, got {confirm}")
        self.band, self.confirm = float(band), int(confirm)
        self.state: Optional[int] = None
        self.run = 0

    @property
    def pending(self) -> bool:
        """Whether values beyond the band on the other side have started a change not yet confirmed."""
        return self.run > 0

    def update(self, value: float) -> Tuple[Optional[int], bool]:
        if value > self.band or (self.band == 0 and value > 0):
            new = 1
        elif value < -self.band or (self.band == 0 and value < 0):
            new = -1
        else:
            self.run = 0
            return self.state, False
        if self.state is None or new == self.state:
            self.state, self.run = new, 0
            return new, False
        self.run += 1
        if self.run < self.confirm:
            return self.state, False
        self.state, self.run = new, 0
        return new, True

    def flush(self) -> Tuple[Optional[int], bool]:
        """Confirm a pending change now (the values stop, e.g. the object is gone): ``update``'s return."""
        if not self.pending:
            return self.state, False
        self.state, self.run = -self.state, 0
        return self.state, True
