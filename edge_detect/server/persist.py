"""``--save-config``: write the running app's config back to its YAML file, atomically, keeping the previous one.

The new text goes to a temporary file in the same folder (flushed and fsynced), the current file is copied to
``NAME.bak`` (replacing an older backup), then the temporary file replaces ``NAME`` in one ``os.replace``: a reader
(or a crash) sees either the old file or the new one, never half of one. Comments of the original file are not
kept (it is written from data); the ``.bak`` has them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import yaml

__all__ = ["write_config", "config_saver"]

_LOCK = threading.Lock()


def write_config(path: Union[str, "os.PathLike[str]"], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as YAML to ``path`` atomically; the previous file (if any) is kept as ``path + ".bak"``.

    Returns:
        The backup's path (it exists only when ``path`` did).

    Raises:
        OSError: the folder is not writable (nothing was changed then).
        yaml.YAMLError: ``data`` holds something YAML cannot represent (nothing was changed).
    """
    path = Path(path)
    backup = path.with_name(path.name + ".bak")
    text = yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=None, allow_unicode=True)
    with _LOCK:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            if path.exists():
                shutil.copy2(path, backup)
                shutil.copymode(path, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return backup


def config_saver(path: Union[str, "os.PathLike[str]"], config_dict: Callable[[], Mapping[str, Any]]) -> Callable[[], Path]:
    """A no-argument function writing ``config_dict()`` to ``path`` (the server calls it after each change)."""
    return lambda: write_config(path, config_dict())


def _plain(obj: Any) -> Any:
    """Tuples to lists (``safe_dump`` writes no Python tags), mappings to dicts, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
