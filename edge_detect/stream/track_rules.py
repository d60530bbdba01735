"""Pure rules the tracker applies on top of box overlap: reachability of a re-attachment, frame edges, cross-class
duplicates, colour histograms. Numpy only, no state; boxes are xyxy / centres in original-frame pixels.

Reachability (:func:`reach_cost`)
    A lost track may only take a detection that lies where the track's own recent motion can bring it in the
    time it was lost: near the path from its last observed centre ``last`` to ``last + (1 + tol) * v * gap``,
    ``v`` its velocity observed over its last few observations (pixels per frame, as OC-SORT estimates it),
    within a cone around it (``noise_px`` at ``last``, ``tol * |v| * gap`` once as far as the predicted
    position). A stationary track (``v`` about 0) therefore only takes a detection near where it was last seen
    (the caller widens ``noise_px`` with the time lost for an object that may have started to walk); a moving
    one only a detection ahead of it in its direction, no farther than its speed (plus ``tol``) takes it, not
    behind it nor off to the side.

Frame edges (:func:`touching_edges`, :func:`exit_edge`)
    A track whose last box touched a frame border while it moved out through that border has left the picture;
    it is never re-attached to anything entering later (the tracker ends it).

Cross-class duplicates (:func:`cross_class_keep`)
    Per-class NMS keeps a ``car`` box and a ``truck`` box on one vehicle; of two boxes of different classes that
    overlap at IoU >= ``iou``, only the higher-scoring one is kept.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.boxes import box_iou

__all__ = ["EDGES", "reach_cost", "touching_edges", "exit_edge", "entry_edge", "cross_class_keep",
           "colour_histograms", "histogram_distance"]

#: frame edges in the order of the bits of :func:`touching_edges`
EDGES = ("left", "top", "right", "bottom")
# outward unit vector of each edge
_OUTWARD = np.array([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 1.0]])


def reach_cost(last_xy: np.ndarray, velocity: np.ndarray, gap: np.ndarray, noise_px: np.ndarray,
               det_xy: np.ndarray, tol: float = 0.6, reach_px: Optional[np.ndarray] = None) -> np.ndarray:
    """Distance of detections to the path each track's own motion allows, in units of the allowed radius.

    The path runs from the last observed centre ``last`` along the observed velocity ``v`` for
    ``max((1 + tol) * |v| * gap, reach_px)`` pixels (the object may have slowed down or stopped, gone somewhat
    faster, or, when it was slow, sped up to ``reach_px`` in its direction); the radius around the point of the
    path nearest a detection is ``noise_px`` at ``last`` and grows with the distance along the path to
    ``tol * |v| * gap`` (a cone: the further along, the more it may have strayed sideways; nothing behind it).

    Args:
        last_xy: float ``(T, 2)`` last observed centres.
        velocity: float ``(T, 2)`` observed velocities, pixels per frame.
        gap: ``(T,)`` frames since the last observation (>= 1).
        noise_px: ``(T,)`` the radius allowed however short the travel.
        det_xy: float ``(D, 2)`` detected centres.
        tol: the sideways radius, and the overshoot allowed along the path, as a fraction of the predicted travel.
        reach_px: ``(T,)`` the least length of the path (``None`` = none).

    Returns:
        float64 ``(T, D)``: ``<= 1`` = reachable (see module doc).
    """
    gap = np.asarray(gap, np.float64).reshape(-1, 1)
    travel = np.asarray(velocity, np.float64) * gap  # (T, 2)
    length = np.hypot(travel[:, 0], travel[:, 1])  # (T,)
    path = (1.0 + tol) * length
    if reach_px is not None:
        path = np.maximum(path, np.asarray(reach_px, np.float64))
    ab = travel / np.maximum(length, 1e-9)[:, None] * path[:, None]  # (T, 2)
    a = np.asarray(last_xy, np.float64)
    ap = np.asarray(det_xy, np.float64)[None, :, :] - a[:, None, :]  # (T, D, 2)
    denom = np.maximum((ab ** 2).sum(-1), 1e-12)[:, None]
    t = np.clip((ap * ab[:, None, :]).sum(-1) / denom, 0.0, 1.0)  # (T, D) position along the path
    d = np.hypot(ap[..., 0] - t * ab[:, None, 0], ap[..., 1] - t * ab[:, None, 1])
    along = t * path[:, None]
    radius = np.maximum(np.asarray(noise_px, np.float64)[:, None], tol * np.minimum(along, length[:, None]))
    return d / np.maximum(radius, 1e-6)


def touching_edges(xyxy: np.ndarray, shape_hw: Tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """bool ``(N, 4)``: whether each box reaches the frame's left, top, right, bottom border (within ``margin``)."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    h, w = shape_hw
    return np.stack([b[:, 0] <= margin, b[:, 1] <= margin, b[:, 2] >= w - margin, b[:, 3] >= h - margin], axis=1)


