"""``run`` with hostile or mistaken outputs and inputs (issue 26 items 1, 3, 8): exit 2, exactly one line on stderr
(library noise included: each case runs in its own process), no traceback, no input changed and no pre-existing
output truncated -- every file of the working folder is byte-identical afterwards."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, requires_ort

pytestmark = requires_ort


def _video(path: Path, frames: int = 6, size=(64, 48)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        w.write(np.full((size[1], size[0], 3), 20 * i % 256, np.uint8))
    w.release()
    return path


@pytest.fixture(scope="module")
def model(onnx_builder, reference, tmp_path_factory) -> Path:
    """A static 640 model replaying the reference bus prediction (no torch needed)."""
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("nothing_lost") / "m.onnx", [raw],
                        metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())


@pytest.fixture
def work(tmp_path: Path, model: Path) -> Path:
    """The working folder: inputs in in/, outputs of an earlier run in out/ (all must survive every case)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    shutil.copy(model, tmp_path / "m.onnx")
    _video(tmp_path / "in" / "v.avi")
    _video(tmp_path / "in" / "x_v.avi")
    shutil.copy(tmp_path / "in" / "v.avi", tmp_path / "in" / "x_v.jsonl")  # a video that happens to be named so
    shutil.copy(tmp_path / "in" / "v.avi", tmp_path / "in" / "o_v-1.avi")
    (tmp_path / "in" / "snaps" / "cam").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "snaps" / "cam" / "a.jpg"), np.full((48, 64, 3), 90, np.uint8))
    (tmp_path / "in" / "garbage.jpg").write_bytes(b"not an image at all")
    cv2.imwrite(str(tmp_path / "in" / "one.png"), np.zeros((1, 1, 3), np.uint8))
    (tmp_path / "out" / "prev.jsonl").write_text('{"frame": 0, "from": "an earlier run"}\n' * 300)
    (tmp_path / "out" / "prev.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    (tmp_path / "inf.yaml").write_text("model: {path: m.onnx}\nsources: [in/v.avi]\n"
                                       "analytics: {lines: {g: [0, 0, .inf, 4]}}\n")
    return tmp_path


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _taken_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


OUT = ["--save-jsonl", "out/prev.jsonl", "--save-video", "out/prev.mp4"]
CASES = [
    # (id, argv after `run --model m.onnx --no-show`, the message; {port}: a port another process listens on)
    ("item1-several-sources-video-file-is-an-input",
     ["--source", "in/v.avi", "--source", "in/x_v.avi", "--save-video", "in/x.avi"],
     "--save-video in/x.avi (its file for source v) in/x_v.avi: expected an output that is not an input, got the "
     "input {d}/in/x_v.avi itself"),
    ("item1-several-sources-jsonl-file-is-an-input",
     ["--source", "in/v.avi", "--source", "in/x_v.jsonl", "--save-jsonl", "in/x.jsonl"],
     "--save-jsonl in/x.jsonl (its file for source v) in/x_v.jsonl: expected an output that is not an input"),
    ("item1-renamed-duplicate-id-names-an-input",  # ids v, v-1, o_v-1: out_v-1 would be the third input
     ["--source", "in/v.avi", "--source", "in/v.avi", "--source", "in/o_v-1.avi", "--save-video", "in/o.avi"],
     "--save-video in/o.avi (its file for source v-1) in/o_v-1.avi: expected an output that is not an input"),
    ("item1-snapshots-folder-holds-an-input",
     ["--source", "in/snaps/cam", "--snapshots", "in/snaps"],
     "--snapshots in/snaps: expected a folder that holds no input, got the input {d}/in/snaps/cam inside it"),
    ("item3-metrics-port-taken", ["--source", "in/v.avi", "--metrics-port", "{port}", *OUT],
     "metrics server: cannot listen on 127.0.0.1:{port}"),
    ("item3-no-decodable-frame", ["--source", "in/garbage.jpg", *OUT],
     "no frame processed: expected decodable frames from 1 source(s), got 0 read, 1 undecodable"),
    ("item8-1x1-image-video", ["--source", "in/one.png", "--save-video", "out/prev.mp4"],
     "video sink out/prev.mp4: expected frames of at least 2x2 pixels, got 1x1"),
    ("item8-line-near-1e308", ["--source", "in/v.avi", "--line", "a=0,0,1e308,5", *OUT],
     "line a: expected 4 finite numbers x1,y1,x2,y2 with |v| <= 1000000 px, got [0.0, 0.0, 1e+308, 5.0]"),
    ("item8-zone-nan", ["--source", "in/v.avi", "--zone", "z=0,0,nan,5,7,8", *OUT],
     "--zone z: expected finite numbers"),
    ("item8-config-line-inf", ["--config", "inf.yaml", *OUT],
     "line g: expected 4 finite numbers x1,y1,x2,y2 with |v| <= 1000000 px, got [0.0, 0.0, inf, 4.0]"),
    ("item8-tracker-lists-trackers-only", ["--source", "in/v.avi", "--tracker", "bogus", *OUT],
     "tracker: unknown name 'bogus'; expected one of bytetrack, iou, none"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_run_refuses_with_one_line_and_touches_nothing(work: Path, argv, message):
    port = _taken_port()
    try:
        p = str(port.getsockname()[1])
        before = _digest(work)
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
        proc = subprocess.run([sys.executable, "-m", "edge_detect", "-q", "run", "--model", "m.onnx", "--no-show",
                               *[a.replace("{port}", p) for a in argv]],
                              cwd=work, env=env, capture_output=True, text=True, timeout=120)
    finally:
        port.close()
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("edge-detect: error: ")
    assert message.format(d=work, port=p) in lines[0], lines[0]
    assert proc.stdout == ""
    assert _digest(work) == before, "an input was changed or an earlier output truncated"
    assert not (work / "runs").exists()


def test_full_disk_leaves_the_jsonl_on_a_whole_line(work: Path):
    """Item 4: a file size limit (RLIMIT_FSIZE, as a full disk) hit mid-line: the JSONL is cut back to its last
    complete line, the run fails with one line and the summary records the error and the lines written."""
    import json
    import resource

    _video(work / "in" / "long.avi", frames=40)
    limit = 5000  # about 6 lines of the replayed detections; the summary (~2 KB) still fits

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "edge_detect", "-q", "run", "--model", "m.onnx", "--no-show",
                           "--source", "in/long.avi", "--save-jsonl", "o.jsonl", "--summary-json", "s.json"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "JSONL sink o.jsonl: cannot write (File too large); the file ends on its last complete line" in proc.stderr
    data = (work / "o.jsonl").read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")
    lines = [json.loads(line) for line in data.decode().splitlines()]
    summary = json.loads((work / "s.json").read_text())
    assert [d["frame"] for d in lines] == list(range(len(lines)))
    # the failed write and whatever was already queued behind it (one or two lines, by timing) count as failed
    assert summary["sinks"]["jsonl"]["sent"] == len(lines) and summary["sinks"]["jsonl"]["failed"] >= 1
    assert summary["stopped_by"] == "sink_error" and "File too large" in summary["sink_errors"][0]
