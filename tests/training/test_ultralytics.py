"""ultralytics models (YOLOv8n, YOLO11n, YOLOv5nu) through edge-detect: export, raw parity with ultralytics' own
ONNX export, detection parity with ultralytics' predictor, in-graph NMS / uint8 input / INT8 on the anchor-free
head, ultralytics-exported ONNX files, and the checkpoint trust rules.

Models are built offline from ultralytics' YAMLs with random weights (no download). To make the outputs
meaningful, BatchNorm statistics are set from the test frames and the class-score convolutions are rescaled
(logits in [-4, 4] on those frames) with per-class biases in [-7, -3], so scores spread over (0, ~0.75) without
saturating at 1.0 (which would make ties, ordered arbitrarily): a few dozen boxes pass
conf 0.25 and 300 (max_det) pass 0.001, so NMS has real work.

Letterbox protocol on both sides: square 320x320, ``auto=False`` (``rect=False`` for ultralytics' predictor, a
static 320x320 ONNX for edge-detect), centred grey-114 padding, ``cv2.INTER_LINEAR``; NMS conf as given,
IoU 0.7 (ultralytics' default), max_det 300, class-aware, best class only.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tests.conftest import has_module

pytestmark = pytest.mark.skipif(not has_module("ultralytics"), reason="ultralytics not installed "
                                                                    "(pip install 'edge-detect[ultralytics]')")
torch = pytest.importorskip("torch")

FAMILIES = ("yolov8n", "yolo11n", "yolov5nu")
IMGSZ = 320
IOU, MAX_DET = 0.7, 300


@pytest.fixture(scope="module", autouse=True)
def _offline_ultralytics():
    """ultralytics' settings file goes to a temporary folder; offline env set before its first import."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="edge-detect-yolo-config-"))
    from edge_detect.training.ultralytics_export import import_ultralytics

    return import_ultralytics()


@pytest.fixture(scope="module")
def frames(shared):
    images = [cv2.imread(str(shared / "images" / n)) for n in ("bus.jpg", "zidane.jpg")]
    cap = cv2.VideoCapture(str(shared / "videos" / "vtest.avi"))
    video = []
    for index in (0, 150, 300):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok, f"cannot read frame {index} of vtest.avi"
        video.append(frame)
    cap.release()
    return images + video


def _randomize(net, x):
    """BatchNorm statistics from ``x``; class logits rescaled to [-4, 4] plus per-class biases in [-7, -3]."""
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration batch
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    convs = [seq[-1] for seq in net.model[-1].cv3]
    logits = {}
    hooks = [c.register_forward_hook(lambda m, i, o, k=k: logits.__setitem__(k, o - m.bias.view(1, -1, 1, 1)))
             for k, c in enumerate(convs)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    gen = torch.Generator().manual_seed(0)
    for k, conv in enumerate(convs):
        conv.weight.data *= 4.0 / float(logits[k].abs().max())
        conv.bias.data = torch.empty(conv.bias.shape).uniform_(-7.0, -3.0, generator=gen)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, frames, tmp_path_factory, _offline_ultralytics):
    """One model per family, built once: checkpoint, our ONNX, ultralytics' ONNX, ultralytics' YOLO."""
    from edge_detect.preprocess import preprocess
    from edge_detect.training.export import export_onnx

    ultralytics = _offline_ultralytics
    name = request.param
    torch.manual_seed(0)
    yolo = ultralytics.YOLO(f"{name}.yaml")
    batch, _ = preprocess(frames, (IMGSZ, IMGSZ))  # every test frame: no class logit beyond [-4, 4] + bias
    _randomize(yolo.model, torch.from_numpy(batch))
    folder = tmp_path_factory.mktemp(name)
    pt = folder / "weights.pt"  # a neutral name: the family is recognised from the content
    yolo.save(str(pt))
    ours = export_onnx(pt, folder / "ours.onnx", imgsz=IMGSZ, progress=False)
    theirs = Path(ultralytics.YOLO(str(pt)).export(format="onnx", imgsz=IMGSZ, simplify=True, verbose=False))
    return SimpleNamespace(name=name, pt=pt, ours=ours, theirs=theirs, folder=folder,
                           predictor=ultralytics.YOLO(str(pt)))


