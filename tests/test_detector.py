"""Detector: parity through the whole chain, sizes, batching, options and errors; annotation drawing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import requires_ort

pytestmark = requires_ort

from edge_detect.annotate import class_color, draw_detections, draw_fps, label_text  # noqa: E402
from edge_detect.detector import Detector  # noqa: E402
from edge_detect.errors import ConfigError, DataError  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402
from edge_detect.types import Detections  # noqa: E402

NAMES = [f"n{i}" for i in range(80)]


@pytest.fixture(scope="module")
def bus(shared):
    return cv2.imread(str(shared / "images" / "bus.jpg"))


@pytest.fixture(scope="module")
def zidane(shared):
    return cv2.imread(str(shared / "images" / "zidane.jpg"))


@pytest.fixture(scope="module")
def ref_bus(reference):
    return dict(np.load(reference / "infer_bus.npz"))


@pytest.fixture(scope="module")
def models(onnx_builder, ref_bus, tmp_path_factory):
    """Replay models returning the reference bus prediction: static b1, static b2, dynamic, uint8 NHWC."""
    d = tmp_path_factory.mktemp("det")
    meta = ModelMetadata(names=NAMES).to_dict()
    raw = ref_bus["raw"]
    return {
        "static": onnx_builder(d / "s.onnx", [raw], metadata=meta),
        "batch2": onnx_builder(d / "b2.onnx", [raw], input_shape=(2, 3, 640, 640), metadata={**meta, "batch": 2}),
        "dynamic": onnx_builder(d / "dyn.onnx", [raw], input_shape=("b", 3, "h", "w"),
                                metadata={**meta, "dynamic": True}),
        "uint8": onnx_builder(d / "u8.onnx", [raw], input_shape=(1, 640, 640, 3), input_dtype="uint8",
                              metadata={**meta, "input_format": "uint8_nhwc_bgr"}),
    }


class Spy:
    """Wraps a backend and records the batch shapes it is given."""

    def __init__(self, det):
        self.shapes = []
        self._infer = det.backend.infer
        det.backend.infer = self

    def __call__(self, batch):
        self.shapes.append((batch.shape, batch.dtype))
        return self._infer(batch)


def test_single_image_reproduces_reference(models, bus, ref_bus):
    with Detector(models["static"], threads=1) as det:
        assert det.input_hw == (640, 640) and det.batch_size == 1 and det.names == tuple(NAMES)
        dets = det(bus)
    assert isinstance(dets, Detections)
    want = ref_bus["nms_display_original"]
    np.testing.assert_array_equal(dets.xyxy.round(), want[:, :4])
    np.testing.assert_allclose(dets.score, want[:, 4], atol=1e-5)
    assert dets.class_id.tolist() == [0, 0, 0, 5]


@pytest.mark.parametrize("kwargs, n, classes", [
    (dict(), 4, {0, 5}),
    (dict(classes=[5]), 1, {5}),
    (dict(max_det=2), 2, {0}),
    (dict(conf=0.7), 2, {0}),
    (dict(conf=0.001, iou=0.6, max_det=300), 300, None),
])
def test_thresholds_are_applied(models, bus, kwargs, n, classes):
    dets = Detector(models["static"], **kwargs)(bus)
    assert len(dets) == n
    if classes is not None:
        assert set(dets.class_id.tolist()) == classes


def test_stages_are_public(models, bus):
    det = Detector(models["static"])
    batch, infos = det.preprocess(bus)
    assert batch.shape == (1, 3, 640, 640) and infos[0].pad == (80.0, 0.0)
    outputs = det.infer(batch)
    dets = det.postprocess(outputs, infos)
    assert len(dets) == 1 and len(dets[0]) == 4
    assert len(det.postprocess(outputs, infos, conf_thres=0.8)[0]) == 2


def test_static_batch_is_chunked_and_padded(models, bus):
    det = Detector(models["batch2"])
    spy = Spy(det)
    out = det([bus, bus, bus])
    assert det.batch_size == 2
    assert [s for s, _ in spy.shapes] == [(2, 3, 640, 640), (2, 3, 640, 640)]  # last chunk padded to 2
    assert [len(d) for d in out] == [4, 4, 4]


def test_dynamic_model_uses_minimum_rectangle(models, zidane, bus):
    det = Detector(models["dynamic"])
    spy = Spy(det)
    det(zidane)
    det([zidane, bus])
    assert det.auto and det.input_hw == (640, 640)
    assert spy.shapes[0][0] == (1, 3, 384, 640)
    assert spy.shapes[1][0] == (2, 3, 640, 640)   # common rectangle holding 384x640 and 640x480
    det.detect_batch([zidane], auto=False)
    assert spy.shapes[2][0] == (1, 3, 640, 640)
    small = Detector(models["dynamic"], imgsz=320)
    spy = Spy(small)
    small(zidane)
    assert small.input_hw == (320, 320) and spy.shapes[0][0] == (1, 3, 192, 320)


def test_uint8_model_gets_nhwc_bgr(models, bus):
    det = Detector(models["uint8"])
    spy = Spy(det)
    dets = det(bus)
    assert spy.shapes == [((1, 640, 640, 3), np.dtype(np.uint8))]
    assert len(dets) == 4


def test_grayscale_and_bgra_frames(models, bus):
    det = Detector(models["static"])
    gray = cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY)
    for img in (gray, gray[..., None], cv2.cvtColor(bus, cv2.COLOR_BGR2BGRA)):
        assert len(det(img)) == 4


@pytest.mark.parametrize("model, kwargs, message", [
    ("static", dict(imgsz=320), "static input size 640x640, got 320x320"),
    ("dynamic", dict(imgsz=500), "multiples of the model stride 32"),
    ("dynamic", dict(imgsz=(1, 2, 3)), "imgsz: expected 'S' or 'HxW' (one or two positive integers), got [1, 2, 3]"),
    ("static", dict(conf=1.5), "conf: expected a value in [0, 1], got 1.5"),
    ("static", dict(iou=-1), "iou: expected a value in [0, 1]"),
    ("static", dict(max_det=0), "max_det: expected >= 1"),
    ("static", dict(classes=[80]), "classes: expected ids in [0, 79], got [80]"),
    ("dynamic", dict(imgsz=100000), "imgsz: expected sides of at most 4096 px (--force-imgsz to go beyond), "
                                    "got 100000x100000"),
    ("dynamic", dict(imgsz=(640, 4128)), "got 640x4128"),
])
def test_config_errors(models, model, kwargs, message):
    with pytest.raises(ConfigError) as err:
        Detector(models[model], **kwargs)
    assert message in str(err.value)


def test_imgsz_above_the_cap_only_when_forced(models):
    det = Detector(models["dynamic"], imgsz=4128, force_imgsz=True)
    assert det.input_hw == (4128, 4128)
    assert Detector(models["dynamic"], imgsz=4096).input_hw == (4096, 4096)  # the cap itself is allowed


@pytest.mark.parametrize("images, message", [
    (None, "image: expected a numpy uint8 array (H, W, 3), got None (cv2.imread returns None for a missing or "
           "undecodable file)"),
    ([None], "got None (cv2.imread returns None"),
    (42, "images: expected a numpy uint8 array (H, W, 3) or a list of them, got int"),
    ("bus.jpg", "image: expected a numpy uint8 array (H, W, 3), got str"),
])
def test_calling_on_a_non_image_is_a_data_error(models, images, message):
    det = Detector(models["static"])
    with pytest.raises(DataError) as err:
        det(images)
    assert message in str(err.value)


def test_real_model_on_bus_matches_reference(yolov5n_onnx, bus, ref_bus):
    with Detector(yolov5n_onnx, threads=2) as det:
        dets = det(bus)
    want = ref_bus["nms_display_original"]
    assert len(dets) == len(want)
    assert dets.class_id.tolist() == want[:, 5].astype(int).tolist()
    np.testing.assert_allclose(dets.xyxy, want[:, :4], atol=1.0)       # reference rounded to whole px
    np.testing.assert_allclose(dets.score, want[:, 4], atol=1e-4)


def test_real_dynamic_model_minimum_rectangle_close_to_reference(yolov5n_onnx_dynamic, zidane, reference):
    """zidane through a dynamic model at 384x640 (instead of 640x640) finds the same objects."""
    want = np.load(reference / "infer_zidane.npz")["nms_display_original"]
    with Detector(yolov5n_onnx_dynamic, threads=2) as det:
        spy = Spy(det)
        dets = det(zidane)
    assert spy.shapes[0][0] == (1, 3, 384, 640)
    assert dets.class_id.tolist() == want[:, 5].astype(int).tolist() == [0, 0, 27]
    np.testing.assert_allclose(dets.xyxy, want[:, :4], atol=4.0)
    np.testing.assert_allclose(dets.score, want[:, 4], atol=0.05)


# --- annotate ---------------------------------------------------------------------------------------------------

def test_draw_detections_colours_boxes_and_labels():
    img = np.zeros((200, 300, 3), np.uint8)
    dets = Detections([[50, 60, 150, 160], [10, 10, 40, 40]], [0.87, 0.5], [0, 3], track_id=[7, -1])
    out = draw_detections(img, dets, ["person", "a", "b", "car"], line_width=2, copy=True)
    assert img.sum() == 0 and out is not img                    # copy leaves the input untouched
    assert out[110, 50].tolist() == list(class_color(0))         # left edge of box 0 in its class colour
    assert out[100, 100].tolist() == [0, 0, 0]                   # box interior untouched
    assert out[25, 10].tolist() == list(class_color(3))
    assert class_color(0) != class_color(3) and class_color(0) == class_color(20)
    assert label_text(0, 0.87, ["person"], 7) == "#7 person 0.87"
    assert label_text(5, 0.5, ["person"]) == "5 0.50"
    same = draw_detections(img, Detections.empty(), None)
    assert same is img


def test_draw_fps_overlay():
    img = np.full((360, 480, 3), 200, np.uint8)
    out = draw_fps(img, 29.84, "inference 12.3 ms", copy=True)
    assert (out[:5, :5] == 80).all()                 # panel darkened to 40%
    assert (out[-5:, -5:] == 200).all()              # rest untouched
    assert (out[:60, :200] == 255).any()             # white text drawn
    assert img.min() == 200


@pytest.mark.skipif(not __import__("conftest").has_module("torch"), reason="torch not installed")
def test_pt_and_onnx_use_the_same_input_shape_and_agree(weights_pt, yolov5n_onnx, bus):
    """The .pt letterboxes bus.jpg (1080x810) to the same 640x640 square as its static ONNX export, so both
    give the same detections (before, the .pt used a 640x480 minimum rectangle)."""
    with Detector(weights_pt) as pt, Detector(yolov5n_onnx, threads=2) as ox:
        spies = Spy(pt), Spy(ox)
        got = pt(bus), ox(bus)
        assert not pt.auto and spies[0].shapes[0][0] == spies[1].shapes[0][0] == (1, 3, 640, 640)
        assert pt.input_hw == ox.input_hw == (640, 640)
        assert Detector(pt.backend, auto=True).auto  # the minimum rectangle stays available on request
    assert got[0].class_id.tolist() == got[1].class_id.tolist() == [0, 0, 0, 5]  # the reference boxes
    np.testing.assert_allclose(got[0].xyxy, got[1].xyxy, atol=0.05)
    np.testing.assert_allclose(got[0].score, got[1].score, atol=1e-4)
