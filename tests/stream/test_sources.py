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


@pytest.fixture(scope="module")
def replay_model(onnx_builder, reference, tmp_path_factory):
    """Static 640 ONNX replaying the reference bus prediction (fast; needs no torch)."""
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("replay") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())


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


def _consume_slowly(src, pause_s):
    got = []
    for f in src:
        got.append(f.index)
        time.sleep(pause_s)
    return got


def test_live_source_keeps_newest_and_counts_drops(video):
    """Every frame is either delivered or counted as dropped, delivered ones in order, the last one kept."""
    with open_source(video, live=True) as src:
        assert src.is_live
        got = _consume_slowly(src, 0.02)  # consumer at ~50 FPS, decoder at hundreds
    assert src.stats.read == 795
    assert src.stats.dropped >= 1 and len(got) + src.stats.dropped == 795
    assert len(set(got)) == len(got) and got == sorted(got) and got[-1] == 794


@pytest.mark.perf
def test_live_source_drops_most_frames_for_a_slow_consumer(video):
    """Timed: with the decoder at hundreds of FPS and the consumer at ~50, most frames are dropped."""
    with open_source(video, live=True) as src:
        got = _consume_slowly(src, 0.02)
    assert src.stats.dropped > 400 and len(got) + src.stats.dropped == 795


def test_realtime_paces_a_file(video):
    t0 = time.perf_counter()
    with open_source(video, realtime=True) as src:
        n = sum(1 for _, f in zip(range(6), src))
    assert n == 6
    assert time.perf_counter() - t0 >= 0.45  # 6 frames at 10 FPS: 5 intervals of 100 ms


def test_looping_file_goes_on_with_increasing_index_and_pts(tmp_path):
    """loop: a 5-frame file read 3 times over as one stream: indices 0..14, pts one interval apart across the
    seams, the pictures of each pass equal, never exhausted, no expected length; images loop too."""
    path = tmp_path / "five.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    with open_source(path, loop=True) as src:
        frames = [f for _, f in zip(range(15), src)]
        assert not src.exhausted and src.expected_frames is None and src.stats.read >= 15
    assert [f.index for f in frames] == list(range(15))
    assert np.allclose(np.diff([f.pts_ms for f in frames]), 100.0)
    assert [round(f.image.mean() / 40) for f in frames] == [0, 1, 2, 3, 4] * 3
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), np.full((8, 8, 3), 100 * i, np.uint8))
    t0 = time.perf_counter()
    with open_source(str(tmp_path / "im*.png"), loop=True, realtime=True, fps=20) as src:  # a paced slideshow
        assert [round(f.image.mean()) for _, f in zip(range(5), src)] == [0, 100, 0, 100, 0]
    assert time.perf_counter() - t0 >= 0.2  # 4 intervals of 50 ms
    with open_source(path) as src:  # without loop: the file ends
        assert len(list(src)) == 5 and src.exhausted


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


# ------------------------------------------------------------------------------------------ urls
@pytest.mark.parametrize("text, scheme, host", [
    ("RTSP://admin:pw@Cam.local:554/s", "rtsp", "Cam.local:554"),
    ("http://admin:Pa@ss@10.0.0.5/v.mjpg?x=1", "http", "10.0.0.5"),
    ("myproto://a/b", "myproto", "a"),
    ("video.mp4", None, "video.mp4"),
    (3, None, "3"),
])
def test_url_scheme_and_host(text, scheme, host):
    from edge_detect.stream import sources
    from edge_detect.urls import mask_credentials as urls_mask
    from edge_detect.urls import url_host, url_scheme

    assert url_scheme(text) == scheme
    assert url_host(str(text)) == host
    assert sources.mask_credentials is urls_mask  # the old import path keeps working


