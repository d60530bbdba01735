"""Load YOLOv5 checkpoints safely, and save/load edge-detect's own checkpoint format.

Three formats are read by :func:`load_checkpoint` (:func:`load_model` builds the first two):

* **official YOLOv5 checkpoints** (``yolov5n.pt`` ...): a full pickle of the original repository's
  ``models.yolo.Model`` / ``DetectionModel``. They are read with a *restricted unpickler* that resolves only an
  allow-list of globals: the YOLOv5 module classes map to inert ``nn.Module`` shims (no code of the original
  repository runs, nor needs to be installed), ``torch.nn`` layer classes and torch's tensor-rebuild helpers
  map to torch itself, and a few containers (``OrderedDict``, ``set``...). Any other global raises
  :class:`~edge_detect.errors.UnsafeCheckpointError` naming it, before anything is called. The shim tree's
  ``state_dict`` is then loaded into our own :class:`~edge_detect.training.model.YOLOv5`, built from the
  checkpoint's embedded yaml, and every key must match.
* **edge-detect checkpoints** written by :func:`save_checkpoint`: a dict of plain tensors, the yaml model
  description, class names and metadata, read with ``torch.load(weights_only=True)``.
* **ultralytics checkpoints** (YOLOv5u / YOLOv8 / YOLO11, ``model.save`` or training's ``best.pt``): a full
  pickle of ``ultralytics.nn.tasks.DetectionModel``. The same restricted unpickler maps the ultralytics classes
  of :data:`ULTRALYTICS_CLASSES` to inert shims (the ``ultralytics`` package is neither imported nor run); the
  result has ``format="ultralytics"`` and is turned into a model by
  :mod:`edge_detect.training.ultralytics_export`. A checkpoint needing any other global is refused with
  :class:`~edge_detect.errors.UnsafeCheckpointError`; loading it anyway (``trust_checkpoint=True``, CLI
  ``--trust-checkpoint``) hands the file to ultralytics' own loader, which executes pickled code.

Half-precision tensors are converted to float32.
"""
from __future__ import annotations

import builtins
import codecs
import collections
import logging
import pickle
import pickletools
import types
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from edge_detect.errors import ConfigError, ModelError, ModelLoadError, UnsafeCheckpointError
from edge_detect.training.model import YOLOv5
from edge_detect.paths import PathLike

__all__ = ["FORMAT", "ULTRALYTICS_FORMAT", "ULTRALYTICS_CLASSES", "load_checkpoint", "load_model",
           "save_checkpoint", "build_from_checkpoint", "load_weights_strictly", "restricted_pickle", "pickle_globals",
           "checkpoint_family"]

LOGGER = logging.getLogger(__name__)

FORMAT = "edge_detect.yolov5"
FORMAT_VERSION = 1
ULTRALYTICS_FORMAT = "ultralytics"



