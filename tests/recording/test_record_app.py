"""Recording through the App: a source added while the app runs is recorded from its own file (remuxed); an RTSP
stream (the real RTSP test server, tools/rtsp_test_server.py) recorded through an outage gives a playable clip
after the reconnect; the dashboard's API serves a recorded clip, its thumbnail, and the clip of the event it
covers, also from the folder after the run (ClipIndex)."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List

import pytest

from conftest import REPO, free_port, has_module

av = pytest.importorskip("av")
pytestmark = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime not installed")

from edge_detect.app import App  # noqa: E402
from edge_detect.app_config import SourceConfig, load_app_config  # noqa: E402
from recording.scripted import decoded_frames, make_h264, packets  # noqa: E402  (registers scripted_events)
from polling import wait_for  # noqa: E402

DIST = "/usr/lib/python3/dist-packages"


def _config(tmp_path: Path, replay: Path, sources: str, processors: str, record: str = "{pre_s: 1, post_s: 1}"):
    path = tmp_path / "app.yaml"
    path.write_text(f"model: {{path: '{replay}', threads: 1}}\nsources: {sources}\n"
                    f"analytics: {{processors: [{processors}]}}\n"
                    f"outputs: {{show: false, record: {record[:-1]}, dir: '{tmp_path / 'clips'}'}}}}\n"
                    "server: {progress: false}\n")
    return load_app_config(path)


class _Clips:
    """Pull subscriber of an App's bus collecting the clip_saved events (with their source)."""

    def __init__(self, app: App) -> None:
        self.sub = app.subscribe(name="test-clips", queue_size=10000)
        self.got: List[Any] = []
        self.seen: List[Any] = []

    def poll(self) -> List[Any]:
        while True:
            result = self.sub.get(timeout=0)
            if result is None:
                return self.got
            for ev in result.events:
                self.seen.append((result.frame.source_id, ev))
                if ev.type == "clip_saved":
                    assert result.emitted
                    self.got.append((result.frame.source_id, ev))


def test_a_source_added_while_running_is_recorded_from_its_own_file(tmp_path, h264_video, replay):
    late = make_h264(tmp_path / "late.mp4", 5.0)
    cfg = _config(tmp_path, replay, f"[{{uri: '{h264_video}', id: cam, options: {{realtime: true}}}}]",
                  "{name: scripted_events, options: {times: [2.0]}}")
    app = App(cfg).start()
    clips = _Clips(app)
    try:
        wait_for(lambda: app.status()["processed"] >= 3, what="the first frames")
        assert app.add_source(SourceConfig(str(late), id="late")) == "late"
        got = wait_for(lambda: [ev for sid, ev in clips.poll() if sid == "late"], what="the late source's clip")
    finally:
        app.stop("test").wait(60)
    clip = got[0]
    src = [data for _, data, _ in packets(late)]
    mine = packets(Path(clip["path"]))
    first = src.index(mine[0][1])  # copied from the late source's own file: it was recorded from its URI
    assert [data for _, data, _ in mine] == src[first:first + len(mine)]
    assert decoded_frames(Path(clip["path"])) == clip["frames"] and Path(clip["path"]).parts[-3] == "late"


# ------------------------------------------------------------------------------------------------- RTSP

