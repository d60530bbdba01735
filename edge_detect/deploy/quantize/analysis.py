"""Graph analysis for INT8 quantization: load the ONNX, find the YOLOv5 Detect head from topology, group nodes
into blocks (``model.N``), resolve ``--int8-exclude`` entries, list the activations to calibrate, and open CPU
ONNX Runtime sessions on a model. Needs ``onnx`` / ``onnxruntime`` (the ``onnx`` extra), never torch.
"""
from __future__ import annotations

import difflib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from edge_detect._optional import require
from edge_detect.errors import ConfigError, ModelError, ModelLoadError
from edge_detect.metadata import ModelMetadata
from edge_detect.paths import PathLike

__all__ = ["load_model", "graph_inputs", "find_detect_head", "group_blocks", "resolve_exclude",
           "calibration_tensors", "session", "input_hw", "static_batch"]

_BLOCK_RE = re.compile(r"(?:^|/)model\.(\d+)(?=/|$)")


def load_model(model: Union[PathLike, Any]) -> Any:
    """An ONNX ``ModelProto`` from a path (or the proto itself). Raises ModelError / ModelLoadError."""
    onnx = require("onnx", "onnx")
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError / ValueError / google.protobuf errors
        raise ModelLoadError(f"{path}: not a readable ONNX model ({exc})") from exc


