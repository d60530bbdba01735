"""The Detector: preprocess -> backend -> postprocess, callable on one frame or a list of frames.

Example::

    from edge_detect import Detector

    with Detector("yolov5n.onnx", conf=0.25) as det:
        dets = det(cv2.imread("bus.jpg"))            # Detections, xyxy in original pixels
        batch = det([img1, img2, img3])              # list[Detections]

The three stages are public so a pipeline can time and overlap them::

    batch, infos = det.preprocess(images)
    outputs = det.infer(batch)
    dets = det.postprocess(outputs, infos)

:class:`DetectorLike` is the whole interface the pipeline uses (the stages, the batch rule, preallocated input
buffers, asynchronous requests); :class:`Detector` implements it, and :func:`as_detector_like` wraps any object that
has only ``names`` and the three stages (test doubles, wrappers) with documented defaults, so nothing in
``stream/`` probes a detector for optional methods.
"""
from __future__ import annotations

import logging
import os
from typing import Any, List, Optional, Protocol, Sequence, Tuple, Union, overload, runtime_checkable

import numpy as np

from edge_detect.backends.base import Backend, DeviceBackend, DeviceBatch, FinalBoxes
from edge_detect.config import ImageSize, check_thresholds, parse_imgsz
from edge_detect.models import open_model
from edge_detect.errors import ConfigError, DataError
from edge_detect.metadata import ModelMetadata
from edge_detect.postprocess import postprocess as _postprocess
from edge_detect.preprocess import check_imgsz, letterbox_shape
from edge_detect.preprocess import preprocess as _preprocess
from edge_detect.types import Detections, LetterboxInfo

__all__ = ["Detector", "DetectorLike", "InferHandle", "as_detector_like"]

LOGGER = logging.getLogger(__name__)

DYNAMIC_BATCH = 8  # chunk size for dynamic-batch models whose metadata does not give a larger batch



@runtime_checkable
class InferHandle(Protocol):
    """An inference in progress: ``wait()`` returns its outputs (valid until ``release()``); ``release()`` frees
    the request (always called once, also when the outputs are not used)."""

    def wait(self) -> Any:
        ...

    def release(self) -> None:
        ...


@runtime_checkable
class DetectorLike(Protocol):
    """What :class:`~edge_detect.stream.pipeline.Pipeline` needs of a detector (:class:`Detector` implements it).

    Attributes:
        names: class names, index = class id.
        static_batch: ``> 0``: every backend call takes exactly this many rows (the pipeline gathers that many;
            partial batches are padded by ``preprocess``); ``0``: any number.
        same_shape_batches: a batch may only hold images of one size (minimum-rectangle letterboxing), so each
            frame is letterboxed exactly as it would be alone.
        max_in_flight: batches that may infer at once (asynchronous requests; 1 = synchronous).
        input_device: where ``preprocess`` puts the batch: ``"cpu"`` (host NumPy) or a device such as
            ``"cuda:0"`` (see :class:`~edge_detect.backends.base.DeviceBatch`); the pipeline then hands frames'
            ``device_image`` (when set) instead of their host image.
        input_hw: the model's input ``(h, w)``, for which region inference plans its crops (``None``: unknown;
            frames are then inferred whole).
        batch_size: the most rows one call takes (a static batch's size; for a dynamic batch its usual most; ``0``:
            unknown, the batch the pipeline gathers).
    """

    names: Sequence[str]
    static_batch: int
    same_shape_batches: bool
    max_in_flight: int
    input_device: str
    input_hw: Optional[Tuple[int, int]]
    batch_size: int

    def buffer_hw(self, image_hw: Tuple[int, int]) -> Optional[Tuple[int, int]]:
        """The network input ``(h, w)`` of a preallocated buffer for images of ``image_hw``, or ``None`` when
        ``preprocess`` allocates its own (no ring of buffers)."""
        ...

    def input_buffer(self, hw: Tuple[int, int], batch: int) -> Any:
        """A preallocated input batch of ``batch`` rows at network size ``hw`` for ``preprocess(out=...)``."""
        ...

    def preprocess(self, images: Sequence[Any], out: Any = None) -> Tuple[Any, List[Any]]:
        """``(batch, infos)``: the images letterboxed into one input batch (into ``out`` when given) and one info
        per image (for ``postprocess``)."""
        ...

    def infer(self, batch: Any) -> Any:
        """The backend outputs of one batch (raises :class:`~edge_detect.errors.TransientBackendError` for a
        failure that should pass)."""
        ...

    def infer_async(self, batch: Any) -> InferHandle:
        """Start inference of one batch; the batch must stay unchanged until the handle's ``wait()`` returned."""
        ...

    def postprocess(self, outputs: Any, infos: Sequence[Any]) -> List[Detections]:
        """One :class:`~edge_detect.types.Detections` per info (original-frame pixels)."""
        ...


