"""Inference backends behind one protocol; see :mod:`edge_detect.backends.base`."""
from edge_detect.backends.base import Backend, InputSpec, available_backends, backend_for_path, load_backend, register_backend

__all__ = ["Backend", "InputSpec", "available_backends", "backend_for_path", "load_backend", "register_backend"]
