"""Read a YOLOv5 ``.pt`` checkpoint into NumPy arrays without PyTorch.

A checkpoint written by ``torch.save`` (PyTorch >= 1.6) is a zip archive: ``<name>/data.pkl`` is a pickle of
the object tree, and every tensor's storage is a raw little-endian array in ``<name>/data/<key>``. The pickle
refers to those storages by key (``persistent_load``) and rebuilds tensors with ``torch._utils`` helpers; the
model itself (official YOLOv5: ``models.yolo.Model`` holding ``torch.nn`` layers) is pickled as classes plus
their ``__dict__``.

:func:`read_checkpoint` unpickles it with an allow-list, like the torch-side reader
(:mod:`edge_detect.training.checkpoint`), but maps everything to inert Python objects:

* storages -> NumPy arrays read from the archive (dtype from the storage class, bounds-checked views);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` -> ``numpy.ndarray`` copies;
* the YOLOv5 and ``torch.nn`` module classes -> :class:`PickledModule`, which only keeps the pickled state;
* ``OrderedDict``, ``set``, ``frozenset``, ``torch.Size``, numeric NumPy scalars.

Any other global (``os.system``, ``builtins.eval``...) raises :class:`~edge_detect.errors.UnsafeCheckpointError`
naming it before anything is called; nothing in the file runs. The legacy (pre-1.6, non-zip) format is refused.

The result has the same keys as :func:`edge_detect.training.checkpoint.load_checkpoint` (``cfg``, ``names``,
``nc``, ``stride``, ``anchors``, ``state_dict``...), with float32 NumPy arrays instead of tensors, for the
official YOLOv5 format and edge-detect's own (:func:`~edge_detect.training.checkpoint.save_checkpoint`).
Ultralytics checkpoints (YOLOv5u / YOLOv8 / YOLO11) are recognised and refused: they need the ``ultralytics``
extra.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from edge_detect.errors import ModelError, ModelLoadError, UnsafeCheckpointError
from edge_detect.paths import PathLike

__all__ = ["PickledModule", "read_checkpoint", "FORMAT_YOLOV5", "FORMAT_OWN"]

FORMAT_YOLOV5 = "yolov5"
FORMAT_OWN = "edge_detect.yolov5"  # edge_detect.training.checkpoint.FORMAT
_OWN_FORMAT_VERSION = 1

_STORAGE_DTYPES = {"FloatStorage": "f4", "HalfStorage": "f2", "DoubleStorage": "f8", "BFloat16Storage": "bf16",
                   "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
                   "ByteStorage": "u1", "BoolStorage": "?"}
_YOLO_CLASSES = {
    "models.yolo": ("Model", "DetectionModel", "Detect"),
    "models.common": ("Conv", "C3", "Bottleneck", "SPPF", "SPP", "Concat", "Focus", "BottleneckCSP", "DWConv",
                      "C3SPP", "C3Ghost", "GhostConv", "GhostBottleneck", "Contract", "Expand"),
}
_TORCH_NN_CLASSES = {"Conv2d", "BatchNorm2d", "SiLU", "ReLU", "LeakyReLU", "Hardswish", "Identity", "Sequential",
                     "ModuleList", "MaxPool2d", "Upsample", "Sigmoid"}


class PickledModule:
    """Inert stand-in for a pickled ``nn.Module`` (YOLOv5 or ``torch.nn`` class): keeps its state, runs nothing.

    Attributes:
        pickled_class: ``"module.Class"`` as named in the pickle.
        state: the pickled ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, plain attributes).
    """

    pickled_class = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state[0] if isinstance(state, tuple) else state or {})

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state", {})
        for group in ("_parameters", "_buffers", "_modules"):
            if name in (state.get(group) or {}):
                return state[group][name]
        if name in state:
            return state[name]
        raise AttributeError(name)

    def named_arrays(self, prefix: str = "") -> "collections.OrderedDict[str, np.ndarray]":
        """Parameters and buffers of this module and its children, keyed like a torch ``state_dict``."""
        out: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if isinstance(value, np.ndarray):
                    out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PickledModule):
                out.update(child.named_arrays(f"{prefix}{name}."))
        return out


_CLASSES: Dict[Tuple[str, str], type] = {}


def _module_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _CLASSES:
        _CLASSES[key] = type(name, (PickledModule,), {"pickled_class": f"{module}.{name}"})
    return _CLASSES[key]


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name, self.code = name, _STORAGE_DTYPES[name]


class _Dtype:
    """A ``torch.<dtype>`` global (newer pickles name dtypes in tensor metadata); carries only its name."""

    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor(storage: np.ndarray, offset: int, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` -> a NumPy copy, every index checked against the storage."""
    try:
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"tensor layout: expected integer size/stride/offset, got {size!r} {stride!r}") from exc
    if not isinstance(storage, np.ndarray) or len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise ModelLoadError(f"tensor layout: size {size}, stride {stride}, offset {offset} do not describe a tensor")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    if int(np.prod(size, dtype=np.float64)) > storage.size:  # only an expanded (stride 0) tensor is larger
        raise ModelLoadError(f"tensor layout: {size} has more elements than its storage ({storage.size})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise ModelLoadError(f"tensor layout: element {last} is outside its storage of {storage.size} elements")
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride],
                                           writeable=False)
    return np.array(view)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _numpy_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args[:1])
    if dtype.kind not in "biufc":
        raise UnsafeCheckpointError(f"refusing a numpy dtype of kind {dtype.kind!r} in the checkpoint (numbers only)")
    return dtype


