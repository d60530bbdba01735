"""edge_detect.stream.sources: kinds, back-pressure vs dropping, corrupt input, reconnection, credential masking."""
from __future__ import annotations

import logging
import re
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.errors import ConfigError, SourceError
from edge_detect.sinks import MjpegPreviewSink
from edge_detect.stream.sources import (
    CaptureOptions,
    gstreamer_available,
    jetson_csi_pipeline,
    jetson_rtsp_pipeline,
    mask_credentials,
    open_source,
    parse_source,
)


class FrameServer:
    """Loopback MJPEG-over-HTTP camera: serves vtest.avi frames (looped) at ``fps`` until stopped."""

    def __init__(self, video: Path, port: int = 0, fps: float = 50.0, frames: int = 60) -> None:
        # Decode up front: OpenCV serializes FFmpeg opens, so a decoder opened in the feeder thread could wait
        # behind the client's open of this very stream.
        cap = cv2.VideoCapture(str(video))
        self.images = [cap.read()[1] for _ in range(frames)]
        cap.release()
        self.fps = fps
        self.sink = MjpegPreviewSink(port=port)
        self.port = self.sink.port
        self.sink.publish(self.images[0], "cam", force=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.sink.publish(self.images[i % len(self.images)], "cam", force=True)
            i += 1
            self._stop.wait(1.0 / self.fps)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sink.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("uri, masked", [
    ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://***@10.0.0.5:554/s"),
    ("http://token@cam.local/video.mjpg", "http://***@cam.local/video.mjpg"),
    ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
    ("http://cam/v?user=a&password=pw&x=1", "http://cam/v?user=a&password=***&x=1"),
    ("rtspsrc location=rtsp://u:p@h/x latency=200 ! appsink", "rtspsrc location=rtsp://***@h/x latency=200 ! appsink"),
    ("video.mp4", "video.mp4"),
    # a password with an unencoded "@": everything up to the authority's LAST "@" is masked
    ("http://admin:Pa@ssW0rdX@127.0.0.1:18083/v.mjpg", "http://***@127.0.0.1:18083/v.mjpg"),
    ("rtsp://u@x:p@ss@w@cam:554/s?token=t@k", "rtsp://***@cam:554/s?token=***"),
    ("rtsp://cam:554/path@with-at", "rtsp://cam:554/path@with-at"),  # an "@" after the authority is no userinfo
    ("rtspsrc location=rtsp://u:p@q@h/x ! appsink", "rtspsrc location=rtsp://***@h/x ! appsink"),
])
def test_mask_credentials(uri, masked):
    assert mask_credentials(uri) == masked


@pytest.mark.parametrize("uri, sid", [
    ("http://admin:Pa@ssW0rdX@127.0.0.1:18083/v.mjpg", "127.0.0.1_18083"),
    ("rtsp://user:pw@cam.local/stream", "cam.local"),
    ("rtsp://cam.local:554/a@b", "cam.local_554"),
])
def test_stream_default_id_is_the_host_only(uri, sid):
    from edge_detect.stream.sources import SOURCE_KINDS

    assert SOURCE_KINDS["stream"].default_id(uri) == sid


def test_password_with_at_never_leaks(video, onnx_builder, reference, tmp_path, caplog, capsys):
    """Logs, the summary's uri, the source id and every JSONL "source" are free of any part of the password."""
    from edge_detect.cli import main
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    model = onnx_builder(tmp_path / "replay.onnx", [raw], metadata=ModelMetadata(names=[f"c{i}" for i in range(80)])
                         .to_dict())
    server = FrameServer(video, fps=30)
    url = f"http://admin:Pa@ssW0rdX@127.0.0.1:{server.port}/cam"
    try:
        with caplog.at_level(logging.DEBUG):
            rc = main(["run", "--model", str(model), "--source", url, "--max-frames", "5", "--no-show",
                       "--save-jsonl", str(tmp_path / "d.jsonl"), "--summary-json", str(tmp_path / "s.json")])
    finally:
        server.stop()
    assert rc == 0
    summary = (tmp_path / "s.json").read_text()
    jsonl = (tmp_path / "d.jsonl").read_text()
    everything = caplog.text + "".join(capsys.readouterr()) + summary + jsonl
    for secret in ("ssW0rdX", "Pa@ss", "admin:"):
        assert secret not in everything, secret
    import json

    s = json.loads(summary)
    sid = f"127.0.0.1_{server.port}"
    assert list(s["sources"]) == [sid] and s["sources"][sid]["uri"] == f"http://***@127.0.0.1:{server.port}/cam"
    assert {json.loads(line)["source"] for line in jsonl.splitlines()} == {sid}


def test_parse_source_kinds(tmp_path, video):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    assert parse_source(str(video)) == ("file", video)
    assert parse_source(f"file://{video}") == ("file", video)
    assert parse_source(tmp_path)[0] == "images" and len(parse_source(tmp_path)[1]) == 2
    assert parse_source(str(tmp_path / "*.png"))[0] == "images"
    assert parse_source(str(tmp_path / "0.png")) == ("images", [tmp_path / "0.png"])
    assert parse_source("0") == ("camera", 0)
    assert parse_source(2) == ("camera", 2)
    assert parse_source("/dev/video3") == ("camera", "/dev/video3")
    for url in ("rtsp://h/s", "rtmp://h/live", "http://h:8080/", "https://h/x.mjpg"):
        assert parse_source(url) == ("stream", url)
    assert parse_source("videotestsrc ! appsink") == ("gstreamer", "videotestsrc ! appsink")
    assert parse_source("gst:videotestsrc ! appsink") == ("gstreamer", "videotestsrc ! appsink")


@pytest.mark.parametrize("uri, match", [
    ("ftp://u:secret@h/x", r"unknown URL scheme 'ftp'"),
    ("/nonexistent/clip.mp4", r"source not found: /nonexistent/clip.mp4 \(expected a video file"),
    ("", r"got ''"),
])
def test_parse_source_errors(uri, match):
    with pytest.raises(SourceError, match=match) as info:
        parse_source(uri)
    assert "secret" not in str(info.value)


def test_empty_folder_and_glob(tmp_path):
    with pytest.raises(SourceError, match="expected images"):
        parse_source(tmp_path)
    with pytest.raises(SourceError, match="expected matching images, found none"):
        parse_source(str(tmp_path / "*.jpg"))


@pytest.mark.parametrize("options, exc, match", [
    ({"read_timout_s": 1}, ConfigError, r"unknown key 'read_timout_s' \(did you mean 'read_timeout_s'\?\)"),
    ({"queue_size": 0}, SourceError, r"queue_size: expected >= 1, got 0"),
    ({"fourcc": "MJPEG"}, SourceError, r"fourcc: expected 4 characters"),
    ({"rtsp_transport": "quic"}, SourceError, r"rtsp_transport: expected 'tcp' or 'udp', got 'quic'"),
    ({"backoff_initial_s": 0}, SourceError, r"backoff_initial_s: expected in \(0, "),
])
def test_invalid_capture_options(video, options, exc, match):
    with pytest.raises(exc, match=match):
        open_source(video, **options)


def test_file_delivers_every_frame_in_order(video):
    with open_source(video) as src:
        assert (src.kind, src.is_live, src.fps, src.expected_frames, src.source_id) == \
            ("file", False, 10.0, 795, "vtest")
        frames = list(src)
    assert len(frames) == 795
    assert [f.index for f in frames] == list(range(795))
    assert frames[0].image.shape == (360, 480, 3) and frames[0].image.dtype == np.uint8
    assert all(f.source_id == "vtest" and "decode" in f.timings for f in frames[:5])
    pts = [f.pts_ms for f in frames]
    assert all(b - a == pytest.approx(100.0, abs=1) for a, b in zip(pts, pts[1:]))
    assert frames[1].capture_time > frames[0].capture_time and frames[0].wall_time > 1.6e9
    assert (src.stats.read, src.stats.dropped, src.stats.corrupt) == (795, 0, 0)


def test_file_back_pressure_never_drops(video):
    with open_source(video, queue_size=2) as src:
        got = []
        for f in src:
            got.append(f.index)
            time.sleep(0.01)
            if len(got) == 40:
                break
        time.sleep(0.2)
        assert src.stats.dropped == 0
        assert src.stats.read <= 40 + 2 + 1  # queue_size frames buffered + one blocked in put
    assert got == list(range(40))


def test_live_source_keeps_newest_and_counts_drops(video):
    with open_source(video, live=True) as src:
        assert src.is_live
        got = []
        for f in src:
            got.append(f.index)
            time.sleep(0.02)  # consumer at ~50 FPS, decoder at hundreds
    assert src.stats.read == 795
    assert src.stats.dropped > 400
    assert len(got) + src.stats.dropped == 795
    assert got == sorted(got) and got[-1] == 794  # newest frames, in order, last one kept


def test_realtime_paces_a_file(video):
    t0 = time.perf_counter()
    with open_source(video, realtime=True) as src:
        n = sum(1 for _, f in zip(range(6), src))
    assert n == 6
    assert time.perf_counter() - t0 >= 0.45  # 6 frames at 10 FPS: 5 intervals of 100 ms


def make_corrupt(video: Path, out: Path) -> Path:
    """vtest.avi truncated to 70 % with 200 kB of seeded garbage at 35 %."""
    data = bytearray(video.read_bytes())
    n = len(data)
    data = data[: int(n * 0.7)]
    mid = int(n * 0.35)
    data[mid: mid + 200_000] = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def test_corrupt_file_is_read_up_to_what_decodes(video, tmp_path, caplog):
    path = make_corrupt(video, tmp_path / "corrupt.avi")
    with caplog.at_level(logging.WARNING, logger="edge_detect.stream.sources"):
        with open_source(path) as src:
            frames = list(src)
    assert 300 < len(frames) < 795
    assert src.stats.read == len(frames)
    assert src.stats.corrupt >= 1  # frames lost in the garbage (timestamp gaps)
    assert src.stats.read + src.stats.corrupt < 795  # the truncated tail is missing
    assert frames[-1].index == src.stats.read + src.stats.corrupt - 1
    assert "of 795 frames announced by the container" in caplog.text


def test_image_folder_skips_unreadable_images(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((16, 24, 3), i, np.uint8))
    (tmp_path / "1b.jpg").write_bytes(b"not a jpeg")
    with open_source(tmp_path) as src:
        frames = list(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2]
    assert [f.index for f in frames] == [0, 1, 3]
    assert (src.stats.read, src.stats.corrupt, src.is_live, src.expected_frames) == (3, 1, False, 4)


def test_gstreamer_without_support_is_a_clear_error():
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="no GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")


