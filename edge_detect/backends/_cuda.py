"""The few CUDA runtime pieces the TensorRT backend needs, each owning its resource.

Through cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` in cuda-python < 12.6),
imported lazily: ``pip install 'edge-detect[tensorrt]'``; on Jetson, JetPack's cuda-python.

* :func:`cuda_call`: the one place CUDA status codes become exceptions (:class:`CudaError`, one line:
  call, error name, CUDA's own message).
* :class:`DeviceBuffer` / :class:`HostBuffer` (page-locked, so async copies really are async): own one
  allocation, free it in :meth:`close` (idempotent), usable as context managers.
* :class:`Stream`: one CUDA stream; :meth:`Stream.copy_htod` / :meth:`Stream.copy_dtoh` queue async copies.
* :class:`CudaGraph`: capture of work queued on a stream, replayed with one launch.
* :func:`device_info`: GPU name and compute capability (recorded in engine metadata).
"""
from __future__ import annotations

import ctypes
import logging
from types import ModuleType
from typing import Any, Callable, Optional, Tuple

import numpy as np

from edge_detect._optional import require
from edge_detect.errors import BackendUnavailableError, MissingDependencyError

__all__ = ["CudaError", "runtime", "cuda_call", "DeviceBuffer", "HostBuffer", "Stream", "CudaGraph",
           "device_info", "set_device"]

log = logging.getLogger(__name__)

_RT: Optional[ModuleType] = None


class CudaError(BackendUnavailableError):
    """A CUDA runtime call failed (out of memory, no device, driver too old...)."""


def runtime() -> ModuleType:
    """The CUDA runtime bindings module (imported once).

    Raises:
        MissingDependencyError: cuda-python is not installed.
    """
    global _RT
    if _RT is None:
        try:
            _RT = require("cuda.bindings.runtime", "tensorrt", package="cuda-python")
        except MissingDependencyError:
            _RT = require("cuda.cudart", "tensorrt", package="cuda-python")
    return _RT


def _error_text(rt: ModuleType, err: Any) -> str:
    name = getattr(err, "name", None) or str(err)
    try:
        text = rt.cudaGetErrorString(err)
        text = text[1] if isinstance(text, tuple) else text
        text = text.decode() if isinstance(text, bytes) else str(text)
    except (TypeError, ValueError, AttributeError):
        text = ""
    return f"{name} ({int(err)}){': ' + text if text else ''}"


def cuda_call(result: Any, what: str = "CUDA call") -> Any:
    """Check a cuda-python result ``(status, *values)`` and return the value(s).

    Args:
        result: what a ``cudart`` function returned: a tuple whose first item is the status, or a bare status.
        what: the call, for the message (``"cudaMalloc(4915200)"``).

    Returns:
        ``None`` for no value, the value for one, a tuple for several.

    Raises:
        CudaError: the status is not ``cudaSuccess``.
    """
    rt = runtime()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        raise CudaError(f"{what} failed: {_error_text(rt, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


class _Owner:
    """A resource freed exactly once, by :meth:`close` or on exit of a ``with`` block."""

    _closed = True

    def _free(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Free the resource (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._free()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "_Owner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (CudaError, MissingDependencyError, AttributeError, TypeError):  # interpreter shutdown
            pass


class DeviceBuffer(_Owner):
    """``nbytes`` of device memory (``cudaMalloc``); ``int(buf)`` / :attr:`ptr` is the device address."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(cuda_call(runtime().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))
        self._closed = False

    def upload(self, array: np.ndarray) -> None:
        """Synchronous copy of a C-contiguous host array into the start of the buffer."""
        arr = np.ascontiguousarray(array)
        if arr.nbytes > self.nbytes:
            raise CudaError(f"upload: expected at most {self.nbytes} bytes, got {arr.nbytes}")
        rt = runtime()
        cuda_call(rt.cudaMemcpy(self.ptr, arr.ctypes.data, arr.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice),
                  "cudaMemcpy H2D")

    def _free(self) -> None:
        cuda_call(runtime().cudaFree(self.ptr), "cudaFree")

    def __int__(self) -> int:
        return self.ptr


class HostBuffer(_Owner):
    """``nbytes`` of page-locked host memory (``cudaMallocHost``), seen as a 1-D uint8 :attr:`array`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(cuda_call(runtime().cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})"))
        self._closed = False
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        self._array: Optional[np.ndarray] = np.ctypeslib.as_array(raw)

    @property
    def array(self) -> np.ndarray:
        """uint8 ``(nbytes,)`` view of the buffer (invalid after :meth:`close`)."""
        if self._array is None:
            raise CudaError("host buffer used after close()")
        return self._array

    def _free(self) -> None:
        self._array = None
        cuda_call(runtime().cudaFreeHost(self.ptr), "cudaFreeHost")

    def __int__(self) -> int:
        return self.ptr


class Stream(_Owner):
    """One CUDA stream; :attr:`handle` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream = cuda_call(runtime().cudaStreamCreate(), "cudaStreamCreate")
        self._closed = False

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self) -> Any:
        """The cuda-python stream object."""
        return self._stream

    def copy_htod(self, dst: DeviceBuffer, src: HostBuffer, nbytes: int) -> None:
        """Queue ``nbytes`` host -> device."""
        rt = runtime()
        cuda_call(rt.cudaMemcpyAsync(dst.ptr, src.ptr, int(nbytes),
                                     rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "cudaMemcpyAsync H2D")

    def copy_dtoh(self, dst: HostBuffer, src: DeviceBuffer, nbytes: int) -> None:
        """Queue ``nbytes`` device -> host."""
        rt = runtime()
        cuda_call(rt.cudaMemcpyAsync(dst.ptr, src.ptr, int(nbytes),
                                     rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), "cudaMemcpyAsync D2H")

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        cuda_call(runtime().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def _free(self) -> None:
        cuda_call(runtime().cudaStreamDestroy(self._stream), "cudaStreamDestroy")


class CudaGraph(_Owner):
    """The work ``enqueue(stream)`` queues, captured once and replayed by :meth:`launch`.

    Raises:
        CudaError: capture or instantiation failed (the stream is left out of capture mode).
    """

    def __init__(self, stream: Stream, enqueue: Callable[[Stream], None]) -> None:
        rt = runtime()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            enqueue(stream)
        finally:
            graph = cuda_call(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        self._graph = graph
        try:
            self._exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise
        self._closed = False

    def launch(self, stream: Stream) -> None:
        """Queue one replay of the captured work on ``stream``."""
        cuda_call(runtime().cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def _free(self) -> None:
        rt = runtime()
        cuda_call(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
        cuda_call(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")


def device_info(device: int = 0) -> Tuple[str, str]:
    """``(gpu name, "major.minor" compute capability)`` of CUDA device ``device``."""
    rt = runtime()
    props = cuda_call(rt.cudaGetDeviceProperties(int(device)), f"cudaGetDeviceProperties({device})")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return str(name).strip(), f"{int(props.major)}.{int(props.minor)}"


def set_device(device: int = 0) -> None:
    """Make ``device`` current for this thread."""
    cuda_call(runtime().cudaSetDevice(int(device)), f"cudaSetDevice({device})")
