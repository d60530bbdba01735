"""Export a YOLOv5 checkpoint to ONNX with edge-detect metadata.

The exported graph takes ``images`` float ``(B, 3, H, W)`` RGB in ``[0, 1]`` (letterboxed, NCHW) and returns
``output0`` ``(B, N, 5 + nc)`` in the ``"raw"`` layout: ``cx, cy, w, h`` in input (letterbox) pixels,
objectness and class probabilities (sigmoid and YOLOv5 box decoding are inside the graph). With
``dynamic=True`` the batch, height and width axes are dynamic (H and W must stay multiples of 32).

A :class:`~edge_detect.metadata.ModelMetadata` is written as JSON into the model's ``metadata_props`` under
the key ``"edge_detect"``.

``half=True`` (fp16 weights and fp16 input/output): torch cannot run a half model on CPU, so the model is
exported in fp32 and then converted with ``onnxruntime.transformers.float16.convert_float_to_float16`` (ops
that need fp32 are kept in fp32 behind casts). Such a model is meant for GPUs (TensorRT / CUDA); ONNX Runtime's
CPU provider may not implement every fp16 kernel.
"""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import torch

from edge_detect import __version__
from edge_detect._optional import require
from edge_detect.errors import ConfigError
from edge_detect.config import parse_imgsz
from edge_detect.metadata import ModelMetadata, write_onnx_metadata
from edge_detect.preprocess import check_imgsz
from edge_detect.weights import sha256_file
from edge_detect.training.checkpoint import checkpoint_family, load_model
from edge_detect.paths import PathLike

__all__ = ["export_onnx", "normalize_imgsz", "INPUT_NAME", "OUTPUT_NAME"]

LOGGER = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "output0"


def normalize_imgsz(imgsz: Union[int, Sequence[int]], stride: int = 32, force: bool = False) -> Tuple[int, int]:
    """``640``, ``"384x640"`` or ``(h, w)`` (:func:`~edge_detect.config.parse_imgsz`) -> ``(h, w)``, positive
    multiples of ``stride`` and at most :data:`~edge_detect.preprocess.MAX_IMGSZ` unless ``force``
    (:func:`~edge_detect.preprocess.check_imgsz`)."""
    return check_imgsz(parse_imgsz(imgsz), stride, force)


def _versions(onnx: Any, opset: int) -> Dict[str, str]:
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "edge_detect": __version__,
                "opset": str(opset)}
    try:
        import onnxslim

        versions["onnxslim"] = str(onnxslim.__version__)
    except ImportError:
        pass
    return versions


def _torch_export(model: torch.nn.Module, dummy: torch.Tensor, opset: int, dynamic: bool) -> bytes:
    """Classic TorchScript-based export (``dynamo=False``) to bytes."""
    axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 1: "anchors"}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of the dynamo one, but it is the robust choice for
        # this traced CNN (dynamic H/W through Shape/Range ops, no onnxscript dependency)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(model, (dummy,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, do_constant_folding=True,
                          dynamic_axes=axes if dynamic else None, dynamo=False)
    return buf.getvalue()


def _to_fp16(model_proto: Any) -> Any:
    from edge_detect.deploy.onnx_yolov5 import to_fp16

    return to_fp16(model_proto)


