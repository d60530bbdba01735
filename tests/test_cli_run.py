"""``edge-detect run``: help, full-file run, SIGTERM mid-file, one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from conftest import REPO, count_frames, has_module
from edge_detect.cli import main

requires_model = pytest.mark.skipif(not (has_module("torch") and has_module("onnxruntime")),
                                    reason="needs torch (export) and onnxruntime")


@pytest.fixture(scope="module")
def model_320(weights_pt, tmp_path_factory):
    """Static 320x320 yolov5n: ~3x faster than 640 on CPU, so the full 795-frame run fits CI time."""
    if not has_module("torch"):
        pytest.skip("torch not installed: cannot export the ONNX model")
    from edge_detect.training.export import export_onnx

    return export_onnx(weights_pt, tmp_path_factory.mktemp("m320") / "yolov5n-320.onnx", imgsz=(320, 320))


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--source", "--config", "--conf", "--iou", "--max-det", "--classes", "--imgsz",
                 "--backend", "--save-video", "--save-jsonl", "--show, --no-show", "--preview-port",
                 "--preview-host", "--max-frames", "--duration", "--summary-json", "--track", "--threads", "--sink",
                 "--tracker"):
        assert flag in out, flag
    assert "130 after SIGINT" in out and "143 after SIGTERM" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "missing.onnx", "--source", "{video}"], "model file not found: missing.onnx"),
    (["run", "--model", "m.onnx"], "sources: expected at least one source"),
    (["run", "--source", "{video}"], "model: expected a model path"),
    (["run", "--model", "m.onnx", "--source", "nope.mp4"], "source not found: nope.mp4"),
    (["run", "--model", "m.onnx", "--source", "rtsp://u:secret@127.0.0.1:1/x"], "***@127.0.0.1:1"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--conf", "2"], "conf: expected a value in [0, 1]"),
    (["run", "--config", "nope.yaml"], "config file not found: nope.yaml"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--tracker", "kalman"],
     "tracker: processor: unknown name 'kalman'"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--sink", "out.txt"], "sink 'out.txt': expected 'display'"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--preview-host", "0.0.0.0"],
     "--preview-host: expected --preview-port or a mjpeg:// sink in the config"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--preview-port", "70000"],
     "--preview-port: expected a port in 0..65535, got 70000"),
])
def test_errors_are_one_line_exit_2(argv, message, video, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["--quiet", *[a.replace("{video}", str(video)) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("edge-detect: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert "secret" not in err


@requires_model
def test_unknown_class_name_suggests(model_320, video, capsys):
    rc = main(["--quiet", "run", "--model", str(model_320), "--source", str(video), "--classes", "persn"])
    assert rc == 2 and "did you mean 'person'?" in capsys.readouterr().err


@requires_model
def test_full_video_jsonl_and_mp4_have_795_frames(model_320, video, tmp_path):
    out = tmp_path / "out"
    rc = main(["--quiet", "run", "--model", str(model_320), "--source", str(video), "--save-video",
               str(out / "a.mp4"), "--save-jsonl", str(out / "a.jsonl"), "--summary-json", str(out / "s.json"),
               "--no-show", "--no-progress", "--threads", "1", "--classes", "person", "--track"])
    assert rc == 0
    lines = [json.loads(line) for line in (out / "a.jsonl").read_text().splitlines()]
    assert len(lines) == 795
    assert [d["frame"] for d in lines] == list(range(795))
    assert set(lines[0]) == {"source", "frame", "pts_ms", "wall_time", "detections", "events"}
    dets = [d for line in lines for d in line["detections"]]
    assert len(dets) > 795  # vtest is full of pedestrians
    assert {d["class_name"] for d in dets} == {"person"} and all("track_id" in d for d in dets)
    assert count_frames(out / "a.mp4") == 795
    s = json.loads((out / "s.json").read_text())
    assert (s["processed"], s["frames_read"], s["dropped"], s["corrupt"], s["stopped_by"]) == \
        (795, 795, 0, 0, "end")
    assert set(s["stages"]) == {"decode", "preprocess", "inference", "postprocess", "processors", "sinks"}
    assert s["stages"]["processors"]["mean_ms"] >= 0  # the tracker ran, timed as its own stage
    assert s["fps"] > 0


@requires_model
def test_sigterm_mid_file_finalizes_outputs(model_320, video, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "edge_detect", "--quiet", "run", "--model", str(model_320), "--source",
           str(video), "--save-video", str(out / "a.mp4"), "--save-jsonl", str(out / "a.jsonl"),
           "--summary-json", str(out / "s.json"), "--no-show", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (out / "a.jsonl").exists() or len((out / "a.jsonl").read_text().splitlines()) < 15:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 143, proc.stderr.read().decode()[-2000:]
    summary = json.loads((out / "s.json").read_text())
    lines = (out / "a.jsonl").read_text().splitlines()
    assert summary["stopped_by"] == "stop_event"
    assert 15 <= summary["processed"] < 795
    assert len(lines) == summary["processed"]
    assert count_frames(out / "a.mp4") == summary["processed"]  # playable, every processed frame
