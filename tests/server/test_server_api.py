"""REST API over the fake app (``fake_app.py``: the App's methods, no model), through a real uvicorn on a free
loopback port: what the server itself does -- the reads, streams, the feed and the event store, request validation
(422), credentials never returned, CORS off, host names, recording hooks, --save-config keeping secrets. What
depends on the App (runtime changes, its 404 / 409 / 422, the token on changes, churn) runs on the real App in
``test_server_real_app.py``."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import cv2
import httpx
import numpy as np
import pytest
import yaml
from server_helpers import AUTH, TOKEN, two_sources, fake, settings  # noqa: F401 (fixtures)
from fake_app import FakeApp

from edge_detect.server.api import create_app
from edge_detect.server.persist import config_saver
from edge_detect.server.runner import HttpServer
from edge_detect.server.settings import ServerSettings
from polling import wait_for

SCHEMA = Path(__file__).resolve().parents[2] / "edge_detect" / "schemas" / "events.schema.json"


def serve(app: FakeApp, settings: ServerSettings, **kwargs: Any) -> SimpleNamespace:
    asgi = create_app(app, settings, **kwargs)
    server = HttpServer(asgi, settings).start()
    client = httpx.Client(base_url=server.url, timeout=10.0)
    return SimpleNamespace(app=app, server=server, client=client, ctx=asgi.state.ctx, url=server.url)


@pytest.fixture
def served(fake: FakeApp, settings: ServerSettings) -> Iterator[SimpleNamespace]:
    """A fresh app and server (tests that change sources)."""
    s = serve(fake, settings)
    yield s
    s.client.close()
    s.server.stop()


@pytest.fixture(scope="module")
def shared() -> Iterator[SimpleNamespace]:
    """One app and server for the tests that leave it as they found it (reads, refused requests)."""
    app = FakeApp(two_sources())
    app.start()
    s = serve(app, ServerSettings(port=0, api_token=TOKEN))
    yield s
    s.client.close()
    s.server.stop()
    app.stop()


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img


def snapshot(s: SimpleNamespace, source_id: str, **params: Any) -> httpx.Response:
    return wait_for(lambda: (r := s.client.get(f"/api/v1/sources/{source_id}/snapshot.jpg", params=params))
                    .status_code == 200 and r, what=f"a snapshot of {source_id}")


# ------------------------------------------------------------------------------------------------ reads

def test_sources_are_listed_with_state_regions_and_masked_uri(shared: SimpleNamespace) -> None:
    r = shared.client.get("/api/v1/sources")
    assert r.status_code == 200
    sources = {s["id"]: s for s in r.json()["sources"]}
    assert list(sources) == ["cam1", "cam2"]
    cam2 = sources["cam2"]
    assert cam2["uri"] == "rtsp://***@10.0.0.7/stream"
    assert cam2["lines"] == {"walkway": {"xyxy": [0.0, 150.0, 100.0, 150.0]}}
    assert cam2["zones"] == {"bay": {"polygon": [0.0, 0.0, 100.0, 0.0, 100.0, 140.0, 0.0, 140.0]}}
    assert cam2["state"] == "online" and cam2["enabled"] is True
    assert shared.client.get("/api/v1/sources/cam2").json()["uri"] == "rtsp://***@10.0.0.7/stream"


def test_credentials_never_leave_the_api(served: SimpleNamespace) -> None:
    served.app.walk("cam2", 60)
    wait_for(lambda: served.client.get("/api/v1/events").json()["count"] > 0, what="an event")
    dup = served.client.post("/api/v1/sources", json={"uri": "rtsp://bob:s3cret@cam/2", "id": "cam2"},
                             headers=AUTH)
    assert dup.status_code == 409
    bodies = [served.client.get(p).text for p in ("/api/v1/sources", "/api/v1/sources/cam2", "/api/v1/status",
                                                  "/api/v1/events", "/api/v1/counts")] + [dup.text]
    with served.client.stream("GET", "/api/v1/feed") as feed:
        bodies.append(next(feed.iter_text()))
    for text in bodies:
        assert "hunter2" not in text and "s3cret" not in text and "admin" not in text


def test_status_reports_sources_stages_model_device(shared: SimpleNamespace) -> None:
    status = wait_for(lambda: (st := shared.client.get("/api/v1/status").json())["sources"][0]["read"] > 0 and st,
                      what="frames read")
    row = status["sources"][0]
    for key in ("id", "uri", "state", "fps_in", "fps_out", "read", "processed", "dropped", "reconnects",
                "last_frame_age_s"):
        assert key in row
    assert status["stages_ms"]["inference"] == pytest.approx(3.1)
    assert status["model"] == "fake.onnx" and status["device"] == "cpu"
    assert status["server"]["events"]["stored"] >= 0


def test_counts_come_from_the_app(shared: SimpleNamespace) -> None:
    counts = shared.client.get("/api/v1/counts").json()
    assert counts["sources"]["cam1"] == {"lines": {}, "zones": {}, "events": {}}
    assert set(counts["sources"]["cam2"]["lines"]) == {"walkway"}
    assert set(counts["sources"]["cam2"]["zones"]) == {"bay"}


def test_snapshot_is_the_latest_annotated_frame(shared: SimpleNamespace) -> None:
    ann = decode_jpeg(snapshot(shared, "cam2").content)
    raw = decode_jpeg(snapshot(shared, "cam2", raw=1).content)
    small = decode_jpeg(snapshot(shared, "cam2", max_width=160).content)
    assert ann.shape == raw.shape == (240, 320, 3) and small.shape == (120, 160, 3)
    # the line "walkway" (y = 150, x = 0..100) is drawn in magenta (BGR 255, 0, 255) on the annotated frame only
    assert ann[150, 80, 0] > 200 and ann[150, 80, 2] > 200 and ann[150, 80, 1] < 80
    assert np.abs(raw[150, 80].astype(int) - 40).max() < 20


def test_mjpeg_stream_sends_jpeg_parts(shared: SimpleNamespace) -> None:
    snapshot(shared, "cam1")
    parts: List[np.ndarray] = []
    with shared.client.stream("GET", "/api/v1/sources/cam1/stream.mjpg") as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=edgedetectframe"
        buf = b""
        for chunk in r.iter_bytes():
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                if len(rest) < length + 2:
                    break
                parts.append(decode_jpeg(rest[:length]))
                buf = rest[length + 2:]
            if len(parts) >= 2:
                break
    assert parts[0].shape == (240, 320, 3) and not np.array_equal(parts[0], parts[1])


def test_mjpeg_stream_ends_when_its_source_is_removed(served: SimpleNamespace) -> None:
    snapshot(served, "cam1")
    with served.client.stream("GET", "/api/v1/sources/cam1/stream.mjpg") as r:
        chunks = r.iter_bytes()
        next(chunks)
        assert served.client.delete("/api/v1/sources/cam1", headers=AUTH).status_code == 204
        for _ in chunks:  # ends (no exception) once the source is gone
            pass


def read_feed(s: SimpleNamespace, wanted: set, timeout: float = 10.0) -> Dict[str, Any]:
    """The first payload of each wanted SSE event name."""
    got: Dict[str, Any] = {}
    with s.client.stream("GET", "/api/v1/feed", timeout=timeout) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: ") and name in wanted and name not in got:
                got[name] = json.loads(line[len("data: "):])
                if set(got) == wanted:
                    break
    return got


def test_feed_streams_events_counts_and_status(shared: SimpleNamespace) -> None:
    got = read_feed(shared, {"events", "counts", "status"})
    assert isinstance(got["events"], list)
    assert set(got["counts"]["sources"]) == {"cam1", "cam2"}
    assert [s["id"] for s in got["status"]["sources"]] == ["cam1", "cam2"]


def test_openapi_document_lists_the_api(shared: SimpleNamespace) -> None:
    doc = shared.client.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    for path in ("/api/v1/sources", "/api/v1/sources/{source_id}", "/api/v1/status", "/api/v1/counts",
                 "/api/v1/events", "/api/v1/events/{event_id}/clip.mp4", "/api/v1/events/{event_id}/snapshot.jpg",
                 "/api/v1/sources/{source_id}/snapshot.jpg", "/api/v1/sources/{source_id}/stream.mjpg",
                 "/api/v1/feed"):
        assert path in paths, path
    assert set(paths["/api/v1/sources/{source_id}"]) == {"get", "patch", "delete"}
    assert paths["/api/v1/sources"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/api/v1/sources"]["get"]


def test_page_and_its_assets_are_served(shared: SimpleNamespace) -> None:
    page = shared.client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    for asset in ("app.js", "style.css"):
        assert shared.client.get(f"/static/{asset}").status_code == 200


def test_events_query_filters_and_validates(served: SimpleNamespace) -> None:
    import jsonschema

    served.client.patch("/api/v1/sources/cam1", json={"lines": {"entry": [160, 10, 160, 230]}}, headers=AUTH)
    served.app.walk("cam1", 283)
    found = wait_for(lambda: served.client.get("/api/v1/events", params={"type": "line_cross", "source": "cam1"})
                     .json()["events"], what="the line_cross event")
    (event,) = found
    jsonschema.validate(event, json.loads(SCHEMA.read_text()))
    assert (event["line"], event["direction"], event["track_id"], event["seq"]) == ("entry", "out", 1, 1)
    one = served.client.get(f"/api/v1/events/{event['id']}").json()
    assert one["id"] == event["id"]
    assert served.client.get("/api/v1/events", params={"since": event["wall_time"], "source": "cam1"}).json()[
        "count"] == 0
    assert served.client.get("/api/v1/events", params={"type": "zone_enter", "source": "cam1"}).json()["count"] == 0
    wait_for(lambda: served.client.get("/api/v1/events").json()["count"] >= 3, what="cam2's events")
    assert served.client.get("/api/v1/events", params={"limit": 2}).json()["count"] == 2
    thumb = served.client.get(event["snapshot_url"])
    assert thumb.headers["content-type"] == "image/jpeg" and decode_jpeg(thumb.content).shape[1] == 240
    assert served.client.get(f"/api/v1/events/{event['id']}/clip.mp4").status_code == 404  # no recording


def test_recorded_clips_are_listed_and_served(fake: FakeApp, settings: ServerSettings, tmp_path: Path) -> None:
    clip, thumb = tmp_path / "clip.mp4", tmp_path / "thumb.jpg"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    thumb.write_bytes(cv2.imencode(".jpg", np.zeros((24, 32, 3), np.uint8))[1].tobytes())
    old = {"id": "a" * 32, "type": "clip_saved", "source": "cam1", "frame": 3, "wall_time": 1.0,
           "clip": str(clip), "thumbnail": str(thumb)}

    class Recordings:  # the recorder's clips on disk (hook of EventStore)
        def events(self, since, source, limit):
            return [old] if (since is None or old["wall_time"] > since) and source in (None, "cam1") else []

    s = serve(fake, settings, recordings=Recordings())
    try:
        live = s.ctx.store.add({"type": "clip_saved", "source": "cam2", "frame": 9, "wall_time": time.time(),
                                "path": str(clip)})  # the typed ClipSaved carries `path`
        events = s.client.get("/api/v1/events", params={"type": "clip_saved"}).json()["events"]
        assert [e["id"] for e in events] == [old["id"], live["id"]]
        assert events[0]["clip_url"] == f"/api/v1/events/{old['id']}/clip.mp4"
        r = s.client.get(events[1]["clip_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4" and r.content == clip.read_bytes()
        ranged = s.client.get(events[0]["clip_url"], headers={"Range": "bytes=0-7"})
        assert ranged.status_code == 206 and ranged.content == clip.read_bytes()[:8]
        assert s.client.get(events[0]["snapshot_url"]).content == thumb.read_bytes()
    finally:
        s.client.close()
        s.server.stop()


def test_save_config_keeps_secrets_and_a_backup(fake: FakeApp, settings: ServerSettings,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "cams.yaml"
    path.write_text("# my cameras\nsources: [fake://cam1]\n")
    s = serve(fake, settings, persist=config_saver(path, fake.config_dict))
    try:
        assert s.client.patch("/api/v1/sources/cam1", json={"lines": {"entry": [1, 2, 3, 4]}},
                              headers=AUTH).status_code == 200
        saved = yaml.safe_load(path.read_text())
        assert saved["sources"][0]["lines"] == {"entry": {"xyxy": [1.0, 2.0, 3.0, 4.0]}}
        assert saved["sources"][1]["uri"] == "rtsp://admin:hunter2@10.0.0.7/stream"  # the file keeps the secret
        assert (tmp_path / "cams.yaml.bak").read_text() == "# my cameras\nsources: [fake://cam1]\n"
        assert s.client.delete("/api/v1/sources/cam2", headers=AUTH).status_code == 204
        assert [src["id"] for src in yaml.safe_load(path.read_text())["sources"]] == ["cam1"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.yaml", "cams.yaml.bak"]
    finally:
        s.client.close()
        s.server.stop()


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("path", ["/api/v1/events/" + "0" * 32, "/api/v1/events/" + "0" * 32 + "/clip.mp4",
                                  "/api/v1/events/" + "0" * 32 + "/snapshot.jpg"])
def test_unknown_event_is_404(shared: SimpleNamespace, path: str) -> None:
    r = shared.client.get(path)
    assert r.status_code == 404 and "0" * 32 in r.json()["detail"]


BAD_BODIES = [
    ("PATCH", {"lines": {"l": [5, 5, 5, 5]}}, "zero-length line"),
    ("PATCH", {"lines": {"l": [0, 0, 1e7, 1]}}, "|v| <= 1e+06"),
    ("PATCH", {"lines": {"l": [0, 0, 1]}}, "expected 4 numbers x1, y1, x2, y2, got 3"),
    ("PATCH", {"lines": {"l": [0, 0, "a", 1]}}, "expected numbers, got 'a'"),
    ("PATCH", {"lines": {"l": {"xyxy": [0, 0, 1, 1], "colour": "red"}}}, "unknown key 'colour'"),
    ("PATCH", {"lines": {"l": {"xyxy": [0, 0, 1, 1], "anchor": "top"}}}, "anchor: expected one of"),
    ("PATCH", {"lines": {"bad name!": [0, 0, 1, 1]}}, "line name: expected 1-64 characters"),
    ("PATCH", {"zones": {"z": [0, 0, 10, 0]}}, "expected 3 to 256 x, y points"),
    ("PATCH", {"zones": {"z": [0, 0, 5, 5, 10, 10]}}, "non-zero area"),
    ("PATCH", {"zonez": {}}, "unknown key 'zonez' (did you mean 'zones'?)"),
    ("PATCH", {"conf": 1.5}, "body.conf"),
    ("PATCH", {"classes": [-1]}, "class names (1-64 characters) or ids >= 0"),
    ("PATCH", {}, "expected at least one of lines, zones, conf, classes, enabled"),
    ("POST", {"id": "x"}, "body.uri: required"),
    ("POST", {"uri": "fake://x", "id": "a/b"}, "source name: expected"),
    ("POST", {"uri": "fake://x\nHost: evil"}, "uri: expected no control characters"),
]


@pytest.mark.parametrize("method,body,message", BAD_BODIES, ids=[m for _, _, m in BAD_BODIES])
def test_bad_body_is_422_with_a_clear_message(shared: SimpleNamespace, method: str, body: Dict[str, Any],
                                              message: str) -> None:
    path = "/api/v1/sources/cam1" if method == "PATCH" else "/api/v1/sources"
    r = shared.client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == 422
    assert message in r.json()["detail"], r.json()
    assert [s["id"] for s in shared.client.get("/api/v1/sources").json()["sources"]] == ["cam1", "cam2"]


@pytest.mark.parametrize("text,message", [('{"lines": {"l": [0, 0, NaN, 1]}}', "expected finite coordinates"),
                                          ('{"lines": {"l": [0, 0, Infinity, 1]}}', "expected finite coordinates"),
                                          ('{"lines": ', "body: expected a JSON body, got invalid JSON")])
def test_non_finite_or_broken_json_is_422(shared: SimpleNamespace, text: str, message: str) -> None:
    r = shared.client.patch("/api/v1/sources/cam1", content=text,
                            headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and message in r.json()["detail"], r.json()


def test_bad_query_is_422(shared: SimpleNamespace) -> None:
    r = shared.client.get("/api/v1/events", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"].startswith("query.limit:")
    assert shared.client.get("/api/v1/events", params={"since": "yesterday"}).status_code == 422


# ------------------------------------------------------------------------------------------------ web security

def test_cors_is_off_by_default(shared: SimpleNamespace) -> None:
    origin = {"Origin": "https://evil.example"}
    r = shared.client.get("/api/v1/status", headers=origin)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = shared.client.options("/api/v1/sources", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_origins_can_be_allowed(fake: FakeApp) -> None:
    s = serve(fake, ServerSettings(port=0, api_token=TOKEN, cors_origins=("https://ops.example",)))
    try:
        pre = s.client.options("/api/v1/sources", headers={"Origin": "https://ops.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert pre.headers["access-control-allow-origin"] == "https://ops.example"
        other = s.client.get("/api/v1/status", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        s.client.close()
        s.server.stop()


def test_loopback_server_refuses_foreign_host_names(shared: SimpleNamespace) -> None:
    assert shared.client.get("/api/v1/status", headers={"Host": "rebound.evil.example"}).status_code == 400
    assert shared.client.get("/api/v1/status", headers={"Host": f"localhost:{shared.server.port}"}).status_code == 200


def test_geometry_limit_is_inclusive(served: SimpleNamespace) -> None:
    r = served.client.patch("/api/v1/sources/cam1", json={"lines": {"far": [-1e6, 0, 1e6, 0]}}, headers=AUTH)
    assert r.status_code == 200 and r.json()["lines"]["far"]["xyxy"] == [-1e6, 0.0, 1e6, 0.0]
    assert math.isfinite(r.json()["lines"]["far"]["xyxy"][0])


def test_stop_ends_open_streams_and_the_feed(fake: FakeApp, settings: ServerSettings) -> None:
    import threading

    s = serve(fake, settings)
    snapshot(s, "cam1")
    ended: Dict[str, bool] = {}
    reading: Dict[str, bool] = {}

    def read(path: str) -> None:
        with httpx.Client(base_url=s.url, timeout=30) as c, c.stream("GET", path) as r:
            for _ in r.iter_bytes():
                reading[path] = True
        ended[path] = True

    readers = [threading.Thread(target=read, args=(p,), daemon=True)
               for p in ("/api/v1/feed", "/api/v1/sources/cam1/stream.mjpg")]
    for t in readers:
        t.start()
    wait_for(lambda: len(reading) == 2, what="both streams to send")  # connected before the server stops
    s.client.close()
    s.server.stop()
    for t in readers:
        t.join(15)
    assert ended == {"/api/v1/feed": True, "/api/v1/sources/cam1/stream.mjpg": True}
    assert s.ctx.subscription is None  # the store's bus subscription was closed
