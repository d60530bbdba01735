"""What a model file is, from its first bytes: one-line errors instead of a backend's parser noise.

:func:`sniff` tells a PyTorch checkpoint (a ``torch.save`` zip with ``*/data.pkl``, or a legacy pickle), an
OpenVINO IR (XML whose root element is ``<net>``), other XML, other zip archives, empty files and the rest
(``"unknown"``: ONNX protobufs and engines have no magic number). :func:`check_model_file` turns a mismatch between
the file and the backend asked for into :class:`~edge_detect.errors.ModelLoadError` naming the right command, before
ONNX Runtime says ``INVALID_PROTOBUF`` or OpenVINO probes every frontend (TensorFlow's prints parse errors).

Nothing here unpickles, parses XML or imports a backend.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Union

from edge_detect.errors import ModelLoadError

__all__ = ["sniff", "check_model_file", "PYTORCH", "OPENVINO_IR"]

PYTORCH = "pytorch"
OPENVINO_IR = "openvino_ir"
_HEAD = 4096
_NET = re.compile(rb"<net[\s>]")


def sniff(path: Union[str, os.PathLike]) -> str:
    """``"pytorch"``, ``"openvino_ir"``, ``"xml"``, ``"zip"``, ``"empty"`` or ``"unknown"`` for the file at ``path``."""
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                return PYTORCH if any(n.endswith("data.pkl") for n in z.namelist()) else "zip"
        except (zipfile.BadZipFile, OSError):
            return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return PYTORCH  # torch.save's legacy (pre-1.6) format: pickles
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] == b"<":
        return OPENVINO_IR if _NET.search(head) else "xml"
    return "unknown"


def check_model_file(path: Union[str, os.PathLike], backend: str) -> None:
    """Refuse a file that ``backend`` cannot read, with what it is and what to run instead.

    Raises:
        ModelLoadError: a PyTorch checkpoint for a backend other than ``torch``; an ``.xml`` that is not an
            OpenVINO IR for ``openvino``; an empty file.
    """
    path = Path(path)
    if not path.is_file():
        return  # the backend reports a missing file in its own words
    kind = sniff(path)
    if kind == "empty":
        raise ModelLoadError(f"{path}: expected a model file, got an empty file")
    if kind == PYTORCH and backend != "torch":
        raise ModelLoadError(f"{path} is a PyTorch checkpoint, not a model for the {backend} backend: run it with "
                             f"--backend torch (pip install 'edge-detect[build]'), or export it first: "
                             f"edge-detect export --weights {path} --format onnx")
    if backend == "openvino" and path.suffix.lower() == ".xml" and kind != OPENVINO_IR:
        raise ModelLoadError(f"{path}: expected an OpenVINO IR (an XML file whose root element is <net>, its .bin "
                             f"beside it), got {'other XML' if kind == 'xml' else 'a file that is not XML'}")
