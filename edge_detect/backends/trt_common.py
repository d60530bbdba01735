"""TensorRT pieces shared by the engine builder (``edge_detect.deploy``) and the runtime backend.

* :func:`import_tensorrt`: the real ``tensorrt`` module, or :class:`~edge_detect.errors.MissingDependencyError`.
  Installing only ``tensorrt-stubs`` (type stubs, in the ``dev`` extra) leaves an empty ``tensorrt``
  namespace package that ``import tensorrt`` accepts; it is recognised here and reported as "not installed".
* :func:`get_logger`: ONE ``trt.ILogger`` for the whole process, forwarding to the ``edge_detect.tensorrt``
  :mod:`logging` logger. TensorRT's plugin library keeps a raw pointer to the logger it was initialised with,
  so that logger must outlive every builder and runtime: it is created once and never released.
* :func:`init_plugins`: ``trt.init_libnvinfer_plugins(logger, "")`` once per process, before building or
  deserializing. An engine holding a plugin layer (``EfficientNMS_TRT``) only deserializes once the plugin
  creators are registered, and TensorRT 10's ONNX parser does not register them itself.
* :func:`log_level`, :func:`version_tuple`.

Nothing here imports TensorRT at module import time.
"""
from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any, Dict, Optional, Tuple

from edge_detect._optional import require
from edge_detect.errors import BackendUnavailableError, MissingDependencyError

__all__ = ["import_tensorrt", "tensorrt_available", "get_logger", "init_plugins", "log_level", "version_tuple",
           "MIN_TENSORRT", "MIN_VERSION_COMPATIBLE"]

LOGGER = logging.getLogger(__name__)
TRT_LOGGER = logging.getLogger("edge_detect.tensorrt")

MIN_TENSORRT = (8, 5)  # named-tensor API: set_tensor_address / execute_async_v3 / set_input_shape
MIN_VERSION_COMPATIBLE = (8, 6)  # BuilderFlag.VERSION_COMPATIBLE and Runtime.engine_host_code_allowed

_LEVELS = {"INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
           "INFO": logging.INFO, "VERBOSE": logging.DEBUG}

_lock = threading.Lock()
_state: Dict[str, Any] = {"logger": None, "logger_module": None, "plugins": None}


def import_tensorrt() -> ModuleType:
    """The TensorRT Python module.

    Raises:
        MissingDependencyError: TensorRT is not installed, or only its type stubs are (an empty namespace
            package without ``Runtime``).
    """
    trt = require("tensorrt", "tensorrt")
    if not hasattr(trt, "Runtime") or not hasattr(trt, "__version__"):
        raise MissingDependencyError(
            "tensorrt is required for this feature but is not importable (found only an empty 'tensorrt' "
            "namespace package, e.g. from tensorrt-stubs). Install it with: pip install 'edge-detect[tensorrt]' "
            "(on Jetson: JetPack's python3-libnvinfer)")
    return trt


def tensorrt_available() -> bool:
    """Whether the real TensorRT Python module imports here (type stubs alone do not count)."""
    try:
        import_tensorrt()
    except MissingDependencyError:
        return False
    return True


def version_tuple(version: str, parts: int = 3) -> Tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)`` (``parts`` numbers; non-digits ignored, missing parts 0)."""
    out = []
    for token in str(version).split(".")[:parts]:
        digits = "".join(ch for ch in token if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out + [0] * (parts - len(out)))


def log_level(severity: Any) -> int:
    """``logging`` level of a ``trt.ILogger.Severity`` (by name; unknown -> INFO)."""
    name = getattr(severity, "name", str(severity)).split(".")[-1].upper()
    return _LEVELS.get(name, logging.INFO)


def get_logger(trt: Any) -> Any:
    """The process-lifetime ``trt.ILogger`` (created on first call, then always the same object).

    Args:
        trt: the ``tensorrt`` module (:func:`import_tensorrt`).
    """
    with _lock:
        if _state["logger"] is None or _state["logger_module"] is not trt:
            class _Logger(trt.ILogger):  # type: ignore[misc, valid-type]
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)

                def log(self, severity: Any, msg: str) -> None:
                    TRT_LOGGER.log(log_level(severity), "%s", msg)

            _state["logger"], _state["logger_module"], _state["plugins"] = _Logger(), trt, None
        return _state["logger"]


def init_plugins(trt: Any, logger: Optional[Any] = None) -> Any:
    """Register TensorRT's plugin creators (``EfficientNMS_TRT``...) once per process; returns the logger.

    Raises:
        BackendUnavailableError: ``init_libnvinfer_plugins`` reported failure (libnvinfer_plugin missing).
    """
    logger = get_logger(trt) if logger is None else logger
    with _lock:
        if _state["plugins"] is not trt:
            if not trt.init_libnvinfer_plugins(logger, ""):
                raise BackendUnavailableError(
                    "TensorRT could not register its plugins (init_libnvinfer_plugins returned False): expected "
                    "libnvinfer_plugin to be installed with TensorRT")
            _state["plugins"] = trt
            LOGGER.debug("TensorRT plugins registered")
    return logger