def _to_original(rows: np.ndarray, info: LetterboxInfo) -> Detections:
    """``float32 (n, 6)`` ``[x1, y1, x2, y2, score, class]`` in letterbox pixels -> Detections in original pixels."""
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections(info.to_original(rows[:, :4]), rows[:, 4], rows[:, 5].round().astype(np.int32))


class _Finished:
    """The handle of a synchronous inference (same ``wait`` / ``release`` as an async one)."""

    def __init__(self, outputs: List[np.ndarray]) -> None:
        self._outputs = outputs

    def wait(self) -> List[np.ndarray]:
        return self._outputs

    def release(self) -> None:
        pass


class Detector:
    """Object detector over any backend.

    Args:
        model: path to a model file (``.onnx``, ``.engine``, ``.pt``) or an already loaded backend.
        conf: confidence threshold (objectness and score ``> conf``).
        iou: NMS IoU threshold.
        classes: keep only these class ids (``None`` = all).
        max_det: most detections per image.
        agnostic: class-agnostic NMS.
        multi_label: one detection per class above ``conf`` for each box.
        backend: backend name (``"onnxruntime"``, ``"tensorrt"``, ``"torch"``); ``None`` = by file suffix.
        imgsz: input size ``(h, w)`` or an int; only for models with dynamic height/width (for static
            models it must equal the model's input size). Default: the model's nominal size.
        auto: minimum-rectangle letterbox (pad to a multiple of the stride only). Default (``None``): on for
            dynamic-shape ONNX / engine models, off for static ones and for ``.pt`` checkpoints (which letterbox
            to the same square as their static ONNX export, so both give the same detections). ``False``
            forces a square letterbox (accuracy runs).
        **backend_options: passed to :func:`edge_detect.models.open_model`: ``rebuild_on_mismatch`` (TensorRT
            engines) and the backend's own options (e.g. ``providers``, ``threads`` for ONNX Runtime).

    Raises:
        ModelError / ModelLoadError: missing or invalid model file.
        ConfigError: invalid ``imgsz`` or thresholds.
    """

    def __init__(self, model: Union[str, os.PathLike, Backend], conf: float = 0.25, iou: float = 0.45,
                 classes: Optional[Sequence[int]] = None, max_det: int = 1000, agnostic: bool = False,
                 multi_label: bool = False, backend: Optional[str] = None, imgsz: Optional[ImageSize] = None,
                 auto: Optional[bool] = None, force_imgsz: bool = False, **backend_options: Any) -> None:
        check_thresholds(conf, iou, max_det)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.agnostic, self.multi_label = bool(agnostic), bool(multi_label)
        self.force_imgsz = bool(force_imgsz)
        if isinstance(model, (str, os.PathLike)):
            self.backend: Backend = open_model(model, backend, **backend_options)
        else:
            self.backend = model
        spec = self.backend.input_spec
        self.dynamic_hw = min(spec.hw) < 0
        self.input_hw = self._resolve_hw(imgsz)
        default_auto = getattr(self.backend, "auto_letterbox", None)  # a backend may set the default rule
        self.auto = (self.dynamic_hw if default_auto is None else bool(default_auto)) if auto is None else bool(auto)
        self._validate_classes()

    # --- configuration -------------------------------------------------------------------------------------

    def _resolve_hw(self, imgsz: Optional[ImageSize]) -> Tuple[int, int]:
        spec, meta = self.backend.input_spec, self.backend.metadata
        if not self.dynamic_hw:
            hw = (int(spec.hw[0]), int(spec.hw[1]))
            given = None if imgsz is None else parse_imgsz(imgsz)
            if given is not None and given != hw:
                raise ConfigError(f"imgsz: this model has a static input size {hw[0]}x{hw[1]}, got "
                                  f"{given[0]}x{given[1]}; export a dynamic model to change it")
            return hw
        return check_imgsz(parse_imgsz(imgsz if imgsz is not None else meta.imgsz), meta.stride, self.force_imgsz)

    def _validate_classes(self) -> None:
        nc = self.metadata.nc
        if self.classes is not None and nc and any(not 0 <= c < nc for c in self.classes):
            raise ConfigError(f"classes: expected ids in [0, {nc - 1}], got {self.classes}")

    @property
    def metadata(self) -> ModelMetadata:
        """The model's :class:`ModelMetadata`."""
        return self.backend.metadata

    @property
    def names(self) -> Tuple[str, ...]:
        """Class names, index = class id."""
        return self.metadata.names

    @property
    def static_batch(self) -> int:
        """The model's static batch size, or 0 for a dynamic batch (:class:`DetectorLike`)."""
        return max(int(self.backend.input_spec.batch), 0)

    @property
    def same_shape_batches(self) -> bool:
        """Minimum-rectangle letterboxing: a batch holds images of one size (:class:`DetectorLike`)."""
        return self.dynamic_hw and self.auto

    @property
    def input_device(self) -> str:
        """Where the input batch lives: the backend's ``input_spec.device`` (``"cpu"`` for the host path)."""
        return self.backend.input_spec.device

    @property
    def device_path(self) -> bool:
        """Whether the backend takes the device path (:class:`~edge_detect.backends.base.DeviceBackend` with a
        non-``cpu`` ``input_spec.device``): preprocess, inference and NMS on the device, only boxes come back."""
        return self.input_device != "cpu" and isinstance(self.backend, DeviceBackend)

    def buffer_hw(self, image_hw: Tuple[int, int]) -> Optional[Tuple[int, int]]:
        """:meth:`target_hw` on the host path; ``None`` (no preallocated host buffers) on the device path."""
        return None if self.device_path else self.target_hw(image_hw)

    def _nms_settings(self, **overrides: Any) -> dict:
        nms = dict(conf_thres=self.conf, iou_thres=self.iou, classes=self.classes, agnostic=self.agnostic,
                   multi_label=self.multi_label, max_det=self.max_det)
        nms.update(overrides)
        return nms

    @property
    def batch_size(self) -> int:
        """Images per inference call: the static batch, or for dynamic batch the metadata's (at least 1)."""
        b = int(self.backend.input_spec.batch)
        if b > 0:
            return b
        return max(int(self.metadata.batch), DYNAMIC_BATCH)

    # --- stages ----------------------------------------------------------------------------------------------

    def target_hw(self, image_hw: Tuple[int, int], auto: Optional[bool] = None) -> Tuple[int, int]:
        """The network input ``(h, w)`` an image of ``image_hw`` is letterboxed to (minimum rectangle for dynamic
        models with ``auto``, else :attr:`input_hw`)."""
        if not (self.dynamic_hw and (self.auto if auto is None else bool(auto))):
            return self.input_hw
        _, (uw, uh), (dw, dh) = letterbox_shape(tuple(image_hw), self.input_hw, True, True, self.metadata.stride)
        return uh + int(round(2 * dh)), uw + int(round(2 * dw))

    def input_buffer(self, hw: Optional[Tuple[int, int]] = None, batch: Optional[int] = None) -> np.ndarray:
        """A zeroed input batch in the backend's format for :meth:`preprocess` ``(out=...)``.

        Args:
            hw: network input ``(h, w)`` (default :attr:`input_hw`; see :meth:`target_hw`).
            batch: rows (default: the static batch, else 1).

        Returns:
            ``uint8 (B, h, w, 3)`` for ``uint8_nhwc_bgr`` inputs, else ``(B, 3, h, w)`` of the input dtype.
        """
        spec = self.backend.input_spec
        h, w = hw or self.input_hw
        b = batch or (spec.batch if spec.batch > 0 else 1)
        if spec.format == "uint8_nhwc_bgr":
            return np.zeros((b, h, w, 3), np.uint8)
        return np.zeros((b, 3, h, w), spec.dtype if spec.dtype != np.uint8 else np.float32)

    def preprocess(self, images: Union[np.ndarray, Sequence[np.ndarray]], auto: Optional[bool] = None,
                   out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[LetterboxInfo]]:
        """Letterbox and pack images for this model.

        Args:
            images: one BGR ``uint8 (H, W, 3)`` image or a list (at most :attr:`batch_size`; a static batch
                larger than the list is padded with grey images).
            auto: override the detector's minimum-rectangle setting (ignored for static models).
            out: a preallocated batch from :meth:`input_buffer` (at the :meth:`target_hw` of the images): the
                images are letterboxed straight into it (no intermediate copies) and it is returned. The caller
                must not reuse it while an inference still reads it.

        Returns:
            ``(batch, infos)``: the input batch in the model's format and one :class:`LetterboxInfo` per
            real image. On the device path (:attr:`device_path`) ``batch`` is the backend's
            :class:`~edge_detect.backends.base.DeviceBatch` (``images`` may then also hold device handles) and
            ``out`` is ignored.
        """
        spec = self.backend.input_spec
        images = [images] if isinstance(images, np.ndarray) else list(images)
        use_auto = self.dynamic_hw and (self.auto if auto is None else bool(auto))
        if self.device_path:  # letterboxed on the device (DeviceBackend contract); nothing on the host
            batch = self.backend.preprocess_device(images, self.input_hw, self.metadata.stride, use_auto)
            batch.nms = self._nms_settings()
            return batch, batch.infos
        dtype = spec.dtype if spec.dtype != np.uint8 else np.float32
        if out is not None:
            if spec.batch > 0 and out.shape[0] != spec.batch:
                raise ConfigError(f"preprocess out: this model takes batches of {spec.batch}, got a buffer of "
                                  f"{out.shape[0]}")
            return _preprocess(images, self.input_hw, stride=self.metadata.stride, auto=use_auto,
                               fmt=spec.format, dtype=dtype, out=out)
        batch, infos = _preprocess(images, self.input_hw, stride=self.metadata.stride, auto=use_auto,
                                   fmt=spec.format, dtype=dtype)
        if spec.batch > 0 and len(images) < spec.batch:
            pad = np.full((spec.batch - len(images), *batch.shape[1:]), batch.dtype.type(0), batch.dtype)
            batch = np.concatenate([batch, pad])
        elif spec.batch > 0 and len(images) > spec.batch:
            raise ConfigError(f"preprocess: this model takes at most {spec.batch} images per batch, got "
                              f"{len(images)}; call the detector on the list to chunk it")
        return batch, infos

    def infer(self, batch: Union[np.ndarray, DeviceBatch]) -> List[Any]:
        """Run the backend on a preprocessed batch; returns its outputs in layout order (host path), or the final
        boxes per image (:class:`~edge_detect.backends.base.FinalBoxes`, device path)."""
        if isinstance(batch, DeviceBatch):
            return FinalBoxes(self.backend.infer_device(batch))  # type: ignore[attr-defined]
        return self.backend.infer(batch)

    @property
    def max_in_flight(self) -> int:
        """Batches that can be inferring at once: the backend's async requests (``num_requests``), else 1."""
        if not callable(getattr(self.backend, "infer_async", None)):
            return 1
        return max(1, int(getattr(self.backend, "num_requests", 1)))

    def infer_async(self, batch: np.ndarray) -> Any:
        """Start inference and return a handle: ``handle.wait()`` gives the outputs (valid until
        ``handle.release()``). Backends without async requests run synchronously and return a finished handle.
        ``batch`` must stay unchanged until ``wait()`` returned."""
        start = getattr(self.backend, "infer_async", None)
        if callable(start) and not isinstance(batch, DeviceBatch):
            return start(batch)
        return _Finished(self.infer(batch))

    def postprocess(self, outputs: Sequence[np.ndarray], infos: Sequence[LetterboxInfo],
                    **overrides: Any) -> List[Detections]:
        """NMS (or in-graph NMS outputs) and letterbox undo -> one :class:`Detections` per info.

        Args:
            outputs: backend outputs.
            infos: letterbox infos of the real images in the batch.
            **overrides: ``conf_thres``, ``iou_thres``, ``classes``, ``agnostic``, ``multi_label``,
                ``max_det`` to use instead of the detector's settings for this call.
        """
        if isinstance(outputs, FinalBoxes):  # device path: final boxes in letterbox pixels, or Detections
            return [o if isinstance(o, Detections) else _to_original(o, info) for o, info in zip(outputs, infos)]
        return _postprocess(outputs, infos, self.metadata.output_layout, head=self.metadata.head,
                            **self._nms_settings(**overrides))

    # --- calling ---------------------------------------------------------------------------------------------

    @overload
    def __call__(self, images: np.ndarray) -> Detections: ...

    @overload
    def __call__(self, images: Sequence[np.ndarray]) -> List[Detections]: ...

    def __call__(self, images: Union[np.ndarray, Sequence[np.ndarray]]) -> Union[Detections, List[Detections]]:
        """Detect objects.

        Args:
            images: one BGR ``uint8 (H, W, 3)`` image (grayscale / BGRA accepted), or a list of them.

        Returns:
            :class:`Detections` (boxes in that image's pixels) for one image, or a list for a list, in the
            same order. Lists are run in chunks of :attr:`batch_size`.
        """
        if isinstance(images, np.ndarray) or images is None:
            return self.detect_batch([images])[0]  # None: to_bgr says what was expected
        try:
            images = list(images)
        except TypeError:
            raise DataError(f"images: expected a numpy uint8 array (H, W, 3) or a list of them, got "
                            f"{type(images).__name__}") from None
        out: List[Detections] = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self.detect_batch(images[start:start + self.batch_size]))
        return out

    def detect_batch(self, images: Sequence[np.ndarray], auto: Optional[bool] = None,
                     **overrides: Any) -> List[Detections]:
        """One preprocess -> infer -> postprocess round on at most :attr:`batch_size` images (``overrides``: NMS
        settings for this call, as for :meth:`postprocess`; on the device path they go to the backend's NMS)."""
        batch, infos = self.preprocess(images, auto=auto)
        if isinstance(batch, DeviceBatch):  # NMS runs in infer_device: the overrides must reach it
            batch.nms = self._nms_settings(**overrides)
        return self.postprocess(self.infer(batch), infos, **overrides)

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Detector({self.backend!r}, input_hw={self.input_hw}, conf={self.conf}, iou={self.iou}, "
                f"max_det={self.max_det})")


