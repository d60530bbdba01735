"""ByteTrack-style multi-object tracker: Kalman motion, two-stage association, motion-checked re-attachment.

Input: the :class:`~edge_detect.types.Detections` of one frame of one source (``xyxy`` float32 original-frame
pixels). Output: the detections that belong to **confirmed** tracks, each with a unique ``track_id`` (int64,
``>= 1``, never reused within a stream), ``class_id`` replaced by the track's class, plus per-row ``data``:

* ``det_class_id`` int32 ``(N,)``: the class the detector gave this frame;
* ``trail`` float32 ``(N, trail, 2)``: the track's last ``trail`` bottom-centre points, oldest first,
  ``NaN``-padded (drawn by :mod:`edge_detect.annotate`; the first points may predate confirmation);
* ``dwell_s`` float32 ``(N,)``: stream seconds since the track's first sighting;
* ``velocity_px_s`` float32 ``(N, 2)`` and ``speed_px_s`` float32 ``(N,)``: the track's centre velocity observed
  over the last ``velocity_window_s``, pixels per second of stream time (``NaN`` until the frame interval is
  known); ``speed_m_s`` too when ``meters_per_px`` is given;
* ``entered`` ``<U6`` ``(N,)``: the frame edge the track came in through (``left``/``top``/``right``/``bottom``,
  ``""`` = it appeared inside the picture);

and ``metadata["events"]``: :class:`~edge_detect.types.ObjectNew` when a track is confirmed (with the edge it
entered through), :class:`~edge_detect.types.ObjectEnd` when it is dropped (with ``dwell_s`` and the edges it
entered and left through).
:meth:`ByteTrack.track_infos` gives the same per-track data for every remembered track (with the edge a track
left through, once it has).

Per frame (``steps`` = frame-index difference, so frames dropped by a live source advance the motion model), one
method per step:

1. :meth:`~ByteTrack._predict`: every track's Kalman state
   (:class:`~edge_detect.stream.kalman.KalmanBoxFilter`, constant velocity on centre and size) is predicted; a
   lost track keeps its centre velocity (its size velocity is zeroed);
2. :meth:`~ByteTrack._split`: **cross-class duplicates** are dropped (two boxes of different classes at IoU >=
   ``cross_class_iou``: per-class NMS keeps a ``car`` and a ``truck`` box on one vehicle; the higher score stays,
   so one object feeds one track), the rest split into high (``score >= high_thresh``) and low detections;
3. :meth:`~ByteTrack._match_confirmed`: high detections are assigned to confirmed tracks, tracked or lost, by
   ``linear_sum_assignment`` on the distance (default ``1 - IoU`` of the predicted box, times the score as in
   ByteTrack with ``fuse_score``, plus ``class_cost`` when the classes differ: association is class-agnostic,
   the class a vote) below ``match_thresh``;
4. :meth:`~ByteTrack._match_low`: low detections (``low_thresh <= score < high_thresh``) keep the tracks left
   unmatched alive (tracked, tentative, and lost ones that did not leave the picture; ``1 - IoU`` of the
   predicted box below ``low_match_thresh``); they never start tracks. After frames the detector skipped (a
   detect rate), a tentative track, which has no velocity yet, may also take a low detection it can reach at
   walking pace (``start_speed``) from its last sighting: 0.2 s later a narrow walker no longer overlaps its
   zero-velocity prediction;
5. :meth:`~ByteTrack._recover`: **re-attachment** (``stitch``): lost tracks, and tracked ones just missed, may
   take a remaining high detection only where their own motion can bring them in the time lost
   (:func:`~edge_detect.stream.track_rules.reach_cost`: near the linear extrapolation of the last observed centre
   with the velocity observed over the last ``velocity_window_s``, as OC-SORT estimates it; a stationary
   track only near where it was last seen) and at a height within ``stitch_size_ratio``; with ``appearance``
   also only with a similar colour histogram. A track that **left through a frame edge** (its last box touched
   the border and it moved out through it, or its prediction left the picture) is never re-attached: it is
   ended ``exit_grace_s`` after its last sighting. This keeps the id of an object hidden behind something for
   about a second, and never hands a departed object's id to a newcomer;
6. :meth:`~ByteTrack._match_tentative`: tentative tracks are matched to what is left (``1 - IoU`` below
   ``tentative_match_thresh``, then by reachability: on its second sighting a track may move up to ``fast_gate`` box
   sizes per frame since its first, so an object faster than half its width per frame is picked up; not when the
   detector skipped frames and also missed it on a look in between, see below; its velocity is set from its first
   two sightings); a tentative track unseen for more than ``tentative_gap`` frames is dropped; after ``min_hits``
   sightings (none more than ``tentative_gap`` frames apart) it is **confirmed** and only then gets an id (so no two
   objects ever share a placeholder id);
7. :meth:`~ByteTrack._apply` updates the matched tracks (after a gap the velocity is re-estimated from the last
   observation before the gap and the new one, as OC-SORT's re-update does), :meth:`~ByteTrack._age` turns
   missed tracks lost, :meth:`~ByteTrack._expire` ends expired ones (``object_end``; lost unseen for more than
   ``buffer_s`` seconds of stream time, not counting a camera freeze of up to ``max_freeze_s``; it also runs
   before the association, so an expired track is never revived), :meth:`~ByteTrack._start` starts tentative
   tracks from remaining high detections with ``score >= new_track_thresh``.

**Frames the detector did not run on** (``detections.metadata["inferred"] is False``: a frame gated out by motion
gating or a detect rate, :mod:`edge_detect.stream.gating`) are neither sightings nor misses
(:meth:`~ByteTrack._carry`): every track is predicted (step 1: the Kalman state keeps stepping one frame per frame,
so the prediction at the next inferred frame spans the real gap), nothing is associated, aged or expired, and the
output is the **predicted box** of every tracked (confirmed, not lost) track (clipped to the frame; its last score
and the per-object data), so the annotated video and the JSONL keep their boxes. Such a frame does not count against
a tentative track (``tentative_gap`` and ``min_hits`` count the frames the detector looked at), and a tracked track
is presumed present through it: its ``buffer_s`` clock starts at the first inferred frame that misses it, as it
would if the detector had run on every frame; and a lost track's ``buffer_s`` (and ``exit_grace_s``) is extended by
the stream time the detector skipped just before the frame that looks again, so an object back in view on a skipped
frame before its track would have expired is still re-attached at the next look. A tentative track seen once that
the detector also missed on a look since is matched only within its walking reach (``start_speed``), not within the
per-frame ``fast_gate`` over the whole frame gap (at 5 looks a second that would span most of the picture and pair
it with anything, a static false detection included). For confirmation, the frames between two sightings that the
detector skipped count as covered: at a detect rate of 5 on a 25 fps camera a track is confirmed on its second
sighting (0.2 s apart, longer than the three consecutive frames ``min_hits`` asks on every frame). Line and zone
counters take the predicted boxes as presence only, never as a crossing or an entry
(:mod:`edge_detect.stream.processors.region`).

Class flicker: each track sums the scores per detected class; its class is the one with the largest sum, so
a few frames of ``truck`` on a long-lived ``car`` change neither the id nor the class.

The distance is swappable (norfair style): ``distance="iou"`` / ``"giou"`` or any callable
``(track_xyxy (T, 4), det_xyxy (D, 4)) -> cost (T, D)`` with ``0`` = identical, ``>= 1`` = unrelated.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge_detect.boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou, xyxy_to_cxcywh
from edge_detect.errors import ConfigError
from edge_detect.stream.kalman import KalmanBoxFilter
from edge_detect.stream.processors._common import class_name, media_time
from edge_detect.stream.processors.base import register_processor
from edge_detect.stream.track_rules import (colour_histograms, cross_class_keep, entry_edge, exit_edge,
                                            histogram_distance, reach_cost)
from edge_detect.types import Detections, Event, Frame, ObjectEnd, ObjectNew

__all__ = ["ByteTrack", "TrackInfo", "iou_distance", "giou_distance", "DISTANCES"]

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
_FREEZE_MIN_S = 0.5  # the shortest stretch without frames that counts as a freeze (max_freeze_s)


@dataclass(frozen=True)
class TrackInfo:
    """What a track knows about its object (:meth:`ByteTrack.track_infos`).

    Attributes:
        track_id: ``>= 1``.
        class_id: the track's (majority) class.
        state: ``"tracked"`` (seen this frame) or ``"lost"``.
        xyxy: last observed box, original-frame pixels.
        first_seen, last_seen: stream seconds (:func:`~edge_detect.stream.processors._common.media_time`).
        dwell_s: ``last_seen - first_seen``.
        velocity_px_s: centre velocity ``(vx, vy)``, pixels per second (``NaN`` before the frame interval is known).
        speed_px_s: its norm; ``speed_m_s``: times ``meters_per_px`` (``None`` without a scale).
        entered: the edge it came in through (``left``/``top``/``right``/``bottom``; ``""`` = appeared inside).
        exited: the edge it left through (``""`` = has not left the picture).
    """

    track_id: int
    class_id: int
    state: str
    xyxy: Tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    dwell_s: float
    velocity_px_s: Tuple[float, float]
    speed_px_s: float
    speed_m_s: Optional[float]
    entered: str
    exited: str


@dataclass
class _Track:
    mean: np.ndarray
    cov: np.ndarray
    first_seen: float
    first_frame: int
    first_wall: float
    first_box: np.ndarray
    last_seen: float
    last_frame: int
    last_wall: float
    last_z: np.ndarray  # cx, cy, w, h of the last observation
    last_box: np.ndarray  # xyxy of the last observation
    score: float
    state: str = _TENTATIVE
    hits: int = 1
    track_id: int = -1
    best_score: float = 0.0
    class_votes: Dict[int, float] = field(default_factory=dict)
    class_id: int = -1
    trail: List[Tuple[float, float]] = field(default_factory=list)
    obs: Deque[Tuple[int, float, float, float]] = field(default_factory=lambda: deque(maxlen=48))  # frame, cx, cy, w
    entered: str = ""
    exited: str = ""
    hist: Optional[np.ndarray] = None
    frozen_at_seen: float = 0.0  # ByteTrack._frozen_s at the last sighting
    skipped_at_seen: int = 0  # ByteTrack._skipped at the last sighting (frames the detector did not run on)
    alive_t: float = 0.0  # stream time last seen or presumed present (carried through a not-inferred frame)
    alive_frozen: float = 0.0  # ByteTrack._frozen_s at alive_t

    def vote(self, class_id: int, score: float) -> None:
        """Add ``score`` to ``class_id``'s votes; the track's class is the class with the largest sum."""
        self.class_votes[class_id] = self.class_votes.get(class_id, 0.0) + score
        if class_id != self.class_id:  # the leader only changes when another class gains
            self.class_id = max(self.class_votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]

    def velocity(self, window: int) -> np.ndarray:
        """Observed centre velocity, px/frame: from the newest observation at least ``window`` frames before the
        last one (or the oldest kept) to the last one; zeros with a single observation. Observations of a box
        narrower than 0.8 of the widest kept are left out (partly hidden or cut by the frame edge: their centre
        moves with what hides them), unless that leaves fewer than two."""
        return np.array(self.velocity_xy(window))

    def velocity_xy(self, window: int) -> Tuple[float, float]:
        """:meth:`velocity` as two floats (one backward scan of the observations, no array: it runs for every
        output track on every frame)."""
        obs = self.obs
        if len(obs) < 2:
            return 0.0, 0.0
        v = _scan_velocity(obs, window, 0.8 * max(obs, key=_WIDTH)[3])
        return v if v is not None else _scan_velocity(obs, window, float("-inf"))  # type: ignore[return-value]


_WIDTH = itemgetter(3)


def _scan_velocity(obs: Deque[Tuple[int, float, float, float]], window: int,
                   min_width: float) -> Optional[Tuple[float, float]]:
    """The velocity of :meth:`_Track.velocity` over the observations at least ``min_width`` wide (``None`` when
    fewer than two are)."""
    last = ref = None
    for o in reversed(obs):
        if o[3] < min_width:
            continue
        if last is None:
            last = o
            continue
        ref = o
        if last[0] - o[0] >= window:
            break
    if ref is None or last is None:
        return None
    df = last[0] - ref[0]
    return (0.0, 0.0) if df == 0 else ((last[1] - ref[1]) / df, (last[2] - ref[2]) / df)


@dataclass
class _Step:
    """One frame's inputs, shared by the steps of :meth:`ByteTrack.update`."""

    frame: Frame
    now: float
    index: int
    wall: float
    steps: int
    boxes: np.ndarray  # float64 (D, 4) xyxy
    z: np.ndarray  # float64 (D, 4) cx, cy, w, h
    score: np.ndarray  # float64 (D,)
    cls: np.ndarray  # int (D,)
    events: List[Event]
    hists: Optional[np.ndarray] = None
    grace_s: float = 0.0  # stream seconds the detector skipped right before this frame (ByteTrack._look_grace)

    def __post_init__(self) -> None:  # python lists for the per-track loops (faster than numpy scalars)
        self.z_list, self.boxes_list = self.z.tolist(), self.boxes.tolist()
        self.score_list, self.cls_list = self.score.tolist(), [int(c) for c in self.cls]


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


