"""ONNX Runtime backend: runs an exported ``.onnx`` on CPU (default), CUDA or TensorRT execution providers.

Options (``load_backend(path, **options)`` / ``Detector(path, **options)``):

* ``providers``: ``"cpu"``, ``"cuda"``, ``"tensorrt"``, a full ORT provider name
  (``"CUDAExecutionProvider"``), or a list of them in priority order. Default ``"cpu"``.
* ``threads``: intra-op threads (``0`` = ORT's default, one per core).
* ``graph_optimization``: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
* ``device``: ``"cpu"`` or ``"cuda[:N]"``, shorthand for the providers: ``"cuda:1"`` runs on the CUDA provider
  with ``device_id=1`` (and CPU for unsupported nodes). It needs the GPU build of ONNX Runtime
  (``pip install onnxruntime-gpu``); without it the error says so in one line. Not together with ``providers``.
* ``tf32``: let the CUDA provider use TensorFloat-32 for FP32 convolutions and matmuls (its ``use_tf32``). Off by
  default, as in the torch backend: strict FP32 keeps the detections of the CPU.

:meth:`OnnxRuntimeBackend.infer_bound` runs on an input that is already in memory (a device buffer on CUDA) through
ONNX Runtime's IO binding, with no copy of the input.

* ``device_path``: with the CUDA provider, take the device path (:class:`~edge_detect.backends.base.DeviceBackend`):
  frames are uploaded once and letterboxed on the GPU by the NVRTC kernel
  (:class:`~edge_detect.backends.device_input.DeviceInput`; needs cuda-python, no torch), the session reads the
  device batch through IO binding (:meth:`infer_bound`; the host waits for the letterbox first, ONNX Runtime runs on
  its own stream), and the outputs come back to the host: the final boxes for a model with in-graph NMS (the
  ``"nms"`` layout, ``edge-detect export --nms``), the raw prediction for a ``"raw"`` one, whose NMS then runs on
  the host (:func:`edge_detect.postprocess.postprocess`, as on the host path). Default off.

The model's :class:`~edge_detect.metadata.ModelMetadata` is read from the ONNX ``metadata_props``; a model
without it gets a minimal one inferred from its input and output shapes (with a warning).
``InferenceSession.run`` releases the GIL while it runs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.devices import parse_device
from edge_detect.errors import BackendUnavailableError, ConfigError, ModelLoadError
from edge_detect.metadata import ModelMetadata, read_onnx_metadata
from edge_detect.backends.base import DeviceBatch, InputSpec, register_backend
from edge_detect.postprocess import postprocess
from edge_detect.types import Detections

__all__ = ["OnnxRuntimeBackend", "resolve_providers"]

LOGGER = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort() -> Any:
    return require("onnxruntime", "onnx")


def resolve_providers(providers: Union[str, Sequence[str], None]) -> List[str]:
    """Map provider aliases to ORT names and check they are available here.

    Args:
        providers: alias (``"cpu"``, ``"cuda"``, ``"tensorrt"``), full ORT name, or a list of them;
            ``None`` = CPU.

    Returns:
        ORT provider names in priority order; CPU is appended as the fallback for unsupported nodes.

    Raises:
        BackendUnavailableError: a provider is unknown or not available in this ONNX Runtime build.
    """
    requested = ["cpu"] if providers is None else [providers] if isinstance(providers, str) else list(providers)
    available = _ort().get_available_providers()
    out: List[str] = []
    for p in requested:
        name = PROVIDER_ALIASES.get(str(p).lower(), str(p))
        if name not in available:
            raise BackendUnavailableError(
                f"ONNX Runtime provider '{p}' is not available: expected one of {available} "
                f"(aliases: {sorted(PROVIDER_ALIASES)})")
        if name not in out:
            out.append(name)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def _parse_device(device: Optional[str]) -> Optional[Tuple[str, int]]:
    """:func:`edge_detect.devices.parse_device`, or ConfigError for a device ONNX Runtime cannot take."""
    parsed = parse_device(device)
    if device is not None and parsed is None:
        raise ConfigError(f"onnxruntime device: expected 'cpu' or 'cuda[:N]', got {device!r} (OpenVINO device "
                          f"names such as GPU or NPU need --backend openvino)")
    return parsed


def _cuda_providers(ort: Any, device_id: int, tf32: bool) -> List[Any]:
    """``[(CUDAExecutionProvider, options), CPUExecutionProvider]``, or a one-line error naming the package when
    this ONNX Runtime has no CUDA provider."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            f"onnxruntime device 'cuda:{device_id}': this ONNX Runtime has no CUDA provider (it has {available}); "
            f"install the GPU build: pip uninstall -y onnxruntime && pip install onnxruntime-gpu")
    return [("CUDAExecutionProvider", {"device_id": int(device_id), "use_tf32": "1" if tf32 else "0"}),
            "CPUExecutionProvider"]


