"""Open a model file for inference: the layer above the backends that may reach into the build side.

:func:`open_model` is what the :class:`~edge_detect.detector.Detector`, the app config and the CLI call. It
picks the backend like :func:`~edge_detect.backends.base.load_backend` and, for TensorRT engines with
``rebuild_on_mismatch=True``, first checks the engine against this machine's TensorRT version and GPU and
rebuilds it from the ONNX its metadata records (sha256-checked) with the recorded build options when it was
built elsewhere. The rebuild imports :mod:`edge_detect.deploy.tensorrt_build` lazily (torch-free), so the
runtime packages (``backends``, ``stream``, ``sinks``) never import the build side.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from edge_detect.backends.base import Backend, backend_for_path, load_backend
from edge_detect.errors import ConfigError, VersionMismatchError
from edge_detect.paths import PathLike

__all__ = ["open_model", "rebuild_if_mismatched"]

LOGGER = logging.getLogger(__name__)



def rebuild_if_mismatched(engine: PathLike, device: int = 0) -> bool:
    """Rebuild ``engine`` in place when it was built for another TensorRT version or GPU.

    Args:
        engine: TensorRT engine with its metadata sidecar (``<engine>.json``).
        device: CUDA device to check against and build on.

    Returns:
        ``True`` when the engine was rebuilt, ``False`` when it already matched this machine.

    Raises:
        ModelLoadError: no/invalid sidecar. ModelError: the recorded ONNX is missing or changed.
        VersionMismatchError: the rebuilt engine still does not match (should not happen).
        MissingDependencyError: TensorRT / cuda-python missing.
    """
    from edge_detect.backends.engine_meta import check_compatible, plan_rebuild, read_engine_metadata
    from edge_detect.backends.tensorrt import runtime_info

    path = Path(engine)
    meta = read_engine_metadata(path)
    here = runtime_info(device)
    try:
        check_compatible(path, meta, here)
        return False
    except VersionMismatchError as exc:
        plan = plan_rebuild(path, meta, reason=str(exc))
        LOGGER.warning("%s; rebuilding it from %s", exc, plan.onnx)
    from edge_detect.deploy.tensorrt_build import build_engine  # torch-free build side, only when needed

    build_engine(plan.onnx, path, device=device, **dict(plan.options))
    check_compatible(path, read_engine_metadata(path), runtime_info(device))
    return True


def open_model(path: PathLike, backend: Optional[str] = None, rebuild_on_mismatch: bool = False,
               **options: Any) -> Backend:
    """Open ``path`` with the named backend (or the one its suffix implies).

    Args:
        path: ``.onnx`` / ``.engine`` (``.plan``, ``.trt``) / ``.pt`` model file.
        backend: backend name, ``None`` = by suffix.
        rebuild_on_mismatch: TensorRT engines only: rebuild an engine built by another TensorRT version or for
            another GPU from its recorded ONNX instead of raising :class:`VersionMismatchError`.
        **options: backend options (``device``, ``cuda_graph``, ``providers``, ``threads``...).

    Returns:
        the opened backend (close it, or use it as a context manager).

    Raises:
        ConfigError: ``rebuild_on_mismatch`` for a model that is not a TensorRT engine.
        ModelLoadError: a file the backend cannot read (a PyTorch checkpoint for ONNX Runtime...). Anything
        :func:`~edge_detect.backends.base.load_backend` and :func:`rebuild_if_mismatched` raise.
    """
    name = backend or backend_for_path(path)
    from edge_detect.model_files import check_model_file

    check_model_file(path, name)
    if rebuild_on_mismatch:
        if name != "tensorrt":
            raise ConfigError(f"rebuild_on_mismatch: expected a TensorRT engine, got {Path(path).name} "
                              f"(backend {name})")
        if Path(path).is_file():
            rebuild_if_mismatched(path, device=int(options.get("device", 0)))
    return load_backend(path, name, **options)
