"""The default model, exported once: a checkpoint name -> an ONNX file in the user cache, keyed by sha256.

``edge-detect run --source video.mp4`` without ``--model`` uses :data:`DEFAULT_MODEL` (``yolov5n``). The
checkpoint is found offline by :func:`edge_detect.weights.resolve_weights` (``$EDGE_DETECT_WEIGHTS``, the
repository's ``weights/``, ``../shared/weights``, the user cache) and exported to ONNX the first time only::

    <user cache>/models/<sha256 of the .pt>/yolov5n-640.onnx       (384x640: yolov5n-384x640.onnx)

The key is the checkpoint's content, so a changed ``.pt`` gets a new export and an unchanged one is never
exported twice. The file is written under a temporary name in the same folder and renamed into place
(atomic), so an interrupted or concurrent export never leaves a half-written model behind.

This module is torch-free and does not import the build side: the exporter is passed in. The CLI passes
:func:`edge_detect.deploy.onnx_yolov5.export_onnx_torch_free`, which reads the ``.pt`` with a restricted unpickler
into NumPy and writes the ONNX graph with ``onnx`` (bit-identical outputs to the PyTorch export), so the default
model needs only ``pip install 'edge-detect[onnx]'``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence, Tuple, Union

from edge_detect.config import parse_imgsz
from edge_detect.weights import resolve_weights, sha256_file, user_cache_dir

__all__ = ["DEFAULT_MODEL", "DEFAULT_IMGSZ", "cached_onnx_path", "ensure_onnx"]

LOGGER = logging.getLogger(__name__)

DEFAULT_MODEL = "yolov5n"
DEFAULT_IMGSZ = (640, 640)

#: ``exporter(weights, output, imgsz=(h, w), progress=bool) -> Path`` (``export_onnx_torch_free`` or the torch one)
Exporter = Callable[..., Any]


def _hw(imgsz: Union[int, Sequence[int], None]) -> Tuple[int, int]:
    return DEFAULT_IMGSZ if imgsz is None else parse_imgsz(imgsz)


def cached_onnx_path(weights: Union[str, os.PathLike], imgsz: Union[int, Sequence[int], None] = None,
                     sha256: str = "") -> Path:
    """``<user cache>/models/<sha256>/<stem>-<size>.onnx`` for a checkpoint file (``size`` = ``640`` for a
    square, else ``HxW``). ``sha256`` is computed from the file when not given."""
    h, w = _hw(imgsz)
    size = f"{h}" if h == w else f"{h}x{w}"
    digest = sha256 or sha256_file(weights)
    return user_cache_dir() / "models" / digest / f"{Path(weights).stem}-{size}.onnx"


def ensure_onnx(name_or_path: Union[str, os.PathLike], exporter: Callable[[], Exporter],
                imgsz: Union[int, Sequence[int], None] = None, progress: bool = True) -> Path:
    """The cached static ONNX export of a checkpoint, exporting it on the first call.

    Args:
        name_or_path: a checkpoint file or a manifest name (``"yolov5n"``), resolved offline.
        exporter: returns the export function; called only when the cache has no file yet (so a missing
            torch is reported only when an export is really needed).
        imgsz: network input ``(h, w)`` or one side (default 640x640).
        progress: passed to the exporter.

    Returns:
        path of the ONNX file in the cache.

    Raises:
        ModelError: the checkpoint cannot be found (the message says where it looked and how to fetch it).
        MissingDependencyError: an export is needed and the exporter's extra (``onnx``) is not installed.
    """
    weights = resolve_weights(name_or_path)
    out = cached_onnx_path(weights, imgsz)
    if out.is_file():
        LOGGER.info("model: %s (cached export of %s)", out, weights)
        return out
    export = exporter()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".onnx.part", dir=out.parent)
    os.close(fd)
    try:
        LOGGER.info("exporting %s to %s (once; later runs reuse it)", weights, out)
        export(weights, tmp, imgsz=_hw(imgsz), progress=progress)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