@runtime_checkable
class _Stages(Protocol):
    names: Sequence[str]

    def preprocess(self, images: Sequence[Any]) -> Tuple[Any, List[Any]]: ...

    def infer(self, batch: Any) -> Any: ...

    def postprocess(self, outputs: Any, infos: Sequence[Any]) -> List[Detections]: ...


@runtime_checkable
class _Buffers(Protocol):
    def target_hw(self, image_hw: Tuple[int, int]) -> Tuple[int, int]: ...

    def input_buffer(self, hw: Tuple[int, int], batch: int) -> Any: ...


@runtime_checkable
class _Async(Protocol):
    max_in_flight: int

    def infer_async(self, batch: Any) -> InferHandle: ...


@runtime_checkable
class _InputSize(Protocol):
    input_hw: Any


@runtime_checkable
class _Rows(Protocol):
    batch_size: int


@runtime_checkable
class _ShapeRule(Protocol):
    dynamic_hw: bool
    auto: bool


class _StagesAdapter:
    """:class:`DetectorLike` over an object with only ``names`` and the three stages (see :func:`as_detector_like`):
    no static batch; ``input_hw`` and ``batch_size`` when it has them (else ``None`` and 0); ``target_hw`` +
    ``input_buffer`` when it has both (a ring of buffers, ``preprocess(out=...)``), else none; ``max_in_flight`` + ``infer_async`` when it has
    both, else synchronous; one image size per batch when its ``dynamic_hw`` and ``auto`` are both true; host
    input."""

    static_batch = 0
    input_device = "cpu"

    def __init__(self, inner: _Stages) -> None:
        self.inner = inner
        self.names = tuple(inner.names or ())
        self._buffers = isinstance(inner, _Buffers)
        self._async = isinstance(inner, _Async) and isinstance(inner.max_in_flight, int)
        self.max_in_flight = max(1, int(inner.max_in_flight)) if self._async else 1  # type: ignore[union-attr]
        self.same_shape_batches = isinstance(inner, _ShapeRule) and bool(inner.dynamic_hw and inner.auto)
        hw = inner.input_hw if isinstance(inner, _InputSize) else None  # region inference plans for it
        self.input_hw = (int(hw[0]), int(hw[1])) if isinstance(hw, (tuple, list)) and len(hw) == 2 else None
        self.batch_size = int(inner.batch_size) if isinstance(inner, _Rows) else 0

    def buffer_hw(self, image_hw: Tuple[int, int]) -> Optional[Tuple[int, int]]:
        return tuple(self.inner.target_hw(image_hw)) if self._buffers else None  # type: ignore[union-attr,return-value]

    def input_buffer(self, hw: Tuple[int, int], batch: int) -> Any:
        return self.inner.input_buffer(hw, batch)  # type: ignore[union-attr]

    def preprocess(self, images: Sequence[Any], out: Any = None) -> Tuple[Any, List[Any]]:
        if out is None:
            return self.inner.preprocess(images)
        return self.inner.preprocess(images, out=out)  # type: ignore[call-arg]

    def infer(self, batch: Any) -> Any:
        return self.inner.infer(batch)

    def infer_async(self, batch: Any) -> InferHandle:
        if self._async:
            return self.inner.infer_async(batch)  # type: ignore[union-attr]
        return _Finished(self.inner.infer(batch))

    def postprocess(self, outputs: Any, infos: Sequence[Any]) -> List[Detections]:
        return self.inner.postprocess(outputs, infos)


def as_detector_like(detector: Any) -> DetectorLike:
    """``detector`` itself when it implements :class:`DetectorLike` (a :class:`Detector`), else an adapter over an
    object with ``names``, ``preprocess(images)``, ``infer(batch)`` and ``postprocess(outputs, infos)`` that fills
    the rest with the defaults documented on it (its optional ``target_hw``/``input_buffer``, ``max_in_flight``/
    ``infer_async`` and ``dynamic_hw``/``auto`` are used when present).

    Raises:
        ConfigError: not a detector (no ``names`` or a missing stage).
    """
    if isinstance(detector, DetectorLike):
        return detector
    if isinstance(detector, _Stages):
        return _StagesAdapter(detector)  # type: ignore[return-value]
    raise ConfigError(f"detector: expected an object with names, preprocess(images), infer(batch) and "
                      f"postprocess(outputs, infos) (e.g. edge_detect.Detector), got {detector!r}")
