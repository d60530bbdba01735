"""``edge-detect detect`` and ``edge-detect val``: outputs, the mAP line, help text and one-line errors."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, requires_ort

pytestmark = requires_ort

from edge_detect import cli  # noqa: E402
from edge_detect.cli import detect as detect_cmd  # noqa: E402
from edge_detect.cli import val as val_cmd  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402

NAMES = [f"n{i}" for i in range(80)]


@pytest.fixture(scope="module")
def replay(onnx_builder, reference, tmp_path_factory):
    """Static 640 model that returns the reference bus prediction for any input."""
    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("cli") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=NAMES).to_dict())


@pytest.fixture(scope="module")
def images(shared, tmp_path_factory):
    """bus.jpg (linked), a grayscale png and a BGRA png of it, and a file that is not an image."""
    d = tmp_path_factory.mktemp("imgs")
    os.symlink(shared / "images" / "bus.jpg", d / "bus.jpg")
    bus = cv2.imread(str(shared / "images" / "bus.jpg"))
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "alpha.png"), cv2.cvtColor(bus, cv2.COLOR_BGR2BGRA))
    (d / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    return d


def test_detect_saves_images_labels_and_json(replay, images, reference, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        rc = cli.main(["detect", "--model", str(replay), "--source", str(images), "--output", str(out),
                       "--save-json", str(tmp_path / "p.json"), "--threads", "1"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "bus.jpg", "gray.png", "labels"]
    rows = np.loadtxt(out / "labels" / "bus.txt", ndmin=2)
    assert rows.shape == (4, 6) and rows[:, 0].tolist() == [0, 0, 0, 5]
    ref = np.load(reference / "infer_bus.npz")["nms_display_original"]
    np.testing.assert_allclose(rows[:, 5], ref[:, 4], atol=1e-5)
    np.testing.assert_allclose(rows[0, 1:5], [(219 + 349) / 2 / 810, (408 + 863) / 2 / 1080,
                                              130 / 810, 455 / 1080], atol=2e-3)
    for name in ("gray", "alpha"):  # grayscale and 4-channel images work (same pixels -> same boxes)
        np.testing.assert_allclose(np.loadtxt(out / "labels" / f"{name}.txt", ndmin=2), rows, atol=1e-6)
    annotated = cv2.imread(str(out / "bus.jpg"))
    assert annotated.shape == (1080, 810, 3)
    preds = json.loads((tmp_path / "p.json").read_text())  # COCO results format, image_id = file stem
    assert len(preds) == 12 and {p["image_id"] for p in preds} == {"alpha", "bus", "gray"}
    bus = sorted((p for p in preds if p["image_id"] == "bus"), key=lambda p: -p["score"])
    assert [p["category_id"] for p in bus] == ref[:, 5].astype(int).tolist()
    x1, y1, x2, y2 = ref[0, :4]
    np.testing.assert_allclose(bus[0]["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=1.0)
    assert set(bus[0]) == {"image_id", "category_id", "bbox", "score"}
    text = capsys.readouterr().out
    assert "3 image(s), 12 detection(s), 1 skipped (undecodable)" in text
    assert "broken.jpg: not a decodable image" in caplog.text
    assert "bus.jpg 810x1080: 3 n0, 1 n5" in caplog.text


def test_detect_filters_and_default_output(replay, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["detect", "--model", str(replay), "--source", str(images / "bus.jpg"), "--classes", "5"]
    assert cli.main(args + ["--no-save-labels"]) == 0
    assert cli.main(args + ["--conf", "0.7", "--no-save-images"]) == 0
    first, second = tmp_path / "runs/detect/exp", tmp_path / "runs/detect/exp2"
    assert sorted(p.name for p in first.iterdir()) == ["bus.jpg"]
    assert sorted(p.name for p in second.iterdir()) == ["labels"]
    assert (second / "labels" / "bus.txt").read_text() == ""          # class 5 scores 0.53 < 0.7


def test_detect_glob_source(replay, images, tmp_path):
    out = tmp_path / "g"
    assert cli.main(["detect", "--model", str(replay), "--source", str(images / "*.png"), "--output", str(out),
                     "--no-save-images"]) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["alpha.txt", "gray.txt"]


def _bad_layout(onnx_builder, d):
    return onnx_builder(d / "bad.onnx", [np.zeros((1, 10, 85), np.float32)] * 2)


def _dataset(d, label_text, make_images=True):
    root = d / "ds"
    (root / "labels" / "val").mkdir(parents=True)
    if make_images:
        (root / "images" / "val").mkdir(parents=True)
        cv2.imwrite(str(root / "images" / "val" / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    (root / "labels" / "val" / "a.txt").write_text(label_text)
    (root / "d.yaml").write_text("path: .\nval: images/val\nnames: [" + ", ".join(NAMES) + "]\n")
    return root / "d.yaml"


ERROR_CASES = [
    # (id, argv builder, expected message fragment)
    ("missing-model", lambda m, d, ob: ["detect", "--model", str(d / "nope.onnx"), "--source", str(d)],
     "model file not found"),
    ("text-as-onnx", lambda m, d, ob: ["detect", "--model", str(_write(d / "x.onnx", b"hello")), "--source", str(d)],
     "not a loadable ONNX model"),
    ("bad-layout", lambda m, d, ob: ["detect", "--model", str(_bad_layout(ob, d)), "--source", str(d)],
     "unexpected output layout: expected one output (B, N, 5+nc) or four NMS outputs, got 2 output(s)"),
    ("unknown-suffix", lambda m, d, ob: ["detect", "--model", str(_write(d / "m.tflite", b"x")), "--source", str(d)],
     "unknown model file type '.tflite'"),
    ("missing-source", lambda m, d, ob: ["detect", "--model", str(m), "--source", str(d / "nowhere")],
     "image source not found"),
    ("undecodable", lambda m, d, ob: ["detect", "--model", str(m), "--source", str(_write(d / "c.jpg", b"xx"))],
     "none of the 1 image(s) could be decoded"),
    ("zero-size", lambda m, d, ob: ["detect", "--model", str(m), "--source", str(_write(d / "z.png", b""))],
     "none of the 1 image(s) could be decoded"),
    ("bad-conf", lambda m, d, ob: ["detect", "--model", str(m), "--source", str(d), "--conf", "2"],
     "conf: expected a value in [0, 1], got 2.0"),
    ("static-imgsz", lambda m, d, ob: ["detect", "--model", str(m), "--source", str(d), "--imgsz", "320"],
     "static input size 640x640, got 320x320"),
    ("bad-provider", lambda m, d, ob: ["detect", "--model", str(m), "--source", str(d), "--providers", "npu"],
     "ONNX Runtime provider 'npu' is not available"),
    ("threads-for-pt", lambda m, d, ob: ["detect", "--model", str(_write(d / "m.pt", b"x")), "--source", str(d),
                                         "--threads", "1"],
     "--providers/--threads: expected the onnxruntime backend, got torch"),
    ("val-missing-folder", lambda m, d, ob: ["val", "--model", str(m), "--data", str(_dataset(d, "", False))],
     "image source not found: "),
    ("val-bad-class", lambda m, d, ob: ["val", "--model", str(m), "--data", str(_dataset(d, "80 .5 .5 .1 .1\n"))],
     "a.txt:1: class: expected an integer in 0..79, got 80"),
    ("val-missing-yaml", lambda m, d, ob: ["val", "--model", str(m), "--data", str(d / "none.yaml")],
     "dataset yaml not found"),
]


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("argv, message", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_bad_input_gives_one_line_error(replay, onnx_builder, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # a default runs/detect/expN would land here
    cv2.imwrite(str(tmp_path / "img.jpg"), np.zeros((32, 32, 3), np.uint8))  # a valid source for the model cases
    rc = cli.main(argv(replay, tmp_path, onnx_builder))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-detect: error:")]
    assert rc == 2
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "nothing is written on errors"


def test_error_in_subprocess_has_no_traceback(tmp_path):
    (tmp_path / "x.onnx").write_text("not a model")
    cv2.imwrite(str(tmp_path / "img.jpg"), np.zeros((32, 32, 3), np.uint8))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "edge_detect", "detect", "--model", str(tmp_path / "x.onnx"),
                           "--source", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"edge-detect: error: {tmp_path / 'x.onnx'}: not a loadable ONNX model")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", [detect_cmd, val_cmd], ids=["detect", "val"])
def test_help_text_on_every_flag(module, capsys):
    parser = argparse.ArgumentParser(prog="edge-detect")
    sub = parser.add_subparsers()
    p = module.add_parser(sub)
    for action in p._actions:  # argparse exposes no public list of a parser's arguments
        assert action.help, f"{action.option_strings} has no help text"
    with pytest.raises(SystemExit) as exc:
        cli.main([p.prog.split()[-1], "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--model PATH" in text and "examples:" in text


@pytest.mark.slow
def test_val_on_coco128_reproduces_reference_map(yolov5n_onnx, coco128_yaml, tmp_path, capsys):
    """Acceptance: exported yolov5n on coco128 val2017 at 640 square gives the official mAP."""
    preds = tmp_path / "preds.json"
    rc = cli.main(["val", "--model", str(yolov5n_onnx), "--data", str(coco128_yaml), "--imgsz", "640",
                   "--threads", "2", "--no-progress", "--save-json", str(preds)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0] == "mAP50-95 0.334 mAP50 0.515"
    m50_95, m50 = float(out[0].split()[1]), float(out[0].split()[3])
    assert abs(m50_95 - 0.334) <= 0.003 and abs(m50 - 0.515) <= 0.005
    assert out[1].startswith("128 images, 898 labelled boxes")
    records = json.loads(preds.read_text())
    assert len(records) == int(out[1].split(", ")[2].split()[0])
    assert {r["category_id"] for r in records} <= set(range(80))
    assert {type(r["image_id"]) for r in records} == {int}


def _src_dir(d):
    """A folder with one real image and a snapshot of every file's bytes (to prove nothing was overwritten)."""
    src = d / "src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(src / "a.jpg"), np.full((32, 48, 3), 90, np.uint8))
    cv2.imwrite(str(src / "sub" / "b.png"), np.full((40, 40, 3), 30, np.uint8))
    return src


