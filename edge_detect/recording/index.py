"""The recorder's folder as events: :class:`ClipIndex` lists the clips on disk as ``clip_saved`` event dicts, for
the dashboard's event list (:class:`~edge_detect.server.store.RecordingIndex`) after a restart.

Each clip ``DIR/{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4`` becomes ``{"id", "type": "clip_saved", "source",
"wall_time" (the file's modification time: when the clip closed), "path", "clip", "thumbnail" (when its ``.jpg``
exists), "trigger" (the event that opened it)}``; ``id`` is the one the recorder gave the clip's ``clip_saved``
event (:func:`~edge_detect.recording.retention.clip_id`), so a clip seen live and on disk is one event.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from edge_detect.recording.retention import THUMB_SUFFIX, clip_id, scan_clips

__all__ = ["ClipIndex"]


class ClipIndex:
    """The clips under ``root`` as ``clip_saved`` event dicts (module doc); the folder is read at each call."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = Path(root)

    def events(self, since: Optional[float] = None, source: Optional[str] = None,
               limit: int = 100) -> List[Dict[str, Any]]:
        """The clips closed after ``since`` (Unix seconds; ``None``: all), of ``source`` (``None``: all), the newest
        ``limit``, oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for clip in scan_clips(self.root):
            if since is not None and clip.mtime <= since:
                continue
            try:
                src = clip.path.relative_to(self.root).parts[0]
            except (ValueError, IndexError):
                continue
            if source is not None and src != source:
                continue
            out.append(self._event(clip.path, src, clip.mtime))
        return out[-int(limit):] if limit > 0 else []

    def _event(self, path: Path, source: str, mtime: float) -> Dict[str, Any]:
        thumb = path.with_suffix(THUMB_SUFFIX)
        trigger = path.stem.split("-", 1)[1] if "-" in path.stem else None
        return {"id": clip_id(self.root, path), "type": "clip_saved", "source": source, "frame": 0,
                "wall_time": round(mtime, 6), "path": str(path), "clip": str(path),
                "thumbnail": str(thumb) if thumb.is_file() else None, "trigger": trigger}
