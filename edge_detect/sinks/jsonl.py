"""JSON Lines sink: one JSON object per processed frame (:meth:`edge_detect.types.Result.record`).

With one source the lines go to the given path. With several sources each source gets its own file, named like
the video sink's: ``out.jsonl`` -> ``out_<source_id>.jsonl`` (every line still carries its ``source``), so
per-source files stay separate and keep their frame order. Lines are serialized on the caller's thread and
written by the sink's own thread (:class:`~edge_detect.sinks.threaded.ThreadedSink`, ``never_drop``).

A file is created (or an existing one truncated) only when its first line is written (the file sinks' rule,
:mod:`edge_detect.sinks.base`): a run that fails at start leaves an existing file as it was. Each line is written
whole, straight to the file (no buffer to lose); when a write fails (a full disk, a file size limit) the file is
cut back to its last complete line and the sink fails with the error, so the file always ends on a whole line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Tuple, Union

from edge_detect.errors import SinkError
from edge_detect.paths import check_writable
from edge_detect.sinks.base import JSONL_SUFFIXES, Result, per_source_path, register_sink
from edge_detect.sinks.threaded import ThreadedSink
from edge_detect.types import RunContext

__all__ = ["JsonlSink"]


class _LineFile:
    """A file written in whole lines: ``write(data)`` appends one encoded line or, on failure, truncates the file
    back to the end of the last complete line and raises :class:`OSError`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.size = 0  # bytes of complete lines

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:  # not a regular file (a pipe, /dev/full): nothing to cut back
                pass
            raise
        self.size += len(data)

    def close(self) -> None:
        os.close(self.fd)


class JsonlSink(ThreadedSink):
    """One JSON object per line and per processed frame (see module doc), each line written whole.

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
        check_writable(self.path, "JSONL sink")  # a bad path fails before the run; nothing is created yet
        self._files: Dict[str, _LineFile] = {}
        self._shared = True  # one file for every source (one source at start)
        self.paths: Dict[str, Path] = {}
        self.lines = 0

    def open(self, context: RunContext) -> None:
        self._shared = len(context) <= 1
        self.paths = {s.source_id: self._path_of(s.source_id) for s in context}

    def _path_of(self, source_id: str) -> Path:
        return self.path if self._shared else per_source_path(self.path, source_id)

    def _file_for(self, source_id: str) -> _LineFile:
        """The file of ``source_id``, created on its first line (a source added later gets its own, or the shared
        one)."""
        path = self.paths.setdefault(source_id, self._path_of(source_id))
        f = self._files.get(str(path))
        if f is None:
            try:
                f = self._files[str(path)] = _LineFile(path)
            except OSError as exc:
                raise SinkError(f"JSONL sink {path}: cannot open for writing ({exc})") from exc
        return f

    def write(self, result: Result) -> None:
        if self._closed:
            raise SinkError(f"JSONL sink {self.path}: write after close")
        super().write(result)

    def prepare(self, result: Result) -> Tuple[str, bytes]:
        """``(source_id, JSON line)``: serialized here, written by the sink's thread."""
        line = json.dumps(result.record(), separators=(",", ":")) + "\n"
        return result.frame.source_id, line.encode("utf-8")

    def handle(self, item: Tuple[str, bytes]) -> bool:
        source_id, line = item
        f = self._file_for(source_id)
        try:
            f.write(line)
        except OSError as exc:
            raise SinkError(f"JSONL sink {self.paths[source_id]}: cannot write ({exc.strerror or exc}); the file "
                            f"ends on its last complete line") from exc
        self.lines += 1
        return True

    def finalize(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


@register_sink(*JSONL_SUFFIXES)
def _open_jsonl(target: str) -> JsonlSink:
    return JsonlSink(target)
