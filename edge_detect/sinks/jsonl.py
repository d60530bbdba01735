"""JSON Lines sink: one JSON object per processed frame (:meth:`edge_detect.types.Result.record`), flushed.

With one source the lines go to the given path. With several sources each source gets its own file, named like
the video sink's: ``out.jsonl`` -> ``out_<source_id>.jsonl`` (every line still carries its ``source``), so
per-source files stay separate and keep their frame order.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from edge_detect.errors import SinkError
from edge_detect.sinks.base import JSONL_SUFFIXES, Result, Sink, StreamInfo, per_source_path, register_sink

__all__ = ["JsonlSink"]


def _open(path: Path) -> io.TextIOBase:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"JSONL sink {path}: cannot open for writing ({exc})") from exc


class JsonlSink(Sink):
    """One JSON object per line and per processed frame (see module doc), flushed after every line.

    Attributes:
        path: the path given.
        paths: source id -> file written (after :meth:`start`; one entry per source).
        lines: lines written, all files together.
    """

    name = "jsonl"

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        self._default: Optional[io.TextIOBase] = _open(self.path)  # opened now: a bad path fails before the run
        self._files: Dict[str, io.TextIOBase] = {}
        self.paths: Dict[str, Path] = {}
        self.lines = 0
        self._closed = False

    def start(self, streams: Sequence[StreamInfo]) -> None:
        if len(streams) <= 1:
            self.paths = {s.source_id: self.path for s in streams}
            return
        for s in streams:
            path = per_source_path(self.path, s.source_id)
            self._files[s.source_id] = _open(path)
            self.paths[s.source_id] = path
        if self._default is not None:  # several sources: the shared file was never written, remove it
            self._default.close()
            self._default = None
            self.path.unlink(missing_ok=True)

    def _file_for(self, source_id: str) -> io.TextIOBase:
        f = self._files.get(source_id)
        if f is not None:
            return f
        if self._default is None:  # a source that start() did not announce, with per-source files
            path = per_source_path(self.path, source_id)
            f = self._files[source_id] = _open(path)
            self.paths[source_id] = path
            return f
        return self._default

    def write(self, result: Result) -> None:
        if self._closed:
            raise SinkError(f"JSONL sink {self.path}: write after close")
        f = self._file_for(result.frame.source_id)
        f.write(json.dumps(result.record(), separators=(",", ":")) + "\n")
        f.flush()
        self.lines += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for f in [self._default, *self._files.values()]:
            if f is not None:
                f.close()
        self._default = None
        self._files.clear()


@register_sink(*JSONL_SUFFIXES)
def _open_jsonl(target: str) -> JsonlSink:
    return JsonlSink(target)
