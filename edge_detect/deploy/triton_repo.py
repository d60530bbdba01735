"""Triton Inference Server model repository, torch-free: an exported model -> ``<repository>/<name>/1/<file>`` and
``<repository>/<name>/config.pbtxt``.

Layout written by :func:`write_repository`::

    model_repository/
        yolov5n/
            config.pbtxt        # platform/backend, I/O names, dims, data types, max_batch_size, dynamic_batching,
                                # instance_group, and our ModelMetadata JSON in parameters["edge_detect"]
            1/model.onnx        # or model.plan (TensorRT engine), or model.xml + model.bin (OpenVINO IR)

The configuration is built as Triton's own protobuf message (``tritonclient.grpc.model_config_pb2.ModelConfig``,
from the ``triton`` extra), written with ``google.protobuf.text_format`` and parsed back before the file is
kept, so a field Triton does not know cannot reach the file.

Shapes in the configuration: ``max_batch_size > 0`` makes the batch axis implicit (Triton's convention), so
``dims`` list the per-image axes: ``[3, H, W]`` for a float NCHW input, ``[H, W, 3]`` for a uint8 NHWC BGR input
(``--uint8-input``: 4x fewer bytes on the wire). The repository model has a dynamic batch axis; its height and
width are fixed in the configuration at the model's size (Triton only batches requests of one shape together, and
every client then letterboxes exactly as the static model does). Outputs keep ``-1`` where the model's axis is
symbolic.

This module reads the model's inputs, outputs and metadata from an ONNX file (the repository's own model for
``kind="onnx"``, the ONNX an engine or IR was built from otherwise) with ``onnx``; it never imports torch.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_detect._optional import require
from edge_detect.errors import ConfigError, ModelError, ModelLoadError
from edge_detect.metadata import METADATA_KEY, ModelMetadata, read_onnx_metadata
from edge_detect.paths import PathLike

__all__ = ["TensorIO", "RepositoryPlan", "KINDS", "DEVICES", "onnx_io", "plan_repository", "model_config",
           "config_text", "parse_config", "read_config", "write_repository", "metadata_from_config"]

LOGGER = logging.getLogger(__name__)


#: model kind -> (platform, backend, files in the version folder). Triton picks the backend from ``platform`` for
#: ONNX and TensorRT; OpenVINO has no platform name, only a backend.
KINDS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "onnx": ("onnxruntime_onnx", "onnxruntime", ("model.onnx",)),
    "engine": ("tensorrt_plan", "tensorrt", ("model.plan",)),
    "openvino": ("", "openvino", ("model.xml", "model.bin")),
}
#: ``instance_group`` kinds by device name
DEVICES: Dict[str, str] = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
# ONNX TensorProto element type -> Triton data type name (model_config.proto DataType)
_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32",
                   7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


@dataclass(frozen=True)
class TensorIO:
    """One model input or output as the configuration lists it.

    Attributes:
        name: tensor name in the model.
        dims: per-image axes (without the batch axis), ``-1`` where symbolic.
        data_type: Triton data type name, e.g. ``"TYPE_FP32"``, ``"TYPE_UINT8"``.
        format: ``"FORMAT_NCHW"`` / ``"FORMAT_NHWC"`` for an image input, else ``"FORMAT_NONE"``.
    """

    name: str
    dims: Tuple[int, ...]
    data_type: str
    format: str = "FORMAT_NONE"


@dataclass(frozen=True)
class RepositoryPlan:
    """Everything :func:`model_config` turns into a ``ModelConfig`` (pure data; :func:`plan_repository` fills it).

    Attributes:
        name: model name on the server (the folder name; clients ask for it in the URL).
        kind: ``"onnx"``, ``"engine"`` or ``"openvino"`` (see :data:`KINDS`).
        inputs, outputs: :class:`TensorIO` lists, model order.
        metadata: our :class:`ModelMetadata`, stored as JSON in ``parameters["edge_detect"]``.
        max_batch_size: the largest batch the server forms (clients' requests batched together).
        queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``: how long a request may wait for others.
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size``.
        instances: model instances (``instance_group.count``).
        device: ``"auto"``, ``"gpu"`` or ``"cpu"`` (``instance_group.kind``).
    """

    name: str
    kind: str
    inputs: Tuple[TensorIO, ...]
    outputs: Tuple[TensorIO, ...]
    metadata: ModelMetadata
    max_batch_size: int = 8
    queue_delay_us: int = 2000
    preferred_batch_sizes: Tuple[int, ...] = field(default=())
    instances: int = 1
    device: str = "auto"


def _pb2() -> Any:
    return require("tritonclient.grpc.model_config_pb2", "triton", package="tritonclient")


def _text_format() -> Any:
    return require("google.protobuf.text_format", "triton", package="protobuf")


def _dims(value_info: Any) -> Tuple[int, ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in shape.dim)


def _data_type(path: Path, value_info: Any) -> str:
    elem = int(value_info.type.tensor_type.elem_type)
    if elem not in _ONNX_TO_TRITON:
        raise ModelLoadError(f"{path}: tensor '{value_info.name}': expected one of the ONNX element types "
                             f"{sorted(_ONNX_TO_TRITON)}, got {elem}")
    return _ONNX_TO_TRITON[elem]


def onnx_io(onnx_path: PathLike) -> Tuple[List[Tuple[str, Tuple[int, ...], str]], List[Tuple[str, Tuple[int, ...], str]],
                                          ModelMetadata]:
    """Inputs, outputs (``(name, full shape with -1 for symbolic axes, Triton data type)``) and metadata of an
    ONNX model.

    Raises:
        ModelLoadError: not an ONNX file, no ``edge_detect`` metadata, or an element type Triton has no name for.
    """
    onnx = require("onnx", "onnx")
    path = Path(onnx_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError / OSError variants; re-raised as one type
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
    meta = read_onnx_metadata(model)
    if meta is None:
        raise ModelLoadError(f"{path}: expected edge_detect metadata in the ONNX metadata_props (an "
                             f"`edge-detect export` model), got none")
    inits = {i.name for i in model.graph.initializer}
    ins = [(v.name, _dims(v), _data_type(path, v)) for v in model.graph.input if v.name not in inits]
    outs = [(v.name, _dims(v), _data_type(path, v)) for v in model.graph.output]
    return ins, outs, meta


def _input_io(path: Path, inp: Tuple[str, Tuple[int, ...], str], meta: ModelMetadata) -> TensorIO:
    """The image input with its batch axis dropped and height/width fixed at the metadata's size."""
    name, shape, dtype = inp
    if len(shape) != 4:
        raise ModelLoadError(f"{path}: input '{name}': expected a 4-D image batch, got shape {shape}")
    h, w = meta.imgsz
    if meta.input_format == "uint8_nhwc_bgr":
        return TensorIO(name, (h, w, 3), dtype, "FORMAT_NHWC")
    return TensorIO(name, (3, h, w), dtype, "FORMAT_NCHW")


def plan_repository(inputs: Sequence[Tuple[str, Tuple[int, ...], str]],
                    outputs: Sequence[Tuple[str, Tuple[int, ...], str]], metadata: ModelMetadata, name: str,
                    kind: str = "onnx", max_batch_size: int = 8, queue_delay_us: int = 2000, instances: int = 1,
                    device: str = "auto", source: PathLike = "model") -> RepositoryPlan:
    """The :class:`RepositoryPlan` for a model with these inputs / outputs (as :func:`onnx_io` returns them).

    The model must have one image input and a dynamic batch axis (``-1`` first) on every tensor: Triton's
    dynamic batcher stacks requests along it. ``preferred_batch_size`` is ``max_batch_size`` and its half.

    Raises:
        ConfigError: a bad name, kind, device or number. ModelLoadError: the model cannot be batched by Triton.
    """
    path = Path(source)
    checks = [(kind in KINDS, "kind", f"one of {sorted(KINDS)}", kind),
              (device in DEVICES, "device", f"one of {sorted(DEVICES)}", device),
              (bool(name) and "/" not in name and name not in (".", ".."), "name", "a folder name", name),
              (max_batch_size >= 1, "max_batch_size", ">= 1", max_batch_size),
              (queue_delay_us >= 0, "queue_delay_us", ">= 0", queue_delay_us),
              (instances >= 1, "instances", ">= 1", instances)]
    for ok, what, expected, got in checks:
        if not ok:
            raise ConfigError(f"triton repository {what}: expected {expected}, got {got!r}")
    if len(inputs) != 1:
        raise ModelLoadError(f"{path}: expected 1 input tensor, got {len(inputs)}: {[i[0] for i in inputs]}")
    static = [n for n, shape, _ in [*inputs, *outputs] if not shape or shape[0] != -1]
    if static:
        raise ModelLoadError(f"{path}: expected a dynamic batch axis on every tensor (export with --dynamic; "
                             f"`--format triton` does), got a static one on {static}")
    ins = (_input_io(path, inputs[0], metadata),)
    outs = tuple(TensorIO(n, tuple(shape[1:]), dtype) for n, shape, dtype in outputs)
    preferred = tuple(sorted({max(1, max_batch_size // 2), max_batch_size}))
    meta = metadata.replace(batch=int(max_batch_size))
    return RepositoryPlan(name=name, kind=kind, inputs=ins, outputs=outs, metadata=meta,
                          max_batch_size=int(max_batch_size), queue_delay_us=int(queue_delay_us),
                          preferred_batch_sizes=preferred, instances=int(instances), device=device)


def model_config(plan: RepositoryPlan) -> Any:
    """``plan`` as Triton's ``inference.ModelConfig`` protobuf message."""
    pb = _pb2()
    platform, backend, _ = KINDS[plan.kind]
    cfg = pb.ModelConfig(name=plan.name, max_batch_size=plan.max_batch_size)
    if platform:
        cfg.platform = platform
    else:
        cfg.backend = backend
    for t in plan.inputs:
        cfg.input.add(name=t.name, data_type=pb.DataType.Value(t.data_type),
                      format=pb.ModelInput.Format.Value(t.format), dims=list(t.dims))
    for t in plan.outputs:
        cfg.output.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
    cfg.dynamic_batching.max_queue_delay_microseconds = plan.queue_delay_us
    cfg.dynamic_batching.preferred_batch_size.extend(plan.preferred_batch_sizes)
    cfg.instance_group.add(count=plan.instances, kind=pb.ModelInstanceGroup.Kind.Value(DEVICES[plan.device]))
    cfg.parameters[METADATA_KEY].string_value = plan.metadata.to_json()
    return cfg


def config_text(config: Any) -> str:
    """A ``ModelConfig`` message as ``config.pbtxt`` text."""
    return _text_format().MessageToString(config)


def parse_config(text: str, source: str = "config.pbtxt") -> Any:
    """Parse ``config.pbtxt`` text into Triton's ``ModelConfig`` (an unknown field or bad value is an error).

    Raises:
        ModelError: the text is not a valid ``ModelConfig`` (the parser's message says where).
    """
    pb, tf = _pb2(), _text_format()
    try:
        return tf.Parse(text, pb.ModelConfig())
    except tf.ParseError as exc:
        raise ModelError(f"{source}: not a valid Triton model configuration ({exc})") from exc


def read_config(path: PathLike) -> Any:
    """:func:`parse_config` of a ``config.pbtxt`` file."""
    return parse_config(Path(path).read_text(encoding="utf-8"), str(path))


def metadata_from_config(config: Any) -> Optional[ModelMetadata]:
    """Our :class:`ModelMetadata` from a ``ModelConfig``'s ``parameters["edge_detect"]``, or ``None``.

    Works on the protobuf message and on the JSON dict Triton's HTTP API returns for the same configuration.
    """
    params = config.get("parameters", {}) if isinstance(config, dict) else config.parameters
    if METADATA_KEY not in params:
        return None
    value = params[METADATA_KEY]
    text = value.get("string_value", "") if isinstance(value, dict) else value.string_value
    return ModelMetadata.from_json(text)


def write_repository(model_files: Sequence[PathLike], repository: PathLike, io_onnx: Optional[PathLike] = None,
                     name: Optional[str] = None, kind: str = "onnx", max_batch_size: int = 8,
                     queue_delay_us: int = 2000, instances: int = 1, device: str = "auto") -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` and copy ``model_files`` to ``<repository>/<name>/1/``.

    Args:
        model_files: the model: ``[x.onnx]`` (kind onnx), ``[x.engine]`` (kind engine) or ``[x.xml, x.bin]``
            (kind openvino); copied under Triton's names (:data:`KINDS`).
        repository: the model repository folder (created; other models in it are left alone).
        io_onnx: the ONNX whose inputs, outputs and metadata describe the model (default: ``model_files[0]``,
            which must then be ONNX).
        name: model name on the server (default: the metadata's source checkpoint stem, else the file stem).
        kind, max_batch_size, queue_delay_us, instances, device: see :class:`RepositoryPlan`.

    Returns:
        the model's folder ``<repository>/<name>``.

    Raises:
        ConfigError / ModelLoadError: see :func:`plan_repository`; ModelError: wrong number of model files.
    """
    files = [Path(f) for f in model_files]
    if kind in KINDS and len(files) != len(KINDS[kind][2]):
        raise ModelError(f"triton repository kind {kind}: expected {len(KINDS[kind][2])} model file(s) "
                         f"{list(KINDS[kind][2])}, got {[str(f) for f in files]}")
    source = Path(io_onnx) if io_onnx is not None else files[0]
    ins, outs, meta = onnx_io(source)
    name = name or (Path(meta.source_path).stem if meta.source_path else files[0].stem)
    plan = plan_repository(ins, outs, meta, name, kind=kind, max_batch_size=max_batch_size,
                           queue_delay_us=queue_delay_us, instances=instances, device=device, source=source)
    text = config_text(model_config(plan))
    parse_config(text, f"{plan.name}/config.pbtxt")  # parsed back before anything is written
    model_dir = Path(repository) / plan.name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(files, KINDS[kind][2]):
        shutil.copyfile(src, version / dst)
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    LOGGER.info("triton repository: %s (%s, max_batch_size %d, inputs %s)", model_dir, kind,
                plan.max_batch_size, [(t.name, t.dims, t.data_type) for t in plan.inputs])
    return model_dir
