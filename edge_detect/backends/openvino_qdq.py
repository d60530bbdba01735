"""Q/DQ INT8 ONNX on OpenVINO: two rewrites that make OpenVINO compute what ONNX Runtime computes.

Our Q/DQ models (:mod:`edge_detect.deploy.quantize`, written for TensorRT: signed INT8, zero point 0,
full-range per-channel weights) scored mAP50-95 0.022 on coco128 val2017 with OpenVINO 2026.4 against 0.341 with
ONNX Runtime. Two separate causes, both found by comparing per-layer outputs and reduced to single-op graphs
(``tests/backends/test_openvino_qdq.py``):

1. **Signed activation quantizers through a Concat (every CPU).** ``Concat -> QuantizeLinear(int8) ->
   DequantizeLinear -> Conv`` with INT8 weights: OpenVINO's low-precision transformations move the quantizer
   across the ``Concat`` and the convolution then sees its input on a grid of step 1.0 instead of the scale
   (0.157 at ``model.2/cv3``): ``0.37 -> 0``, ``0.8 -> 1``. Every C3 block has that ``Concat -> cv3``. The same
   quantizer with a ``uint8`` zero point is handled right, and ``int8`` zero point ``z`` and ``uint8`` zero
   point ``z + 128`` are the same quantizer (``saturate(round(x / s) + z)`` over ``[-128, 127]``, shifted by 128
   into ``[0, 255]``; ONNX Runtime gives bit-identical outputs for both). :func:`activations_to_uint8` rewrites
   every activation Q/DQ pair that way.
2. **Full-range weights on CPUs without VNNI.** Without AVX-512 VNNI / AVX-VNNI / AMX, OpenVINO's CPU plugin
   sums ``u8 x s8`` products pairwise in 16 bits (``vpmaddubsw``); two products of 255 x 127 overflow it, so
   weights outside ``[-64, 63]`` give wrong convolutions (mAP 0.042 after rewrite 1, with oneDNN limited to AVX2).
   :func:`int8_dot_overflows` probes the device with one such convolution; when it overflows,
   :func:`dequantize_wide_weights` turns the weights outside 7 bits back into float constants: those
   convolutions run in float on the quantized activations, which is ONNX Runtime's arithmetic (mAP 0.337), not
   INT8 speed (``edge-detect export --format openvino --int8`` gives that: NNCF keeps the first layer's weights in
   7 bits and quantizes activations asymmetrically, near 0 for SiLU outputs, so its sums stay in range).

Both rewrites work on an ``onnx.ModelProto`` and never change what ONNX Runtime computes for activations; the
weight one changes only where a convolution runs (float instead of INT8), with the same weight values.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edge_detect._optional import require

__all__ = ["activations_to_uint8", "dequantize_wide_weights", "int8_dot_overflows", "prepare_qdq_onnx"]

LOGGER = logging.getLogger(__name__)

_SEVEN_BIT = (-64, 63)  # the weight range whose u8 x s8 pair sums fit in int16 (2 * 255 * 64 = 32640)
_PROBED: Dict[str, bool] = {}


def _initializers(model: Any) -> Dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model: Any) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def activations_to_uint8(model: Any) -> int:
    """Rewrite every activation ``QuantizeLinear -> DequantizeLinear`` pair with an ``int8`` zero point ``z`` to the
    same quantizer with a ``uint8`` zero point ``z + 128`` (in place).

    Only pairs whose zero point is an initializer and whose ``QuantizeLinear`` output feeds
    ``DequantizeLinear`` nodes alone (with the same scale and zero point) are rewritten; weights (constant
    ``DequantizeLinear`` inputs) keep ``int8``, which OpenVINO's INT8 convolutions need.

    Returns:
        The number of pairs rewritten.
    """
    numpy_helper = require("onnx.numpy_helper", "onnx", "onnx")
    inits, consumers = _initializers(model), _consumers(model)
    names = {t.name for t in model.graph.initializer}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        zp = numpy_helper.to_array(inits[node.input[2]])
        users = consumers.get(node.output[0], [])
        if zp.dtype != np.int8 or not users or any(
                u.op_type != "DequantizeLinear" or list(u.input[1:3]) != list(node.input[1:3]) for u in users):
            continue
        new = f"{node.input[2]}_uint8"
        if new not in names:
            model.graph.initializer.append(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), new))
            names.add(new)
        for n in [node] + users:
            n.input[2] = new
        rewritten += 1
    return rewritten


def _dequantized(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zero) * scale`` with ONNX ``DequantizeLinear`` broadcasting (per-tensor, or per-channel on ``axis``)."""
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.ndim == 1 else zero
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)


