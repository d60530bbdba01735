"""JSON Lines sink: one JSON object per processed frame (:meth:`edge_detect.types.Result.record`), flushed."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional, Union

from edge_detect.errors import SinkError
from edge_detect.sinks.base import JSONL_SUFFIXES, Result, Sink, register_sink

__all__ = ["JsonlSink"]


class JsonlSink(Sink):
    """One JSON object per line and per processed frame (see module doc), flushed after every line."""

    name = "jsonl"

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f: Optional[io.TextIOBase] = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"JSONL sink {self.path}: cannot open for writing ({exc})") from exc
        self.lines = 0

    def write(self, result: Result) -> None:
        if self._f is None:
            raise SinkError(f"JSONL sink {self.path}: write after close")
        self._f.write(json.dumps(result.record(), separators=(",", ":")) + "\n")
        self._f.flush()
        self.lines += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None



@register_sink(*JSONL_SUFFIXES)
def _open_jsonl(target: str) -> JsonlSink:
    return JsonlSink(target)
