"""A first ``edge-detect run`` on a machine without a display leaves something to look at (issue 26 item 9):
with no output given and no window, ``runs/run/N/`` gets ``out.mp4``, ``out.jsonl`` and ``summary.json``, and the
command says where; ``--no-save`` writes nothing; a window (a display) or any output given keeps the run as it was."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import count_frames, requires_ort
from edge_detect.cli import main


@pytest.fixture(scope="module")
def replay(onnx_builder, reference, tmp_path_factory) -> Path:
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("defaults") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())


@pytest.fixture
def headless(monkeypatch, tmp_path) -> Path:
    """A working folder with a 9-frame video, on a machine without a display."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    w = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(9):
        w.write(np.full((64, 96, 3), 25 * i, np.uint8))
    w.release()
    return tmp_path


@requires_ort
def test_headless_run_without_outputs_saves_in_numbered_run_folders(replay, headless, capsys):
    for n in (1, 2):
        assert main(["-q", "run", "--model", str(replay), "--source", "v.avi"]) == 0
        out = capsys.readouterr().out
        folder = headless / "runs" / "run" / str(n)
        assert out == f"results saved to {Path('runs/run') / str(n)}: out.jsonl, out.mp4, summary.json\n"
        assert count_frames(folder / "out.mp4") == 9
        lines = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
        assert [d["frame"] for d in lines] == list(range(9))
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["processed"] == 9 and summary["sinks"]["video"]["sent"] == 9


@requires_ort
@pytest.mark.parametrize("extra, written", [
    (["--no-save"], []),
    (["--save-jsonl", "mine.jsonl"], ["mine.jsonl"]),  # an output given: only that one
    (["--summary-json", "s.json", "--no-save"], ["s.json"]),
])
def test_no_save_or_an_output_given_writes_no_default_folder(replay, headless, capsys, extra, written):
    assert main(["-q", "run", "--model", str(replay), "--source", "v.avi", *extra]) == 0
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in headless.iterdir()) == sorted(["v.avi", *written])


@pytest.mark.parametrize("display, argv, defaults", [
    (False, [], True),
    (False, ["--no-show"], True),
    (True, ["--no-show"], True),  # no window either: the run would leave nothing
    (True, [], False),  # a display: the window, as before
    (False, ["--no-save"], False),
    (False, ["--preview-port", "8090"], False),
    (False, ["--webhook", "http://127.0.0.1:9/h"], False),
    (False, ["--save-video", "a.mp4"], False),
    (False, ["--http", "127.0.0.1:8090"], False),  # the dashboard shows the frames
    (False, ["--record", "clips"], False),  # clips asked for: only them
])
def test_default_outputs_only_when_nothing_is_written_or_shown(monkeypatch, tmp_path, display, argv, defaults):
    from edge_detect.app_config import load_app_config
    from edge_detect.cli import build_parser
    from edge_detect.cli.run import _default_outputs, _event_flags, _overrides, _record_flags, _sink_flags
    from edge_detect.app_config import add_sinks

    monkeypatch.setattr("edge_detect.sinks.display.display_available", lambda: (display, "test"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "run" / "1").mkdir(parents=True)  # an earlier run: the next folder is 2
    args = build_parser().parse_args(["run", "--source", "v.mp4", *argv])
    assert isinstance(args, argparse.Namespace)
    cfg = load_app_config(None, _overrides(args))
    cfg = _record_flags(args, _event_flags(args, add_sinks(cfg, _sink_flags(args, cfg))))
    new, run_dir = _default_outputs(cfg, args, serving=args.http is not None)
    if defaults:
        assert run_dir == Path("runs/run/2")
        assert [s.spec for s in new.outputs.sinks] == [str(run_dir / "out.mp4"), str(run_dir / "out.jsonl")]
    else:
        assert run_dir is None and new is cfg
