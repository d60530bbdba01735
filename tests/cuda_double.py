"""A strict test double of ``cuda.bindings.runtime`` (cuda-python) over host memory.

What it checks, as the real runtime does (or more strictly, where noted):

* **Signatures**: every function's arguments are bound against the real function's signature
  (``inspect.signature(...).bind``), so a wrong argument count raises ``TypeError``. ``cuda_python="11.8"`` swaps
  in 11.8's ``cudaGraphInstantiate(graph, logBuffer, bufferSize)``.
* **Types**: pointers must be ints (a ``str`` raises ``TypeError`` as in cuda-python), sizes non-negative ints
  (``OverflowError`` for a negative one, as the real ``size_t`` conversion), copy kinds ``cudaMemcpyKind`` members,
  streams ``cudaStream_t`` / ints that name a live stream (``cudaErrorInvalidResourceHandle`` otherwise).
* **Sizes**: a copy must lie inside one live allocation at each end (``cudaErrorInvalidValue``), device ends in
  device or managed memory, host ends in page-locked or managed memory (stricter than CUDA, which also accepts
  pageable memory for ``cudaMemcpyAsync`` but then copies synchronously).
* **Devices**: allocations and streams belong to the device current in the calling thread when they were made
  (``cudaSetDevice`` is per thread). Kernel work (TensorRT's enqueue, graph launches) on a stream of another
  device than the current one fails, as the CUDA programming guide says; copies may use any device's stream.
* **Deferred execution**: work queued on a non-blocking stream (``cudaMemcpyAsync``, TensorRT's
  ``execute_async_v3`` through :meth:`FakeCudart.enqueue`, ``cudaGraphLaunch``, ``cudaEventRecord``) does not run at
  call time: it runs, in order, at ``cudaStreamSynchronize``, ``cudaEventSynchronize`` of an event recorded after
  it, ``cudaDeviceSynchronize``, or ``cudaFree*`` (which synchronize the device). A host read before the
  synchronization sees stale data, and a host buffer rewritten before its queued copy ran is copied with the new
  contents: missing synchronisation and ordering bugs show up as wrong numbers.
* **Capture**: between ``cudaStreamBeginCapture`` and ``cudaStreamEndCapture`` work is recorded into the graph,
  not run; ``cudaStreamSynchronize`` on a capturing stream invalidates the capture; every ``cudaGraphLaunch``
  queues the recorded work again.

Enums and result objects (``cudaError_t``, ``cudaStream_t``, ``cudaDeviceProp``...) are the real module's.
Attributes of the real module that are not modelled raise ``NotImplementedError`` when called; names the real
module lacks raise ``AttributeError``. The double skips (``pytest.skip``) when cuda-python is not installed.
"""
from __future__ import annotations

import ctypes
import inspect
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

__all__ = ["FakeCudart", "Alloc", "real_cudart", "unmodelled", "DEFAULT_DEVICE"]

DEFAULT_DEVICE = {"name": "Fake GPU", "major": 8, "minor": 6, "integrated": False, "concurrent_managed_access": True}


def real_cudart() -> ModuleType:
    """The installed cuda-python runtime module (skips when cuda-python is missing)."""
    try:
        import cuda.bindings.runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt  # type: ignore[no-redef]
        except ImportError:
            pytest.skip("cuda-python is not installed (pip install 'edge-detect[dev]'): no cudart surface")
    return rt


def unmodelled(owner: str, name: str, lib: str = "TensorRT") -> Callable[..., Any]:
    """A method that exists in the real library but is not modelled by the double."""
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{owner}.{name}: exists in {lib} but is not modelled by the double")

    method.__name__ = name
    return method


def cuda118_graph_instantiate(graph, logBuffer, bufferSize):  # noqa: N803 - cuda-python 11.8's signature
    """cuda-python 11.8: ``cudaGraphInstantiate(graph, char* logBuffer, size_t bufferSize)``."""


@dataclass
class Alloc:
    """One live allocation: ``kind`` is ``"device"``, ``"host"`` (page-locked) or ``"managed"``."""

    kind: str
    nbytes: int
    device: int
    buffer: Any
    stream: Optional[int] = None  # managed memory attached to one stream (cudaMemAttachSingle)


