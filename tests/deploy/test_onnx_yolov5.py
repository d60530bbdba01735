"""Export without PyTorch: the ONNX written from the .pt and its yaml gives the torch export's outputs bit for bit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_ort

pytestmark = requires_ort
onnx = pytest.importorskip("onnx")

from edge_detect.deploy.onnx_yolov5 import export_onnx_torch_free, fuse_conv_bn  # noqa: E402
from edge_detect.errors import ConfigError, ModelLoadError  # noqa: E402
from edge_detect.metadata import read_onnx_metadata  # noqa: E402


def _letterboxed(shared: Path, name: str, hw) -> np.ndarray:
    import cv2

    from edge_detect.preprocess import letterbox

    img = letterbox(cv2.imread(str(shared / "images" / f"{name}.jpg")), hw)[0]
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


@pytest.fixture(scope="module")
def torch_free(weights_pt, tmp_path_factory):
    d = tmp_path_factory.mktemp("torch_free")
    return (export_onnx_torch_free(weights_pt, d / "static.onnx", progress=False),
            export_onnx_torch_free(weights_pt, d / "dynamic.onnx", dynamic=True, progress=False))


def test_static_export_is_bit_identical_to_the_torch_export(torch_free, yolov5n_onnx, shared):
    """bus.jpg and zidane.jpg letterboxed to 640: max |diff| 0.0 (same operators, same float32 constants)."""
    for name in ("bus", "zidane"):
        x = _letterboxed(shared, name, (640, 640))
        got, want = _run(torch_free[0], x), _run(yolov5n_onnx, x)
        assert got.shape == want.shape == (1, 25200, 85)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("hw", [(640, 640), (384, 640)])
def test_dynamic_export_is_bit_identical_to_the_torch_export(torch_free, yolov5n_onnx_dynamic, shared, hw):
    x = np.concatenate([_letterboxed(shared, "bus", hw), _letterboxed(shared, "zidane", hw)])  # batch 2
    got, want = _run(torch_free[1], x), _run(yolov5n_onnx_dynamic, x)
    assert got.shape == want.shape == (2, 3 * sum((hw[0] // s) * (hw[1] // s) for s in (8, 16, 32)), 85)
    np.testing.assert_array_equal(got, want)


def test_same_detections_and_metadata_as_the_torch_export(torch_free, yolov5n_onnx, shared):
    import cv2

    from edge_detect.detector import Detector

    img = cv2.imread(str(shared / "images" / "bus.jpg"))
    with Detector(torch_free[0], threads=1) as a, Detector(yolov5n_onnx, threads=1) as b:
        got, want = a(img), b(img)
    assert len(got) == len(want) == 4
    np.testing.assert_array_equal(got.xyxy, want.xyxy)
    np.testing.assert_array_equal(got.score, want.score)
    np.testing.assert_array_equal(got.class_id, want.class_id)
    meta, ref = read_onnx_metadata(onnx.load(str(torch_free[0]))), read_onnx_metadata(onnx.load(str(yolov5n_onnx)))
    assert meta.replace(versions={}) == ref.replace(versions={})
    assert meta.versions["exporter"].endswith("(torch-free)") and "torch" not in meta.versions
    dyn = read_onnx_metadata(onnx.load(str(torch_free[1])))
    assert dyn.dynamic and dyn.imgsz == (640, 640) and dyn.stride == 32


def test_node_names_follow_the_torch_export(torch_free, yolov5n_onnx):
    """The INT8 quantizer finds blocks and the Detect head by these names (``/model.N/...``)."""
    def convs(path):
        return sorted(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")

    assert convs(torch_free[0]) == convs(yolov5n_onnx)
    from edge_detect.deploy.quantize import find_detect_head, group_blocks

    model = onnx.load(str(torch_free[0]))
    head, _ = find_detect_head(model)
    assert head == ["/model.24/m.0/Conv", "/model.24/m.1/Conv", "/model.24/m.2/Conv"]
    assert list(group_blocks(model, skip=set(head)))[:3] == ["model.0", "model.1", "model.2"]


def test_fuse_conv_bn_matches_torch_bit_for_bit():
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    bn = {"weight": rng.standard_normal(8).astype(np.float32), "bias": rng.standard_normal(8).astype(np.float32),
          "running_mean": rng.standard_normal(8).astype(np.float32),
          "running_var": rng.uniform(0.001, 3, 8).astype(np.float32)}
    want_w, want_b = fuse_conv_bn_weights(torch.from_numpy(w), None, torch.from_numpy(bn["running_mean"]),
                                          torch.from_numpy(bn["running_var"]), 1e-3, torch.from_numpy(bn["weight"]),
                                          torch.from_numpy(bn["bias"]))
    got_w, got_b = fuse_conv_bn(w, bn)
    np.testing.assert_array_equal(got_w, want_w.detach().numpy())
    np.testing.assert_array_equal(got_b, want_b.detach().numpy())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"opset": 11}, ConfigError, "opset: expected 13..21"),
    ({"imgsz": 100}, ConfigError, "multiple"),
    ({"batch": 0}, ConfigError, "batch: expected >= 1"),
])
def test_bad_options(weights_pt, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        export_onnx_torch_free(weights_pt, tmp_path / "x.onnx", progress=False, **kwargs)
    assert not (tmp_path / "x.onnx").exists()


def test_unsupported_layer_names_the_row(weights_pt, tmp_path, monkeypatch):
    from edge_detect.deploy import onnx_yolov5, pt_reader

    info = pt_reader.read_checkpoint(weights_pt)
    info["cfg"] = json.loads(json.dumps(info["cfg"]))
    info["cfg"]["backbone"][0][2] = "Focus"
    monkeypatch.setattr(pt_reader, "read_checkpoint", lambda path: info)
    with pytest.raises(ModelLoadError, match="module 'Focus' .* at row 0: the torch-free exporter builds Conv"):
        onnx_yolov5.export_onnx_torch_free(weights_pt, tmp_path / "x.onnx", progress=False)


def test_export_cli_works_without_torch(weights_pt, tmp_path):
    """`edge-detect export --format onnx` with torch unimportable: the torch-free exporter, rc 0, the model runs."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; sys.modules['torch'] = None\n"
            "from edge_detect.cli import main\n"
            f"sys.exit(main(['--quiet', 'export', '--weights', {str(weights_pt)!r}, '--output', 'y.onnx', "
            "'--imgsz', '320', '--dynamic']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_onnx_metadata(onnx.load(str(tmp_path / "y.onnx")))
    assert meta.versions["exporter"].endswith("(torch-free)") and meta.dynamic and meta.imgsz == (320, 320)
    out = _run(tmp_path / "y.onnx", np.zeros((1, 3, 320, 256), np.float32))
    assert out.shape == (1, 3 * (40 * 32 + 20 * 16 + 10 * 8), 85)
