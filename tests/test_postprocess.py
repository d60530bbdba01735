"""NMS parity with the reference implementation, NMS semantics, in-graph NMS outputs and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_detect.errors import ModelError
from edge_detect.boxes import cxcywh_to_xyxy
from edge_detect.postprocess import nms, non_max_suppression, postprocess
from edge_detect.types import LetterboxInfo

CASES = {"display": dict(conf_thres=0.25, iou_thres=0.45, max_det=1000),
         "val": dict(conf_thres=0.001, iou_thres=0.6, max_det=300)}


@pytest.fixture(scope="module")
def ref(reference):
    meta = json.loads((reference / "reference.json").read_text())["images"]
    out = {}
    for name in ("bus", "zidane"):
        d = dict(np.load(reference / f"infer_{name}.npz"))
        m = meta[f"{name}.jpg"]
        d["info"] = LetterboxInfo(tuple(m["orig_shape"][:2]), (640, 640), m["ratio"], tuple(m["pad"]))
        d["n"] = {"display": m["n_display"], "val": m["n_val"]}
        out[name] = d
    return out


@pytest.mark.parametrize("case", ["display", "val"])
@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_nms_matches_reference(ref, name, case):
    d = ref[name]
    got = non_max_suppression(d["raw"], **CASES[case])[0]
    want = d[f"nms_{case}_letterbox"]
    assert got.dtype == np.float32 and got.shape == want.shape == (d["n"][case], 6)
    np.testing.assert_allclose(got[:, :4], want[:, :4], atol=0.01, rtol=0)
    np.testing.assert_allclose(got[:, 4], want[:, 4], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got[:, 5], want[:, 5])


@pytest.mark.parametrize("case", ["display", "val"])
@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_postprocess_maps_back_to_original(ref, name, case):
    d = ref[name]
    det = postprocess([d["raw"]], [d["info"]], **CASES[case])[0]
    want = d[f"nms_{case}_original"]
    assert len(det) == len(want)
    np.testing.assert_array_equal(det.xyxy.round(), want[:, :4])
    np.testing.assert_allclose(det.score, want[:, 4], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(det.class_id, want[:, 5].astype(np.int32))
    h, w = d["info"].orig_shape
    assert det.xyxy[:, [0, 2]].max() <= w and det.xyxy[:, [1, 3]].max() <= h and det.xyxy.min() >= 0


def test_class_offset_sets_float32_rounding(ref):
    """The class offset is not neutral in float32: 7680 (YOLOv5) matches the reference, 4096 flips one box."""
    d = ref["bus"]
    want = {tuple(r) for r in d["nms_val_letterbox"].tolist()}
    for max_wh, n_diff in ((7680, 0), (4096, 1)):
        got = non_max_suppression(d["raw"], **CASES["val"], max_wh=max_wh)[0]
        assert len({tuple(r) for r in got.tolist()} - want) == n_diff
    # at display thresholds candidates are few and well separated: the offset does not matter
    a = non_max_suppression(d["raw"], **CASES["display"], max_wh=4096)[0]
    np.testing.assert_array_equal(a, d["nms_display_letterbox"])


def _greedy_nms(boxes, scores, thr):
    """Plain greedy NMS (oracle): keep best, drop IoU > thr, repeat."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(xx2 - xx1, 0) * max(yy2 - yy1, 0)
            a = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            b = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (a + b - inter) <= thr:
                rest.append(j)
        order = rest
    return np.array(keep, dtype=np.int64)


@pytest.mark.parametrize("seed, thr", [(0, 0.45), (1, 0.6), (2, 0.3), (3, 0.9)])
def test_nms_equals_greedy_oracle(seed, thr):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 80, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0.01, 1, 300).astype(np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, thr), _greedy_nms(boxes.astype(np.float64), scores, thr))


def _pred(rows):
    """(1, N, 5 + 3) raw prediction from rows [cx, cy, w, h, obj, p0, p1, p2]."""
    return np.asarray(rows, dtype=np.float32)[None]