# --------------------------------------------------------------------------------------------------------------
# restricted unpickler
class _YoloShim(nn.Module):
    """Inert stand-in for a class of the original YOLOv5 repository: holds the pickled state, runs nothing."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise ModelLoadError(f"{type(self).__name__} is a checkpoint shim and cannot run; use load_model()")


# class names of the original repository that may appear in a detection checkpoint
_YOLO_CLASSES = {
    "models.yolo": ("Model", "DetectionModel", "Detect"),
    "models.common": ("Conv", "C3", "Bottleneck", "SPPF", "SPP", "Concat", "Focus", "BottleneckCSP",
                      "DWConv", "C3SPP", "C3Ghost", "GhostConv", "GhostBottleneck", "Contract", "Expand"),
}
_SHIMS: Dict[Tuple[str, str], type] = {
    (mod, name): type(name, (_YoloShim,), {"__module__": f"{__name__}.shim.{mod}"})
    for mod, names in _YOLO_CLASSES.items() for name in names
}


class _UltralyticsShim(_YoloShim):
    """Inert stand-in for a class of the ``ultralytics`` package (the package is not imported)."""


#: ultralytics classes a YOLOv5u / YOLOv8 / YOLO11 checkpoint may pickle (the model classes of the other tasks
#: are listed so that such checkpoints are refused by task, with a clear message, rather than as unsafe)
ULTRALYTICS_CLASSES: Dict[str, Tuple[str, ...]] = {
    "ultralytics.nn.tasks": ("DetectionModel", "SegmentationModel", "PoseModel", "OBBModel",
                             "ClassificationModel"),
    "ultralytics.nn.modules.head": ("Detect", "Segment", "Pose", "OBB", "Classify"),
    "ultralytics.nn.modules.conv": ("Conv", "Conv2", "DWConv", "LightConv", "GhostConv", "RepConv", "Focus",
                                    "Concat", "ConvTranspose", "ChannelAttention", "SpatialAttention", "CBAM"),
    "ultralytics.nn.modules.block": ("DFL", "Proto", "Bottleneck", "BottleneckCSP", "C1", "C2", "C2f", "C3", "C3x",
                                     "C3k", "C3k2", "C2PSA", "PSABlock", "Attention", "SPP", "SPPF",
                                     "GhostBottleneck", "C3Ghost", "RepC3"),
}
_ULTRALYTICS_SHIMS: Dict[Tuple[str, str], type] = {
    (mod, name): type(name, (_UltralyticsShim,), {"__module__": f"{__name__}.shim.{mod}"})
    for mod, names in ULTRALYTICS_CLASSES.items() for name in names
}
_ULTRALYTICS_TASKS = {"DetectionModel": "detect", "SegmentationModel": "segment", "PoseModel": "pose",
                      "OBBModel": "obb", "ClassificationModel": "classify"}

_SAFE_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): builtins.set,
    ("builtins", "frozenset"): builtins.frozenset,
    ("builtins", "dict"): builtins.dict,
    ("builtins", "list"): builtins.list,
    ("builtins", "tuple"): builtins.tuple,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles store bytes (numpy scalars)
}
_TORCH_NN_PREFIX = "torch.nn.modules."
_NUMPY_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


def _numpy_global(module: str, name: str) -> Any:
    """``numpy.dtype`` or the scalar constructor (builds a number from a dtype and raw bytes)."""
    import numpy as np

    if name == "dtype":
        return np.dtype
    multiarray = getattr(np, "_core", None) or np.core
    return multiarray.multiarray.scalar


def _find_class(module: str, name: str) -> Any:
    """The allow-list. ``torch.load`` itself resolves ``torch.*Storage`` before this is reached."""
    module = "builtins" if module == "__builtin__" else module
    if (module, name) in _SHIMS:
        return _SHIMS[(module, name)]
    if (module, name) in _ULTRALYTICS_SHIMS:
        return _ULTRALYTICS_SHIMS[(module, name)]
    if (module, name) in _SAFE_GLOBALS:
        return _SAFE_GLOBALS[(module, name)]
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if (module, name) in _NUMPY_GLOBALS:  # e.g. best_fitness saved as a numpy scalar by training runs
        return _numpy_global(module, name)
    if module.startswith(_TORCH_NN_PREFIX):
        obj = getattr(__import__(module, fromlist=[name]), name, None) if _is_torch_module(module) else None
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
    if module.split(".")[0] == "ultralytics":
        raise UnsafeCheckpointError(
            f"refusing to unpickle global '{module}.{name}': not on the allow-list of ultralytics checkpoint "
            "classes (nothing was executed). If you trust this file, --trust-checkpoint (Python: "
            "trust_checkpoint=True) loads it with ultralytics' own loader, which executes pickled code")
    raise UnsafeCheckpointError(
        f"refusing to unpickle global '{module}.{name}': not on the allow-list of YOLOv5 checkpoint classes "
        "(nothing was executed)")


def _is_torch_module(module: str) -> bool:
    import importlib.util

    return all(part.isidentifier() for part in module.split(".")) and importlib.util.find_spec(module) is not None


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from :func:`_find_class`'s allow-list."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        return _find_class(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: a module usable as ``torch.load(..., pickle_module=restricted_pickle)``
restricted_pickle = types.ModuleType("edge_detect_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------------------
# inspecting without unpickling
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}


def pickle_globals(path: PathLike) -> "set[Tuple[str, str]]":
    """The ``(module, name)`` globals a torch zip checkpoint's pickle refers to, read with ``pickletools``
    (opcodes are only listed: nothing is unpickled or executed). Empty for files that are not torch zips."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            data = z.read(name) if name else b""
    except (zipfile.BadZipFile, OSError, KeyError):
        return set()
    found: "set[Tuple[str, str]]" = set()
    recent: List[Any] = []  # values pushed, None for anything that is not a string
    memo: Dict[Any, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in _STRING_OPS:
                recent.append(arg)
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(arg))
            elif op.name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = recent[-1] if recent else None
            elif op.name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                found.add((module, attr))
            elif op.name == "STACK_GLOBAL":
                if len(recent) >= 2 and isinstance(recent[-2], str) and isinstance(recent[-1], str):
                    found.add((recent[-2], recent[-1]))
                recent.append(None)
            else:
                recent.append(None)
    except ValueError as exc:  # truncated / corrupt pickle
        LOGGER.debug("pickletools could not read %s: %s", path, exc)
    return found


