"""The ASGI application: REST ``/api/v1``, the server-sent-events feed and the dashboard page.

:func:`create_app` builds a FastAPI application over anything implementing
:class:`~edge_detect.server.app_protocol.AppLike` (the ``App`` service). Routes (all JSON unless said):

=========  ======================================  ====================================================
method     path (under ``/api/v1``)                 what
=========  ======================================  ====================================================
GET        ``/sources``, ``/sources/{id}``          sources: config (credentials masked) + live state
POST       ``/sources``                             add a source (token); 201, 409 duplicate id, 422
PATCH      ``/sources/{id}``                        lines, zones, conf, classes, enabled, detect, motion (token)
DELETE     ``/sources/{id}``                        remove a source (token); 204, 404
GET        ``/status``, ``/counts``                 the app's status and counts
GET        ``/events?since=&type=&source=&limit=``  stored events, oldest first
GET        ``/events/{id}``, ``…/snapshot.jpg``,    one event, its picture, its clip (recording)
           ``…/clip.mp4``
GET        ``/sources/{id}/snapshot.jpg``           latest annotated frame (``?raw=1``: without drawing)
GET        ``/sources/{id}/stream.mjpg``            MJPEG stream (``multipart/x-mixed-replace``)
GET        ``/feed``                                server-sent events: ``events``, ``counts``, ``status``
GET        ``/openapi.json``                        the OpenAPI document
=========  ======================================  ====================================================

``GET /`` serves the dashboard (``edge_detect/server/static/``). Mutations run on worker threads (the app applies
them between two batches); nothing here blocks the event loop on the app or on JPEG encoding.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles

from edge_detect.errors import UnknownSourceError
from edge_detect.server.app_protocol import AppLike
from edge_detect.server.errors import install_error_handlers
from edge_detect.server.frames import BOUNDARY, JpegCache, NoFrameYet, mjpeg_part, optional_frame
from edge_detect.server.models import SourceIn, SourcePatch
from edge_detect.server.settings import ServerSettings
from edge_detect.server.store import EventStore, RecordingIndex, event_file
from edge_detect.server.views import mask_tree, source_views

__all__ = ["create_app", "ServerContext", "API_PREFIX", "STATIC_DIR"]

LOGGER = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
STATIC_DIR = Path(__file__).with_name("static")
_FEED_TICK_S = 0.25
_FEED_STATUS_EVERY_S = 1.0
_FEED_BACKLOG = 50


@dataclass
class ServerContext:
    """What the routes share: the app, settings, event store, JPEG cache, the stop flag and the persistence hook.

    Attributes:
        persist: called with no argument after every successful mutation (``--save-config``), or ``None``.
        stopping: set when the server shuts down: streams and the feed end at their next tick.
    """

    app: AppLike
    settings: ServerSettings
    store: EventStore
    frames: JpegCache
    persist: Optional[Callable[[], None]] = None
    stopping: threading.Event = field(default_factory=threading.Event)
    subscription: Any = None

    def source_ids(self) -> List[str]:
        return [str(s.get("id")) for s in self.app.status().get("sources", [])]

    def source(self, source_id: str) -> Dict[str, Any]:
        """The view of one source (``GET /sources/{id}``); 404 when unknown."""
        for view in source_views(self.app.config_dict(), self.app.status()):
            if view["id"] == source_id:
                return view
        raise UnknownSourceError(f"source {source_id!r}: expected one of {self.source_ids()}, got no such source")

    def saved(self) -> None:
        if self.persist is not None:
            try:
                self.persist()
            except (OSError, yaml.YAMLError) as exc:  # the change is applied; say the file is behind
                LOGGER.error("--save-config: could not write the config: %s", exc)


def create_app(app: AppLike, settings: Optional[ServerSettings] = None, *,
               recordings: Optional[RecordingIndex] = None,
               persist: Optional[Callable[[], None]] = None) -> FastAPI:
    """The ASGI application serving ``app`` (see module doc).

    Args:
        app: the running app (:class:`~edge_detect.server.app_protocol.AppLike`).
        settings: server settings; ``api_token`` must be set (see :func:`~edge_detect.server.settings.
            resolve_token`).
        recordings: the recorder's clips on disk (:class:`~edge_detect.server.store.RecordingIndex`), or ``None``.
        persist: called after each successful mutation (``--save-config``), or ``None``.

    The event store subscribes to the app's bus when the ASGI lifespan starts and unsubscribes when it ends;
    ``fastapi_app.state.ctx`` is the :class:`ServerContext`.

    Raises:
        ValueError: ``settings.api_token`` is not set.
    """
    settings = settings or ServerSettings()
    if not settings.api_token:
        raise ValueError("create_app: expected settings with an api_token (see resolve_token), got none")
    ctx = ServerContext(app, settings, EventStore(settings.events_capacity, settings.thumbnails, recordings),
                        JpegCache(app, settings.stream_fps, settings.jpeg_quality), persist)
    api = FastAPI(title="edge-detect", version="1", openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None,
                  redoc_url=None, lifespan=_lifespan(ctx),
                  description="REST API of a running edge-detect app; mutations need `Authorization: Bearer`.")
    api.state.ctx = ctx
    _add_middleware(api, settings)
    install_error_handlers(api)
    router = APIRouter(prefix=API_PREFIX)
    auth = _auth_dependency(settings.api_token)
    _source_routes(router, ctx, auth)
    _read_routes(router, ctx)
    _media_routes(router, ctx)
    _feed_route(router, ctx)
    api.include_router(router)
    api.add_api_route("/", lambda: FileResponse(STATIC_DIR / "index.html"), include_in_schema=False)
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return api


def _lifespan(ctx: ServerContext) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ctx.stopping.clear()
        ctx.subscription = ctx.app.subscribe(ctx.store.on_result)
        try:
            yield
        finally:
            ctx.stopping.set()
            sub, ctx.subscription = ctx.subscription, None
            if sub is not None:
                await run_in_threadpool(sub.close)

    return lifespan


def _add_middleware(api: FastAPI, settings: ServerSettings) -> None:
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    hosts = settings.allowed_hosts
    if hosts is None and settings.loopback:
        hosts = ("localhost", "127.0.0.1", "::1", "[::1]", settings.host)
    if hosts:
        api.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        api.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])


def _auth_dependency(token: str) -> Callable[..., None]:
    bearer = HTTPBearer(auto_error=False, description="the API token (--api-token / EDGE_DETECT_API_TOKEN)")
    expected = token.encode("utf-8")

    def require_token(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if creds is None:
            raise HTTPException(401, "missing API token: expected the header 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(creds.credentials.encode("utf-8"), expected):
            raise HTTPException(403, "wrong API token")

    return require_token


# ------------------------------------------------------------------------------------------------ routes

def _source_routes(router: APIRouter, ctx: ServerContext, auth: Callable[..., None]) -> None:
    guarded = [Depends(auth)]

    @router.get("/sources", tags=["sources"], summary="List the sources")
    def list_sources() -> Dict[str, Any]:
        return {"sources": source_views(ctx.app.config_dict(), ctx.app.status())}

    @router.get("/sources/{source_id}", tags=["sources"], summary="One source")
    def get_source(source_id: str) -> Dict[str, Any]:
        return ctx.source(source_id)

    @router.post("/sources", tags=["sources"], status_code=201, dependencies=guarded, summary="Add a source")
    def add_source(body: SourceIn, response: Response) -> Dict[str, Any]:
        new_id = ctx.app.add_source(_source_config(body))
        ctx.saved()
        response.headers["Location"] = f"{API_PREFIX}/sources/{new_id}"
        return ctx.source(new_id)

    @router.patch("/sources/{source_id}", tags=["sources"], dependencies=guarded, summary="Change a source")
    def update_source(source_id: str, body: SourcePatch) -> Dict[str, Any]:
        ctx.app.update_source(source_id, **body.changes())
        ctx.saved()
        return ctx.source(source_id)

    @router.delete("/sources/{source_id}", tags=["sources"], status_code=204, dependencies=guarded,
                   summary="Remove a source")
    def remove_source(source_id: str) -> Response:
        ctx.app.remove_source(source_id)
        ctx.frames.forget(source_id)
        ctx.saved()
        return Response(status_code=204)


def _source_config(body: SourceIn) -> Any:
    """The app's source config of a POST body (:class:`~edge_detect.app_config.SourceConfig`)."""
    from edge_detect.app_config import SourceConfig

    return SourceConfig(uri=body.uri, id=body.id, options=dict(body.options), lines=dict(body.lines),
                        zones=dict(body.zones))


