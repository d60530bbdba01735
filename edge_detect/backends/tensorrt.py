"""TensorRT runtime backend: serialized engine + metadata sidecar -> ``infer(batch)`` / ``infer_async(batch)``.

Loading checks the engine's recorded TensorRT version and GPU against this machine first
(:mod:`edge_detect.backends.engine_meta`): a mismatch is a one-line
:class:`~edge_detect.errors.VersionMismatchError`. Rebuilding a mismatched engine is not this backend's job
(the runtime never imports the build side): :func:`edge_detect.models.open_model` with
``rebuild_on_mismatch=True`` does it before opening the backend.

Before deserializing, TensorRT's plugin creators are registered once per process with the process-lifetime
logger (:mod:`edge_detect.backends.trt_common`): engines with ``EfficientNMS_TRT`` load in a fresh process.
Version-compatible engines get ``runtime.engine_host_code_allowed = True`` (they embed the lean runtime,
host code TensorRT refuses to run otherwise), DLA engines get ``runtime.DLA_core`` set to the core they were
built for.

Requests: ``streams=N`` execution contexts, each with its own non-blocking CUDA stream and I/O buffers (what
``trtexec --infStreams=N`` does), so that ``N`` batches can be in flight at once: one's copies overlap
another's compute. :meth:`TensorRTBackend.infer_async` starts a batch on a free request and returns an
:class:`InferHandle` (``wait()`` -> outputs, ``release()``), which the pipeline uses when :attr:`num_requests` > 1;
:meth:`TensorRTBackend.infer` is ``infer_async`` + ``wait`` + copy + ``release``. TensorRT < 9 gives only the first
context of a dynamic-shape engine an optimization profile, so several requests need several profiles there.

Buffers: on a discrete GPU each I/O tensor gets one pinned host buffer and one device buffer (owners from
:mod:`._cuda`), sized for the largest shape the profile allows and bound once with ``set_tensor_address``; a
request copies the input host -> device asynchronously, runs ``execute_async_v3`` (or replays a captured CUDA
graph, ``cuda_graph=True``, for engines whose input shape cannot change: static, or a profile with min = max),
copies the outputs back, and ``wait()`` synchronizes its stream. An engine that cannot be captured runs with
plain enqueue from then on (one warning), as ``trtexec`` does. On an integrated GPU (Jetson, which shares the
host's memory) each tensor gets one managed buffer instead, attached to the request's stream: no copies at all
(``unified_memory``, default on for integrated GPUs). Dynamic engines get ``set_input_shape`` whenever the batch
shape of a request changes. The CUDA device is made current on every call (it is per thread, and one thread
may drive engines on several GPUs). Both output layouts (``raw`` and ``nms``) and both input formats (float
NCHW RGB, uint8 NHWC BGR) are handled, as the metadata says.

Device path (``device_path=True``; :class:`~edge_detect.backends.base.DeviceBackend`): frames are uploaded once and
letterboxed on the GPU by the NVRTC kernel (:class:`~edge_detect.backends.device_input.DeviceInput`, no torch) into
a ring of device batches; :meth:`TensorRTBackend.infer_device` makes a request's stream wait for the batch, copies
it into the request's bound input (device to device, so CUDA graphs keep their addresses), runs the engine and
copies back only the outputs: for an engine with in-graph NMS (EfficientNMS / INMS, the ``"nms"`` layout) the
final boxes (``num_dets``, ``boxes``, ``scores``, ``classes``), for a ``"raw"`` engine the whole raw prediction,
whose NMS then runs on the host (:func:`edge_detect.postprocess.postprocess`, as on the host path): build engines
with ``--nms`` for a path that sends only boxes back. Float16-input engines keep the host path.

TensorRT >= 8.5 (named-tensor API), JetPack 5.1+ / 6 included. ``pip install 'edge-detect[tensorrt]'`` on a
desktop; JetPack's own TensorRT on Jetson (see ``tools/jetson/README.md``).
"""
from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edge_detect.backends.engine_meta import RuntimeInfo, check_compatible, engine_info, read_engine_metadata
from edge_detect.backends.trt_common import import_tensorrt, init_plugins
from edge_detect.errors import ConfigError, DataError, ModelLoadError
from edge_detect.backends import _cuda
from edge_detect.backends.base import DeviceBatch, InputSpec, register_backend
from edge_detect.backends.buffers import Allocation, ShapeProfile, TensorSpec, order_outputs, plan_allocations, view
from edge_detect.paths import PathLike
from edge_detect.postprocess import postprocess
from edge_detect.types import Detections

