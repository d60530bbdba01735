"""YOLO non-maximum suppression and conversion of model outputs to :class:`~edge_detect.types.Detections`.

Two raw heads (``ModelMetadata.head``), one NMS:

* ``"yolov5"``: ``pred (B, N, 5 + nc)`` rows ``[cx, cy, w, h, obj, cls probs]``;
* ``"anchor_free"`` (ultralytics YOLOv5u / YOLOv8 / YOLO11): ``pred (B, 4 + nc, N)`` channels
  ``[cx, cy, w, h, cls scores]``, no objectness. This follows ultralytics' predictor NMS: candidates are boxes whose
  best class score is ``> conf_thres``, the score is the class score itself, and steps 3-7 below are the same
  (best class or multi-label, ``classes`` filter, 30000 ``max_nms``, class offsets of 7680 px, ``max_det``).

Semantics of :func:`non_max_suppression` (YOLOv5's documented behaviour, per image):

1. candidates: objectness ``> conf_thres`` (``anchor_free``: best class score ``> conf_thres``);
2. score = objectness x class probability (``anchor_free``: the class score);
3. best class per box (``multi_label``: one row per class whose score ``> conf_thres``), then score
   ``> conf_thres``;
4. optional ``classes`` filter;
5. at most ``max_nms`` (30000) candidates, the highest scores;
6. class-aware greedy NMS (boxes offset by ``class * max_wh`` so different classes never overlap), or class
   agnostic; a box is suppressed when its IoU with a kept, higher-scoring box is ``> iou_thres``;
7. at most ``max_det`` boxes, by descending score.

Candidate filtering is float32 like the reference, and boxes are offset by ``class * 7680`` in float32 before
the IoU as YOLOv5 does: the offset is not only a separation, it also sets the float32 rounding of the offset
boxes, and with 4096 one box in ~300 of the reference's low-confidence (0.001) sets changes. With 7680 the
kept sets, boxes and scores equal the reference implementation's exactly.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import cv2
import numpy as np

from edge_detect.boxes import cxcywh_to_xyxy, xyxy_to_xywh
from edge_detect.config import check_thresholds
from edge_detect.errors import ModelError
from edge_detect.metadata import HEADS
from edge_detect.types import Detections, LetterboxInfo

__all__ = ["non_max_suppression", "nms", "postprocess", "split_raw", "MAX_WH", "MAX_NMS", "HEADS"]

MAX_WH = 7680  # class offset in pixels for class-aware NMS (largest supported box side)
MAX_NMS = 30000  # most candidate boxes passed into NMS


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy NMS: keep the best box, drop the others overlapping it by IoU ``> iou_thres``, repeat.

    Runs ``cv2.dnn.NMSBoxes`` (stable descending sort, plain ``inter / union`` IoU without a ``+1`` pixel
    term, keep while IoU ``<= iou_thres``), which is the greedy semantics of ``torchvision.ops.nms``.

    Args:
        boxes: float ``(N, 4)`` ``xyxy`` (any pixel space; the caller offsets classes apart).
        scores: float ``(N,)``, all ``> 0``.
        iou_thres: IoU above which a lower-scoring box is suppressed.

    Returns:
        int64 ``(k,)`` indices of the kept boxes, by descending score (ties keep input order).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = xyxy_to_xywh(np.asarray(boxes, dtype=np.float64))
    keep = cv2.dnn.NMSBoxes(xywh, np.asarray(scores, dtype=np.float32), 0.0, float(iou_thres))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def split_raw(pred: np.ndarray, head: str = "yolov5") -> "tuple[np.ndarray, np.ndarray]":
    """A raw prediction batch -> ``(boxes_xywh (B, N, 4), scores (B, N, nc))`` in letterbox pixels.

    ``scores`` are what NMS ranks: objectness x class probability for ``"yolov5"``, the class scores for
    ``"anchor_free"`` (views where possible; the yolov5 product is a new array).

    Raises:
        ValueError: unknown head or a shape that does not fit it.
    """
    pred = np.asarray(pred)
    _check_raw(pred.shape, head)
    if head == "yolov5":
        return pred[..., :4], pred[..., 5:] * pred[..., 4:5]
    t = pred.transpose(0, 2, 1)
    return t[..., :4], t[..., 4:]


def _check_raw(shape: Sequence[int], head: str) -> None:
    if head == "yolov5":
        if len(shape) != 3 or shape[2] < 6:
            raise ValueError(f"non_max_suppression pred: expected shape (B, N, 5+nc) for head 'yolov5', "
                             f"got {tuple(shape)}")
    elif head == "anchor_free":
        if len(shape) != 3 or shape[1] < 5:
            raise ValueError(f"non_max_suppression pred: expected shape (B, 4+nc, N) for head 'anchor_free', "
                             f"got {tuple(shape)}")
    else:
        raise ValueError(f"head: expected one of {HEADS}, got {head!r}")


def _candidates(x: np.ndarray, head: str, conf_thres: float, classes: Optional[Sequence[int]],
                multi_label: bool) -> np.ndarray:
    """Rows ``[x1, y1, x2, y2, score, cls]`` (float32) of one image's prediction that pass the thresholds.

    ``x``: ``(N, 5 + nc)`` for ``"yolov5"``, ``(4 + nc, N)`` for ``"anchor_free"``.
    """
    if head == "yolov5":
        x = x[x[:, 4] > conf_thres]
        cls_scores = x[:, 5:] * x[:, 4:5]
        box_xywh = x[:, :4]
    else:
        x = x[:, x[4:].max(axis=0) > conf_thres].T  # (k, 4 + nc)
        cls_scores = x[:, 4:]
        box_xywh = x[:, :4]
    if not len(x):
        return np.zeros((0, 6), np.float32)
    box = cxcywh_to_xyxy(box_xywh)
    if multi_label:
        i, j = np.nonzero(cls_scores > conf_thres)
        rows = np.concatenate([box[i], cls_scores[i, j, None], j[:, None].astype(np.float32)], axis=1)
    else:
        j = cls_scores.argmax(axis=1)
        score = np.take_along_axis(cls_scores, j[:, None], axis=1)
        rows = np.concatenate([box, score, j[:, None].astype(np.float32)], axis=1)
        rows = rows[score[:, 0] > conf_thres]
    if classes is not None:
        rows = rows[np.isin(rows[:, 5], np.asarray(classes, dtype=np.float32))]
    return rows.astype(np.float32, copy=False)


def non_max_suppression(pred: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        classes: Optional[Sequence[int]] = None, agnostic: bool = False,
                        multi_label: bool = False, max_det: int = 300,
                        max_nms: int = MAX_NMS, max_wh: int = MAX_WH, head: str = "yolov5") -> List[np.ndarray]:
    """YOLO NMS over a raw prediction batch (see the module doc for the exact semantics).

    Args:
        pred: ``head="yolov5"``: float ``(B, N, 5 + nc)`` rows ``[cx, cy, w, h, obj, cls_0..cls_{nc-1}]``;
            ``head="anchor_free"``: float ``(B, 4 + nc, N)`` channels ``[cx, cy, w, h, cls_0..cls_{nc-1}]``;
            letterbox pixels, sigmoid and box decoding applied.
        conf_thres: keep candidates with objectness and score ``> conf_thres``.
        iou_thres: suppression IoU.
        classes: keep only these class ids (``None`` = all).
        agnostic: NMS across classes instead of per class.
        multi_label: one candidate per class above ``conf_thres`` instead of the best class only.
        max_det: most detections per image.
        max_nms: most candidates fed to NMS (highest scores first).
        max_wh: class offset for class-aware NMS.
        head: ``"yolov5"`` or ``"anchor_free"`` (from :attr:`ModelMetadata.head`).

    Returns:
        One float32 ``(n, 6)`` array per image, rows ``[x1, y1, x2, y2, score, cls]`` in letterbox pixels,
        sorted by descending score.

    Raises:
        ValueError: unknown ``head`` or ``pred`` not shaped for it; ConfigError (a ValueError): thresholds
            outside ``[0, 1]``.
    """
    pred = np.asarray(pred)
    _check_raw(pred.shape, head)
    check_thresholds(conf_thres, iou_thres, max_det, names=("conf_thres", "iou_thres", "max_det"))
    if pred.dtype != np.float32:
        pred = pred.astype(np.float32)
    out = []
    for x in pred:
        rows = _candidates(x, head, conf_thres, classes, multi_label)
        if len(rows) > max_nms:
            rows = rows[np.argsort(-rows[:, 4], kind="stable")[:max_nms]]
        offset = np.float32(0 if agnostic else max_wh) * rows[:, 5:6]
        keep = nms(rows[:, :4] + offset, rows[:, 4], iou_thres)[:max_det]
        out.append(rows[keep])
    return out


def _from_nms_outputs(outputs: Sequence[np.ndarray], conf_thres: float, classes: Optional[Sequence[int]],
                      max_det: int) -> List[np.ndarray]:
    """Rows ``(n, 6)`` per image from in-graph NMS outputs ``[num_dets, boxes, scores, classes]``."""
    if len(outputs) != 4:
        raise ModelError(f"nms output layout: expected 4 outputs [num_dets, boxes, scores, classes], "
                         f"got {len(outputs)}")
    num, boxes, scores, cls = (np.asarray(o) for o in outputs)
    out = []
    for b in range(boxes.shape[0]):
        n = int(num.reshape(boxes.shape[0], -1)[b, 0])
        rows = np.concatenate([boxes[b, :n].astype(np.float32), scores[b, :n, None].astype(np.float32),
                               cls[b, :n, None].astype(np.float32)], axis=1)
        rows = rows[rows[:, 4] > conf_thres]
        if classes is not None:
            rows = rows[np.isin(rows[:, 5], np.asarray(classes, dtype=np.float32))]
        out.append(rows[np.argsort(-rows[:, 4], kind="stable")][:max_det])
    return out


def postprocess(outputs: Sequence[np.ndarray], infos: Sequence[LetterboxInfo], layout: str = "raw",
                conf_thres: float = 0.25, iou_thres: float = 0.45, classes: Optional[Sequence[int]] = None,
                agnostic: bool = False, multi_label: bool = False, max_det: int = 300, head: str = "yolov5",
                **nms_options: Any) -> List[Detections]:
    """Model outputs -> one :class:`Detections` per image, in original-frame pixels.

    Args:
        outputs: backend outputs in layout order: ``[pred]`` for ``"raw"`` (``(B, N, 5+nc)`` for ``head="yolov5"``,
            ``(B, 4+nc, N)`` for ``head="anchor_free"``);
            ``[num_dets (B, 1), boxes (B, K, 4) xyxy letterbox px, scores (B, K), classes (B, K)]`` for ``"nms"``.
        infos: one :class:`LetterboxInfo` per real image; extra batch rows (padding) are ignored.
        layout: ``"raw"`` (NMS done here) or ``"nms"`` (in-graph NMS; only ``conf_thres``, ``classes`` and
            ``max_det`` are applied on top of it).
        conf_thres, iou_thres, classes, agnostic, multi_label, max_det, head: see :func:`non_max_suppression`.
        **nms_options: ``max_nms`` / ``max_wh`` for :func:`non_max_suppression`.

    Returns:
        ``len(infos)`` :class:`Detections`, boxes float32 ``xyxy`` mapped back to and clipped to each original
        frame, sorted by descending score.

    Raises:
        ModelError: unknown layout or a wrong number of outputs.
    """
    if layout == "raw":
        if len(outputs) != 1:
            raise ModelError(f"raw output layout: expected 1 output, got {len(outputs)}")
        per_image = non_max_suppression(np.asarray(outputs[0])[: len(infos)], conf_thres, iou_thres, classes,
                                        agnostic, multi_label, max_det, head=head, **nms_options)
    elif layout == "nms":
        per_image = _from_nms_outputs(outputs, conf_thres, classes, max_det)[: len(infos)]
    else:
        raise ModelError(f"output layout: expected 'raw' or 'nms', got {layout!r}")
    if len(per_image) != len(infos):
        raise ModelError(f"postprocess: expected outputs for {len(infos)} images, got {len(per_image)}")
    return [Detections(info.to_original(rows[:, :4]), rows[:, 4], rows[:, 5].astype(np.int32))
            for rows, info in zip(per_image, infos)]
