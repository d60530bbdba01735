"""The ``"iou"`` processor: a small IoU tracker, greedy matching of detections to tracks by box overlap.

Each call to :meth:`IoUTracker.update` takes the :class:`~edge_detect.types.Detections` of one frame (xyxy,
original-frame pixels) and returns them with ``track_id`` (int64, ``>= 1``) filled in:

1. IoU between every live track's last box and every detection (same class only, unless
   ``class_aware=False``);
2. greedily take the highest IoU pair above ``iou_threshold``, remove both, repeat;
3. unmatched detections start new tracks; tracks unmatched for more than ``max_age`` consecutive frames are
   forgotten.

A frame the detector did not run on (``metadata["inferred"] is False``, :mod:`edge_detect.stream.gating`) is no
miss: the tracks matched on the last inferred frame are returned with their last boxes, nothing ages.

This is deliberately simple (no motion model): fine for the frame rates of an edge camera where objects move
a fraction of their size between frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from edge_detect.boxes import box_iou
from edge_detect.errors import ConfigError
from edge_detect.stream.processors.base import register_processor
from edge_detect.types import Detections, Frame

__all__ = ["IoUTracker"]


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    class_id: int
    age: int = 0  # frames since last match
    hits: int = 1


class IoUTracker:
    """Greedy IoU tracker assigning persistent ``track_id`` values (see module doc).

    Args:
        iou_threshold: minimum IoU to continue a track.
        max_age: frames a track survives without a match.
        class_aware: only match detections of the track's class.

    Raises:
        ConfigError: ``iou_threshold`` outside ``(0, 1]`` or ``max_age < 0``.
    """

    name = "iou"

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 30, class_aware: bool = True) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ConfigError(f"IoUTracker iou_threshold: expected a value in (0, 1], got {iou_threshold}")
        if max_age < 0:
            raise ConfigError(f"IoUTracker max_age: expected >= 0, got {max_age}")
        self.iou_threshold, self.max_age, self.class_aware = float(iou_threshold), int(max_age), class_aware
        self._tracks: List[_Track] = []
        self._next_id = 1

    @property
    def active_tracks(self) -> int:
        """Tracks currently remembered (matched within the last ``max_age`` frames)."""
        return len(self._tracks)

    def reset(self) -> None:
        """Forget all tracks; ids restart at 1."""
        self._tracks, self._next_id = [], 1

    def clone(self) -> "IoUTracker":
        """A fresh tracker with the same settings (one per source)."""
        return IoUTracker(self.iou_threshold, self.max_age, self.class_aware)

    def summary(self) -> Dict[str, Any]:
        """Nothing to add to the run summary."""
        return {}

    def _match(self, dets: Detections) -> Dict[int, int]:
        """Greedy matching: ``{detection index: track index}``."""
        if not self._tracks or not len(dets):
            return {}
        iou = box_iou(dets.xyxy, np.stack([t.box for t in self._tracks]))
        if self.class_aware:
            same = dets.class_id[:, None] == np.array([t.class_id for t in self._tracks])[None, :]
            iou = np.where(same, iou, 0.0)
        pairs: Dict[int, int] = {}
        order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape))[0]
        used_t = set()
        for d, t in order:
            if iou[d, t] < self.iou_threshold:
                break
            if d in pairs or t in used_t:
                continue
            pairs[int(d)] = int(t)
            used_t.add(int(t))
        return pairs

    def update(self, dets: Detections, frame: Optional[Frame] = None) -> Detections:
        """Assign track ids to one frame's detections.

        Args:
            dets: detections of the next frame (xyxy original-frame pixels).
            frame: the frame (unused; part of the processor protocol).

        Returns:
            The same boxes, scores, classes, ``data`` and ``metadata`` with ``track_id`` int64 ``(N,)`` set (ids
            start at 1).
        """
        if dets.metadata.get("inferred") is False:
            return self._carry(dets)
        pairs = self._match(dets)
        ids = np.empty(len(dets), np.int64)
        matched_tracks = set(pairs.values())
        for i in range(len(dets)):
            if i in pairs:
                tr = self._tracks[pairs[i]]
                tr.box, tr.age, tr.hits = dets.xyxy[i].copy(), 0, tr.hits + 1
            else:
                tr = _Track(self._next_id, dets.xyxy[i].copy(), int(dets.class_id[i]))
                self._next_id += 1
                self._tracks.append(tr)
            ids[i] = tr.track_id
        n_old = len(self._tracks) - sum(1 for i in range(len(dets)) if i not in pairs)
        for j in range(n_old):
            if j not in matched_tracks:
                self._tracks[j].age += 1
        self._tracks = [t for t in self._tracks if t.age <= self.max_age]
        return Detections(dets.xyxy, dets.score, dets.class_id, ids, dets.data, dets.metadata)

    def _carry(self, dets: Detections) -> Detections:
        """A frame the detector did not run on: the tracks matched on the last inferred frame, last boxes."""
        live = [t for t in self._tracks if t.age == 0]
        return Detections(np.asarray([t.box for t in live], np.float32).reshape(-1, 4),
                          np.ones(len(live), np.float32), np.array([t.class_id for t in live], np.int32),
                          np.array([t.track_id for t in live], np.int64), {}, dets.metadata)


@register_processor("iou", tracker=True)
def _make_iou(iou_threshold: float = 0.3, max_age: int = 30, class_aware: bool = True) -> IoUTracker:
    return IoUTracker(iou_threshold, max_age, class_aware)