def test_jetson_pipeline_helpers():
    csi = jetson_csi_pipeline(sensor_id=1, width=1280, height=720, fps=60, out_width=640, out_height=360)
    assert csi.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=1280, height=720" in csi and "framerate=60/1" in csi and "width=640, height=360" in csi
    assert csi.endswith("appsink drop=true max-buffers=1 sync=false")
    assert parse_source(csi)[0] == "gstreamer"
    h265 = jetson_rtsp_pipeline("rtsp://u:p@cam/1", codec="h265")
    assert "rtph265depay ! h265parse ! nvv4l2decoder" in h265
    assert mask_credentials(h265).count("***@") == 1
    with pytest.raises(SourceError, match=r"codec: expected 'h264' or 'h265', got 'vp9'"):
        jetson_rtsp_pipeline("rtsp://cam/1", codec="vp9")


def test_unreachable_stream_fails_fast_with_masked_url():
    port = free_port()
    t0 = time.perf_counter()
    with pytest.raises(SourceError) as info:
        open_source(f"http://admin:secret@127.0.0.1:{port}/", open_timeout_s=2)
    assert time.perf_counter() - t0 < 30  # a hang guard: it fails instead of waiting forever
    assert "secret" not in str(info.value) and "***@127.0.0.1" in str(info.value)