__all__ = ["TensorRTBackend", "InferHandle", "runtime_info"]

LOGGER = logging.getLogger(__name__)


def _trt() -> Any:
    return import_tensorrt()


def runtime_info(device: int = 0) -> RuntimeInfo:
    """TensorRT version, GPU name, compute capability and integrated-ness of this machine (device ``device``)."""
    trt = _trt()
    props = _cuda.device_props(device)
    return RuntimeInfo(tensorrt=str(trt.__version__), gpu=props.name, compute_capability=props.compute_capability,
                       integrated=props.integrated)


class _Request:
    """One execution context with its stream, its I/O memory and (optionally) its captured CUDA graph.

    ``arrays``: the host-visible uint8 view of each tensor's memory (pinned host buffer, or the managed buffer
    itself in unified mode); ``device``: the device buffers (``None`` in unified mode).
    """

    def __init__(self, context: Any, stream: _cuda.Stream) -> None:
        self.context, self.stream = context, stream
        self.owners: List[Any] = []
        self.arrays: Dict[str, np.ndarray] = {}
        self.host: Dict[str, _cuda.HostBuffer] = {}
        self.device: Dict[str, Any] = {}
        self.bound: Dict[str, Any] = {}  # the device-side owner bound to each tensor (device or managed buffer)
        self.graph: Optional[_cuda.CudaGraph] = None
        self.shape: Tuple[int, ...] = ()

    def close(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None
        for owner in self.owners:
            owner.close()
        self.owners.clear()
        self.stream.close()
        self.context = None


class InferHandle:
    """One inference in flight (from :meth:`TensorRTBackend.infer_async`).

    :meth:`wait` synchronizes the request's stream and returns the outputs in layout order as NumPy *views* of
    the request's host memory (no copy); they stay valid until :meth:`release` hands the request back, so the
    consumer postprocesses first and releases after. ``with handle as outputs:`` does both.
    """

    def __init__(self, backend: "TensorRTBackend", request: _Request, shapes: Dict[str, Tuple[int, ...]]) -> None:
        self._backend, self._request, self._shapes = backend, request, shapes
        self._outputs: Optional[List[np.ndarray]] = None

    def wait(self) -> List[np.ndarray]:
        """Outputs in layout order (views; valid until :meth:`release`)."""
        if self._outputs is None:
            if self._request is None:
                raise RuntimeError("InferHandle.wait() after release()")
            self._request.stream.synchronize()
            plan = self._backend._plan
            self._outputs = [view(self._request.arrays[o], plan[o].dtype, self._shapes[o])
                             for o in self._backend._outputs]
        return self._outputs

    def release(self) -> None:
        """Give the request back (idempotent; waits for it first); the output views must not be used afterwards."""
        if self._request is not None:
            if self._outputs is None:
                self._request.stream.synchronize()
            self._outputs = None
            self._backend._pool.put(self._request)
            self._request = None

    def __enter__(self) -> List[np.ndarray]:
        return self.wait()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@register_backend("tensorrt")
class TensorRTBackend:
    """A TensorRT engine behind the backend protocol (see :mod:`edge_detect.backends.base`).

    Args:
        path: ``.engine`` / ``.plan`` / ``.trt`` file with its ``<path>.json`` metadata sidecar.
        device: CUDA device index (made current on every call).
        cuda_graph: capture ``execute_async_v3`` in a CUDA graph and replay it (engines whose input shape is
            fixed: static, or a profile with min = max). Falls back to plain enqueue, with one warning, when
            the engine cannot be captured.
        streams: execution contexts / CUDA streams, i.e. batches that can be in flight at once (``infer_async``).
        unified_memory: one managed buffer per tensor and no copies (``None``: on integrated GPUs, i.e. Jetson).
        device_path: take the device path (module doc): ``input_spec.device`` becomes ``"cuda:<device>"`` and the
            :class:`~edge_detect.detector.Detector` hands frames to :meth:`preprocess_device` /
            :meth:`infer_device`. Needs cuda-python's NVRTC (the letterbox kernel is compiled at load) and a
            float32 or uint8 input. Default off: host batches, as before.

    Attributes:
        metadata: the engine's :class:`ModelMetadata`.
        input_spec: input name, shape (``-1`` where dynamic), dtype and format.
        profile: the input's :class:`~edge_detect.backends.buffers.ShapeProfile` (min = max when static).
        num_requests: ``streams``.
        uses_cuda_graph: whether inference replays a CUDA graph (``False`` after a failed capture).
        unified_memory: whether the buffers are managed memory (no copies).

    Raises:
        MissingDependencyError: tensorrt / cuda-python missing. ModelLoadError: engine or metadata unreadable,
        TensorRT refused to deserialize it or to create an execution context, or a tensor edge-detect cannot
        hold (BF16 / FP8, data-dependent output shape). VersionMismatchError: built for another TensorRT/GPU
        (use :func:`edge_detect.models.open_model` with ``rebuild_on_mismatch=True`` to rebuild it).
        ConfigError: ``streams`` < 1, or more than the engine's optimization profiles on TensorRT < 9.
        BackendUnavailableError: no NVIDIA driver / GPU.
    """

    name = "tensorrt"

    def __init__(self, path: PathLike, device: int = 0, cuda_graph: bool = False, streams: int = 1,
                 unified_memory: Optional[bool] = None, device_path: bool = False) -> None:
        self._closed = True
        self._inputs: Any = None
        self._requests: List[_Request] = []
        self._pool: "queue.SimpleQueue[_Request]" = queue.SimpleQueue()
        self._engine: Any = None
        self._runtime: Any = None
        self.uses_cuda_graph = False
        self.unified_memory = False
        self.path = Path(path)
        self.device = int(device)
        if int(streams) < 1:
            raise ConfigError(f"streams: expected >= 1, got {streams}")
        self.num_requests = int(streams)
        try:
            self._load(bool(cuda_graph), unified_memory)
            if device_path:
                self._start_device_path()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------ loading
    def _load(self, cuda_graph: bool, unified_memory: Optional[bool]) -> None:
        trt = _trt()
        _cuda.set_device(self.device)
        self.metadata = read_engine_metadata(self.path)
        here = runtime_info(self.device)
        check_compatible(self.path, self.metadata, here)
        self._deserialize(trt)
        self._specs = self._tensor_specs(trt)
        inputs = [s for s in self._specs if s.is_input]
        if len(inputs) != 1:
            raise ModelLoadError(f"{self.path.name}: expected 1 input tensor, got {[s.name for s in inputs]}")
        self._input = inputs[0]
        self._outputs = order_outputs([s.name for s in self._specs if not s.is_input],
                                      self.metadata.output_layout)
        self.profile = self._profile()
        self.input_spec = InputSpec(self._input.name, self._input.shape, self._input.dtype,
                                    self.metadata.input_format)
        self._check_format()
        self.unified_memory = here.integrated if unified_memory is None else bool(unified_memory)
        self._closed = False
        for index in range(self.num_requests):
            self._requests.append(self._new_request(index))
        for request in self._requests:
            self._pool.put(request)
        fixed = self.profile.min == self.profile.max
        self.uses_cuda_graph = bool(cuda_graph) and fixed
        if cuda_graph and not fixed:
            LOGGER.warning("cuda_graph: %s accepts several input shapes (profile min %s, max %s); running without "
                        "CUDA graph", self.path.name, self.profile.min, self.profile.max)
        LOGGER.info("loaded %s: input %s %s %s, layout %s, precision %s, %d request(s)%s", self.path.name,
                 self._input.name, self._input.shape, self._input.dtype, self.metadata.output_layout,
                 self.metadata.precision, self.num_requests, ", unified memory" if self.unified_memory else "")

    def _deserialize(self, trt: Any) -> None:
        info = engine_info(self.metadata)
        logger = init_plugins(trt)  # plugin creators (EfficientNMS_TRT) before deserializing
        self._runtime = trt.Runtime(logger)
        if info.version_compatible:
            self._runtime.engine_host_code_allowed = True  # the engine embeds its lean runtime
        dla = info.build.get("dla")
        if dla is not None:
            self._runtime.DLA_core = int(dla)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ModelLoadError(f"TensorRT could not deserialize {self.path.name} (see the TensorRT log above)")

    def _tensor_specs(self, trt: Any) -> List[TensorSpec]:
        engine = self._engine
        specs = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype))
            except TypeError:  # BF16, FP8, INT4: no NumPy type
                raise ModelLoadError(f"{self.path.name}: tensor '{name}' is {getattr(trt_dtype, 'name', trt_dtype)}, "
                                     "which has no NumPy type: expected float32 / float16 / int32 / int64 / uint8 "
                                     "I/O (export the model with float32 outputs)") from None
            specs.append(TensorSpec(name, tuple(engine.get_tensor_shape(name)), dtype, is_input))
        return specs

    def _profile(self) -> ShapeProfile:
        if not self._input.dynamic:
            return ShapeProfile.static(self._input.shape)
        lo, opt, hi = self._engine.get_tensor_profile_shape(self._input.name, 0)
        return ShapeProfile(tuple(lo), tuple(opt), tuple(hi))

    def _check_format(self) -> None:
        fmt, spec = self.metadata.input_format, self._input
        want = (np.dtype(np.uint8),) if fmt == "uint8_nhwc_bgr" else (np.dtype(np.float32), np.dtype(np.float16))
        channels = spec.shape[3] if fmt == "uint8_nhwc_bgr" else spec.shape[1]
        if spec.dtype not in want or len(spec.shape) != 4 or channels != 3:
            raise ModelLoadError(f"{self.path.name}: metadata says input {fmt}, but the engine input is "
                                 f"{spec.dtype} {spec.shape}")
        info = engine_info(self.metadata)
        if info.input_name and info.input_name != spec.name:
            raise ModelLoadError(f"{self.path.name}: metadata input '{info.input_name}' but the engine's is "
                                 f"'{spec.name}' (sidecar from another engine?)")

    def _new_request(self, index: int) -> _Request:
        """Execution context ``index`` with its stream and buffers for the profile's max shape, bound once."""
        context = self._engine.create_execution_context()
        if context is None:
            raise ModelLoadError(f"TensorRT could not create execution context {index + 1} of {self.num_requests} "
                                 f"for {self.path.name} (out of GPU memory? try fewer streams)")
        request = _Request(context, _cuda.Stream())
        try:
            self._claim_profile(request, index)
            self._set_shape(request, self.profile.max)
            if index == 0:
                self._plan: Dict[str, Allocation] = self._plan_allocations(request)
            self._bind(request)
        except BaseException:
            request.close()
            raise
        return request

    def _claim_profile(self, request: _Request, index: int) -> None:
        """TensorRT < 9 assigns profile 0 to the first context only; the others must claim their own."""
        if getattr(request.context, "active_optimization_profile", 0) >= 0:
            return
        trt = _trt()
        if not request.context.set_optimization_profile_async(index, request.stream.handle):
            raise ConfigError(
                f"streams={self.num_requests}: TensorRT {trt.__version__} gives each concurrent execution context "
                f"of a dynamic-shape engine its own optimization profile, and {self.path.name} has "
                f"{self._engine.num_optimization_profiles}; use streams=1 (or TensorRT >= 9)")
        request.stream.synchronize()

    def _plan_allocations(self, request: _Request) -> Dict[str, Allocation]:
        """Byte sizes for the profile's max shape; data-dependent output shapes are refused."""
        max_shapes = {s.name: tuple(request.context.get_tensor_shape(s.name)) for s in self._specs
                      if not s.is_input}
        dependent = {n: s for n, s in max_shapes.items() if any(d < 0 for d in s)}
        if dependent:
            raise ModelLoadError(f"{self.path.name}: output(s) {dependent} have data-dependent shapes: expected "
                                 "fixed-size outputs (edge-detect's in-graph NMS pads to max_det)")
        max_shapes[self._input.name] = self.profile.max
        return plan_allocations(self._specs, max_shapes)

    def _bind(self, request: _Request) -> None:
        """Allocate the request's memory (pinned + device, or managed) and bind it to its context."""
        for name, alloc in self._plan.items():
            if self.unified_memory:
                managed = _cuda.ManagedBuffer(alloc.nbytes)
                request.owners.append(managed)
                managed.attach(request.stream)  # host access while this stream is idle (Jetson)
                request.arrays[name], ptr = managed.array, managed.ptr
                request.bound[name] = managed
            else:
                host, dev = _cuda.HostBuffer(alloc.nbytes), _cuda.DeviceBuffer(alloc.nbytes)
                request.owners += [host, dev]
                request.host[name], request.device[name] = host, dev
                request.arrays[name], ptr = host.array, dev.ptr
                request.bound[name] = dev
            if not request.context.set_tensor_address(name, ptr):
                raise ModelLoadError(f"{self.path.name}: set_tensor_address failed for '{name}'")
        request.stream.synchronize()  # the attachments are stream-ordered

    def _set_shape(self, request: _Request, shape: Tuple[int, ...]) -> None:
        if self._input.dynamic and not request.context.set_input_shape(self._input.name, shape):
            raise DataError(f"input '{self._input.name}': TensorRT rejected shape {shape}")
        request.shape = tuple(shape)

    # ------------------------------------------------------------------------------------------ inference
    def _prepare(self, batch: np.ndarray) -> np.ndarray:
        arr = np.asarray(batch)
        if self._input.dtype == np.uint8 and arr.dtype != np.uint8:
            raise DataError(f"input '{self._input.name}': expected uint8 NHWC BGR (uint8_nhwc_bgr engine), "
                            f"got {arr.dtype}")
        shape = self._input.check(arr.shape)
        self.profile.check(self._input.name, shape)
        return arr

    def _enqueue(self, request: _Request) -> None:
        if not request.context.execute_async_v3(request.stream.handle):
            raise ModelLoadError(f"{self.path.name}: execute_async_v3 failed (see the TensorRT log)")

    def _run(self, request: _Request) -> None:
        if self.uses_cuda_graph and request.graph is None:
            self._enqueue(request)  # one plain run first, as TensorRT requires before capture
            request.stream.synchronize()
            try:
                request.graph = _cuda.CudaGraph(
                    request.stream, lambda s: bool(request.context.execute_async_v3(s.handle)))
            except _cuda.GraphCaptureError as exc:
                LOGGER.warning("cuda_graph: %s cannot be captured (%s); running with plain enqueue", self.path.name,
                            exc)
                self.uses_cuda_graph = False
        if request.graph is not None and self.uses_cuda_graph:
            request.graph.launch(request.stream)
        else:
            self._enqueue(request)

    def _submit(self, request: _Request, arr: np.ndarray) -> Dict[str, Tuple[int, ...]]:
        """Queue input copy, inference and output copies on the request's stream; returns the output shapes."""
        if arr.shape != request.shape:
            self._set_shape(request, arr.shape)
        name = self._input.name
        host_in = view(request.arrays[name], self._input.dtype, arr.shape)
        np.copyto(host_in, arr, casting="same_kind")
        if not self.unified_memory:
            request.stream.copy_htod(request.device[name], request.host[name], host_in.nbytes)
        return self._run_and_fetch(request)

    def _run_and_fetch(self, request: _Request) -> Dict[str, Tuple[int, ...]]:
        """Queue the inference and the output copies on the request's stream; returns the output shapes."""
        self._run(request)
        shapes = {o: tuple(request.context.get_tensor_shape(o)) for o in self._outputs}
        if not self.unified_memory:
            for o in self._outputs:
                nbytes = self._plan[o].dtype.itemsize * int(np.prod(shapes[o]))
                request.stream.copy_dtoh(request.host[o], request.device[o], nbytes)
        return shapes

    def infer_async(self, batch: np.ndarray) -> InferHandle:
        """Start inference on ``batch`` on a free request and return at once (blocks only while all
        :attr:`num_requests` are in flight). ``batch`` is copied into the request's memory before returning.

        Raises:
            DataError: wrong dtype/shape, or a shape outside the engine's profile.
        """
        if self._closed:
            raise ModelLoadError(f"{self.path.name}: backend used after close()")
        _cuda.set_device(self.device)  # every call: one thread may drive engines on several GPUs
        arr = self._prepare(batch)
        request = self._pool.get()
        try:
            shapes = self._submit(request, arr)
        except BaseException:
            self._pool.put(request)
            raise
        return InferHandle(self, request, shapes)

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run one preprocessed batch.

        Args:
            batch: ``input_spec`` shaped: float ``(B, 3, H, W)`` RGB in ``[0, 1]`` or uint8 ``(B, H, W, 3)`` BGR.

        Returns:
            ``[pred (B, N, 5+nc)]`` (raw) or ``[num_dets (B,1) int32, boxes (B,K,4) xyxy letterbox px,
            scores (B,K), classes (B,K) int32]`` (nms); new arrays, not views of the buffers.

        Raises:
            DataError: wrong dtype/shape, or a shape outside the engine's profile.
        """
        handle = self.infer_async(batch)
        try:
            return [out.copy() for out in handle.wait()]
        finally:
            handle.release()

    # ------------------------------------------------------------------------------------------ device path
    def _start_device_path(self) -> None:
        from edge_detect.backends.device_input import DeviceInput

        self._inputs = DeviceInput(self.device, self.input_spec.format, self.input_spec.dtype)
        spec = self.input_spec
        self.input_spec = InputSpec(spec.name, spec.shape, spec.dtype, spec.format, device=f"cuda:{self.device}")

    def preprocess_device(self, images: Any, input_hw: Tuple[int, int], stride: int, auto: bool) -> DeviceBatch:
        """Upload and letterbox frames (host BGR ``uint8`` arrays and/or device frames with the
        ``__cuda_array_interface__``) into a device batch of this engine's input (a static batch is padded)
        (:meth:`DeviceInput.prepare <edge_detect.backends.device_input.DeviceInput.prepare>`).

        Raises:
            ConfigError: the device path is off. DataError: an invalid image, or a batch shape outside the
                engine's profile.
        """
        if self._inputs is None:
            raise ConfigError(f"{self.path.name}: the device path is off; expected device_path=True to call "
                              "preprocess_device / infer_device")
        static = self.input_spec.batch if self.input_spec.batch > 0 else None
        batch = self._inputs.prepare(images, input_hw, stride, auto, rows=static)
        self.profile.check(self._input.name, self._input.check(batch.data.shape))
        return batch

    def infer_device(self, batch: DeviceBatch) -> List[Detections]:
        """Run the engine on a device batch (module doc: the request's stream waits for it, a device-to-device copy
        into the bound input, only the outputs come back) and postprocess with ``batch.nms``.

        Returns:
            One :class:`~edge_detect.types.Detections` per real image, in original-frame pixels.
        """
        if self._closed:
            raise ModelLoadError(f"{self.path.name}: backend used after close()")
        data = batch.data
        _cuda.set_device(self.device)
        request = self._pool.get()
        try:
            if data.shape != request.shape:
                self._set_shape(request, data.shape)
            self._inputs.consume(data, request.stream, request.bound[self._input.name])
            handle = InferHandle(self, request, self._run_and_fetch(request))
        except BaseException:
            self._pool.put(request)
            raise
        with handle as outputs:
            return postprocess(outputs, batch.infos, self.metadata.output_layout, head=self.metadata.head,
                               **batch.nms)

    # ------------------------------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the CUDA graphs, buffers, streams, contexts, engine and runtime (idempotent)."""
        if self._inputs is not None:
            self._inputs.close()
            self._inputs = None
        for request in self._requests:
            request.close()
        self._requests.clear()
        self._pool = queue.SimpleQueue()
        self._engine = None  # TensorRT objects: contexts before engine before runtime
        self._runtime = None
        self._closed = True

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TensorRTBackend({self.path.name}, input={self.input_spec.shape} {self.input_spec.dtype}, "
                f"layout={self.metadata.output_layout}, requests={self.num_requests})")
