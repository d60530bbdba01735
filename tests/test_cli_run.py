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
                 "--tracker", "--batch"):
        assert flag in out, flag
    assert "130 after SIGINT" in out and "143 after SIGTERM" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "missing.onnx", "--source", "{video}"], "model file not found: missing.onnx"),
    (["run", "--model", "m.onnx"], "sources: expected at least one source"),
    (["run", "--model", "yolov5q", "--source", "{video}"], "weights 'yolov5q': expected an existing file or a "
                                                              "model name from the manifest"),
    (["run", "--model", "m.onnx", "--source", "nope.mp4"], "source not found: nope.mp4"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--conf", "2"], "conf: expected a value in [0, 1]"),
    (["run", "--config", "nope.yaml"], "config file not found: nope.yaml"),
    (["run", "--model", "m.onnx", "--source", "{video}", "--tracker", "kalman"],
     "tracker: unknown name 'kalman'; expected one of bytetrack, iou, none"),
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
    final = [d for d in lines if d.get("final")]  # the tracker's end-of-stream events (object_end), one line
    lines = [d for d in lines if not d.get("final")]
    assert len(lines) == 795
    assert [d["frame"] for d in lines] == list(range(795))
    assert len(final) <= 1 and all(e["type"] == "object_end" for d in final for e in d["events"])
    assert all(d["frame"] == 794 and d["detections"] == [] for d in final)
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
    assert summary["stopped_by"] == "SIGTERM"
    assert 15 <= summary["processed"] < 795
    assert len(lines) == summary["processed"]
    assert count_frames(out / "a.mp4") == summary["processed"]  # playable, every processed frame


# ------------------------------------------------------------------------------- bad inputs, nothing lost
@pytest.fixture(scope="module")
def replay(onnx_builder, reference, tmp_path_factory):
    """Static 640 model replaying the reference bus prediction (fast; needs no torch)."""
    import numpy as np

    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("replay") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())


def _small_video(path: Path, frames: int = 6) -> Path:
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        w.write(np.full((48, 64, 3), 20 * i, np.uint8))
    w.release()
    return path


def _folder(d: Path) -> Path:
    d.mkdir()
    return d


def _garbage_images(d: Path) -> Path:
    d.mkdir()
    for name in ("a.jpg", "b.png"):
        (d / name).write_bytes(b"not an image at all")
    return d


def _text_folder(d: Path) -> Path:
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    return d


RUN_BAD_INPUTS = [
    # (id, extra argv given (tmp dir, input video), expected message, exit code)
    ("save-video-is-input", lambda d, v: ["--source", str(v), "--save-video", str(v)],
     "--save-video {v}: expected an output that is not an input, got the input {v} itself", 2),
    ("save-jsonl-is-input", lambda d, v: ["--source", str(v), "--save-jsonl", str(v)],
     "--save-jsonl {v}: expected an output that is not an input", 2),
    ("summary-is-input", lambda d, v: ["--source", str(v), "--summary-json", str(v)],
     "--summary-json {v}: expected an output that is not an input", 2),
    ("summary-is-model", lambda d, v: ["--source", str(v), "--summary-json", "{model}"],
     "--summary-json {model}: expected an output that is not an input, got the input {model} itself", 2),
    ("two-outputs-one-file", lambda d, v: ["--source", str(v), "--save-video", str(d / "o.mp4"),
                                           "--summary-json", str(d / "o.mp4")],
     "--summary-json {d}/o.mp4: expected a path of its own, got the same file as --save-video", 2),
    ("video-dir-unwritable", lambda d, v: ["--source", str(v), "--save-video", "/proc/edge-detect-test/o.mp4"],
     "--save-video /proc/edge-detect-test/o.mp4: expected a writable location, got /proc which is not writable", 2),
    ("video-under-a-file", lambda d, v: ["--source", str(v), "--save-video", str(d / "in.avi" / "o.mp4")],
     "expected a writable location, got {v} which is a file, not a folder", 2),
    ("video-is-a-folder", lambda d, v: ["--source", str(v), "--save-video", str(_folder(d / "o.mp4"))],
     "--save-video {d}/o.mp4: expected a file path, got an existing folder", 2),
    ("summary-unwritable", lambda d, v: ["--source", str(v), "--summary-json", "/proc/x/s.json"],
     "--summary-json /proc/x/s.json: expected a writable location", 2),
    ("unreachable-stream", lambda d, v: ["--source", "rtsp://u:secret@127.0.0.1:1/x"],
     "cannot open stream source rtsp://***@127.0.0.1:1/x", 2),
    ("huge-imgsz", lambda d, v: ["--source", str(v), "--imgsz", "100000"],
     "imgsz: expected sides of at most 4096 px (--force-imgsz to go beyond), got 100000x100000", 2),
    ("folder-of-text-files", lambda d, v: ["--source", str(_text_folder(d / "txt"))],
     "source folder {d}/txt: expected images", 2),
    ("folder-of-undecodable-images", lambda d, v: ["--source", str(_garbage_images(d / "bad"))],
     "no frame processed: expected decodable frames from 1 source(s), got 0 read, 2 undecodable", 2),
]