def _gst_rtsp_missing() -> str:
    probe = (f"import sys\ntry:\n    import gi\nexcept ImportError:\n    sys.path.append({DIST!r})\n    import gi\n"
             "gi.require_version('Gst', '1.0')\ngi.require_version('GstRtspServer', '1.0')\n"
             "from gi.repository import GstRtspServer\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["unknown error"])[-1]


class RtspServer:
    """tools/rtsp_test_server.py in a subprocess, on a fixed port: killed and started again for an outage."""

    def __init__(self, video: Path, port: int) -> None:
        self.video, self.port, self.proc = video, port, None
        self.url = f"rtsp://127.0.0.1:{port}/stream"

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "rtsp_test_server.py"), "--source",
                                      str(self.video), "--port", str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # "READY rtsp://..." once it serves
        if not line.startswith("READY"):
            raise RuntimeError(f"RTSP test server did not start: {line}{self.proc.stderr.read()[-2000:]}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def rtsp_server(h264_video):
    missing = _gst_rtsp_missing()
    if missing:
        pytest.skip(f"GStreamer RTSP server bindings missing ({missing}); Debian: apt-get install python3-gi "
                    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                    "gstreamer1.0-plugins-ugly gstreamer1.0-rtsp (.ci/run does it)")
    server = RtspServer(h264_video, free_port()).start()
    yield server
    server.kill()


def test_rtsp_recorded_through_an_outage_gives_a_playable_clip_after_the_reconnect(tmp_path, rtsp_server, replay,
                                                                                     caplog):
    caplog.set_level(logging.INFO)
    trigger = tmp_path / "trigger"
    cfg = _config(tmp_path, replay, f"[{{uri: '{rtsp_server.url}', id: door, options: {{read_timeout_s: 2, "
                  "backoff_max_s: 1}}]", f"{{name: scripted_events, options: {{trigger: '{trigger}'}}}}")
    app = App(cfg).start()
    clips = _Clips(app)

    def processed() -> int:
        return app.status()["processed"]

    try:
        wait_for(lambda: processed() >= 10, what="frames from the RTSP stream")
        rtsp_server.kill()  # the outage
        time.sleep(3.0)
        rtsp_server.start()  # back on the same port
        wait_for(lambda: app.status()["sources"][0]["reconnects"] >= 1, what="the detection stream's reconnect")
        wait_for(lambda: "recorder: door: stream back" in caplog.text, what="the recording stream's reconnect")
        back = processed()
        wait_for(lambda: processed() >= back + 25, what="2.5 s of frames after the reconnect")
        t_event = time.time()
        trigger.write_text("now")  # the next frame carries a line_cross
        got = wait_for(lambda: clips.poll(), what="the clip after the reconnect")
    finally:
        app.stop("test").wait(60)
    clip = got[0][1]
    path = Path(clip["path"])
    frames = decoded_frames(path)  # plays: every frame decodes
    # 1 s before and after the event, from a keyframe (GOP 1 s): 15..31 frames at 10 fps on an idle machine; on a
    # busy one the recording connection reads late and in bursts (arrival times bunch up), so allow 3 s more
    assert frames == clip["frames"] and 15 <= frames <= 61, frames
    mine = packets(path)
    assert mine[0][2] and all(b > a for (a, _, _), (b, _, _) in zip(mine, mine[1:]))  # keyframe first, in order
    assert abs(clip["start_time"] - (t_event - 1.0)) <= 1.6 and clip["end_time"] >= t_event + 0.5


# ------------------------------------------------------------------------------------------------- dashboard

@pytest.mark.skipif(not (has_module("fastapi") and has_module("uvicorn") and has_module("httpx")),
                    reason="server extra not installed (pip install -e '.[server]')")
def test_dashboard_serves_the_recorded_clip_and_its_thumbnail(tmp_path, h264_video, replay):
    import httpx

    from edge_detect.recording import ClipIndex
    from edge_detect.server.api import create_app
    from edge_detect.server.runner import HttpServer
    from edge_detect.server.settings import ServerSettings

    cfg = _config(tmp_path, replay, f"['{h264_video}']", "{name: scripted_events, options: {times: [3.0]}}")
    settings = ServerSettings(host="127.0.0.1", port=0, api_token="t" * 32)
    app = App(cfg)
    server = HttpServer(create_app(app, settings), settings).start()
    client = httpx.Client(base_url=server.url, timeout=10.0)
    try:
        app.start()
        events = wait_for(lambda: client.get("/api/v1/events", params={"type": "clip_saved"}).json()["events"],
                          what="the clip_saved event in the dashboard's list")
        clip = events[0]
        body = client.get(clip["clip_url"])
        assert body.status_code == 200 and body.headers["content-type"] == "video/mp4"
        assert body.content == Path(clip["path"]).read_bytes()
        thumb = client.get(clip["snapshot_url"])
        assert thumb.content == Path(clip["thumbnail"]).read_bytes()
        crossing = client.get(f"/api/v1/events/{clip['trigger']}").json()  # the line_cross the clip covers
        assert crossing["type"] == "line_cross" and crossing["clip_url"].endswith(f"/{clip['trigger']}/clip.mp4")
        assert client.get(crossing["clip_url"]).content == body.content
    finally:
        client.close()
        server.stop()
        app.stop("test").wait(60)
    # after the run: the folder lists the same clip, with the same id (ClipIndex, the dashboard after a restart)
    listed = ClipIndex(tmp_path / "clips").events()
    assert [(e["id"], e["path"], e["thumbnail"]) for e in listed] == [(clip["id"], clip["path"], clip["thumbnail"])]
