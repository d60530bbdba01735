"""edge-detect: real-time YOLOv5 object detection for the edge.

The public API is imported lazily so ``import edge_detect`` stays light (no OpenCV, no ONNX Runtime, never
torch)::

    from edge_detect import Detector, Detections, open_source, open_sink, Pipeline, export
    from edge_detect import App, load_app_config                      # the edge app as a service
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Detections": "edge_detect.types",
    "Frame": "edge_detect.types",
    "LetterboxInfo": "edge_detect.types",
    "ModelMetadata": "edge_detect.metadata",
    "Detector": "edge_detect.detector",
    "load_backend": "edge_detect.backends.base",
    "open_model": "edge_detect.models",
    "open_source": "edge_detect.stream.sources",
    "open_sink": "edge_detect.sinks",
    "Pipeline": "edge_detect.stream.pipeline",
    "App": "edge_detect.app",
    "AppConfig": "edge_detect.app_config",
    "load_app_config": "edge_detect.app_config",
    "EventBus": "edge_detect.events",
    "Counts": "edge_detect.events",
    "Event": "edge_detect.types",
    "RunContext": "edge_detect.types",
    "evaluate": "edge_detect.evaluate",
    "export": "edge_detect.exporter",
    "ExportOptions": "edge_detect.exporter",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_detect' has no attribute {name!r}")
