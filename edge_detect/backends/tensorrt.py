"""TensorRT runtime backend: serialized engine + metadata sidecar -> ``infer(batch)`` on one CUDA stream.

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

Each I/O tensor gets one pinned host buffer and one device buffer (owners from :mod:`._cuda`), sized for
the largest shape the engine's optimization profile allows, and bound once with ``set_tensor_address``. A
call copies the input host -> device asynchronously on a non-blocking stream, runs ``execute_async_v3`` (or
replays a captured CUDA graph, ``cuda_graph=True``, for engines whose input shape cannot change: static, or
a profile with min = max), copies the outputs back and synchronizes. An engine that cannot be captured is
run with plain enqueue from then on (one warning), as ``trtexec`` does. Dynamic engines get
``set_input_shape`` whenever the batch shape changes. The CUDA device is made current in every thread that
calls :meth:`TensorRTBackend.infer` (CUDA's current device is per thread). Both output layouts (``raw`` and
``nms``) and both input formats (float NCHW RGB, uint8 NHWC BGR) are handled, as the metadata says.

TensorRT >= 8.5 (named-tensor API), JetPack 5.1+ / 6 included. ``pip install 'edge-detect[tensorrt]'`` on a
desktop; JetPack's own TensorRT on Jetson (see ``tools/jetson/README.md``).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edge_detect.backends.engine_meta import RuntimeInfo, check_compatible, engine_info, read_engine_metadata
from edge_detect.backends.trt_common import import_tensorrt, init_plugins
from edge_detect.errors import DataError, ModelLoadError
from edge_detect.backends import _cuda
from edge_detect.backends.base import InputSpec, register_backend
from edge_detect.backends.buffers import Allocation, ShapeProfile, TensorSpec, order_outputs, plan_allocations, view
from edge_detect.paths import PathLike

__all__ = ["TensorRTBackend", "runtime_info"]

LOGGER = logging.getLogger(__name__)



def _trt() -> Any:
    return import_tensorrt()


def runtime_info(device: int = 0) -> RuntimeInfo:
    """TensorRT version, GPU name and compute capability of this machine (device ``device``)."""
    trt = _trt()
    gpu, cc = _cuda.device_info(device)
    return RuntimeInfo(tensorrt=str(trt.__version__), gpu=gpu, compute_capability=cc)


@register_backend("tensorrt")
class TensorRTBackend:
    """A TensorRT engine behind the backend protocol (see :mod:`edge_detect.backends.base`).

    Args:
        path: ``.engine`` / ``.plan`` / ``.trt`` file with its ``<path>.json`` metadata sidecar.
        device: CUDA device index (made current in every thread that calls :meth:`infer`).
        cuda_graph: capture ``execute_async_v3`` in a CUDA graph and replay it (engines whose input shape is
            fixed: static, or a profile with min = max). Falls back to plain enqueue, with one warning, when
            the engine cannot be captured.

    Attributes:
        metadata: the engine's :class:`ModelMetadata`.
        input_spec: input name, shape (``-1`` where dynamic), dtype and format.
        profile: the input's :class:`~edge_detect.backends.buffers.ShapeProfile` (min = max when static).
        uses_cuda_graph: whether inference replays a CUDA graph (``False`` after a failed capture).

    Raises:
        MissingDependencyError: tensorrt / cuda-python missing. ModelLoadError: engine or metadata unreadable,
        or TensorRT refused to deserialize it. VersionMismatchError: built for another TensorRT/GPU (use
        :func:`edge_detect.models.open_model` with ``rebuild_on_mismatch=True`` to rebuild it).
        BackendUnavailableError: no NVIDIA driver / GPU.
    """

    name = "tensorrt"

    def __init__(self, path: PathLike, device: int = 0, cuda_graph: bool = False) -> None:
        self._closed = True
        self._host: Dict[str, _cuda.HostBuffer] = {}
        self._device: Dict[str, _cuda.DeviceBuffer] = {}
        self._graph: Optional[_cuda.CudaGraph] = None
        self._stream: Optional[_cuda.Stream] = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._thread = threading.local()
        self.uses_cuda_graph = False
        self.path = Path(path)
        self.device = int(device)
        try:
            self._load(bool(cuda_graph))
        except BaseException:
            self.close()
            raise

    def _load(self, cuda_graph: bool) -> None:
        trt = _trt()
        self._ensure_device()
        self.metadata = read_engine_metadata(self.path)
        check_compatible(self.path, self.metadata, runtime_info(self.device))
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
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(f"TensorRT could not create an execution context for {self.path.name} "
                                 "(out of GPU memory?)")
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
        self._stream = _cuda.Stream()
        self._closed = False
        self._allocate()
        fixed = self.profile.min == self.profile.max
        self.uses_cuda_graph = bool(cuda_graph) and fixed
        if cuda_graph and not fixed:
            LOGGER.warning("cuda_graph: %s accepts several input shapes (profile min %s, max %s); running without "
                        "CUDA graph", self.path.name, self.profile.min, self.profile.max)
        LOGGER.info("loaded %s: input %s %s %s, layout %s, precision %s", self.path.name, self._input.name,
                 self._input.shape, self._input.dtype, self.metadata.output_layout, self.metadata.precision)

    def _ensure_device(self) -> None:
        """Make :attr:`device` current in the calling thread (once per thread)."""
        if getattr(self._thread, "device", None) != self.device:
            _cuda.set_device(self.device)
            self._thread.device = self.device

    # ------------------------------------------------------------------------------------------ loading
    def _tensor_specs(self, trt: Any) -> List[TensorSpec]:
        engine = self._engine
        specs = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
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

    def _allocate(self) -> None:
        """Buffers for the profile's max shape, bound once to the context."""
        self._set_shape(self.profile.max)
        max_shapes = {s.name: tuple(self._context.get_tensor_shape(s.name)) for s in self._specs if not s.is_input}
        max_shapes[self._input.name] = self.profile.max
        self._plan: Dict[str, Allocation] = plan_allocations(self._specs, max_shapes)
        for name, alloc in self._plan.items():
            self._host[name] = _cuda.HostBuffer(alloc.nbytes)
            self._device[name] = _cuda.DeviceBuffer(alloc.nbytes)
            if not self._context.set_tensor_address(name, self._device[name].ptr):
                raise ModelLoadError(f"{self.path.name}: set_tensor_address failed for '{name}'")

    def _set_shape(self, shape: Tuple[int, ...]) -> None:
        if self._input.dynamic and not self._context.set_input_shape(self._input.name, shape):
            raise DataError(f"input '{self._input.name}': TensorRT rejected shape {shape}")
        self._shape = tuple(shape)

    # ------------------------------------------------------------------------------------------ inference
    def _prepare(self, batch: np.ndarray) -> np.ndarray:
        arr = np.asarray(batch)
        if self._input.dtype == np.uint8 and arr.dtype != np.uint8:
            raise DataError(f"input '{self._input.name}': expected uint8 NHWC BGR (uint8_nhwc_bgr engine), "
                            f"got {arr.dtype}")
        shape = self._input.check(arr.shape)
        self.profile.check(self._input.name, shape)
        return arr

    def _enqueue(self, stream: _cuda.Stream) -> None:
        if not self._context.execute_async_v3(stream.handle):
            raise ModelLoadError(f"{self.path.name}: execute_async_v3 failed (see the TensorRT log)")

    def _run(self) -> None:
        assert self._stream is not None
        if self.uses_cuda_graph and self._graph is None:
            self._enqueue(self._stream)  # one plain run first, as TensorRT requires before capture
            self._stream.synchronize()
            try:
                self._graph = _cuda.CudaGraph(self._stream,
                                              lambda s: bool(self._context.execute_async_v3(s.handle)))
            except _cuda.GraphCaptureError as exc:
                LOGGER.warning("cuda_graph: %s cannot be captured (%s); running with plain enqueue", self.path.name,
                            exc)
                self.uses_cuda_graph = False
        if self._graph is not None:
            self._graph.launch(self._stream)
        else:
            self._enqueue(self._stream)

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
        if self._closed:
            raise ModelLoadError(f"{self.path.name}: backend used after close()")
        self._ensure_device()
        arr = self._prepare(batch)
        if arr.shape != self._shape:
            self._set_shape(arr.shape)
        name = self._input.name
        host_in = view(self._host[name].array, self._input.dtype, arr.shape)
        np.copyto(host_in, arr, casting="same_kind")
        assert self._stream is not None
        self._stream.copy_htod(self._device[name], self._host[name], host_in.nbytes)
        self._run()
        shapes = {o: tuple(self._context.get_tensor_shape(o)) for o in self._outputs}
        for o in self._outputs:
            nbytes = self._plan[o].dtype.itemsize * int(np.prod(shapes[o]))
            self._stream.copy_dtoh(self._host[o], self._device[o], nbytes)
        self._stream.synchronize()
        return [view(self._host[o].array, self._plan[o].dtype, shapes[o]).copy() for o in self._outputs]

    # ------------------------------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the CUDA graph, buffers, stream, context, engine and runtime (idempotent)."""
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        for owner in [*self._host.values(), *self._device.values()]:
            owner.close()
        self._host.clear()
        self._device.clear()
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._context = None  # TensorRT objects: context before engine before runtime
        self._engine = None
        self._runtime = None
        self._closed = True

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TensorRTBackend({self.path.name}, input={self.input_spec.shape} {self.input_spec.dtype}, "
                f"layout={self.metadata.output_layout})")
