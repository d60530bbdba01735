"""Latest frames as JPEG for ``snapshot.jpg`` and ``stream.mjpg``: encoded once per interval, shared by viewers.

Any number of page tiles and MJPEG viewers of one source cost one JPEG encode per ``1 / max_fps`` seconds: the
last encode is reused until it is older than that. Encoding runs on the caller's thread (the server calls it from
its worker threads, never on the event loop).
"""
from __future__ import annotations

import threading
import time
from typing import Dict, Optional, Tuple

import cv2

from edge_detect.server.app_protocol import AppLike

__all__ = ["JpegCache", "NoFrameYet", "BOUNDARY", "mjpeg_part", "optional_frame"]

#: multipart boundary of ``stream.mjpg``
BOUNDARY = "edgedetectframe"


class NoFrameYet(LookupError):
    """The source exists but has produced no frame yet."""


class JpegCache:
    """Per (source, annotated, max_width): the latest frame as JPEG bytes, re-encoded at most ``max_fps`` times a
    second.

    Args:
        app: the app whose :meth:`~edge_detect.server.app_protocol.AppLike.latest_frame` is read.
        max_fps: most encodes per second and key.
        quality: JPEG quality 1..100.
    """

    def __init__(self, app: AppLike, max_fps: float = 10.0, quality: int = 80) -> None:
        self.app, self.interval, self.quality = app, 1.0 / float(max_fps), int(quality)
        self._cache: Dict[Tuple[str, bool, int], Tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self.encoded = 0

    def get(self, source_id: str, annotated: bool = True, max_width: int = 0) -> bytes:
        """The JPEG of ``source_id``'s latest frame (downscaled to ``max_width`` pixels when wider; 0 = as is).

        Raises:
            UnknownSourceError: no such source.
            NoFrameYet: the source has no frame yet.
        """
        key = (str(source_id), bool(annotated), int(max_width))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.interval:
            return hit[1]
        image = self.app.latest_frame(key[0], annotated=key[1])
        if image is None:
            raise NoFrameYet(f"source {source_id!r}: no frame yet")
        h, w = image.shape[:2]
        if 0 < max_width < w:
            image = cv2.resize(image, (int(max_width), max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover - OpenCV fails only on invalid images
            raise NoFrameYet(f"source {source_id!r}: the frame could not be encoded")
        data = buf.tobytes()
        with self._lock:
            self._cache[key] = (now, data)
            self.encoded += 1
        return data

    def forget(self, source_id: str) -> None:
        """Drop the cached frames of a removed source."""
        with self._lock:
            for key in [k for k in self._cache if k[0] == source_id]:
                del self._cache[key]


def mjpeg_part(jpeg: bytes) -> bytes:
    """One part of a ``multipart/x-mixed-replace; boundary=BOUNDARY`` stream."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
    return head + jpeg + b"\r\n"


def optional_frame(cache: JpegCache, source_id: str, annotated: bool, max_width: int) -> Optional[bytes]:
    """:meth:`JpegCache.get`, or ``None`` while the source has no frame yet."""
    try:
        return cache.get(source_id, annotated, max_width)
    except NoFrameYet:
        return None
