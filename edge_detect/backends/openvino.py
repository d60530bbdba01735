"""OpenVINO backend: runs our ``.onnx`` (FP32 / FP16 / INT8) or an OpenVINO IR (``.xml`` + ``.bin``) on Intel
and AMD CPUs, Intel iGPUs and NPUs.

Options (``load_backend(path, backend="openvino", **options)`` / ``Detector(path, backend="openvino", ...)``):

* ``device``: ``"CPU"`` (default), ``"GPU"`` (Intel iGPU), ``"NPU"``, ``"AUTO"`` or any OpenVINO device string
  (``"GPU.1"``, ``"AUTO:GPU,CPU"``).
* ``precision``: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``: the precision the float parts of the graph
  run in, passed as ``INFERENCE_PRECISION_HINT`` every time (OpenVINO's own default on a BF16-capable CPU is
  bf16, which moves boxes by several pixels, so it is never left to OpenVINO). ``int8`` needs a quantized
  model (our Q/DQ ONNX or an NNCF IR) and runs its non-quantized parts in f32. Default (``None``): ``int8`` for a
  quantized model, else ``fp32``; the choice is logged and kept in :attr:`OpenVinoBackend.precision`.
* ``hint``: ``"latency"`` (default: one request uses every core) or ``"throughput"`` (several parallel
  streams; use with :meth:`OpenVinoBackend.infer_async` and several frames in flight).
* ``threads``: ``INFERENCE_NUM_THREADS`` (``0`` = OpenVINO's choice).
* ``requests``: async infer requests (``0`` = the compiled model's ``OPTIMAL_NUMBER_OF_INFER_REQUESTS``).
* ``uint8_input``: ``True`` (default) adds OpenVINO's PrePostProcessor in front of a float model so it takes
  letterboxed BGR ``uint8 (B, H, W, 3)`` frames and does BGR->RGB, ``/255`` and NHWC->NCHW inside the graph
  (no host-side float conversion); ``False`` keeps the model's own input.
* ``cache_dir``: OpenVINO model cache folder (``CACHE_DIR``), or ``None``.

Model metadata (:class:`~edge_detect.metadata.ModelMetadata`, JSON) is read from the IR's ``rt_info`` (key
``edge_detect``, written by :mod:`edge_detect.deploy.openvino`) or, for ONNX, from ``metadata_props`` (which
OpenVINO's ONNX reader exposes under ``rt_info["framework"]["edge_detect"]``).

Dynamic height/width models are compiled once per input shape the first time that shape is seen (a static
compiled graph is faster on CPU than a dynamic one); the compiled models are kept per shape.
``InferRequest.infer`` and ``wait`` release the GIL.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.backends.base import InputSpec, register_backend
from edge_detect.errors import BackendUnavailableError, ConfigError, ModelLoadError
from edge_detect.metadata import METADATA_KEY, ModelMetadata

__all__ = ["OpenVinoBackend", "OV_PRECISIONS", "OV_HINTS", "read_ov_metadata", "shared_core"]

LOGGER = logging.getLogger(__name__)

OV_PRECISIONS: Dict[str, str] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
OV_HINTS: Dict[str, str] = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}
_QUANT_OPS = ("FakeQuantize", "FakeConvert")


def _ov() -> Any:
    return require("openvino", "openvino")


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``, created on first use and kept until the process exits.

    Every OpenVINO call in edge-detect (backend, IR conversion, NNCF INT8) goes through it. Why not one Core per
    model: OpenVINO's CPU plugin gives the thread that creates it its own signal alternate stack
    (``sigaltstack``) and, when destroyed, puts back the one it found. Two Cores destroyed in the order they
    were created leave the thread's alternate stack pointing at memory the plugin has already unmapped, and the
    next Python-level signal handler (Ctrl-C, SIGTERM, a ``SIGCHLD`` handler) kills the process with SIGSEGV.
    One Core that lives as long as the process never restores out of order. Compile-time settings are passed
    per ``compile_model`` call, never set on this Core, so backends cannot change each other's settings.
    """
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = _ov().Core()
        return _CORE


def read_ov_metadata(model: Any) -> Optional[ModelMetadata]:
    """Our :class:`ModelMetadata` from an ``openvino.Model``'s ``rt_info``, or ``None``.

    Looks at ``rt_info["edge_detect"]`` (IR written by :mod:`edge_detect.deploy.openvino`) and
    ``rt_info["framework"]["edge_detect"]`` (ONNX ``metadata_props`` as OpenVINO's ONNX reader exposes them).
    The value is JSON, parsed with :meth:`ModelMetadata.from_json`.
    """
    for path in ([METADATA_KEY], ["framework", METADATA_KEY]):
        if model.has_rt_info(path):
            return ModelMetadata.from_json(model.get_rt_info(path).astype(str))
    return None


