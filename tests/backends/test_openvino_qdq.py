"""Q/DQ INT8 ONNX on OpenVINO computes what ONNX Runtime computes (issue 26 item 0), on single-op graphs.

The yolov5n figure (coco128 val through ``edge-detect val --backend openvino``) is in tests/deploy/test_quantize.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, has_module, requires_ort

pytestmark = [requires_ort,
              pytest.mark.skipif(not has_module("openvino"), reason="openvino not installed (pip install -e '.[openvino]')")]

from edge_detect.backends.openvino import shared_core  # noqa: E402
from edge_detect.backends.openvino_qdq import (activations_to_uint8, dequantize_wide_weights,  # noqa: E402
                                               int8_dot_overflows, prepare_qdq_onnx)


def _concat_qdq_conv(path: Path, w_lo: int = -127, w_hi: int = 127, seed: int = 0) -> Path:
    """x0, x1 (1x4x8x8) -> Concat -> Q/DQ (int8, zero point 0, scale 0.05) -> Conv 1x1 (int8 per-channel weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(rng.integers(w_lo, w_hi + 1, (4, 8, 1, 1)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    nodes = [helper.make_node("Concat", ["x0", "x1"], ["cat"], axis=1),
             helper.make_node("QuantizeLinear", ["cat", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             helper.make_node("Conv", ["dq", "w"], ["y"], kernel_shape=[1, 1])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8]) for n in ("x0", "x1")]
    graph = helper.make_graph(nodes, "concat_qdq_conv", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _feeds(seed: int = 1):
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(-0.3, 3.0, (1, 4, 8, 8)).astype(np.float32) for n in ("x0", "x1")}


def _ort(model_or_path, feeds):
    import onnxruntime as ort

    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _openvino(data, feeds):
    core = shared_core()
    compiled = core.compile_model(core.read_model(data), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled.create_infer_request().infer(feeds)[0])


def test_uint8_zero_points_give_onnxruntime_bit_identical_outputs(tmp_path):
    """int8 zero point z and uint8 zero point z + 128 are the same quantizer; only activations change type."""
    import onnx
    from onnx import numpy_helper

    path = _concat_qdq_conv(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert activations_to_uint8(model) == 1
    zps = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert zps[q.input[2]].dtype == np.uint8 and int(zps[q.input[2]]) == 128
    assert zps["wz"].dtype == np.int8  # weights stay int8 (OpenVINO's INT8 convolutions need them)
    feeds = _feeds()
    feeds["x0"][0, 0, 0, :3] = [100.0, -100.0, 0.025]  # saturation both ways and a rounding tie
    np.testing.assert_array_equal(_ort(model, feeds), _ort(path, feeds))


def test_concat_then_int8_quantizer_runs_like_onnxruntime(tmp_path):
    """The C3 ``Concat -> Q/DQ -> cv3`` pattern: OpenVINO 2026.4 alone puts the activations on a step-1.0 grid
    (mAP 0.022 on yolov5n); read through prepare_qdq_onnx it matches ONNX Runtime to float rounding."""
    path = _concat_qdq_conv(tmp_path / "m.onnx", -64, 63)  # 7-bit weights: no overflow question on any CPU
    feeds = _feeds()
    want = _ort(path, feeds)
    data, counts = prepare_qdq_onnx(path, shared_core(), "CPU")
    assert counts == {"activations_uint8": 1, "float_weights": 0}
    got = _openvino(data, feeds)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()


def test_wide_weights_dequantized_only_outside_seven_bits(tmp_path):
    import onnx
    from onnx import numpy_helper

    wide = onnx.load(str(_concat_qdq_conv(tmp_path / "wide.onnx", -127, 127)))
    narrow = onnx.load(str(_concat_qdq_conv(tmp_path / "narrow.onnx", -64, 63)))
    assert dequantize_wide_weights(narrow) == 0
    q = numpy_helper.to_array(next(t for t in wide.graph.initializer if t.name == "wq")).astype(np.float32)
    assert dequantize_wide_weights(wide) == 1
    assert [n.op_type for n in wide.graph.node].count("DequantizeLinear") == 1  # the activation's is kept
    w = numpy_helper.to_array(next(t for t in wide.graph.initializer if t.name == "w"))
    np.testing.assert_array_equal(w, q * np.float32(0.01))


_CHILD = """
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {tests!r})
from backends.test_openvino_qdq import _concat_qdq_conv, _feeds, _ort, _openvino
from edge_detect.backends.openvino import shared_core
from edge_detect.backends.openvino_qdq import int8_dot_overflows, prepare_qdq_onnx
path = _concat_qdq_conv(Path({tmp!r}) / "wide.onnx", -127, 127)
feeds = _feeds()
want = _ort(path, feeds)
data, counts = prepare_qdq_onnx(path, shared_core(), "CPU")
rel = float(np.abs(_openvino(data, feeds) - want).max() / np.abs(want).max())
print(json.dumps({{"overflows": int8_dot_overflows(shared_core()), "counts": counts, "rel": rel}}))
"""


@pytest.mark.parametrize("isa, overflows", [("AVX2", True), ("AVX512_CORE", True), ("", None)])
def test_full_range_weights_match_onnxruntime_with_and_without_vnni(tmp_path, isa, overflows):
    """oneDNN limited to AVX2 / AVX-512 without VNNI (``ONEDNN_MAX_CPU_ISA``, read when OpenVINO starts, hence a
    child process) overflows int16 pair sums: the probe sees it and the wide weights run in float."""
    if overflows is None:  # this machine's own ISA: overflows exactly when it lacks VNNI / AMX
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        if not flags:
            pytest.skip("no /proc/cpuinfo to tell whether this CPU has VNNI")
        overflows = not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(tests=str(REPO / "tests"), tmp=str(tmp_path))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["overflows"] is overflows
    assert res["counts"] == {"activations_uint8": 1, "float_weights": 1 if overflows else 0}
    assert res["rel"] <= 1e-5, res


def test_overflow_probe_is_measured_once_per_device():
    core = shared_core()
    first = int8_dot_overflows(core, "CPU")
    assert int8_dot_overflows(core, "CPU") is first
