"""Progress (issue 26 item 14): a tqdm bar on a terminal, periodic plain log lines when stderr is not one."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from conftest import REPO, requires_ort
from edge_detect.progress import LogProgress, progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_tqdm_and_a_pipe_gets_log_lines(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert isinstance(progress(range(3), desc="x"), tqdm)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress(range(3), desc="x"), LogProgress)
    assert isinstance(progress(range(3), disable=True), tqdm)  # disabled: a silent pass-through


def test_log_lines_count_percent_rate_and_a_final_line(caplog):
    with caplog.at_level(logging.INFO, logger="edge_detect.progress"):
        items = list(LogProgress(["a", "b", "c", "d"], desc="evaluate val", unit="img", interval_s=0.0))
    assert items == ["a", "b", "c", "d"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # one per update at interval 0, then the final one
    assert lines[1].startswith("evaluate val: 2/4 img (50%), ") and " img/s, " in lines[1] and lines[1].endswith(" left")
    assert lines[3].startswith("evaluate val: 4/4 img (100%), ") and "left" not in lines[3]
    assert lines[4].startswith("evaluate val: 4/4 img in ") and lines[4].endswith(" img/s)")
    assert not any("\r" in ln for ln in lines)


def test_quiet_short_loops_and_postfix(caplog):
    with caplog.at_level(logging.INFO, logger="edge_detect.progress"):
        for _ in LogProgress(range(3), desc="warm-up", leave=False, interval_s=3600):
            pass  # leave=False, no periodic line: nothing at all
        with LogProgress(total=2, desc="export y.pt", unit="step", interval_s=3600) as bar:
            bar.set_postfix_str("simplify")
            bar.update(2)
        bar = LogProgress(total=40_000_000, desc="download", unit="B", interval_s=0.0)
        bar.update(10_000_000)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records][:1] == ["export y.pt: 2/2 step"]
    assert caplog.records[0].getMessage().endswith(", simplify")
    assert caplog.records[1].getMessage().startswith("download: 10/40 MB (25%)")


@requires_ort
def test_val_with_stderr_in_a_file_logs_plain_lines(tmp_path, coco128, onnx_builder, reference):
    """`edge-detect val 2> file`: no carriage return, one progress line per image at interval 0, then the mAP."""
    import numpy as np
    import yaml

    from edge_detect.metadata import ModelMetadata

    names = [f"n{i}" for i in range(80)]
    model = onnx_builder(tmp_path / "replay.onnx", [np.load(reference / "infer_bus.npz")["raw"]],
                         metadata=ModelMetadata(names=names).to_dict())
    images = sorted((coco128 / "images" / "val2017").glob("*.jpg"))[:5]
    for sub in ("images/val2017", "labels/val2017"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for img in images:
        os.symlink(img, tmp_path / "d" / "images" / "val2017" / img.name)
        label = coco128 / "labels" / "val2017" / f"{img.stem}.txt"
        if label.is_file():
            os.symlink(label, tmp_path / "d" / "labels" / "val2017" / label.name)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"path": str(tmp_path / "d"), "val": "images/val2017",
                                                     "train": "images/val2017", "names": names}))
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "edge_detect", "val", "--model", str(model), "--data",
                               str(tmp_path / "d.yaml"), "--threads", "1"], stdout=subprocess.PIPE, stderr=err,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO),
                                                           "EDGE_DETECT_PROGRESS_S": "0"})
    log = Path(tmp_path / "err.log").read_bytes().decode()  # (read_text turns a carriage return into a newline)
    assert proc.returncode == 0 and proc.stdout.startswith("mAP50-95 "), log
    assert "\r" not in log
    lines = [ln for ln in log.splitlines() if ln.startswith("INFO edge_detect.progress: evaluate val: ")]
    assert [ln.split(": ", 2)[2].split(" ")[0] for ln in lines] == ["1/5", "2/5", "3/5", "4/5", "5/5", "5/5"]


@requires_ort
def test_run_with_stderr_in_a_file_logs_plain_lines(tmp_path, video, onnx_builder, reference):
    """`edge-detect run ... 2> file` (the main job under systemd or nohup): the frame count as plain log lines,
    no carriage-return bar."""
    import numpy as np

    from edge_detect.metadata import ModelMetadata

    model = onnx_builder(tmp_path / "replay.onnx", [np.load(reference / "infer_bus.npz")["raw"]],
                         metadata=ModelMetadata(names=[f"n{i}" for i in range(80)]).to_dict())
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "edge_detect", "run", "--model", str(model), "--source",
                               str(video), "--max-frames", "4", "--threads", "1", "--no-show", "--save-jsonl",
                               str(tmp_path / "out.jsonl")], stdout=subprocess.PIPE, stderr=err, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(REPO), "EDGE_DETECT_PROGRESS_S": "0"})
    log = Path(tmp_path / "err.log").read_bytes().decode()  # (read_text turns a carriage return into a newline)
    assert proc.returncode == 0, log
    assert "\r" not in log
    lines = [ln for ln in log.splitlines() if ln.startswith("INFO edge_detect.progress: run: ")]
    assert [ln.split(": ", 2)[2].split(" ")[0] for ln in lines][-1] == "4/4", log
