"""The default model in one command: checkpoint lookup (env, repo, ../shared, user cache), one ONNX export per
checkpoint sha256 into the user cache (atomic), and ``edge-detect run --source VIDEO`` without ``--model``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, requires_ort
from edge_detect import weights as W
from edge_detect.cli import main
from edge_detect.errors import ModelError
from edge_detect.model_cache import cached_onnx_path, ensure_onnx

SHA = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"


@pytest.fixture()
def layout(tmp_path: Path, monkeypatch) -> Path:
    """tmp/repo/weights (empty, the repository's folder), tmp/shared/weights, tmp/cache; no $EDGE_DETECT_WEIGHTS."""
    (tmp_path / "repo" / "weights").mkdir(parents=True)
    (tmp_path / "shared" / "weights").mkdir(parents=True)
    monkeypatch.setattr(W, "WEIGHTS_DIR", tmp_path / "repo" / "weights")
    monkeypatch.delenv(W.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv(W.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path / "repo")
    return tmp_path


def test_search_order(layout: Path, monkeypatch) -> None:
    t = layout
    assert W.search_dirs() == [t / "repo" / "weights", t / "shared" / "weights", t / "cache" / "weights"]
    (t / "cache" / "weights").mkdir(parents=True)
    (t / "cache" / "weights" / "yolov5n.pt").write_bytes(b"cache")
    assert W.resolve_weights("yolov5n") == t / "cache" / "weights" / "yolov5n.pt"  # the user cache, last
    (t / "shared" / "weights" / "yolov5n.pt").write_bytes(b"shared")
    assert W.resolve_weights("yolov5n") == t / "shared" / "weights" / "yolov5n.pt"  # ../shared/weights first
    (t / "env").mkdir()
    (t / "env" / "yolov5n.pt").write_bytes(b"env")
    monkeypatch.setenv(W.ENV_WEIGHTS, str(t / "env"))
    assert W.resolve_weights("yolov5n") == t / "env" / "yolov5n.pt"  # $EDGE_DETECT_WEIGHTS wins


def test_shared_beside_the_current_folder(layout: Path, monkeypatch, capsys) -> None:
    """`weights path yolov5n` from a repository root finds ../shared/weights, wherever the package lives."""
    t = layout
    monkeypatch.setattr(W, "WEIGHTS_DIR", t / "site-packages" / "edge_detect-data" / "weights")  # no ../shared there
    (t / "shared" / "weights" / "yolov5n.pt").write_bytes(b"shared")
    assert W.search_dirs()[-2:] == [t / "shared" / "weights", t / "cache" / "weights"]
    assert main(["weights", "path", "yolov5n"]) == 0
    assert capsys.readouterr().out.strip() == str(t / "shared" / "weights" / "yolov5n.pt")
    assert W.default_weights_dir() == t / "cache" / "weights"  # no repository weights/: fetch into the cache


def test_not_found_says_where_it_looked(layout: Path) -> None:
    with pytest.raises(ModelError) as exc:
        W.resolve_weights("yolov5n")
    msg = str(exc.value)
    assert "edge-detect weights fetch yolov5n" in msg
    for d in ("shared", "cache"):
        assert str(layout / d / "weights") in msg


def test_cache_path_is_keyed_by_sha256(weights_pt: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(W.ENV_CACHE, str(tmp_path / "c"))
    assert cached_onnx_path(weights_pt) == tmp_path / "c" / "models" / SHA / "yolov5n-640.onnx"
    assert cached_onnx_path(weights_pt, (384, 640)).name == "yolov5n-384x640.onnx"
    assert cached_onnx_path(weights_pt, 320).name == "yolov5n-320.onnx"


def test_export_once_atomically(layout: Path) -> None:
    pt = layout / "shared" / "weights" / "yolov5n.pt"
    pt.write_bytes(b"checkpoint v1")
    calls = []

    def exporter():
        def export(weights, output, imgsz, progress):
            calls.append((Path(weights), imgsz))
            assert Path(output).parent == cached_onnx_path(pt).parent and Path(output).name.endswith(".part")
            Path(output).write_bytes(b"onnx")
            return output
        return export

    first = ensure_onnx("yolov5n", exporter, progress=False)
    assert first == layout / "cache" / "models" / W.sha256_file(pt) / "yolov5n-640.onnx"
    assert first.read_bytes() == b"onnx" and calls == [(pt, (640, 640))]
    assert ensure_onnx("yolov5n", lambda: pytest.fail("exported twice"), progress=False) == first
    pt.write_bytes(b"checkpoint v2")  # a changed checkpoint gets its own export
    second = ensure_onnx("yolov5n", exporter, progress=False)
    assert second != first and len(calls) == 2
    assert sorted(p.name for p in second.parent.iterdir()) == ["yolov5n-640.onnx"]  # no .part left behind


def test_failed_export_leaves_nothing(layout: Path) -> None:
    (layout / "shared" / "weights" / "yolov5n.pt").write_bytes(b"x")

    def exporter():
        def export(weights, output, imgsz, progress):
            Path(output).write_bytes(b"half a mod")
            raise KeyboardInterrupt
        return export

    with pytest.raises(KeyboardInterrupt):
        ensure_onnx("yolov5n", exporter, progress=False)
    assert [p for p in (layout / "cache").rglob("*") if p.is_file()] == []


NO_TORCH_RUN = r"""
import json, sys, traceback

attempts = []


class BlockTorch:  # as in tests/test_no_torch.py: import torch raises, and who tried is recorded
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            attempts.append([f"{f.filename}:{f.lineno}" for f in traceback.extract_stack() if "edge_detect" in f.filename][-1:])
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, BlockTorch())
from edge_detect.cli import main
import edge_detect.deploy.onnx_yolov5 as exporter

argv = ["--quiet", "run", "--source", sys.argv[1], "--max-frames", "3", "--no-show", "--no-progress",
        "--threads", "1", "--summary-json", "s.json"]
rc1 = main(argv)
exporter.export_onnx_torch_free = lambda *a, **k: sys.exit("exported a second time")
rc2 = main(argv)
print("RESULT " + json.dumps({"rc": [rc1, rc2], "attempts": attempts,
                               "torch_loaded": any(m.split(".")[0] == "torch" for m in sys.modules)}))
"""


@requires_ort
def test_run_without_model_exports_once_without_torch(weights_pt: Path, video: Path, tmp_path: Path) -> None:
    """Acceptance (issue 26 item 10): `edge-detect run --source vtest.avi` right after `pip install
    'edge-detect[onnx]'`, no --model, torch unimportable: the default model is exported torch-free, once."""
    from edge_detect.metadata import read_onnx_metadata

    onnx = pytest.importorskip("onnx")
    env = {**os.environ, "PYTHONPATH": str(REPO), W.ENV_WEIGHTS: str(weights_pt.parent),
           W.ENV_CACHE: str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_RUN, str(video)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(line[0][len("RESULT "):])
    assert res == {"rc": [0, 0], "attempts": [], "torch_loaded": False}, res
    model = tmp_path / "cache" / "models" / SHA / "yolov5n-640.onnx"
    assert os.listdir(model.parent) == ["yolov5n-640.onnx"]
    meta = read_onnx_metadata(onnx.load(str(model)))
    assert meta.versions["exporter"].endswith("(torch-free)") and meta.source_sha256 == SHA
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["processed"] == 3