def exit_edge(xyxy: Sequence[float], velocity: Sequence[float], shape_hw: Tuple[int, int], min_speed: float,
              margin: float = 2.0) -> str:
    """The edge a track left through: its last box touches that border and it moved mostly outwards through it
    (the outward component is at least half its speed, and its speed at least ``min_speed`` px/frame);
    ``""`` = it did not leave."""
    v = np.asarray(velocity, np.float64)
    speed = float(np.hypot(v[0], v[1]))
    if speed < min_speed:
        return ""
    touching = touching_edges(np.asarray(xyxy)[None], shape_hw, margin)[0]
    outward = _OUTWARD @ v
    best = [(outward[k], EDGES[k]) for k in range(4) if touching[k] and outward[k] >= 0.5 * speed]
    return max(best)[1] if best else ""


def entry_edge(xyxy: Sequence[float], velocity: Sequence[float], shape_hw: Tuple[int, int],
               margin: float = 2.0) -> str:
    """The edge a track came in through: of the borders its first box touched, the one it moves away from the
    most (``""`` = it appeared inside the picture)."""
    touching = touching_edges(np.asarray(xyxy)[None], shape_hw, margin)[0]
    if not touching.any():
        return ""
    inward = -(_OUTWARD @ np.asarray(velocity, np.float64))
    return max((inward[k], EDGES[k]) for k in range(4) if touching[k])[1]


def cross_class_keep(xyxy: np.ndarray, score: np.ndarray, class_id: np.ndarray, iou: Optional[float]) -> np.ndarray:
    """bool ``(N,)``: ``False`` for a box that overlaps a higher-scoring box of another class at IoU >= ``iou``
    (``None`` = keep all)."""
    n = len(score)
    keep = np.ones(n, bool)
    if iou is None or n < 2:
        return keep
    ov = box_iou(np.asarray(xyxy, np.float32), np.asarray(xyxy, np.float32))
    other = class_id[:, None] != class_id[None, :]
    pairs = np.argwhere(np.triu((ov >= iou) & other, 1))
    for i, j in sorted(pairs.tolist(), key=lambda p: -max(score[p[0]], score[p[1]])):
        if keep[i] and keep[j]:
            keep[j if score[i] >= score[j] else i] = False
    return keep


def colour_histograms(image: np.ndarray, xyxy: np.ndarray, bins: Tuple[int, int] = (8, 4)) -> np.ndarray:
    """Hue-saturation histograms of the central part of each box (float32 ``(N, bins[0] * bins[1])``, each summing
    to 1; zeros for an empty box). ``image`` is BGR uint8 ``(H, W, 3)``."""
    out = np.zeros((len(xyxy), bins[0] * bins[1]), np.float32)
    h, w = image.shape[:2]
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, np.float64)):
        # the middle of the box: less background and less of a neighbour
        cx1, cx2 = x1 + 0.2 * (x2 - x1), x2 - 0.2 * (x2 - x1)
        cy1, cy2 = y1 + 0.1 * (y2 - y1), y2 - 0.2 * (y2 - y1)
        a, b = int(max(cx1, 0)), int(min(cx2, w))
        c, d = int(max(cy1, 0)), int(min(cy2, h))
        if b - a < 2 or d - c < 2:
            continue
        hsv = cv2.cvtColor(image[c:d, a:b], cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, list(bins), [0, 180, 0, 256]).reshape(-1)
        total = float(hist.sum())
        if total > 0:
            out[k] = hist / total
    return out


def histogram_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hellinger (Bhattacharyya) distance between rows of ``a`` ``(T, K)`` and ``b`` ``(D, K)``: float64
    ``(T, D)`` in ``[0, 1]``, 0 = same colours; 1 where a histogram is empty."""
    bc = np.sqrt(np.asarray(a, np.float64))[:, None, :] * np.sqrt(np.asarray(b, np.float64))[None, :, :]
    empty = (np.asarray(a).sum(1)[:, None] == 0) | (np.asarray(b).sum(1)[None, :] == 0)
    return np.where(empty, 1.0, np.sqrt(np.clip(1.0 - bc.sum(-1), 0.0, 1.0)))