def checkpoint_family(path: PathLike) -> str:
    """``"ultralytics"`` when the checkpoint pickles ``ultralytics.*`` classes, ``"yolov5"`` when it pickles
    the original YOLOv5 repository's (``models.*``), else ``"other"`` (edge-detect's own format, or unknown).
    Decided from the pickle's content (:func:`pickle_globals`), never from the file name."""
    modules = {m for m, _ in pickle_globals(path)}
    if any(m.split(".")[0] == "ultralytics" for m in modules):
        return "ultralytics"
    if any(m.split(".")[0] == "models" for m in modules):
        return "yolov5"
    return "other"


# --------------------------------------------------------------------------------------------------------------
# reading
def _not_yolo(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a YOLOv5 checkpoint: {why}")


def _check_container(path: Path) -> None:
    """Refuse files that are neither a torch zip archive nor a pickle before any unpickler sees them."""
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # zip (torch >= 1.6) or pickle protocol >= 2 (legacy)
        return
    shown = "an empty file" if not head else f"bytes {head!r}"
    raise _not_yolo(path, f"expected a PyTorch checkpoint (a zip archive or a pickle), got {shown}")


def _torch_load(path: Path) -> Any:
    """Own format with ``weights_only=True``; anything else through the restricted unpickler."""
    _check_container(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError, IndexError,
            KeyError) as exc:
        LOGGER.debug("weights_only load of %s failed (%s); trying the restricted unpickler", path, exc)
    try:
        return torch.load(path, map_location="cpu", pickle_module=restricted_pickle, weights_only=False)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError,
            IndexError, KeyError) as exc:
        raise _not_yolo(path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _float_state(state: Mapping[str, torch.Tensor]) -> "collections.OrderedDict[str, torch.Tensor]":
    return collections.OrderedDict(
        (k, v.detach().float() if v.is_floating_point() else v.detach()) for k, v in state.items())


def _names_list(names: Any, nc: int) -> List[str]:
    if isinstance(names, Mapping):  # newer checkpoints: {0: "person", ...}
        names = [names[k] for k in sorted(names, key=int)]
    if names is None:
        names = [f"class{i}" for i in range(nc)]
    return [str(n) for n in names]


def _info_from_official(path: Path, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if isinstance(model, _UltralyticsShim):
        return _info_from_ultralytics(path, ckpt, model)
    if not isinstance(model, _YoloShim):
        raise _not_yolo(path, f"expected a pickled YOLOv5 model under 'ema' or 'model', got "
                              f"{type(model).__name__}")
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, Mapping):
        raise _not_yolo(path, "the pickled model has no yaml description")
    head = model.model[-1] if hasattr(model, "model") else None
    nc = int(getattr(model, "nc", cfg.get("nc", 0)))
    stride = getattr(model, "stride", None)
    return {
        "format": "yolov5",
        "cfg": dict(cfg, nc=nc),
        "names": _names_list(getattr(model, "names", None), nc),
        "nc": nc,
        "stride": [float(s) for s in stride] if stride is not None else None,
        "anchors": head.anchors.float().clone() if head is not None and hasattr(head, "anchors") else None,
        "state_dict": _float_state(model.state_dict()),
        "fused": False,
        "epoch": ckpt.get("epoch"),
        "date": ckpt.get("date"),
        "extra": {},
    }


def _info_from_ultralytics(path: Path, ckpt: Mapping[str, Any], model: "_UltralyticsShim") -> Dict[str, Any]:
    task = _ULTRALYTICS_TASKS.get(type(model).__name__)
    if task != "detect":
        raise ModelLoadError(f"{path}: ultralytics checkpoint task: expected 'detect' (DetectionModel), got "
                             f"{task or type(model).__name__!r}: edge-detect runs detection models only")
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, Mapping):
        raise _not_yolo(path, "the pickled ultralytics model has no yaml description")
    head = model.model[-1] if hasattr(model, "model") else None
    nc = int(getattr(head, "nc", cfg.get("nc", 0)))
    stride = getattr(model, "stride", None)
    return {
        "format": ULTRALYTICS_FORMAT,
        "task": task,
        "cfg": dict(cfg, nc=nc),
        "names": _names_list(getattr(model, "names", None), nc),
        "nc": nc,
        "stride": [float(s) for s in stride] if stride is not None else None,
        "anchors": None,
        "state_dict": _float_state(model.state_dict()),
        "fused": not any(k.endswith(".bn.weight") for k in model.state_dict()),
        "end2end": bool(getattr(head, "end2end", False) or getattr(head, "_end2end", False)),
        "epoch": ckpt.get("epoch"),
        "date": ckpt.get("date"),
        "extra": {"ultralytics_version": str(ckpt.get("version", ""))},
    }


