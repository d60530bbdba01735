"""PyTorch backend: run a YOLOv5 ``.pt`` checkpoint with the build side's model (for parity and GPU checks), or
an ultralytics YOLOv5u / YOLOv8 / YOLO11 detection checkpoint with the ``ultralytics`` package (extra
``ultralytics``; see :mod:`edge_detect.training.ultralytics_export`).

torch and :mod:`edge_detect.training` are imported only when a backend is constructed, so importing this module
keeps the runtime torch-free. The checkpoint is read through the restricted unpickler of
:mod:`edge_detect.training.checkpoint` (no pickled code runs).

Input: float32 ``(B, 3, H, W)`` RGB in ``[0, 1]`` (letterboxed), ``H`` and ``W`` multiples of the model stride
(any batch and size: the shape is dynamic). Output: ``[pred]`` with ``pred`` float32 ``(B, N, 5 + nc)`` in the
``"raw"`` layout (``cx, cy, w, h`` in input pixels, objectness, class probabilities); for ultralytics checkpoints
``(B, 4 + nc, N)`` (``cx, cy, w, h``, class scores) and ``metadata.head == "anchor_free"``.

Device path (:class:`~edge_detect.backends.base.DeviceBackend`): on a CUDA device (or with ``device_path=True``,
also on the CPU, which runs the same tensor code) ``input_spec.device`` names the device and the
:class:`~edge_detect.detector.Detector` hands frames to :meth:`TorchBackend.preprocess_device` (upload once,
letterbox on the device) and :meth:`TorchBackend.infer_device` (CUDA graph or eager forward, NMS on the device,
only the kept boxes come back): :class:`edge_detect.training.device_pipeline.DevicePipeline`, one per backend.
:meth:`TorchBackend.infer` (host batches) stays available on both paths.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.config import parse_imgsz
from edge_detect.errors import BackendUnavailableError, ConfigError, DataError
from edge_detect.metadata import ModelMetadata
from edge_detect.backends.base import DeviceBatch, InputSpec, register_backend

__all__ = ["TorchBackend"]

LOGGER = logging.getLogger(__name__)


@register_backend("torch")
class TorchBackend:
    """A YOLOv5 checkpoint run by PyTorch.

    Args:
        path: official YOLOv5 or edge-detect ``.pt`` checkpoint.
        device: ``"cpu"`` or a CUDA device such as ``"cuda:0"``.
        imgsz: nominal ``(h, w)`` (or one side) recorded in :attr:`metadata` (default 640x640).
        threads: CPU threads for torch (``torch.set_num_threads``); ``None`` keeps torch's default.
        fuse: fold batch norms into convolutions (default True).
        half: run in float16 (CUDA only); inputs are still float32 and outputs float32.
        tf32: let FP32 convolutions and matmuls on CUDA use TensorFloat-32 tensor cores (Ampere and later).
            Default ``False``: the backend sets ``torch.backends.cudnn.allow_tf32`` and
            ``torch.backends.cuda.matmul.allow_tf32`` to ``False`` explicitly (torch's own default lets cuDNN
            use TF32, which moved raw boxes by up to 1.9 px against the CPU on an H200). These are process-wide
            torch settings: the backend sets them again before each inference, so the last backend to run wins.
        device_path: take the device path (module doc): ``None`` (default) = on for a CUDA device, off on the CPU;
            ``True`` on the CPU runs the device path's tensor code there (tests, parity); ``False`` on CUDA keeps
            host batches (the letterbox on the CPU, the raw output copied back, NMS on the CPU).
        graphs: on the device path, capture one CUDA graph per input shape (CUDA only; ``False``: eager).

    Attributes:
        tf32: whether TF32 is in use (``False`` on CPU and in FP16).
        numerics: ``"fp32"``, ``"fp32+tf32"`` or ``"fp16"``, for summaries and bench reports.
        input_spec: ``device`` is ``"cpu"`` on the host path, else the device path's device (``"cuda:0"``, or
            ``"cpu:0"`` for the device path on the CPU).

    Raises:
        MissingDependencyError: torch is not installed.
        BackendUnavailableError: the requested CUDA device is not available.
        ConfigError: ``tf32`` together with ``half`` (TF32 is an FP32 mode).
        ModelError / ModelLoadError / UnsafeCheckpointError: the checkpoint cannot be loaded.
    """

    name = "torch"
    #: letterbox default for the Detector: a checkpoint behaves like its static ONNX export (a square at
    #: ``imgsz``), so ``.pt`` and ``.onnx`` give the same detections; ``Detector(auto=True)`` asks for the
    #: minimum rectangle
    auto_letterbox = False

    def __init__(self, path: Union[str, os.PathLike], device: str = "cpu",
                 imgsz: Optional[Union[int, Sequence[int]]] = None, threads: Optional[int] = None,
                 fuse: bool = True, half: bool = False, tf32: bool = False, device_path: Optional[bool] = None,
                 graphs: bool = True) -> None:
        torch = require("torch", "build")
        from edge_detect.training.checkpoint import checkpoint_family, load_model
        from edge_detect.weights import sha256_file

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.device = self._device(torch, device)
        if half and self.device.type != "cuda":
            raise BackendUnavailableError(f"torch backend: half precision needs a CUDA device, got '{device}'")
        if tf32 and half:
            raise ConfigError("torch backend: tf32 applies to FP32 inference; expected tf32=False with half=True")
        if tf32 and self.device.type != "cuda":
            raise BackendUnavailableError(f"torch backend: tf32 needs a CUDA device, got '{device}'")
        self.tf32 = bool(tf32)
        self.numerics = "fp16" if half else "fp32+tf32" if tf32 else "fp32"
        self.apply_numerics()
        self.path = Path(path)
        head = "yolov5"
        if self.path.is_file() and checkpoint_family(self.path) == "ultralytics":
            from edge_detect.training.checkpoint import load_checkpoint
            from edge_detect.training.ultralytics_export import build_model

            info = load_checkpoint(self.path)
            model, names, head = build_model(info, self.path), list(info["names"]), "anchor_free"
            if fuse:
                model = model.fuse(verbose=False)
        else:
            model, names = load_model(self.path, fuse=fuse)
        self._dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, self._dtype).eval()
        stride = int(model.stride.max())
        self.metadata = ModelMetadata(
            names=names, imgsz=self._imgsz(imgsz), stride=stride, batch=1, dynamic=True,
            output_layout="raw", head=head, input_format="float32_nchw_rgb",
            precision="fp16" if half else "fp32",
            source_sha256=sha256_file(self.path), source_path=str(self.path.resolve()),
            versions={"torch": torch.__version__})
        on_device = self.device.type == "cuda" if device_path is None else bool(device_path)
        self._graphs, self._device_pipeline = bool(graphs), None
        self.input_spec = InputSpec(name="images", shape=(-1, 3, -1, -1), dtype=np.dtype(np.float32),
                                    format="float32_nchw_rgb",
                                    device=self._device_name() if on_device else "cpu")

    def _device_name(self) -> str:
        """``"cuda:N"`` / ``"cpu:0"``: the device path's device, always with its index (``"cpu"`` means host
        batches to the Detector)."""
        index = self.device.index
        if index is None and self.device.type == "cuda":
            index = self._torch.cuda.current_device()
        return f"{self.device.type}:{index or 0}"

    @staticmethod
    def _imgsz(imgsz: Optional[Union[int, Sequence[int]]]) -> "tuple[int, int]":
        """Nominal ``(h, w)``: default 640x640, one side means a square."""
        return (640, 640) if imgsz is None else parse_imgsz(imgsz)

    @staticmethod
    def _device(torch: Any, device: str) -> Any:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise BackendUnavailableError(f"torch backend: invalid device '{device}': {exc}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"torch backend: device '{device}' requested but CUDA is not available")
        if dev.type not in ("cpu", "cuda"):
            raise BackendUnavailableError(f"torch backend: expected device 'cpu' or 'cuda[:N]', got '{device}'")
        return dev

    @property
    def dtype(self) -> Any:
        """The torch dtype the model computes in (``torch.float16`` with ``half``, else ``torch.float32``)."""
        return self._dtype

    def apply_numerics(self) -> None:
        """Set torch's process-wide TF32 switches to :attr:`tf32` (CUDA only; nothing to set on the CPU)."""
        if self.device.type == "cuda":
            self._torch.backends.cuda.matmul.allow_tf32 = self.tf32
            self._torch.backends.cudnn.allow_tf32 = self.tf32

    def _check(self, batch: np.ndarray) -> None:
        stride = self.metadata.stride
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1] != 3:
            raise DataError(f"torch backend input: expected an ndarray (B, 3, H, W), got "
                            f"{getattr(batch, 'shape', type(batch).__name__)}")
        if batch.shape[2] % stride or batch.shape[3] % stride:
            raise DataError(f"torch backend input: expected H and W multiples of {stride}, got "
                            f"{batch.shape[2]}x{batch.shape[3]}")

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """``batch`` float ``(B, 3, H, W)`` -> ``[pred]`` float32, raw layout (shape per ``metadata.head``)."""
        self._check(batch)
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self._dtype)
        self.apply_numerics()
        with torch.inference_mode():
            pred = self.model(x)
        if isinstance(pred, (list, tuple)):  # ultralytics' Detect in eval mode: (decoded, raw maps)
            pred = pred[0]
        return [pred.float().cpu().numpy()]

    def device_pipeline(self, input_hw: Optional[Sequence[int]] = None, **options: Any) -> Any:
        """The device-resident path over this backend: frames in, final detections out, the work on
        :attr:`device` (:class:`edge_detect.training.device_pipeline.DevicePipeline`; ``options``: ``auto``, the
        NMS settings ``conf``, ``iou``, ``classes``, ``agnostic``, ``multi_label``, ``max_det``, and ``graphs``,
        ``ring``, ``hold``). ``input_hw`` defaults to :attr:`metadata` ``.imgsz``."""
        from edge_detect.training.device_pipeline import DevicePipeline

        hw = tuple(input_hw) if input_hw is not None else tuple(self.metadata.imgsz)
        return DevicePipeline(self, (int(hw[0]), int(hw[1])), **options)

    # --- device path (DeviceBackend) --------------------------------------------------------------------------
    def _pipeline(self) -> Any:
        """The backend's :class:`~edge_detect.training.device_pipeline.DevicePipeline` (made on first use; its
        ring rotates, as the stream pipeline's contract allows)."""
        if self._device_pipeline is None:
            if self.input_spec.device == "cpu":
                raise ConfigError("torch backend: the device path is off (host batches); expected "
                                  "device_path=True or a CUDA device to call preprocess_device / infer_device")
            self._device_pipeline = self.device_pipeline(graphs=self._graphs, hold=False)
        return self._device_pipeline

    def preprocess_device(self, images: Sequence[Any], input_hw: Tuple[int, int], stride: int,
                          auto: bool) -> DeviceBatch:
        """Letterbox host BGR ``uint8 (H, W, 3)`` frames and/or ``uint8 (H, W, 3)`` BGR torch tensors (device
        handles) into one float batch on :attr:`device` (:meth:`DevicePipeline.preprocess
        <edge_detect.training.device_pipeline.DevicePipeline.preprocess>`).

        Returns:
            A :class:`~edge_detect.backends.base.DeviceBatch` whose ``data`` is the device pipeline's ring batch
            (``(B, 3, h, w)`` in the model's dtype) and ``infos`` one letterbox info per image.

        Raises:
            ConfigError: ``stride`` is not the model's, or the device path is off. DataError: invalid frames.
        """
        if int(stride) != int(self.metadata.stride):
            raise ConfigError(f"torch backend preprocess_device: expected the model stride {self.metadata.stride}, "
                              f"got {stride}")
        ring_batch = self._pipeline().preprocess(list(images), (int(input_hw[0]), int(input_hw[1])), bool(auto))
        return DeviceBatch(data=ring_batch, device=self.input_spec.device, infos=list(ring_batch.infos))

    def infer_device(self, batch: DeviceBatch) -> List[np.ndarray]:
        """Forward (CUDA graph or eager) and NMS with ``batch.nms`` on the device; only the kept rows come back.

        Returns:
            Per image, float32 ``(n, 6)`` ``[x1, y1, x2, y2, score, class]`` in letterbox pixels, by descending
            score, at most ``batch.nms["max_det"]`` rows: the rows the host path's NMS keeps.
        """
        return self._pipeline().infer_rows(batch.data, batch.nms or None)

    def graph_shapes(self) -> dict:
        """The device path's CUDA graphs so far: ``{"graphs": ["[B, 3, h, w] dtype", ...], "graphs_refused":
        {shape: reason}}`` (empty lists before the first device inference, and on the CPU)."""
        runner = getattr(self._device_pipeline, "runner", None)
        if runner is None:
            return {"graphs": [], "graphs_refused": {}}
        name = lambda key: f"{list(key[0])} {str(key[1]).replace('torch.', '')}"  # noqa: E731
        return {"graphs": [name(k) for k in runner.graphs],
                "graphs_refused": {name(k): v for k, v in runner.refused.items()}}

    def close(self) -> None:
        """Drop the model (and free GPU memory)."""
        self._device_pipeline = None
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def __enter__(self) -> "TorchBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
