"""The REST API over the real ``App`` (``edge_detect.app``): runtime changes with real, looping file sources, the
App's errors as HTTP statuses (404, 409, 422) and the token (401, 403), ``--save-config`` of the real config, a churn
of 200 add / remove cycles with no thread or file descriptor left behind; and the fake app of the other server
tests kept to the App's methods and signatures.

The model is a replay ONNX (bus.jpg's raw output whatever the input; ``tests/conftest.py`` ``onnx_builder``):
the real Detector and pipeline at almost no inference cost. Counting with the real yolov5n is the browser test's.
"""
from __future__ import annotations

import inspect
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator

import cv2
import httpx
import numpy as np
import pytest
import yaml
from server_helpers import AUTH, TOKEN
from fake_app import FakeApp

from edge_detect.app import App
from edge_detect.app_config import load_app_config
from edge_detect.server.api import create_app
from edge_detect.server.app_protocol import APP_METHODS, AppLike
from edge_detect.server.persist import config_saver
from edge_detect.server.runner import HttpServer
from edge_detect.server.settings import ServerSettings
from polling import wait_for

CYCLES = 200
WARMUP = 10
LOOPING = {"loop": True, "realtime": True}


def test_fake_app_has_the_apps_methods_and_signatures() -> None:
    """The server uses exactly APP_METHODS; App, the protocol and the fake define them with one signature each."""
    def public(cls: type) -> set:
        return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}

    def shape(fn: Callable[..., Any]) -> list:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert public(AppLike) == set(APP_METHODS) == public(FakeApp) - {"walk"}  # walk: the fake's test hook
    for name in APP_METHODS:
        assert shape(getattr(FakeApp, name)) == shape(getattr(App, name)) == shape(getattr(AppLike, name)), name


@pytest.fixture(scope="module")
def real(tmp_path_factory, onnx_builder, reference: Path) -> Iterator[SimpleNamespace]:
    """A running keep-alive App (cam1; cam2 with a line) served on a free loopback port."""
    from edge_detect.metadata import ModelMetadata

    tmp = tmp_path_factory.mktemp("real_app")
    raw = np.load(reference / "infer_bus.npz")["raw"]
    model = onnx_builder(tmp / "replay.onnx", [raw], metadata=ModelMetadata(names=[
        "person", "bicycle", "car"] + [f"c{i}" for i in range(3, 80)]).to_dict())
    video = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(20):
        writer.write(np.full((120, 160, 3), 10 * i, np.uint8))
    writer.release()
    config = tmp / "cams.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"path": str(model), "threads": 1}, "capture": LOOPING,
        "sources": [{"uri": str(video), "id": "cam1"},
                    {"uri": str(video), "id": "cam2", "lines": {"walkway": [0, 60, 160, 60]}}],
        "server": {"progress": False}}))
    app = App(load_app_config(config), keep_alive=True).start()
    settings = ServerSettings(port=0, api_token=TOKEN)
    asgi = create_app(app, settings, persist=config_saver(config, app.config_dict))
    server = HttpServer(asgi, settings).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    try:
        yield SimpleNamespace(app=app, client=client, ctx=asgi.state.ctx, video=video, config=config)
    finally:
        client.close()
        server.stop()
        app.stop("test").wait(30)


def ids(real: SimpleNamespace) -> list:
    return [s["id"] for s in real.client.get("/api/v1/sources").json()["sources"]]


def reads(real: SimpleNamespace) -> Dict[str, int]:
    return {s["id"]: s["read"] for s in real.client.get("/api/v1/status").json()["sources"]}


def snapshot(real: SimpleNamespace, source_id: str) -> np.ndarray:
    r = wait_for(lambda: (r := real.client.get(f"/api/v1/sources/{source_id}/snapshot.jpg")).status_code == 200 and r,
                 what=f"a snapshot of {source_id}")
    return cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)


