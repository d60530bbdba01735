"""YOLOv5 ``.pt`` -> ONNX without PyTorch: the graph written with ``onnx.helper`` from the model's yaml.

:func:`export_onnx_torch_free` reads the checkpoint with :func:`edge_detect.deploy.pt_reader.read_checkpoint`
(restricted unpickler, NumPy arrays), folds every batch norm into its convolution with the same float32
arithmetic as ``torch.nn.utils.fusion.fuse_conv_bn_weights``, and writes the graph that
:func:`edge_detect.training.export.export_onnx` produces for the same checkpoint, operator for operator and with
the same node names:

* ``Conv`` (stem 6x6/2 ... 1x1) with the fused bias, then SiLU as ``Sigmoid`` + ``Mul``;
* ``C3``: ``cv1`` -> bottlenecks (``cv1``, ``cv2``, residual ``Add`` when ``shortcut``), ``cv2``, ``Concat``,
  ``cv3``; ``SPPF``: ``cv1``, three chained 5x5 ``MaxPool``, ``Concat``, ``cv2``;
* ``nn.Upsample`` as ``Resize`` (nearest, asymmetric, floor, scales ``[1, 1, 2, 2]``); ``Concat`` on channels;
* ``Detect``: per level a 1x1 ``Conv``, ``Reshape`` to ``(B, na, no, H, W)``, ``Transpose`` to
  ``(B, na, H, W, no)``, ``Sigmoid``, ``Split`` into ``xy, wh, conf``, ``xy = (xy * 2 - 0.5 + grid) * stride``,
  ``wh = (wh * 2) ** 2 * anchor_px``, ``Concat``, ``Reshape`` to ``(B, na*H*W, no)``; the levels concatenated.

Input ``images`` float ``(B, 3, H, W)`` RGB in ``[0, 1]``; output ``output0`` ``(B, N, 5 + nc)`` in the ``raw``
layout (see :mod:`edge_detect.metadata`). Static shapes bake the grids in as constants; ``dynamic=True`` makes
batch, height and width dynamic and builds the grids from the feature maps' shapes. The same
:class:`~edge_detect.metadata.ModelMetadata` as the torch export is written (``versions`` names this exporter).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect import __version__
from edge_detect._optional import require
from edge_detect.errors import ConfigError, ModelLoadError
from edge_detect.paths import PathLike

__all__ = ["build_yolov5_onnx", "export_onnx_torch_free", "fuse_conv_bn", "to_fp16",
           "INPUT_NAME", "OUTPUT_NAME"]

LOGGER = logging.getLogger(__name__)
INPUT_NAME = "images"
OUTPUT_NAME = "output0"
BN_EPS = 1e-3  # edge_detect.training.common.BN_EPS: YOLOv5's batch norms
_OPSETS = (13, 21)  # Split with a sizes input needs 13; 21 is the newest this graph was checked against


def fuse_conv_bn(weight: np.ndarray, bn: Mapping[str, np.ndarray], eps: float = BN_EPS) -> Tuple[np.ndarray, np.ndarray]:
    """Fold a batch norm into the bias-free convolution before it, in float32, operation for operation as
    ``torch.nn.utils.fusion.fuse_conv_bn_weights`` (so the result is bit-identical).

    Args:
        weight: float32 ``(C_out, C_in / groups, kH, kW)``.
        bn: ``weight``, ``bias``, ``running_mean``, ``running_var``, each float32 ``(C_out,)``.

    Returns:
        ``(weight, bias)`` float32 ``(C_out, C_in / groups, kH, kW)`` and ``(C_out,)``.
    """
    f32 = np.float32
    rsqrt = f32(1) / np.sqrt(bn["running_var"].astype(f32) + f32(eps))
    w = weight.astype(f32) * (bn["weight"].astype(f32) * rsqrt).reshape(-1, *([1] * (weight.ndim - 1)))
    b = (np.zeros_like(rsqrt) - bn["running_mean"].astype(f32)) * rsqrt * bn["weight"].astype(f32) \
        + bn["bias"].astype(f32)
    return w.astype(f32), b.astype(f32)


def _make_divisible(x: float, divisor: int = 8) -> int:
    return int(np.ceil(x / divisor) * divisor)


class _Graph:
    """Nodes and initializers of the graph being written, with torch-export-style names."""

    def __init__(self, state: Mapping[str, np.ndarray], fused: bool) -> None:
        self.helper = require("onnx.helper", "onnx", "onnx")
        self.numpy_helper = require("onnx.numpy_helper", "onnx", "onnx")
        self.state, self.fused = state, fused
        self.nodes: List[Any] = []
        self.inits: Dict[str, Any] = {}
        self._consts = 0

    def const(self, value: Any, dtype: Any, name: Optional[str] = None) -> str:
        if name is None:
            name = f"const_{self._consts}"
            self._consts += 1
        if name not in self.inits:
            self.inits[name] = self.numpy_helper.from_array(np.asarray(value, dtype), name)
        return name

    def node(self, op: str, name: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> List[str]:
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(self.helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs

    def weight(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise ModelLoadError(f"checkpoint weights: expected '{key}' for the model built from its yaml, not found")
        return self.state[key]

    def conv_bn_silu(self, x: str, prefix: str, path: str, k: int, s: int, p: Optional[int] = None,
                     g: int = 1, act: bool = True) -> str:
        """YOLOv5 ``Conv``: ``{prefix}.conv`` (+ ``{prefix}.bn`` folded) -> SiLU; node names ``{path}/conv/Conv``."""
        w = self.weight(f"{prefix}.conv.weight")
        if self.fused or f"{prefix}.bn.weight" not in self.state:
            b = self.weight(f"{prefix}.conv.bias")
        else:
            w, b = fuse_conv_bn(w, {k_: self.weight(f"{prefix}.bn.{k_}")
                                    for k_ in ("weight", "bias", "running_mean", "running_var")})
        pad = k // 2 if p is None else p
        y = self.node("Conv", f"{path}/conv/Conv", [x, self.const(w, np.float32, f"{prefix}.conv.weight"),
                                                    self.const(b, np.float32, f"{prefix}.conv.bias")],
                      dilations=[1, 1], group=int(g), kernel_shape=[k, k], pads=[pad] * 4, strides=[s, s])[0]
        if not act:
            return y
        sig = self.node("Sigmoid", f"{path}/act/Sigmoid", [y])[0]
        return self.node("Mul", f"{path}/act/Mul", [y, sig])[0]


def _c3(g: _Graph, x: str, i: int, n: int, shortcut: bool = True, gr: int = 1, e: float = 0.5) -> str:
    p, path = f"model.{i}", f"/model.{i}"
    a = g.conv_bn_silu(x, f"{p}.cv1", f"{path}/cv1", 1, 1)
    for j in range(n):
        bp, bpath = f"{p}.m.{j}", f"{path}/m/m.{j}"
        y = g.conv_bn_silu(a, f"{bp}.cv1", f"{bpath}/cv1", 1, 1)
        y = g.conv_bn_silu(y, f"{bp}.cv2", f"{bpath}/cv2", 3, 1, g=gr)
        a = g.node("Add", f"{bpath}/Add", [a, y])[0] if shortcut else y
    b = g.conv_bn_silu(x, f"{p}.cv2", f"{path}/cv2", 1, 1)
    cat = g.node("Concat", f"{path}/Concat", [a, b], axis=1)[0]
    return g.conv_bn_silu(cat, f"{p}.cv3", f"{path}/cv3", 1, 1)


def _sppf(g: _Graph, x: str, i: int, k: int = 5) -> str:
    p, path = f"model.{i}", f"/model.{i}"
    y = g.conv_bn_silu(x, f"{p}.cv1", f"{path}/cv1", 1, 1)
    pools = [y]
    for j, suffix in enumerate(("m", "m_1", "m_2")):
        pools.append(g.node("MaxPool", f"{path}/{suffix}/MaxPool", [pools[-1]], ceil_mode=0, dilations=[1, 1],
                            kernel_shape=[k, k], pads=[k // 2] * 4, strides=[1, 1])[0])
    cat = g.node("Concat", f"{path}/Concat", pools, axis=1)[0]
    return g.conv_bn_silu(cat, f"{p}.cv2", f"{path}/cv2", 1, 1)


def _upsample(g: _Graph, x: str, i: int, args: Sequence[Any]) -> str:
    size, scale, mode = (list(args) + [None, None, "nearest"])[:3]
    if size is not None or mode != "nearest" or scale is None:
        raise ModelLoadError(f"model.{i} Upsample: expected nearest with a scale factor, got size {size}, "
                             f"scale {scale}, mode {mode}")
    scales = g.const([1.0, 1.0, float(scale), float(scale)], np.float32, f"/model.{i}/Constant_output_0")
    return g.node("Resize", f"/model.{i}/Resize", [x, "", scales], coordinate_transformation_mode="asymmetric",
                  cubic_coeff_a=-0.75, mode="nearest", nearest_mode="floor")[0]


class _Shapes:
    """Feature-map sizes: constants for a static graph, ``Shape`` ops for a dynamic one."""

    def __init__(self, g: _Graph, batch: int, hw: Tuple[int, int], dynamic: bool) -> None:
        self.g, self.batch, self.hw, self.dynamic = g, batch, hw, dynamic

    def dims(self, x: str, path: str, stride: float) -> Tuple[Any, Any, Any]:
        """``(batch, ny, nx)`` of the map ``x``: ints (static) or int64 ``(1,)`` tensors (dynamic)."""
        if not self.dynamic:
            return self.batch, int(self.hw[0] // stride), int(self.hw[1] // stride)
        shape = self.g.node("Shape", f"{path}/Shape", [x])[0]
        return tuple(self.g.node("Gather", f"{path}/Gather_{d}", [shape, self.g.const([d], np.int64)], axis=0)[0]
                     for d in (0, 2, 3))

    def vector(self, parts: Sequence[Any], path: str) -> str:
        """An int64 shape vector from ints and ``(1,)`` tensors."""
        if all(isinstance(p, int) for p in parts):
            return self.g.const(list(parts), np.int64)
        items = [self.g.const([p], np.int64) if isinstance(p, int) else p for p in parts]
        return self.g.node("Concat", f"{path}/Concat_shape", items, axis=0)[0]

    def grid(self, ny: Any, nx: Any, path: str) -> str:
        """float32 ``(1, 1, ny, nx, 2)`` of ``(x, y)`` cell indices."""
        if not self.dynamic:
            gy, gx = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
            return self.g.const(np.stack((gx, gy), 2).reshape(1, 1, ny, nx, 2), np.float32)
        g = self.g
        zero, one = g.const(0.0, np.float32), g.const(1.0, np.float32)
        size = self.vector([ny, nx], f"{path}/grid")
        axes = []
        for name, n, shape in (("x", nx, [1, -1]), ("y", ny, [-1, 1])):
            count = g.node("Cast", f"{path}/Cast_{name}", [g.node("Squeeze", f"{path}/Squeeze_{name}", [n])[0]],
                           to=1)[0]
            r = g.node("Range", f"{path}/Range_{name}", [zero, count, one])[0]
            r = g.node("Reshape", f"{path}/Reshape_{name}", [r, g.const(shape, np.int64)])[0]
            r = g.node("Expand", f"{path}/Expand_{name}", [r, size])[0]
            axes.append(g.node("Unsqueeze", f"{path}/Unsqueeze_{name}", [r, g.const([2], np.int64)])[0])
        grid = g.node("Concat", f"{path}/Concat_grid", axes, axis=2)[0]
        return g.node("Unsqueeze", f"{path}/Unsqueeze_grid", [grid, g.const([0, 1], np.int64)])[0]


def _detect(g: _Graph, shapes: _Shapes, xs: Sequence[str], i: int, strides: Sequence[float], anchors: np.ndarray,
            no: int) -> str:
    """The Detect head (see module doc): ``(B, N, no)`` decoded boxes, objectness and class probabilities."""
    na = anchors.shape[1]
    levels = []
    for level, (x, stride) in enumerate(zip(xs, strides)):
        path = f"/model.{i}/level{level}"
        y = g.node("Conv", f"/model.{i}/m.{level}/Conv",
                   [x, g.const(g.weight(f"model.{i}.m.{level}.weight"), np.float32, f"model.{i}.m.{level}.weight"),
                    g.const(g.weight(f"model.{i}.m.{level}.bias"), np.float32, f"model.{i}.m.{level}.bias")],
                   dilations=[1, 1], group=1, kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])[0]
        b, ny, nx = shapes.dims(y, path, stride)
        y = g.node("Reshape", f"{path}/Reshape", [y, shapes.vector([b, na, no, ny, nx], path)])[0]
        y = g.node("Transpose", f"{path}/Transpose", [y], perm=[0, 1, 3, 4, 2])[0]
        y = g.node("Sigmoid", f"{path}/Sigmoid", [y])[0]
        xy, wh, conf = g.node("Split", f"{path}/Split", [y, g.const([2, 2, no - 4], np.int64)], n_out=3, axis=4)
        two = g.const(2.0, np.float32, "detect_two")
        xy = g.node("Mul", f"{path}/Mul_xy", [xy, two])[0]
        xy = g.node("Sub", f"{path}/Sub", [xy, g.const(0.5, np.float32, "detect_half")])[0]
        xy = g.node("Add", f"{path}/Add", [xy, shapes.grid(ny, nx, path)])[0]
        xy = g.node("Mul", f"{path}/Mul_stride", [xy, g.const(np.float32(stride), np.float32)])[0]
        wh = g.node("Mul", f"{path}/Mul_wh", [wh, two])[0]
        wh = g.node("Pow", f"{path}/Pow", [wh, two])[0]
        anchor_px = (anchors[level] * np.float32(stride)).astype(np.float32).reshape(1, na, 1, 1, 2)
        wh = g.node("Mul", f"{path}/Mul_anchor", [wh, g.const(anchor_px, np.float32)])[0]
        y = g.node("Concat", f"{path}/Concat", [xy, wh, conf], axis=4)[0]
        levels.append(g.node("Reshape", f"{path}/Reshape_out",
                             [y, shapes.vector([0 if shapes.dynamic else b, -1, no], path + "/out")])[0])
    return g.node("Concat", f"/model.{i}/Concat", levels, axis=1)[0]


_SYMBOLS = {"None": None, "True": True, "False": False}


def _rows(cfg: Mapping[str, Any]) -> List[Tuple[Any, int, str, List[Any]]]:
    rows = list(cfg.get("backbone", [])) + list(cfg.get("head", []))
    if not rows:
        raise ModelLoadError("model yaml: expected non-empty 'backbone' and 'head' lists")
    gd = float(cfg.get("depth_multiple", 1.0))
    out = []
    for i, row in enumerate(rows):
        try:
            f, n, module, args = row
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"model yaml row {i}: expected [from, repeats, module, args], got {row}") from exc
        args = [cfg[a] if a in ("nc", "anchors") else _SYMBOLS.get(a, a) if isinstance(a, str) else a for a in args]
        out.append((f, max(round(n * gd), 1) if n > 1 else int(n), str(module), args))
    return out


def _layer(g: _Graph, shapes: _Shapes, i: int, module: str, n: int, args: List[Any], x: Any,
           stride: Any, anchors: Optional[np.ndarray], nc: int) -> Tuple[str, Any]:
    """One yaml row -> (output tensor, its stride; for Detect the list of level strides)."""
    if module == "Conv" and n == 1:
        k, s = (list(args[1:3]) + [1, 1])[:2] if len(args) > 1 else (1, 1)
        p, gr, act = (list(args[3:6]) + [None, 1, True][len(args[3:6]):])
        return g.conv_bn_silu(x, f"model.{i}", f"/model.{i}", int(k), int(s), p, int(gr), bool(act)), stride * int(s)
    if module == "C3":
        shortcut, gr = (list(args[1:3]) + [True, 1][len(args[1:3]):])
        return _c3(g, x, i, n, bool(shortcut), int(gr)), stride
    if module == "SPPF":
        return _sppf(g, x, i, int(args[1]) if len(args) > 1 else 5), stride
    if module in ("nn.Upsample", "Upsample"):
        return _upsample(g, x, i, args), stride / float(args[1])
    if module == "Concat":
        if len(set(stride)) != 1 or (args and int(args[0]) != 1):
            raise ModelLoadError(f"model.{i} Concat: expected channel concatenation of equal strides, got strides "
                                 f"{stride}, dimension {args[:1]}")
        return g.node("Concat", f"/model.{i}/Concat", list(x), axis=1)[0], stride[0]
    if module == "Detect":
        if anchors is None:
            raise ModelLoadError(f"model.{i} Detect: the checkpoint has no anchors")
        return _detect(g, shapes, list(x), i, list(stride), anchors, nc + 5), list(stride)
    raise ModelLoadError(f"model yaml: module '{module}' (x{n}) at row {i}: the torch-free exporter builds Conv, C3, "
                         "SPPF, nn.Upsample, Concat and Detect (YOLOv5 v6.0+); export this checkpoint with PyTorch "
                         "(pip install 'edge-detect[build]')")


def build_yolov5_onnx(info: Mapping[str, Any], imgsz: Tuple[int, int] = (640, 640), batch: int = 1,
                      dynamic: bool = False, opset: int = 17) -> Tuple[Any, int]:
    """The YOLOv5 graph of a checkpoint read by :func:`~edge_detect.deploy.pt_reader.read_checkpoint`.

    Returns:
        ``(onnx.ModelProto, largest stride)``; no metadata yet.

    Raises:
        ModelLoadError: a layer this exporter does not build, missing weights, strides unlike the checkpoint's.
        ConfigError: an opset outside 13..21.
    """
    onnx = require("onnx", "onnx")
    helper = onnx.helper
    if not _OPSETS[0] <= int(opset) <= _OPSETS[1]:
        raise ConfigError(f"opset: expected {_OPSETS[0]}..{_OPSETS[1]} for the torch-free exporter, got {opset}")
    g = _Graph(info["state_dict"], bool(info.get("fused")))
    shapes = _Shapes(g, int(batch), tuple(imgsz), dynamic)
    anchors = None if info.get("anchors") is None else np.asarray(info["anchors"], np.float32)
    outs: List[str] = []
    strides: List[Any] = []
    x: Any = INPUT_NAME
    stride: Any = 1.0
    for i, (f, n, module, args) in enumerate(_rows(info["cfg"])):
        if f != -1:
            x = outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f]
            stride = strides[f] if isinstance(f, int) else [stride if j == -1 else strides[j] for j in f]
        x, stride = _layer(g, shapes, i, module, n, args, x, stride, anchors, int(info["nc"]))
        outs.append(x)
        strides.append(stride)
    levels = [float(s) for s in stride]
    if info.get("stride") and [float(s) for s in info["stride"]] != levels:
        raise ModelLoadError(f"strides: checkpoint has {list(info['stride'])}, its yaml gives {levels}")
    g.nodes[-1].output[0] = OUTPUT_NAME
    no, h, w = int(info["nc"]) + 5, int(imgsz[0]), int(imgsz[1])
    n_anchors = sum(anchors.shape[1] * (h // int(s)) * (w // int(s)) for s in levels) if anchors is not None else 0
    elem = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, "main_graph",
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", 3, "height", "width"] if dynamic
                                       else [int(batch), 3, h, w])],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["batch", "anchors", no] if dynamic
                                       else [int(batch), n_anchors, no])],
        list(g.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="edge-detect", producer_version=__version__)
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    return model, int(max(levels))


def to_fp16(model: Any) -> Any:
    """FP16 weights and I/O with ONNX Runtime's converter (ops that need fp32 stay fp32 behind casts)."""
    float16 = require("onnxruntime.transformers.float16", "onnx", package="onnxruntime")
    return float16.convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=False)


