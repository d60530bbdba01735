"""JSON Lines sink: one JSON object per processed frame (:meth:`edge_detect.types.Result.record`), flushed.

With one source the lines go to the given path. With several sources each source gets its own file, named like
the video sink's: ``out.jsonl`` -> ``out_<source_id>.jsonl`` (every line still carries its ``source``), so
per-source files stay separate and keep their frame order. Lines are serialized on the caller's thread and
written by the sink's own thread (:class:`~edge_detect.sinks.threaded.ThreadedSink`, ``never_drop``).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from edge_detect.errors import SinkError
from edge_detect.sinks.base import JSONL_SUFFIXES, Result, per_source_path, register_sink
from edge_detect.sinks.threaded import ThreadedSink
from edge_detect.types import RunContext

__all__ = ["JsonlSink"]


def _open(path: Path) -> io.TextIOBase:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"JSONL sink {path}: cannot open for writing ({exc})") from exc


class JsonlSink(ThreadedSink):
    """One JSON object per line and per processed frame (see module doc), flushed after every line.

    Attributes:
        path: the path given.
        paths: source id -> file written (after :meth:`start`; one entry per source).
        lines: lines written, all files together.
    """

    name = "jsonl"
    default_policy = "never_drop"
    default_queue_size = 256

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        super().__init__()
        self.path = Path(path)
        self._default: Optional[io.TextIOBase] = _open(self.path)  # opened now: a bad path fails before the run
        self._files: Dict[str, io.TextIOBase] = {}
        self.paths: Dict[str, Path] = {}
        self.lines = 0

    def open(self, context: RunContext) -> None:
        if len(context) <= 1:
            self.paths = {s.source_id: self.path for s in context}
            return
        for s in context:
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
        super().write(result)

    def prepare(self, result: Result) -> Tuple[str, str]:
        """``(source_id, JSON line)``: serialized here, written by the sink's thread."""
        return result.frame.source_id, json.dumps(result.record(), separators=(",", ":")) + "\n"

    def handle(self, item: Tuple[str, str]) -> bool:
        source_id, line = item
        f = self._file_for(source_id)
        try:
            f.write(line)
            f.flush()
        except OSError as exc:
            raise SinkError(f"JSONL sink {self.path}: cannot write ({exc})") from exc
        self.lines += 1
        return True

    def finalize(self) -> None:
        for f in [self._default, *self._files.values()]:
            if f is not None:
                f.close()
        self._default = None
        self._files.clear()


@register_sink(*JSONL_SUFFIXES)
def _open_jsonl(target: str) -> JsonlSink:
    return JsonlSink(target)
