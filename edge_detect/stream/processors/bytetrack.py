"""ByteTrack-style multi-object tracker with Kalman motion, two-stage association and lost-track stitching.

Input: the :class:`~edge_detect.types.Detections` of one frame of one source (``xyxy`` float32 original-frame
pixels). Output: the detections that belong to **confirmed** tracks, each with a unique ``track_id`` (int64,
``>= 1``, never reused within a stream), ``class_id`` replaced by the track's class, plus

* ``data["det_class_id"]`` int32 ``(N,)``: the class the detector gave this frame;
* ``data["trail"]`` float32 ``(N, trail, 2)``: the track's last ``trail`` bottom-centre points, oldest first,
  ``NaN``-padded (drawn by :mod:`edge_detect.annotate`);
* ``metadata["events"]``: ``object_new`` when a track is confirmed, ``object_end`` when it is dropped.

Per frame (``steps`` = frame-index difference, so frames dropped by a live source advance the motion model):

1. every track's Kalman state (:class:`~edge_detect.stream.kalman.KalmanBoxFilter`, constant velocity on
   centre and size) is predicted; a lost track keeps its centre velocity (its size velocity is zeroed);
2. **high** detections (``score >= high_thresh``) are assigned to confirmed tracks, tracked or lost, by
   ``linear_sum_assignment`` on the distance (default ``1 - IoU`` of the predicted box, times the score as in
   ByteTrack, plus ``class_cost`` when the classes differ) below ``match_thresh``;
3. **low** detections (``low_thresh <= score < high_thresh``) keep still-tracked tracks alive (``1 - IoU``
   below ``low_match_thresh``); they never start tracks;
4. **stitching**: lost tracks are offered the remaining high detections by the Mahalanobis distance of the
   detected centre to the predicted one (the gate widening with the time lost as the predicted covariance
   grows), or to where the track was last seen within the measurement noise (an object that stopped); the
   height may differ by at most ``stitch_size_ratio``. This is what keeps the id of an object
   hidden for about a second, whose predicted box no longer overlaps where it reappears;
5. tentative tracks are matched to what is left (``1 - IoU`` below ``tentative_match_thresh``, then by the
   stitching gate, so that an object moving more than half its width per frame is picked up too; its velocity
   is set from its first two sightings); a tentative track missed once is dropped; after ``min_hits``
   consecutive hits it is **confirmed** and only then gets an id (so no two objects ever share a placeholder
   id);
6. remaining high detections with ``score >= new_track_thresh`` start tentative tracks;
7. lost tracks unseen for more than ``buffer_s`` seconds of stream time are dropped (``object_end``).

When a lost track is re-acquired after a gap, its centre velocity is re-estimated from the last observation
before the gap and the new one (observation-centric, as OC-SORT does), which keeps the motion model honest after
a long prediction.

Class flicker: each track sums the scores per detected class; its class is the one with the largest sum, so
a few frames of ``truck`` on a long-lived ``car`` change neither the id nor the class.

The distance is swappable (norfair style): ``distance="iou"`` / ``"giou"`` or any callable
``(track_xyxy (T, 4), det_xyxy (D, 4)) -> cost (T, D)`` with ``0`` = identical, ``>= 1`` = unrelated.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge_detect.boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou, xyxy_to_cxcywh
from edge_detect.errors import ConfigError
from edge_detect.stream.kalman import KalmanBoxFilter
from edge_detect.stream.processors._common import class_name, media_time
from edge_detect.stream.processors.base import register_processor
from edge_detect.types import Detections, Frame

__all__ = ["ByteTrack", "iou_distance", "giou_distance", "DISTANCES"]

LOGGER = logging.getLogger(__name__)

DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def iou_distance(tracks_xyxy: np.ndarray, dets_xyxy: np.ndarray) -> np.ndarray:
    """``1 - IoU``: float64 ``(T, D)`` in ``[0, 1]`` for xyxy boxes in the same pixels."""
    return 1.0 - box_iou(tracks_xyxy, dets_xyxy).astype(np.float64)


def giou_distance(tracks_xyxy: np.ndarray, dets_xyxy: np.ndarray) -> np.ndarray:
    """``(1 - GIoU) / 2``: float64 ``(T, D)`` in ``[0, 1]``; unlike IoU it still ranks boxes that do not overlap."""
    return (1.0 - generalized_box_iou(tracks_xyxy, dets_xyxy).astype(np.float64)) / 2.0


DISTANCES: Dict[str, DistanceFn] = {"iou": iou_distance, "giou": giou_distance}

_TENTATIVE, _TRACKED, _LOST = "tentative", "tracked", "lost"


@dataclass
class _Track:
    mean: np.ndarray
    cov: np.ndarray
    class_votes: Dict[int, float]
    score: float
    first_seen: float
    first_frame: int
    last_seen: float
    last_frame: int
    last_wall: float
    first_wall: float
    last_z: np.ndarray
    state: str = _TENTATIVE
    hits: int = 1
    track_id: int = -1
    best_score: float = 0.0
    trail: List[Tuple[float, float]] = field(default_factory=list)
    class_id: int = -1

    def vote(self, class_id: int, score: float) -> None:
        """Add ``score`` to ``class_id``'s votes; the track's class is the class with the largest sum."""
        self.class_votes[class_id] = self.class_votes.get(class_id, 0.0) + score
        self.class_id = max(self.class_votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]


def _assign(cost: np.ndarray, thresh: float) -> Tuple[List[Tuple[int, int]], List[int], List[int]]:
    """Minimum-cost assignment with pairs above ``thresh`` forbidden: (pairs, unmatched rows, unmatched cols)."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m))
    big = 1e6
    c = np.where(cost <= thresh, cost, big)
    rows, cols = linear_sum_assignment(c)
    pairs = [(int(r), int(k)) for r, k in zip(rows, cols) if c[r, k] < big]
    mr = {r for r, _ in pairs}
    mc = {k for _, k in pairs}
    return pairs, [i for i in range(n) if i not in mr], [j for j in range(m) if j not in mc]