PRED = _pred([
    [50, 50, 20, 20, 0.9, 0.9, 0.1, 0.0],    # person 0.81
    [51, 50, 20, 20, 0.8, 0.9, 0.0, 0.0],    # person 0.72, overlaps the first (IoU ~0.9)
    [51, 50, 20, 20, 0.8, 0.0, 0.5, 0.0],    # class 1, 0.40, same place, other class
    [200, 200, 10, 10, 0.5, 0.0, 0.0, 0.5],  # class 2, 0.25 exactly at the threshold: rejected (strict >)
    [300, 300, 10, 10, 0.2, 1.0, 0.0, 0.0],  # obj 0.2 below conf 0.25
    [120, 120, 30, 30, 0.9, 0.6, 0.5, 0.0],  # class 0 0.54, class 1 0.45 (multi_label)
])


@pytest.mark.parametrize("kwargs, classes, scores", [
    (dict(), [0, 0, 1], [0.81, 0.54, 0.40]),
    (dict(agnostic=True), [0, 0], [0.81, 0.54]),
    (dict(classes=[1]), [1], [0.40]),
    (dict(classes=[1, 2]), [1], [0.40]),
    (dict(max_det=2), [0, 0], [0.81, 0.54]),
    (dict(multi_label=True), [0, 1, 0, 1], [0.81, 0.45, 0.54, 0.40]),
    (dict(iou_thres=0.95), [0, 0, 0, 1], [0.81, 0.72, 0.54, 0.40]),
    (dict(conf_thres=0.6), [0], [0.81]),
])
def test_nms_semantics(kwargs, classes, scores):
    args = dict(conf_thres=0.25, iou_thres=0.45, max_det=300)
    args.update(kwargs)
    out = non_max_suppression(PRED, **args)[0]
    order = np.argsort(-out[:, 4], kind="stable")
    assert sorted(out[:, 4].tolist(), reverse=True) == pytest.approx(sorted(scores, reverse=True), abs=1e-6)
    assert (out[order, 4] == out[:, 4]).all(), "rows must be sorted by score"
    assert sorted(out[:, 5].astype(int).tolist()) == sorted(classes)


def test_nms_box_conversion_and_max_nms():
    out = non_max_suppression(PRED, 0.25, 0.45)[0]
    np.testing.assert_allclose(out[0, :4], [40, 40, 60, 60])
    np.testing.assert_allclose(cxcywh_to_xyxy(np.array([[10, 20, 4, 6]], np.float32)), [[8, 17, 12, 23]])
    # only the best max_nms candidates enter NMS
    capped = non_max_suppression(PRED, 0.25, 0.45, max_nms=1)[0]
    assert capped[:, 4].tolist() == pytest.approx([0.81])


def test_empty_predictions():
    out = non_max_suppression(np.zeros((2, 10, 8), np.float32))
    assert [o.shape for o in out] == [(0, 6), (0, 6)]
    info = LetterboxInfo((100, 100), (64, 64), 0.64, (0.0, 0.0))
    dets = postprocess([np.zeros((1, 10, 8), np.float32)], [info])
    assert len(dets) == 1 and len(dets[0]) == 0


def test_nms_layout_outputs():
    info = LetterboxInfo((320, 640), (640, 640), 1.0, (0.0, 160.0))
    num = np.array([[3]], np.int32)
    boxes = np.array([[[10, 170, 110, 270], [0, 150, 50, 200], [5, 5, 6, 6], [0, 0, 1, 1]]], np.float32)
    scores = np.array([[0.9, 0.3, 0.2, 0.99]], np.float32)  # row 4 is past num_dets: ignored
    classes = np.array([[2, 0, 1, 5]], np.int32)
    det = postprocess([num, boxes, scores, classes], [info], layout="nms", conf_thres=0.25)[0]
    np.testing.assert_allclose(det.xyxy, [[10, 10, 110, 110], [0, 0, 50, 40]])
    assert det.class_id.tolist() == [2, 0] and det.score.tolist() == pytest.approx([0.9, 0.3])
    only0 = postprocess([num, boxes, scores, classes], [info], layout="nms", conf_thres=0.1, classes=[0])[0]
    assert only0.class_id.tolist() == [0]
    top1 = postprocess([num, boxes, scores, classes], [info], layout="nms", conf_thres=0.1, max_det=1)[0]
    assert top1.score.tolist() == pytest.approx([0.9])


