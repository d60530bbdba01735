"""``edge-detect serve``: run the app from a config file with the dashboard and the REST API.

Flags -> :class:`~edge_detect.server.settings.ServerSettings` (the config's ``server:`` section, overridden by
flags) -> bind and token checks (before anything heavy starts) -> ``edge_detect.app.App`` -> the ASGI server in
the foreground; the pipeline runs on its own thread. ``edge-detect run --http HOST:PORT`` goes through
:func:`serve_app` too.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from edge_detect._optional import require
from edge_detect.config import load_yaml
from edge_detect.errors import ConfigError, MissingDependencyError
from edge_detect.server.settings import TOKEN_ENV, ServerSettings, parse_http, resolve_token, server_settings

__all__ = ["add_parser", "main", "http_settings", "serve_app"]

LOGGER = logging.getLogger(__name__)

_EPILOG = f"""\
examples:
  edge-detect serve --config cams.yaml                      # http://127.0.0.1:8080/
  edge-detect serve --config cams.yaml --http 0.0.0.0:8080 --api-token "$TOKEN" --save-config

security: changes (POST / PATCH / DELETE) need 'Authorization: Bearer TOKEN'. The token comes from --api-token,
server.api_token in the config or ${TOKEN_ENV}; on 127.0.0.1 without one, a token is generated and printed once.
Binding to any other address without a token is refused (exit 2). Reads are open to whoever reaches the port.
--save-config writes changes made while running back to --config (atomically; the previous file is kept as .bak;
comments are not kept).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` and its flags (each overrides the config's ``server:`` key of the same name)."""
    p = subparsers.add_parser(
        "serve", help="run the app with a web dashboard and a REST API",
        description="Run the app of --config and serve a dashboard (live cameras, counts, events, a line and zone "
                    "editor) and a REST API (/api/v1, OpenAPI at /api/v1/openapi.json).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, metavar="YAML", help="the app's config file")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="bind address (default: the config's server.host/port, else 127.0.0.1:8080)")
    p.add_argument("--api-token", default=None, metavar="TOKEN",
                   help=f"bearer token for changes (default: server.api_token, then ${TOKEN_ENV})")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="allow pages of this origin to call the API (repeatable; default: CORS off)")
    p.add_argument("--save-config", action="store_true",
                   help="write runtime changes (sources, lines, zones...) back to --config, keeping a .bak")
    return p


def http_settings(section: Optional[Mapping[str, Any]], http: Optional[str] = None, api_token: Optional[str] = None,
                  cors_origins: Optional[list] = None) -> tuple:
    """``(ServerSettings, generated)`` from a config's ``server:`` mapping and the flags, token resolved.

    Raises:
        ConfigError: bad ``server:`` keys or ``--http``, or a non-loopback bind without a token.
    """
    host, port = parse_http(http) if http else (None, None)
    settings = server_settings(section, host=host, port=port,
                               cors_origins=tuple(cors_origins) if cors_origins else None)
    return resolve_token(settings, api_token)


def serve_app(app: Any, settings: ServerSettings, *, generated_token: bool = False,
              config_path: Optional[Path] = None, save_config: bool = False) -> int:
    """Serve ``app`` (an ``edge_detect.app.App``, not started) until Ctrl-C / SIGTERM; returns 0.

    The socket is bound before the app starts (a port in use fails at once); the app stops when the server ends.
    """
    require("fastapi", "server")
    require("uvicorn", "server")
    from edge_detect.recording import ClipIndex
    from edge_detect.server.api import create_app
    from edge_detect.server.persist import config_saver
    from edge_detect.server.runner import HttpServer

    persist = config_saver(config_path, app.config_dict) if save_config and config_path else None
    record = app.config.outputs.record
    recordings = ClipIndex(record.dir) if record is not None and record.dir else None  # clips of earlier runs too
    server = HttpServer(create_app(app, settings, recordings=recordings, persist=persist), settings)
    if generated_token:
        print(f"edge-detect: API token (generated for this run, shown once): {settings.api_token}", file=sys.stderr)
        print(f"edge-detect: dashboard: {server.url}/#token={settings.api_token}", file=sys.stderr)
    else:
        print(f"edge-detect: dashboard: {server.url}/", file=sys.stderr)
    app.start()
    reason = "interrupted"
    try:
        server.serve_forever()
        reason = "server stopped"
    finally:
        app.stop(reason)
    return 0


def load_app(config_path: Path) -> Any:
    """``edge_detect.app.App`` of a config file (imported here: the server needs the layout-v3 App).

    Raises:
        MissingDependencyError: this build has no ``edge_detect.app``.
    """
    try:
        from edge_detect.app import App
    except ImportError as exc:
        raise MissingDependencyError(f"edge-detect serve: expected the App service (edge_detect.app), got none in "
                                     f"this build ({exc})") from exc
    from edge_detect.app_config import load_app_config

    from edge_detect.cli.run import default_exporter

    return App(load_app_config(config_path), exporter=default_exporter)


def main(args: argparse.Namespace) -> int:
    """Check the bind and the token, build the app, serve it."""
    data = load_yaml(args.config) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{args.config}: expected a mapping at the top level, got {type(data).__name__}")
    settings, generated = http_settings(data.get("server"), args.http, args.api_token, args.cors_origin)
    return serve_app(load_app(args.config), settings, generated_token=generated, config_path=args.config,
                     save_config=args.save_config)
