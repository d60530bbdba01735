"""Edges of a run: exact --max-frames for small N, no ``nan`` in the console summary, the stop reason, a failing
sink (non-zero exit, other outputs finalized), live and repeat-frame timing in saved videos, AVI empty packets,
an offline source among several, and no output file left by a bad model."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, count_frames, has_module
from edge_detect.cli import main
from edge_detect.sinks.base import Sink, StreamInfo
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.sources import open_source
from edge_detect.types import Detections, Frame, Result

requires_av = pytest.mark.skipif(not has_module("av"), reason="PyAV not installed (pip install 'edge-detect[video]')")


class Fake:
    """The Detector's stage methods, instant; one box per frame."""

    names = ("person",)

    def preprocess(self, images):
        return np.zeros((len(images), 3, 8, 8), np.float32), [im.shape[:2] for im in images]

    def infer(self, batch):
        time.sleep(0.002)  # releases the GIL, so frames are in flight when a stop condition hits
        return [batch]

    def postprocess(self, outputs, infos):
        return [Detections(np.array([[1, 2, 30, 40]], np.float32), np.array([0.9]), np.array([0])) for _ in infos]


class Collect(Sink):
    name = "collect"

    def __init__(self, fail_write_at: int = 0, fail_close: bool = False) -> None:
        self.results, self.closed, self.fail_write_at, self.fail_close = [], 0, fail_write_at, fail_close

    def write(self, result):
        if self.fail_write_at and len(self.results) + 1 == self.fail_write_at:
            raise OSError(28, "No space left on device")
        self.results.append(result)

    def close(self):
        self.closed += 1
        if self.fail_close:
            raise OSError(5, "Input/output error")


def small_video(path: Path, frames: int = 12, fps: float = 10) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        w.write(np.full((48, 64, 3), 15 * i, np.uint8))
    w.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def replay(onnx_builder, reference, tmp_path_factory):
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("replay") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())


# ------------------------------------------------------------------------------------------ stop conditions
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_max_frames_is_exact_for_small_n(video, n):
    """Issue: --max-frames 2 processed 1 and 3 processed 2 (frames in flight evicted at the stop)."""
    for _ in range(3):
        sink = Collect()
        s = Pipeline([open_source(video)], Fake(), [sink], max_frames=n, progress=False).run()
        assert (s.processed, len(sink.results), s.stopped_by) == (n, n, "max_frames")
        assert [r.frame.index for r in sink.results] == list(range(n))


@pytest.mark.parametrize("reason", ["SIGINT", "SIGTERM"])
def test_stop_reason_comes_from_the_event(video, reason):
    ev = threading.Event()
    ev.reason = reason  # what the CLI's signal handler sets
    ev.set()
    s = Pipeline([open_source(video)], Fake(), [], stop_event=ev, progress=False).run()
    assert s.stopped_by == reason
    plain = threading.Event()
    plain.set()
    assert Pipeline([open_source(video)], Fake(), [], stop_event=plain, progress=False).run().stopped_by == \
        "stop_event"


def test_sigint_in_the_cli_says_sigint(replay, video, tmp_path):
    """Ctrl-C on an `edge-detect run` process: exit 130, outputs finalized, stopped_by "SIGINT" (SIGTERM: see
    test_cli_run). A real process, not an in-process signal: native libraries other tests loaded into the pytest
    process (OpenVINO's thread pool) must not decide where the signal lands."""
    out = tmp_path / "d.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "edge_detect", "--quiet", "run", "--model", str(replay), "--source", str(video),
           "--no-show", "--no-progress", "--threads", "1", "--save-jsonl", str(out), "--summary-json",
           str(tmp_path / "s.json")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not out.exists() or len(out.read_text().splitlines()) < 5:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, proc.stderr.read().decode()[-2000:]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["stopped_by"] == "SIGINT"
    assert 5 <= s["processed"] < 795 and len(out.read_text().splitlines()) == s["processed"]