# ------------------------------------------------------------------------------------------ public reader API
class PatternReader:
    """A plugin reader written against the public API only: ``n`` frames whose pixels hold their number."""

    def __init__(self, n, size=(48, 64)):
        from edge_detect.stream.sources import ReadResult

        self._result = ReadResult
        self.n, self.size, self.i, self.released = n, size, 0, 0
        self.fps, self.expected_frames = 25.0, n

    def read(self):
        if self.i >= self.n:
            return self._result("end")
        self.i += 1
        return self._result("ok", np.full((*self.size, 3), self.i - 1, np.uint8), pts_ms=40.0 * (self.i - 1))

    def release(self):
        self.released += 1


@pytest.fixture
def pattern_scheme():
    """Registers ``pattern://<n>`` (a non-live plugin kind) for one test."""
    from edge_detect.stream.sources import SourceKind, register_source, source_from_reader
    from edge_detect.stream.sources.registry import _SOURCE_FACTORIES

    readers = []

    def make(n):
        readers.append(PatternReader(n))
        return readers[-1]

    @register_source("pattern")
    def open_pattern(uri, source_id=None, offline_ok=False, **options):
        n = int(uri.split("://", 1)[1])
        kind = SourceKind("pattern", live=False, reconnect=False, default_id=lambda target: f"pattern{n}")
        return source_from_reader(lambda: make(n), kind, uri, source_id=source_id, offline_ok=offline_ok,
                                  **options)

    yield readers
    _SOURCE_FACTORIES.pop("pattern", None)


def test_reader_protocol_and_kind_records():
    from edge_detect.stream.sources import (
        KINDS,
        SOURCE_KINDS,
        ImageReader,
        OpenCVReader,
        Reader,
        ReadResult,
        source_kind,
    )

    assert isinstance(PatternReader(1), Reader) and issubclass(OpenCVReader, Reader) and issubclass(ImageReader,
                                                                                                     Reader)
    assert KINDS == ("file", "images", "camera", "stream", "gstreamer")
    assert {k: (v.live, v.reconnect) for k, v in SOURCE_KINDS.items()} == {
        "file": (False, False), "images": (False, False), "camera": (True, True), "stream": (True, True),
        "gstreamer": (True, True)}
    assert [SOURCE_KINDS["camera"].default_id(t) for t in (0, "/dev/video2")] == ["cam0", "video2"]
    assert SOURCE_KINDS["gstreamer"].default_id("videotestsrc ! appsink") == "gst"
    with pytest.raises(SourceError, match=r"source kind: expected one of file, .* got 'strem' \(did you mean "
                                          r"'stream'\?\)"):
        source_kind("strem")
    with pytest.raises(SourceError, match=r"ReadResult status: expected one of ok, corrupt, end, lost, got 'eof'"):
        ReadResult("eof")
    with pytest.raises(SourceError, match=r"expected an image with status 'ok', got None"):
        ReadResult("ok")


def test_plugin_source_runs_through_the_pipeline(pattern_scheme, replay_model, tmp_path):
    """A source registered from the public API only is opened by open_source and processed frame by frame."""
    from edge_detect.detector import Detector
    from edge_detect.sinks import JsonlSink
    from edge_detect.stream.pipeline import Pipeline

    src = open_source("pattern://7", queue_size=2)
    assert (src.kind, src.source_id, src.is_live, src.fps, src.expected_frames, src.uri) == \
        ("pattern", "pattern7", False, 25.0, 7, "pattern://7")
    det = Detector(str(replay_model))
    try:
        s = Pipeline([src], det, [JsonlSink(tmp_path / "d.jsonl")], progress=False).run()
    finally:
        det.close()
    import json

    lines = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [(d["source"], d["frame"]) for d in lines] == [("pattern7", i) for i in range(7)]
    assert s.processed == 7 and s.sources["pattern7"]["kind"] == "pattern" and s.stopped_by == "end"
    assert [r.released for r in pattern_scheme] == [1]