def dequantize_wide_weights(model: Any, limits: Tuple[int, int] = _SEVEN_BIT) -> int:
    """Replace each constant ``int8`` ``DequantizeLinear`` whose values leave ``limits`` by its float result (in place).

    Returns:
        The number of weight tensors turned into float initializers (the nodes are removed).
    """
    numpy_helper = require("onnx.numpy_helper", "onnx", "onnx")
    inits = _initializers(model)
    keep, replaced = [], 0
    for node in model.graph.node:
        q = numpy_helper.to_array(inits[node.input[0]]) if (
            node.op_type == "DequantizeLinear" and node.input[0] in inits) else None
        if q is None or q.dtype != np.int8 or (q.min() >= limits[0] and q.max() <= limits[1]) or any(
                name and name not in inits for name in node.input[1:]):
            keep.append(node)
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.int8(0)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        model.graph.initializer.append(numpy_helper.from_array(_dequantized(q, scale, zero, axis), node.output[0]))
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return replaced


def _overflow_probe() -> Any:
    """A 1x1 convolution whose u8 x s8 pair sums overflow int16: 16 inputs at u8 255 (x = 127 s), weights 127."""
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.float32(0.01), "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
             numpy_helper.from_array(np.full((4, 16, 1, 1), 127, np.int8), "wq"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "int8_overflow_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def int8_dot_overflows(core: Any, device: str = "CPU") -> bool:
    """Whether ``device`` computes INT8 convolutions with 16-bit pair sums (x86 CPUs without VNNI / AMX).

    Measured, not guessed from CPU flags: one small Q/DQ convolution that overflows int16 is compiled and run once
    per device and process (it follows ``ONEDNN_MAX_CPU_ISA`` and any OpenVINO version's own handling). A probe
    that cannot run counts as overflowing (float weights are always right).
    """
    if device in _PROBED:
        return _PROBED[device]
    x = np.full((1, 16, 4, 4), 1.27, np.float32)  # 127 * 0.01: u8 255 with the zero point 128
    want = 16 * 1.27 * 1.27
    try:
        compiled = core.compile_model(core.read_model(_overflow_probe().SerializeToString()), device,
                                      {"INFERENCE_PRECISION_HINT": "f32"})
        got = np.asarray(compiled.create_infer_request().infer({0: x})[0])
        overflows = not np.allclose(got, want, rtol=1e-3)
    except RuntimeError as exc:  # a device that cannot compile the probe: assume the worst
        LOGGER.debug("openvino int8 overflow probe failed on %s: %s", device, exc)
        overflows = True
    _PROBED[device] = overflows
    return overflows


def prepare_qdq_onnx(path: "os.PathLike[str] | str", core: Any, device: str) -> Tuple[bytes, Dict[str, int]]:
    """Our Q/DQ ``.onnx`` at ``path`` rewritten for OpenVINO on ``device`` (serialized, for ``read_model``).

    Returns:
        ``(model bytes, {"activations_uint8": n, "float_weights": m})``.
    """
    onnx = require("onnx", "onnx")
    model = onnx.load(str(path))
    counts = {"activations_uint8": activations_to_uint8(model), "float_weights": 0}
    base = device.split(":")[0].split(".")[0]
    probe_device: Optional[str] = "CPU" if base == "CPU" or (
        base in ("AUTO", "MULTI", "HETERO") and (":" not in device or "CPU" in device)) else None
    if probe_device is not None and int8_dot_overflows(core, probe_device):
        counts["float_weights"] = dequantize_wide_weights(model)
    return model.SerializeToString(), counts
