"""The few CUDA runtime pieces the TensorRT backend needs, each owning its resource.

Through cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` in cuda-python < 12.6),
imported lazily: ``pip install 'edge-detect[tensorrt]'``; on Jetson, JetPack's cuda-python. Every function
used here has the same signature and return in cuda-python 11.8, 12.x and 13.x (``cudaGraphInstantiate``
does not: ``(graph, logBuffer, bufferSize)`` in 11.x, ``(graph, flags)`` from 12.0, so graphs are
instantiated with ``cudaGraphInstantiateWithFlags(graph, 0)``).

* :func:`call`: the one place cudart is called and CUDA status codes become exceptions (:class:`CudaError`,
  one line: call, error name, CUDA's own message, and a hint for a missing or too old driver). A missing
  driver library (cuda-bindings' ``RuntimeError: Failed to dlopen libcuda.so.1``) becomes
  :class:`~edge_detect.errors.BackendUnavailableError` too.
* :class:`DeviceBuffer` / :class:`HostBuffer` (page-locked, so async copies really are async) /
  :class:`ManagedBuffer` (unified memory, one address for host and device: Jetson's integrated GPU shares the
  host's memory, so no copies are needed): own one allocation, free it in :meth:`close` (idempotent), usable
  as context managers.
* :class:`Stream`: one non-blocking CUDA stream (no implicit sync with the legacy default stream);
  :meth:`Stream.copy_htod` / :meth:`Stream.copy_dtoh` / :meth:`Stream.copy_dtod` queue async copies (sizes checked
  against both buffers first); :meth:`Stream.wait` makes it wait for an event of another stream.
  :class:`Event`: a timing-free event to wait for a point in a stream.
* :class:`CudaGraph`: capture of work queued on a stream, replayed with one launch. A capture that fails
  (the enqueue reports failure, or CUDA invalidates the capture) ends the capture, destroys any graph,
  clears the sticky CUDA error and raises :class:`GraphCaptureError`, so the caller can fall back to plain
  enqueue (what ``trtexec`` does).
* :func:`device_props` / :func:`device_info`: GPU name, compute capability (recorded in engine metadata),
  integrated or not; :func:`set_device`.
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional, Tuple

import numpy as np

from edge_detect._optional import require
from edge_detect.errors import BackendUnavailableError, MissingDependencyError

__all__ = ["CudaError", "GraphCaptureError", "runtime", "call", "cuda_call", "DeviceBuffer", "HostBuffer",
           "ManagedBuffer", "Stream", "Event", "CudaGraph", "DeviceProps", "device_props", "device_info", "set_device"]

LOGGER = logging.getLogger(__name__)

_RT: Optional[ModuleType] = None
_DRIVER_HINTS = {
    "cudaErrorInsufficientDriver": " (the NVIDIA driver is older than this cuda-python's CUDA: cuda-python 13 "
                                   "needs a CUDA 13 driver; pip install 'cuda-python<13' for a CUDA 12 driver)",
    "cudaErrorNoDevice": " (no NVIDIA GPU visible: check nvidia-smi and CUDA_VISIBLE_DEVICES)",
}


class CudaError(BackendUnavailableError):
    """A CUDA runtime call failed (out of memory, no device, driver too old...)."""


class GraphCaptureError(CudaError):
    """Work could not be captured into a CUDA graph (the stream is out of capture mode, the error cleared)."""


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
    return f"{name} ({int(err)}){': ' + text if text else ''}{_DRIVER_HINTS.get(name, '')}"


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


def _invoke(name: str, *args: Any) -> Any:
    """``runtime().<name>(*args)``, with a missing driver library mapped to BackendUnavailableError."""
    try:
        return getattr(runtime(), name)(*args)
    except RuntimeError as exc:  # cuda-bindings loads libcuda lazily: "Failed to dlopen libcuda.so.1"
        raise BackendUnavailableError(
            f"{name}: expected an NVIDIA driver (libcuda.so.1), got {exc}; is this a machine with an NVIDIA GPU "
            "and its driver installed?") from exc


def call(name: str, *args: Any, what: Optional[str] = None) -> Any:
    """Call cudart function ``name`` with ``args`` and return its value(s) (see :func:`cuda_call`).

    Raises:
        CudaError: CUDA returned an error. BackendUnavailableError: no driver library.
    """
    return cuda_call(_invoke(name, *args), what or name)


def clear_error() -> None:
    """Reset CUDA's last-error state (``cudaGetLastError``), e.g. after a failed capture."""
    _invoke("cudaGetLastError")


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
        self.ptr = int(call("cudaMalloc", self.nbytes, what=f"cudaMalloc({self.nbytes})"))
        self._closed = False

    def upload(self, array: np.ndarray) -> None:
        """Synchronous copy of a C-contiguous host array into the start of the buffer."""
        arr = np.ascontiguousarray(array)
        if arr.nbytes > self.nbytes:
            raise CudaError(f"upload: expected at most {self.nbytes} bytes, got {arr.nbytes}")
        call("cudaMemcpy", self.ptr, arr.ctypes.data, arr.nbytes, runtime().cudaMemcpyKind.cudaMemcpyHostToDevice,
             what="cudaMemcpy H2D")

    def _free(self) -> None:
        call("cudaFree", self.ptr)

    def __int__(self) -> int:
        return self.ptr


