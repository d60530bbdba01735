"""The backend protocol and the registry that picks a backend by name or file type.

A backend owns one loaded model. It exposes:

* ``metadata``: the :class:`~edge_detect.metadata.ModelMetadata` of the model (class names, layout...).
* ``input_spec``: an :class:`InputSpec` (name, shape with ``-1`` for dynamic axes, dtype, format).
* ``infer(batch)``: run the model on one preprocessed batch and return its outputs as NumPy arrays, in the
  order of the layout (``[pred]`` for ``"raw"``; ``[num_dets, boxes, scores, classes]`` for ``"nms"``).
  Backends release the GIL while running, so the pipeline can overlap stages.
* ``close()``: free everything (also a context manager).

The **host path** above is the default and what every built-in backend does. A backend may also offer a **device
path** (:class:`DeviceBackend`: ``input_spec.device`` not ``"cpu"``, plus ``preprocess_device`` and
``infer_device``): the batch is letterboxed on the device, inferred there and reduced to final boxes there, so only
the boxes cross back to the host; see :class:`DeviceBackend` for the exact contract.

Backends register themselves with :func:`register_backend`; :func:`load_backend` chooses one from an explicit
name or from the model file's suffix. Registration happens at import of the backend module, and the registry
knows where each built-in backend lives, so importing this module imports no heavy dependency.
"""
from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np

from edge_detect.config import check_options
from edge_detect.errors import BackendUnavailableError, ConfigError, ModelError
from edge_detect.metadata import ModelMetadata
from edge_detect.types import Detections, LetterboxInfo

__all__ = ["InputSpec", "Backend", "DeviceBatch", "DeviceBackend", "FinalBoxes", "register_backend", "load_backend", "available_backends", "backend_names",
           "BACKEND_MODULES"]


@dataclass(frozen=True)
class InputSpec:
    """What a backend's input tensor looks like.

    Attributes:
        name: input tensor name.
        shape: ``(B, C, H, W)`` for NCHW inputs or ``(B, H, W, C)`` for NHWC; ``-1`` marks a dynamic axis.
        dtype: NumPy dtype of the input (float32, float16 or uint8).
        format: one of :data:`edge_detect.metadata.INPUT_FORMATS`.
        device: where the backend wants its input: ``"cpu"`` (host NumPy batches, :meth:`Backend.infer`; every
            built-in backend) or a device such as ``"cuda:0"`` for a backend that also implements
            :class:`DeviceBackend` (see there).
    """

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    format: str = "float32_nchw_rgb"
    device: str = "cpu"

    @property
    def nhwc(self) -> bool:
        return self.format.endswith("nhwc_bgr")

    @property
    def hw(self) -> Tuple[int, int]:
        """``(h, w)``; ``-1`` where dynamic."""
        return (self.shape[1], self.shape[2]) if self.nhwc else (self.shape[2], self.shape[3])

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def dynamic(self) -> bool:
        return any(int(s) < 0 for s in self.shape)

    def conform(self, batch: np.ndarray, model: str) -> np.ndarray:
        """``batch`` checked against the static axes and cast to :attr:`dtype` (no copy when it already is).

        Args:
            batch: a preprocessed input batch, laid out like :attr:`shape`.
            model: the model's name, for the error message.

        Raises:
            ValueError: the rank or a static axis differs (the message gives expected vs actual).
        """
        want = self.shape
        if batch.ndim != len(want) or any(w > 0 and w != b for w, b in zip(want, batch.shape)):
            raise ValueError(f"{model} input '{self.name}': expected shape {want} (-1 = any), got {batch.shape}")
        return batch if batch.dtype == self.dtype else batch.astype(self.dtype)


@runtime_checkable
class Backend(Protocol):
    """Protocol every inference backend implements (see module doc)."""

    name: str
    metadata: ModelMetadata
    input_spec: InputSpec

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> "Backend":
        ...

    def __exit__(self, *exc: Any) -> None:
        ...