def _ort(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _raw(path, batch):
    sess = _ort(path)
    return sess.run(None, {sess.get_inputs()[0].name: batch})[0]


def _rows(dets):
    """``(n, 6)`` ``[x1, y1, x2, y2, score, cls]`` in original pixels, by descending score."""
    rows = np.concatenate([dets.xyxy, dets.score[:, None], dets.class_id[:, None].astype(np.float32)], axis=1)
    return rows[np.lexsort((rows[:, 1], rows[:, 0], -rows[:, 4]))]


def _assert_same_detections(got, want, where):
    """Same count, and a one-to-one matching with the same class, box within 0.5 px, score within 1e-4.

    Matching instead of comparing sorted rows: scores that differ by ~1e-7 between ONNX Runtime and torch may
    swap places in a sort, which is no difference in the detections."""
    assert len(got) == len(want), f"{where}: {len(got)} detections, ultralytics has {len(want)}"
    free = np.ones(len(want), bool)
    for row in got:
        ok = free & (want[:, 5] == row[5]) & (np.abs(want[:, 4] - row[4]) <= 1e-4) \
            & (np.abs(want[:, :4] - row[:4]).max(axis=1) <= 0.5)
        assert ok.any(), f"{where}: no ultralytics detection matches {row.tolist()}"
        free[np.flatnonzero(ok)[0]] = False


# ------------------------------------------------------------------------------------------------ checkpoint
def test_checkpoint_recognised_from_content_and_read_without_ultralytics_code(family):
    from edge_detect.errors import ModelLoadError
    from edge_detect.training.checkpoint import (ULTRALYTICS_CLASSES, checkpoint_family, load_checkpoint,
                                                 load_model, pickle_globals)

    assert checkpoint_family(family.pt) == "ultralytics"
    needed = {g for g in pickle_globals(family.pt) if g[0].startswith("ultralytics.")}
    allowed = {(m, n) for m, names in ULTRALYTICS_CLASSES.items() for n in names}
    assert needed and needed <= allowed, f"globals off the allow-list: {sorted(needed - allowed)}"
    info = load_checkpoint(family.pt)
    assert (info["format"], info["task"], info["nc"], info["end2end"]) == ("ultralytics", "detect", 80, False)
    assert info["stride"] == [8.0, 16.0, 32.0] and info["anchors"] is None
    assert all(v.dtype == torch.float32 for v in info["state_dict"].values() if v.is_floating_point())
    with pytest.raises(ModelLoadError, match="is an ultralytics checkpoint"):
        load_model(family.pt)  # our YOLOv5 builder refuses it with a pointer to export


# -------------------------------------------------------------------------------------------- export parity
def test_our_export_matches_ultralytics_export(family, frames):
    from edge_detect.metadata import ModelMetadata
    from edge_detect.preprocess import preprocess

    import onnx

    meta = ModelMetadata.from_onnx_props({p.key: p.value for p in onnx.load(str(family.ours)).metadata_props})
    assert (meta.head, meta.output_layout, meta.imgsz, meta.stride, meta.nc) == ("anchor_free", "raw", (320, 320),
                                                                                  32, 80)
    assert meta.versions["ultralytics"] and meta.source_sha256
    best = []
    for frame in frames:
        batch, _ = preprocess([frame], (IMGSZ, IMGSZ))
        ours, theirs = _raw(family.ours, batch), _raw(family.theirs, batch)
        assert ours.shape == theirs.shape == (1, 84, 2100)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
        best.append(theirs[0, 4:].max(axis=0))
    best = np.concatenate(best)  # best class score of each box: spread over (0, 1), no saturation (ties)
    assert 0.0 < best.min() < 0.05 and 0.5 < best.max() < 0.8


@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_detections_equal_ultralytics_predictor(family, frames, conf):
    from edge_detect import Detector

    results = family.predictor.predict(frames, imgsz=IMGSZ, conf=conf, iou=IOU, max_det=MAX_DET, rect=False,
                                       verbose=False)
    counts = []
    with Detector(family.ours, conf=conf, iou=IOU, max_det=MAX_DET) as det:
        assert det.input_hw == (IMGSZ, IMGSZ) and det.metadata.head == "anchor_free"
        for i, (frame, res) in enumerate(zip(frames, results)):
            want = res.boxes.data.cpu().numpy().astype(np.float32)
            got = _rows(det(frame))
            _assert_same_detections(got, want, f"{family.name} frame {i} conf {conf}")
            counts.append(len(got))
    if conf == 0.001:
        assert counts == [MAX_DET] * len(frames)  # NMS had real work: the cap is reached
    else:
        assert sum(counts) >= 5 and max(counts) < MAX_DET


def test_torch_backend_equals_predictor_default_rect_letterbox(family, frames):
    """The ``.pt`` itself through our torch backend with the minimum-rectangle letterbox (``auto=True``), which is
    what ultralytics' predictor does for ``.pt`` models by default (``rect=True``)."""
    from edge_detect import Detector

    # one frame per call: for a list of differently shaped frames the predictor falls back to a square letterbox
    results = [family.predictor.predict(frame, imgsz=IMGSZ, conf=0.25, iou=IOU, max_det=MAX_DET, verbose=False)[0]
               for frame in frames]
    with Detector(family.pt, backend="torch", imgsz=IMGSZ, conf=0.25, iou=IOU, max_det=MAX_DET, auto=True) as det:
        assert det.metadata.head == "anchor_free" and det.auto
        assert det.preprocess([frames[0]])[0].shape == (1, 3, 320, 256)  # bus.jpg 1080x810: 320x240 padded to 256
        for i, (frame, res) in enumerate(zip(frames, results)):
            _assert_same_detections(_rows(det(frame)), res.boxes.data.cpu().numpy(), f"{family.name} torch {i}")


@pytest.mark.parametrize("options", [
    dict(),
    dict(agnostic=True),
    dict(multi_label=True),
    dict(max_det=7),
    dict(classes=True),
], ids=["default", "agnostic", "multi_label", "max_det", "classes"])
def test_nms_semantics_equal_ultralytics(family, frames, options):
    """Our NMS vs ``ultralytics.utils.nms.non_max_suppression`` on the same raw output (letterbox pixels)."""
    from ultralytics.utils.nms import non_max_suppression as ultra_nms

    from edge_detect.postprocess import non_max_suppression
    from edge_detect.preprocess import preprocess

    batch, _ = preprocess(frames[:2], (IMGSZ, IMGSZ))
    raw = np.concatenate([_raw(family.ours, b[None]) for b in batch])
    if options.get("classes"):  # three classes that do occur in the default detections
        seen = non_max_suppression(raw, 0.05, IOU, head="anchor_free")[0][:, 5]
        options = dict(options, classes=sorted({int(c) for c in seen})[:3])
    for conf in (0.25, 0.05):
        want = [w.numpy() for w in ultra_nms(torch.from_numpy(raw), conf, IOU, max_det=options.get("max_det", 300),
                                             **{k: v for k, v in options.items() if k != "max_det"})]
        got = non_max_suppression(raw, conf, IOU, head="anchor_free", **options)
        for g, w in zip(got, want):
            _assert_same_detections(g, w, f"{family.name} {options} conf {conf}")
    assert sum(len(g) for g in got) > 0


def test_ultralytics_exported_onnx_runs_like_ours(family, frames):
    from edge_detect import Detector

    with Detector(family.theirs, conf=0.25, iou=IOU, max_det=MAX_DET) as theirs, \
            Detector(family.ours, conf=0.25, iou=IOU, max_det=MAX_DET) as ours:
        assert theirs.metadata.head == "anchor_free" and theirs.metadata.extra["exported_by"] == "ultralytics"
        assert theirs.names == ours.names and theirs.input_hw == (IMGSZ, IMGSZ)
        for frame in frames:
            _assert_same_detections(_rows(theirs(frame)), _rows(ours(frame)), family.name)


# --------------------------------------------------------------------------------------- our later stages
def test_in_graph_nms_and_uint8_input(family, frames, tmp_path):
    """ONNX NMS + uint8 input on the anchor-free head == our NMS on the raw model; EfficientNMS graph shapes."""
    import onnx

    from edge_detect import Detector
    from edge_detect.deploy.graph import add_nms, add_uint8_input

    u8 = add_uint8_input(family.ours, tmp_path / "u8.onnx")
    nms = add_nms(u8, tmp_path / "nms.onnx", conf=0.25, iou=IOU, max_det=100, plugin="onnx")
    with Detector(nms, conf=0.25) as det, Detector(family.ours, conf=0.25, iou=IOU, max_det=100) as ref:
        assert (det.metadata.output_layout, det.metadata.input_format, det.metadata.head) == \
            ("nms", "uint8_nhwc_bgr", "anchor_free")
        total = 0
        for frame in frames:
            got, want = _rows(det(frame)), _rows(ref(frame))
            assert len(got) == len(want)
            np.testing.assert_array_equal(got[:, 5], want[:, 5])
            np.testing.assert_allclose(got[:, :5], want[:, :5], atol=1e-3)
            total += len(got)
    assert total >= 5

    eff = onnx.load(str(add_nms(family.ours, tmp_path / "eff.onnx", conf=0.25, iou=IOU, plugin="efficient")))
    inferred = onnx.shape_inference.infer_shapes(eff)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    node = next(n for n in eff.graph.node if n.op_type == "EfficientNMS_TRT")
    assert [shapes[i] for i in node.input] == [[1, 2100, 4], [1, 2100, 80]]


def test_int8_with_sensitivity_on_anchor_free_head(family, shared, tmp_path):
    if family.name != "yolov8n":
        pytest.skip("INT8 checked on one family (the head is the same Detect in all three)")
    import json

    from edge_detect import Detector
    from edge_detect.deploy.quantize import quantize_int8

    out = quantize_int8(family.ours, tmp_path / "int8.onnx", calib=shared / "images", num_images=2,
                        sensitivity=True, sensitivity_images=1, sensitivity_blocks=["model.21", "model.0"],
                        progress=False, report_path=tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    # the box (cv2) and class (cv3) output convs of the 3 levels stay float; the DFL conv is part of decoding
    assert len(report["detect_head"]["convs"]) == 6
    assert {r["block"] for r in report["sensitivity"]["blocks"]} == {"model.21", "model.0"}
    with Detector(out) as det:
        assert (det.metadata.precision, det.metadata.head) == ("int8", "anchor_free")


# ------------------------------------------------------------------------------------------- trust decisions
def test_checkpoint_with_foreign_global_refused_unless_trusted(family, tmp_path):
    if family.name != "yolov8n":
        pytest.skip("checked on one family")
    from ultralytics.utils import IterableSimpleNamespace

    from edge_detect.errors import UnsafeCheckpointError
    from edge_detect.training.export import export_onnx

    ckpt = torch.load(family.pt, map_location="cpu", weights_only=False)  # our own file from the fixture
    ckpt["notes"] = IterableSimpleNamespace(imgsz=320)  # a global the allow-list does not have
    odd = tmp_path / "odd.pt"
    torch.save(ckpt, odd)
    with pytest.raises(UnsafeCheckpointError, match=r"ultralytics\.utils\.IterableSimpleNamespace.*"
                                                    r"--trust-checkpoint"):
        export_onnx(odd, tmp_path / "refused.onnx", imgsz=IMGSZ)
    assert not (tmp_path / "refused.onnx").exists()
    trusted = export_onnx(odd, tmp_path / "trusted.onnx", imgsz=IMGSZ, trust_checkpoint=True)
    batch = np.random.default_rng(0).uniform(0, 1, (1, 3, IMGSZ, IMGSZ)).astype(np.float32)
    np.testing.assert_allclose(_raw(trusted, batch), _raw(family.ours, batch), rtol=1e-4, atol=1e-6)


def test_non_detection_checkpoint_refused(tmp_path, _offline_ultralytics):
    from edge_detect.errors import ModelLoadError
    from edge_detect.training.checkpoint import load_model
    from edge_detect.training.export import export_onnx

    seg = tmp_path / "seg.pt"
    _offline_ultralytics.YOLO("yolov8n-seg.yaml").save(str(seg))
    with pytest.raises(ModelLoadError, match="task: expected 'detect'.*'segment'"):
        export_onnx(seg, tmp_path / "seg.onnx", imgsz=IMGSZ)
    with pytest.raises(ModelLoadError, match="task: expected 'detect'"):
        load_model(seg)


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_export_detect_val_run(family, shared, coco128_yaml, tmp_path, capsys):
    if family.name != "yolov8n":
        pytest.skip("CLI checked on one family")
    import json

    from edge_detect.cli import main

    out = tmp_path / "v8-nms.onnx"
    assert main(["export", "--weights", str(family.pt), "--imgsz", str(IMGSZ), "--nms", "--uint8-input",
                 "--nms-iou", str(IOU), "-o", str(out)]) == 0
    assert out.is_file()
    assert main(["detect", "--model", str(out), "--source", str(shared / "images" / "bus.jpg"),
                 "--output", str(tmp_path / "det"), "--no-save-images", "--iou", str(IOU)]) == 0
    labels = (tmp_path / "det" / "labels" / "bus.txt").read_text().splitlines()
    from edge_detect import Detector

    with Detector(family.ours, conf=0.25, iou=IOU, max_det=100) as ref:
        assert len(labels) == len(ref(cv2.imread(str(shared / "images" / "bus.jpg"))))
    assert main(["val", "--model", str(family.ours), "--data", str(coco128_yaml), "--no-progress"]) == 0
    summary, jsonl = tmp_path / "run.json", tmp_path / "run.jsonl"
    assert main(["run", "--model", str(family.ours), "--conf", "0.05", "--iou", str(IOU), "--source",
                 str(shared / "videos" / "vtest.avi"), "--max-frames", "5", "--no-show", "--no-progress", "--summary-json", str(summary), "--save-jsonl", str(jsonl)]) == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert 4 <= json.loads(summary.read_text())["processed"] == len(lines) <= 5
    assert sum(len(line["detections"]) for line in lines) > 0


def test_openvino_backend_runs_anchor_free(family, frames):
    if not has_module("openvino") or family.name != "yolov8n":
        pytest.skip("OpenVINO checked on one family, when installed")
    from edge_detect import Detector

    with Detector(family.ours, backend="openvino", conf=0.25, iou=IOU, max_det=MAX_DET, precision="fp32") as ov, \
            Detector(family.ours, conf=0.25, iou=IOU, max_det=MAX_DET) as ref:
        assert ov.metadata.head == "anchor_free"
        total = 0
        for frame in frames:
            got, want = _rows(ov(frame)), _rows(ref(frame))
            assert len(got) == len(want)
            np.testing.assert_allclose(got[:, :5], want[:, :5], atol=1e-2)
            total += len(got)
        assert total >= 5