class HostBuffer(_Owner):
    """``nbytes`` of page-locked host memory (``cudaMallocHost``), seen as a 1-D uint8 :attr:`array`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(call("cudaMallocHost", self.nbytes, what=f"cudaMallocHost({self.nbytes})"))
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
        call("cudaFreeHost", self.ptr)

    def __int__(self) -> int:
        return self.ptr


class ManagedBuffer(_Owner):
    """``nbytes`` of managed (unified) memory (``cudaMallocManaged``): :attr:`ptr` is valid on host and device,
    :attr:`array` is its 1-D uint8 host view.

    On devices without concurrent managed access (Jetson: ``concurrentManagedAccess == 0``) the host may only
    touch managed memory while no kernel uses it; :meth:`attach` ties the buffer to one stream
    (``cudaMemAttachSingle``), after which the host may touch it whenever that stream is idle.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        rt = runtime()
        self.ptr = int(call("cudaMallocManaged", self.nbytes, rt.cudaMemAttachGlobal,
                            what=f"cudaMallocManaged({self.nbytes})"))
        self._closed = False
        raw = (ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self.ptr)
        self._array: Optional[np.ndarray] = np.ctypeslib.as_array(raw)[:self.nbytes]

    @property
    def array(self) -> np.ndarray:
        """uint8 ``(nbytes,)`` host view (invalid after :meth:`close`; touch it only when its stream is idle)."""
        if self._array is None:
            raise CudaError("managed buffer used after close()")
        return self._array

    def attach(self, stream: "Stream") -> None:
        """Tie the buffer to ``stream`` (``cudaStreamAttachMemAsync``, whole allocation, single stream); takes
        effect in stream order: synchronize ``stream`` before the host touches the buffer."""
        call("cudaStreamAttachMemAsync", stream.raw, self.ptr, 0, runtime().cudaMemAttachSingle,
             what="cudaStreamAttachMemAsync")

    def _free(self) -> None:
        self._array = None
        call("cudaFree", self.ptr)

    def __int__(self) -> int:
        return self.ptr


def _check_copy(what: str, nbytes: int, *owners: Any) -> int:
    n = int(nbytes)
    small = [o for o in owners if n > o.nbytes]
    if n < 0 or small:
        raise CudaError(f"{what}: expected 0..{min(o.nbytes for o in owners)} bytes (the buffers' sizes), got {n}")
    return n