def _versions(onnx: Any, opset: int) -> Dict[str, str]:
    return {"onnx": onnx.__version__, "edge_detect": __version__, "opset": str(opset),
            "exporter": "edge_detect.deploy.onnx_yolov5 (torch-free)"}


def export_onnx_torch_free(weights: PathLike, output: PathLike, imgsz: Union[int, Sequence[int]] = (640, 640),
                           batch: int = 1, dynamic: bool = False, opset: int = 17, half: bool = False,
                           simplify: bool = True, progress: bool = True, force_imgsz: bool = False,
                           trust_checkpoint: bool = False) -> Path:
    """Export a YOLOv5 checkpoint to ONNX without PyTorch; same arguments and output as
    :func:`edge_detect.training.export.export_onnx` (``simplify`` and ``trust_checkpoint`` are accepted and have
    nothing to do: the graph is written already minimal, and no loader that runs pickled code is ever used).

    Raises:
        ModelError / ModelLoadError / UnsafeCheckpointError: see :func:`~edge_detect.deploy.pt_reader.read_checkpoint`
            and :func:`build_yolov5_onnx` (ultralytics checkpoints and pre-v6.0 layers need PyTorch).
        ConfigError: invalid ``imgsz``, ``batch`` or ``opset``.
    """
    onnx = require("onnx", "onnx")
    from edge_detect.config import parse_imgsz
    from edge_detect.deploy.pt_reader import read_checkpoint
    from edge_detect.metadata import ModelMetadata, write_onnx_metadata
    from edge_detect.preprocess import check_imgsz
    from edge_detect.weights import sha256_file

    weights, output = Path(weights), Path(output)
    check_imgsz(parse_imgsz(imgsz), 32, force_imgsz)  # fail before reading anything
    if int(batch) < 1:
        raise ConfigError(f"batch: expected >= 1, got {batch}")
    info = read_checkpoint(weights)
    model, stride = build_yolov5_onnx(info, check_imgsz(parse_imgsz(imgsz), 32, force_imgsz), batch, dynamic, opset)
    h, w = check_imgsz(parse_imgsz(imgsz), stride, force_imgsz)
    if half:
        model = to_fp16(model)
    meta = ModelMetadata(names=info["names"], imgsz=(h, w), stride=stride, batch=int(batch), dynamic=bool(dynamic),
                         output_layout="raw", input_format="float32_nchw_rgb", precision="fp16" if half else "fp32",
                         source_sha256=sha256_file(weights), source_path=str(weights.resolve()),
                         versions=_versions(onnx, int(opset)))
    write_onnx_metadata(model, meta, keep_other=False)
    onnx.checker.check_model(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(output))
    LOGGER.info("exported %s -> %s without PyTorch (%dx%d, batch %d%s, %s)", weights, output, h, w, int(batch),
                ", dynamic" if dynamic else "", meta.precision)
    return output