def _check_options(**o: Any) -> None:
    checks = [
        (0.0 <= o["low_thresh"] <= o["high_thresh"] <= 1.0, "low_thresh <= high_thresh", "0 <= low <= high <= 1",
         (o["low_thresh"], o["high_thresh"])),
        (o["new_track_thresh"] is None or 0.0 <= o["new_track_thresh"] <= 1.0, "new_track_thresh",
         "a value in [0, 1]", o["new_track_thresh"]),
        (0.0 < o["match_thresh"] <= 1.0, "match_thresh", "a value in (0, 1]", o["match_thresh"]),
        (0.0 < o["low_match_thresh"] <= 1.0, "low_match_thresh", "a value in (0, 1]", o["low_match_thresh"]),
        (0.0 < o["tentative_match_thresh"] <= 1.0, "tentative_match_thresh", "a value in (0, 1]",
         o["tentative_match_thresh"]),
        (int(o["min_hits"]) >= 1, "min_hits", ">= 1", o["min_hits"]),
        (o["buffer_s"] >= 0, "buffer_s", ">= 0 seconds", o["buffer_s"]),
        (o["fps"] is None or o["fps"] > 0, "fps", "> 0", o["fps"]),
        (o["class_cost"] >= 0, "class_cost", ">= 0", o["class_cost"]),
        (o["stitch_noise"] > 0, "stitch_noise", "> 0", o["stitch_noise"]),
        (o["stitch_size_ratio"] >= 1, "stitch_size_ratio", ">= 1", o["stitch_size_ratio"]),
        (o["reach_tol"] > 0, "reach_tol", "> 0", o["reach_tol"]),
        (o["start_speed"] >= 0, "start_speed", ">= 0 box heights per second", o["start_speed"]),
        (o["velocity_window_s"] > 0, "velocity_window_s", "> 0 seconds", o["velocity_window_s"]),
        (o["exit_grace_s"] >= 0, "exit_grace_s", ">= 0 seconds", o["exit_grace_s"]),
        (o["fast_gate"] > 0, "fast_gate", "> 0 box sizes", o["fast_gate"]),
        (int(o["tentative_gap"]) >= 0, "tentative_gap", ">= 0 frames", o["tentative_gap"]),
        (o["max_freeze_s"] >= 0, "max_freeze_s", ">= 0 seconds", o["max_freeze_s"]),
        (o["cross_class_iou"] is None or 0.0 < o["cross_class_iou"] <= 1.0, "cross_class_iou",
         "a value in (0, 1] or null", o["cross_class_iou"]),
        (0.0 < o["appearance_thresh"] <= 1.0, "appearance_thresh", "a value in (0, 1]", o["appearance_thresh"]),
        (o["meters_per_px"] is None or o["meters_per_px"] > 0, "meters_per_px", "> 0 or null", o["meters_per_px"]),
        (int(o["trail"]) >= 0, "trail", ">= 0 points", o["trail"]),
    ]
    for ok, what, expected, actual in checks:
        if not ok:
            raise ConfigError(f"bytetrack {what}: expected {expected}, got {actual}")


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
        min_hits: consecutive hits that confirm a track (1 = confirm at once); frames the detector did not run on
            do not break the run and count as covered (module doc).
        buffer_s: seconds of stream time a lost track is kept (stream time: ``pts``, or ``index / fps`` when
            ``fps`` is given, or wall time; see :func:`~edge_detect.stream.processors._common.media_time`).
        fps: the stream's frame rate, when the frames' timestamps should not be used.
        distance: ``"iou"``, ``"giou"`` or a callable (see module doc).
        fuse_score: multiply the first-stage similarity by the detection score (ByteTrack's ``fuse_score``).
        class_cost: added to the distance when a detection's class differs from the track's (0 = class-blind).
        stitch: re-attach lost tracks by their motion (step 5); ``False`` = plain ByteTrack.
        stitch_noise: the re-attachment radius however short the travel, in box-noise units (two standard
            deviations of ``stitch_noise * std_pos * max(w, h)``: 0.4 box sizes by default).
        stitch_size_ratio: the largest ratio of heights between a lost track and the detection it takes.
        reach_tol: the re-attachment radius as a fraction of the travel predicted since the last sighting.
        start_speed: box heights per second a lost object may have sped up to: a slow track may have gone that
            far in its direction, a stationary one (under a tenth of its size per second) in any direction.
        velocity_window_s: stream seconds over which a track's observed velocity is measured (its last
            observation against the newest one at least this much older; a longer window is less swayed by a
            box that is partly hidden for a few frames).
        exit_grace_s: seconds a track that left through a frame edge may still continue by box overlap (an
            object on the border missed for a frame) before it is ended.
        fast_gate: how far, in box sizes per frame, a new track may move between its first two sightings.
        tentative_gap: frames a tentative track may go unseen between two sightings (0 = dropped at its first
            miss); it still needs ``min_hits`` sightings to be confirmed. Frames the detector did not run on are
            not counted.
        max_freeze_s: a stretch of at least 0.5 s and at most this long without any frame (a camera or network
            freeze) does not count against ``buffer_s``: the tracks could not be seen, they were not missed.
        cross_class_iou: boxes of different classes overlapping this much are one object (``None`` = off).
        appearance: also require a similar hue-saturation histogram for a re-attachment (needs ``frame.image``).
        appearance_thresh: the largest histogram (Hellinger) distance accepted with ``appearance``.
        meters_per_px: ground scale for ``speed_m_s`` (``None`` = no metric speed).
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
                 min_hits: int = 3, buffer_s: float = 3.0, fps: Optional[float] = None,
                 distance: Union[str, DistanceFn] = "iou", fuse_score: bool = False, class_cost: float = 0.1,
                 stitch: bool = True, stitch_noise: float = 4.0, stitch_size_ratio: float = 1.5,
                 reach_tol: float = 0.6, start_speed: float = 1.0, velocity_window_s: float = 0.6,
                 exit_grace_s: float = 0.3,
                 fast_gate: float = 1.6, tentative_gap: int = 1, max_freeze_s: float = 3.0,
                 cross_class_iou: Optional[float] = 0.7, appearance: bool = False,
                 appearance_thresh: float = 0.5, meters_per_px: Optional[float] = None, trail: int = 16,
                 names: Sequence[str] = (), keep_unconfirmed: bool = False) -> None:
        self._options: Dict[str, Any] = dict(
            high_thresh=high_thresh, low_thresh=low_thresh, new_track_thresh=new_track_thresh,
            match_thresh=match_thresh, low_match_thresh=low_match_thresh,
            tentative_match_thresh=tentative_match_thresh, min_hits=min_hits, buffer_s=buffer_s, fps=fps,
            distance=distance, fuse_score=fuse_score, class_cost=class_cost, stitch=stitch,
            stitch_noise=stitch_noise, stitch_size_ratio=stitch_size_ratio, reach_tol=reach_tol,
            start_speed=start_speed, velocity_window_s=velocity_window_s, exit_grace_s=exit_grace_s,
            fast_gate=fast_gate,
            tentative_gap=tentative_gap, max_freeze_s=max_freeze_s,
            cross_class_iou=cross_class_iou, appearance=appearance, appearance_thresh=appearance_thresh,
            meters_per_px=meters_per_px, trail=trail, names=tuple(names), keep_unconfirmed=keep_unconfirmed)
        _check_options(**self._options)
        self._distance = self._resolve_distance(distance)
        self.high_thresh, self.low_thresh = float(high_thresh), float(low_thresh)
        self.new_track_thresh = float(high_thresh if new_track_thresh is None else new_track_thresh)
        self.match_thresh, self.low_match_thresh = float(match_thresh), float(low_match_thresh)
        self.tentative_match_thresh = float(tentative_match_thresh)
        self.min_hits, self.buffer_s, self.fps = int(min_hits), float(buffer_s), fps
        self.fuse_score, self.class_cost = bool(fuse_score), float(class_cost)
        self.stitch, self.stitch_noise, self.stitch_size_ratio = bool(stitch), float(stitch_noise), \
            float(stitch_size_ratio)
        self.reach_tol, self.start_speed = float(reach_tol), float(start_speed)
        self.velocity_window_s = float(velocity_window_s)
        self.exit_grace_s, self.fast_gate = float(exit_grace_s), float(fast_gate)
        self.tentative_gap, self.max_freeze_s = int(tentative_gap), float(max_freeze_s)
        self.cross_class_iou = None if cross_class_iou is None else float(cross_class_iou)
        self.appearance, self.appearance_thresh = bool(appearance), float(appearance_thresh)
        self.meters_per_px = None if meters_per_px is None else float(meters_per_px)
        self.trail, self.names, self.keep_unconfirmed = int(trail), tuple(names), bool(keep_unconfirmed)
        self.kf = KalmanBoxFilter()
        self.reset()

    @staticmethod
    def _resolve_distance(distance: Union[str, DistanceFn]) -> DistanceFn:
        if isinstance(distance, str):
            if distance not in DISTANCES:
                raise ConfigError(f"bytetrack distance: expected one of {', '.join(DISTANCES)} or a callable, "
                                  f"got {distance!r}")
            return DISTANCES[distance]
        if callable(distance):
            return distance
        raise ConfigError(f"bytetrack distance: expected a name or a callable, got {type(distance).__name__}")

    # ----------------------------------------------------------------------------------------- protocol

    def clone(self) -> "ByteTrack":
        """A fresh tracker with the same settings (ids restart at 1)."""
        return ByteTrack(**self._options)

    def reset(self) -> None:
        """Forget every track; ids restart at 1."""
        self._tracks: List[_Track] = []
        self._next_id = 1
        self._last_index: Optional[int] = None
        self._last_now: Optional[float] = None
        self._dt: Optional[float] = 1.0 / float(self.fps) if self.fps else None
        self._prev_image: Optional[np.ndarray] = None
        self._frozen_s = 0.0  # stream seconds without frames forgiven so far (max_freeze_s)
        self._skipped = 0  # frames the detector did not run on (metadata["inferred"] False) so far
        self._looked: Optional[Tuple[float, int]] = None  # (stream time, _skipped) at the last inferred frame
        self._confirmed_total = self._stitched = 0

    @property
    def active_tracks(self) -> int:
        """Confirmed tracks currently remembered (tracked or lost)."""
        return sum(1 for t in self._tracks if t.state != _TENTATIVE)

    def summary(self) -> Dict[str, Any]:
        """``{"tracker": {"name", "tracks", "stitched"}}``: confirmed tracks so far and lost tracks re-acquired
        by stitching."""
        return {"tracker": {"name": self.name, "tracks": self._confirmed_total, "stitched": self._stitched}}

    def finish(self, frame: Frame) -> List[Event]:
        """End of the source: ``object_end`` for every confirmed track still remembered; the state is cleared."""
        events = [self._end_event(t, frame) for t in self._tracks if t.track_id > 0]
        self._tracks = []
        return events

    def track_infos(self) -> List[TrackInfo]:
        """Every confirmed track remembered now (tracked or lost), in id order (see :class:`TrackInfo`)."""
        out = []
        for t in sorted((t for t in self._tracks if t.track_id > 0), key=lambda t: t.track_id):
            v = self._velocity_px_s(t)
            speed = float(np.hypot(v[0], v[1]))
            out.append(TrackInfo(
                t.track_id, t.class_id, t.state, tuple(float(x) for x in t.last_box), t.first_seen, t.last_seen,
                t.last_seen - t.first_seen, (float(v[0]), float(v[1])), speed,
                None if self.meters_per_px is None else speed * self.meters_per_px, t.entered, t.exited))
        return out

    # ----------------------------------------------------------------------------------------- update

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """Track one frame (see module doc).

        Args:
            detections: boxes ``xyxy`` float32 original-frame pixels, scores, classes of this frame.
            frame: the frame they come from (index, timestamps, image); frames of one source, in order.

        Returns:
            Detections of confirmed tracks with ``track_id`` (int64 ``>= 1``), the track's ``class_id`` and the
            ``data`` of the module doc; events appended to ``metadata["events"]``.
        """
        if detections.metadata.get("inferred") is False:
            return self._carry(detections, frame)
        st = self._begin(detections, frame)
        st.grace_s = self._look_grace(st)
        self._expire(st)
        self._predict(st.steps)
        high, low = self._split(st)
        assigned: Dict[int, int] = {}  # track list index -> detection index
        rest = self._match_confirmed(st, high, assigned)
        self._match_low(st, low, assigned)
        rest = self._recover(st, rest, assigned)
        rest = self._match_tentative(st, rest, assigned)
        out_idx, out_tracks = self._apply(st, assigned)
        self._age(st, assigned)
        self._start(st, rest, out_idx, out_tracks)
        self._prev_image = frame.image if self.appearance else None
        return self._output(detections, out_idx, out_tracks)

    def _begin(self, detections: Detections, frame: Frame) -> _Step:
        """Times, frame step and the detections as float64 arrays."""
        now, index = media_time(frame, self.fps), int(frame.index)
        steps = 1 if self._last_index is None else max(index - self._last_index, 1)
        if self._last_now is not None and now > self._last_now:
            elapsed = now - self._last_now
            if not self.fps:
                self._dt = elapsed / steps if self._dt is None else 0.9 * self._dt + 0.1 * elapsed / steps
            if _FREEZE_MIN_S <= elapsed <= self.max_freeze_s and self._dt:
                self._frozen_s += elapsed - self._dt
        self._last_index, self._last_now = index, now
        boxes = detections.xyxy.astype(np.float64).reshape(-1, 4)
        return _Step(frame, now, index, float(frame.wall_time), steps, boxes, xyxy_to_cxcywh(boxes),
                     detections.score.astype(np.float64), detections.class_id,
                     detections.metadata.setdefault("events", []))

    def _carry(self, detections: Detections, frame: Frame) -> Detections:
        """A frame the detector did not run on (module doc): predict every track, presume the tracked ones
        present, output their predicted boxes; no association, no aging, no expiry."""
        st = self._begin(detections, frame)
        self._skipped += 1
        self._predict(st.steps)
        h, w = frame.shape
        carried, boxes = [], []
        for t in self._tracks:
            if t.state != _TRACKED:
                continue
            t.alive_t, t.alive_frozen = st.now, self._frozen_s
            box = np.clip(cxcywh_to_xyxy(t.mean[None, :4])[0], 0, [w, h, w, h])
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:  # predicted out of the picture: not drawn
                carried.append(t)
                boxes.append(box)
        n = len(carried)
        cls = np.array([t.class_id for t in carried], np.int32)
        data = {"det_class_id": cls.copy(), **self._track_data(n, np.arange(n), carried)}
        return Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                          np.array([t.score for t in carried], np.float32), cls,
                          np.array([t.track_id for t in carried], np.int64), data, detections.metadata)

    def _look_grace(self, st: _Step) -> float:
        """Stream seconds the detector skipped just before this inferred frame (0 when it ran on the previous
        frame): a lost track's expiry waits that much longer (module doc)."""
        prev, self._looked = self._looked, (st.now, self._skipped)
        if prev is None or prev[1] == self._skipped:
            return 0.0
        return max(0.0, st.now - prev[0] - (self._dt or 0.0))

    def _missed_look(self, t: _Track, st: _Step) -> bool:
        """Whether the detector skipped frames since ``t``'s last sighting and also looked in between without
        seeing it (a detect rate): a track seen once is then not given the per-frame ``fast_gate`` over the whole
        frame gap, which at 5 looks a second spans most of the picture (module doc)."""
        return self._skipped > t.skipped_at_seen and self._detector_gap(t, st) > 1

    def _detector_gap(self, t: _Track, st: _Step) -> int:
        """Frames since ``t``'s last sighting that the detector ran on (this one included): the frame-index gap less
        the frames it did not run on (module doc)."""
        return st.index - t.last_frame - (self._skipped - t.skipped_at_seen)

    def _predict(self, steps: int) -> None:
        """Step 1: advance every track's Kalman state by ``steps`` frames."""
        if not self._tracks:
            return
        for t in self._tracks:
            if t.state == _LOST:
                t.mean[6:8] = 0.0
        mean, cov = self.kf.predict(np.stack([t.mean for t in self._tracks]), np.stack([t.cov for t in self._tracks]),
                                    steps)
        for t, m, c in zip(self._tracks, mean, cov):
            t.mean, t.cov = m, c

    def _split(self, st: _Step) -> Tuple[np.ndarray, np.ndarray]:
        """Step 2: drop cross-class duplicates; indices of the high and the low detections."""
        keep = st.score >= self.low_thresh
        idx = np.flatnonzero(keep)
        if len(idx) > 1 and self.cross_class_iou is not None and (st.cls[idx] != st.cls[idx[0]]).any():
            keep[idx] = cross_class_keep(st.boxes[idx], st.score[idx], st.cls[idx], self.cross_class_iou)
        high = st.score >= self.high_thresh
        return np.flatnonzero(keep & high), np.flatnonzero(keep & ~high)

    def _match_confirmed(self, st: _Step, high: np.ndarray, assigned: Dict[int, int]) -> List[int]:
        """Step 3: high detections vs confirmed tracks (tracked and lost); returns the unmatched detections."""
        pool = [i for i, t in enumerate(self._tracks) if t.state != _TENTATIVE]
        cost = self._cost(pool, high, st, fuse=self.fuse_score)
        pairs, _, um_high = _assign(cost, self.match_thresh)
        for r, c in pairs:
            assigned[pool[r]] = int(high[c])
        return [int(high[j]) for j in um_high]

    def _match_low(self, st: _Step, low: np.ndarray, assigned: Dict[int, int]) -> None:
        """Step 4: low detections keep the unmatched tracks (but those that left the picture) alive; a tentative
        track the detector skipped frames of since its last sighting may also take one it can reach at walking
        pace (module doc)."""
        still = [i for i, t in enumerate(self._tracks) if i not in assigned and not t.exited]
        cost = self._cost(still, low, st, fuse=False, distance=iou_distance)
        pairs, _, um_low = _assign(cost, self.low_match_thresh)
        for r, c in pairs:
            assigned[still[r]] = int(low[c])
        gapped = [i for i in still if i not in assigned and self._tracks[i].state == _TENTATIVE
                  and self._tracks[i].skipped_at_seen < self._skipped]
        rest = [int(low[j]) for j in um_low]
        if self.stitch and gapped and rest:
            for r, c in self._reach_pairs(gapped, rest, st, appearance=False, fast=False):
                assigned[gapped[r]] = rest[c]

    def _recover(self, st: _Step, rest: List[int], assigned: Dict[int, int]) -> List[int]:
        """Step 5: re-attach lost (and just-missed) confirmed tracks that did not leave the picture to remaining
        high detections they can reach (see module doc); returns the detections still unmatched."""
        if not (self.stitch and rest):
            return rest
        orphans = [i for i, t in enumerate(self._tracks)
                   if t.state != _TENTATIVE and i not in assigned and not t.exited]
        pairs = self._reach_pairs(orphans, rest, st, appearance=self.appearance)
        for r, c in pairs:
            assigned[orphans[r]] = rest[c]
            self._stitched += self._tracks[orphans[r]].state == _LOST
        taken = {rest[c] for _, c in pairs}
        return [d for d in rest if d not in taken]

    def _match_tentative(self, st: _Step, rest: List[int], assigned: Dict[int, int]) -> List[int]:
        """Step 6: tentative tracks vs what is left, by overlap then by reachability (fast new objects)."""
        tentative = [i for i, t in enumerate(self._tracks) if t.state == _TENTATIVE]
        rh = np.asarray(rest, np.int64)
        cost = self._cost(tentative, rh, st, fuse=False)
        pairs, um_tent, um_rest = _assign(cost, self.tentative_match_thresh)
        for r, c in pairs:
            assigned[tentative[r]] = int(rh[c])
        rest = [int(rh[j]) for j in um_rest]
        if self.stitch and rest and um_tent:
            orphans = [tentative[r] for r in um_tent]
            pairs = self._reach_pairs(orphans, rest, st, appearance=False)
            for r, c in pairs:
                assigned[orphans[r]] = rest[c]
            taken = {rest[c] for _, c in pairs}
            rest = [d for d in rest if d not in taken]
        return rest

    def _apply(self, st: _Step, assigned: Dict[int, int]) -> Tuple[List[int], List[_Track]]:
        """Step 7a: Kalman-update the matched tracks, confirm tentative ones, revive lost ones; returns the
        detection indices and tracks to output."""
        out_idx: List[int] = []
        out_tracks: List[_Track] = []
        if not assigned:
            return out_idx, out_tracks
        ti = sorted(assigned)
        di = [assigned[i] for i in ti]
        ts = [self._tracks[i] for i in ti]
        mean, cov = self.kf.update(np.stack([t.mean for t in ts]), np.stack([t.cov for t in ts]), st.z[di])
        for t, m, c, d in zip(ts, mean, cov, di):
            gap = st.index - t.last_frame
            t.mean, t.cov = m, c
            if (gap > 1 and t.state != _TENTATIVE) or (t.state == _TENTATIVE and t.hits == 1):
                # re-acquired after a gap, or the second sighting of a new track: velocity from the observations
                t.mean[4:6] = (st.z[d, :2] - t.last_z[:2]) / max(gap, 1)
            self._observe(t, d, st)
            if t.state == _TENTATIVE and t.hits >= self.min_hits:
                self._confirm(t, d, st)
            elif t.state == _LOST:
                t.state = _TRACKED
            if t.state == _TRACKED:
                out_idx.append(d)
                out_tracks.append(t)
        return out_idx, out_tracks

    def _age(self, st: _Step, assigned: Dict[int, int]) -> None:
        """Step 7b: missed tentative tracks die, tracked ones become lost (noting the edge they left through),
        expired ones end (:meth:`_expire`)."""
        survivors: List[_Track] = []
        shape = st.frame.shape
        for i, t in enumerate(self._tracks):
            if i in assigned:
                survivors.append(t)
                continue
            if t.state == _TENTATIVE:
                if self._detector_gap(t, st) <= self.tentative_gap:
                    survivors.append(t)
                continue
            if t.state == _TRACKED and self.appearance and self._prev_image is not None:
                t.hist = colour_histograms(self._prev_image, t.last_box[None])[0]
            t.state = _LOST
            if not t.exited:
                t.exited = self._exit_of(t, shape)
            survivors.append(t)
        self._tracks = survivors
        self._expire(st)

    def _expire(self, st: _Step) -> None:
        """End (``object_end``) the lost tracks unseen for more than ``buffer_s`` (``exit_grace_s`` once they left
        the picture); run before the association too, so that an expired track is never revived."""
        keep = []
        for t in self._tracks:
            lost_for = st.now - t.alive_t - (self._frozen_s - t.alive_frozen) - st.grace_s
            if t.state == _LOST and (lost_for > self.buffer_s or (t.exited and lost_for > self.exit_grace_s)):
                st.events.append(self._end_event(t, st.frame))
            else:
                keep.append(t)
        self._tracks = keep

    def _start(self, st: _Step, rest: List[int], out_idx: List[int], out_tracks: List[_Track]) -> None:
        """Step 7c: start tentative tracks from the remaining high detections."""
        for d in rest:
            if st.score[d] < self.new_track_thresh:
                continue
            m, c = self.kf.initiate(st.z[d:d + 1])
            t = _Track(m[0], c[0], st.now, st.index, st.wall, st.boxes[d].copy(), st.now, st.index, st.wall,
                       st.z[d].copy(), st.boxes[d].copy(), float(st.score[d]), best_score=float(st.score[d]))
            t.obs.append((st.index, float(st.z[d, 0]), float(st.z[d, 1]), float(st.z[d, 2])))
            t.frozen_at_seen = t.alive_frozen = self._frozen_s
            t.alive_t, t.skipped_at_seen = st.now, self._skipped
            t.vote(int(st.cls[d]), float(st.score[d]))
            self._append_trail(t, st.boxes_list[d])
            self._tracks.append(t)
            if self.min_hits <= 1:
                self._confirm(t, d, st)
                out_idx.append(d)
                out_tracks.append(t)

    # ----------------------------------------------------------------------------------------- helpers

    def _cost(self, track_idx: Sequence[int], det_idx: np.ndarray, st: _Step, fuse: bool,
              distance: Optional[DistanceFn] = None) -> np.ndarray:
        det_idx = np.asarray(det_idx, np.int64)
        if not len(track_idx) or not len(det_idx):
            return np.zeros((len(track_idx), len(det_idx)))
        tracks = [self._tracks[i] for i in track_idx]
        pred = cxcywh_to_xyxy(np.array([t.mean[:4] for t in tracks]))
        cost = np.asarray((distance or self._distance)(pred, st.boxes[det_idx]), np.float64)
        if fuse:
            cost = 1.0 - (1.0 - cost) * st.score[det_idx][None, :]
        if self.class_cost:
            tc = np.array([t.class_id for t in tracks])
            cost = cost + self.class_cost * (tc[:, None] != st.cls[det_idx][None, :])
        return cost

    def _reach_pairs(self, track_idx: List[int], det_idx: List[int], st: _Step,
                     appearance: bool, fast: bool = True) -> List[Tuple[int, int]]:
        """Assignment of tracks to detections they can reach (cost <= 1, heights within ``stitch_size_ratio``;
        a track seen once may move ``fast_gate`` box sizes per frame with ``fast``, else only at walking pace;
        with ``appearance`` similar colours too)."""
        if not track_idx or not det_idx:
            return []
        tracks = [self._tracks[i] for i in track_idx]
        z = st.z[det_idx]
        last = np.stack([t.last_z for t in tracks])
        size = last[:, 2:4].max(axis=1)
        once = np.array([len(t.obs) == 1 and fast and not self._missed_look(t, st) for t in tracks])
        gap = np.array([max(st.index - t.last_frame, 1) for t in tracks], np.float64)
        noise = np.where(once, self.fast_gate * size * gap, 2.0 * self.stitch_noise * self.kf.std_pos * size)
        vel = np.stack([t.velocity(self._window()) for t in tracks])
        reach = self.start_speed * last[:, 3] * gap * (self._dt or 0.0)  # walking pace since the last sighting
        still = np.hypot(vel[:, 0], vel[:, 1]) < 0.1 * size * (self._dt or 0.0)  # under a tenth of its size per s
        noise = noise + still * reach  # a stationary object may have started to walk any way
        cost = reach_cost(last[:, :2], vel, gap, noise, z[:, :2], self.reach_tol, reach)
        h_track, h_det = last[:, 3:4], z[None, :, 3]
        ratio = np.maximum(h_track / np.maximum(h_det, 1e-6), h_det / np.maximum(h_track, 1e-6))
        cost = np.where(ratio <= self.stitch_size_ratio, cost, np.inf)
        if appearance:
            cost = self._appearance_gate(tracks, det_idx, st, cost)
        pairs, _, _ = _assign(np.where(np.isfinite(cost), cost, 2.0), 1.0)
        return pairs

    def _appearance_gate(self, tracks: List[_Track], det_idx: List[int], st: _Step, cost: np.ndarray) -> np.ndarray:
        """Forbid pairs whose colour histograms differ by more than ``appearance_thresh`` (tracks without a
        histogram are not restricted)."""
        if st.frame.image is None or st.frame.image.ndim != 3:
            return cost
        if st.hists is None:
            st.hists = colour_histograms(st.frame.image, st.boxes)
        known = [k for k, t in enumerate(tracks) if t.hist is not None]
        if not known:
            return cost
        dist = histogram_distance(np.stack([tracks[k].hist for k in known]), st.hists[det_idx])
        cost = cost.copy()
        cost[known] = np.where(dist <= self.appearance_thresh, cost[known], np.inf)
        return cost

    def _exit_of(self, t: _Track, shape_hw: Tuple[int, int]) -> str:
        """The edge a just-missed or lost track left through (``""`` = still in the picture): its last box on the
        border moving out, or its predicted centre outside the frame."""
        min_speed = 0.1 * float(t.last_z[2:4].max()) * (self._dt or 0.1)  # a tenth of its size per second
        edge = exit_edge(t.last_box, t.velocity(self._window()), shape_hw, min_speed)
        if edge:
            return edge
        h, w = shape_hw
        cx, cy = float(t.mean[0]), float(t.mean[1])
        for inside, name in ((cx >= 0, "left"), (cy >= 0, "top"), (cx <= w, "right"), (cy <= h, "bottom")):
            if not inside:
                return name
        return ""

    def _window(self) -> int:
        """``velocity_window_s`` in frames (3 until the frame interval is known), at most 40."""
        return int(np.clip(round(self.velocity_window_s / self._dt), 1, 40)) if self._dt else 3

    def _observe(self, t: _Track, d: int, st: _Step) -> None:
        if t.state != _TENTATIVE or self._detector_gap(t, st) <= 1 + self.tentative_gap:
            t.hits += 1 + (self._skipped - t.skipped_at_seen)  # frames the detector skipped count as covered
        else:
            t.hits = 1
        t.last_seen, t.last_frame, t.last_wall = st.now, st.index, st.wall
        t.frozen_at_seen = t.alive_frozen = self._frozen_s
        t.alive_t, t.skipped_at_seen = st.now, self._skipped
        t.last_z, t.last_box = st.z[d], st.boxes[d]  # rows of this frame's arrays, never written to
        z = st.z_list[d]
        t.obs.append((st.index, z[0], z[1], z[2]))
        t.score = st.score_list[d]
        if t.score > t.best_score:
            t.best_score = t.score
        t.vote(st.cls_list[d], t.score)
        t.hist = None
        self._append_trail(t, st.boxes_list[d])

    def _append_trail(self, t: _Track, box: Sequence[float]) -> None:
        if self.trail:
            t.trail.append(((box[0] + box[2]) / 2, box[3]))
            if len(t.trail) > self.trail:
                del t.trail[0]

    def _confirm(self, t: _Track, d: int, st: _Step) -> None:
        t.state, t.track_id = _TRACKED, self._next_id
        t.entered = entry_edge(t.first_box, t.velocity(self._window()), st.frame.shape)
        self._next_id += 1
        self._confirmed_total += 1
        st.events.append(ObjectNew(t.track_id, class_name(t.class_id, self.names), round(float(st.score[d]), 5),
                                   [round(float(v), 2) for v in st.boxes[d]], entered=t.entered,
                                   frame=int(st.frame.index), wall_time=float(st.frame.wall_time)))

    def _end_event(self, t: _Track, frame: Frame) -> ObjectEnd:
        return ObjectEnd(t.track_id, class_name(t.class_id, self.names), t.first_wall, t.last_wall, t.first_frame,
                         t.last_frame, round(t.best_score, 5), dwell_s=round(t.last_seen - t.first_seen, 3),
                         entered=t.entered, exited=t.exited, frame=int(frame.index), wall_time=float(frame.wall_time))

    def _velocity_px_s(self, t: _Track) -> np.ndarray:
        """The track's observed centre velocity (:meth:`_Track.velocity` over ``velocity_window_s``: it follows a
        start, stop or turn within that window, where the Kalman velocity lags by seconds) in px per second of
        stream time (NaN before the frame interval is known)."""
        if not self._dt:
            return np.full(2, np.nan)
        return np.array(t.velocity_xy(self._window())) / self._dt

    def _output(self, dets: Detections, out_idx: List[int], out_tracks: List[_Track]) -> Detections:
        extra = [i for i in range(len(dets)) if i not in set(out_idx)] if self.keep_unconfirmed else []
        idx = np.asarray(out_idx + extra, np.int64)
        order = np.argsort(idx, kind="stable")  # keep the detector's order
        idx = idx[order]
        rows = np.argsort(order, kind="stable")[:len(out_tracks)]  # output row of each tracked detection
        ids = np.array([t.track_id for t in out_tracks] + [-1] * len(extra), np.int64)[order]
        cls = np.concatenate([np.array([t.class_id for t in out_tracks], np.int32),
                              dets.class_id[np.asarray(extra, np.int64)]])[order] if len(idx) else np.zeros(0, np.int32)
        data = {k: v[idx] for k, v in dets.data.items()}
        data["det_class_id"] = dets.class_id[idx]
        data.update(self._track_data(len(idx), rows, out_tracks))
        return Detections(dets.xyxy[idx], dets.score[idx], cls, ids, data, dets.metadata)

    def _track_data(self, n: int, rows: np.ndarray, tracks: List[_Track]) -> Dict[str, np.ndarray]:
        """The per-object ``data`` columns (module doc) for ``n`` output rows, ``tracks`` at ``rows``."""
        dwell = np.full(n, np.nan, np.float32)
        vel = np.full((n, 2), np.nan, np.float32)
        entered = np.full(n, "", "<U6")
        if tracks:
            dwell[rows] = [t.last_seen - t.first_seen for t in tracks]
            if self._dt:
                window = self._window()
                vel[rows] = np.array([t.velocity_xy(window) for t in tracks]) / self._dt
            entered[rows] = [t.entered for t in tracks]
        speed = np.hypot(vel[:, 0], vel[:, 1]).astype(np.float32)
        data = {"dwell_s": dwell, "velocity_px_s": vel, "speed_px_s": speed, "entered": entered}
        if self.meters_per_px is not None:
            data["speed_m_s"] = (speed * self.meters_per_px).astype(np.float32)
        if self.trail:
            trail = np.full((n, self.trail, 2), np.nan, np.float32)
            if tracks:
                pad = [(np.nan, np.nan)] * self.trail
                trail[rows] = [pad[:self.trail - len(t.trail)] + t.trail for t in tracks]
            data["trail"] = trail
        return data
