"""Running the ASGI application with uvicorn: in the foreground (the CLI) or on a thread (tests, embedding).

The socket is bound before uvicorn starts, so a port in use fails at once with a one-line
:class:`~edge_detect.errors.ConfigError`, and port 0 picks a free port (read :attr:`HttpServer.port`). Stopping sets
the context's ``stopping`` flag first, so MJPEG streams and the feed end within a tick and uvicorn's graceful
shutdown does not wait for them.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Optional

from edge_detect.errors import ConfigError
from edge_detect.server.settings import ServerSettings, bind_port

__all__ = ["HttpServer"]

LOGGER = logging.getLogger(__name__)
_GRACEFUL_S = 3


class HttpServer:
    """uvicorn serving ``asgi_app`` (from :func:`~edge_detect.server.api.create_app`) on ``settings.host`` /
    ``settings.port`` (unset: 8080).

    Args:
        asgi_app: the FastAPI application (its ``state.ctx.stopping`` is set on stop).
        settings: bind address and port.
        log_level: uvicorn's log level (its access log is off).

    Raises:
        ConfigError: the address cannot be bound (port in use, unknown host).
    """

    def __init__(self, asgi_app: Any, settings: ServerSettings, log_level: str = "warning") -> None:
        import uvicorn

        self.asgi_app, self.settings = asgi_app, settings
        self._socket = _bind(settings.host, bind_port(settings))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(asgi_app, log_level=log_level, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=_GRACEFUL_S)
        stopping = asgi_app.state.ctx.stopping

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:  # Ctrl-C / SIGTERM: end the streams first
                stopping.set()
                super().handle_exit(sig, frame)

        self._server = _Server(config)
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve on this thread until Ctrl-C / SIGTERM or :meth:`stop`."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def start(self) -> "HttpServer":
        """Serve on a background thread; returns once the server accepts connections.

        Raises:
            RuntimeError: the server did not start within 30 s.
        """
        self._thread = threading.Thread(target=self.serve_forever, name="edge-detect-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30.0
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError(f"the HTTP server on {self.url} did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the streams, shut uvicorn down and wait for its thread (when started with :meth:`start`)."""
        self.asgi_app.state.ctx.stopping.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                LOGGER.warning("the HTTP server thread did not end within %.0f s", timeout)
            self._thread = None

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 by the address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"server host: expected an address or a resolvable name, got {host!r} ({exc})") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)  # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY (no 40 ms stalls)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server there? pick "
                          f"another port)") from exc
    sock.set_inheritable(True)
    return sock