def _read_routes(router: APIRouter, ctx: ServerContext) -> None:
    @router.get("/status", tags=["state"], summary="Sources' state, rates, drops, stage times, model, device")
    def status() -> Dict[str, Any]:
        out = mask_tree(ctx.app.status())
        out["server"] = {"events": ctx.store.stats(), "jpeg_encoded": ctx.frames.encoded}
        return out

    @router.get("/counts", tags=["state"], summary="Line and zone counts per source and in total")
    def counts() -> Dict[str, Any]:
        return ctx.app.counts()

    @router.get("/events", tags=["events"], summary="Stored events, oldest first")
    def events(since: Optional[float] = Query(None, description="only events with wall_time > since (Unix s)"),
               types: Optional[str] = Query(None, alias="type", description="event types, comma-separated"),
               source: Optional[str] = Query(None, max_length=64),
               limit: int = Query(100, ge=1, le=1000)) -> Dict[str, Any]:
        wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
        found = ctx.store.query(since, wanted, source, limit)
        return {"events": mask_tree(found), "count": len(found)}

    @router.get("/events/{event_id}", tags=["events"], summary="One event")
    def event(event_id: str) -> Dict[str, Any]:
        return mask_tree(ctx.store.public(_event_or_404(ctx, event_id)))


def _event_or_404(ctx: ServerContext, event_id: str) -> Dict[str, Any]:
    record = ctx.store.get(event_id)
    if record is None:
        raise HTTPException(404, f"event {event_id!r}: not stored (the store keeps the newest "
                                 f"{ctx.settings.events_capacity} events)")
    return record