def _info_from_own(path: Path, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise _not_yolo(path, f"edge-detect checkpoint format_version: expected {FORMAT_VERSION}, got {version}")
    cfg, state = ckpt.get("cfg"), ckpt.get("state_dict")
    if not isinstance(cfg, Mapping) or not isinstance(state, Mapping):
        raise _not_yolo(path, "edge-detect checkpoint lacks 'cfg' or 'state_dict'")
    nc = int(cfg.get("nc", 0))
    anchors = state.get(f"model.{len(cfg.get('backbone', [])) + len(cfg.get('head', [])) - 1}.anchors")
    return {
        "format": FORMAT,
        "cfg": dict(cfg),
        "names": _names_list(ckpt.get("names"), nc),
        "nc": nc,
        "stride": list(ckpt.get("stride") or []) or None,
        "anchors": anchors.float().clone() if anchors is not None else None,
        "state_dict": _float_state(state),
        "fused": bool(ckpt.get("fused", False)),
        "epoch": ckpt.get("epoch"),
        "date": ckpt.get("date"),
        "extra": dict(ckpt.get("extra") or {}),
    }


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint (official YOLOv5, ultralytics or edge-detect) without running any pickled code.

    Returns:
        dict with ``format`` (``"yolov5"``, ``"ultralytics"`` or ``"edge_detect.yolov5"``), ``cfg`` (model yaml dict),
        ``names`` (list of str), ``nc``, ``stride`` (list of float, e.g. ``[8, 16, 32]``), ``anchors``
        (float32 ``(nl, na, 2)`` in grid units), ``state_dict`` (float32 tensors on CPU), ``fused``,
        ``epoch``, ``date`` and ``extra`` (metadata saved with the checkpoint). ultralytics checkpoints also
        have ``task`` (``"detect"``) and ``end2end``; their ``anchors`` is ``None`` (anchor-free head).

    Raises:
        ModelError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle asks for a global outside the allow-list.
        ModelLoadError: the file is not a (readable) YOLOv5 checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    ckpt = _torch_load(path)
    if not isinstance(ckpt, Mapping):
        raise _not_yolo(path, f"expected a dict, got {type(ckpt).__name__}")
    if ckpt.get("format") == FORMAT:
        return _info_from_own(path, ckpt)
    if "model" in ckpt or "ema" in ckpt:
        return _info_from_official(path, ckpt)
    raise _not_yolo(path, f"expected keys 'model'/'ema' or format '{FORMAT}', got {sorted(map(str, ckpt))[:8]}")


def build_from_checkpoint(info: Mapping[str, Any], path: PathLike = "<checkpoint>") -> YOLOv5:
    """Our :class:`YOLOv5` with the weights of ``info`` (from :func:`load_checkpoint`); every key must match."""
    try:
        model = YOLOv5(info["cfg"], names=info["names"])
    except (ConfigError, ModelError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelLoadError(f"{path}: cannot build the model from its yaml description: {exc}") from exc
    if info.get("fused"):
        model.fuse()
    load_weights_strictly(model, info, path)
    return model


def load_weights_strictly(model: nn.Module, info: Mapping[str, Any], path: PathLike = "<checkpoint>") -> None:
    """Load ``info["state_dict"]`` into ``model`` (built from the checkpoint's yaml): every key and shape must
    match, and the model's ``stride`` must equal ``info["stride"]`` when the checkpoint records one.

    Raises:
        ModelLoadError: a shape that does not fit, missing or unexpected keys, or other strides.
    """
    try:
        result = model.load_state_dict(info["state_dict"], strict=False)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: checkpoint weights do not fit the model built from its yaml: "
                             f"{str(exc).splitlines()[0]}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"{path}: checkpoint weights do not match the model built from its yaml: "
            f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})")
    stride = info.get("stride")
    if stride is not None and [float(s) for s in stride] != [float(s) for s in model.stride.tolist()]:
        raise ModelLoadError(f"{path}: strides: checkpoint has {list(stride)}, the built model has "
                             f"{model.stride.tolist()}")


