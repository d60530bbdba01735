"""ultralytics checkpoints (YOLOv5u / YOLOv8 / YOLO11, anchor-free ``Detect`` head) -> ONNX with edge-detect metadata.

This is the only module of edge-detect that imports the ``ultralytics`` package (extra ``ultralytics``). The
``.pt -> ONNX`` step is ultralytics' own exporter (``ultralytics.engine.exporter.Exporter``, what
``YOLO(...).export(format="onnx")`` runs); every later stage (INT8, uint8 input, in-graph NMS, TensorRT) is
edge-detect's and reads the :class:`~edge_detect.metadata.ModelMetadata` written here.

Trust: the checkpoint is read by edge-detect's restricted unpickler (:mod:`edge_detect.training.checkpoint`):
the pickled ultralytics classes become inert shims, only their tensors and yaml description are used, and the
model is rebuilt by ultralytics from that yaml (``DetectionModel(cfg)``) with the weights loaded strictly. No
pickled code runs. ``trust_checkpoint=True`` is the escape hatch for checkpoints needing other globals: the
file is then loaded by ultralytics' own loader (``YOLO(path)``, i.e. ``torch.load(weights_only=False)``),
which executes whatever the pickle contains; use it only for files you trust like code.

Offline: before ultralytics is imported, ``YOLO_OFFLINE=1`` (no online checks, no analytics),
``YOLO_AUTOINSTALL=False``, ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1`` (``check_requirements`` never pip
installs) and ``YOLO_VERBOSE=False`` (warnings only) are set in the environment; the ONNX export path downloads no fonts or assets.

The exported graph takes ``images`` float ``(B, 3, H, W)`` RGB in ``[0, 1]`` and returns ``output0``
``(B, 4 + nc, N)``: ``cx, cy, w, h`` in input (letterbox) pixels and ``nc`` class scores (sigmoid applied), no
objectness; the metadata says ``head="anchor_free"``, ``output_layout="raw"``.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from edge_detect import __version__
from edge_detect._optional import require
from edge_detect.errors import ConfigError, ModelLoadError, UnsafeCheckpointError
from edge_detect.metadata import ModelMetadata, write_onnx_metadata
from edge_detect.training.checkpoint import ULTRALYTICS_FORMAT, load_checkpoint, load_weights_strictly
from edge_detect.weights import sha256_file
from edge_detect.paths import PathLike

__all__ = ["OFFLINE_ENV", "import_ultralytics", "is_ultralytics_checkpoint", "build_model",
           "export_ultralytics_onnx"]

LOGGER = logging.getLogger(__name__)


#: environment set before ``import ultralytics``: no network checks, no pip installs
OFFLINE_ENV: Dict[str, str] = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS": "1",
    "YOLO_VERBOSE": "False",
}


def import_ultralytics() -> ModuleType:
    """Import ``ultralytics`` with :data:`OFFLINE_ENV` in force.

    ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS`` is read on every ``check_requirements`` call, so pip installs are
    prevented even if ultralytics was imported earlier by someone else; ``YOLO_OFFLINE`` only takes effect at the
    first import (a warning says so otherwise).

    Raises:
        MissingDependencyError: ultralytics is not installed (``pip install 'edge-detect[ultralytics]'``).
    """
    already = "ultralytics" in sys.modules
    os.environ.update(OFFLINE_ENV)
    module = require("ultralytics", "ultralytics")
    utils = require("ultralytics.utils", "ultralytics")
    if already and getattr(utils, "ONLINE", False):
        LOGGER.warning("ultralytics was imported before edge-detect set YOLO_OFFLINE=1; its online checks may "
                       "run (pip installs stay disabled by ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1)")
    return module


def is_ultralytics_checkpoint(info: Mapping[str, Any]) -> bool:
    """Whether ``info`` (from :func:`~edge_detect.training.checkpoint.load_checkpoint`) is an ultralytics one."""
    return info.get("format") == ULTRALYTICS_FORMAT


def build_model(info: Mapping[str, Any], path: PathLike = "<checkpoint>") -> torch.nn.Module:
    """An ultralytics ``DetectionModel`` built from the checkpoint's yaml, with its weights (strict), eval mode.

    Raises:
        ModelLoadError: not a detection checkpoint, an NMS-free (end2end) head, or weights that do not fit.
    """
    if not is_ultralytics_checkpoint(info):
        raise ModelLoadError(f"{path}: expected an ultralytics checkpoint, got format {info.get('format')!r}")
    if info.get("end2end"):
        raise ModelLoadError(f"{path}: ultralytics head end2end: expected False, got True: NMS-free heads "
                             "(YOLOv10 / YOLO26 one-to-one) are not supported")
    import_ultralytics()
    tasks = require("ultralytics.nn.tasks", "ultralytics")
    try:
        model = tasks.DetectionModel(cfg=dict(info["cfg"]), ch=3, nc=int(info["nc"]), verbose=False)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: ultralytics cannot build the model from its yaml description: "
                             f"{type(exc).__name__}: {exc}") from exc
    if info.get("fused"):
        model.fuse(verbose=False)
    load_weights_strictly(model, info, path)
    model.names = dict(enumerate(info["names"]))
    model.task = "detect"
    return model.float().eval()


def _trusted_model(weights: Path) -> Tuple[torch.nn.Module, list]:
    """ultralytics' own loader (executes pickled code: only with ``trust_checkpoint=True``)."""
    ultralytics = import_ultralytics()
    LOGGER.warning("loading %s with ultralytics' own loader (trust_checkpoint=True): this executes the code "
                   "pickled in the file", weights)
    yolo = ultralytics.YOLO(str(weights))
    if yolo.task != "detect":
        raise ModelLoadError(f"{weights}: ultralytics checkpoint task: expected 'detect', got {yolo.task!r}: "
                             "edge-detect runs detection models only")
    model = yolo.model
    if getattr(model, "end2end", False):
        raise ModelLoadError(f"{weights}: ultralytics head end2end: expected False, got True: NMS-free heads are "
                             "not supported")
    names = model.names
    names = [names[k] for k in sorted(names)] if isinstance(names, Mapping) else list(names)
    return model.float().eval(), names


