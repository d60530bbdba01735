"""MJPEG-over-HTTP preview sink (``multipart/x-mixed-replace``), spec ``mjpeg://HOST:PORT`` or ``mjpeg://PORT``."""
from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from edge_detect.errors import SinkError
from edge_detect.sinks.base import Result, Sink, StreamInfo, register_sink

__all__ = ["MjpegPreviewSink"]

LOGGER = logging.getLogger(__name__)


class _PreviewServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: "MjpegPreviewSink"


class _PreviewHandler(BaseHTTPRequestHandler):
    server: _PreviewServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        LOGGER.debug("preview %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        sink = self.server.sink
        url = urlparse(self.path)
        sid = parse_qs(url.query).get("source", [None])[0] or url.path.strip("/") or None
        if sid in ("", "stream", "video", "stream.mjpg"):
            sid = None
        if sid is not None and sid not in sink.source_ids():
            self.send_error(404, f"unknown source {sid!r}; known: {sink.source_ids()}")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={sink.BOUNDARY}")
        self.send_header("Cache-Control", "no-cache, no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        sink._stream_to(self.wfile, sid)


class MjpegPreviewSink(Sink):
    """MJPEG-over-HTTP preview (``multipart/x-mixed-replace``) served from a background thread.

    ``GET /`` streams the first source, ``GET /<source_id>`` (or ``/?source=<id>``) a given one. Frames are
    JPEG-encoded only while a client is connected. Bound to ``127.0.0.1`` unless ``host`` says otherwise.

    Also usable on its own (tests, demos): :meth:`publish` pushes any BGR image.

    Args:
        port: TCP port (0 = any free port; read :attr:`port` afterwards).
        host: bind address; ``"0.0.0.0"`` exposes the preview to the network.
        quality: JPEG quality 1..100.
        annotate: publish the annotated frame (``False``: the raw frame).

    Raises:
        SinkError: the address cannot be bound (port in use, bad host).
    """

    name = "preview"
    BOUNDARY = "frame"

    def __init__(self, port: int = 8080, host: str = "127.0.0.1", quality: int = 80, annotate: bool = True) -> None:
        if not 1 <= int(quality) <= 100:
            raise SinkError(f"preview quality: expected 1..100, got {quality}")
        self.quality, self.annotate = int(quality), annotate
        try:
            self._server = _PreviewServer((host, int(port)), _PreviewHandler)
        except OSError as exc:
            raise SinkError(f"preview server: cannot listen on {host}:{port} ({exc})") from exc
        self._server.sink = self
        self.host, self.port = host, int(self._server.server_address[1])
        self._cond = threading.Condition()
        self._latest: Dict[str, Tuple[int, bytes]] = {}
        self._order: List[str] = []
        self._clients = 0
        self._closed = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"preview-{self.port}", daemon=True)
        self._thread.start()
        LOGGER.info("MJPEG preview on %s", self.url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def clients(self) -> int:
        """Connected viewers."""
        return self._clients

    def source_ids(self) -> List[str]:
        with self._cond:
            return list(self._order)

    def start(self, streams: Sequence[StreamInfo]) -> None:
        with self._cond:
            for s in streams:
                if s.source_id not in self._order:
                    self._order.append(s.source_id)

    def publish(self, image: np.ndarray, source_id: str = "0", force: bool = False) -> None:
        """Make ``image`` (BGR ``uint8 (H, W, 3)``) the current frame of ``source_id``.

        Encoding is skipped when nobody watches, unless ``force``.
        """
        with self._cond:
            if source_id not in self._order:
                self._order.append(source_id)
            if not self._clients and not force:
                return
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            LOGGER.warning("preview: JPEG encoding failed for a frame of %s", source_id)
            return
        with self._cond:
            seq = self._latest.get(source_id, (0, b""))[0] + 1
            self._latest[source_id] = (seq, buf.tobytes())
            self._cond.notify_all()

    def write(self, result: Result) -> None:
        """Publish the (annotated) frame; nothing is drawn or encoded while nobody watches."""
        if result.events_only:
            return
        image = (result.annotated if self.annotate else result.frame.image) if self._clients \
            else result.frame.image
        self.publish(image, result.frame.source_id)

    def _stream_to(self, wfile: Any, source_id: Optional[str]) -> None:
        with self._cond:
            self._clients += 1
        seen = 0
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed or self._next(source_id, seen) is not None, 1.0)
                    if self._closed:
                        return
                    item = self._next(source_id, seen)
                if item is None:
                    continue
                seen, jpeg = item
                wfile.write(f"--{self.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n".encode("ascii") + jpeg + b"\r\n")
                wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            LOGGER.debug("preview client left: %s", exc)
        finally:
            with self._cond:
                self._clients -= 1

    def _next(self, source_id: Optional[str], seen: int) -> Optional[Tuple[int, bytes]]:
        sid = source_id if source_id is not None else (self._order[0] if self._order else None)
        item = self._latest.get(sid) if sid is not None else None
        return item if item is not None and item[0] != seen else None

    def close(self) -> None:
        """Stop serving: viewers' connections end, the port is released."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)



@register_sink("mjpeg")
def _open_mjpeg(target: str, host: Optional[str] = None, quality: int = 80,
                annotate: bool = True) -> MjpegPreviewSink:
    """``mjpeg://HOST:PORT`` or ``mjpeg://PORT`` (host ``127.0.0.1``; ``host=`` applies when the URI has none)."""
    m = re.fullmatch(r"mjpeg://(?:([^:/]+):)?(\d+)/?", target, flags=re.IGNORECASE)
    if m is None:
        raise SinkError(f"preview sink {target!r}: expected 'mjpeg://HOST:PORT' or 'mjpeg://PORT'")
    return MjpegPreviewSink(port=int(m.group(2)), host=m.group(1) or host or "127.0.0.1", quality=quality,
                            annotate=annotate)
