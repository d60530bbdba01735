"""Weights manifest, offline resolution and sha256-verified fetch (file:// URLs: no network)."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from edge_detect import weights as W
from edge_detect.errors import ConfigError, ModelError
from edge_detect.paths import resource_path

SHA_N = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"


def test_manifest_content() -> None:
    m = W.load_manifest()
    assert list(m) == ["yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"]
    n = m["yolov5n"]
    assert (n.release, n.sha256, n.size) == ("v6.1", SHA_N, 4_062_133)
    assert n.url == "https://github.com/ultralytics/yolov5/releases/download/v6.1/yolov5n.pt"
    for name in ("yolov5s", "yolov5m", "yolov5l", "yolov5x"):
        assert m[name].url == f"https://github.com/ultralytics/yolov5/releases/download/v7.0/{name}.pt"
        assert m[name].release == "v7.0" and m[name].sha256 is None  # not verified by us: honest null
        assert (resource_path("configs", "models") / f"{m[name].config}.yaml").is_file()


def test_shared_checkpoint_matches_manifest(weights_pt: Path) -> None:
    assert W.sha256_file(weights_pt) == W.load_manifest()["yolov5n"].sha256
    assert weights_pt.stat().st_size == W.load_manifest()["yolov5n"].size


@pytest.mark.parametrize("text, message", [
    ("models: [1, 2]", "expected a top-level 'models' mapping"),
    ("other: 1", "expected a top-level 'models' mapping"),
    ("models:\n  a: {sha256: null}", "model 'a': expected a mapping with at least 'url'"),
    ("models:\n  a: {url: x, sha256: abc}", "sha256 must be 64 hex digits or null, got 'abc'"),
    ("models: [", "invalid YAML"),
])
def test_bad_manifest(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        W.load_manifest(path)
    assert message in str(exc.value)


# ----------------------------------------------------------------------------------------------- resolution
@pytest.fixture()
def dirs(tmp_path: Path, monkeypatch) -> "tuple[Path, Path]":
    env_dir, repo_dir = tmp_path / "env", tmp_path / "repo_weights"
    env_dir.mkdir()
    repo_dir.mkdir()
    monkeypatch.setattr(W, "WEIGHTS_DIR", repo_dir)
    monkeypatch.setenv(W.ENV_WEIGHTS, str(env_dir))
    return env_dir, repo_dir


def test_resolve_explicit_file(dirs, tmp_path: Path) -> None:
    f = tmp_path / "mine.pt"
    f.write_bytes(b"x")
    assert W.resolve_weights(f) == f
    assert W.resolve_weights(str(f)) == f


@pytest.mark.parametrize("query", ["yolov5s", "yolov5s.pt"])
def test_resolve_order(dirs, query: str, monkeypatch) -> None:
    env_dir, repo_dir = dirs
    (repo_dir / "yolov5s.pt").write_bytes(b"repo")
    assert W.resolve_weights(query) == repo_dir / "yolov5s.pt"
    (env_dir / "yolov5s.pt").write_bytes(b"env")
    assert W.resolve_weights(query) == env_dir / "yolov5s.pt"  # $EDGE_DETECT_WEIGHTS wins
    monkeypatch.delenv(W.ENV_WEIGHTS)
    assert W.resolve_weights(query) == repo_dir / "yolov5s.pt"


@pytest.mark.parametrize("query, message", [
    ("yolov5m", "download them with: edge-detect weights fetch yolov5m"),
    ("yolov5m.pt", "download them with: edge-detect weights fetch yolov5m"),
    ("nothing.pt", "expected an existing file or a model name from the manifest"),
    ("/no/such/dir/best.pt", "expected an existing file or a model name from the manifest"),
])
def test_resolve_not_found(dirs, query: str, message: str) -> None:
    with pytest.raises(ModelError) as exc:
        W.resolve_weights(query)
    assert message in str(exc.value) and str(dirs[0]) in str(exc.value)


# ----------------------------------------------------------------------------------------------------- fetch
def _manifest(src: Path, sha) -> "dict[str, W.WeightsEntry]":
    return {"tiny": W.WeightsEntry(name="tiny", url=src.as_uri(), sha256=sha, size=src.stat().st_size)}


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    src = tmp_path / "remote" / "tiny.pt"
    src.parent.mkdir()
    src.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: more than one 1 MiB chunk
    return src


def test_fetch_verified(source: Path, tmp_path: Path) -> None:
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    out = W.fetch("tiny", tmp_path / "dest", progress=False, manifest=_manifest(source, sha))
    assert out == tmp_path / "dest" / "tiny.pt"
    assert out.read_bytes() == source.read_bytes()
    assert not (tmp_path / "dest" / "tiny.pt.part").exists()
    source.write_bytes(b"changed")  # already present and matching: no second download
    assert W.fetch("tiny", tmp_path / "dest", progress=False, manifest=_manifest(source, sha)).stat().st_size \
        == 1_280_000


def test_fetch_sha_mismatch(source: Path, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelError) as exc:
        W.fetch("tiny", tmp_path / "dest", progress=False, manifest=_manifest(source, wrong))
    actual = hashlib.sha256(source.read_bytes()).hexdigest()
    assert f"expected {wrong}, got {actual}" in str(exc.value)
    assert list((tmp_path / "dest").iterdir()) == []  # nothing kept


def test_fetch_mismatch_allowed_without_verify(source: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_detect.weights"):
        out = W.fetch("tiny", tmp_path / "d", verify=False, progress=False, manifest=_manifest(source, "0" * 64))
    assert out.is_file() and "verification skipped" in caplog.text


def test_fetch_unknown_hash_warns_with_computed(source: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_detect.weights"):
        out = W.fetch("tiny", tmp_path / "d", progress=False, manifest=_manifest(source, None))
    assert out.is_file()
    assert "NOT verified" in caplog.text and hashlib.sha256(source.read_bytes()).hexdigest() in caplog.text


def test_fetch_redownloads_corrupt_file(source: Path, tmp_path: Path) -> None:
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "tiny.pt").write_bytes(b"truncated")
    out = W.fetch("tiny", dest, progress=False, manifest=_manifest(source, sha))
    assert W.sha256_file(out) == sha


@pytest.mark.parametrize("name, message", [("tinny", "did you mean 'tiny'?"), ("zzz", "expected one of ['tiny']")])
def test_fetch_unknown_name(source: Path, tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ModelError, match="unknown weights") as exc:
        W.fetch(name, tmp_path, manifest=_manifest(source, None))
    assert message in str(exc.value)


def test_fetch_unreachable(tmp_path: Path) -> None:
    manifest = {"gone": W.WeightsEntry(name="gone", url=(tmp_path / "missing.pt").as_uri())}
    with pytest.raises(ModelError, match="cannot download file://"):
        W.fetch("gone", tmp_path / "d", progress=False, manifest=manifest)
    assert not (tmp_path / "d" / "gone.pt.part").exists()


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_list_and_path(dirs, capsys) -> None:
    from edge_detect.cli import main

    env_dir, _ = dirs
    (env_dir / "yolov5n.pt").write_bytes(b"x")
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "release", "params"]
    assert lines[1].split()[:3] == ["yolov5n", "v6.1", "1.87M"] and lines[1].endswith(str(env_dir / "yolov5n.pt"))
    assert "unverified" in lines[2] and lines[2].endswith("-")
    assert main(["weights", "path", "yolov5n"]) == 0
    assert capsys.readouterr().out.strip() == str(env_dir / "yolov5n.pt")
    assert main(["weights", "path", "yolov5x"]) == 2
    assert "edge-detect weights fetch yolov5x" in capsys.readouterr().err


def test_cli_fetch(source: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from edge_detect.cli import main

    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setattr(W, "load_manifest", lambda path=None: _manifest(source, sha))
    assert main(["-q", "weights", "fetch", "tiny", "--dir", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "tiny.pt")
    monkeypatch.setattr(W, "load_manifest", lambda path=None: _manifest(source, "f" * 64))
    assert main(["-q", "weights", "fetch", "tiny", "--dir", str(tmp_path / "o2")]) == 2
    assert "sha256 mismatch for tiny" in capsys.readouterr().err
