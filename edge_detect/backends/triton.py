"""Triton backend: the model runs on an NVIDIA Triton Inference Server; this process sends preprocessed batches.

``--model grpc://HOST[:PORT]/MODEL[/VERSION]`` (``triton://`` is the same; default port 8001) or
``--model http://HOST[:PORT]/MODEL[/VERSION]`` (default port 8000). Many ``edge-detect run`` processes, on any
machines, can share one server, whose dynamic batcher stacks their requests into larger batches on the GPU.
The server serves an ``edge-detect export --format triton`` repository (NVIDIA's Triton container in production,
``tools/triton_test_server.py`` on a laptop or in tests).

What the backend reads from the server at open time: the model's configuration (input name, per-image dims, data
type, ``max_batch_size``) and our :class:`~edge_detect.metadata.ModelMetadata` (class names, stride, letterbox
rule) from its ``parameters["edge_detect"]``, so the client needs no model file. Batches go out as the model takes
them: ``uint8 (B, H, W, 3)`` for a ``--uint8-input`` model (4x fewer bytes than float32), else ``float32
(B, 3, H, W)``. One warm-up request (a zero batch of one image) checks the whole path before the run starts.

Options (``load_backend(url, **options)`` / ``Detector(url, **options)``):

* ``timeout_s`` (10): limit of one request (and of one reconnection attempt).
* ``requests`` (4): requests in flight at once (:meth:`TritonBackend.infer_async`; the pipeline's async window).
* ``shared_memory`` (``"auto"``): ``"system"`` passes inputs and outputs through POSIX shared memory regions
  registered with the server (no tensor bytes on the socket; needs the server on this host, sharing ``/dev/shm``);
  ``"none"`` sends them in the request; ``"auto"`` tries ``"system"`` when the host is a loopback address and falls
  back to ``"none"`` (logged) when the server cannot map the regions (e.g. a container without ``--ipc=host``).
* ``retry_min_s`` (0.5) / ``retry_max_s`` (2): reconnection backoff.

Errors at open time are one line each: :class:`~edge_detect.errors.BackendUnavailableError` (server unreachable),
:class:`~edge_detect.errors.ModelError` (unknown or unloaded model), :class:`~edge_detect.errors.ModelLoadError`
(the model's inputs or outputs are not a detector's), :class:`~edge_detect.errors.ConfigError` (a bad URL).

During a run, a failed, refused or timed-out request raises :class:`~edge_detect.errors.TransientBackendError`
(the pipeline drops that batch's frames, counts them and goes on) and marks the server down. While it is down,
:meth:`~TritonBackend.infer_async` fails at once until the next reconnection attempt is due; an attempt (a fresh
connection and a model-ready probe, at most ``timeout_s``) is made at most every ``retry_min_s`` doubling up to
``retry_max_s``, so the pipeline is never blocked longer than one request timeout. Shared memory regions are
registered again after a reconnection.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from edge_detect._optional import require
from edge_detect.backends.base import InputSpec, register_backend
from edge_detect.errors import (BackendUnavailableError, ConfigError, ModelError, ModelLoadError,
                                TransientBackendError)
from edge_detect.metadata import METADATA_KEY, ModelMetadata

__all__ = ["TritonBackend", "TritonURL", "parse_triton_url", "SCHEMES", "SHARED_MEMORY_MODES"]

LOGGER = logging.getLogger(__name__)

#: URL scheme -> (protocol, default port)
SCHEMES: Dict[str, Tuple[str, int]] = {"grpc": ("grpc", 8001), "triton": ("grpc", 8001), "http": ("http", 8000)}
SHARED_MEMORY_MODES = ("auto", "system", "none")
_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_UINT8": np.uint8, "TYPE_INT32": np.int32,
           "TYPE_INT64": np.int64, "TYPE_FP64": np.float64, "TYPE_INT8": np.int8, "TYPE_BOOL": np.bool_}
_WIRE = {np.dtype(v): k[5:] for k, v in _DTYPES.items()}  # numpy dtype -> Triton wire name ("FP32"...)
_USAGE = "grpc://HOST[:PORT]/MODEL[/VERSION] (or triton://..., http://HOST[:PORT]/MODEL)"


@dataclass(frozen=True)
class TritonURL:
    """A parsed model URL.

    Attributes:
        protocol: ``"grpc"`` or ``"http"``.
        host: host name or address (IPv6 without brackets).
        port: server port.
        model: model name on the server.
        version: model version (``""`` = the server's choice).
    """

    protocol: str
    host: str
    port: int
    model: str
    version: str = ""

    @property
    def address(self) -> str:
        """``host:port`` as the tritonclient clients take it (IPv6 in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def local(self) -> bool:
        """Whether the server is on this host (a loopback address or ``localhost``)."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        tail = f"/{self.version}" if self.version else ""
        return f"{self.protocol}://{self.address}/{self.model}{tail}"


def parse_triton_url(url: str) -> TritonURL:
    """``grpc://host:8001/yolov5n`` -> :class:`TritonURL`.

    Raises:
        ConfigError: unknown scheme, no host, no model name, a bad port or version, query or fragment.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"triton model URL: expected {_USAGE}, got {text!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"triton model URL: expected one of the schemes {sorted(SCHEMES)} ({_USAGE}), got "
                          f"{text!r}")
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or not path or len(path) > 2 or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"triton model URL: expected {_USAGE}, got {text!r}")
    if len(path) == 2 and not path[1].isdigit():
        raise ConfigError(f"triton model URL: expected a numeric model version after the model name, got "
                          f"{path[1]!r} in {text!r}")
    protocol, default_port = SCHEMES[scheme]
    return TritonURL(protocol, parts.hostname, int(port or default_port), path[0], path[1] if len(path) == 2 else "")


