"""``edge-detect serve``: run the app from a config file (or an empty one) with the dashboard and the REST API.

Config file (or the defaults: no camera yet, they come through the page) ->
:class:`~edge_detect.app_config.AppConfig` (its ``server:`` section, overridden by the flags, is the
server's settings) -> bind and token checks (before anything heavy starts) -> ``edge_detect.app.App`` in keep-alive
mode (it stays up when its sources end, and takes new ones) -> the ASGI server in the foreground; the pipeline runs
on its own thread. ``edge-detect run --http HOST:PORT`` goes through :func:`http_settings` and :func:`serve_app` too.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple, Union

from edge_detect._optional import require
from edge_detect.server.settings import (DEFAULT_HTTP_PORT, TOKEN_ENV, ServerSettings, parse_http, resolve_token,
                                         server_settings)

__all__ = ["add_parser", "main", "http_settings", "serve_app"]

LOGGER = logging.getLogger(__name__)

_EPILOG = f"""\
examples:
  edge-detect serve --config configs/app/dashboard.yaml     # http://127.0.0.1:8080/
  edge-detect serve --config cams.yaml --http 0.0.0.0:8080 --api-token "$TOKEN" --save-config
  edge-detect serve                                          # no camera yet: add them on the page (default model)

The app keeps running when its sources end (add cameras through the page or POST /api/v1/sources); it stops on
Ctrl-C / SIGTERM, or after server.max_frames / server.duration.

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
        description="Run the app of --config (without one: no camera yet) and serve a dashboard (live cameras, "
                    "counts, events, a line and zone editor) and a REST API (/api/v1, OpenAPI at "
                    "/api/v1/openapi.json).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, type=Path, metavar="YAML",
                   help="the app's config file (default: none: the default model, cameras added on the page)")
    p.add_argument("--model", default=None, metavar="PATH|NAME",
                   help="the model (overrides the config's model.path; default: yolov5n, exported once)")
    add_http_args(p, "bind address (default: the config's server.host/port, else 127.0.0.1:8080)")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="allow pages of this origin to call the API (repeatable; default: CORS off)")
    p.add_argument("--save-config", action="store_true",
                   help="write runtime changes (sources, lines, zones...) back to --config, keeping a .bak")
    return p


def add_http_args(p: Any, http_help: str) -> None:
    """``--http HOST:PORT`` and ``--api-token TOKEN`` (``serve`` and ``run``)."""
    p.add_argument("--http", default=None, metavar="HOST:PORT", help=http_help)
    p.add_argument("--api-token", default=None, metavar="TOKEN",
                   help=f"bearer token for the API's changes (default: server.api_token, then ${TOKEN_ENV}; on "
                        "127.0.0.1 a token is generated and printed when none is given)")


def http_settings(server: Union[ServerSettings, Mapping[str, Any], None], http: Optional[str] = None,
                  api_token: Optional[str] = None,
                  cors_origins: Optional[List[str]] = None) -> Tuple[ServerSettings, bool]:
    """``(ServerSettings, generated)`` from a config's ``server`` section (or ``server:`` mapping) and the flags:
    ``--http`` over ``server.host`` / ``server.port`` (unset: 127.0.0.1:8080), the token resolved
    (:func:`~edge_detect.server.settings.resolve_token`).

    Raises:
        ConfigError: bad ``server:`` keys or ``--http``, or a non-loopback bind without a token.
    """
    host, port = parse_http(http) if http else (None, None)
    settings = server_settings(server, host=host, port=port,
                               cors_origins=tuple(cors_origins) if cors_origins else None)
    if settings.port is None:
        settings = server_settings(settings, port=DEFAULT_HTTP_PORT)
    return resolve_token(settings, api_token)


def serve_app(app: Any, settings: ServerSettings, *, generated_token: bool = False,
              config_path: Optional[Path] = None, save_config: bool = False) -> Any:
    """Serve ``app`` (an ``edge_detect.app.App``, not started; keep-alive for a service) until Ctrl-C / SIGTERM or
    until its run ends (``server.max_frames`` / ``duration``, an error); returns the run's ``RunSummary``.

    The socket is bound before the app starts (a port in use fails at once); the app is stopped and waited for
    (outputs finalized) when the server ends.

    Raises:
        whatever ended the run with an error; ``KeyboardInterrupt`` after Ctrl-C when no other handler took it.
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
    threading.Thread(target=_stop_server_when_done, args=(app, server), name="serve-watch", daemon=True).start()
    reason = "interrupted"
    try:
        server.serve_forever()
        reason = "server stopped"
    finally:
        summary = app.stop(reason).wait()  # frames in flight finished, outputs finalized; errors re-raised
    return summary


def _stop_server_when_done(app: Any, server: Any) -> None:
    """Stop ``server`` once ``app``'s run has ended (its stop conditions, or an error: re-raised by serve_app)."""
    try:
        app.wait()
    except Exception:  # noqa: BLE001 - serve_app's app.wait() raises it on the main thread
        LOGGER.debug("the app's run ended with an error; stopping the HTTP server")
    server.stop()


def load_app(config: Any) -> Any:
    """The keep-alive ``edge_detect.app.App`` of a loaded config (the default model exported on first use)."""
    from edge_detect.app import App
    from edge_detect.cli.run import default_exporter

    return App(config, exporter=default_exporter, keep_alive=True)


def main(args: argparse.Namespace) -> int:
    """Check the bind and the token, build the app, serve it; 0, or 128 + signal number after SIGINT / SIGTERM."""
    from edge_detect.app_config import load_app_config

    from edge_detect.cli.run import _SignalStop

    from edge_detect.errors import ConfigError

    if args.save_config and args.config is None:
        raise ConfigError("--save-config: expected --config FILE to write the changes to, got none")
    config = load_app_config(args.config, {"model.path": args.model})
    settings, generated = http_settings(config.server, args.http, args.api_token, args.cors_origin)
    app = load_app(config)
    with _SignalStop(app) as stop:  # Ctrl-C / SIGTERM: the app stops, outputs finalized, 128 + signal number
        serve_app(app, settings, generated_token=generated, config_path=args.config, save_config=args.save_config)
    return 0 if stop.signum is None else 128 + stop.signum
