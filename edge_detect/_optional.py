"""Optional dependencies behind extras, with an ImportError that tells the install command."""
from __future__ import annotations

import importlib
from types import ModuleType

from edge_detect.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra that provides it.

    Args:
        module: dotted module name, e.g. ``"onnxruntime"``.
        extra: the ``edge-detect`` extra that installs it, e.g. ``"onnx"``.
        package: the PyPI distribution name when it differs from the module name.

    Raises:
        MissingDependencyError: the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the module itself, or one of its own compiled deps
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{pkg} is required for this feature but is not importable ({exc}). "
            f"Install it with: pip install 'edge-detect[{extra}]'"
        ) from exc