def ov_reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (its first lines name OpenVINO's own source files)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1]


def _check_onnx_parses(path: Path) -> None:
    """An ``.onnx`` that protobuf cannot parse is refused here (with ``onnx``, when installed), not by OpenVINO."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        return
    try:
        onnx.load_model(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ModelLoadError(f"{path}: expected an ONNX model, got a file protobuf cannot parse as one") from exc


def _is_quantized(model: Any) -> bool:
    """Whether the graph has quantization ops (FakeQuantize from Q/DQ pairs or NNCF)."""
    return any(op.get_type_name() in _QUANT_OPS for op in model.get_ops())


def _dims(partial_shape: Any) -> Tuple[int, ...]:
    return tuple(-1 if d.is_dynamic else int(d.get_length()) for d in partial_shape)


class InferHandle:
    """One asynchronous inference in flight (from :meth:`OpenVinoBackend.infer_async`).

    :meth:`wait` blocks until the request is done and returns its outputs as NumPy *views* of the request's
    output memory (no copy); they stay valid until :meth:`release` hands the request back to the pool, so the
    consumer postprocesses first and releases after. ``with handle as outputs:`` does both.
    """

    def __init__(self, request: Any, pool: "queue.SimpleQueue[Any]", n_outputs: int) -> None:
        self._request, self._pool, self._n = request, pool, n_outputs
        self._outputs: Optional[List[np.ndarray]] = None

    def wait(self) -> List[np.ndarray]:
        """Outputs in layout order (views; valid until :meth:`release`)."""
        if self._outputs is None:
            if self._request is None:
                raise RuntimeError("InferHandle.wait() after release()")
            self._request.wait()
            self._outputs = [self._request.get_output_tensor(i).data for i in range(self._n)]
        return self._outputs

    def release(self) -> None:
        """Give the infer request back (idempotent); the output views must not be used afterwards."""
        if self._request is not None:
            if self._outputs is None:
                self._request.wait()
            self._outputs = None
            self._pool.put(self._request)
            self._request = None

    def __enter__(self) -> List[np.ndarray]:
        return self.wait()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class _Compiled:
    """A compiled model for one input shape, one sync request and a pool of async requests."""

    def __init__(self, compiled: Any, requests: int) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        n = requests or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.num_requests = max(1, n)
        self.pool: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        for _ in range(self.num_requests):
            self.pool.put(compiled.create_infer_request())


@register_backend("openvino")
class OpenVinoBackend:
    """An ``.onnx`` or OpenVINO IR model compiled for an OpenVINO device (see module doc for the options).

    Attributes:
        name: ``"openvino"``.
        metadata: the model's :class:`ModelMetadata` (``input_format`` follows the effective input).
        input_spec: :class:`InputSpec` of the single input (``-1`` for dynamic axes).
        device: the OpenVINO device string.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``: what was asked of OpenVINO.
        hint: ``"latency"`` or ``"throughput"``.
        num_requests: async infer requests available (frames that can be in flight).
    """

    name = "openvino"

    def __init__(self, path: Union[str, os.PathLike], device: str = "CPU", precision: Optional[str] = None,
                 hint: str = "latency", threads: int = 0, requests: int = 0, uint8_input: bool = True,
                 cache_dir: Optional[Union[str, os.PathLike]] = None) -> None:
        ov = _ov()
        self.path = Path(path)
        if hint not in OV_HINTS:
            raise ConfigError(f"openvino hint: expected one of {sorted(OV_HINTS)}, got {hint!r}")
        if precision is not None and precision not in OV_PRECISIONS:
            raise ConfigError(f"openvino precision: expected one of {sorted(OV_PRECISIONS)}, got {precision!r}")
        if int(threads) < 0 or int(requests) < 0:
            raise ConfigError(f"openvino threads/requests: expected >= 0, got {threads}/{requests}")
        self._core = shared_core()
        self.device, self.hint = str(device), hint
        self._check_device()
        model = self._read_model()
        if len(model.inputs) != 1:
            raise ModelLoadError(f"{self.path}: expected 1 input tensor, got {len(model.inputs)}")
        quantized = _is_quantized(model)
        if quantized and self.path.suffix.lower() == ".onnx":
            model = self._read_qdq_onnx()
        self.precision = self._resolve_precision(precision, quantized)
        meta = read_ov_metadata(model)
        if meta is None:
            from edge_detect.backends.onnxruntime import _infer_metadata

            spec0 = self._spec(model, None)
            meta = _infer_metadata(self.path, spec0, [_dims(o.get_partial_shape()) for o in model.outputs])
        fmt = meta.input_format
        if uint8_input and fmt == "float32_nchw_rgb" and model.input(0).get_element_type() == ov.Type.f32:
            model = self._uint8_front(model)
            fmt = "uint8_nhwc_bgr"
        self.metadata = meta.replace(input_format=fmt)
        self._model = model
        self.input_spec = self._spec(model, fmt)
        self._n_out = len(model.outputs)
        self._out_shapes = [_dims(o.get_partial_shape()) for o in model.outputs]
        from edge_detect.backends.onnxruntime import _check_layout

        _check_layout(self.path, self.metadata, self._out_shapes)
        self._config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[self.precision],
                                        "PERFORMANCE_HINT": OV_HINTS[hint]}
        if int(threads):
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None:
            self._config["CACHE_DIR"] = str(cache_dir)
        if self.device.split(":")[0].split(".")[0] in ("AUTO", "MULTI", "HETERO"):
            # virtual devices: the precision goes to every real device they may pick
            hint_of = self._config.pop("INFERENCE_PRECISION_HINT")
            self._config["DEVICE_PROPERTIES"] = {dev: {"INFERENCE_PRECISION_HINT": hint_of}
                                                 for dev in self._core.available_devices}
        self._requests = int(requests)
        self._lock = threading.Lock()
        self._by_shape: Dict[Tuple[int, ...], _Compiled] = {}
        if not self.input_spec.dynamic:
            self._compiled_for(self.input_spec.shape)
        LOGGER.info("openvino: %s on %s, precision %s (INFERENCE_PRECISION_HINT %s), hint %s, input %s %s",
                    self.path.name, self.device, self.precision, OV_PRECISIONS[self.precision], hint,
                    self.input_spec.format, self.input_spec.shape)

    # --- set-up ----------------------------------------------------------------------------------------------

    def _read_model(self) -> Any:
        """``read_model`` after checks that keep OpenVINO from probing every frontend on a wrong file (its
        TensorFlow one prints parse errors to stderr): see :func:`~edge_detect.model_files.check_model_file`."""
        from edge_detect.model_files import check_model_file

        check_model_file(self.path, "openvino")
        if self.path.suffix.lower() == ".onnx" and self.path.is_file():
            _check_onnx_parses(self.path)
        try:
            return self._core.read_model(str(self.path))
        except RuntimeError as exc:
            raise ModelLoadError(f"{self.path}: not a loadable ONNX / OpenVINO IR model ({ov_reason(exc)})") from exc

    def _read_qdq_onnx(self) -> Any:
        """A Q/DQ ONNX read through :func:`~edge_detect.backends.openvino_qdq.prepare_qdq_onnx` (see that module:
        without it OpenVINO mis-scales signed activation quantizers behind a Concat, and overflows full-range
        weights on CPUs without VNNI)."""
        from edge_detect.backends.openvino_qdq import prepare_qdq_onnx

        data, counts = prepare_qdq_onnx(self.path, self._core, self.device)
        LOGGER.info("openvino: %s: %d activation Q/DQ pairs rewritten to uint8 zero points (same values)",
                    self.path.name, counts["activations_uint8"])
        if counts["float_weights"]:
            LOGGER.warning("%s: OpenVINO on %s sums INT8 products in 16 bits (no VNNI), which the full-range weights "
                           "of %d layers would overflow: they run in float on the quantized activations (ONNX "
                           "Runtime's results, not INT8 speed). For INT8 speed here: edge-detect export --format "
                           "openvino --int8", self.path.name, self.device, counts["float_weights"])
        return self._core.read_model(data)

    def _check_device(self) -> None:
        available = list(self._core.available_devices)
        base = self.device.split(":")[0].split(".")[0]
        if base in ("AUTO", "MULTI", "HETERO"):
            return
        if not any(d == self.device or d.split(".")[0] == self.device for d in available):
            raise BackendUnavailableError(
                f"OpenVINO device '{self.device}' is not available here: expected one of {available} "
                f"(or AUTO)")

    def _resolve_precision(self, precision: Optional[str], quantized: bool) -> str:
        if precision is None:
            chosen = "int8" if quantized else "fp32"
            LOGGER.info("openvino precision not given: %s for this %s model (INFERENCE_PRECISION_HINT %s)",
                        chosen, "quantized" if quantized else "float", OV_PRECISIONS[chosen])
            return chosen
        if precision == "int8" and not quantized:
            raise ConfigError(f"{self.path}: --precision int8 expected a quantized model (edge-detect export "
                              f"--format openvino --int8, or a Q/DQ .onnx), got a float model")
        if precision != "int8" and quantized:
            LOGGER.warning("%s is quantized: its INT8 layers stay INT8; precision %s applies to the float rest",
                           self.path.name, precision)
        if precision in _CAPABILITY and self.device.split(".")[0] in ("CPU", "GPU"):
            caps = list(self._core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
            if _CAPABILITY[precision] not in caps:
                raise BackendUnavailableError(f"OpenVINO device {self.device} cannot run {precision}: expected "
                                              f"{_CAPABILITY[precision]} in its capabilities, got {caps}")
        return precision

    def _uint8_front(self, model: Any) -> Any:
        """PrePostProcessor: uint8 NHWC BGR tensor -> f32, BGR->RGB, /255, NCHW, inside the graph."""
        ov = _ov()
        from openvino.preprocess import ColorFormat, PrePostProcessor

        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
            .set_color_format(ColorFormat.BGR)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
        return ppp.build()

    def _spec(self, model: Any, fmt: Optional[str]) -> InputSpec:
        port = model.input(0)
        shape = _dims(port.get_partial_shape())
        if len(shape) != 4:
            raise ModelLoadError(f"{self.path}: input '{port.get_any_name()}': expected a 4-D image batch, got "
                                 f"shape {port.get_partial_shape()}")
        dtype = np.dtype(port.get_element_type().to_dtype())
        if dtype not in (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8)):
            raise ModelLoadError(f"{self.path}: input dtype: expected float32, float16 or uint8, got {dtype}")
        fmt = fmt or ("uint8_nhwc_bgr" if dtype == np.uint8 else "float32_nchw_rgb")
        return InputSpec(name=port.get_any_name(), shape=shape, dtype=dtype, format=fmt)

    def _compiled_for(self, shape: Tuple[int, ...]) -> _Compiled:
        key = tuple(int(s) for s in shape)
        entry = self._by_shape.get(key)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._by_shape.get(key)
            if entry is None:
                model = self._model
                if self.input_spec.dynamic:
                    model = model.clone()
                    model.reshape({0: list(key)})
                config = dict(self._config)
                try:
                    compiled = self._core.compile_model(model, self.device, config)
                except RuntimeError as exc:
                    raise BackendUnavailableError(f"{self.path}: OpenVINO could not compile it for {self.device} "
                                                  f"with {config} ({ov_reason(exc)})") from exc
                entry = _Compiled(compiled, self._requests)
                self._by_shape[key] = entry
                LOGGER.debug("openvino: compiled %s for %s (%d async requests)", self.path.name, key,
                             entry.num_requests)
        return entry

    # --- inference -------------------------------------------------------------------------------------------

    @property
    def num_requests(self) -> int:
        """Async requests of the compiled model (the first compiled shape; 1 before anything is compiled)."""
        return next(iter(self._by_shape.values())).num_requests if self._by_shape else 1

    def _check(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.input_spec.conform(batch, self.path.name))

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run the model synchronously.

        Args:
            batch: preprocessed input matching :attr:`input_spec` (dtype and layout; static axes exact).

        Returns:
            The outputs in layout order, as NumPy arrays the caller owns (copies).

        Raises:
            ValueError: the batch does not match the static axes of the input.
        """
        batch = self._check(batch)
        entry = self._compiled_for(batch.shape)
        with self._lock:  # one sync request per shape: serialize callers of infer()
            result = entry.request.infer({0: batch}, share_inputs=True, share_outputs=False)
            return [result[i] for i in range(self._n_out)]

    def infer_async(self, batch: np.ndarray) -> InferHandle:
        """Start inference on ``batch`` and return at once (blocks only while every request is busy).

        Several calls can be in flight (up to :attr:`num_requests`); each returns an :class:`InferHandle`
        whose ``wait()`` gives the outputs. ``batch`` must not be modified until the handle's ``wait()``
        returned (the request reads it in place).
        """
        batch = self._check(batch)
        entry = self._compiled_for(batch.shape)
        request = entry.pool.get()
        try:
            request.start_async({0: batch}, share_inputs=True)
        except BaseException:
            entry.pool.put(request)
            raise
        return InferHandle(request, entry.pool, self._n_out)

    def close(self) -> None:
        """Release the compiled models."""
        self._by_shape.clear()
        self._model = None

    def __enter__(self) -> "OpenVinoBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"OpenVinoBackend({str(self.path)!r}, device={self.device!r}, precision={self.precision!r}, "
                f"hint={self.hint!r})")
