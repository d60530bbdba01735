"""Detection parity: do two runs of a model (CPU vs CUDA, host vs device path, FP32 vs TF32) find the same boxes?

Raw float32 outputs are the wrong yardstick across devices: cuDNN picks other convolution algorithms, sums in
another order, and a box coordinate that moves by 0.01 px changes nothing a user sees. :func:`match_detections`
judges what a user sees instead: per image, a one-to-one matching of the candidate's boxes to the reference's,
same class, IoU at least ``iou`` and scores within ``score_tol``.

NumPy only (no torch): ``tools/gpu_check.py`` and the ``gpu``-marked tests share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Union

import numpy as np

from edge_detect.boxes import box_iou
from edge_detect.types import Detections

__all__ = ["ImageMatch", "MatchReport", "match_detections", "match_image"]

Rows = Union[Detections, np.ndarray]


@dataclass(frozen=True)
class ImageMatch:
    """The matching of one image.

    Attributes:
        reference: boxes in the reference run.
        candidate: boxes in the candidate run.
        matched: reference boxes matched one-to-one by a candidate box (same class, IoU >= ``iou``, score
            within ``score_tol``).
    """

    reference: int
    candidate: int
    matched: int

    @property
    def missing(self) -> int:
        """Reference boxes without a match."""
        return self.reference - self.matched

    @property
    def extra(self) -> int:
        """Candidate boxes without a match (boxes the reference does not have)."""
        return self.candidate - self.matched

    @property
    def fraction(self) -> float:
        """``matched / reference``; 1.0 for an image where the reference has no box."""
        return self.matched / self.reference if self.reference else 1.0


@dataclass(frozen=True)
class MatchReport:
    """Matchings of several images and their totals.

    Attributes:
        per_image: one :class:`ImageMatch` per image, in input order.
    """

    per_image: List[ImageMatch]

    @property
    def reference(self) -> int:
        return sum(m.reference for m in self.per_image)

    @property
    def candidate(self) -> int:
        return sum(m.candidate for m in self.per_image)

    @property
    def matched(self) -> int:
        return sum(m.matched for m in self.per_image)

    @property
    def missing(self) -> int:
        return self.reference - self.matched

    @property
    def extra(self) -> int:
        return self.candidate - self.matched

    @property
    def fraction(self) -> float:
        """Matched share of all reference boxes; 1.0 when the reference has none."""
        return self.matched / self.reference if self.reference else 1.0

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready totals plus the indices of the images that are not perfect matches."""
        return {"images": len(self.per_image), "reference_boxes": self.reference, "candidate_boxes": self.candidate,
                "matched": self.matched, "fraction": round(self.fraction, 6), "missing": self.missing,
                "extra": self.extra,
                "imperfect_images": [i for i, m in enumerate(self.per_image) if m.missing or m.extra]}


def _rows(dets: Rows) -> np.ndarray:
    """float32 ``(n, 6)`` rows ``[x1, y1, x2, y2, score, class]`` from :class:`Detections` or an array."""
    if isinstance(dets, Detections):
        return dets.to_array()
    rows = np.asarray(dets, dtype=np.float32)
    if rows.size == 0:
        return np.zeros((0, 6), np.float32)
    if rows.ndim != 2 or rows.shape[1] < 6:
        raise ValueError(f"detections: expected Detections or an (n, 6) array [x1, y1, x2, y2, score, class], "
                         f"got shape {rows.shape}")
    return rows[:, :6]


def match_image(reference: Rows, candidate: Rows, iou: float = 0.95, score_tol: float = 0.01) -> ImageMatch:
    """One-to-one matching of one image's boxes (greedy by descending IoU).

    Args:
        reference: the reference run's detections: :class:`Detections` or float ``(n, 6)`` rows
            ``[x1, y1, x2, y2, score, class]``, any pixel space (both in the same one).
        candidate: the run under test, same format and pixel space.
        iou: least IoU of a matched pair.
        score_tol: largest ``|score_ref - score_cand|`` of a matched pair.

    Returns:
        the :class:`ImageMatch`.
    """
    a, b = _rows(reference), _rows(candidate)
    if not len(a) or not len(b):
        return ImageMatch(len(a), len(b), 0)
    ious = box_iou(a[:, :4], b[:, :4])
    ok = ((a[:, None, 5] == b[None, :, 5]) & (np.abs(a[:, None, 4] - b[None, :, 4]) <= score_tol)
          & (ious >= iou))
    ia, ib = np.nonzero(ok)
    order = np.argsort(-ious[ia, ib], kind="stable")
    used_a, used_b = set(), set()
    for k in order:
        i, j = int(ia[k]), int(ib[k])
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return ImageMatch(len(a), len(b), len(used_a))


def match_detections(reference: Union[Rows, Sequence[Rows]], candidate: Union[Rows, Sequence[Rows]],
                     iou: float = 0.95, score_tol: float = 0.01) -> MatchReport:
    """Match two runs image by image (see :func:`match_image`).

    Args:
        reference: one image's detections (:class:`Detections` or an ``(n, 6)`` array) or a sequence of them,
            one per image.
        candidate: the same images in the same order, from the run under test.
        iou, score_tol: as in :func:`match_image`.

    Returns:
        a :class:`MatchReport`: ``fraction`` (matched share of the reference boxes), ``extra`` (candidate boxes
        the reference does not have), and per image the same.

    Raises:
        ValueError: the two runs cover different numbers of images, or rows are not ``(n, 6)``.

    Example: CUDA FP32 is judged equal to the CPU when ``report.fraction >= 0.99 and report.extra == 0``.
    """
    refs = [reference] if isinstance(reference, (Detections, np.ndarray)) else list(reference)
    cands = [candidate] if isinstance(candidate, (Detections, np.ndarray)) else list(candidate)
    if len(refs) != len(cands):
        raise ValueError(f"match_detections: expected the same number of images in both runs, got {len(refs)} "
                         f"and {len(cands)}")
    return MatchReport([match_image(r, c, iou, score_tol) for r, c in zip(refs, cands)])
