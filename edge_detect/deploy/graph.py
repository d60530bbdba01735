"""ONNX graph surgery with onnx-graphsurgeon: NMS inside the graph, and a uint8 NHWC BGR input.

:func:`add_nms` turns a ``"raw"`` model (output ``(B, N, 5 + nc)`` = ``cx, cy, w, h, obj, class probs`` in
letterbox pixels for ``head="yolov5"``; ``(B, 4 + nc, N)`` = ``cx, cy, w, h, class scores`` for the
``"anchor_free"`` head of ultralytics YOLOv5u / YOLOv8 / YOLO11, transposed in-graph and scored by the class
score alone) into an ``"nms"`` model whose four outputs are

* ``num_dets`` int32 ``(B, 1)``: detections kept per image;
* ``boxes`` float32 ``(B, K, 4)``: ``x1, y1, x2, y2`` in letterbox pixels;
* ``scores`` float32 ``(B, K)``: ``obj * class prob``;
* ``classes`` int32 ``(B, K)``: class ids;

with ``K = max_det``, sorted by score within each image, rows past ``num_dets`` zero. Score semantics are
YOLOv5's detection defaults: ``score = obj x class prob``, the best class of each box only (``multi_label``
off), class-aware NMS (boxes of different classes never suppress each other) unless ``agnostic``. Three NMS
implementations produce these outputs:

* ``plugin="efficient"``: TensorRT's ``EfficientNMS_TRT`` plugin (TensorRT >= 8.0; node in domain ``TRT``).
  It runs on TensorRT only. It keeps boxes with ``score >= conf`` (not ``>``), so ``conf=0`` would keep every
  zeroed non-best class score as a detection: ``conf`` must be > 0 with it. ``agnostic=True`` needs
  TensorRT >= 8.6 (8.5's plugin has no ``class_agnostic`` field; the engine builder refuses it there).
* ``plugin="onnx"``: the standard ONNX ``NonMaxSuppression`` op plus Gather/ScatterND packing. It runs on
  ONNX Runtime (so it is checked on CPU) and on TensorRT >= 8.5, whose ONNX parser maps it to ``INMSLayer``.
  Kept: ``score > conf``. TensorRT's ``INMSLayer`` considers only the 5000 highest-scoring candidate boxes per
  image (2000 on compute capability 5.3 / 6.2) and silently drops the rest, which a low ``conf`` (0.001 for mAP)
  can exceed; so the graph first keeps the ``top_k`` best-scoring boxes of each image (``TopK``, default
  :data:`NMS_TOP_K` = 3840, the largest K TensorRT's TopK layer takes), and ONNX Runtime and TensorRT see the
  same candidates. The packing uses only ops and types onnx-tensorrt 8.5 / 8.6 support: the per-image counting
  (``ReduceSum``, ``CumSum``) runs on float32 (exact for counts < 2**24), and the zero outputs come from
  float32 ``ConstantOfShape`` (cast to int32 for ``classes``).
* ``plugin="inms"`` (the default): the same graph as ``"onnx"``, named for what TensorRT builds from it
  (``INMSLayer``). ``EfficientNMS_TRT`` is deprecated since TensorRT 10.12 with no replacement planned.

Every node and tensor added here is named ``nms/...``. FP16 TensorRT builds keep that section in FP32
(:func:`edge_detect.deploy.tensorrt_build.keep_fp32`): the class offsets below reach ``79 x 7680`` ~ 607k px,
far past FP16's 65,504.

Differences from YOLOv5's NumPy/torch NMS, all documented: YOLOv5 first keeps the 30000 highest-scoring
candidates (``max_nms``); the ``"onnx"`` / ``"inms"`` graphs keep ``top_k`` (3840) of them, which changes nothing
while at most that many boxes pass ``conf`` (1906 of 25200 on bus.jpg at conf 0.001); class-aware NMS uses YOLOv5's own trick of offsetting boxes by ``class * 7680`` px, so results match
it to float32 rounding of the offset coordinates; ONNX ``NonMaxSuppression`` returns the best ``max_det``
boxes per image; ``EfficientNMS_TRT`` additionally caps its internal candidate list (4096 boxes).

:func:`add_uint8_input` replaces the float NCHW RGB input by ``images`` uint8 ``(B, H, W, 3)`` BGR (the
letterboxed OpenCV frame), converted in-graph: ``Cast -> reverse channels -> Transpose NCHW -> / 255``.
Both functions update the :class:`~edge_detect.metadata.ModelMetadata` stored in ``metadata_props``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edge_detect._optional import require
from edge_detect.config import check_thresholds
from edge_detect.errors import ConfigError, ModelLoadError
from edge_detect.metadata import ModelMetadata, read_onnx_metadata, write_onnx_metadata
from edge_detect.paths import PathLike

__all__ = ["add_nms", "add_uint8_input", "NMS_PLUGINS", "NMS_OUTPUTS", "MAX_WH", "TRT_DOMAIN", "NMS_TOP_K"]

LOGGER = logging.getLogger(__name__)

NMS_PLUGINS = ("efficient", "onnx", "inms")
NMS_OUTPUTS = ("num_dets", "boxes", "scores", "classes")
MAX_WH = 7680.0  # YOLOv5's class offset (px) for class-aware NMS through one class-agnostic NMS call
TRT_DOMAIN = "TRT"
NMS_TOP_K = 3840  # candidates kept before NMS: the largest K of TensorRT's TopK layer, below INMSLayer's 5000
_INT64_MAX = np.iinfo(np.int64).max


class _Builder:
    """Appends nodes to a graphsurgeon graph, naming every tensor ``<prefix>/<n>``."""

    def __init__(self, gs: Any, graph: Any, prefix: str) -> None:
        self.gs, self.graph, self.prefix, self.n = gs, graph, prefix, 0
        self.opset = int(graph.opset)

    def _name(self, what: str) -> str:
        self.n += 1
        return f"{self.prefix}/{what}_{self.n}"

    def const(self, value: Any, dtype: Any) -> Any:
        return self.gs.Constant(self._name("const"), np.asarray(value, dtype=dtype))

    def op(self, op: str, inputs: Sequence[Any], attrs: Optional[Dict[str, Any]] = None,
           outputs: Optional[List[Any]] = None, n_out: int = 1, domain: Optional[str] = None) -> Any:
        """Add one node; returns its output variable (or the list when several)."""
        outs = outputs if outputs is not None else [self.gs.Variable(self._name(op.lower())) for _ in range(n_out)]
        node = self.gs.Node(op=op, name=self._name(op), attrs=attrs or {}, inputs=list(inputs), outputs=outs)
        if domain is not None:
            node.domain = domain
        self.graph.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    def slice(self, x: Any, start: int, end: int, axis: int) -> Any:
        i64 = np.int64
        return self.op("Slice", [x, self.const([start], i64), self.const([end], i64), self.const([axis], i64)])

    def unsqueeze(self, x: Any, axis: int) -> Any:
        return self.op("Unsqueeze", [x, self.const([axis], np.int64)])

    def reduce(self, op: str, x: Any, axis: int, keepdims: bool) -> Any:
        """ReduceMax / ReduceSum with the axes as attribute or input, whichever the opset wants."""
        axes_as_input = self.opset >= (18 if op == "ReduceMax" else 13)
        if axes_as_input:
            return self.op(op, [x, self.const([axis], np.int64)], {"keepdims": int(keepdims)})
        return self.op(op, [x], {"axes": [axis], "keepdims": int(keepdims)})

    def cast(self, x: Any, to: Any) -> Any:
        onnx = require("onnx", "onnx")
        return self.op("Cast", [x], {"to": int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(to)))})


def _load(onnx_in: PathLike) -> Any:
    onnx = require("onnx", "onnx")
    path = Path(onnx_in)
    if not path.is_file():
        raise ModelLoadError(f"ONNX model not found: {path}")
    return onnx.load(str(path))


def _metadata(model: Any, nc: Optional[int] = None) -> ModelMetadata:
    meta = read_onnx_metadata(model)
    if meta is None:
        if nc is None:
            raise ModelLoadError("ONNX model has no edge_detect metadata (metadata_props key 'edge_detect')")
        LOGGER.warning("ONNX model has no edge_detect metadata; naming its %d classes class0..class%d", nc, nc - 1)
        meta = ModelMetadata(names=tuple(f"class{i}" for i in range(nc)))
    return meta


def _save(graph: Any, original: Any, meta: ModelMetadata, onnx_out: PathLike, domains: Sequence[str] = ()) -> Path:
    """Export ``graph``, keep the original's opsets / IR version / metadata props, store ``meta``; check."""
    onnx = require("onnx", "onnx")
    gs = require("onnx_graphsurgeon", "onnx", package="onnx-graphsurgeon")
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    model.ir_version = original.ir_version
    have = {o.domain for o in model.opset_import}
    for o in original.opset_import:
        if o.domain not in have:
            model.opset_import.append(o)
    for d in domains:
        if d not in {o.domain for o in model.opset_import}:
            model.opset_import.append(onnx.helper.make_opsetid(d, 1))
    del model.metadata_props[:]
    model.metadata_props.extend(original.metadata_props)
    write_onnx_metadata(model, meta)
    onnx.checker.check_model(model)
    out = Path(onnx_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    LOGGER.info("wrote %s", out)
    return out


def _decode(b: _Builder, pred: Any, head: str = "yolov5") -> tuple:
    """``pred`` -> ``boxes (B, N, 4)`` xyxy and ``scores (B, N, nc)``.

    ``head="yolov5"``: ``pred (B, N, 5+nc)``, scores = obj x class prob. ``head="anchor_free"``:
    ``pred (B, 4+nc, N)`` is transposed to ``(B, N, 4+nc)``, scores = class scores (no objectness).
    """
    if head == "anchor_free":
        pred = b.op("Transpose", [pred], {"perm": [0, 2, 1]})
    xy = b.slice(pred, 0, 2, 2)
    wh = b.slice(pred, 2, 4, 2)
    half = b.op("Mul", [wh, b.const(0.5, np.float32)])
    boxes = b.op("Concat", [b.op("Sub", [xy, half]), b.op("Add", [xy, half])], {"axis": 2})
    if head == "anchor_free":
        return boxes, b.slice(pred, 4, _INT64_MAX, 2)
    obj = b.slice(pred, 4, 5, 2)
    cls = b.slice(pred, 5, _INT64_MAX, 2)
    scores = b.op("Mul", [obj, cls])
    return boxes, scores


def _best_class_only(b: _Builder, scores: Any) -> Any:
    """Zero every class score but the best of each box: ``(B, N, nc)`` -> ``(B, N, nc)``."""
    best = b.reduce("ReduceMax", scores, axis=2, keepdims=True)
    zero = b.const(0.0, np.float32)
    return b.op("Where", [b.op("Equal", [scores, best]), scores, zero])


def _efficient_nms(b: _Builder, boxes: Any, scores: Any, outs: List[Any], conf: float, iou: float,
                   max_det: int, agnostic: bool, multi_label: bool) -> None:
    if not multi_label:
        scores = _best_class_only(b, scores)
    attrs = {
        "plugin_version": "1",
        "background_class": -1,
        "box_coding": 0,  # corners: x1, y1, x2, y2
        "iou_threshold": float(iou),
        "max_output_boxes": int(max_det),
        "score_activation": 0,  # scores are already probabilities
        "score_threshold": float(conf),
        "class_agnostic": int(bool(agnostic)),
    }
    b.op("EfficientNMS_TRT", [boxes, scores], attrs, outputs=outs, domain=TRT_DOMAIN)


def _top_k(b: _Builder, best: Any, cls_id: Any, boxes: Any, n: Any, top_k: int) -> tuple:
    """Keep the ``top_k`` highest-scoring boxes of each image: ``(B, N)``, ``(B, N)``, ``(B, N, 4)`` ->
    ``(B, K)`` scores (sorted), class ids, ``(B, K, 4)`` boxes, ``K = min(top_k, N)`` (in-graph when N is dynamic)."""
    i64 = np.int64
    if isinstance(n, int):
        k = b.const([min(top_k, n)], i64)
    else:
        count = b.op("Gather", [b.op("Shape", [best]), b.const([1], i64)], {"axis": 0})  # (1,) N
        k = b.op("Min", [count, b.const([top_k], i64)])
    best_k, idx = b.op("TopK", [best, k], {"axis": 1, "largest": 1, "sorted": 1}, n_out=2)  # (B, K), (B, K)
    cls_k = b.op("GatherElements", [cls_id, idx], {"axis": 1})
    idx4 = b.op("Tile", [b.unsqueeze(idx, 2), b.const([1, 1, 4], i64)])                    # (B, K, 4)
    return best_k, cls_k, b.op("GatherElements", [boxes, idx4], {"axis": 1})


def _onnx_nms(b: _Builder, pred: Any, boxes: Any, scores: Any, outs: List[Any], conf: float, iou: float,
              max_det: int, agnostic: bool, n: Any = None, top_k: Optional[int] = NMS_TOP_K) -> None:
    """Standard ONNX NonMaxSuppression on the best class of each box (of the ``top_k`` best boxes when
    ``top_k``; ``n`` = the number of boxes N, ``None`` / a name when dynamic), packed into ``(B, K)`` outputs."""
    i64 = np.int64
    best = b.reduce("ReduceMax", scores, axis=2, keepdims=False)               # (B, N)
    cls_id = b.op("ArgMax", [scores], {"axis": 2, "keepdims": 0})              # (B, N) int64
    if top_k is not None and not (isinstance(n, int) and n <= top_k):  # nothing to drop when N <= top_k
        best, cls_id, boxes = _top_k(b, best, cls_id, boxes, n, top_k)
    nms_boxes = boxes
    if not agnostic:  # offset each class into its own region: one NMS call, no cross-class suppression
        offset = b.op("Mul", [b.cast(cls_id, np.float32), b.const(MAX_WH, np.float32)])
        nms_boxes = b.op("Add", [boxes, b.unsqueeze(offset, 2)])
    selected = b.op("NonMaxSuppression", [
        nms_boxes, b.unsqueeze(best, 1), b.const([max_det], i64), b.const([iou], np.float32),
        b.const([conf], np.float32)], {"center_point_box": 0})                    # (M, 3): batch, 0, box
    bidx = b.op("Gather", [selected, b.const(0, i64)], {"axis": 1})              # (M,)
    bi = b.op("Gather", [selected, b.const([0, 2], i64)], {"axis": 1})          # (M, 2)
    det_boxes = b.op("GatherND", [boxes, bi])                                     # (M, 4)
    det_scores = b.op("GatherND", [best, bi])                                     # (M,)
    det_classes = b.cast(b.op("GatherND", [cls_id, bi]), np.float32)             # (M,) float32 ids
    # slot of each detection within its image: its index minus the number of detections of earlier images
    batch = b.op("Gather", [b.op("Shape", [pred]), b.const(0, i64)], {"axis": 0})  # scalar B
    n_sel = b.op("Gather", [b.op("Shape", [bidx]), b.const(0, i64)], {"axis": 0})  # scalar M
    images = b.op("Range", [b.const(0, i64), batch, b.const(1, i64)])              # (B,)
    # counting in float32: onnx-tensorrt 8.6 runs ReduceSum / CumSum on FP32/FP16 only (exact below 2**24)
    member = b.cast(b.op("Equal", [b.unsqueeze(bidx, 1), b.unsqueeze(images, 0)]), np.float32)  # (M, B)
    counts = b.reduce("ReduceSum", member, axis=0, keepdims=False)                  # (B,) float32
    starts = b.cast(b.op("CumSum", [counts, b.const(0, i64)], {"exclusive": 1}), np.int64)  # (B,)
    slot = b.op("Sub", [b.op("Range", [b.const(0, i64), n_sel, b.const(1, i64)]),
                        b.op("Gather", [starts, bidx], {"axis": 0})])               # (M,)
    where = b.op("Concat", [b.unsqueeze(bidx, 1), b.unsqueeze(slot, 1)], {"axis": 1})  # (M, 2)
    batch_1d = b.unsqueeze(batch, 0)
    k = b.const([max_det], i64)
    shape_bk = b.op("Concat", [batch_1d, k], {"axis": 0})
    shape_bk4 = b.op("Concat", [batch_1d, k, b.const([4], i64)], {"axis": 0})

    def zeros(shape: Any) -> Any:  # float32 ConstantOfShape: the type onnx-tensorrt 8.6 supports
        onnx = require("onnx", "onnx")
        value = onnx.numpy_helper.from_array(np.zeros(1, dtype=np.float32))
        return b.op("ConstantOfShape", [shape], {"value": value})

    num_dets, out_boxes, out_scores, out_classes = outs
    b.op("Cast", [b.unsqueeze(counts, 1)], {"to": 6}, outputs=[num_dets])       # int32 (B, 1)
    b.op("ScatterND", [zeros(shape_bk4), where, det_boxes], outputs=[out_boxes])
    b.op("ScatterND", [zeros(shape_bk), where, det_scores], outputs=[out_scores])
    classes_f = b.op("ScatterND", [zeros(shape_bk), where, det_classes])
    b.op("Cast", [classes_f], {"to": 6}, outputs=[out_classes])                 # int32 (B, K)


def add_nms(onnx_in: PathLike, onnx_out: PathLike, conf: float = 0.25, iou: float = 0.45, max_det: int = 100,
            agnostic: bool = False, plugin: str = "inms", multi_label: bool = False,
            top_k: Optional[int] = NMS_TOP_K) -> Path:
    """Append YOLOv5 score decoding and NMS to a ``"raw"`` ONNX model (see module doc for the outputs).

    Args:
        onnx_in: model with one float32 ``"raw"`` output: ``(B, N, 5 + nc)`` (``head="yolov5"``) or
            ``(B, 4 + nc, N)`` (``head="anchor_free"``), as its metadata says.
        onnx_out: where to write the ``"nms"`` model.
        conf: keep detections with ``obj x class prob > conf`` (``>= conf`` with ``"efficient"``, which
            therefore needs ``conf > 0``).
        iou: suppress a box overlapping a higher-scoring box of the same class with IoU > ``iou``.
        max_det: ``K``, the maximum detections per image.
        agnostic: NMS across classes.
        plugin: ``"inms"`` / ``"onnx"`` (standard ONNX op: ONNX Runtime, TensorRT's INMSLayer) or
            ``"efficient"`` (TensorRT's EfficientNMS_TRT plugin, deprecated since TensorRT 10.12).
        multi_label: ``"efficient"`` only: let every class above ``conf`` of a box compete (YOLOv5's
            validation setting) instead of the best class only.
        top_k: ``"onnx"`` / ``"inms"``: boxes per image kept before NMS, by score (``None``: all of them; engines
            then lose the candidates past TensorRT's 5000). At most 3840 for TensorRT (its TopK layer).

    Returns:
        ``onnx_out``; its metadata has ``output_layout="nms"`` and ``nms`` = the settings.

    Raises:
        ConfigError: bad settings. ModelLoadError: the model is not a ``"raw"`` YOLOv5 model.
    """
    if plugin not in NMS_PLUGINS:
        raise ConfigError(f"nms plugin: expected one of {NMS_PLUGINS}, got {plugin!r}")
    check_thresholds(conf, iou, max_det)
    if plugin == "efficient" and conf <= 0.0:
        raise ConfigError(f"nms conf: expected > 0 with the 'efficient' plugin (EfficientNMS_TRT keeps "
                          f"score >= conf, so 0 keeps every zeroed class score), got conf={conf}")
    if multi_label and plugin != "efficient":
        raise ConfigError(f"nms multi_label: only the 'efficient' plugin supports it, got plugin={plugin!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"nms top_k: expected an int >= 1 or None, got {top_k!r}")
    gs = require("onnx_graphsurgeon", "onnx", package="onnx-graphsurgeon")
    model = _load(onnx_in)
    graph = gs.import_onnx(model)
    if len(graph.outputs) != 1 or graph.outputs[0].shape is None or len(graph.outputs[0].shape) != 3:
        raise ModelLoadError(f"{onnx_in}: expected one output (B, N, 5+nc) or (B, 4+nc, N) (raw layout), got "
                             f"{[(o.name, o.shape) for o in graph.outputs]}")
    pred = graph.outputs[0]
    found = ModelMetadata.from_onnx_props({p.key: p.value for p in model.metadata_props})
    head = found.head if found is not None else "yolov5"  # files without metadata: YOLOv5 (documented)
    axis, extra = (1, 4) if head == "anchor_free" else (2, 5)
    channels = pred.shape[axis]
    if not isinstance(channels, int) or channels < extra + 1:
        raise ModelLoadError(f"{onnx_in}: output axis {axis} ({head} head): expected {extra} + nc >= {extra + 1}, "
                             f"got {channels}")
    meta = found if found is not None else _metadata(model, nc=channels - extra)
    if meta.output_layout != "raw":
        raise ModelLoadError(f"{onnx_in}: expected output_layout 'raw', got {meta.output_layout!r}")
    if meta.nc != channels - extra:
        raise ModelLoadError(f"{onnx_in}: metadata names {meta.nc} classes but the output has {channels - extra}")
    if pred.dtype is not None and np.dtype(pred.dtype) != np.float32:
        raise ModelLoadError(f"{onnx_in}: NMS needs a float32 output, got {np.dtype(pred.dtype)} "
                             "(export FP16 engines from the FP32 ONNX with fp16=True instead)")

    b = _Builder(gs, graph, "nms")
    bdim = pred.shape[0]
    k = int(max_det)
    outs = [gs.Variable("num_dets", dtype=np.int32, shape=(bdim, 1)),
            gs.Variable("boxes", dtype=np.float32, shape=(bdim, k, 4)),
            gs.Variable("scores", dtype=np.float32, shape=(bdim, k)),
            gs.Variable("classes", dtype=np.int32, shape=(bdim, k))]
    boxes, scores = _decode(b, pred, head)
    settings = {"conf": float(conf), "iou": float(iou), "max_det": k, "agnostic": bool(agnostic),
                "multi_label": bool(multi_label), "plugin": plugin}
    if plugin == "efficient":
        _efficient_nms(b, boxes, scores, outs, conf, iou, k, agnostic, multi_label)
    else:
        _onnx_nms(b, pred, boxes, scores, outs, conf, iou, k, agnostic, n=pred.shape[3 - axis], top_k=top_k)
        settings["top_k"] = top_k
    graph.outputs = outs
    new_meta = meta.replace(output_layout="nms", nms=settings)
    return _save(graph, model, new_meta, onnx_out, domains=(TRT_DOMAIN,) if plugin == "efficient" else ())


def add_uint8_input(onnx_in: PathLike, onnx_out: PathLike) -> Path:
    """Make the model take the letterboxed OpenCV frame directly: ``images`` uint8 ``(B, H, W, 3)`` BGR.

    In-graph: ``Cast float32 -> channels BGR->RGB -> Transpose to (B, 3, H, W) -> / 255`` (then ``Cast``
    to float16 for an FP16 model), feeding the original graph. Copying uint8 NHWC moves 4x fewer bytes than
    float32 NCHW and skips the CPU normalization.

    Returns:
        ``onnx_out``; metadata ``input_format="uint8_nhwc_bgr"``.

    Raises:
        ModelLoadError: the model does not have one float NCHW 3-channel input, or already takes uint8.
    """
    gs = require("onnx_graphsurgeon", "onnx", package="onnx-graphsurgeon")
    model = _load(onnx_in)
    graph = gs.import_onnx(model)
    if len(graph.inputs) != 1:
        raise ModelLoadError(f"{onnx_in}: expected 1 input, got {[i.name for i in graph.inputs]}")
    old = graph.inputs[0]
    dtype = np.dtype(old.dtype) if old.dtype is not None else None
    shape = old.shape
    if dtype not in (np.dtype(np.float32), np.dtype(np.float16)) or shape is None or len(shape) != 4 \
            or shape[1] != 3:
        raise ModelLoadError(f"{onnx_in}: expected a float (B, 3, H, W) input, got {old.name} {dtype} {shape}")
    meta = _metadata(model, nc=None)
    if meta.input_format != "float32_nchw_rgb":
        raise ModelLoadError(f"{onnx_in}: expected input_format 'float32_nchw_rgb', got {meta.input_format!r}")

    name = old.name
    old.name = f"{name}_normalized"
    new = gs.Variable(name, dtype=np.uint8, shape=(shape[0], shape[2], shape[3], 3))
    b = _Builder(gs, graph, "uint8_input")
    x = b.cast(new, np.float32)
    x = b.op("Gather", [x, b.const([2, 1, 0], np.int64)], {"axis": 3})   # BGR -> RGB
    x = b.op("Transpose", [x], {"perm": [0, 3, 1, 2]})                   # NHWC -> NCHW
    if dtype == np.float16:
        x = b.op("Div", [x, b.const(255.0, np.float32)])
        b.op("Cast", [x], {"to": 10}, outputs=[old])                     # FLOAT16
    else:
        b.op("Div", [x, b.const(255.0, np.float32)], outputs=[old])
    graph.inputs = [new]
    return _save(graph, model, meta.replace(input_format="uint8_nhwc_bgr"), onnx_out)