def export_onnx(weights: PathLike, output: PathLike, imgsz: Union[int, Sequence[int]] = (640, 640),
                batch: int = 1, dynamic: bool = False, opset: int = 17, half: bool = False,
                simplify: bool = True, progress: bool = True, force_imgsz: bool = False,
                trust_checkpoint: bool = False) -> Path:
    """Export checkpoint ``weights`` (``.pt``) to the ONNX file ``output``.

    An ultralytics checkpoint (YOLOv5u / YOLOv8 / YOLO11, recognised from the classes its pickle names, see
    :func:`~edge_detect.training.checkpoint.checkpoint_family`) is delegated to
    :func:`edge_detect.training.ultralytics_export.export_ultralytics_onnx` (extra ``ultralytics``); its output is
    ``(B, 4 + nc, N)`` with ``head="anchor_free"`` metadata.

    Args:
        weights: official YOLOv5, edge-detect or ultralytics detection checkpoint.
        output: ``.onnx`` path to write (parent folders are created).
        imgsz: ``(h, w)`` or one side; multiples of 32. For dynamic models: the nominal size.
        batch: batch size of the static graph (for dynamic models: recorded in the metadata only).
        dynamic: dynamic batch/height/width axes.
        opset: ONNX opset.
        half: fp16 weights and fp16 input/output (see module doc).
        simplify: run onnxslim on the graph.
        progress: show a progress bar over the export steps.
        force_imgsz: allow sides above :data:`~edge_detect.preprocess.MAX_IMGSZ` (4096).
        trust_checkpoint: ultralytics checkpoints only: if the restricted unpickler refuses the file, load it with
            ultralytics' own loader, which executes pickled code.

    Returns:
        the written path.

    Raises:
        ModelError / ModelLoadError / UnsafeCheckpointError: the checkpoint cannot be loaded.
        ConfigError: invalid ``imgsz`` / ``batch``.
        MissingDependencyError: onnx (or onnxslim for ``simplify``) is not installed.
    """
    onnx = require("onnx", "build")
    from edge_detect.progress import progress as progress_bar

    weights, output = Path(weights), Path(output)
    normalize_imgsz(imgsz, 32, force_imgsz)  # fail before loading anything (the stride is checked again below)
    if int(batch) < 1:
        raise ConfigError(f"batch: expected >= 1, got {batch}")
    if weights.is_file() and checkpoint_family(weights) == "ultralytics":
        from edge_detect.training.ultralytics_export import export_ultralytics_onnx

        return export_ultralytics_onnx(weights, output, imgsz=imgsz, batch=batch, dynamic=dynamic, opset=opset,
                                       half=half, simplify=simplify, progress=progress, force_imgsz=force_imgsz,
                                       trust_checkpoint=trust_checkpoint)
    steps = ["load", "export", *(["simplify"] if simplify else []), *(["fp16"] if half else []), "save"]
    bar = progress_bar(total=len(steps), desc=f"export {weights.name}", disable=not progress, unit="step")
    try:  # the bar is closed (its line ended) before any error reaches the console
        bar.set_postfix_str("load")
        model, names = load_model(weights, fuse=True)
        stride = int(model.stride.max())
        h, w = normalize_imgsz(imgsz, stride, force_imgsz)
        bar.update()
        proto = _export_proto(onnx, model, (int(batch), h, w), opset, dynamic, simplify, half, bar)
        bar.set_postfix_str("save")
        meta = ModelMetadata(names=names, imgsz=(h, w), stride=stride, batch=int(batch), dynamic=bool(dynamic),
                             output_layout="raw", input_format="float32_nchw_rgb",
                             precision="fp16" if half else "fp32", source_sha256=sha256_file(weights),
                             source_path=str(weights.resolve()), versions=_versions(onnx, opset))
        _save(onnx, proto, meta, output)
        bar.update()
    finally:
        bar.close()
    LOGGER.info("exported %s -> %s (%dx%d, batch %d%s, %s)", weights, output, h, w, int(batch),
                ", dynamic" if dynamic else "", meta.precision)
    return output


def _export_proto(onnx: Any, model: Any, bhw: Tuple[int, int, int], opset: int, dynamic: bool, simplify: bool,
                  half: bool, bar: Any) -> Any:
    """The traced ONNX graph of ``model`` for a ``(batch, h, w)`` input, simplified and made fp16 as asked (the
    progress ``bar`` advances one step per stage)."""
    b, h, w = bhw
    bar.set_postfix_str("export")
    with torch.no_grad():
        proto = onnx.load_from_string(_torch_export(model, torch.zeros(b, 3, h, w), opset, dynamic))
    bar.update()
    if simplify:
        bar.set_postfix_str("simplify")
        proto = require("onnxslim", "build").slim(proto)
        bar.update()
    if half:
        bar.set_postfix_str("fp16")
        proto = _to_fp16(proto)
        bar.update()
    return proto


def _save(onnx: Any, proto: Any, meta: ModelMetadata, output: Path) -> None:
    """Write ``meta`` into ``proto``, check it and save it to ``output`` (parent folders created)."""
    write_onnx_metadata(proto, meta, keep_other=False)
    proto.producer_name = "edge-detect"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(output))
