"""edge_detect.boxes: conversions (round trips and figures), pairwise/paired IoU, clipping, scaling."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    denormalize_boxes,
    normalize_boxes,
    paired_box_iou,
    scale_boxes,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from edge_detect.types import LetterboxInfo

XYXY = np.array([[10, 20, 50, 80], [0, 0, 4, 2]], np.float32)


@pytest.mark.parametrize("fn, expected", [
    (xyxy_to_xywh, [[10, 20, 40, 60], [0, 0, 4, 2]]),
    (xyxy_to_cxcywh, [[30, 50, 40, 60], [2, 1, 4, 2]]),
])
def test_conversions_from_xyxy(fn, expected):
    out = fn(XYXY)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and XYXY[0, 2] == 50  # input untouched


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_convert_round_trips(fmt):
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 640, (50, 2, 2)), axis=1).transpose(0, 2, 1).reshape(50, 4)  # valid xyxy
    other = box_convert(boxes, "xyxy", fmt)
    np.testing.assert_allclose(box_convert(other, fmt, "xyxy"), boxes, atol=1e-9)
    assert other.dtype == np.float64


def test_named_inverse_pairs_and_leading_axes():
    b = np.array([[[10, 20, 4, 6]]], np.float32)  # (1, 1, 4)
    np.testing.assert_array_equal(cxcywh_to_xyxy(b), [[[8, 17, 12, 23]]])
    np.testing.assert_array_equal(xywh_to_xyxy(b), [[[10, 20, 14, 26]]])
    assert cxcywh_to_xyxy(np.array([[1, 2, 3, 4]])).dtype == np.float32  # ints become float32


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 5)), r"boxes: expected shape \(\.\.\., 4\), got \(3, 5\)"),
    (np.zeros(3), r"expected shape \(\.\.\., 4\), got \(3,\)"),
])
def test_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        xyxy_to_xywh(bad)


def test_box_convert_unknown_format():
    with pytest.raises(ValueError, match=r"box_convert out_fmt: expected one of .*got 'yxyx'"):
        box_convert(XYXY, "xyxy", "yxyx")


def test_box_iou_figures():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3) and iou.dtype == np.float32
    np.testing.assert_allclose(iou, [[50 / 150, 1, 0], [0, 0, 0]], rtol=1e-6)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    np.testing.assert_allclose(paired_box_iou(a, b[:2]), [50 / 150, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="same N"):
        paired_box_iou(a, b)


def test_area_clip_scale_normalize():
    np.testing.assert_array_equal(box_area(np.array([[0, 0, 4, 3], [5, 5, 4, 4]], np.float32)), [12, 0])
    np.testing.assert_array_equal(clip_boxes(np.array([[-5, -1, 700, 300]], np.float32), (240, 640)),
                                  [[0, 0, 640, 240]])
    info = LetterboxInfo(orig_shape=(480, 640), input_shape=(640, 640), ratio=1.0, pad=(0.0, 80.0))
    lb = np.array([[100, 180, 200, 300], [0, 0, 640, 640]], np.float32)
    np.testing.assert_array_equal(scale_boxes(lb, 1.0, (0, 80), clip_hw=(480, 640)), info.to_original(lb))
    np.testing.assert_array_equal(info.to_original(lb), [[100, 100, 200, 220], [0, 0, 640, 480]])
    np.testing.assert_array_equal(scale_boxes(np.array([[10, 10, 30, 50]]), (2.0, 5.0)), [[5, 2, 15, 10]])
    n = normalize_boxes(XYXY, (100, 200))
    np.testing.assert_allclose(n[0], [0.05, 0.2, 0.25, 0.8])
    np.testing.assert_allclose(denormalize_boxes(n, (100, 200)), XYXY)
