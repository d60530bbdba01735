"""The install story (issue 26 items 11, 12, 16): a runtime-only extra without PyTorch that the quick start uses and
whose measured size is in the README (under 1 GB), one cuda-python rule, and the README examples' outputs ignored
by git."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _extras() -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    return {k: [ln.strip() for ln in v.splitlines() if ln.strip()] for k, v in cfg["options.extras_require"].items()}


def _quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("## Usage", 1)[0]


def test_quick_start_uses_a_runtime_install_without_torch():
    extras = _extras()
    runtime = [re.split(r"[<>=!~ ;\[]", r, 1)[0].lower() for r in extras["runtime"]]
    assert runtime == ["onnx", "onnxruntime", "av"]  # inference + the torch-free export + browser mp4
    quick = _quick_start()
    assert 'python3 -m venv .venv' in quick and "Python 3.9 or newer (tested on 3.11" in quick
    first_block = quick.split("```bash", 1)[1].split("```", 1)[0]
    assert 'pip install -e ".[runtime]"' in first_block and "build" not in first_block
    assert "edge-detect run --source ../shared/videos/vtest.avi" in first_block
    assert 'pip install -e ".[onnx,openvino,build,events,server,triton,dev]"' in quick  # the developer install: one line
    assert "sudo apt-get install mosquitto" in quick


def test_every_extra_has_a_measured_size_and_the_runtime_one_is_under_1_gb():
    rows = dict(re.findall(r"^\| `?([a-z]+|no extra|developer line above)`? \|[^|]*\| ([^|]+) \|$", _quick_start(),
                           re.M))
    for extra in _extras():
        if extra != "ultralytics":  # = build + ultralytics itself
            assert extra in rows, f"README size table lacks the '{extra}' extra"
    mb = re.fullmatch(r"(\d+) MB", rows["runtime"].strip())
    assert mb and int(mb.group(1)) < 1024, rows["runtime"]


def test_one_cuda_python_rule_everywhere():
    extras = _extras()
    specs = {name: [r for r in reqs if r.startswith("cuda-python")] for name, reqs in extras.items()}
    used = {name: s[0] for name, s in specs.items() if s}
    assert set(used) == {"tensorrt", "dev"} and len(set(used.values())) == 1, used
    spec = next(iter(used.values())).replace("cuda-python", "")
    assert f"cuda-python (extras `tensorrt`, `dev`): `{spec}`" in README
    assert f"cuda-python `{spec}`" in README


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_readme_example_outputs_are_ignored_by_git():
    flags = r"--save-video|--save-jsonl|--summary-json|--json|--snapshots|--save-json"
    outputs = sorted({m for m in re.findall(rf"(?:{flags}) ([\w./-]+)", README)
                      if not m.startswith(("/", "..", "$")) and not m.isupper()})  # DIR, FILE: placeholders
    assert {"bench.json", "s.json", "out.mp4", "out.jsonl", "summary.json", "snaps/"} <= set(outputs)
    proc = subprocess.run(["git", "check-ignore", "--no-index", *outputs, "out_vtest.mp4", "runs/run/1/out.mp4"],
                          cwd=REPO, capture_output=True, text=True)
    ignored = set(proc.stdout.split())
    assert ignored == set(outputs) | {"out_vtest.mp4", "runs/run/1/out.mp4"}, sorted(set(outputs) - ignored)