def _tc(protocol: str) -> Any:
    return require(f"tritonclient.{protocol}", "triton", package="tritonclient")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _transport_errors() -> Tuple[type, ...]:
    """What a client call raises when the server is gone, refuses or is too slow (gRPC status errors, refused or
    reset sockets, socket timeouts of the HTTP client), or when a shared memory region cannot be made."""
    utils = require("tritonclient.utils", "triton", package="tritonclient")
    shm = require("tritonclient.utils.shared_memory", "triton", package="tritonclient")
    return (utils.InferenceServerException, shm.SharedMemoryException, OSError, TimeoutError)


def _status(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status() if callable(status) else status or "")


class _Region:
    """One system shared memory region: local mapping + its name on the server."""

    def __init__(self, shm: Any, name: str, byte_size: int) -> None:
        self.name, self.key, self.byte_size = name, f"/{name}", int(byte_size)
        self.handle = shm.create_shared_memory_region(name, self.key, self.byte_size, create_only=True)


class _Slot:
    """One request that can be in flight: its shared memory regions (if used), sized for ``rows`` images."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.rows = 0
        self.regions: Optional[Tuple[_Region, List[_Region]]] = None
        self.registered_gen = -1
        self.dirty = False  # a request of this slot was abandoned: its regions may still be written; never reuse


class TritonHandle:
    """One request in flight (from :meth:`TritonBackend.infer_async`): ``wait()`` gives the outputs, ``release()``
    hands the request slot back. With shared memory the outputs are views of the slot's output regions, valid
    until :meth:`release`; ``with handle as outputs:`` does both."""

    def __init__(self, backend: "TritonBackend", slot: _Slot, future: "Future[List[np.ndarray]]") -> None:
        self._backend, self._slot, self._future = backend, slot, future
        self._outputs: Optional[List[np.ndarray]] = None

    def wait(self) -> List[np.ndarray]:
        """The outputs in layout order.

        Raises:
            TransientBackendError: the request failed, was refused or got no answer within the timeout.
            ModelError: the server rejected the request as invalid (not expected to pass by retrying).
        """
        if self._outputs is None:
            if self._slot is None:
                raise RuntimeError("TritonHandle.wait() after release()")
            try:
                self._outputs = self._future.result(timeout=self._backend.timeout_s + 5.0)
            except FutureTimeout:
                self._slot.dirty = True
                self.release()
                raise self._backend._mark_down(f"no answer within {self._backend.timeout_s:g} s") from None
            except BaseException:
                self.release()  # a failed request holds nothing: its slot goes back even if the caller forgets
                raise
        return self._outputs

    def release(self) -> None:
        """Give the request slot back (idempotent); output views must not be used afterwards."""
        if self._slot is not None:
            if not self._future.done():
                self._slot.dirty = True  # abandoned while running: its regions are not reused
            self._outputs = None
            self._backend._slots.put(self._slot)
            self._slot = None

    def __enter__(self) -> List[np.ndarray]:
        return self.wait()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@register_backend("triton")
class TritonBackend:
    """A model served by Triton Inference Server (see module doc for URLs, options and failure handling).

    Attributes:
        name: ``"triton"``.
        url: the parsed :class:`TritonURL`.
        metadata: the model's :class:`ModelMetadata` (from the server's model configuration).
        input_spec: :class:`InputSpec`: ``(-1, 3, H, W)`` float or ``(-1, H, W, 3)`` uint8 for a batching model.
        max_batch_size: the server's ``max_batch_size`` for the model (``0``: no batching).
        num_requests: requests that can be in flight at once.
        shared_memory: ``"system"`` or ``"none"``: what is in use.
    """

    name = "triton"

    def __init__(self, url: str, timeout_s: float = 10.0, requests: int = 4, shared_memory: str = "auto",
                 retry_min_s: float = 0.5, retry_max_s: float = 2.0) -> None:
        self.url = parse_triton_url(url)
        checks = [(timeout_s > 0, "timeout_s", "> 0", timeout_s), (int(requests) >= 1, "requests", ">= 1", requests),
                  (shared_memory in SHARED_MEMORY_MODES, "shared_memory", f"one of {SHARED_MEMORY_MODES}",
                   shared_memory),
                  (0 < retry_min_s <= retry_max_s, "retry_min_s/retry_max_s", "0 < min <= max",
                   (retry_min_s, retry_max_s))]
        for ok, what, expected, got in checks:
            if not ok:
                raise ConfigError(f"triton {what}: expected {expected}, got {got!r}")
        self.timeout_s, self.num_requests = float(timeout_s), int(requests)
        self.retry_min_s, self.retry_max_s = float(retry_min_s), float(retry_max_s)
        self._tc = _tc(self.url.protocol)
        self._errors = _transport_errors()
        self._lock = threading.Lock()
        self._gen = 0  # connection generation: clients of older generations are replaced
        self._local = threading.local()
        self._control = self._new_client()
        self._healthy, self._backoff, self._next_try, self._down_since, self._reason = True, self.retry_min_s, 0.0, 0.0, ""
        config = self._open_model()
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_spec, self._outputs = self._io(config)
        self.metadata = self._metadata(config)
        self._prefix = f"ed{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._slots: "queue.SimpleQueue[_Slot]" = queue.SimpleQueue()
        for i in range(self.num_requests):
            self._slots.put(_Slot(i))
        self._pool = ThreadPoolExecutor(max_workers=self.num_requests, thread_name_prefix="triton")
        self.shared_memory = "none"
        self._out_row: List[Tuple[Tuple[int, ...], np.dtype]] = []
        self._warm_up()
        self._setup_shared_memory(shared_memory)
        LOGGER.info("triton: %s (%s over %s, max_batch_size %d, %d requests in flight, shared memory %s)", self.url,
                    self.input_spec.format, self.url.protocol, self.max_batch_size, self.num_requests,
                    self.shared_memory)

    # --- connection ----------------------------------------------------------------------------------------------

    def _new_client(self) -> Any:
        if self.url.protocol == "grpc":
            return self._tc.InferenceServerClient(self.url.address)
        return self._tc.InferenceServerClient(self.url.address, connection_timeout=self.timeout_s,
                                              network_timeout=self.timeout_s)

    def _client(self) -> Any:
        """This thread's client of the current connection generation (HTTP clients are single-threaded)."""
        local = self._local
        if getattr(local, "gen", -1) != self._gen:
            old = getattr(local, "client", None)
            local.client, local.gen = self._new_client(), self._gen
            if old is not None:
                old.close()
        return local.client

    def _call(self, client: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.url.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        return getattr(client, method)(*args, **kwargs)

    def _open_model(self) -> Dict[str, Any]:
        """Server live, model known and ready; returns the model configuration as a JSON dict."""
        c, url = self._control, self.url
        try:
            self._call(c, "is_server_live")
        except self._errors as exc:
            raise BackendUnavailableError(
                f"triton server {url.address} unreachable over {url.protocol} ({_first_line(exc)}): expected a "
                f"running Triton server (NVIDIA's container, or tools/triton_test_server.py)") from None
        try:
            config = self._call(c, "get_model_config", url.model, url.version, **self._json_kw())
        except self._errors as exc:
            names = self._model_names()
            expected = f"one of {names}" if names else "a model the server has loaded"
            raise ModelError(f"triton model '{url.model}'{f' version {url.version}' if url.version else ''} not "
                             f"found on {url.address}: expected {expected} ({_first_line(exc)})") from None
        config = config.get("config", config)
        if not self._call(c, "is_model_ready", url.model, url.version):
            raise ModelError(f"triton model '{url.model}' on {url.address} is not ready: expected a loaded model "
                             f"(see the server log for why it did not load)")
        return config

    def _json_kw(self) -> Dict[str, Any]:
        return {"as_json": True} if self.url.protocol == "grpc" else {}

    def _model_names(self) -> List[str]:
        """Names in the server's repository index (empty when the server does not allow listing it)."""
        try:
            index = self._call(self._control, "get_model_repository_index", **self._json_kw())
        except self._errors:
            return []
        models = index.get("models", []) if isinstance(index, dict) else index
        return sorted({m.get("name", "") for m in models} - {""})

    # --- model description ---------------------------------------------------------------------------------------

    def _io(self, config: Dict[str, Any]) -> Tuple[InputSpec, List[Tuple[str, np.dtype]]]:
        """Input spec and output ``(name, dtype)`` list from the configuration (ModelLoadError on a non-detector)."""
        label = f"triton model '{self.url.model}'"
        inputs, outputs = config.get("input", []), config.get("output", [])
        if len(inputs) != 1:
            raise ModelLoadError(f"{label}: expected 1 input tensor, got {len(inputs)}: "
                                 f"{[i.get('name') for i in inputs]}")
        inp = inputs[0]
        dims = tuple(int(d) for d in inp.get("dims", []))
        shape = (-1, *dims) if int(config.get("max_batch_size", 0)) > 0 else dims
        dtype = np.dtype(_DTYPES.get(inp.get("data_type", ""), np.void))
        if len(shape) != 4 or dtype not in (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8)):
            raise ModelLoadError(f"{label} input '{inp.get('name')}': expected a float32/float16 [3, H, W] or uint8 "
                                 f"[H, W, 3] image per batch item, got {inp.get('data_type')} dims {list(dims)} "
                                 f"(max_batch_size {config.get('max_batch_size', 0)})")
        nhwc = dtype == np.uint8 and shape[3] == 3
        if not nhwc and shape[1] != 3:
            raise ModelLoadError(f"{label} input '{inp.get('name')}': expected 3 channels (NCHW, or NHWC for uint8), "
                                 f"got dims {list(dims)}")
        fmt = "uint8_nhwc_bgr" if nhwc else "float32_nchw_rgb"
        outs = [(o["name"], np.dtype(_DTYPES.get(o.get("data_type", ""), np.float32))) for o in outputs]
        self._out_dims = [tuple(int(d) for d in o.get("dims", [])) for o in outputs]
        return InputSpec(name=inp["name"], shape=shape, dtype=dtype, format=fmt), outs

    def _metadata(self, config: Dict[str, Any]) -> ModelMetadata:
        from edge_detect.backends.onnxruntime import _check_layout, _infer_metadata

        label = Path(f"triton model '{self.url.model}'")
        batched = self.max_batch_size > 0
        out_shapes = [((-1, *d) if batched else d) for d in self._out_dims]
        params = config.get("parameters", {}) or {}
        if METADATA_KEY in params:
            meta = ModelMetadata.from_json(params[METADATA_KEY].get("string_value", ""))
        else:
            meta = _infer_metadata(label, self.input_spec, out_shapes)
        meta = meta.replace(input_format=self.input_spec.format)
        _check_layout(label, meta, out_shapes)
        return meta

    # --- shared memory -------------------------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """One zero image through the whole path; learns the per-image output shapes (for shared memory)."""
        h, w = self.input_spec.hw
        if h < 0 or w < 0:
            h, w = self.metadata.imgsz
        row = (h, w, 3) if self.input_spec.nhwc else (3, h, w)
        batch = np.zeros((1, *row), self.input_spec.dtype)
        try:
            outputs = self._request(batch, None)
        except TransientBackendError as exc:
            raise BackendUnavailableError(f"triton model '{self.url.model}' on {self.url.address}: the warm-up "
                                          f"request failed ({exc})") from None
        self._out_row = [(tuple(o.shape[1:]), o.dtype) for o in outputs]

    def _setup_shared_memory(self, mode: str) -> None:
        """Regions sized from the warm-up's outputs: only for a fixed input height and width (a model that
        letterboxes each stream to its own size would outgrow them)."""
        if mode == "none" or (mode == "auto" and not (self.url.local and min(self.input_spec.hw) > 0)):
            return
        if min(self.input_spec.hw) < 0:
            raise ConfigError(f"triton model '{self.url.model}': shared_memory='system' expected fixed input height "
                              f"and width, got dims {list(self.input_spec.shape[1:])}")
        slot = self._slots.get()
        try:
            self._regions(slot, 1)
            self.shared_memory = "system"
        except (self._errors + (ValueError,)) as exc:
            self._drop_regions(slot)
            if mode == "system":
                raise BackendUnavailableError(f"triton server {self.url.address}: system shared memory not usable "
                                              f"({_first_line(exc)}): expected the server on this host sharing "
                                              f"/dev/shm, or shared_memory='none'") from None
            LOGGER.warning("triton: shared memory with %s not usable (%s); sending tensors in the requests",
                           self.url.address, _first_line(exc))
        finally:
            self._slots.put(slot)

    def _regions(self, slot: _Slot, rows: int) -> Tuple[_Region, List[_Region]]:
        """The slot's input/output regions for at least ``rows`` images, created and registered as needed."""
        shm = require("tritonclient.utils.shared_memory", "triton", package="tritonclient")
        if slot.dirty or slot.rows < rows:
            self._drop_regions(slot)
            slot.dirty = False
            tag = f"{self._prefix}_{slot.index}_{uuid.uuid4().hex[:6]}"
            in_bytes = int(np.prod(self.input_spec.shape[1:])) * self.input_spec.dtype.itemsize * rows
            outs = [_Region(shm, f"{tag}_o{i}", max(1, int(np.prod(s)) * d.itemsize * rows))
                    for i, (s, d) in enumerate(self._out_row)]
            slot.regions, slot.rows, slot.registered_gen = (_Region(shm, f"{tag}_i", in_bytes), outs), rows, -1
        if slot.registered_gen != self._gen:
            client = self._client()
            for r in [slot.regions[0], *slot.regions[1]]:
                try:  # a stale registration of the same name (server kept it while we reconnected)
                    self._call(client, "unregister_system_shared_memory", r.name)
                except self._errors:
                    pass
                self._call(client, "register_system_shared_memory", r.name, r.key, r.byte_size)
            slot.registered_gen = self._gen
        return slot.regions

    def _drop_regions(self, slot: _Slot) -> None:
        if slot.regions is None:
            return
        shm = require("tritonclient.utils.shared_memory", "triton", package="tritonclient")
        for r in [slot.regions[0], *slot.regions[1]]:
            if slot.registered_gen == self._gen and self._healthy:
                try:
                    self._call(self._client(), "unregister_system_shared_memory", r.name)
                except self._errors:
                    pass
            shm.destroy_shared_memory_region(r.handle)
        slot.regions, slot.rows, slot.registered_gen = None, 0, -1

    # --- inference -----------------------------------------------------------------------------------------------

    def _request(self, batch: np.ndarray, slot: Optional[_Slot]) -> List[np.ndarray]:
        """One synchronous request (runs in a worker thread); TransientBackendError / ModelError on failure."""
        tc, client = self._tc, self._client()
        inp = tc.InferInput(self.input_spec.name, list(batch.shape), _WIRE[batch.dtype])
        outs = [tc.InferRequestedOutput(name) for name, _ in self._outputs]
        regions = None
        try:
            if slot is not None and self.shared_memory == "system":
                shm = require("tritonclient.utils.shared_memory", "triton", package="tritonclient")
                regions = self._regions(slot, batch.shape[0])
                shm.set_shared_memory_region(regions[0].handle, [batch])
                inp.set_shared_memory(regions[0].name, batch.nbytes)
                for out, (shape, dtype), region in zip(outs, self._out_row, regions[1]):
                    out.set_shared_memory(region.name, int(np.prod(shape)) * dtype.itemsize * batch.shape[0])
            else:
                inp.set_data_from_numpy(batch)
            result = self._call(client, "infer", self.url.model, [inp], model_version=self.url.version,
                                outputs=outs)
        except self._errors as exc:
            if _status(exc) in ("StatusCode.INVALID_ARGUMENT", "400") and "shape" in str(exc).lower():
                raise ModelError(f"triton model '{self.url.model}' rejected a batch of shape {tuple(batch.shape)} "
                                 f"({_first_line(exc)}): expected {self.input_spec.shape}") from None
            if slot is not None:
                slot.dirty = True
            raise self._mark_down(_first_line(exc)) from None
        if regions is None:
            return [result.as_numpy(name) for name, _ in self._outputs]
        shm = require("tritonclient.utils.shared_memory", "triton", package="tritonclient")
        return [shm.get_contents_as_numpy(region.handle, dtype, result.get_output(name).shape)
                for (name, dtype), region in zip(self._outputs, regions[1])]

    def _mark_down(self, reason: str) -> TransientBackendError:
        """Record an outage (logged once per outage); returns the error for the caller to raise."""
        with self._lock:
            if self._healthy:
                self._healthy, self._down_since = False, time.monotonic()
                self._backoff = self.retry_min_s
                self._next_try = self._down_since + self._backoff
                LOGGER.warning("triton server %s: %s; dropping frames until it answers again (reconnecting every "
                               "%g..%g s)", self.url.address, reason, self.retry_min_s, self.retry_max_s)
            self._reason = reason
        return TransientBackendError(f"triton server {self.url.address}: {reason}")

    def _ensure_connected(self) -> None:
        """Return when the server is up; reconnect when an attempt is due; TransientBackendError otherwise."""
        if self._healthy:
            return
        with self._lock:
            now = time.monotonic()
            if now < self._next_try:
                raise TransientBackendError(f"triton server {self.url.address} down ({self._reason}); next "
                                            f"reconnection attempt in {self._next_try - now:.1f} s")
            self._gen += 1  # every thread's client is replaced by a fresh connection
            client = self._client()
            try:
                ready = self._call(client, "is_model_ready", self.url.model, self.url.version)
            except self._errors as exc:
                ready, self._reason = False, _first_line(exc)
            if not ready:
                self._backoff = min(self._backoff * 2, self.retry_max_s)
                self._next_try = time.monotonic() + self._backoff
                raise TransientBackendError(f"triton server {self.url.address} still down ({self._reason}); next "
                                            f"reconnection attempt in {self._backoff:.1f} s")
            self._healthy = True
            LOGGER.warning("triton server %s: reconnected after %.1f s", self.url.address,
                           time.monotonic() - self._down_since)

    def infer_async(self, batch: np.ndarray) -> TritonHandle:
        """Send ``batch`` and return at once (blocks only while every request slot is taken).

        Raises:
            TransientBackendError: the server is down (no request is sent until a reconnection succeeds).
            ValueError: the batch does not match :attr:`input_spec`'s static axes.
        """
        batch = np.ascontiguousarray(self.input_spec.conform(batch, f"triton model '{self.url.model}'"))
        if self.max_batch_size > 0 and batch.shape[0] > self.max_batch_size:
            raise ValueError(f"triton model '{self.url.model}': expected at most max_batch_size "
                             f"{self.max_batch_size} images per request, got {batch.shape[0]}")
        self._ensure_connected()
        slot = self._slots.get()
        try:
            future = self._pool.submit(self._request, batch, slot)
        except RuntimeError:  # the pool is shut down (closed backend)
            self._slots.put(slot)
            raise
        return TritonHandle(self, slot, future)

    def infer(self, batch: np.ndarray) -> List[np.ndarray]:
        """Run one batch synchronously; returns outputs the caller owns (copies).

        Raises:
            TransientBackendError: see :meth:`infer_async` and :meth:`TritonHandle.wait`.
        """
        with self.infer_async(batch) as outputs:
            return [np.array(o) for o in outputs]

    def close(self) -> None:
        """Stop the workers, unregister and free the shared memory regions, close the connections."""
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        pool.shutdown(wait=True)
        self._pool = None
        while True:
            try:
                slot = self._slots.get_nowait()
            except queue.Empty:
                break
            self._drop_regions(slot)
        for client in (self._control, getattr(self._local, "client", None)):
            if client is not None:
                client.close()

    def __enter__(self) -> "TritonBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TritonBackend({str(self.url)!r}, requests={self.num_requests}, shared_memory={self.shared_memory!r})"