class BlockingReader:
    """Two frames, then a read that blocks until ``unblock`` is set or ``cap_s`` passes (a stalled stream)."""

    def __init__(self, cap_s):
        self.cap_s, self.i = cap_s, 0
        self.blocked, self.unblock, self.returned, self.released = (threading.Event() for _ in range(4))
        self.fps, self.expected_frames = 30.0, None

    def read(self):
        from edge_detect.stream.sources import ReadResult

        self.i += 1
        if self.i > 2:
            self.blocked.set()
            self.unblock.wait(self.cap_s)
            self.returned.set()
            return ReadResult("lost")
        return ReadResult("ok", np.zeros((32, 32, 3), np.uint8))

    def release(self):
        self.released.set()


def test_stop_never_waits_on_a_blocked_read(replay_model):
    """Issue 26 item 5 (--duration 15 ran 21 s): at the stop the pipeline returns while the reader is still
    blocked in read() (the old close() waited 5 s, longer than this read's 3 s cap); the abandoned capture thread
    releases the reader once the read returns."""
    from edge_detect.detector import Detector
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.stream.sources import SourceKind, source_from_reader

    reader = BlockingReader(cap_s=3.0)
    src = source_from_reader(lambda: reader, SourceKind("stalling", live=True, reconnect=True), "stall://x",
                             source_id="stall", read_timeout_s=30)
    det = Detector(str(replay_model))
    try:
        s = Pipeline([src], det, [], duration=0.5, progress=False).run()
    finally:
        det.close()
    still_blocked = not reader.returned.is_set()
    reader.unblock.set()
    assert reader.blocked.is_set() and still_blocked, "the run waited for the blocked read"
    assert s.stopped_by == "duration" and s.processed + s.dropped == 2  # live: one may be dropped as stale
    assert reader.released.wait(10)  # hang guard: released by the abandoned thread
    assert src.stats.reconnects == 0


class FlakyReader:
    """Frames whose pixel holds (reader number, frame number); every few reads one stalls past the watchdog's
    limit. Records misuse: overlapping reads, reads after release, double release."""

    def __init__(self, number, rng, log):
        self.number, self.rng, self.log = number, rng, log
        self.busy = self.released = False
        self.sent = 0
        self.fps = self.expected_frames = None

    def read(self):
        from edge_detect.stream.sources import ReadResult

        if self.busy or self.released:
            self.log.append(f"reader {self.number}: {'overlapping read' if self.busy else 'read after release'}")
        self.busy = True
        time.sleep(0.06 if self.rng.random() < 0.15 else 0.001)
        self.busy = False
        self.sent += 1
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, 0, :2] = (self.number % 256, self.sent % 256)
        return ReadResult("ok", img)

    def release(self):
        if self.released:
            self.log.append(f"reader {self.number}: released twice")
        self.released = True


def test_watchdog_reconnects_under_stress_keep_one_capture_thread(monkeypatch):
    """Reads stalling past the watchdog's limit again and again while frames flow: each abandoned reader is
    released once, never read concurrently or after release; frames come from the newest reader only, in order."""
    import random

    from edge_detect.stream.sources import Source, SourceKind, source_from_reader

    monkeypatch.setattr(Source, "WATCHDOG_MARGIN_S", 0.0)
    monkeypatch.setattr(Source, "WATCHDOG_POLL_S", 0.002)
    rng, log, readers = random.Random(0), [], []

    def factory():
        readers.append(FlakyReader(len(readers), rng, log))
        return readers[-1]

    src = source_from_reader(factory, SourceKind("flaky", live=True, reconnect=True), "flaky://x",
                             source_id="flaky", read_timeout_s=0.02, backoff_initial_s=0.001, backoff_max_s=0.002)
    frames = []
    try:
        deadline = time.perf_counter() + 60  # hang guard
        while src.stats.reconnects < 15 or len(frames) < 50:
            assert time.perf_counter() < deadline, (src.stats, len(frames))
            f = src.read(timeout=1.0)
            if f is not None:
                frames.append((f.index, int(f.image[0, 0, 0]), int(f.image[0, 0, 1])))
    finally:
        src.close()
    deadline = time.perf_counter() + 10
    while any(t.name == "capture-flaky" for t in threading.enumerate()):  # abandoned reads finish
        assert time.perf_counter() < deadline, "capture threads left running"
        time.sleep(0.02)
    assert log == []
    assert all(r.released for r in readers)
    assert [i for i, _, _ in frames] == sorted({i for i, _, _ in frames})  # unique and increasing indices
    assert [n for _, n, _ in frames] == sorted(n for _, n, _ in frames)  # never an older reader's frame late
    assert len(readers) - 1 >= src.stats.reconnects >= 15