@register_processor("bytetrack", tracker=True)
class ByteTrack:
    """ByteTrack-style tracker processor (see module doc); one instance per source (:meth:`clone`).

    Args:
        high_thresh: detections at or above this score take part in the first association and may start tracks.
        low_thresh: detections in ``[low_thresh, high_thresh)`` only keep existing tracks alive (run the
            detector with ``--conf`` at or below this to give it low-score boxes).
        new_track_thresh: lowest score that starts a track (default ``high_thresh``).
        match_thresh: largest distance accepted in the first association.
        low_match_thresh: largest ``1 - IoU`` for the low-score association.
        tentative_match_thresh: largest distance to continue a tentative track.
        min_hits: consecutive hits that confirm a track (1 = confirm at once).
        buffer_s: seconds of stream time a lost track is kept (stream time: ``pts``, or ``index / fps`` when
            ``fps`` is given, or wall time; see :func:`~edge_detect.stream.processors._common.media_time`).
        fps: the stream's frame rate, when the frames' timestamps should not be used.
        distance: ``"iou"``, ``"giou"`` or a callable (see module doc).
        fuse_score: multiply the first-stage similarity by the detection score (ByteTrack's ``fuse_score``).
        class_cost: added to the distance when a detection's class differs from the track's (0 = class-blind).
        stitch: re-acquire lost tracks by Mahalanobis distance (step 4); ``False`` = plain ByteTrack.
        stitch_gate: squared Mahalanobis gate on the centre (chi-square 2 dof; 9.21 = 99 %).
        stitch_noise: measurement noise multiplier used for stitching (a partly hidden object's box is off).
        stitch_size_ratio: the largest ratio of heights between a lost track and the detection it takes.
        trail: bottom-centre points kept per track for ``data["trail"]`` (0 = none).
        names: class names, for the events' ``class_name``.
        keep_unconfirmed: also return detections not on a confirmed track, with ``track_id`` -1 (they are
            never counted by lines/zones, which ignore ids < 1).

    Raises:
        ConfigError: a threshold outside its range, an unknown distance name.
    """

    name = "bytetrack"

    def __init__(self, high_thresh: float = 0.5, low_thresh: float = 0.1, new_track_thresh: Optional[float] = None,
                 match_thresh: float = 0.8, low_match_thresh: float = 0.5, tentative_match_thresh: float = 0.7,
                 min_hits: int = 3, buffer_s: float = 2.0, fps: Optional[float] = None,
                 distance: Union[str, DistanceFn] = "iou", fuse_score: bool = False, class_cost: float = 0.1,
                 stitch: bool = True, stitch_gate: float = 9.21, stitch_noise: float = 4.0,
                 stitch_size_ratio: float = 1.5, trail: int = 16, names: Sequence[str] = (),
                 keep_unconfirmed: bool = False) -> None:
        checks = [
            (0.0 <= low_thresh <= high_thresh <= 1.0, "low_thresh <= high_thresh", "0 <= low <= high <= 1",
             (low_thresh, high_thresh)),
            (new_track_thresh is None or 0.0 <= new_track_thresh <= 1.0, "new_track_thresh", "a value in [0, 1]",
             new_track_thresh),
            (0.0 < match_thresh <= 1.0, "match_thresh", "a value in (0, 1]", match_thresh),
            (0.0 < low_match_thresh <= 1.0, "low_match_thresh", "a value in (0, 1]", low_match_thresh),
            (0.0 < tentative_match_thresh <= 1.0, "tentative_match_thresh", "a value in (0, 1]",
             tentative_match_thresh),
            (int(min_hits) >= 1, "min_hits", ">= 1", min_hits),
            (buffer_s >= 0, "buffer_s", ">= 0 seconds", buffer_s),
            (fps is None or fps > 0, "fps", "> 0", fps),
            (class_cost >= 0, "class_cost", ">= 0", class_cost),
            (stitch_gate > 0, "stitch_gate", "> 0", stitch_gate),
            (stitch_noise > 0, "stitch_noise", "> 0", stitch_noise),
            (stitch_size_ratio >= 1, "stitch_size_ratio", ">= 1", stitch_size_ratio),
            (int(trail) >= 0, "trail", ">= 0 points", trail),
        ]
        for ok, what, expected, actual in checks:
            if not ok:
                raise ConfigError(f"bytetrack {what}: expected {expected}, got {actual}")
        if isinstance(distance, str):
            if distance not in DISTANCES:
                raise ConfigError(f"bytetrack distance: expected one of {', '.join(DISTANCES)} or a callable, "
                                  f"got {distance!r}")
            self._distance = DISTANCES[distance]
        elif callable(distance):
            self._distance = distance
        else:
            raise ConfigError(f"bytetrack distance: expected a name or a callable, got {type(distance).__name__}")
        self._options: Dict[str, Any] = dict(
            high_thresh=high_thresh, low_thresh=low_thresh, new_track_thresh=new_track_thresh,
            match_thresh=match_thresh, low_match_thresh=low_match_thresh,
            tentative_match_thresh=tentative_match_thresh, min_hits=min_hits, buffer_s=buffer_s, fps=fps,
            distance=distance, fuse_score=fuse_score, class_cost=class_cost, stitch=stitch, stitch_gate=stitch_gate,
            stitch_noise=stitch_noise, stitch_size_ratio=stitch_size_ratio, trail=trail, names=tuple(names),
            keep_unconfirmed=keep_unconfirmed)
        self.high_thresh, self.low_thresh = float(high_thresh), float(low_thresh)
        self.new_track_thresh = float(high_thresh if new_track_thresh is None else new_track_thresh)
        self.match_thresh, self.low_match_thresh = float(match_thresh), float(low_match_thresh)
        self.tentative_match_thresh = float(tentative_match_thresh)
        self.min_hits, self.buffer_s, self.fps = int(min_hits), float(buffer_s), fps
        self.fuse_score, self.class_cost = bool(fuse_score), float(class_cost)
        self.stitch, self.stitch_gate = bool(stitch), float(stitch_gate)
        self.stitch_noise, self.stitch_size_ratio = float(stitch_noise), float(stitch_size_ratio)
        self.trail, self.names, self.keep_unconfirmed = int(trail), tuple(names), bool(keep_unconfirmed)
        self.kf = KalmanBoxFilter()
        self._tracks: List[_Track] = []
        self._next_id = 1
        self._last_index: Optional[int] = None
        self._confirmed_total = 0
        self._stitched = 0

    # ----------------------------------------------------------------------------------------- protocol

    def clone(self) -> "ByteTrack":
        """A fresh tracker with the same settings (ids restart at 1)."""
        return ByteTrack(**self._options)

    def reset(self) -> None:
        """Forget every track; ids restart at 1."""
        self._tracks, self._next_id, self._last_index = [], 1, None
        self._confirmed_total = self._stitched = 0

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks currently remembered (tracked or lost)."""
        return sum(1 for t in self._tracks if t.state != _TENTATIVE)

    def summary(self) -> Dict[str, Any]:
        """``{"tracker": {"name", "tracks", "stitched"}}``: confirmed tracks so far and lost tracks re-acquired
        by stitching."""
        return {"tracker": {"name": self.name, "tracks": self._confirmed_total, "stitched": self._stitched}}

    def finish(self, frame: Frame) -> List[Dict[str, Any]]:
        """End of the source: ``object_end`` for every confirmed track still remembered; the state is cleared."""
        events = [self._end_event(t, frame) for t in self._tracks if t.track_id > 0]
        self._tracks = []
        return events

    # ----------------------------------------------------------------------------------------- update

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """Track one frame (see module doc).

        Args:
            detections: boxes ``xyxy`` float32 original-frame pixels, scores, classes of this frame.
            frame: the frame they come from (index, timestamps); frames of one source, in order.

        Returns:
            Detections of confirmed tracks with ``track_id`` (int64 ``>= 1``), the track's ``class_id``,
            ``data["det_class_id"]`` and ``data["trail"]``; events appended to ``metadata["events"]``.
        """
        now, index, wall = media_time(frame, self.fps), int(frame.index), float(frame.wall_time)
        steps = 1 if self._last_index is None else max(index - self._last_index, 1)
        self._last_index = index
        events: List[Dict[str, Any]] = detections.metadata.setdefault("events", [])
        dets = detections
        score = dets.score.astype(np.float64)
        boxes = dets.xyxy.astype(np.float64)
        z_all = xyxy_to_cxcywh(boxes.reshape(-1, 4))

        # 1. predict
        if self._tracks:
            for t in self._tracks:
                if t.state == _LOST:
                    t.mean[6:8] = 0.0
            mean, cov = self.kf.predict(np.stack([t.mean for t in self._tracks]),
                                        np.stack([t.cov for t in self._tracks]), steps)
            for t, m, c in zip(self._tracks, mean, cov):
                t.mean, t.cov = m, c

        high = np.flatnonzero(score >= self.high_thresh)
        low = np.flatnonzero((score >= self.low_thresh) & (score < self.high_thresh))
        assigned: Dict[int, int] = {}  # track list index -> detection index

        # 2. high detections vs confirmed tracks (tracked and lost)
        pool = [i for i, t in enumerate(self._tracks) if t.state != _TENTATIVE]
        cost = self._cost(pool, high, boxes, score, dets.class_id, fuse=self.fuse_score)
        pairs, um_tracks, um_high = _assign(cost, self.match_thresh)
        for r, c in pairs:
            assigned[pool[r]] = int(high[c])
        rest_high = [int(high[j]) for j in um_high]

        # 3. low detections keep tracked (not lost) tracks alive
        still = [pool[r] for r in um_tracks if self._tracks[pool[r]].state == _TRACKED]
        cost = self._cost(still, low, boxes, score, dets.class_id, fuse=False, distance=iou_distance)
        pairs, _, _ = _assign(cost, self.low_match_thresh)
        for r, c in pairs:
            assigned[still[r]] = int(low[c])

        # 4. stitch lost (and just-missed) confirmed tracks to remaining high detections by motion
        if self.stitch and rest_high:
            orphans = [i for i in pool if i not in assigned]
            if orphans:
                pairs = self._stitch(orphans, rest_high, z_all)
                for r, c in pairs:
                    assigned[orphans[r]] = rest_high[c]
                    self._stitched += self._tracks[orphans[r]].state == _LOST
                taken = {rest_high[c] for _, c in pairs}
                rest_high = [d for d in rest_high if d not in taken]

        # 5. tentative tracks vs what is left
        tentative = [i for i, t in enumerate(self._tracks) if t.state == _TENTATIVE]
        rh = np.asarray(rest_high, np.int64)
        cost = self._cost(tentative, rh, boxes, score, dets.class_id, fuse=False)
        pairs, um_tent, um_rest = _assign(cost, self.tentative_match_thresh)
        for r, c in pairs:
            assigned[tentative[r]] = int(rh[c])
        rest_high = [int(rh[j]) for j in um_rest]
        if self.stitch and rest_high and um_tent:  # fast new objects (no velocity yet): by distance too
            orphans = [tentative[r] for r in um_tent]
            pairs = self._stitch(orphans, rest_high, z_all)
            for r, c in pairs:
                assigned[orphans[r]] = rest_high[c]
            taken = {rest_high[c] for _, c in pairs}
            rest_high = [d for d in rest_high if d not in taken]

        # apply the assignments
        out_idx: List[int] = []
        out_tracks: List[_Track] = []
        if assigned:
            ti = sorted(assigned)
            di = [assigned[i] for i in ti]
            ts = [self._tracks[i] for i in ti]
            mean, cov = self.kf.update(np.stack([t.mean for t in ts]), np.stack([t.cov for t in ts]), z_all[di])
            for t, m, c, d in zip(ts, mean, cov, di):
                gap = index - t.last_frame
                t.mean, t.cov = m, c
                if (gap > 1 and t.state != _TENTATIVE) or (t.state == _TENTATIVE and t.hits == 1):
                    # re-acquired after a gap, or the second sighting of a new track: velocity from the observations
                    t.mean[4:6] = (z_all[d, :2] - t.last_z[:2]) / max(gap, 1)
                self._observe(t, d, z_all, score, dets.class_id, boxes, now, index, wall)
                if t.state == _TENTATIVE and t.hits >= self.min_hits:
                    self._confirm(t, d, boxes, score, frame, events)
                elif t.state == _LOST:
                    t.state = _TRACKED
                if t.state == _TRACKED:
                    out_idx.append(d)
                    out_tracks.append(t)

        # misses: tentative tracks die, tracked become lost, lost expire
        assigned_set = set(assigned)
        survivors: List[_Track] = []
        for i, t in enumerate(self._tracks):
            if i in assigned_set:
                survivors.append(t)
            elif t.state == _TENTATIVE:
                continue
            else:
                t.state = _LOST
                if now - t.last_seen > self.buffer_s:
                    events.append(self._end_event(t, frame))
                    continue
                survivors.append(t)
        self._tracks = survivors

        # 6. new tentative tracks
        for d in rest_high:
            if score[d] < self.new_track_thresh:
                continue
            m, c = self.kf.initiate(z_all[d:d + 1])
            t = _Track(m[0], c[0], {}, float(score[d]), now, index, now, index, wall, wall, z_all[d].copy(),
                       best_score=float(score[d]))
            t.vote(int(dets.class_id[d]), float(score[d]))
            self._append_trail(t, boxes[d])
            self._tracks.append(t)
            if self.min_hits <= 1:
                self._confirm(t, d, boxes, score, frame, events)
                out_idx.append(d)
                out_tracks.append(t)

        return self._output(dets, out_idx, out_tracks)

    # ----------------------------------------------------------------------------------------- helpers

    def _cost(self, track_idx: Sequence[int], det_idx: np.ndarray, boxes: np.ndarray, score: np.ndarray,
              class_id: np.ndarray, fuse: bool, distance: Optional[DistanceFn] = None) -> np.ndarray:
        det_idx = np.asarray(det_idx, np.int64)
        if not len(track_idx) or not len(det_idx):
            return np.zeros((len(track_idx), len(det_idx)))
        tracks = [self._tracks[i] for i in track_idx]
        pred = cxcywh_to_xyxy(np.array([t.mean[:4] for t in tracks]))
        cost = np.asarray((distance or self._distance)(pred, boxes[det_idx]), np.float64)
        if fuse:
            cost = 1.0 - (1.0 - cost) * score[det_idx][None, :]
        if self.class_cost:
            tc = np.array([t.class_id for t in tracks])
            cost = cost + self.class_cost * (tc[:, None] != class_id[det_idx][None, :])
        return cost

    def _stitch(self, track_idx: List[int], det_idx: List[int], z_all: np.ndarray) -> List[Tuple[int, int]]:
        tracks = [self._tracks[i] for i in track_idx]
        mean = np.stack([t.mean for t in tracks])
        cov = np.stack([t.cov for t in tracks])
        z = z_all[det_idx]
        d2 = self.kf.position_distance(mean, cov, z, scale=self.stitch_noise, isotropic=True)
        # or where it was last seen (an object that stopped before or while hidden is not where its velocity says),
        # within the measurement noise only: this hypothesis does not widen with the time lost
        last = np.stack([t.last_z for t in tracks])
        r2 = (self.stitch_noise * self.kf.std_pos * last[:, 2:4].max(axis=1, keepdims=True)) ** 2
        d2 = np.minimum(d2, ((z[None, :, :2] - last[:, None, :2]) ** 2).sum(-1) / r2)
        h_track, h_det = mean[:, 3:4], z[None, :, 3]
        ratio = np.maximum(h_track / np.maximum(h_det, 1e-6), h_det / np.maximum(h_track, 1e-6))
        d2 = np.where(ratio <= self.stitch_size_ratio, d2, np.inf)
        pairs, _, _ = _assign(np.where(np.isfinite(d2), d2 / self.stitch_gate, 2.0), 1.0)
        return pairs

    def _observe(self, t: _Track, d: int, z_all: np.ndarray, score: np.ndarray, class_id: np.ndarray,
                 boxes: np.ndarray, now: float, index: int, wall: float) -> None:
        t.hits = t.hits + 1 if t.state != _TENTATIVE or index - t.last_frame <= 1 else 1
        t.last_seen, t.last_frame, t.last_wall, t.last_z = now, index, wall, z_all[d].copy()
        t.score = float(score[d])
        t.best_score = max(t.best_score, t.score)
        t.vote(int(class_id[d]), t.score)
        self._append_trail(t, boxes[d])

    def _append_trail(self, t: _Track, box: np.ndarray) -> None:
        if self.trail:
            t.trail.append((float(box[0] + box[2]) / 2, float(box[3])))
            del t.trail[:-self.trail]

    def _confirm(self, t: _Track, d: int, boxes: np.ndarray, score: np.ndarray, frame: Frame,
                 events: List[Dict[str, Any]]) -> None:
        t.state, t.track_id = _TRACKED, self._next_id
        self._next_id += 1
        self._confirmed_total += 1
        events.append({"type": "object_new", "track_id": t.track_id, "class_name": class_name(t.class_id, self.names),
                       "score": round(float(score[d]), 5), "xyxy": [round(float(v), 2) for v in boxes[d]],
                       "frame": int(frame.index), "wall_time": float(frame.wall_time)})

    def _end_event(self, t: _Track, frame: Frame) -> Dict[str, Any]:
        return {"type": "object_end", "track_id": t.track_id, "class_name": class_name(t.class_id, self.names),
                "first_seen": t.first_wall, "last_seen": t.last_wall, "first_frame": t.first_frame,
                "last_frame": t.last_frame, "best_score": round(t.best_score, 5), "frame": int(frame.index),
                "wall_time": float(frame.wall_time)}

    def _output(self, dets: Detections, out_idx: List[int], out_tracks: List[_Track]) -> Detections:
        if self.keep_unconfirmed:
            extra = [i for i in range(len(dets)) if i not in set(out_idx)]
        else:
            extra = []
        idx = np.asarray(out_idx + extra, np.int64)
        order = np.argsort(idx, kind="stable")  # keep the detector's order
        idx = idx[order]
        ids = np.array([t.track_id for t in out_tracks] + [-1] * len(extra), np.int64)[order]
        cls = np.concatenate([np.array([t.class_id for t in out_tracks], np.int32),
                              dets.class_id[np.asarray(extra, np.int64)]])[order] if len(idx) else np.zeros(0, np.int32)
        data = {k: v[idx] for k, v in dets.data.items()}
        data["det_class_id"] = dets.class_id[idx]
        if self.trail:
            trail = np.full((len(idx), self.trail, 2), np.nan, np.float32)
            for row, t in zip(np.argsort(order, kind="stable")[:len(out_tracks)], out_tracks):
                pts = np.asarray(t.trail, np.float32)
                trail[row, self.trail - len(pts):] = pts
            data["trail"] = trail
        return Detections(dets.xyxy[idx], dets.score[idx], cls, ids, data, dets.metadata)