def test_console_summary_has_no_nan_when_nothing_was_processed(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    s = Pipeline([open_source(tmp_path)], Fake(), [], progress=False).run()
    text = s.format()
    assert s.processed == 0 and "nan" not in text.lower()
    assert "preprocess -/-" in text and "p50 -" in text
    assert json.loads(json.dumps(s.to_dict()))["latency_ms"]["p50"] is None  # JSON: null, never NaN


# ---------------------------------------------------------------------------------------------- sink failure
def test_failing_sink_stops_the_run_and_the_others_are_finalized(video, tmp_path):
    from edge_detect.sinks import JsonlSink, VideoSink

    bad, good = Collect(fail_write_at=4), Collect()
    jsonl, mp4 = JsonlSink(tmp_path / "d.jsonl"), VideoSink(tmp_path / "v.mp4")
    s = Pipeline([open_source(video)], Fake(), [bad, good, jsonl, mp4], progress=False).run()
    assert s.stopped_by == "sink_error"
    assert s.sink_errors == ["collect: writing failed: [Errno 28] No space left on device"]
    assert bad.closed == 1 and good.closed == 1 and len(bad.results) == 3
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == len(good.results) == s.processed >= 4  # the others got every processed frame...
    assert count_frames(tmp_path / "v.mp4") == s.processed  # ...and the video is playable
    assert "sink failed: collect: writing failed" in s.format()


def test_sink_that_cannot_finalize_is_reported(video):
    s = Pipeline([open_source(video)], Fake(), [Collect(fail_close=True), Collect()], max_frames=3,
                 progress=False).run()
    assert s.stopped_by == "max_frames" and s.sink_errors == ["collect: finalizing failed: [Errno 5] Input/output error"]


def test_cli_sink_failure_is_exit_2_with_outputs_kept(replay, video, tmp_path, capsys, monkeypatch):
    """A sink failing mid-run: one error line, exit 2; the video and the summary are still written."""
    from edge_detect.sinks.jsonl import JsonlSink

    real, calls = JsonlSink.write, []

    def flaky(self, result):
        calls.append(1)
        if len(calls) == 6:
            raise OSError(28, "No space left on device")
        return real(self, result)

    monkeypatch.setattr(JsonlSink, "write", flaky)
    rc = main(["--quiet", "run", "--model", str(replay), "--source", str(video), "--no-show", "--no-progress",
               "--save-jsonl", str(tmp_path / "d.jsonl"), "--save-video", str(tmp_path / "v.mp4"),
               "--summary-json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-detect: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert lines[0] == "edge-detect: error: output failed: jsonl: writing failed: [Errno 28] No space left on device"
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["stopped_by"] == "sink_error" and s["sink_errors"] and s["processed"] >= 6
    assert count_frames(tmp_path / "v.mp4") == s["processed"]


def test_video_sink_finalize_failure_raises(tmp_path, monkeypatch):
    from edge_detect.errors import SinkError
    from edge_detect.sinks.video import VideoSink

    sink = VideoSink(tmp_path / "v.mp4")
    sink.start([StreamInfo("a", 10.0)])
    sink.write(Result(Frame(np.zeros((48, 64, 3), np.uint8), "a", 0, 0.0), Detections.empty(), ("x",)))
    assert sink.flush(30)  # encoded by the sink's own thread
    writer = sink._writers["a"]
    monkeypatch.setattr(writer, "close", lambda: (_ for _ in ()).throw(OSError(13, "Permission denied")))
    with pytest.raises(SinkError, match=r"expected finalized files, got 1 failure\(s\): .*v.mp4 \(\[Errno 13\]"):
        sink.close()


# --------------------------------------------------------------------------------------------- video timing
def _frame_times(path: Path):
    import av

    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(c.streams.video[0])]


def _write(sink, frames):
    for f in frames:
        sink.write(Result(f, Detections.empty(), ("x",)))
    sink.close()


@requires_av
def test_live_frames_are_written_at_their_capture_times(tmp_path):
    """Issue: a 10 FPS camera announcing 25 FPS was saved at 25 FPS (7.9 s of wall time became 3.2 s)."""
    from edge_detect.sinks.video import VideoSink

    img = np.zeros((48, 64, 3), np.uint8)
    t0 = 1000.0
    caps = [0.0, 0.1, 0.2, 0.45, 0.5, 0.9]
    sink = VideoSink(tmp_path / "live.mp4")
    sink.start([StreamInfo("cam", 25.0, live=True)])
    _write(sink, [Frame(img, "cam", i, None, t0 + c) for i, c in enumerate(caps)])
    np.testing.assert_allclose(_frame_times(tmp_path / "live.mp4"), caps, atol=1e-3)


@requires_av
def test_file_frames_keep_their_timestamps_and_fps_forces_a_constant_rate(tmp_path):
    from edge_detect.sinks.video import VideoSink

    img = np.zeros((48, 64, 3), np.uint8)
    pts = [0.0, 66.7, 133.3, 266.7, 300.0]  # a repeat-frame gap after the third frame
    sink = VideoSink(tmp_path / "f.mp4")
    sink.start([StreamInfo("f", 30.0)])
    _write(sink, [Frame(img, "f", i, p, 5.0 + i) for i, p in enumerate(pts)])
    np.testing.assert_allclose(_frame_times(tmp_path / "f.mp4"), np.array(pts) / 1000, atol=1e-3)
    cfr = VideoSink(tmp_path / "cfr.mp4", fps=10)
    cfr.start([StreamInfo("f", 30.0)])
    _write(cfr, [Frame(img, "f", i, p, 5.0 + i) for i, p in enumerate(pts)])
    np.testing.assert_allclose(_frame_times(tmp_path / "cfr.mp4"), [0, 0.1, 0.2, 0.3, 0.4], atol=1e-3)


def make_repeat_avi(path: Path, frames: int = 341, fps: int = 30) -> Path:
    """An MPEG-4 AVI whose every other packet is empty (the AVI muxer's "drop frame" chunks for the pts gaps):
    ``2 * frames - 1`` slots, ``frames`` pictures, like the reporter's camera file (682 packets, 341 decoded)."""
    import av

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            img = np.full((120, 160, 3), (i * 7) % 255, np.uint8)
            img[:, : i % 160] = 200
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = 2 * i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@requires_av
def test_avi_empty_packets_are_skipped_not_corrupt(tmp_path, caplog):
    avi = make_repeat_avi(tmp_path / "cam.avi")
    with caplog.at_level(logging.INFO, logger="edge_detect.stream.sources"):
        with open_source(avi) as src:
            frames = list(src)
    assert (src.stats.read, src.stats.corrupt, src.stats.empty, src.expected_frames) == (341, 0, 340, 681)
    assert [f.index for f in frames] == list(range(0, 681, 2))  # container slots, the repeats skipped
    assert "empty (repeat-frame) packets" in caplog.text and "could not be decoded" not in caplog.text
    assert "truncated" not in caplog.text


@requires_av
def test_avi_with_empty_packets_saved_with_the_right_timing(replay, tmp_path):
    avi = make_repeat_avi(tmp_path / "cam.avi")
    rc = main(["--quiet", "run", "--model", str(replay), "--source", str(avi), "--no-show", "--no-progress",
               "--save-video", str(tmp_path / "o.mp4"), "--summary-json", str(tmp_path / "s.json")])
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["processed"], s["corrupt"], s["sources"]["cam"]["empty"]) == (341, 0, 340)
    times = _frame_times(tmp_path / "o.mp4")
    assert len(times) == 341  # one picture per processed frame...
    assert times[-1] == pytest.approx(680 / 30, abs=1e-3)  # ...each shown for its two slots: 22.7 s, not 11.4 s


# ----------------------------------------------------------------------------------------------- starting
def test_one_offline_stream_does_not_stop_the_others(replay, tmp_path, capsys):
    port = free_port()
    vid = small_video(tmp_path / "a.avi")
    rc = main(["--quiet", "run", "--model", str(replay), "--source", str(vid), "--source",
               f"http://user:pw@127.0.0.1:{port}/cam", "--max-frames", "6", "--no-show", "--no-progress",
               "--save-jsonl", str(tmp_path / "d.jsonl"), "--summary-json", str(tmp_path / "s.json")])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "s.json").read_text())
    sid = f"127.0.0.1_{port}"
    assert s["processed"] == 6 and s["sources"]["a"]["processed"] == 6
    assert s["sources"][sid]["read"] == 0 and s["sources"][sid]["uri"] == f"http://***@127.0.0.1:{port}/cam"
    assert {json.loads(line)["source"] for line in (tmp_path / "d_a.jsonl").read_text().splitlines()} == {"a"}
    assert not (tmp_path / f"d_{sid}.jsonl").exists()  # the offline stream wrote no line: no file (first-write rule)


