"""OpenVINO IR building: the Q/DQ weight-range finding, IR metadata, NNCF INT8 with the Detect head in float."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import has_module, requires_ort

from edge_detect.backends.openvino import shared_core

pytestmark = pytest.mark.skipif(not has_module("openvino"), reason="openvino not installed (pip install -e '.[openvino]')")


def _vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown CPU: do not assert the saturation
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _qdq_conv(path: Path, w_lo: int, w_hi: int) -> Path:
    """x -> Q/DQ (int8, scale 1/127) -> Conv 3x3 with per-channel int8 weights in [w_lo, w_hi] (DQ, axis 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(w_lo, w_hi + 1, (16, 16, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "wq"),
             numpy_helper.from_array((rng.random(16) * 0.01 + 0.001).astype(np.float32), "ws"),
             numpy_helper.from_array(np.float32(1 / 127), "xs"), numpy_helper.from_array(np.int8(0), "xz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@requires_ort
def test_full_range_qdq_weights_saturate_on_cpus_without_vnni(tmp_path):
    """OpenVINO alone on our Q/DQ weights: full-range int8 weights overflow the u8 x s8 path of CPUs without VNNI
    (edge_detect.backends.openvino_qdq runs them in float there; tests/backends/test_openvino_qdq.py)."""
    import onnxruntime as ort

    x = np.random.default_rng(1).random((1, 16, 32, 32), dtype=np.float32)
    errors = {}
    for name, (lo, hi) in {"8bit": (-127, 127), "7bit": (-64, 63)}.items():
        path = _qdq_conv(tmp_path / f"{name}.onnx", lo, hi)
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = shared_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) \
            .create_infer_request().infer({0: x})[0]
        errors[name] = float(np.abs(want - got).max() / np.abs(want).max())
    assert errors["7bit"] < 1e-3, errors
    if not _vnni():
        assert errors["8bit"] > 0.1, errors


def test_ir_path_suffix():
    from edge_detect.deploy.openvino import ir_path
    from edge_detect.errors import ConfigError

    assert ir_path("a/b.xml") == Path("a/b.xml")
    with pytest.raises(ConfigError, match=r"expected a path ending in \.xml"):
        ir_path("model.onnx")


@pytest.fixture(scope="module")
def nncf_int8(yolov5n_onnx, coco128_yaml, tmp_path_factory):
    """yolov5n quantized by NNCF on 8 calibration images (no sensitivity: that is tested on its parts)."""
    if not has_module("nncf"):
        pytest.skip("nncf not installed (pip install -e '.[openvino]')")
    from edge_detect.deploy.openvino import quantize_openvino

    out = tmp_path_factory.mktemp("nncf") / "yolov5n-int8.xml"
    quantize_openvino(yolov5n_onnx, out, coco128_yaml, num_images=8, sensitivity=False, progress=False)
    return out


def test_nncf_int8_model(nncf_int8, reference):
    from edge_detect.backends.base import load_backend
    from edge_detect.backends.openvino import _is_quantized

    report = json.loads(nncf_int8.with_name("yolov5n-int8.quant.json").read_text())
    assert report["quantizer"] == "nncf" and report["calibration"]["images"] == 8
    assert report["ignored_scope"]["detect_head"] == ["/model.24/m.0/Conv", "/model.24/m.1/Conv",
                                                      "/model.24/m.2/Conv"]
    ref = np.load(reference / "infer_bus.npz")
    with load_backend(nncf_int8) as b:
        assert b.metadata.precision == "int8" and b.precision == "int8"
        assert b.metadata.quantization["quantizer"] == "nncf" and b.metadata.quantization["detect_head_float"]
        assert _is_quantized(b._model)
        # no FakeQuantize feeds the Detect head or SiLU's Multiply/Sigmoid (ignored scope honoured)
        for op in b._model.get_ops():
            if op.get_type_name() == "FakeQuantize":
                for t in op.output(0).get_target_inputs():
                    node = t.get_node()
                    assert "/model.24/" not in node.get_friendly_name()
                    assert node.get_type_name() not in ("Multiply", "Sigmoid")
        raw = b.infer(ref["letterboxed_bgr"][None])[0][0]
    sure = ref["raw"][0, :, 4] > 0.5
    # INT8 on 8 images: same objects, boxes within a few pixels (our Q/DQ model on OpenVINO: hundreds)
    assert np.abs(raw[sure, :4] - ref["raw"][0, sure, :4]).max() < 25
    assert np.abs(raw[sure, 4] - ref["raw"][0, sure, 4]).max() < 0.25


def test_sensitivity_bypass_puts_a_block_back_in_float(nncf_int8):

    from edge_detect.deploy.openvino import _bypass, _fq_blocks

    model = shared_core().read_model(str(nncf_int8))
    groups = _fq_blocks(model)
    assert "model.0" in groups and "model.24" not in groups
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    bypassed = _bypass(model, ["model.0"])
    left = sum(op.get_type_name() == "FakeQuantize" for op in bypassed.get_ops())
    assert 0 < left < n_fq
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) == n_fq  # original untouched
