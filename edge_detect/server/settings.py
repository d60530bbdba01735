"""Settings of the HTTP server (the config's ``server:`` section) and its security checks.

The settings are the config's ``server:`` section, :class:`edge_detect.app_config.ServerConfig` (its one home;
:data:`ServerSettings` is the same class under the server's name). Pure functions, no web framework imported: the
CLI checks the bind address and the token before anything heavy starts.

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

import os
import secrets
from dataclasses import replace
from typing import Any, Mapping, Optional, Tuple, Union

from edge_detect.app_config import DEFAULT_HTTP_PORT, ServerConfig
from edge_detect.config import from_mapping
from edge_detect.errors import ConfigError
from edge_detect.urls import is_loopback

__all__ = ["ServerSettings", "TOKEN_ENV", "DEFAULT_HTTP_PORT", "is_loopback", "parse_http", "resolve_token",
           "check_bind", "server_settings", "bind_port"]

#: environment variable holding the API token
TOKEN_ENV = "EDGE_DETECT_API_TOKEN"

#: the server's settings: the config's ``server:`` section (one class, see module doc)
ServerSettings = ServerConfig


def bind_port(settings: ServerSettings) -> int:
    """The port to listen on: ``settings.port``, or :data:`DEFAULT_HTTP_PORT` when unset."""
    return DEFAULT_HTTP_PORT if settings.port is None else int(settings.port)


def server_settings(section: Union[ServerSettings, Mapping[str, Any], None], **overrides: Any) -> ServerSettings:
    """:class:`ServerSettings` from a loaded config's ``server`` section or a ``server:`` mapping, then
    ``overrides`` that are not ``None`` (flags not given).

    Raises:
        ConfigError: unknown key (with the closest known one) or a value out of range.
    """
    settings = section if isinstance(section, ServerConfig) else \
        from_mapping(dict(section or {}), ServerSettings, where="server")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(settings, **changes) if changes else settings


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
        raise ConfigError(f"refusing to serve on {settings.host}:{bind_port(settings)} without an API token: expected "
                          f"--api-token TOKEN, server.api_token in the config or {TOKEN_ENV}, got none "
                          f"(or bind to 127.0.0.1)")