@dataclass
class DeviceBatch:
    """A preprocessed input batch that lives on a device (the device path; see :class:`DeviceBackend`).

    Made by :meth:`DeviceBackend.preprocess_device`, filled in by the :class:`~edge_detect.detector.Detector`
    (``nms``), passed unchanged through the pipeline's hand-over to :meth:`DeviceBackend.infer_device`. The pipeline
    never looks inside.

    Attributes:
        data: the backend's device tensor or buffer holding the batch, laid out as ``input_spec`` says
            (``(B, 3, H, W)`` or ``(B, H, W, 3)``, its dtype, at most ``input_spec.batch`` rows for a static batch);
            owned by the backend.
        device: the device it lives on (``"cuda:0"``).
        infos: one :class:`~edge_detect.types.LetterboxInfo` per real image, in order (rows beyond them are
            padding).
        nms: the detector's NMS settings for :meth:`DeviceBackend.infer_device`: ``conf_thres``, ``iou_thres``,
            ``classes``, ``agnostic``, ``multi_label``, ``max_det`` (the keywords of
            :func:`edge_detect.postprocess.non_max_suppression`).
    """

    data: Any
    device: str
    infos: List[LetterboxInfo]
    nms: Dict[str, Any] = field(default_factory=dict)


class FinalBoxes(list):
    """What :meth:`~edge_detect.detector.Detector.infer` returns on the device path: the list
    :meth:`DeviceBackend.infer_device` gave, one entry per real image (so postprocess only undoes the letterbox)."""


@runtime_checkable
class DeviceBackend(Protocol):
    """Optional device path of a backend, beside its host :meth:`Backend.infer` (which stays available).

    A backend implementing it sets ``input_spec.device`` to its device (``"cuda:0"``); the
    :class:`~edge_detect.detector.Detector` then takes this path, and the pipeline hands it each frame's
    ``device_image`` when the source set one (a handle to the picture already on the device), else the host image.

    Contract:

    * ``preprocess_device(images, input_hw, stride, auto)``: ``images`` is a list of host BGR ``uint8 (H, W, 3)``
      arrays and/or device handles (``Frame.device_image``, valid while the call runs); letterbox each to
      ``input_hw`` (``(h, w)``; with ``auto`` the minimum rectangle of the image's aspect ratio, padded to a
      multiple of ``stride``, as :func:`edge_detect.preprocess.letterbox` does, grey 114 padding) into one batch in
      the input format, on the device, and return a :class:`DeviceBatch` with one ``LetterboxInfo`` per image. The
      backend owns the memory and must not reuse a batch's buffer before ``infer_device`` of that batch returned:
      the pipeline may hold up to 2 prepared batches (one waiting in the hand-over, one inferring) plus
      ``num_requests`` in flight, so a pool of at least 3 (+ requests) buffers per input shape is needed. Runs on
      the pipeline's preprocess thread.
    * ``infer_device(batch)``: run the model on ``batch.data`` and apply NMS with ``batch.nms`` on the device;
      return, per real image (``len(batch.infos)`` entries, in order), either a host ``float32 (n, 6)`` array
      ``[x1, y1, x2, y2, score, class]`` in **letterbox pixels** of that image (sorted by descending score, at most
      ``nms["max_det"]`` rows), or :class:`~edge_detect.types.Detections` already in original-frame pixels. After it
      returns (or raises) the batch's buffer is the backend's again. Runs on the pipeline's infer thread (the only
      thread that touches the backend); may raise :class:`~edge_detect.errors.TransientBackendError`.
    """

    input_spec: InputSpec

    def preprocess_device(self, images: Sequence[Any], input_hw: Tuple[int, int], stride: int,
                          auto: bool) -> DeviceBatch:
        ...

    def infer_device(self, batch: DeviceBatch) -> Sequence[Union[np.ndarray, Detections]]:
        ...


# name -> (module path, file suffixes and/or URL schemes such as "triton://"). Modules register their class on import.
BACKEND_MODULES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "onnxruntime": ("edge_detect.backends.onnxruntime", (".onnx",)),
    "openvino": ("edge_detect.backends.openvino", (".xml",)),
    "tensorrt": ("edge_detect.backends.tensorrt", (".engine", ".plan", ".trt")),
    "torch": ("edge_detect.training.torch_backend", (".pt", ".pth")),
    "triton": ("edge_detect.backends.triton", ("grpc://", "triton://", "http://")),
}
_REGISTRY: Dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    """Class decorator: make a backend class loadable by ``name``."""

    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        _REGISTRY[name] = factory
        return factory

    return deco


