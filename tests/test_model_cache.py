"""The default model in one command: checkpoint lookup (env, repo, ../shared, user cache), one ONNX export per
checkpoint sha256 into the user cache (atomic), and ``edge-detect run --source VIDEO`` without ``--model``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import has_module, requires_ort
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


def test_without_torch_says_which_extra(layout: Path, video: Path, monkeypatch, capsys) -> None:
    (layout / "shared" / "weights" / "yolov5n.pt").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    rc = main(["--quiet", "run", "--source", str(video), "--no-show"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "needs PyTorch, which is not installed; install it with: pip install 'edge-detect[build]'" in err


@requires_ort
@pytest.mark.skipif(not has_module("torch"), reason="torch not installed (the first run exports)")
def test_run_without_model_exports_once_and_runs(weights_pt: Path, video: Path, tmp_path: Path, monkeypatch) -> None:
    """Acceptance: `edge-detect run --source vtest.avi` right after install, no --model."""
    monkeypatch.setenv(W.ENV_WEIGHTS, str(weights_pt.parent))
    monkeypatch.setenv(W.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    argv = ["--quiet", "run", "--source", str(video), "--max-frames", "4", "--no-show", "--no-progress",
            "--threads", "1", "--summary-json", "s.json"]
    assert main(argv) == 0
    onnx = tmp_path / "cache" / "models" / SHA / "yolov5n-640.onnx"
    assert onnx.is_file()
    stamp = onnx.stat().st_mtime_ns
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["processed"] >= 3 and s["sources"]["vtest"]["read"] >= s["processed"]
    import edge_detect.training.export as export_mod

    monkeypatch.setattr(export_mod, "export_onnx", lambda *a, **k: pytest.fail("exported a second time"))
    assert main(argv) == 0 and onnx.stat().st_mtime_ns == stamp
    assert os.listdir(onnx.parent) == ["yolov5n-640.onnx"]