class _CudaFailure(Exception):
    """Raised inside a modelled function to return ``(error, *values)``."""

    def __init__(self, error: str, *values: Any) -> None:
        super().__init__(error)
        self.error, self.values = error, values


class FakeCudart:
    """``cuda.bindings.runtime`` over host memory (see the module doc).

    Args:
        device_limit: bytes ``cudaMalloc`` / ``cudaMallocManaged`` may hand out in all (then out of memory).
        cuda_python: ``"11.8"`` for cuda-python 11.8's ``cudaGraphInstantiate`` signature.
        devices: one dict per GPU (``name``, ``major``, ``minor``, ``integrated``, ``concurrent_managed_access``);
            default one discrete sm 8.6 "Fake GPU".
    """

    def __init__(self, device_limit: int = 1 << 30, cuda_python: str = "13",
                 devices: Optional[Sequence[Dict[str, Any]]] = None) -> None:
        self._real = real_cudart()
        for name in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode", "cudaStreamNonBlocking",
                     "cudaMemAttachGlobal", "cudaMemAttachSingle", "cudaMemAttachHost", "cudaEventDisableTiming",
                     "cudaEventDefault", "cudaStream_t", "cudaEvent_t", "cudaGraph_t", "cudaGraphExec_t",
                     "cudaDeviceProp", "cudaHostAllocDefault"):
            setattr(self, name, getattr(self._real, name))
        self.gpus = [dict(DEFAULT_DEVICE, **d) for d in (devices or [{}])]
        self.allocs: Dict[int, Alloc] = {}
        self.device: Dict[int, Any] = {}  # device pointer -> buffer (device allocations only)
        self.host: Dict[int, Any] = {}  # page-locked host pointer -> buffer
        self.managed: Dict[int, Any] = {}
        self.device_limit, self.in_use = device_limit, 0
        self.copies: List[str] = []  # "H2D" / "D2H" per cudaMemcpyAsync, at enqueue time
        self.calls: List[str] = []
        self.streams: Dict[int, int] = {}  # handle -> flags
        self.stream_device: Dict[int, int] = {}
        self.queues: Dict[int, List[Tuple[str, Callable[[], None]]]] = {}
        self.events: Dict[int, Dict[str, Any]] = {}
        self.capture: Dict[int, Dict[str, Any]] = {}
        self.graphs: Dict[int, List[Tuple[str, Callable[[], None]]]] = {}
        self.execs: Dict[int, int] = {}
        self.graph_launches = 0
        self.executed: List[str] = []  # what ran, in order ("H2D", "D2H", "enqueue:<what>", "event")
        self.last_error = self._real.cudaError_t.cudaSuccess
        self.device_now: Dict[int, int] = {}  # thread ident -> device set with cudaSetDevice
        self.missing_driver = False
        self.problems: List[str] = []  # why a call failed, for test messages
        self._next = 1000
        self._lock = threading.RLock()
        self._signatures = {n: inspect.signature(getattr(self._real, n)) for n in self._implemented()}
        if cuda_python.startswith("11"):
            self._signatures["cudaGraphInstantiate"] = inspect.signature(cuda118_graph_instantiate)

    # ------------------------------------------------------------------------------------------ plumbing
    def _implemented(self) -> List[str]:
        return [n for n in dir(type(self)) if n.startswith("cuda") and callable(getattr(type(self), n))]

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("cuda"):
            d = object.__getattribute__(self, "__dict__")
            if name in d:  # the real enums / constants (or a test's replacement)
                return d[name]
            real = d["_real"]
            if not hasattr(real, name):
                raise AttributeError(f"module 'cuda.bindings.runtime' has no attribute '{name}'")
            if name in d["_signatures"]:
                return self._checked(name, d["_signatures"][name], object.__getattribute__(self, name))
            if inspect.isroutine(getattr(real, name)):
                return unmodelled("cudart", name, "cuda-python").__get__(self)
        return object.__getattribute__(self, name)

    def _checked(self, name: str, sig: inspect.Signature, impl: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            sig.bind(*args)  # TypeError on a wrong argument count, as the real Cython function
            self.calls.append(name)
            if self.missing_driver:
                raise RuntimeError("Failed to dlopen libcuda.so.1")
            with self._lock:
                try:
                    return impl(*args)
                except _CudaFailure as failure:
                    return self._err(failure.error, *failure.values)

        return call

    def _ok(self, *values: Any) -> Tuple[Any, ...]:
        return (self.cudaError_t.cudaSuccess, *values)

    def _err(self, name: str, *values: Any) -> Tuple[Any, ...]:
        self.last_error = getattr(self.cudaError_t, name)
        return (self.last_error, *values)

    def _new_handle(self) -> int:
        self._next += 1
        return self._next

    # ------------------------------------------------------------------------------------------ argument checks
    @staticmethod
    def _int(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                return int(value)  # cudaStream_t and friends convert; str / float do not here
            except (TypeError, ValueError):
                raise TypeError(f"Provided argument is of type {type(value)} but expected an int {what}") from None
        return value

    def _size(self, value: Any) -> int:
        n = self._int(value, "size")
        if n < 0:
            raise OverflowError("can't convert negative value to size_t")
        return n

    def _kind(self, kind: Any) -> Any:
        try:
            return self.cudaMemcpyKind(int(kind))
        except (TypeError, ValueError):
            raise TypeError(f"Argument 'kind' has incorrect type (expected cudaMemcpyKind, got {type(kind)})") from None

    def current(self) -> int:
        """The device current in the calling thread (0 until ``cudaSetDevice``)."""
        return self.device_now.get(threading.get_ident(), 0)

    def stream_handle(self, stream: Any) -> int:
        """The handle of a live stream (0 = the legacy default stream); ``cudaErrorInvalidResourceHandle``."""
        handle = 0 if stream is None else self._int(stream, "stream")
        if handle and handle not in self.streams:
            raise _CudaFailure("cudaErrorInvalidResourceHandle")
        return handle

    def find(self, ptr: int, nbytes: int) -> Optional[Alloc]:
        """The live allocation holding ``[ptr, ptr + nbytes)``, or ``None``."""
        for base, alloc in self.allocs.items():
            if base <= ptr and ptr + nbytes <= base + alloc.nbytes:
                return alloc
        return None

    def region(self, ptr: int, nbytes: int, kinds: Tuple[str, ...], what: str) -> Alloc:
        """Check that ``nbytes`` at ``ptr`` lie in one live allocation of one of ``kinds`` (or fail)."""
        alloc = self.find(ptr, nbytes)
        if alloc is None or alloc.kind not in kinds:
            self.problems.append(f"{what}: {nbytes} bytes at {ptr:#x} are not inside one live "
                                 f"{'/'.join(kinds)} allocation")
            raise _CudaFailure("cudaErrorInvalidValue")
        return alloc

    # ------------------------------------------------------------------------------------------ streams, deferral
    def enqueue(self, stream: Any, work: Callable[[], None], what: str, kernel: bool = False) -> None:
        """Queue ``work`` on ``stream`` (recorded instead while capturing; run now on the legacy stream 0).

        ``kernel=True`` (TensorRT's enqueue, graph launches): the stream must belong to the current device.
        """
        handle = self.stream_handle(stream)
        if kernel and handle and self.stream_device[handle] != self.current():
            self.problems.append(f"{what}: stream of device {self.stream_device[handle]} used while device "
                                 f"{self.current()} is current")
            raise _CudaFailure("cudaErrorInvalidResourceHandle")
        if handle in self.capture:
            self.capture[handle]["work"].append((what, work))
        elif handle == 0:
            self._run_one(what, work)
        else:
            self.queues.setdefault(handle, []).append((what, work))

    def launch(self, stream: Any, work: Callable[[], None], what: str) -> Optional[str]:
        """For the TensorRT double: queue kernel work; returns the CUDA error name, or ``None`` when queued."""
        try:
            self.enqueue(stream, work, what, kernel=True)
        except _CudaFailure as failure:
            return failure.error
        return None

    def _run_one(self, what: str, work: Callable[[], None]) -> None:
        self.executed.append(what)
        work()

    def run_stream(self, handle: int, until: Optional[Callable[[], None]] = None) -> None:
        """Run what is queued on ``handle`` in order (up to and including the item ``until``)."""
        queue = self.queues.get(handle, [])
        while queue:
            what, work = queue.pop(0)
            self._run_one(what, work)
            if until is not None and work is until:
                return

    def run_all(self) -> None:
        for handle in list(self.queues):
            self.run_stream(handle)

    def pending(self, stream: Any = None) -> int:
        """Work items still queued (on ``stream``, or on every stream)."""
        if stream is not None:
            return len(self.queues.get(int(stream), []))
        return sum(len(q) for q in self.queues.values())

    # -- helpers for the TensorRT double
    def capturing(self, stream: Any) -> bool:
        return int(stream) in self.capture

    def invalidate_capture(self, stream: Any) -> None:
        self.capture[int(stream)]["invalid"] = True

    # ------------------------------------------------------------------------------------------ errors, devices
    def cudaGetErrorString(self, error):  # noqa: N802
        text = {1: b"invalid argument", 2: b"out of memory",
                35: b"CUDA driver version is insufficient for CUDA runtime version", 101: b"invalid device ordinal",
                400: b"invalid resource handle",
                901: b"operation failed due to a previous error during capture"}.get(int(error), b"no error")
        return self._ok(text)

    def cudaGetLastError(self):  # noqa: N802
        err, self.last_error = self.last_error, self.cudaError_t.cudaSuccess
        return (err,)

    def cudaGetDeviceCount(self):  # noqa: N802
        return self._ok(len(self.gpus))

    def cudaSetDevice(self, device):  # noqa: N802
        device = self._int(device, "device")
        if not 0 <= device < len(self.gpus):
            raise _CudaFailure("cudaErrorInvalidDevice")
        self.device_now[threading.get_ident()] = device
        return self._ok()

    def cudaGetDevice(self):  # noqa: N802
        return self._ok(self.current())

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        device = self._int(device, "device")
        if not 0 <= device < len(self.gpus):
            raise _CudaFailure("cudaErrorInvalidDevice", None)
        gpu, props = self.gpus[device], self.cudaDeviceProp()
        props.name = gpu["name"].encode().ljust(256, b"\x00")  # char[256], NUL-padded as CUDA fills it
        props.major, props.minor = gpu["major"], gpu["minor"]
        props.integrated = int(gpu["integrated"])
        props.concurrentManagedAccess = int(gpu["concurrent_managed_access"])
        props.managedMemory = 1
        return self._ok(props)

    def cudaDeviceSynchronize(self):  # noqa: N802
        self.run_all()
        return self._ok()

    # ------------------------------------------------------------------------------------------ memory
    def _alloc(self, kind: str, table: Dict[int, Any], size: Any) -> int:
        n = self._size(size)
        if kind != "host":
            if self.in_use + n > self.device_limit:
                raise _CudaFailure("cudaErrorMemoryAllocation", 0)
            self.in_use += n
        buf = ctypes.create_string_buffer(max(n, 1))
        ptr = ctypes.addressof(buf)
        table[ptr] = buf
        self.allocs[ptr] = Alloc(kind, n, self.current(), buf)
        return ptr

    def _free(self, ptr: Any, kind: str, table: Dict[int, Any]) -> None:
        ptr = self._int(ptr, "pointer")
        alloc = self.allocs.get(ptr)
        if alloc is None or alloc.kind != kind:
            raise _CudaFailure("cudaErrorInvalidValue")
        self.run_all()  # cudaFree / cudaFreeHost synchronize the device
        del self.allocs[ptr], table[ptr]
        if kind != "host":
            self.in_use -= alloc.nbytes

    def cudaMalloc(self, size):  # noqa: N802
        return self._ok(self._alloc("device", self.device, size))

    def cudaMallocHost(self, size):  # noqa: N802
        return self._ok(self._alloc("host", self.host, size))

    def cudaMallocManaged(self, size, flags):  # noqa: N802
        if int(flags) not in (int(self.cudaMemAttachGlobal), int(self.cudaMemAttachHost)):
            raise _CudaFailure("cudaErrorInvalidValue", 0)
        return self._ok(self._alloc("managed", self.managed, size))

    def cudaFree(self, devPtr):  # noqa: N802, N803
        ptr = self._int(devPtr, "pointer")
        self._free(ptr, "managed" if ptr in self.managed else "device", self.managed if ptr in self.managed
                   else self.device)
        return self._ok()

    def cudaFreeHost(self, ptr):  # noqa: N802
        self._free(ptr, "host", self.host)
        return self._ok()

    def cudaStreamAttachMemAsync(self, stream, devPtr, length, flags):  # noqa: N802, N803
        handle = self.stream_handle(stream)
        ptr = self._int(devPtr, "pointer")
        alloc = self.allocs.get(ptr)
        if alloc is None or alloc.kind != "managed" or self._size(length) not in (0, alloc.nbytes):
            raise _CudaFailure("cudaErrorInvalidValue")
        single = int(flags) == int(self.cudaMemAttachSingle)
        self.enqueue(handle, lambda: setattr(alloc, "stream", handle if single else None), "attach")
        return self._ok()

    _DIRECTION = {"cudaMemcpyHostToDevice": (("device", "managed"), ("host", "managed"), "H2D"),
                  "cudaMemcpyDeviceToHost": (("host", "managed"), ("device", "managed"), "D2H"),
                  "cudaMemcpyDeviceToDevice": (("device", "managed"), ("device", "managed"), "D2D")}

    def _copy_args(self, dst: Any, src: Any, count: Any, kind: Any, what: str,
                   pageable: bool = False) -> Tuple[int, int, int, str]:
        """Checked ``(dst, src, count, label)``; ``pageable``: a host end outside every allocation is pageable
        memory the double cannot size (allowed for the synchronous ``cudaMemcpy``)."""
        dst, src = self._int(dst, "dst pointer"), self._int(src, "src pointer")
        n, kind = self._size(count), self._kind(kind)
        if kind.name not in self._DIRECTION:
            raise _CudaFailure("cudaErrorInvalidMemcpyDirection")
        dst_kinds, src_kinds, label = self._DIRECTION[kind.name]
        for ptr, kinds, end in ((dst, dst_kinds, "destination"), (src, src_kinds, "source")):
            if pageable and "host" in kinds and self.find(ptr, 1) is None:
                continue
            self.region(ptr, n, kinds, f"{what} {label} {end}")
        return dst, src, n, label

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        dst, src, n, label = self._copy_args(dst, src, count, kind, "cudaMemcpyAsync")
        handle = self.stream_handle(stream)
        self.copies.append(label)
        self.enqueue(handle, lambda: ctypes.memmove(dst, src, n), label)
        return self._ok()

    def cudaMemcpy(self, dst, src, count, kind):  # noqa: N802
        dst, src, n, label = self._copy_args(dst, src, count, kind, "cudaMemcpy", pageable=True)
        self.executed.append(label)
        ctypes.memmove(dst, src, n)
        return self._ok()

    # ------------------------------------------------------------------------------------------ streams, events
    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        handle = self._new_handle()
        self.streams[handle] = int(flags)
        self.stream_device[handle] = self.current()
        return self._ok(self.cudaStream_t(handle))

    def cudaStreamCreate(self):  # noqa: N802
        return self.cudaStreamCreateWithFlags(0)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        handle = self.stream_handle(stream)
        if handle in self.capture:  # illegal while capturing; invalidates the capture
            self.capture[handle]["invalid"] = True
            raise _CudaFailure("cudaErrorStreamCaptureUnsupported")
        self.run_stream(handle)
        return self._ok()

    def cudaStreamDestroy(self, stream):  # noqa: N802
        handle = self.stream_handle(stream)
        self.run_stream(handle)  # destroying a stream lets its queued work finish
        del self.streams[handle], self.stream_device[handle]
        self.queues.pop(handle, None)
        return self._ok()

    def cudaEventCreateWithFlags(self, flags):  # noqa: N802
        handle = self._new_handle()
        self.events[handle] = {"device": self.current(), "stream": None, "marker": None, "done": True}
        return self._ok(self.cudaEvent_t(handle))

    def _event(self, event: Any) -> Dict[str, Any]:
        ev = self.events.get(self._int(event, "event"))
        if ev is None:
            raise _CudaFailure("cudaErrorInvalidResourceHandle")
        return ev

    def cudaEventRecord(self, event, stream):  # noqa: N802
        ev, handle = self._event(event), self.stream_handle(stream)
        if handle and self.stream_device[handle] != ev["device"]:
            self.problems.append("cudaEventRecord: event and stream of different devices")
            raise _CudaFailure("cudaErrorInvalidResourceHandle")

        record = {"done": False}  # this record's own completion (the event may be recorded again meanwhile)

        def marker() -> None:
            record["done"] = True
            if ev["marker"] is marker:
                ev["done"] = True

        ev.update(stream=handle, marker=marker, done=False, record=record)
        self.enqueue(handle, marker, "event")
        return self._ok()

    def cudaEventSynchronize(self, event):  # noqa: N802
        ev = self._event(event)
        if not ev["done"] and ev["stream"]:
            self.run_stream(ev["stream"], until=ev["marker"])
        return self._ok()

    def cudaEventQuery(self, event):  # noqa: N802
        ev = self._event(event)
        return self._ok() if ev["done"] else (self.cudaError_t.cudaErrorNotReady,)

    def cudaStreamWaitEvent(self, stream, event, flags):  # noqa: N802
        handle, ev = self.stream_handle(stream), self._event(event)
        # waits for the record current at this call, as CUDA does (a later record of the event does not count)
        other, marker, record = ev["stream"], ev["marker"], ev.get("record", {"done": True})
        self.enqueue(handle, lambda: self.run_stream(other, until=marker) if other and not record["done"] else None,
                     "wait")
        return self._ok()

    def cudaEventDestroy(self, event):  # noqa: N802
        self._event(event)
        del self.events[self._int(event, "event")]
        return self._ok()

    # ------------------------------------------------------------------------------------------ graphs
    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        handle = self.stream_handle(stream)
        if handle in self.capture or not handle:
            raise _CudaFailure("cudaErrorIllegalState" if handle else "cudaErrorStreamCaptureUnsupported")
        self.capture[handle] = {"work": [], "invalid": False}
        return self._ok()

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        cap = self.capture.pop(self.stream_handle(stream))
        if cap["invalid"]:
            raise _CudaFailure("cudaErrorStreamCaptureInvalidated", None)
        handle = self._new_handle()
        self.graphs[handle] = cap["work"]
        return self._ok(self.cudaGraph_t(handle))

    def cudaGraphInstantiate(self, graph, *rest):  # noqa: N802 - (graph, flags); 11.8: (graph, log, size)
        return self.cudaGraphInstantiateWithFlags(graph, 0)

    def cudaGraphInstantiateWithFlags(self, graph, flags):  # noqa: N802
        graph = self._int(graph, "graph")
        if graph not in self.graphs:
            raise _CudaFailure("cudaErrorInvalidValue", None)
        handle = self._new_handle()
        self.execs[handle] = graph
        return self._ok(self.cudaGraphExec_t(handle))

    def cudaGraphLaunch(self, graphExec, stream):  # noqa: N802, N803
        exe = self._int(graphExec, "graphExec")
        if exe not in self.execs:
            raise _CudaFailure("cudaErrorInvalidResourceHandle")
        handle = self.stream_handle(stream)
        self.graph_launches += 1
        work = list(self.graphs[self.execs[exe]])

        def replay() -> None:
            for what, fn in work:
                self._run_one(what, fn)

        self.enqueue(handle, replay, "graph", kernel=True)
        return self._ok()

    def cudaGraphExecDestroy(self, graphExec):  # noqa: N802, N803
        del self.execs[self._int(graphExec, "graphExec")]
        return self._ok()

    def cudaGraphDestroy(self, graph):  # noqa: N802
        del self.graphs[self._int(graph, "graph")]
        return self._ok()