def _versions(onnx: Any, opset: int) -> Dict[str, str]:
    import ultralytics

    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "edge_detect": __version__,
                "ultralytics": str(ultralytics.__version__), "opset": str(opset)}
    return versions


def export_ultralytics_onnx(weights: PathLike, output: PathLike, imgsz: Union[int, Sequence[int]] = (640, 640),
                            batch: int = 1, dynamic: bool = False, opset: int = 17, half: bool = False,
                            simplify: bool = True, progress: bool = True, info: Optional[Mapping[str, Any]] = None,
                            trust_checkpoint: bool = False, force_imgsz: bool = False) -> Path:
    """Export an ultralytics detection checkpoint to ``output`` through ultralytics' ONNX exporter.

    Args:
        weights: ultralytics ``.pt`` (``model.save`` or a training ``best.pt``) of a detection model.
        output: ``.onnx`` path to write.
        imgsz: ``(h, w)`` or one side; multiples of the model stride (32).
        batch, dynamic, opset, simplify: as for :func:`edge_detect.training.export.export_onnx`.
        half: fp16 weights and I/O (converted after export, as for YOLOv5 models; ultralytics' own fp16 export
            needs a GPU).
        progress: unused (ultralytics logs its own steps); kept for signature parity.
        info: the already read checkpoint (from :func:`load_checkpoint`), to avoid reading it twice.
        force_imgsz: allow sides above :data:`~edge_detect.preprocess.MAX_IMGSZ`.
        trust_checkpoint: if the restricted unpickler refuses the file, load it with ultralytics' own loader,
            which executes pickled code (see module doc).

    Returns:
        the written path; its metadata has ``head="anchor_free"``, ``output_layout="raw"``.

    Raises:
        UnsafeCheckpointError: a global outside the allow-list and ``trust_checkpoint`` is False.
        ModelLoadError: not a detection checkpoint, end2end head, weights not fitting the yaml.
        ConfigError: bad ``imgsz`` / ``batch``.
        MissingDependencyError: ultralytics / onnx not installed.
    """
    from edge_detect.training.export import _to_fp16, normalize_imgsz

    del progress
    onnx = require("onnx", "build")
    weights, output = Path(weights), Path(output)
    if int(batch) < 1:
        raise ConfigError(f"batch: expected >= 1, got {batch}")
    if info is None:
        try:
            info = load_checkpoint(weights)
        except UnsafeCheckpointError:
            if not trust_checkpoint:
                raise
            info = None
    if info is not None:
        model, names = build_model(info, weights), list(info["names"])
    else:
        model, names = _trusted_model(weights)
    stride = int(max(float(s) for s in model.stride.tolist()))
    h, w = normalize_imgsz(imgsz, stride, force_imgsz)
    exporter_mod = require("ultralytics.engine.exporter", "ultralytics")
    with tempfile.TemporaryDirectory(prefix="edge-detect-ultralytics-") as tmp:
        model.pt_path = str(Path(tmp) / "model.pt")  # the exporter writes <pt_path stem>.onnx beside it
        args = {"format": "onnx", "imgsz": [h, w], "batch": int(batch), "dynamic": bool(dynamic),
                "opset": int(opset), "simplify": bool(simplify), "half": False, "nms": False,
                "device": "cpu", "verbose": False, "mode": "export"}
        written = Path(exporter_mod.Exporter(overrides=args)(model=model))
        proto = onnx.load(str(written))
    outs = proto.graph.output
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in outs[0].type.tensor_type.shape.dim] \
        if len(outs) == 1 else []
    if len(dims) != 3 or dims[1] != 4 + len(names):
        raise ModelLoadError(f"{weights}: ultralytics export output: expected one (B, {4 + len(names)}, N) tensor, "
                             f"got {[o.name for o in outs]} with shape {dims}")
    if half:
        proto = _to_fp16(proto)
    meta = ModelMetadata(names=names, imgsz=(h, w), stride=stride, batch=int(batch), dynamic=bool(dynamic),
                         output_layout="raw", head="anchor_free", input_format="float32_nchw_rgb",
                         precision="fp16" if half else "fp32", source_sha256=sha256_file(weights),
                         source_path=str(weights.resolve()), versions=_versions(onnx, int(opset)),
                         extra={"exported_by": "ultralytics", "trusted_checkpoint": info is None})
    write_onnx_metadata(proto, meta, keep_other=True)  # ultralytics' own keys stay (its tools read them); ours win
    onnx.checker.check_model(proto)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(output))
    LOGGER.info("exported ultralytics checkpoint %s -> %s (%dx%d, batch %d%s, %s, anchor-free head)", weights,
                output, h, w, int(batch), ", dynamic" if dynamic else "", meta.precision)
    return output