class Stream(_Owner):
    """One non-blocking CUDA stream (``cudaStreamNonBlocking``); :attr:`handle` is the integer TensorRT's
    ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream = call("cudaStreamCreateWithFlags", runtime().cudaStreamNonBlocking,
                            what="cudaStreamCreateWithFlags(cudaStreamNonBlocking)")
        self._closed = False

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self) -> Any:
        """The cuda-python stream object."""
        return self._stream

    def copy_htod(self, dst: DeviceBuffer, src: HostBuffer, nbytes: int) -> None:
        """Queue ``nbytes`` host -> device (``src`` must stay unchanged until the stream ran the copy).

        Raises:
            CudaError: ``nbytes`` exceeds either buffer, or CUDA refused the copy.
        """
        n = _check_copy("copy_htod", nbytes, dst, src)
        call("cudaMemcpyAsync", dst.ptr, src.ptr, n, runtime().cudaMemcpyKind.cudaMemcpyHostToDevice,
             self._stream, what="cudaMemcpyAsync H2D")

    def copy_dtoh(self, dst: HostBuffer, src: DeviceBuffer, nbytes: int) -> None:
        """Queue ``nbytes`` device -> host (``dst`` holds them once the stream is synchronized).

        Raises:
            CudaError: ``nbytes`` exceeds either buffer, or CUDA refused the copy.
        """
        n = _check_copy("copy_dtoh", nbytes, dst, src)
        call("cudaMemcpyAsync", dst.ptr, src.ptr, n, runtime().cudaMemcpyKind.cudaMemcpyDeviceToHost,
             self._stream, what="cudaMemcpyAsync D2H")

    def copy_dtod(self, dst: Any, src: Any, nbytes: int) -> None:
        """Queue ``nbytes`` device -> device (device or managed buffers, from the start of each).

        Raises:
            CudaError: ``nbytes`` exceeds either buffer, or CUDA refused the copy.
        """
        n = _check_copy("copy_dtod", nbytes, dst, src)
        call("cudaMemcpyAsync", dst.ptr, src.ptr, n, runtime().cudaMemcpyKind.cudaMemcpyDeviceToDevice,
             self._stream, what="cudaMemcpyAsync D2D")

    def wait(self, event: "Event") -> None:
        """Make the work queued on this stream from now on wait for ``event`` (recorded on any stream), without
        blocking the host (``cudaStreamWaitEvent``)."""
        call("cudaStreamWaitEvent", self._stream, event.raw, 0, what="cudaStreamWaitEvent")

    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""
        call("cudaStreamSynchronize", self._stream)

    def _free(self) -> None:
        call("cudaStreamDestroy", self._stream)


class Event(_Owner):
    """A CUDA event without timing (``cudaEventDisableTiming``): :meth:`record` a point of a stream,
    :meth:`synchronize` waits for it, :meth:`done` polls it."""

    def __init__(self) -> None:
        self._event = call("cudaEventCreateWithFlags", runtime().cudaEventDisableTiming,
                           what="cudaEventCreateWithFlags(cudaEventDisableTiming)")
        self._closed = False

    @property
    def raw(self) -> Any:
        """The cuda-python event object."""
        return self._event

    def record(self, stream: "Stream") -> None:
        call("cudaEventRecord", self._event, stream.raw)

    def synchronize(self) -> None:
        call("cudaEventSynchronize", self._event)

    def done(self) -> bool:
        """Whether the work before the last :meth:`record` has finished (``cudaEventQuery``)."""
        err = _invoke("cudaEventQuery", self._event)
        err = err[0] if isinstance(err, tuple) else err
        if int(err) == int(runtime().cudaError_t.cudaErrorNotReady):
            return False
        cuda_call(err, "cudaEventQuery")
        return True

    def _free(self) -> None:
        call("cudaEventDestroy", self._event)


class CudaGraph(_Owner):
    """The work ``enqueue(stream)`` queues, captured once and replayed by :meth:`launch`.

    Args:
        stream: the stream to capture on (not the legacy default stream).
        enqueue: queues the work; returns ``False`` when it could not (TensorRT's ``execute_async_v3``).

    Raises:
        GraphCaptureError: the stream cannot be captured, ``enqueue`` returned ``False``, CUDA invalidated
            the capture, or the graph could not be instantiated. The capture is ended, any graph destroyed and the CUDA error
            cleared first, so the stream is usable for plain enqueue. An exception raised by ``enqueue``
            propagates unchanged, after the same clean-up.
    """

    def __init__(self, stream: Stream, enqueue: Callable[[Stream], bool]) -> None:
        rt = runtime()
        begin = _invoke("cudaStreamBeginCapture", stream.raw, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        if int(begin[0] if isinstance(begin, tuple) else begin) != int(rt.cudaError_t.cudaSuccess):
            err = begin[0] if isinstance(begin, tuple) else begin
            clear_error()
            raise GraphCaptureError(f"CUDA graph capture failed: cudaStreamBeginCapture: {_error_text(rt, err)}")
        try:
            ok = bool(enqueue(stream))
        except BaseException:
            self._end_failed_capture(rt, stream)
            raise
        result = _invoke("cudaStreamEndCapture", stream.raw)
        err, graph = result[0], (result[1] if len(result) > 1 else None)
        if not ok or int(err) != int(rt.cudaError_t.cudaSuccess):
            if graph is not None and int(err) == int(rt.cudaError_t.cudaSuccess):
                _invoke("cudaGraphDestroy", graph)
            clear_error()
            reason = "the enqueue reported failure" if not ok else f"cudaStreamEndCapture: {_error_text(rt, err)}"
            raise GraphCaptureError(f"CUDA graph capture failed: {reason}")
        result = _invoke("cudaGraphInstantiateWithFlags", graph, 0)
        if int(result[0]) != int(rt.cudaError_t.cudaSuccess):
            _invoke("cudaGraphDestroy", graph)
            clear_error()
            raise GraphCaptureError(f"CUDA graph capture failed: cudaGraphInstantiateWithFlags: "
                                    f"{_error_text(rt, result[0])}")
        self._graph, self._exec = graph, result[1]
        self._closed = False

    @staticmethod
    def _end_failed_capture(rt: ModuleType, stream: Stream) -> None:
        result = _invoke("cudaStreamEndCapture", stream.raw)
        if int(result[0]) == int(rt.cudaError_t.cudaSuccess) and len(result) > 1 and result[1] is not None:
            _invoke("cudaGraphDestroy", result[1])
        clear_error()

    def launch(self, stream: Stream) -> None:
        """Queue one replay of the captured work on ``stream``."""
        call("cudaGraphLaunch", self._exec, stream.raw)

    def _free(self) -> None:
        call("cudaGraphExecDestroy", self._exec)
        call("cudaGraphDestroy", self._graph)


@dataclass(frozen=True)
class DeviceProps:
    """What edge-detect needs to know about a CUDA device.

    Attributes:
        name: GPU name (``"NVIDIA GeForce RTX 3090"``, ``"Orin"``).
        compute_capability: ``"major.minor"``.
        integrated: an integrated GPU sharing the host's memory (Jetson).
        concurrent_managed_access: the CPU may touch managed memory while the GPU runs (0 on Jetson: managed
            buffers must then be attached to one stream and touched only when it is idle).
    """

    name: str
    compute_capability: str
    integrated: bool = False
    concurrent_managed_access: bool = True


def device_props(device: int = 0) -> DeviceProps:
    """The :class:`DeviceProps` of CUDA device ``device`` (``cudaGetDeviceProperties``)."""
    props = call("cudaGetDeviceProperties", int(device), what=f"cudaGetDeviceProperties({device})")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return DeviceProps(str(name).strip(), f"{int(props.major)}.{int(props.minor)}", bool(props.integrated),
                       bool(props.concurrentManagedAccess))


def device_info(device: int = 0) -> Tuple[str, str]:
    """``(gpu name, "major.minor" compute capability)`` of CUDA device ``device``."""
    props = device_props(device)
    return props.name, props.compute_capability


def set_device(device: int = 0) -> None:
    """Make ``device`` current for the calling thread (CUDA's current device is per host thread)."""
    call("cudaSetDevice", int(device), what=f"cudaSetDevice({device})")