def test_stream_reconnects_after_server_restart(video, caplog):
    server = FrameServer(video, fps=50)
    port = server.port
    with caplog.at_level(logging.INFO, logger="edge_detect.stream.sources"):
        src = open_source(f"http://user:pw@127.0.0.1:{port}/", source_id="cam", read_timeout_s=2,
                          backoff_initial_s=0.1, backoff_max_s=0.4)
        try:
            assert src.kind == "stream" and src.is_live
            it = iter(src)
            first = [next(it) for _ in range(10)]
            server.stop()
            time.sleep(1.0)
            server = FrameServer(video, port=port, fps=50)
            after = []
            deadline = time.perf_counter() + 20
            while src.stats.reconnects == 0 or len(after) < 10:
                f = src.read(timeout=1.0)
                assert time.perf_counter() < deadline, "no frames after the restart"
                if f is not None and src.stats.reconnects:
                    after.append(f)
        finally:
            src.close()
            server.stop()
    assert src.stats.reconnects >= 1
    assert len(first) == 10 and len(after) >= 10
    assert after[-1].index > first[-1].index
    assert "stream lost at" in caplog.text and "stream back at" in caplog.text
    assert "pw@" not in caplog.text and "http://***@127.0.0.1" in caplog.text


def test_gives_up_after_max_reconnect_attempts(video):
    server = FrameServer(video, fps=50)
    src = open_source(f"http://127.0.0.1:{server.port}/", backoff_initial_s=0.05, backoff_max_s=0.1,
                      max_reconnect_attempts=2)
    try:
        assert src.read(timeout=5) is not None
        server.stop()
        deadline = time.perf_counter() + 10
        while not src.exhausted:
            src.read(timeout=0.2)
            assert time.perf_counter() < deadline, "source did not give up"
    finally:
        src.close()
    assert src.stats.reconnects == 0


