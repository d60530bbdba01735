"""TensorRT runtime backend: serialized engine + metadata sidecar -> ``infer(batch)`` on one CUDA stream.

Loading checks the engine's recorded TensorRT version and GPU against this machine first
(:mod:`edge_detect.backends.engine_meta`): a mismatch is a one-line
:class:`~edge_detect.errors.VersionMismatchError`, or, with ``rebuild_on_mismatch=True``, a rebuild from the
recorded ONNX (sha256-checked) with the recorded build options.

Each I/O tensor gets one pinned host buffer and one device buffer (owners from :mod:`._cuda`), sized for
the largest shape the engine's optimization profile allows, and bound once with ``set_tensor_address``. A
call copies the input host -> device asynchronously, runs ``execute_async_v3`` (or replays a captured CUDA
graph, ``cuda_graph=True``, static shapes only), copies the outputs back and synchronizes. Dynamic engines
get ``set_input_shape`` whenever the batch shape changes. Both output layouts (``raw`` and ``nms``) and
both input formats (float NCHW RGB, uint8 NHWC BGR) are handled, as the metadata says.

TensorRT >= 8.5 (named-tensor API), JetPack 5.1+ / 6 included. ``pip install 'edge-detect[tensorrt]'`` on a
desktop; JetPack's own TensorRT on Jetson (see ``tools/jetson/README.md``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.backends.engine_meta import (RuntimeInfo, check_compatible, engine_info, plan_rebuild, read_engine_metadata)
from edge_detect.errors import DataError, ModelLoadError, VersionMismatchError
from edge_detect.metadata import ModelMetadata
from edge_detect.backends import _cuda
from edge_detect.backends.base import InputSpec, register_backend
from edge_detect.backends.buffers import Allocation, ShapeProfile, TensorSpec, order_outputs, plan_allocations, view

__all__ = ["TensorRTBackend", "runtime_info"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _trt() -> Any:
    return require("tensorrt", "tensorrt")


def runtime_info(device: int = 0) -> RuntimeInfo:
    """TensorRT version, GPU name and compute capability of this machine (device ``device``)."""
    trt = _trt()
    gpu, cc = _cuda.device_info(device)
    return RuntimeInfo(tensorrt=str(trt.__version__), gpu=gpu, compute_capability=cc)


class _Logger:
    """Lazily created ``trt.ILogger`` forwarding to ``logging`` (one per process is enough)."""

    instance: Any = None

    @classmethod
    def get(cls, trt: Any) -> Any:
        if cls.instance is None:
            from edge_detect.deploy.tensorrt_build import make_logger  # TensorRT-free module, no torch

            cls.instance = make_logger(trt)
        return cls.instance


@register_backend("tensorrt")
class TensorRTBackend:
    """A TensorRT engine behind the backend protocol (see :mod:`edge_detect.backends.base`).

    Args:
        path: ``.engine`` / ``.plan`` / ``.trt`` file with its ``<path>.json`` metadata sidecar.
        device: CUDA device index.
        rebuild_on_mismatch: rebuild from the recorded ONNX when the engine was built for another TensorRT
            version or GPU, instead of raising :class:`VersionMismatchError`.
        cuda_graph: capture ``execute_async_v3`` in a CUDA graph and replay it (static-shape engines).

    Attributes:
        metadata: the engine's :class:`ModelMetadata`.
        input_spec: input name, shape (``-1`` where dynamic), dtype and format.
        profile: the input's :class:`~edge_detect.backends.buffers.ShapeProfile` (min = max when static).

    Raises:
        MissingDependencyError: tensorrt / cuda-python missing. ModelLoadError: engine or metadata unreadable.
        VersionMismatchError: built for another TensorRT/GPU (and ``rebuild_on_mismatch`` off).
    """

    name = "tensorrt"

    def __init__(self, path: PathLike, device: int = 0, rebuild_on_mismatch: bool = False,
                 cuda_graph: bool = False) -> None:
        self._closed = True
        self._host: Dict[str, _cuda.HostBuffer] = {}
        self._device: Dict[str, _cuda.DeviceBuffer] = {}
        self._graph: Optional[_cuda.CudaGraph] = None
        self._stream: Optional[_cuda.Stream] = None
        self._context: Any = None
        self._engine: Any = None
        self.path = Path(path)
        self.device = int(device)
        try:
            self._load(rebuild_on_mismatch, cuda_graph)
        except BaseException:
            self.close()
            raise

    def _load(self, rebuild_on_mismatch: bool, cuda_graph: bool) -> None:
        trt = _trt()
        _cuda.set_device(self.device)
        self.metadata = self._checked_metadata(rebuild_on_mismatch)
        self._runtime = trt.Runtime(_Logger.get(trt))
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
        self._use_graph = bool(cuda_graph) and not self._input.dynamic
        if cuda_graph and self._input.dynamic:
            log.warning("cuda_graph: %s has dynamic shapes; running without CUDA graph", self.path.name)
        log.info("loaded %s: input %s %s %s, layout %s, precision %s", self.path.name, self._input.name,
                 self._input.shape, self._input.dtype, self.metadata.output_layout, self.metadata.precision)

    # ------------------------------------------------------------------------------------------ loading
    def _checked_metadata(self, rebuild: bool) -> ModelMetadata:
        meta = read_engine_metadata(self.path)
        try:
            check_compatible(self.path, meta, runtime_info(self.device))
        except VersionMismatchError as exc:
            if not rebuild:
                raise
            plan = plan_rebuild(self.path, meta, reason=str(exc))
            log.warning("%s; rebuilding it from %s", exc, plan.onnx)
            from edge_detect.deploy.tensorrt_build import build_engine  # no torch on this path

            build_engine(plan.onnx, self.path, device=self.device, **dict(plan.options))
            meta = read_engine_metadata(self.path)
            check_compatible(self.path, meta, runtime_info(self.device))
        return meta

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
        if not self._use_graph:
            self._enqueue(self._stream)
            return
        if self._graph is None:
            self._enqueue(self._stream)  # one plain run first, as TensorRT requires before capture
            self._stream.synchronize()
            self._graph = _cuda.CudaGraph(self._stream, self._enqueue)
        self._graph.launch(self._stream)

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
        """Free the CUDA graph, buffers, stream, context and engine (idempotent)."""
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
        self._context = None
        self._engine = None
        self._closed = True

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TensorRTBackend({self.path.name}, input={self.input_spec.shape} {self.input_spec.dtype}, "
                f"layout={self.metadata.output_layout})")
