"""Churn: 200 add / snapshot / patch / remove cycles through the REST API leave no thread, file descriptor or cached
frame behind (the equivalent of 30 minutes of an operator changing cameras every 10 s)."""
from __future__ import annotations

import os
import threading

import httpx
from server_helpers import AUTH, TOKEN, two_sources
from fake_app import FakeApp

from edge_detect.server.api import create_app
from edge_detect.server.runner import HttpServer
from edge_detect.server.settings import ServerSettings

CYCLES = 200
WARMUP = 10


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cycle(client: httpx.Client, i: int) -> None:
    r = client.post("/api/v1/sources", json={"uri": f"fake://churn{i}", "id": f"churn{i}"}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/sources/churn{i}/snapshot.jpg").status_code in (200, 503)  # 503: no frame yet
    r = client.patch(f"/api/v1/sources/churn{i}", json={"lines": {"g": [0, 0, 10, 10]}}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert client.delete(f"/api/v1/sources/churn{i}", headers=AUTH).status_code == 204


def test_200_add_remove_cycles_leak_no_threads_or_fds() -> None:
    app = FakeApp(two_sources())
    app.start()
    settings = ServerSettings(port=0, api_token=TOKEN)
    asgi = create_app(app, settings)
    server = HttpServer(asgi, settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(WARMUP):
                cycle(client, i)
            threads, fds = threading.active_count(), open_fds()
            read_before = {s["id"]: s["read"] for s in client.get("/api/v1/status").json()["sources"]}
            for i in range(WARMUP, WARMUP + CYCLES):
                cycle(client, i)
            status = client.get("/api/v1/status").json()
            assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
            assert open_fds() <= fds
            assert [s["id"] for s in status["sources"]] == ["cam1", "cam2"]
            assert all(s["read"] > read_before[s["id"]] for s in status["sources"])  # the others kept going
            assert {key[0] for key in asgi.state.ctx.frames._cache} <= {"cam1", "cam2"}
    finally:
        server.stop()
        app.stop()
