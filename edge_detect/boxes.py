"""Box conversions, IoU, clipping and scaling: the one home for box arithmetic in the runtime (NumPy only).

Formats (the last axis holds the 4 numbers; any leading axes are kept):

* ``xyxy``: ``(x1, y1, x2, y2)``, top-left and bottom-right corners, ``x1 <= x2``, ``y1 <= y2``;
  the format of :class:`~edge_detect.types.Detections` and of every box between stages.
* ``xywh``: ``(x1, y1, w, h)``, top-left corner plus size (COCO json ``bbox``).
* ``cxcywh``: ``(cx, cy, w, h)``, centre plus size (YOLOv5 raw predictions, YOLO label files when normalized).

Coordinates are whatever space the caller passes (letterbox pixels, original-frame pixels, normalized
``[0, 1]``): these functions never change the space except :func:`scale_boxes`, which maps between two pixel
spaces, and :func:`normalize_boxes` / :func:`denormalize_boxes`, which map to and from ``[0, 1]``. Results keep
the input's float dtype (integer inputs give float32) and never modify the input.

The torch side (:mod:`edge_detect.training`) keeps tensor versions only where autograd needs them (the loss).
"""
from __future__ import annotations

from typing import Literal, Sequence, Tuple, Union

import numpy as np

__all__ = ["BoxFormat", "box_convert", "xyxy_to_xywh", "xywh_to_xyxy", "xyxy_to_cxcywh", "cxcywh_to_xyxy",
           "box_area", "box_iou", "generalized_box_iou", "paired_box_iou", "clip_boxes", "scale_boxes", "normalize_boxes",
           "denormalize_boxes"]

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_float(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as a float array (float32 for non-float input) with a last axis of 4."""
    a = np.asarray(boxes)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    if a.ndim == 0 or a.shape[-1] != 4:
        if a.size == 0:
            return a.reshape(0, 4)
        raise ValueError(f"boxes: expected shape (..., 4), got {a.shape}")
    return a


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(x1, y1, x2, y2)`` -> ``(x1, y1, w, h)``.

    Args:
        boxes: float ``(..., 4)`` xyxy boxes, any coordinate space.

    Returns:
        ``(..., 4)`` xywh boxes (COCO ``bbox``), same dtype and coordinate space.
    """
    b = _as_float(boxes)
    out = b.copy()
    out[..., 2:] = b[..., 2:] - b[..., :2]
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(x1, y1, w, h)`` -> ``(x1, y1, x2, y2)``.

    Args:
        boxes: float ``(..., 4)`` xywh boxes, any coordinate space.

    Returns:
        ``(..., 4)`` xyxy boxes, same dtype and coordinate space.
    """
    b = _as_float(boxes)
    out = b.copy()
    out[..., 2:] = b[..., :2] + b[..., 2:]
    return out


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)`` (``x1 = cx - w / 2``...).

    Args:
        boxes: float ``(..., 4)`` centre-size boxes (e.g. YOLOv5 raw predictions in letterbox pixels).

    Returns:
        ``(..., 4)`` xyxy boxes, same dtype and coordinate space.
    """
    b = _as_float(boxes)
    out = np.empty_like(b)
    half_w, half_h = b[..., 2] / 2, b[..., 3] / 2
    out[..., 0] = b[..., 0] - half_w
    out[..., 1] = b[..., 1] - half_h
    out[..., 2] = b[..., 0] + half_w
    out[..., 3] = b[..., 1] + half_h
    return out


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``.

    Args:
        boxes: float ``(..., 4)`` xyxy boxes, any coordinate space.

    Returns:
        ``(..., 4)`` centre-size boxes, same dtype and coordinate space.
    """
    b = _as_float(boxes)
    out = np.empty_like(b)
    out[..., 0] = (b[..., 0] + b[..., 2]) / 2
    out[..., 1] = (b[..., 1] + b[..., 3]) / 2
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


_TO_XYXY = {"xyxy": lambda b: _as_float(b).copy(), "xywh": xywh_to_xyxy, "cxcywh": cxcywh_to_xyxy}
_FROM_XYXY = {"xyxy": lambda b: b, "xywh": xyxy_to_xywh, "cxcywh": xyxy_to_cxcywh}


def box_convert(boxes: np.ndarray, in_fmt: BoxFormat, out_fmt: BoxFormat) -> np.ndarray:
    """Convert boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` (see module doc).

    Args:
        boxes: float ``(..., 4)`` boxes in ``in_fmt``.
        in_fmt, out_fmt: one of ``"xyxy"``, ``"xywh"``, ``"cxcywh"``.

    Returns:
        ``(..., 4)`` boxes in ``out_fmt``, same dtype and coordinate space (a copy).

    Raises:
        ValueError: unknown format or a last axis other than 4.
    """
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"box_convert {name}: expected one of {_FORMATS}, got {fmt!r}")
    return _FROM_XYXY[out_fmt](_TO_XYXY[in_fmt](boxes))


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of xyxy boxes (0 for degenerate boxes with ``x2 < x1`` or ``y2 < y1``).

    Args:
        boxes: float ``(..., 4)`` xyxy boxes.

    Returns:
        ``(...)`` areas in squared units of the boxes' coordinate space.
    """
    b = _as_float(boxes)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of xyxy boxes (``torchvision.ops.box_iou`` semantics).

    Args:
        a: float ``(N, 4)`` xyxy boxes.
        b: float ``(M, 4)`` xyxy boxes in the same coordinate space.

    Returns:
        float32 ``(N, M)`` IoU in ``[0, 1]``; 0 where the union is empty.
    """
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(np.float32)


def generalized_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise generalized IoU (``torchvision.ops.generalized_box_iou`` semantics): IoU minus the part of the
    smallest enclosing box not covered by the union; ranks boxes that do not overlap by how far apart they are.

    Args:
        a: float ``(N, 4)`` xyxy boxes.
        b: float ``(M, 4)`` xyxy boxes in the same coordinate space.

    Returns:
        float32 ``(N, M)`` GIoU in ``[-1, 1]``.
    """
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    iou = box_iou(a, b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    hull = np.clip(np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2]), 0,
                   None).prod(axis=2)
    return (iou - np.where(hull > 0, (hull - union) / np.where(hull > 0, hull, 1), 0)).astype(np.float32)


def paired_box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """IoU of corresponding boxes: ``iou[i] = IoU(a[i], b[i])``.

    Args:
        a, b: float ``(N, 4)`` xyxy boxes in the same coordinate space.
        eps: lower bound of the union (so empty boxes give 0, not nan).

    Returns:
        ``(N,)`` IoU in ``[0, 1]`` (float64 for float64 input, else float32).
    """
    a, b = _as_float(a).reshape(-1, 4), _as_float(b).reshape(-1, 4)
    if len(a) != len(b):
        raise ValueError(f"paired_box_iou: expected two (N, 4) arrays of the same N, got {a.shape} and {b.shape}")
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    return inter / np.maximum(box_area(a) + box_area(b) - inter, eps)


def clip_boxes(boxes: np.ndarray, shape_hw: Tuple[int, int]) -> np.ndarray:
    """Clip xyxy boxes to an image: ``x`` to ``[0, w]``, ``y`` to ``[0, h]``.

    Args:
        boxes: float ``(..., 4)`` xyxy boxes in the pixels of that image.
        shape_hw: ``(h, w)`` of the image in pixels.

    Returns:
        ``(..., 4)`` clipped boxes, same dtype (a copy).
    """
    out = _as_float(boxes).copy()
    h, w = shape_hw
    out[..., 0::2] = out[..., 0::2].clip(0, w)
    out[..., 1::2] = out[..., 1::2].clip(0, h)
    return out


def scale_boxes(boxes: np.ndarray, ratio: Union[float, Sequence[float]], pad: Sequence[float] = (0.0, 0.0),
                clip_hw: Union[Tuple[int, int], None] = None) -> np.ndarray:
    """Map xyxy boxes from a resized-and-padded image back to the original: ``(box - pad) / ratio``.

    This undoes a letterbox (see :class:`~edge_detect.types.LetterboxInfo`): the original was scaled by
    ``ratio`` and shifted by ``pad``. To go the other way pass ``ratio = 1 / r`` and ``pad = -p / r``.

    Args:
        boxes: float ``(..., 4)`` xyxy boxes in the resized image's pixels (e.g. letterbox pixels).
        ratio: scale of the original in the resized image, one value or ``(rx, ry)``.
        pad: ``(left, top)`` offset of the original in the resized image, in resized pixels.
        clip_hw: ``(h, w)`` of the original: clip the result to it (``None``: no clipping).

    Returns:
        float32 ``(..., 4)`` xyxy boxes in original pixels (a copy).
    """
    out = _as_float(boxes).astype(np.float32, copy=True)
    rx, ry = (ratio, ratio) if np.isscalar(ratio) else tuple(ratio)  # type: ignore[misc]
    out[..., 0::2] -= pad[0]
    out[..., 1::2] -= pad[1]
    if rx == ry:
        out /= rx
    else:
        out[..., 0::2] /= rx
        out[..., 1::2] /= ry
    return clip_boxes(out, clip_hw) if clip_hw is not None else out


def normalize_boxes(boxes: np.ndarray, shape_hw: Tuple[int, int]) -> np.ndarray:
    """Pixel boxes (any of the formats) -> ``[0, 1]`` by dividing x-like values by ``w`` and y-like by ``h``.

    Args:
        boxes: float ``(..., 4)`` boxes in the pixels of an image (xyxy, xywh or cxcywh: the order is x, y, x, y
            in each).
        shape_hw: ``(h, w)`` of that image.

    Returns:
        ``(..., 4)`` normalized boxes in the same format and dtype.
    """
    h, w = shape_hw
    b = _as_float(boxes)
    return b / np.asarray([w, h, w, h], dtype=b.dtype)


def denormalize_boxes(boxes: np.ndarray, shape_hw: Tuple[int, int]) -> np.ndarray:
    """``[0, 1]`` boxes (any of the formats) -> pixels of an image of ``(h, w)``; the inverse of
    :func:`normalize_boxes`, same format and dtype."""
    h, w = shape_hw
    b = _as_float(boxes)
    return b * np.asarray([w, h, w, h], dtype=b.dtype)