@pytest.mark.parametrize("argv, message, code", [c[1:] for c in RUN_BAD_INPUTS], ids=[c[0] for c in RUN_BAD_INPUTS])
def test_run_bad_inputs_one_line_nothing_lost(replay, tmp_path, capsys, monkeypatch, argv, message, code):
    monkeypatch.chdir(tmp_path)
    v = _small_video(tmp_path / "in.avi")
    args = [a.replace("{model}", str(replay)) for a in argv(tmp_path, v)]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    model_bytes = replay.read_bytes()
    rc = main(["--quiet", "run", "--model", str(replay), "--no-show", "--no-progress", *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-detect: error:")]
    assert rc == code
    assert len(lines) == 1 and message.format(d=tmp_path, v=v, model=replay) in lines[0], err
    assert "Traceback" not in err and "secret" not in err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before and replay.read_bytes() == model_bytes, "an input was changed or an output written"


@requires_model
def test_readme_config_line_runs(yolov5n_onnx, weights_pt, tmp_path, monkeypatch):
    """README: `edge-detect run --config configs/app/default.yaml --conf 0.4` from a clone with ../shared beside
    it (the export of the default model is already in the user cache here: test_model_cache covers exporting)."""
    import shutil

    from conftest import SHARED
    from edge_detect.model_cache import cached_onnx_path

    assert "edge-detect run --config configs/app/default.yaml --conf 0.4" in (REPO / "README.md").read_text()
    clone = tmp_path / "clone"
    (clone / "configs" / "app").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "app" / "default.yaml", clone / "configs" / "app" / "default.yaml")
    os.symlink(SHARED, tmp_path / "shared")
    monkeypatch.chdir(clone)
    monkeypatch.delenv("EDGE_DETECT_WEIGHTS", raising=False)
    cached = cached_onnx_path(tmp_path / "shared" / "weights" / "yolov5n.pt")
    cached.parent.mkdir(parents=True)
    shutil.copy(yolov5n_onnx, cached)
    rc = main(["--quiet", "run", "--config", "configs/app/default.yaml", "--conf", "0.4", "--max-frames", "3",
               "--no-show", "--no-progress", "--threads", "1", "--summary-json", "s.json"])
    assert rc == 0
    s = json.loads((clone / "s.json").read_text())
    assert s["processed"] == 3 and list(s["sources"]) == ["vtest"]


@requires_model
@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_run_prints_nothing_on_success(quiet, model_320, video, tmp_path, capsys, monkeypatch):
    """``-q``: only warnings and errors, so no progress bar either; without it the bar is there (on a terminal:
    tests/test_progress.py has the log lines of a redirected stderr)."""
    monkeypatch.setattr("edge_detect.progress.stderr_is_terminal", lambda: True)
    argv = ["run", "--model", str(model_320), "--source", str(video), "--max-frames", "5", "--no-show",
            "--save-jsonl", str(tmp_path / "o.jsonl")]
    assert main((["-q"] if quiet else []) + argv) == 0
    err = capsys.readouterr().err
    assert ("%|" in err) is (not quiet), err[-500:]
    if quiet:
        assert err == ""
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 5