def test_stalled_stream_times_out_and_watchdog_reconnects(video):
    """A server that sends one frame then goes silent: the read must not block forever."""
    server = FrameServer(video, fps=50)
    src = open_source(f"http://127.0.0.1:{server.port}/", read_timeout_s=1, backoff_initial_s=0.1,
                      backoff_max_s=0.2)
    try:
        assert src.read(timeout=5) is not None
        server._stop.set()  # keep the connection open, stop sending
        deadline = time.perf_counter() + 30  # a hang guard, not a timing requirement
        while src.stats.reconnects < 1:  # read timeout / watchdog detects the stall and reopens
            assert time.perf_counter() < deadline, "the stall was never detected"
            time.sleep(0.1)
        server._stop.clear()
        server._thread = threading.Thread(target=server._feed, daemon=True)
        server._thread.start()
        assert src.read(timeout=5) is not None
    finally:
        src.close()
        server.stop()


def test_capture_options_object_and_overrides(video):
    base = CaptureOptions(queue_size=3)
    with open_source(video, capture=base, live=True) as src:
        assert src.opts.queue_size == 3 and src.is_live


def test_open_images_keeps_the_given_order_and_paths(tmp_path):
    from edge_detect.stream.sources import open_images

    paths = []
    for name, value in (("b.png", 10), ("a.png", 20), ("broken.jpg", None), ("c.jpg", 30)):
        p = tmp_path / name
        if value is None:
            p.write_bytes(b"not an image")
        else:
            cv2.imwrite(str(p), np.full((8, 12, 3), value, np.uint8))
        paths.append(p)
    src = open_images(paths, source_id="imgs")
    frames = list(src)
    src.close()
    assert [(f.index, Path(f.path).name, int(f.image[0, 0, 0])) for f in frames] == [
        (0, "b.png", 10), (1, "a.png", 20), (3, "c.jpg", 30)]  # given order, not sorted; index = position
    assert (src.stats.read, src.stats.corrupt, src.expected_frames, src.is_live) == (3, 1, 4, False)
    with pytest.raises(SourceError, match="expected at least one image file, got none"):
        open_images([])


# ------------------------------------------------------------------------------------------ source registry
def test_registered_scheme_opens_through_its_factory(video):
    from edge_detect.stream import sources as src_mod

    calls = []

    @src_mod.register_source("replay")
    def _replay(uri, source_id=None, offline_ok=False, **options):
        calls.append((uri, source_id, offline_ok, options))
        return src_mod.open_source(video, source_id=source_id or "replayed", **options)

    try:
        assert "replay" in src_mod.source_schemes()
        src = src_mod.open_source("replay://cam/1", queue_size=3)
        assert calls == [("replay://cam/1", None, False, {"queue_size": 3})]
        assert src.source_id == "replayed"
        assert sum(1 for _ in src) == 795
    finally:
        src_mod.registry._SOURCE_FACTORIES.pop("replay", None)


@pytest.mark.parametrize("scheme, message", [
    ("rtsp", "'rtsp' is a built-in source scheme"),
    ("file", "'file' is a built-in source scheme"),
    ("1bad", "expected a URL scheme such as 'myproto', got '1bad'"),
])
def test_register_source_refuses_bad_schemes(scheme, message):
    from edge_detect.errors import ConfigError
    from edge_detect.stream.sources import register_source

    with pytest.raises(ConfigError, match=re.escape(message)):
        register_source(scheme)


def test_unknown_scheme_lists_registered_ones():
    from edge_detect.errors import SourceError
    from edge_detect.stream.sources import open_source

    with pytest.raises(SourceError, match=r"unknown URL scheme 'nope'; expected one of rtsp, .*, file"):
        open_source("nope://x")