def test_add_patch_delete_a_real_source(real: SimpleNamespace) -> None:
    r = real.client.post("/api/v1/sources", headers=AUTH, json={
        "uri": str(real.video), "id": "cam3", "lines": {"door": [80, 0, 80, 120]}, "options": LOOPING})
    assert r.status_code == 201 and r.headers["location"] == "/api/v1/sources/cam3", r.text
    assert r.json()["lines"] == {"door": {"xyxy": [80.0, 0.0, 80.0, 120.0]}} and r.json()["state"] == "online"
    assert snapshot(real, "cam3").shape == (120, 160, 3)
    r = real.client.patch("/api/v1/sources/cam3", headers=AUTH, json={
        "zones": {"dock": [[0, 0], [50, 0], [50, 50]]}, "conf": 0.4, "classes": ["person", 2], "enabled": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["zones"] == {"dock": {"polygon": [0.0, 0.0, 50.0, 0.0, 50.0, 50.0]}}
    assert body["lines"] == {"door": {"xyxy": [80.0, 0.0, 80.0, 120.0]}}  # not in the body: unchanged
    assert (body["conf"], body["classes"], body["enabled"], body["state"]) == (0.4, ["person", 2], False, "paused")
    paused = reads(real)["cam3"]
    counts = real.client.get("/api/v1/counts").json()["sources"]["cam3"]
    assert set(counts["lines"]) == {"door"} and set(counts["zones"]) == {"dock"}  # declared at once
    time.sleep(0.5)
    assert reads(real)["cam3"] <= paused + 8  # a paused file is not taken (its queue fills, then it waits)
    assert real.client.patch("/api/v1/sources/cam3", headers=AUTH, json={"lines": {}}).json()["lines"] == {}
    assert real.client.delete("/api/v1/sources/cam3", headers=AUTH).status_code == 204
    assert ids(real) == ["cam1", "cam2"]


def test_a_detect_rate_set_while_running_skips_inference(real: SimpleNamespace) -> None:
    def figures() -> Dict[str, int]:
        s = next(s for s in real.client.get("/api/v1/status").json()["sources"] if s["id"] == "cam1")
        return {k: s.get(k, 0) for k in ("processed", "inference_calls", "skipped_frames")}

    r = real.client.patch("/api/v1/sources/cam1", headers=AUTH, json={"detect": {"fps": 2}})
    assert r.status_code == 200 and r.json()["detect"] == {"fps": 2}, r.text
    before = wait_for(lambda: (f := figures())["skipped_frames"] > 0 and f, what="frames the gate skipped")
    after = wait_for(lambda: (f := figures())["processed"] >= before["processed"] + 30 and f, what="30 more frames")
    inferred = after["inference_calls"] - before["inference_calls"]
    assert inferred + after["skipped_frames"] - before["skipped_frames"] == after["processed"] - before["processed"]
    assert inferred <= (after["processed"] - before["processed"]) // 3  # a 10 fps file, detected twice a second
    r = real.client.patch("/api/v1/sources/cam1", headers=AUTH, json={"detect": {}})
    assert r.status_code == 200 and r.json()["detect"] == {}, r.text
    back = wait_for(lambda: (f := figures())["processed"] >= after["processed"] + 20 and f, what="20 more frames")
    assert back["skipped_frames"] - after["skipped_frames"] <= 12  # every frame again, once the change landed


def test_source_without_id_gets_the_file_stem_made_unique(real: SimpleNamespace) -> None:
    first = real.client.post("/api/v1/sources", json={"uri": str(real.video)}, headers=AUTH)
    second = real.client.post("/api/v1/sources", json={"uri": str(real.video)}, headers=AUTH)
    assert (first.status_code, first.json()["id"], second.status_code, second.json()["id"]) == (
        201, "clip", 201, "clip-1")
    for sid in ("clip", "clip-1"):
        assert real.client.delete(f"/api/v1/sources/{sid}", headers=AUTH).status_code == 204


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/api/v1/sources/nope", None), ("GET", "/api/v1/sources/nope/snapshot.jpg", None),
    ("GET", "/api/v1/sources/nope/stream.mjpg", None), ("PATCH", "/api/v1/sources/nope", {"conf": 0.5}),
    ("DELETE", "/api/v1/sources/nope", None)])
def test_unknown_source_is_404(real: SimpleNamespace, method: str, path: str, body: Any) -> None:
    r = real.client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == 404 and r.json()["detail"].startswith("source 'nope': expected one of"), r.text


def test_duplicate_id_is_409(real: SimpleNamespace) -> None:
    r = real.client.post("/api/v1/sources", json={"uri": str(real.video), "id": "cam1"}, headers=AUTH)
    assert r.status_code == 409
    assert r.json()["detail"].startswith("source id 'cam1': expected a new id, got one the app already has")


