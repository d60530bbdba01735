"""What to delete: the pure retention planner of the recorder, plus the clip file naming.

Clips live under ``DIR/{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4`` with a ``.jpg`` thumbnail beside each.
Retention deletes the oldest clips first, by age (older than ``days``) and by total size (over ``max_bytes``),
and never a clip that is still being written.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import AbstractSet, Iterable, List, Optional, Sequence

__all__ = ["ClipFile", "clip_path", "clip_id", "plan_retention", "scan_clips", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
CLIP_SUFFIX = ".mp4"
THUMB_SUFFIX = ".jpg"


def safe_name(text: str) -> str:
    """``text`` as one path component: runs of anything but letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    out = _UNSAFE.sub("_", str(text)).strip("._") or "_"
    return out[:96]


def clip_path(root: Path, source_id: str, wall_time: float, event_id: str) -> Path:
    """``root/{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4`` for a clip whose first event happened at
    ``wall_time`` (Unix seconds, local time of this machine)."""
    stamp = datetime.fromtimestamp(wall_time)
    return (Path(root) / safe_name(source_id) / stamp.strftime("%Y-%m-%d")
            / f"{stamp.strftime('%H%M%S')}-{safe_name(event_id)}{CLIP_SUFFIX}")


def clip_id(root: Path, path: Path) -> str:
    """The id of the ``clip_saved`` event of the clip at ``path`` (uuid hex, 32 digits): derived from its place
    under ``root`` (``{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4``), so the recorder and a later index of the
    folder (:class:`~edge_detect.recording.index.ClipIndex`) name a clip alike."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:  # not under root: its full path
        rel = Path(path).resolve().as_posix()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"edge-detect:clip:{rel}").hex


@dataclass(frozen=True)
class ClipFile:
    """A clip on disk: its path, modification time (Unix s), size in bytes (clip plus thumbnail)."""

    path: Path
    mtime: float
    size: int


def scan_clips(root: Path) -> List[ClipFile]:
    """Every ``*.mp4`` under ``root`` (recursively) with its thumbnail's size added; oldest first."""
    out = []
    for path in Path(root).rglob(f"*{CLIP_SUFFIX}"):
        try:
            st = path.stat()
        except FileNotFoundError:  # deleted meanwhile
            continue
        thumb = path.with_suffix(THUMB_SUFFIX)
        extra = thumb.stat().st_size if thumb.exists() else 0
        out.append(ClipFile(path, st.st_mtime, st.st_size + extra))
    return sorted(out, key=lambda c: (c.mtime, str(c.path)))


def plan_retention(clips: Sequence[ClipFile], open_paths: AbstractSet[Path] = frozenset(),
                   days: Optional[float] = None, max_bytes: Optional[int] = None,
                   now: Optional[float] = None) -> List[Path]:
    """The clips to delete, oldest first.

    Args:
        clips: the clips on disk (any order).
        open_paths: clips still being written: never deleted, but their size counts.
        days: delete clips older than this many days (``None``: no age limit).
        max_bytes: then delete the oldest closed clips until the total is at most this (``None``: no limit).
        now: Unix time to measure age from (default: now).

    Returns:
        Paths of clips (``.mp4``) to delete; the caller deletes each with its thumbnail.
    """
    now = time.time() if now is None else now
    ordered = sorted(clips, key=lambda c: (c.mtime, str(c.path)))
    doomed: List[Path] = []
    kept: List[ClipFile] = []
    for clip in ordered:
        if clip.path not in open_paths and days is not None and now - clip.mtime > days * 86400.0:
            doomed.append(clip.path)
        else:
            kept.append(clip)
    if max_bytes is not None:
        total = sum(c.size for c in kept)
        for clip in kept:
            if total <= max_bytes:
                break
            if clip.path in open_paths:
                continue
            doomed.append(clip.path)
            total -= clip.size
    return doomed


def delete_clips(paths: Iterable[Path]) -> int:
    """Delete each clip and its thumbnail (missing files are fine); returns how many clips were removed, and
    removes day folders left empty."""
    n = 0
    for path in paths:
        for p in (path, path.with_suffix(THUMB_SUFFIX)):
            try:
                os.remove(p)
            except FileNotFoundError:
                continue
        n += 1
        try:
            path.parent.rmdir()  # only when empty
        except OSError:
            pass
    return n
