"""``run --save-video`` survives SIGKILL: the file is a fragmented MP4 (a fragment and a keyframe every second), so a
process killed at any moment leaves a file that opens and decodes up to its last complete fragment; a clean stop
gives every frame. Segments (``segment_s``) are complete files each."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, count_frames, has_module

av = pytest.importorskip("av")
pytestmark = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime not installed")

FPS = 25            # the test video's rate; the sink's fragment: 1 s = 25 frames
QUEUE = 8           # the video sink's queue: frames processed but not yet handed to the encoder


def decodable(path: Path) -> int:
    """Frames a (possibly cut) video decodes to: opened with PyAV, decoded until its end or the first damaged
    packet (a fragment cut short by the kill), as a player shows it."""
    n = 0
    with av.open(str(path)) as c:
        try:
            for packet in c.demux(video=0):
                n += len(packet.decode())
        except av.error.InvalidDataError:
            pass
    return n


@pytest.fixture(scope="module")
def paced(tmp_path_factory):
    """A config reading a 12 s 320x240 H.264 file at its own rate (25 fps), like a camera."""
    from recording.scripted import make_h264

    d = tmp_path_factory.mktemp("paced")
    video = make_h264(d / "cam.mp4", 12.0, fps=FPS)
    cfg = d / "app.yaml"
    cfg.write_text(f"sources: [{{uri: '{video}', options: {{realtime: true}}}}]\n")
    return cfg


def _start(cfg: Path, replay: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "edge_detect", "--quiet", "run", "--config", str(cfg), "--model", str(replay),
           "--save-video", str(out / "out.mp4"), "--save-jsonl", str(out / "out.jsonl"), "--no-show",
           "--no-progress", "--threads", "1", "--summary-json", str(out / "s.json")]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _wait_for_frames(proc: subprocess.Popen, jsonl: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while _lines(jsonl) < n:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no frame processed within 60 s"
        time.sleep(0.02)


def test_sigkill_at_random_times_leaves_a_video_that_decodes_up_to_its_last_fragment(paced, replay, tmp_path):
    rng = random.Random(22)
    tries = []
    for k in range(10):
        out = tmp_path / f"kill{k}"
        out.mkdir()
        proc = _start(paced, replay, out)
        try:
            _wait_for_frames(proc, out / "out.jsonl", 1)
            time.sleep(rng.uniform(0.0, 2.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        written = _lines(out / "out.jsonl")  # frames the run had processed (and written a JSONL line for)
        tries.append((written, decodable(out / "out.mp4")))
    for written, decoded in tries:  # at most the open fragment, plus what still waited for the encoder, is lost
        assert written - FPS - QUEUE <= decoded <= written, tries
    assert max(w for w, _ in tries) > 2 * FPS, tries  # some kills came after several complete fragments


def test_clean_stop_finalizes_every_frame(paced, replay, tmp_path):
    proc = _start(paced, replay, tmp_path)
    try:
        _wait_for_frames(proc, tmp_path / "out.jsonl", 30)
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean stop: frames in flight finished, outputs finalized
        assert proc.wait(30) == 128 + signal.SIGTERM
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["processed"] >= 30
    assert decodable(tmp_path / "out.mp4") == count_frames(tmp_path / "out.mp4") == summary["processed"] \
        == _lines(tmp_path / "out.jsonl")


def test_segments_are_complete_files_holding_every_frame(tmp_path):
    from edge_detect.sinks import VideoSink
    from edge_detect.types import Detections, Frame, Result, StreamInfo

    sink = VideoSink(tmp_path / "out.mkv", segment_s=2.0)
    sink.start([StreamInfo("cam", 10.0)])
    for i in range(57):
        img = np.full((120, 160, 3), 3 * i, np.uint8)  # no jump: no scene-cut keyframe
        sink.write(Result(Frame(img, "cam", i, pts_ms=i * 100.0), Detections.empty(), ["person"]))
    sink.close()
    files = sorted(tmp_path.glob("out_*.mkv"))
    assert [f.name for f in files] == ["out_00000.mkv", "out_00001.mkv", "out_00002.mkv"]  # cut every 2 s
    counts = [decodable(f) for f in files]
    assert counts == [20, 20, 17] and sum(counts) == sink.frames["cam"]