def _media_routes(router: APIRouter, ctx: ServerContext) -> None:
    jpeg = {200: {"content": {"image/jpeg": {}}}}

    @router.get("/sources/{source_id}/snapshot.jpg", tags=["media"], response_class=Response, responses=jpeg,
                summary="Latest frame of a source as JPEG (annotated unless raw=1)")
    def snapshot(source_id: str, raw: bool = False, max_width: int = Query(0, ge=0, le=8192)) -> Response:
        try:
            data = ctx.frames.get(source_id, not raw, max_width)
        except NoFrameYet as exc:
            _check_source(ctx, source_id)
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.get("/sources/{source_id}/stream.mjpg", tags=["media"], response_class=StreamingResponse,
                summary="MJPEG stream of a source (multipart/x-mixed-replace)")
    async def stream(source_id: str, raw: bool = False, max_width: int = Query(0, ge=0, le=8192)) -> Response:
        await run_in_threadpool(_check_source, ctx, source_id)
        return StreamingResponse(_mjpeg(ctx, source_id, not raw, max_width),
                                 media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @router.get("/events/{event_id}/snapshot.jpg", tags=["events"], response_class=Response, responses=jpeg,
                summary="Picture of an event: the recorder's thumbnail, else the in-memory one")
    def event_snapshot(event_id: str) -> Response:
        record = _event_or_404(ctx, event_id)
        path = event_file(record, "thumbnail", "snapshot")
        if path is not None:
            return FileResponse(path, media_type="image/jpeg")
        data = ctx.store.thumbnail(event_id)
        if data is None:
            raise HTTPException(404, f"event {event_id!r}: no picture kept")
        return Response(data, media_type="image/jpeg")

    @router.get("/events/{event_id}/clip.mp4", tags=["events"], response_class=FileResponse,
                responses={200: {"content": {"video/mp4": {}}}}, summary="Clip of an event (recording on)")
    def event_clip(event_id: str) -> FileResponse:
        path = event_file(_event_or_404(ctx, event_id), "clip")
        if path is None:
            raise HTTPException(404, f"event {event_id!r}: no clip (recording off, or the file was removed)")
        return FileResponse(path, media_type="video/mp4")


def _check_source(ctx: ServerContext, source_id: str) -> None:
    if source_id not in ctx.source_ids():
        raise UnknownSourceError(f"source {source_id!r}: expected one of {ctx.source_ids()}, got no such source")


async def _mjpeg(ctx: ServerContext, source_id: str, annotated: bool, max_width: int) -> AsyncIterator[bytes]:
    """Parts of ``stream.mjpg`` until the client goes, the source is removed or the server stops."""
    last: Optional[bytes] = None
    while not ctx.stopping.is_set():
        try:
            data = await run_in_threadpool(optional_frame, ctx.frames, source_id, annotated, max_width)
        except UnknownSourceError:
            return
        if data is not None and data is not last:
            last = data
            yield mjpeg_part(data)
        await asyncio.sleep(ctx.frames.interval)


def _feed_route(router: APIRouter, ctx: ServerContext) -> None:
    @router.get("/feed", tags=["events"], response_class=EventSourceResponse,
                summary="Server-sent events: 'events' (lists of new events), 'counts', 'status'")
    async def feed() -> AsyncIterator[ServerSentEvent]:
        backlog, cursor = ctx.store.after(0, _FEED_BACKLOG)
        yield ServerSentEvent(event="events", data=mask_tree(backlog), retry=2000)
        next_status = 0.0
        while not ctx.stopping.is_set():
            new, cursor = ctx.store.after(cursor)
            if new:
                yield ServerSentEvent(event="events", data=mask_tree(new))
            now = time.monotonic()
            if new or now >= next_status:
                yield ServerSentEvent(event="counts", data=await run_in_threadpool(ctx.app.counts))
            if now >= next_status:
                next_status = now + _FEED_STATUS_EVERY_S
                status = await run_in_threadpool(ctx.app.status)
                yield ServerSentEvent(event="status", data=mask_tree(status))
            await asyncio.sleep(_FEED_TICK_S)