@pytest.mark.parametrize("method,body,message", [
    ("POST", {"uri": "/no/such/video.mp4"}, "source not found: /no/such/video.mp4"),
    ("POST", {"uri": "ftp://cam/1"}, "unknown URL scheme 'ftp'"),
    ("POST", {"uri": "{video}", "options": {"lop": True}}, "unknown option 'lop' (did you mean 'loop'?)"),
    ("PATCH", {"classes": ["persn"]}, "got 'persn' (did you mean 'person'?)"),
    ("PATCH", {"lines": {"g": {"xyxy": [0, 0, 10, 10], "classes": ["bicycel"]}}}, "bicycel"),
    ("PATCH", {"detect": {"fsp": 2}}, "unknown key 'fsp' (did you mean 'fps'?)"),
    ("PATCH", {"motion": {"min_are": 3}}, "unknown key 'min_are' (did you mean 'min_area'?)"),
], ids=["missing file", "unknown scheme", "unknown capture option", "unknown class", "unknown line class",
        "unknown detect key", "unknown motion key"])
def test_what_the_app_refuses_is_422(real: SimpleNamespace, method: str, body: Dict[str, Any], message: str) -> None:
    if body.get("uri") == "{video}":
        body = {**body, "uri": str(real.video)}
    path = "/api/v1/sources" if method == "POST" else "/api/v1/sources/cam1"
    r = real.client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert ids(real) == ["cam1", "cam2"] and real.client.get("/api/v1/sources/cam1").json()["classes"] is None


@pytest.mark.parametrize("method,path,body", [("POST", "/api/v1/sources", {"uri": "x.mp4", "id": "x"}),
                                              ("PATCH", "/api/v1/sources/cam1", {"conf": 0.5}),
                                              ("DELETE", "/api/v1/sources/cam1", None)])
def test_changes_need_the_token(real: SimpleNamespace, method: str, path: str, body: Any) -> None:
    missing = real.client.request(method, path, json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    basic = real.client.request(method, path, json=body, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401
    wrong = real.client.request(method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 403 and wrong.json() == {"detail": "wrong API token"}
    assert ids(real) == ["cam1", "cam2"] and real.client.get("/api/v1/sources/cam1").json()["conf"] is None


def test_save_config_writes_the_running_config_back(real: SimpleNamespace) -> None:
    before = real.config.read_text()
    r = real.client.patch("/api/v1/sources/cam1", json={"lines": {"entry": [1, 2, 3, 4]}}, headers=AUTH)
    assert r.status_code == 200
    saved = load_app_config(real.config)  # what a restart reads
    assert saved.to_dict() == real.app.config_dict()
    assert saved.sources[0].lines == {"entry": {"xyxy": [1.0, 2.0, 3.0, 4.0]}} and saved.sources[0].id == "cam1"
    assert (real.config.parent / "cams.yaml.bak").read_text() == before
    real.client.patch("/api/v1/sources/cam1", json={"lines": {}}, headers=AUTH)
    assert load_app_config(real.config).sources[0].lines == {}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cycle(client: httpx.Client, video: Path, i: int) -> None:
    r = client.post("/api/v1/sources", json={"uri": str(video), "id": f"churn{i}", "options": LOOPING}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/sources/churn{i}/snapshot.jpg").status_code in (200, 503)  # 503: no frame yet
    r = client.patch(f"/api/v1/sources/churn{i}", json={"lines": {"g": [0, 0, 10, 10]}}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert client.delete(f"/api/v1/sources/churn{i}", headers=AUTH).status_code == 204


def test_200_add_remove_cycles_leak_no_threads_or_fds(real: SimpleNamespace) -> None:
    """The equivalent of 30 minutes of an operator changing cameras every 10 s: every thread and file descriptor
    a source, its chain or its frames took is released; the other sources never stop reading."""
    persist, real.ctx.persist = real.ctx.persist, None  # no --save-config: 600 fsynced rewrites measure the disk
    try:
        for i in range(WARMUP):
            cycle(real.client, real.video, i)
        threads, fds = threading.active_count(), open_fds()
        before = reads(real)
        for i in range(WARMUP, WARMUP + CYCLES):
            cycle(real.client, real.video, i)
    finally:
        real.ctx.persist = persist
    wait_for(lambda: threading.active_count() <= threads, what="the removed sources' threads to end")
    assert open_fds() <= fds, os.listdir("/proc/self/fd")
    after = reads(real)
    assert list(after) == ["cam1", "cam2"] and all(after[sid] > before[sid] for sid in after)
    assert {key[0] for key in real.ctx.frames._cache} <= {"cam1", "cam2"}
    assert set(real.app._latest) <= {"cam1", "cam2"}  # no frame kept for a removed source