OUTPUT_CASES = [
    # (id, argv builder (model, tmp dir, source dir), expected one-line message)
    ("output-is-input-folder", lambda m, d, s: ["--source", str(s), "--output", str(s)],
     "--output {s}: expected an output that is not an input, got the input {s} itself"),
    ("output-inside-input-folder", lambda m, d, s: ["--source", str(s), "--output", str(s / "out")],
     "expected an output outside the input folder"),
    ("output-is-folder-of-input-image", lambda m, d, s: ["--source", str(s / "a.jpg"), "--output", str(s)],
     "expected an output folder other than the folder of the input"),
    ("save-json-is-input", lambda m, d, s: ["--source", str(s), "--output", str(d / "o"), "--save-json",
                                            str(s / "a.jpg")],
     "--save-json {s}/a.jpg: expected an output that is not an input"),
    ("output-is-a-file", lambda m, d, s: ["--source", str(s), "--output", str(_write(d / "f.txt", b"keep"))],
     "expected a folder, got an existing file"),
    ("output-under-a-file", lambda m, d, s: ["--source", str(s), "--output", str(_write(d / "f.txt", b"keep") / "o")],
     "expected a writable location, got {d}/f.txt which is a file, not a folder"),
    ("output-unwritable", lambda m, d, s: ["--source", str(s), "--output", "/proc/edge-detect-test/out"],
     "--output /proc/edge-detect-test/out: expected a writable location, got /proc which is not writable"),
    ("video-source", lambda m, d, s: ["--source", str(_write(d / "clip.avi", b"RIFF"))],
     "--source {d}/clip.avi: expected images, got a video; run the app on it with: edge-detect run --source "
     "{d}/clip.avi"),
    ("url-source", lambda m, d, s: ["--source", "http://127.0.0.1:9/a.jpg"],
     "image source http://127.0.0.1:9/a.jpg: expected a local image file, folder or glob, got a URL"),
    ("unknown-class-name", lambda m, d, s: ["--source", str(s), "--output", str(d / "o"), "--classes", "n5", "nn7"],
     "classes: unknown class name 'nn7' (did you mean 'n7'?)"),
    ("imgsz-cap", lambda m, d, s: ["--source", str(s), "--output", str(d / "o"), "--imgsz", "100000"],
     "static input size 640x640, got 100000x100000"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_detect_refuses_outputs_that_overwrite_inputs(replay, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    src = _src_dir(tmp_path)
    argv = argv(replay, tmp_path, src)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rc = cli.main(["detect", "--model", str(replay), *argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-detect: error:")]
    assert rc == 2
    assert len(lines) == 1 and message.format(s=src, d=tmp_path) in lines[0], err
    assert "Traceback" not in err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "an input was changed or an output written"


def test_detect_classes_by_name(replay, images, tmp_path):
    out = tmp_path / "o"
    assert cli.main(["detect", "--model", str(replay), "--source", str(images / "bus.jpg"), "--output", str(out),
                     "--classes", "n5", "--no-save-images"]) == 0
    rows = np.loadtxt(out / "labels" / "bus.txt", ndmin=2)
    assert rows[:, 0].tolist() == [5]  # only the class named n5 (id 5) of the reference's 3 x n0 + 1 x n5
