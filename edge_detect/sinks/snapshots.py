"""Snapshots of event frames: a JPEG with the boxes drawn, written before the event is sent, with retention.

For every processed frame that has events, :class:`SnapshotWriter` writes ``DIR/<source>/<source>-<frame>.jpg``
(the annotated frame, once per frame however many events it has) and, with ``crop=True``, one
``DIR/<source>/<source>-<frame>-t<track_id>.jpg`` per event that names a track visible in the frame (the raw
pixels of its box plus a 10 % margin). Each event gets ``"snapshot"`` (and ``"snapshot_crop"``): the path as
written (``DIR`` joined, not resolved). Files are written to a temporary name and renamed, so a consumer that
reads the path from the event always finds a complete JPEG.

Retention: at most ``keep`` frame snapshots (their crops go with them) and none older than ``max_age_s``
seconds (file modification time); applied after every write, to files left by earlier runs too (from the first
write on: a run that fails at start deletes nothing).
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_detect.errors import SinkError

__all__ = ["SnapshotWriter"]

LOGGER = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_CROP = re.compile(r"-t-?\d+\.jpg$")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", str(name)) or "_"


class SnapshotWriter:
    """JPEG snapshots of event frames (see module doc).

    Args:
        directory: output folder (created).
        crop: also write the box of each event's track.
        keep: most frame snapshots kept (``None`` = no count limit).
        max_age_s: delete snapshots older than this (``None`` = no age limit).
        quality: JPEG quality 1..100.

    Raises:
        SinkError: the folder cannot be created. ConfigError-style ``ValueError``: bad limits.
    """

    def __init__(self, directory: Union[str, os.PathLike], crop: bool = False, keep: Optional[int] = 1000,
                 max_age_s: Optional[float] = None, quality: int = 90) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"snapshots keep: expected >= 1 or None, got {keep}")
        if max_age_s is not None and max_age_s <= 0:
            raise ValueError(f"snapshots max_age_s: expected > 0 or None, got {max_age_s}")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"snapshots quality: expected 1..100, got {quality}")
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"snapshots {self.dir}: cannot create folder ({exc})") from exc
        self.crop, self.keep, self.max_age_s, self.quality = crop, keep, max_age_s, int(quality)
        self.written = 0
        # (mtime, frame snapshot, [crops]) oldest first
        self._files: Deque[Tuple[float, Path, List[Path]]] = deque()
        self._scan()  # retention applies from the first write on (a run that fails at start deletes nothing)

    def _scan(self) -> None:
        """Adopt snapshots of earlier runs so retention applies to them too."""
        frames: Dict[Path, Tuple[float, Path, List[Path]]] = {}
        crops: List[Path] = []
        for p in self.dir.glob("*/*.jpg"):
            if _CROP.search(p.name):
                crops.append(p)
            else:
                frames[p] = (p.stat().st_mtime, p, [])
        for c in crops:
            parent = c.with_name(_CROP.sub(".jpg", c.name))
            if parent in frames:
                frames[parent][2].append(c)
        self._files.extend(sorted(frames.values(), key=lambda x: x[0]))

    def _imwrite(self, path: Path, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise SinkError(f"snapshot {path}: JPEG encoding failed for an image of shape {image.shape}")
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, path)
        except OSError as exc:
            raise SinkError(f"snapshot {path}: cannot write ({exc})") from exc

    def write(self, result: Any, events: Sequence[Dict[str, Any]]) -> Path:
        """Write the snapshot(s) of ``result`` and set ``snapshot`` (``snapshot_crop``) on each event.

        Args:
            result: the :class:`~edge_detect.types.Result` the events belong to (its ``annotated`` image is
                used: boxes and labels drawn).
            events: the enveloped events of that frame (modified in place).

        Returns:
            The path of the frame snapshot.
        """
        frame = result.frame
        sid = _safe(frame.source_id)
        folder = self.dir / sid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sid}-{int(frame.index):08d}.jpg"
        self._imwrite(path, result.annotated)
        crops: List[Path] = []
        dets = result.detections
        for ev in events:
            ev["snapshot"] = str(path)
            if not self.crop or "track_id" not in ev or dets.track_id is None:
                continue
            hit = np.flatnonzero(dets.track_id == int(ev["track_id"]))
            if hit.size == 0:
                continue
            x1, y1, x2, y2 = dets.xyxy[int(hit[0])].tolist()
            mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
            h, w = frame.image.shape[:2]
            xa, ya = int(max(0, x1 - mx)), int(max(0, y1 - my))
            xb, yb = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
            if xb <= xa or yb <= ya:
                continue
            cpath = folder / f"{sid}-{int(frame.index):08d}-t{int(ev['track_id'])}.jpg"
            if cpath not in crops:
                self._imwrite(cpath, frame.image[ya:yb, xa:xb])
                crops.append(cpath)
            ev["snapshot_crop"] = str(cpath)
        self.written += 1
        if self._files and self._files[-1][1] == path:  # same frame again (end-of-source result)
            self._files[-1][2].extend(c for c in crops if c not in self._files[-1][2])
        else:
            self._files.append((time.time(), path, crops))
        self._retain()
        return path

    def _retain(self) -> None:
        now = time.time()
        while self._files and ((self.keep is not None and len(self._files) > self.keep) or
                               (self.max_age_s is not None and now - self._files[0][0] > self.max_age_s)):
            _, path, crops = self._files.popleft()
            for p in (path, *crops):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    LOGGER.warning("snapshot retention: cannot delete %s (%s)", p, exc)

    @property
    def files(self) -> List[Path]:
        """Frame snapshots currently kept, oldest first."""
        return [p for _, p, _ in self._files]

    def close(self) -> None:
        """Nothing buffered; applies retention once more."""
        self._retain()