def _numpy_scalar(dtype: Any, data: Any = b"") -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise UnsafeCheckpointError("refusing a numpy scalar that is not a number stored in its own bytes")
    return np.frombuffer(data, dtype)[0]


def _encode(text: str, encoding: str = "latin1") -> bytes:  # how protocol-2 pickles store bytes
    return str(text).encode(encoding)


_SAFE: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "dict"): dict,
    ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _encode,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar, ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
_TORCH_DTYPES = {"float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                 "float", "half", "double", "long", "int"}


def _find_class(module: str, name: str) -> Any:
    module = "builtins" if module == "__builtin__" else module
    if (module, name) in _SAFE:
        return _SAFE[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(name)
    if module == "torch" and name in _TORCH_DTYPES:
        return _Dtype(name)
    if name in _YOLO_CLASSES.get(module, ()) or (module.startswith("torch.nn.modules.") and name in _TORCH_NN_CLASSES):
        return _module_class(module, name)
    if module.split(".")[0] == "ultralytics":
        return _module_class(module, name)  # recognised, then refused by family (read_checkpoint)
    raise UnsafeCheckpointError(f"refusing to unpickle global '{module}.{name}': not on the allow-list of YOLOv5 "
                                "checkpoint classes (nothing was executed)")


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._order = archive, prefix, "<" if byteorder == "little" else ">"
        self._storages: Dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        return _find_class(module, name)

    def persistent_load(self, pid: Any) -> np.ndarray:  # noqa: D401 - pickle API
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ModelLoadError(f"unsupported storage reference in the checkpoint: {str(pid)[:80]}")
        kind, key = pid[1], str(pid[2])
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._prefix}/data/{key}")
            except KeyError as exc:
                raise ModelLoadError(f"storage {key!r} is missing from the checkpoint archive") from exc
            self._storages[key] = _storage_array(raw, kind.code, self._order)
        return self._storages[key]


def _storage_array(raw: bytes, code: str, order: str) -> np.ndarray:
    if code == "bf16":  # bfloat16: the high half of a float32
        half = np.frombuffer(raw, f"{order}u2")
        return (half.astype(np.uint32) << 16).view(np.float32)
    dtype = np.dtype(code if code in ("?", "i1", "u1") else f"{order}{code}")
    if len(raw) % dtype.itemsize:
        raise ModelLoadError(f"storage of {len(raw)} bytes is not a whole number of {dtype} elements")
    return np.frombuffer(raw, dtype)


def _unpickle(path: Path) -> Any:
    """The checkpoint's object tree (inert objects and NumPy arrays)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:1] == b"\x80":
            raise ModelLoadError(f"{path}: legacy PyTorch serialization (before 1.6, not a zip archive): reading it "
                                 f"needs PyTorch (pip install 'edge-detect[build]')") from exc
        shown = "an empty file" if not head else f"bytes {head!r}"
        raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: expected a PyTorch checkpoint (a zip archive), "
                             f"got {shown}") from exc
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: expected one <name>/data.pkl in the zip "
                                 f"archive, got {len(pkl)}")
        prefix = pkl[0].rsplit("/", 1)[0]
        names = set(archive.namelist())
        order = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
        try:
            return _Unpickler(archive.read(pkl[0]), archive, prefix, order).load()
        except UnsafeCheckpointError as exc:
            raise UnsafeCheckpointError(f"{path}: {exc}") from None
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, RecursionError) as exc:
            raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _float32(arrays: Mapping[str, np.ndarray]) -> "collections.OrderedDict[str, np.ndarray]":
    return collections.OrderedDict((k, v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items())


def _names_list(names: Any, nc: int) -> List[str]:
    if isinstance(names, Mapping):
        names = [names[k] for k in sorted(names, key=int)]
    return [str(n) for n in names] if names is not None else [f"class{i}" for i in range(nc)]


def _from_official(path: Path, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(model, PickledModule):
        raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: expected a pickled YOLOv5 model under 'ema' or "
                             f"'model', got {type(model).__name__}")
    if model.pickled_class.split(".")[0] == "ultralytics":
        raise ModelLoadError(f"{path} is an ultralytics checkpoint (YOLOv5u / YOLOv8 / YOLO11): exporting it needs "
                             "PyTorch and ultralytics (pip install 'edge-detect[build,ultralytics]')")
    cfg = model.state.get("yaml")
    if not isinstance(cfg, Mapping):
        raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: the pickled model has no yaml description")
    layers = model.state.get("_modules", {}).get("model")
    head = list(layers.state.get("_modules", {}).values())[-1] if isinstance(layers, PickledModule) else None
    nc = int(model.state.get("nc", cfg.get("nc", 0)))
    stride = model.state.get("stride")
    anchors = (head.state.get("_buffers") or {}).get("anchors") if isinstance(head, PickledModule) else None
    return {"format": FORMAT_YOLOV5, "cfg": dict(cfg, nc=nc), "names": _names_list(model.state.get("names"), nc),
            "nc": nc, "stride": [float(s) for s in np.asarray(stride).ravel()] if stride is not None else None,
            "anchors": np.asarray(anchors, np.float32).copy() if anchors is not None else None,
            "state_dict": _float32(model.named_arrays()), "fused": False, "epoch": ckpt.get("epoch"),
            "date": ckpt.get("date"), "extra": {}}


def _from_own(path: Path, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    if ckpt.get("format_version") != _OWN_FORMAT_VERSION:
        raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: edge-detect checkpoint format_version: expected "
                             f"{_OWN_FORMAT_VERSION}, got {ckpt.get('format_version')}")
    cfg, state = ckpt.get("cfg"), ckpt.get("state_dict")
    if not isinstance(cfg, Mapping) or not isinstance(state, Mapping):
        raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: edge-detect checkpoint lacks 'cfg' or 'state_dict'")
    nc = int(cfg.get("nc", 0))
    anchors = state.get(f"model.{len(cfg.get('backbone', [])) + len(cfg.get('head', [])) - 1}.anchors")
    return {"format": FORMAT_OWN, "cfg": dict(cfg), "names": _names_list(ckpt.get("names"), nc), "nc": nc,
            "stride": [float(s) for s in ckpt.get("stride") or []] or None,
            "anchors": np.asarray(anchors, np.float32).copy() if anchors is not None else None,
            "state_dict": _float32(state), "fused": bool(ckpt.get("fused", False)), "epoch": ckpt.get("epoch"),
            "date": ckpt.get("date"), "extra": dict(ckpt.get("extra") or {})}


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read an official YOLOv5 or edge-detect ``.pt`` without torch and without running any pickled code.

    Returns:
        dict with ``format`` (``"yolov5"`` or ``"edge_detect.yolov5"``), ``cfg`` (model yaml dict), ``names``,
        ``nc``, ``stride`` (list of float or ``None``), ``anchors`` (float32 ``(nl, na, 2)`` in grid units or
        ``None``), ``state_dict`` (name -> NumPy array; floating point ones float32), ``fused``, ``epoch``,
        ``date``, ``extra``.

    Raises:
        ModelError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle names a global outside the allow-list.
        ModelLoadError: not a (readable, zip-format) YOLOv5 checkpoint, or an ultralytics one.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    ckpt = _unpickle(path)
    if not isinstance(ckpt, Mapping):
        raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: expected a dict, got {type(ckpt).__name__}")
    if ckpt.get("format") == FORMAT_OWN:
        return _from_own(path, ckpt)
    if "model" in ckpt or "ema" in ckpt:
        return _from_official(path, ckpt)
    raise ModelLoadError(f"{path} is not a YOLOv5 checkpoint: expected keys 'model'/'ema' or format "
                         f"'{FORMAT_OWN}', got {sorted(map(str, ckpt))[:8]}")

