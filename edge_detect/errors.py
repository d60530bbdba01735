"""Exception hierarchy of edge-detect.

Every error that a user can cause (bad file, bad stream, bad config, version mismatch) derives from
:class:`EdgeDetectError`. The CLI turns these into one-line messages with a non-zero exit; the Python API
lets them propagate. Messages are written to be read alone: they say what was expected and what was found.
"""
from __future__ import annotations

__all__ = [
    "EdgeDetectError",
    "ConfigError",
    "ModelError",
    "ModelLoadError",
    "UnsafeCheckpointError",
    "VersionMismatchError",
    "SourceError",
    "SinkError",
    "DataError",
    "MissingDependencyError",
    "BackendUnavailableError",
    "TransientBackendError",
    "DuplicateSourceError",
    "UnknownSourceError",
]


class EdgeDetectError(Exception):
    """Base class of all edge-detect errors meant to be shown to a user."""


class ConfigError(EdgeDetectError, ValueError):
    """A configuration file or option is invalid (unknown key, wrong type, out of range)."""


class ModelError(EdgeDetectError):
    """A model file is missing, unreadable or not what edge-detect expects."""


class ModelLoadError(ModelError):
    """A model file exists but could not be loaded (not a YOLOv5 checkpoint, bad ONNX layout...)."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickled checkpoint asked for a global that is not on the allow-list; nothing was executed."""


class VersionMismatchError(ModelError):
    """A serialized engine was built for another TensorRT version or GPU than the one loading it."""


class SourceError(EdgeDetectError):
    """A video source (file, camera, stream, folder) cannot be opened or read."""


class SinkError(EdgeDetectError):
    """An output (video file, JSONL, preview server) cannot be opened or written."""


class DataError(EdgeDetectError, ValueError):
    """A dataset, image or label is invalid (missing folder, undecodable image, out-of-range class)."""


class MissingDependencyError(EdgeDetectError, ImportError):
    """An optional dependency is not installed; the message tells the install command."""


class BackendUnavailableError(EdgeDetectError):
    """An inference backend or precision is not available on this machine (no GPU, no TensorRT...)."""


class TransientBackendError(EdgeDetectError):
    """An inference call failed for a reason expected to pass (a remote server restarting, a timeout).

    The pipeline drops the frames of that batch, counts them per source (``dropped_backend``) and goes on; the
    backend reconnects by itself (with backoff) and the next batch is tried normally.
    """


class DuplicateSourceError(ConfigError):
    """A source was added with an id the running app already has (``App.add_source``; the REST API answers 409)."""


class UnknownSourceError(SourceError, KeyError):
    """A runtime operation named a source id the running app does not have (``App.remove_source`` /
    ``update_source``; the REST API answers 404)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