def _with_options(resolved: List[str], tf32: bool) -> List[Any]:
    """Provider names -> session providers; the CUDA provider gets its TF32 switch (off unless ``tf32``)."""
    return [(n, {"use_tf32": "1" if tf32 else "0"}) if n == "CUDAExecutionProvider" else n for n in resolved]


def _dims(shape: Sequence[Any]) -> Tuple[int, ...]:
    """ORT shape -> ints, ``-1`` for symbolic (string) or unknown (None) dimensions."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else -1 for d in shape)


def _session_options(ort: Any, threads: int, graph_optimization: str) -> Any:
    if graph_optimization not in _OPT_LEVELS:
        raise BackendUnavailableError(
            f"graph_optimization: expected one of {_OPT_LEVELS}, got {graph_optimization!r}")
    level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
             "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
             "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
             "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[graph_optimization]
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def _load_errors() -> Tuple[type, ...]:
    """The exception classes ONNX Runtime raises for unreadable / invalid model files."""
    state = require("onnxruntime.capi.onnxruntime_pybind11_state", "onnx", package="onnxruntime")
    return tuple(getattr(state, n) for n in ("Fail", "InvalidProtobuf", "InvalidArgument", "NoSuchFile",
                                             "InvalidGraph", "NotImplemented", "RuntimeException")
                 if hasattr(state, n))


def _infer_metadata(path: Path, spec: InputSpec, out_shapes: List[Tuple[int, ...]]) -> ModelMetadata:
    """A minimal :class:`ModelMetadata` for an ONNX without ``edge_detect`` metadata."""
    hw = tuple(v if v > 0 else 640 for v in spec.hw)
    common = dict(imgsz=hw, batch=max(spec.batch, 1), dynamic=spec.dynamic, input_format=spec.format)
    if len(out_shapes) == 1 and len(out_shapes[0]) == 3 and out_shapes[0][2] > 5:
        nc = out_shapes[0][2] - 5
        LOGGER.warning("%s has no edge_detect metadata; assuming a raw YOLOv5 output with %d classes named "
                       "class0..class%d", path, nc, nc - 1)
        return ModelMetadata(names=[f"class{i}" for i in range(nc)], output_layout="raw", **common)
    if len(out_shapes) == 4:
        LOGGER.warning("%s has no edge_detect metadata; assuming in-graph NMS outputs with unknown class names",
                       path)
        return ModelMetadata(names=(), output_layout="nms", **common)
    raise ModelLoadError(
        f"{path}: unexpected output layout: expected one output (B, N, 5+nc) or four NMS outputs, "
        f"got {len(out_shapes)} output(s) with shapes {out_shapes}")


def _check_layout(path: Path, meta: ModelMetadata, out_shapes: List[Tuple[int, ...]]) -> None:
    """Raise :class:`ModelLoadError` when the outputs do not match ``meta.output_layout``."""
    if meta.output_layout == "raw" and meta.head == "anchor_free":
        expected = f"one output (B, {4 + meta.nc}, N) for {meta.nc} classes (anchor-free head)"
        ok = len(out_shapes) == 1 and len(out_shapes[0]) == 3 and out_shapes[0][1] in (-1, 4 + meta.nc)
    elif meta.output_layout == "raw":
        expected = f"one output (B, N, {5 + meta.nc}) for {meta.nc} classes"
        ok = len(out_shapes) == 1 and len(out_shapes[0]) == 3 and out_shapes[0][2] in (-1, 5 + meta.nc)
    else:
        expected = "four outputs [num_dets (B, 1), boxes (B, K, 4), scores (B, K), classes (B, K)]"
        ok = len(out_shapes) == 4 and len(out_shapes[1]) == 3 and out_shapes[1][2] in (-1, 4)
    if not ok:
        raise ModelLoadError(f"{path}: unexpected output layout: expected {expected}, got "
                             f"{len(out_shapes)} output(s) with shapes {out_shapes}")


@register_backend("onnxruntime")
class OnnxRuntimeBackend:
    """An ``.onnx`` model in an ONNX Runtime session (see module doc for the options).

    Attributes:
        name: ``"onnxruntime"``.
        metadata: the model's :class:`ModelMetadata`.
        input_spec: :class:`InputSpec` of the single input (``-1`` for dynamic axes).
        providers: the ORT execution providers in use.
        device: ``"cuda:N"`` when the CUDA provider runs the model, else ``"cpu"``.
        tf32: whether the CUDA provider may use TF32 (``None`` without the CUDA provider).
    """

    name = "onnxruntime"

    def __init__(self, path: Union[str, os.PathLike], providers: Union[str, Sequence[str], None] = None,
                 threads: int = 0, graph_optimization: str = "all", device: Optional[str] = None,
                 tf32: bool = False, device_path: bool = False) -> None:
        ort = _ort()
        self._inputs: Any = None
        self.path = Path(path)
        so = _session_options(ort, threads, graph_optimization)
        session_providers = self._session_providers(ort, providers, device, tf32)
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=so, providers=session_providers)
        except _load_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model ({first})") from exc
        self.providers: List[str] = list(self._session.get_providers())
        cuda = "CUDAExecutionProvider" in self.providers
        if (_parse_device(device) or ("cpu", 0))[0] == "cuda" and not cuda:
            raise BackendUnavailableError(
                f"onnxruntime device '{device}': the CUDA provider did not start (ONNX Runtime fell back to "
                f"{self.providers}); check that the CUDA and cuDNN versions match onnxruntime-gpu's")
        self._device_id = int(dict(p for p in session_providers if isinstance(p, tuple)).get(
            "CUDAExecutionProvider", {}).get("device_id", 0))
        self.device = f"cuda:{self._device_id}" if cuda else "cpu"
        self.tf32: Optional[bool] = bool(tf32) if cuda else None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected 1 input tensor, got {len(inputs)}: "
                                 f"{[i.name for i in inputs]}")
        self._output_names = [o.name for o in self._session.get_outputs()]
        out_shapes = [_dims(o.shape) for o in self._session.get_outputs()]
        spec = self._input_spec(inputs[0], None)
        meta = (read_onnx_metadata(self._session.get_modelmeta().custom_metadata_map)
                or _infer_metadata(self.path, spec, out_shapes))
        _check_layout(self.path, meta, out_shapes)
        self.metadata = meta
        self.input_spec = self._input_spec(inputs[0], meta)
        if device_path:
            if not cuda:
                raise ConfigError(f"onnxruntime device_path: expected the CUDA provider (device='cuda[:N]'), got "
                                  f"{self.providers}")
            from edge_detect.backends.device_input import DeviceInput

            self._use_device_input(DeviceInput(self._device_id, self.input_spec.format, self.input_spec.dtype))
        LOGGER.debug("loaded %s on %s: input %s, outputs %s", self.path, self.providers, self.input_spec,
                     out_shapes)

    @staticmethod
    def _session_providers(ort: Any, providers: Union[str, Sequence[str], None], device: Optional[str],
                           tf32: bool) -> List[Any]:
        """The ``providers`` argument of the session, from either ``providers`` or ``device``."""
        dev = _parse_device(device)
        if dev is not None and providers is not None:
            raise ConfigError(f"onnxruntime: expected either device or providers, got device={device!r} and "
                              f"providers={providers!r}")
        if tf32 and not (dev is not None and dev[0] == "cuda" or "cuda" in str(providers).lower()):
            raise ConfigError(f"onnxruntime tf32: expected the CUDA provider (device='cuda[:N]'), got "
                              f"device={device!r}, providers={providers!r}")
        if dev is not None and dev[0] == "cuda":
            return _cuda_providers(ort, dev[1], tf32)
        return _with_options(resolve_providers("cpu" if dev is not None else providers), tf32)

    def _input_spec(self, node: Any, meta: Optional[ModelMetadata]) -> InputSpec:
        if node.type not in _ORT_TYPES:
            raise ModelLoadError(f"{self.path}: input '{node.name}' dtype: expected one of "
                                 f"{sorted(_ORT_TYPES)}, got {node.type}")
        shape = _dims(node.shape)
        if len(shape) != 4:
            raise ModelLoadError(f"{self.path}: input '{node.name}': expected a 4-D image batch, got shape "
                                 f"{node.shape}")
        dtype = np.dtype(_ORT_TYPES[node.type])
        fmt = meta.input_format if meta else ("uint8_nhwc_bgr" if dtype == np.uint8 else "float32_nchw_rgb")
        return InputSpec(name=node.name, shape=shape, dtype=dtype, format=fmt)

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run the model.

        Args:
            batch: preprocessed input matching :attr:`input_spec` (dtype and layout; static axes exact).

        Returns:
            The outputs in layout order, as NumPy arrays (see :mod:`edge_detect.metadata`).

        Raises:
            ValueError: the batch does not match the static axes of the input.
        """
        batch = self.input_spec.conform(batch, self.path.name)
        return self._session.run(self._output_names, {self.input_spec.name: batch})

    def infer_bound(self, ptr: int, shape: Sequence[int], dtype: Any = np.float32,
                    device: str = "cuda") -> List[np.ndarray]:
        """Run the model on an input already in memory, through IO binding (no copy of the input).

        Args:
            ptr: address of a C-contiguous input laid out like :attr:`input_spec`: device memory (a CUDA buffer, a
                torch tensor's ``data_ptr()``) for ``device="cuda"``, host memory for ``device="cpu"``.
            shape: its shape; dtype: its NumPy dtype (must be :attr:`input_spec` ``.dtype``).
            device: ``"cuda"`` (on this backend's CUDA device) or ``"cpu"``.

        Returns:
            The outputs in layout order, as NumPy arrays.

        Raises:
            ValueError: shape or dtype do not match the input.
        """
        dtype, shape = np.dtype(dtype), tuple(int(v) for v in shape)
        want = self.input_spec
        if dtype != want.dtype or len(shape) != len(want.shape) or any(
                w > 0 and w != v for w, v in zip(want.shape, shape)):
            raise ValueError(f"{self.path.name} input '{want.name}': expected {want.dtype} {want.shape} (-1 = any), "
                             f"got {dtype} {shape}")
        kind = "cuda" if device == "cuda" else "cpu"
        binding = self._session.io_binding()
        binding.bind_input(want.name, kind, self._device_id if kind == "cuda" else 0, dtype, list(shape), int(ptr))
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    # --- device path (DeviceBackend) --------------------------------------------------------------------------
    def _use_device_input(self, inputs: Any) -> None:
        """Take the device path with ``inputs`` (a :class:`~edge_detect.backends.device_input.DeviceInput`): its
        batches are bound where this session's provider reads them (CUDA memory for the CUDA provider)."""
        self._inputs = inputs
        spec = self.input_spec
        self.input_spec = InputSpec(spec.name, spec.shape, spec.dtype, spec.format, device=f"cuda:{inputs.device}")

    def preprocess_device(self, images: Any, input_hw: Tuple[int, int], stride: int, auto: bool) -> DeviceBatch:
        """Upload and letterbox frames (host BGR ``uint8`` arrays and/or device frames with the
        ``__cuda_array_interface__``) into a device batch of this model's input (a static batch is padded).

        Raises:
            ConfigError: the device path is off. DataError: an invalid image.
        """
        if self._inputs is None:
            raise ConfigError(f"{self.path.name}: the device path is off; expected device_path=True (with "
                              "device='cuda[:N]') to call preprocess_device / infer_device")
        static = self.input_spec.batch if self.input_spec.batch > 0 else None
        return self._inputs.prepare(images, input_hw, stride, auto, rows=static)

    def infer_device(self, batch: DeviceBatch) -> List[Detections]:
        """The session on the device batch through IO binding (the host waits for its letterbox first), then
        :func:`~edge_detect.postprocess.postprocess` with ``batch.nms`` on the outputs copied back.

        Returns:
            One :class:`~edge_detect.types.Detections` per real image, in original-frame pixels.
        """
        data = batch.data
        self._inputs.consume(data)  # ONNX Runtime runs on its own stream: the host waits for the letterbox
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        outputs = self.infer_bound(data.ptr, data.shape, data.dtype, device=kind)
        return postprocess(outputs, batch.infos, self.metadata.output_layout, head=self.metadata.head, **batch.nms)

    def close(self) -> None:
        """Release the session (and the device path's buffers)."""
        if self._inputs is not None:
            self._inputs.close()
            self._inputs = None
        self._session = None

    def __enter__(self) -> "OnnxRuntimeBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({str(self.path)!r}, providers={self.providers}, device={self.device!r})"