def graph_inputs(model: Any) -> List[Any]:
    """The graph's real inputs (``ValueInfoProto``), initializers left out."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def find_detect_head(model: Any) -> Tuple[List[str], List[str]]:
    """The Detect head of a YOLO graph, found from topology (names not needed).

    Head convolutions are the ``Conv`` nodes from which no other ``Conv`` is reachable (the three 1x1 output
    convolutions of YOLOv5's Detect layer); the decode nodes are every node downstream of them (reshape, sigmoid,
    grid/anchor arithmetic, concat). In the anchor-free head (YOLOv5u / YOLOv8 / YOLO11) the box branch ends in
    the DFL: a ``Conv`` with one output channel (a fixed ``0..reg_max-1`` weight turning the softmaxed bins into a
    distance) and no ``Conv`` after it. Such a final one-channel ``Conv`` counts as decoding, so the box and the
    class output convolutions before it are both head convolutions.

    Returns:
        ``(head_convs, decode_nodes)``: node-name lists in graph order.
    """
    nodes = list(model.graph.node)
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    consumers: Dict[str, List[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)

    def reaching(counted: Set[int]) -> List[bool]:
        # reverse topological pass: reaches[i] = a Conv in `counted` is reachable strictly downstream of node i
        reaches = [False] * len(nodes)
        for i in range(len(nodes) - 1, -1, -1):
            reaches[i] = any(j in counted or reaches[j] for t in nodes[i].output for j in consumers.get(t, ()))
        return reaches

    convs = {i for i, n in enumerate(nodes) if n.op_type == "Conv"}
    reaches = reaching(convs)
    dfl = {i for i in convs if not reaches[i] and len(nodes[i].input) > 1
           and len(inits.get(nodes[i].input[1], ())) == 4 and inits[nodes[i].input[1]][0] == 1}
    if dfl:
        reaches = reaching(convs - dfl)
    head = {i for i in convs - dfl if not reaches[i]}
    downstream: Set[int] = set()
    frontier = list(head)
    while frontier:
        i = frontier.pop()
        for t in nodes[i].output:
            for j in consumers.get(t, ()):
                if j not in downstream and j not in head:
                    downstream.add(j)
                    frontier.append(j)
    return ([nodes[i].name for i in sorted(head)], [nodes[i].name for i in sorted(downstream)])


def group_blocks(model: Any, skip: Iterable[str] = ()) -> "OrderedDict[str, List[str]]":
    """Group node names into blocks, in graph order.

    A node named like ``/model.9/cv1/conv/Conv`` belongs to block ``model.9`` (YOLOv5 layer index). Nodes whose
    names carry no such index belong to the block of the ``Conv`` that feeds them (each ``Conv`` starts a block
    named after it); nodes before any ``Conv`` form block ``input``. Nodes in ``skip`` are left out.
    """
    skip = set(skip)
    producer_block: Dict[str, str] = {}
    blocks: "OrderedDict[str, List[str]]" = OrderedDict()
    for node in model.graph.node:
        m = _BLOCK_RE.search(node.name)
        if m:
            block = f"model.{int(m.group(1))}"
        elif node.op_type == "Conv":
            block = node.name or f"Conv@{len(blocks)}"
        else:
            block = next((producer_block[t] for t in node.input if t in producer_block), "input")
        for t in node.output:
            producer_block[t] = block
        if node.name not in skip:
            blocks.setdefault(block, []).append(node.name)
    return blocks


def resolve_exclude(model: Any, exclude: Iterable[str], blocks: Mapping[str, Sequence[str]]) -> List[str]:
    """Node names matched by ``exclude`` entries: a block name (``model.9``), a node name, or a name prefix.

    Raises:
        ConfigError: an entry matches nothing (with the closest block or node name).
    """
    names = [n.name for n in model.graph.node]
    out: List[str] = []
    for entry in exclude:
        entry = str(entry)
        key = f"model.{entry}" if entry.isdigit() else entry
        if key in blocks:
            hit = list(blocks[key])
        else:
            hit = [n for n in names if n == entry or n.startswith(entry)]
        if not hit:
            close = difflib.get_close_matches(entry, list(blocks) + names, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"--int8-exclude '{entry}': expected a block name (e.g. {next(iter(blocks), '')}), "
                              f"a node name or a node-name prefix, matched nothing{hint}")
        out.extend(h for h in hit if h not in out)
    return out


def calibration_tensors(model: Any, skip_nodes: Iterable[str] = (),
                        inputs_of: Optional[Sequence[str]] = None) -> List[str]:
    """Float activations that quantization may need a range for, in graph order.

    Args:
        model: the FP32 ``ModelProto``.
        skip_nodes: nodes whose tensors are not needed (e.g. the Detect decode, which always stays float).
        inputs_of: when given, only the activation inputs of these op types (``("Conv",)`` for the ``"conv"``
            scheme); else every node input and output.

    Initializers and non-float tensors are always left out.
    """
    onnx = require("onnx", "onnx")
    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {i.name for i in model.graph.initializer}
    skip = set(skip_nodes)
    out: List[str] = []
    seen: Set[str] = set()
    for node in inferred.graph.node:
        if node.name in skip or (inputs_of is not None and node.op_type not in inputs_of):
            continue
        for t in list(node.input) + (list(node.output) if inputs_of is None else []):
            if t and t not in seen and t not in inits and types.get(t) in floats:
                seen.add(t)
                out.append(t)
    return out


def session(model: Any, threads: Optional[int]) -> Any:
    """A CPU ONNX Runtime session on a ``ModelProto`` or a path; ``threads`` intra-op threads (``None``: default)."""
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def input_hw(model: Any, meta: Optional[ModelMetadata]) -> Tuple[int, int]:
    """``(h, w)`` to calibrate at: the metadata's ``imgsz``, else the static input's H and W.

    Raises:
        ModelLoadError: no metadata and a dynamic input.
    """
    if meta is not None:
        return meta.imgsz
    dims = graph_inputs(model)[0].type.tensor_type.shape.dim
    hw = [d.dim_value for d in dims[2:4]]
    if len(hw) != 2 or min(hw) <= 0:
        raise ModelLoadError("ONNX model: expected edge_detect metadata or a static (B, 3, H, W) input to know the "
                             f"calibration size, got input dims {[d.dim_value or d.dim_param for d in dims]}")
    return hw[0], hw[1]


def static_batch(model: Any) -> int:
    """The static batch of the input (1 when dynamic)."""
    dims = graph_inputs(model)[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].dim_value > 0 else 1
