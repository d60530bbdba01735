"""The build side of edge-detect: the torch YOLOv5 model, checkpoints, training, export and quantization.

This package is the **only** place torch may be imported (``pip install 'edge-detect[build]'``). The runtime
(:mod:`edge_detect.detector`, the backends, the pipeline...) never imports it; build and runtime meet only
through files (``.onnx`` / ``.engine`` plus :class:`~edge_detect.metadata.ModelMetadata`).

Modules are imported explicitly (``from edge_detect.training.export import export_onnx``); importing this
package itself imports nothing heavy.
"""
from __future__ import annotations

__all__: list = []