def test_offline_source_connects_when_it_comes_up(video):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sources import FrameServer

    port = free_port()
    src = open_source(f"http://127.0.0.1:{port}/", offline_ok=True, backoff_initial_s=0.1, backoff_max_s=0.2)
    server = None
    try:
        assert src.offline and src.kind == "stream"
        src.start()
        assert src.read(timeout=0.3) is None  # nobody there yet; the source keeps trying
        server = FrameServer(video, port=port, fps=30)
        assert src.read(timeout=30) is not None  # hang guard: it connects by itself
        assert not src.offline and src.stats.reconnects == 0
    finally:
        src.close()
        if server is not None:
            server.stop()


@pytest.mark.parametrize("argv, message", [
    (lambda d, p: ["--source", f"http://127.0.0.1:{p}/"], "cannot open stream source http://127.0.0.1:{p}/"),
    (lambda d, p: ["--source", f"http://127.0.0.1:{p}/", "--source", f"rtsp://u:secret@127.0.0.1:{p}/x"],
     "sources: expected at least one that opens, got 2 offline: http://127.0.0.1:{p}/, rtsp://***@127.0.0.1:{p}/x"),
])
def test_all_sources_offline_is_an_error(replay, tmp_path, capsys, argv, message):
    port = free_port()
    rc = main(["--quiet", "run", "--model", str(replay), "--no-show", "--no-progress", *argv(tmp_path, port)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-detect: error:")]
    assert rc == 2 and len(lines) == 1 and message.format(p=port) in lines[0], err
    assert "secret" not in err


def test_bad_model_leaves_no_output_file(tmp_path, capsys):
    """Issue: a bad model left an empty --save-jsonl file behind. The model is loaded before any output opens."""
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    vid = small_video(tmp_path / "a.avi")
    rc = main(["--quiet", "run", "--model", str(bad), "--source", str(vid), "--no-show", "--no-progress",
               "--save-jsonl", str(tmp_path / "out" / "d.jsonl"), "--save-video", str(tmp_path / "out" / "v.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a loadable ONNX model" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@requires_av
def test_live_stream_saved_at_its_real_speed(replay, video, tmp_path):
    """A 10 FPS MJPEG camera (OpenCV assumes 25 FPS for it): the mp4 spans the frames' capture times, so it
    plays as long as the capture took (JSONL wall_time = capture time), not 2.5x faster."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sources import FrameServer

    server = FrameServer(video, fps=10)
    try:
        rc = main(["--quiet", "run", "--model", str(replay), "--source", f"http://127.0.0.1:{server.port}/",
                   "--max-frames", "8", "--no-show", "--no-progress", "--save-video", str(tmp_path / "v.mp4"),
                   "--save-jsonl", str(tmp_path / "d.jsonl")])
    finally:
        server.stop()
    assert rc == 0
    wall = [json.loads(line)["wall_time"] for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    times = _frame_times(tmp_path / "v.mp4")
    assert len(times) == len(wall) == 8
    np.testing.assert_allclose(times, np.array(wall) - wall[0], atol=0.005)