# ------------------------------------------------------------------------------------------ ids
@pytest.mark.parametrize("ids, unique", [
    (["v", "v", "v-1"], ["v", "v-2", "v-1"]),  # issue 26: --source v.mp4 --source v.mp4 --source v-1.avi
    (["cam-1", "cam", "cam"], ["cam-1", "cam", "cam-2"]),
    (["a", "a", "a"], ["a", "a-1", "a-2"]),
    (["a", "a-1", "a", "a", "a-2"], ["a", "a-1", "a-3", "a-4", "a-2"]),
    (["x", "y"], ["x", "y"]),
    ([], []),
])
def test_unique_source_ids_never_collide(ids, unique):
    from edge_detect.stream.sources import unique_source_ids

    assert unique_source_ids(ids) == unique
    assert len(set(unique)) == len(unique)


def _tiny_video(path, frames=5):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        w.write(np.full((48, 64, 3), 20 * i, np.uint8))
    w.release()
    return path


def test_duplicate_ids_renamed_without_mixing_outputs(replay_model, tmp_path, caplog):
    """Issue 26 item 2: v, v, v-1 gave two sources called v-1 writing into one file; now three files, one warning."""
    import json

    from edge_detect.cli import main

    v, v1 = _tiny_video(tmp_path / "v.avi"), _tiny_video(tmp_path / "v-1.avi", frames=4)
    with caplog.at_level(logging.WARNING):
        rc = main(["--quiet", "run", "--model", str(replay_model), "--source", str(v), "--source", str(v),
                   "--source", str(v1), "--no-show", "--no-progress", "--save-jsonl", str(tmp_path / "o" / "d.jsonl"),
                   "--summary-json", str(tmp_path / "s.json")])
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert {k: d["processed"] for k, d in s["sources"].items()} == {"v": 5, "v-2": 5, "v-1": 4}
    for sid, n in (("v", 5), ("v-2", 5), ("v-1", 4)):
        lines = [json.loads(line) for line in (tmp_path / "o" / f"d_{sid}.jsonl").read_text().splitlines()]
        assert [(d["source"], d["frame"]) for d in lines] == [(sid, i) for i in range(n)]
    renames = [r.getMessage() for r in caplog.records if "duplicate ids renamed" in r.getMessage()]
    assert len(renames) == 1 and "'v' -> 'v-2' (source 2" in renames[0]


# ------------------------------------------------------------------------------------------ open errors
@pytest.mark.parametrize("case", ["absent-camera", "refused-url"])
def test_open_failure_prints_one_line_and_no_library_noise(replay_model, case):
    """Issue 26 item 8: `--source 3` and a refused http:// URL printed OpenCV/FFmpeg warnings before our line."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    if case == "absent-camera":
        if os.path.exists("/dev/video3"):
            pytest.skip("this machine has a /dev/video3")
        source = "3"
        message = "edge-detect: error: cannot open camera source 3: no such camera (/dev/video3 does not exist)"
    else:
        port = free_port()
        source = f"http://127.0.0.1:{port}/x"
        message = f"edge-detect: error: cannot open stream source {source} (is the server up and the URL right?"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "edge_detect", "run", "--model", str(replay_model), "--source",
                           source, "--no-show"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(message), proc.stderr
    assert "credentials" not in proc.stderr or case == "refused-url"
