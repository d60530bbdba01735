"""Settings of the HTTP server (the config's ``server:`` section) and its security checks.

Pure functions and a frozen dataclass, no web framework imported: the CLI checks the bind address and the token
before anything heavy starts.

Security model (README "Dashboard and REST API"):

* the server binds ``127.0.0.1:8080`` unless told otherwise;
* ``POST`` / ``PATCH`` / ``DELETE`` need ``Authorization: Bearer TOKEN`` (missing: 401, wrong: 403); the token comes
  from ``--api-token``, the config's ``server.api_token`` or ``EDGE_DETECT_API_TOKEN``, in that order;
* on a loopback address without one, a random token is generated for this process and printed once;
* a non-loopback address without a token is refused (:class:`~edge_detect.errors.ConfigError`; the CLI exits 2);
* reads (``GET``) are open to whoever reaches the port; CORS is off unless ``cors_origins`` lists origins; on a
  loopback bind only ``Host: localhost / 127.0.0.1 / [::1]`` is served (no DNS rebinding).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Tuple

from edge_detect.config import from_mapping
from edge_detect.errors import ConfigError

__all__ = ["ServerSettings", "TOKEN_ENV", "is_loopback", "parse_http", "resolve_token", "check_bind",
           "server_settings"]

#: environment variable holding the API token
TOKEN_ENV = "EDGE_DETECT_API_TOKEN"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ServerSettings:
    """The ``server:`` section of a config.

    Attributes:
        host: bind address (default loopback only).
        port: TCP port (0 = any free port).
        api_token: bearer token for mutations (``None``: see :func:`resolve_token`).
        cors_origins: origins allowed to call the API from other pages (empty = CORS off).
        allowed_hosts: ``Host`` header values served; ``None`` = loopback names on a loopback bind, any otherwise.
        stream_fps: most frames per second of an MJPEG stream and of the page's tiles.
        jpeg_quality: JPEG quality of snapshots and streams, 1..100.
        events_capacity: events kept in memory for ``GET /events`` (oldest dropped first).
        thumbnails: events whose frame thumbnail is kept in memory (oldest dropped first; 0 = none).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    api_token: Optional[str] = None
    cors_origins: Tuple[str, ...] = ()
    allowed_hosts: Optional[Tuple[str, ...]] = None
    stream_fps: float = 10.0
    jpeg_quality: int = 80
    events_capacity: int = 2000
    thumbnails: int = 200

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ConfigError(f"server.port: expected 0..65535, got {self.port}")
        if not 0.1 <= float(self.stream_fps) <= 60:
            raise ConfigError(f"server.stream_fps: expected 0.1..60, got {self.stream_fps}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ConfigError(f"server.jpeg_quality: expected 1..100, got {self.jpeg_quality}")
        if int(self.events_capacity) < 1 or int(self.thumbnails) < 0:
            raise ConfigError(f"server.events_capacity / thumbnails: expected >= 1 / >= 0, got "
                              f"{self.events_capacity} / {self.thumbnails}")
        if self.api_token is not None and len(str(self.api_token)) < _MIN_TOKEN_CHARS:
            raise ConfigError(f"server.api_token: expected at least {_MIN_TOKEN_CHARS} characters, got "
                              f"{len(str(self.api_token))} (generate one: python -c 'import secrets; "
                              f"print(secrets.token_urlsafe(24))')")

    @property
    def loopback(self) -> bool:
        """Whether :attr:`host` is a loopback address."""
        return is_loopback(self.host)


def server_settings(section: Optional[Mapping[str, Any]], **overrides: Any) -> ServerSettings:
    """:class:`ServerSettings` from a config's ``server:`` mapping, then ``overrides`` that are not ``None``
    (flags not given).

    Raises:
        ConfigError: unknown key (with the closest known one) or a value out of range.
    """
    settings = from_mapping(dict(section or {}), ServerSettings, where="server")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(settings, **changes) if changes else settings


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``); ``False`` for ``0.0.0.0``, ``::``
    and every other name or address."""
    name = str(host).strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_http(value: str) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6), ``:PORT`` or ``PORT`` -> ``(host, port)``; a missing host is
    ``127.0.0.1``.

    Raises:
        ConfigError: not of that form, or the port outside 0..65535.
    """
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http: expected HOST:PORT with a port in 0..65535 (e.g. 127.0.0.1:8080), got {value!r}")
    return host, int(port)


def resolve_token(settings: ServerSettings, cli_token: Optional[str] = None,
                  env: Optional[Mapping[str, str]] = None) -> Tuple[ServerSettings, bool]:
    """The settings with the API token filled in, and whether it was generated.

    Order: ``cli_token``, ``settings.api_token`` (config), ``env[EDGE_DETECT_API_TOKEN]``; when none is given a
    loopback server gets a random one (print it once), a non-loopback one is refused.

    Raises:
        ConfigError: non-loopback bind without a token (one line, says how to give one), or a token too short.
    """
    env = os.environ if env is None else env
    token = cli_token or settings.api_token or env.get(TOKEN_ENV) or None
    if token is not None:
        return replace(settings, api_token=token), False
    check_bind(settings)
    return replace(settings, api_token=secrets.token_urlsafe(24)), True


def check_bind(settings: ServerSettings) -> None:
    """Refuse a non-loopback bind without an API token.

    Raises:
        ConfigError: ``settings.host`` is not loopback and ``settings.api_token`` is ``None``.
    """
    if settings.api_token is None and not settings.loopback:
        raise ConfigError(f"refusing to serve on {settings.host}:{settings.port} without an API token: expected "
                          f"--api-token TOKEN, server.api_token in the config or {TOKEN_ENV}, got none "
                          f"(or bind to 127.0.0.1)")
