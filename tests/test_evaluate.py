"""COCO ground truth from YOLO labels, pycocotools scoring figures and the evaluate() loop."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import has_module, requires_ort

pytestmark = [requires_ort, pytest.mark.skipif(not has_module("pycocotools"), reason="pycocotools not installed")]

from edge_detect.errors import DataError  # noqa: E402
from edge_detect.evaluate import coco_ground_truth, coco_map, coco_results, evaluate, image_ids  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402
from edge_detect.types import Detections  # noqa: E402


@pytest.mark.parametrize("names, ids", [
    (["000000000139.jpg", "000000000285.jpg"], [139, 285]),
    (["a.jpg", "000000000285.jpg"], ["a", "000000000285"]),
    (["x/a.jpg", "y/a.jpg"], ["x/a", "y/a"]),
])
def test_image_ids(names, ids):
    assert image_ids([Path(n) for n in names]) == ids


def test_ground_truth_from_yolo_labels():
    labels = [np.array([[3, 0.5, 0.25, 0.2, 0.1], [0, 0.1, 0.1, 0.2, 0.2]], np.float32), np.zeros((0, 5))]
    gt = coco_ground_truth([7, 8], [(200, 400), (10, 10)], labels, ["a", "b", "c", "d"])
    assert [im["id"] for im in gt["images"]] == [7, 8] and gt["images"][0]["width"] == 400
    a0, a1 = gt["annotations"]
    assert (a0["id"], a1["id"]) == (1, 2)                      # COCOeval needs ids >= 1
    assert a0["category_id"] == 3 and a0["image_id"] == 7 and a0["iscrowd"] == 0
    np.testing.assert_allclose(a0["bbox"], [160, 40, 80, 20], atol=1e-4)
    assert a0["area"] == pytest.approx(1600, rel=1e-6)
    np.testing.assert_allclose(a1["bbox"], [0, 0, 80, 40], atol=1e-4)
    assert [c["id"] for c in gt["categories"]] == [0, 1, 2, 3]


def test_results_records():
    dets = Detections([[10.12345, 20, 30, 60]], [0.123456789], [2])
    assert coco_results(5, dets) == [{"image_id": 5, "category_id": 2, "bbox": [10.123, 20.0, 19.877, 40.0],
                                      "score": 0.12346}]


def _gt_one_box():
    return coco_ground_truth([1], [(100, 100)], [np.array([[0, 0.5, 0.5, 0.4, 0.4]], np.float32)], ["a"])


@pytest.mark.parametrize("bbox, map50_95, map50", [
    ([30, 30, 40, 40], 1.0, 1.0),              # exact
    ([30, 30, 40, 40 / 0.62], 0.3, 1.0),       # IoU 0.62: matched at thresholds 0.50, 0.55, 0.60 only
    ([30, 30, 40, 40 / 0.45], 0.0, 0.0),       # IoU 0.45: never matched
    ([0, 0, 10, 10], 0.0, 0.0),
])
def test_coco_map_figures(bbox, map50_95, map50):
    res = [{"image_id": 1, "category_id": 0, "bbox": bbox, "score": 0.9}]
    got = coco_map(_gt_one_box(), res)
    assert got == pytest.approx((map50_95, map50), abs=1e-6)


def test_coco_map_without_results_is_zero():
    assert coco_map(_gt_one_box(), []) == (0.0, 0.0)


@pytest.fixture
def bus_dataset(tmp_path, shared, reference):
    """A one-image dataset: bus.jpg (linked, not copied) labelled with the reference display detections."""
    root = tmp_path / "busdata"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    os.symlink(shared / "images" / "bus.jpg", root / "images" / "val" / "bus.jpg")
    (root / "images" / "val" / "broken.jpg").write_bytes(b"not a jpeg")
    ref = np.load(reference / "infer_bus.npz")["nms_display_original"]
    h, w = 1080, 810
    rows = [f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            for x1, y1, x2, y2, _, c in ref]
    (root / "labels" / "val" / "bus.txt").write_text("\n".join(rows) + "\n")
    yaml_path = root / "data.yaml"
    yaml_path.write_text("path: .\nval: images/val\nnames: [" + ", ".join(f"c{i}" for i in range(80)) + "]\n")
    return yaml_path


@pytest.fixture
def replay_bus(onnx_builder, reference, tmp_path):
    raw = np.load(reference / "infer_bus.npz")["raw"]
    meta = ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict()
    return onnx_builder(tmp_path / "replay.onnx", [raw], input_shape=(1, 3, "h", "w"), metadata=meta)


def test_evaluate_end_to_end_on_replayed_predictions(bus_dataset, replay_bus, tmp_path, caplog):
    out = tmp_path / "preds" / "p.json"
    res = evaluate(replay_bus, bus_dataset, save_json=out, progress=False)
    assert res["images"] == 1 and res["boxes"] == 4 and res["skipped"] == 1
    assert res["detections"] == 300                   # max_det at conf 0.001
    assert res["map50"] == pytest.approx(1.0)
    assert res["map50_95"] > 0.95                     # labels are the predictions rounded to whole pixels
    preds = json.loads(out.read_text())
    assert len(preds) == 300 and set(preds[0]) == {"image_id", "category_id", "bbox", "score"}
    assert preds[0]["image_id"] == "bus" and preds[0]["category_id"] == 0
    np.testing.assert_allclose(preds[0]["bbox"], [219, 408, 130, 455], atol=1)
    assert "broken.jpg: not a decodable image" in caplog.text


@pytest.mark.parametrize("yaml_text, message", [
    ("path: .\nval: images/nothing\nnames: [a]\n", "image source not found"),
    ("path: .\nval: images/val\nnames: [a]\n", "labels/val/bus.txt:4: class: expected an integer in 0..0, got 5"),
    ("path: .\ntrain: images/val\nnames: [a]\n", "split 'val' not defined"),
])
def test_evaluate_data_errors(bus_dataset, replay_bus, yaml_text, message):
    bad = bus_dataset.parent / "bad.yaml"
    bad.write_text(yaml_text)
    with pytest.raises(DataError, match=None) as err:
        evaluate(replay_bus, bad, progress=False)
    assert message in str(err.value)


@pytest.fixture
def coco128_subset(coco128, tmp_path):
    """The first 4 coco128 val2017 images through a list file."""
    files = sorted((coco128 / "images" / "val2017").glob("*.jpg"))[:4]
    (tmp_path / "val.txt").write_text("".join(f"{f}\n" for f in files))
    names = "[" + ", ".join(f"c{i}" for i in range(80)) + "]"
    (tmp_path / "sub.yaml").write_text(f"path: {tmp_path}\nval: val.txt\nnames: {names}\n")
    return tmp_path / "sub.yaml"


def test_evaluate_pt_matches_onnx(weights_pt, yolov5n_onnx, coco128_subset):
    """A .pt path goes through the torch backend and scores like its ONNX export."""
    try:
        import edge_detect.training.torch_backend  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "edge_detect.training.torch_backend":
            pytest.skip("torch backend not available yet")
        raise
    if not has_module("torch"):
        pytest.skip("torch not installed")
    import torch

    torch.set_num_threads(2)
    onnx_res = evaluate(yolov5n_onnx, coco128_subset, progress=False)
    pt_res = evaluate(weights_pt, coco128_subset, progress=False)
    assert onnx_res["images"] == pt_res["images"] == 4 and onnx_res["boxes"] == pt_res["boxes"]
    assert pt_res["map50_95"] == pytest.approx(onnx_res["map50_95"], abs=0.005)
    assert onnx_res["map50_95"] > 0.2