def load_model(path: PathLike, fuse: bool = True) -> Tuple[YOLOv5, List[str]]:
    """Load a checkpoint into our model: ``(model in eval mode, class names)``.

    Args:
        path: official YOLOv5 ``.pt`` or an edge-detect checkpoint.
        fuse: fold batch norms into convolutions (for inference and export).

    Raises:
        ModelError / ModelLoadError / UnsafeCheckpointError: see :func:`load_checkpoint`.
    """
    info = load_checkpoint(path)
    if info["format"] == ULTRALYTICS_FORMAT:
        raise ModelLoadError(f"{path} is an ultralytics checkpoint (anchor-free YOLOv5u / YOLOv8 / YOLO11 head), "
                             "not a YOLOv5 one: export it with `edge-detect export --weights` (needs "
                             "pip install 'edge-detect[ultralytics]') and run the .onnx")
    try:
        model = build_from_checkpoint(info, path)
    except RuntimeError as exc:  # tensor shape mismatch in load_state_dict
        raise ModelLoadError(f"{path}: checkpoint weights do not fit the model: {str(exc).splitlines()[0]}") \
            from exc
    model.eval()
    if fuse:
        model.fuse()
    return model, list(model.names)


# --------------------------------------------------------------------------------------------------------------
# writing
def save_checkpoint(path: PathLike, model: YOLOv5, names: Optional[Sequence[str]] = None, **extra: Any) -> Path:
    """Save ``model`` in edge-detect's checkpoint format (readable with ``torch.load(weights_only=True)``).

    Args:
        path: output file (``.pt``); parent folders are created.
        model: our :class:`YOLOv5` (fused or not).
        names: class names (default ``model.names``).
        **extra: JSON-like metadata (numbers, strings, lists, dicts, tensors), e.g. ``epoch=10,
            metrics={"map50": 0.5}``; ``epoch`` and ``date`` are also stored at the top level.

    Returns:
        the path written.
    """
    path = Path(path)
    names = list(names if names is not None else model.names)
    if len(names) != model.nc:
        raise ModelError(f"save_checkpoint names: expected {model.nc} names, got {len(names)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cfg": dict(model.yaml, nc=model.nc),
        "names": names,
        "stride": model.stride.tolist(),
        "fused": bool(getattr(model, "fused", False)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "epoch": extra.get("epoch"),
        "date": extra.get("date"),
        "extra": extra,
    }
    torch.save(ckpt, path)
    return path