def _factory(name: str) -> Callable[..., Backend]:
    if name not in BACKEND_MODULES and name not in _REGISTRY:
        raise BackendUnavailableError(
            f"unknown backend '{name}'; expected one of {sorted(set(BACKEND_MODULES) | set(_REGISTRY))}")
    if name not in _REGISTRY:
        importlib.import_module(BACKEND_MODULES[name][0])
    return _REGISTRY[name]


def _url_scheme(model: Union[str, os.PathLike]) -> Optional[str]:
    """``"triton://host/model"`` -> ``"triton://"``; ``None`` for a file path."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", str(model))
    return f"{m.group(1).lower()}://" if m else None


def backend_for_path(path: Union[str, os.PathLike]) -> str:
    """Backend name for a model file suffix (``.onnx`` -> onnxruntime, ``.engine`` -> tensorrt, ``.pt`` -> torch)
    or a model URL's scheme (an entry of :data:`BACKEND_MODULES` listing e.g. ``"triton://"``).

    Raises:
        ModelError: no backend for this suffix or scheme.
    """
    scheme = _url_scheme(path)
    if scheme is not None:
        for name, (_, keys) in BACKEND_MODULES.items():
            if scheme in keys:
                return name
        schemes = sorted(k for _, keys in BACKEND_MODULES.values() for k in keys if k.endswith("://"))
        raise ModelError(f"{path}: no backend for the URL scheme '{scheme}'; expected a model file or one of "
                         f"{schemes}")
    suffix = Path(path).suffix.lower()
    for name, (_, suffixes) in BACKEND_MODULES.items():
        if suffix in suffixes:
            return name
    known = sorted(s for _, sfx in BACKEND_MODULES.values() for s in sfx if not s.endswith("://"))
    raise ModelError(f"{path}: unknown model file type '{suffix}'; expected one of {known}")


def load_backend(model: Union[str, os.PathLike], backend: Optional[str] = None, **options: Any) -> Backend:
    """Open ``model`` with the named backend, or the one its suffix (or URL scheme) implies.

    Args:
        model: path to ``.onnx`` / ``.engine`` / ``.pt``, or a model URL (``scheme://...``) for a backend whose
            :data:`BACKEND_MODULES` entry lists that scheme (a remote inference server); URLs are passed to the
            backend as strings, unchecked.
        backend: ``"onnxruntime"``, ``"tensorrt"``, ``"torch"``, or ``None`` to choose by suffix.
        **options: backend-specific options (``providers``, ``threads``, ``device``, ``imgsz``...); an option
            the backend does not take raises ConfigError naming the valid ones.

    Raises:
        ModelError: the file is missing or of an unknown type.
        BackendUnavailableError / MissingDependencyError: the backend cannot run here.
    """
    if _url_scheme(model) is not None:
        name = backend or backend_for_path(model)
        factory = _factory(name)
        _check_backend_options(name, factory, options)
        return factory(str(model), **options)
    path = Path(model)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    name = backend or backend_for_path(path)
    factory = _factory(name)
    _check_backend_options(name, factory, options)
    return factory(path, **options)


def _check_backend_options(name: str, factory: Callable[..., Backend], options: Dict[str, Any]) -> None:
    """:func:`check_options`, plus a hint naming the backends that do take the options (``device`` on an
    ``.onnx`` -> ``--backend openvino``)."""
    try:
        check_options(f"backend '{name}'", factory, options)
    except ConfigError as exc:
        takers = [other for other in backend_names() if other != name and _takes(other, options)]
        if not takers:
            raise
        raise ConfigError(f"{exc}; {', '.join(repr(t) for t in takers)} take{'s' if len(takers) == 1 else ''} "
                          f"{'it' if len(options) == 1 else 'them'}: choose it with --backend / backend=") from exc


def _takes(name: str, options: Dict[str, Any]) -> bool:
    try:
        check_options(name, _factory(name), options)
    except (ConfigError, ImportError, BackendUnavailableError):
        return False
    return True


def backend_names() -> List[str]:
    """Every backend name known to the registry (built-in and registered), whether or not it runs here.

    The CLI's ``--backend`` choices; imports no backend.
    """
    return sorted(set(BACKEND_MODULES) | set(_REGISTRY))


def available_backends() -> List[str]:
    """Names of backends whose dependencies import on this machine."""
    out = []
    for name in BACKEND_MODULES:
        try:
            _factory(name)
        except ImportError:
            continue
        except BackendUnavailableError:
            continue
        out.append(name)
    return out