def test_padded_batch_rows_are_ignored(ref):
    d = ref["bus"]
    raw2 = np.concatenate([d["raw"], d["raw"]])
    dets = postprocess([raw2], [d["info"]], **CASES["display"])
    assert len(dets) == 1 and len(dets[0]) == 4


@pytest.mark.parametrize("call, error, message", [
    (lambda: non_max_suppression(np.zeros((10, 85), np.float32)), ValueError, "expected shape (B, N, 5+nc)"),
    (lambda: non_max_suppression(np.zeros((1, 10, 85)), conf_thres=1.5), ValueError, "conf_thres"),
    (lambda: non_max_suppression(np.zeros((1, 10, 85)), iou_thres=-0.1), ValueError, "iou_thres"),
    (lambda: postprocess([np.zeros((1, 1, 85))] * 2, [None]), ModelError, "expected 1 output"),
    (lambda: postprocess([np.zeros((1, 1))] * 3, [None], layout="nms"), ModelError, "expected 4 outputs"),
    (lambda: postprocess([np.zeros((1, 1, 85))], [None], layout="yolo"), ModelError, "expected 'raw' or 'nms'"),
    (lambda: non_max_suppression(np.zeros((1, 4, 10)), head="anchor_free"), ValueError,
     "expected shape (B, 4+nc, N) for head 'anchor_free'"),
    (lambda: non_max_suppression(np.zeros((1, 10, 85)), head="yolox"), ValueError, "head: expected one of"),
])
def test_errors(call, error, message):
    with pytest.raises(error) as err:
        call()
    assert message in str(err.value)


# ------------------------------------------------------------------------------------------- anchor-free head
def _anchor_free_case(seed: int, n: int = 400, nc: int = 6) -> np.ndarray:
    """(1, 4 + nc, n) channels-first prediction: clustered boxes, class scores spread over (0, 1)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 280, (8, 2))
    xy = centres[rng.integers(0, 8, n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(20, 80, (n, 2))
    scores = rng.uniform(0, 1, (n, nc)) ** 3
    return np.concatenate([xy, wh, scores], axis=1).T[None].astype(np.float32)


@pytest.mark.parametrize("kwargs", [
    dict(conf_thres=0.25, iou_thres=0.45),
    dict(conf_thres=0.001, iou_thres=0.7, max_det=50),
    dict(conf_thres=0.1, iou_thres=0.5, agnostic=True),
    dict(conf_thres=0.2, iou_thres=0.5, multi_label=True),
    dict(conf_thres=0.05, iou_thres=0.6, classes=[1, 4]),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_anchor_free_equals_yolov5_path_with_unit_objectness(seed, kwargs):
    """ultralytics' semantics (conf on the class score, no objectness) == YOLOv5's with objectness 1.0: the
    same rows through the two heads give identical detections, and the count is a real figure."""
    pred = _anchor_free_case(seed)
    rows = pred[0].T
    as_v5 = np.concatenate([rows[:, :4], np.ones((len(rows), 1), np.float32), rows[:, 4:]], axis=1)[None]
    got = non_max_suppression(pred, head="anchor_free", **kwargs)[0]
    want = non_max_suppression(as_v5, **kwargs)[0]
    np.testing.assert_array_equal(got, want)
    assert 5 <= len(got) <= kwargs.get("max_det", 300)
    assert (got[:, 4] > kwargs["conf_thres"]).all()


def test_anchor_free_candidates_are_best_class_above_conf():
    # box 0: best class 0.3 > 0.25 kept; box 1: best 0.2 dropped; box 2 (far away): class 2 at 0.9
    pred = np.array([[[10, 10, 20, 20, 0.3, 0.1, 0.0],
                      [100, 100, 20, 20, 0.2, 0.1, 0.1],
                      [200, 200, 10, 10, 0.0, 0.0, 0.9]]], np.float32).transpose(0, 2, 1)
    out = non_max_suppression(pred, conf_thres=0.25, head="anchor_free")[0]
    np.testing.assert_allclose(out, [[195, 195, 205, 205, 0.9, 2], [0, 0, 20, 20, 0.3, 0]])
    dets = postprocess([pred], [LetterboxInfo((320, 320), (320, 320), 1.0, (0.0, 0.0))], head="anchor_free",
                       conf_thres=0.25)[0]
    assert len(dets) == 2 and dets.class_id.tolist() == [2, 0]
