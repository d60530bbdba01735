"""A built wheel, installed into a fresh virtualenv, works from a folder outside the repository: configs and the
weights manifest ship inside the package, and ``weights list``, ``export``, ``val``, ``detect`` and ``run`` run.

How the environment is made (offline-safe, fast): the wheel is built with ``pip wheel --no-deps
--no-build-isolation`` from a copy of the source tree in a temporary folder (nothing is written into the
repository). The venv is created WITHOUT ``--system-site-packages``, so this interpreter's site folder and its
``.pth`` files -- among them the editable install of the repository -- are not processed; a ``.pth`` file in the
venv then appends that site folder as a plain path, which makes the heavy third-party dependencies (torch,
onnxruntime, OpenCV...) importable without downloading them. ``edge_detect`` itself can only come from the
installed wheel, which the test checks (``edge_detect.__file__`` and the resource folder lie in the venv).

The README's quick start (issue 26) runs in a second venv made like the first from the same wheel, but its
``.pth`` adds only the distributions that ``pip install "edge-detect[runtime]"`` installs: a folder of links to
the files of each distribution in the closure of the wheel's own requirements with the ``runtime`` extra (read
from its METADATA and the installed distributions' own requirements). torch is not importable there, which the
test checks.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, has_module, requires_ort, requires_torch

pytestmark = [pytest.mark.slow, requires_torch, requires_ort,
              pytest.mark.skipif(not has_module("setuptools"),
                                 reason="building the wheel offline needs setuptools installed")]

SOURCE = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "edge_detect", "configs",
          "weights/manifest.yaml", "weights/README.md")


def _run(argv, cwd: Path, env, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> "tuple[Path, dict]":
    """(the wheel built from a copy of the source tree, an offline environment for pip and the venvs)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for rel in SOURCE:
        a, b = REPO / rel, src / rel
        b.parent.mkdir(parents=True, exist_ok=True)
        if a.is_dir():
            shutil.copytree(a, b, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_resources"))
        else:
            shutil.copy2(a, b)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # never reach for the network
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
          "-w", root / "dist"], root, env)
    (built,) = (root / "dist").glob("edge_detect-*.whl")
    return built, env


def _make_venv(built: Path, folder: Path, deps: "list[str]", env: dict) -> Path:
    """A venv in ``folder`` with ``built`` installed (no dependencies) and ``deps`` (folders) on its path through a
    ``.pth`` file; returns its bin folder."""
    _run([sys.executable, "-m", "venv", folder], folder.parent, env)
    bindir = folder / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], folder.parent,
                        env).stdout.strip())
    (purelib / "_system_deps.pth").write_text("\n".join(deps) + "\n")
    _run([py, "-m", "pip", "install", "--no-deps", "-q", built], folder.parent, env)
    return bindir


def _site_folders() -> "list[str]":
    return [p for p in dict.fromkeys(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]) if Path(p).is_dir()]


@pytest.fixture(scope="module")
def venv(wheel) -> "tuple[Path, dict]":
    """(bin folder of a venv with the built wheel installed, environment for running it)."""
    built, env = wheel
    # third-party dependencies from this interpreter, as a plain path (its .pth files are not processed)
    return _make_venv(built, built.parent.parent / "venv", _site_folders(), env), env


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A working folder outside the repository."""
    return tmp_path_factory.mktemp("user")


def test_package_comes_from_the_wheel(venv, outside: Path) -> None:
    bindir, env = venv
    code = ("import edge_detect, json; from edge_detect.paths import resource_path; "
            "from edge_detect.weights import MANIFEST_PATH; "
            "print(json.dumps([edge_detect.__file__, str(resource_path('configs', 'models', 'yolov5n.yaml')), "
            "str(resource_path('configs', 'hyp')), str(MANIFEST_PATH)]))")
    paths = json.loads(_run([bindir / "python", "-c", code], outside, env).stdout)
    venv_dir = bindir.parent.resolve()
    for p in paths:
        assert Path(p).resolve().is_relative_to(venv_dir), p
        assert not Path(p).resolve().is_relative_to(REPO), p
        assert Path(p).exists()


def test_weights_list(venv, outside: Path) -> None:
    bindir, env = venv
    out = _run([bindir / "edge-detect", "weights", "list"], outside, env).stdout
    for name in ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"):
        assert name in out


def test_export_val_detect_run(venv, outside: Path, weights_pt: Path, coco128: Path, shared: Path) -> None:
    import yaml

    bindir, env = venv
    cli = bindir / "edge-detect"
    env = {**env, "EDGE_DETECT_WEIGHTS": str(weights_pt.parent)}
    model = outside / "yolov5n-160.onnx"
    out = _run([cli, "-q", "export", "--weights", "yolov5n", "--imgsz", "160", "--output", model.name], outside,
               env).stdout
    assert out.strip() == model.name and model.is_file()  # the path as given, relative to the working folder

    images = sorted((coco128 / "images" / "val2017").glob("*.jpg"))[:4]
    (outside / "val.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = yaml.safe_load((coco128 / "coco128.yaml").read_text())["names"]
    (outside / "tiny.yaml").write_text(yaml.safe_dump({"path": str(coco128), "train": "images/train2017",
                                                       "val": str(outside / "val.txt"), "names": names}))
    val = _run([cli, "val", "--model", model.name, "--data", "tiny.yaml", "--imgsz", "160", "--no-progress"],
               outside, env).stdout
    first = val.splitlines()[0].split()
    assert first[0] == "mAP50-95" and first[2] == "mAP50" and 0.0 <= float(first[1]) <= float(first[3]) <= 1.0
    assert "4 images" in val

    _run([cli, "-q", "detect", "--model", model.name, "--source", shared / "images" / "bus.jpg",
          "--output", "det"], outside, env)
    assert (outside / "det" / "bus.jpg").is_file() and (outside / "det" / "labels" / "bus.txt").is_file()

    _run([cli, "-q", "run", "--model", model.name, "--source", shared / "videos" / "vtest.avi", "--max-frames", "8",
          "--save-jsonl", "r.jsonl", "--summary-json", "s.json", "--no-show", "--no-progress"], outside, env)
    summary = json.loads((outside / "s.json").read_text())
    assert summary["processed"] == 8
    assert len((outside / "r.jsonl").read_text().splitlines()) == 8


# ------------------------------------------------------------------------------------ the README's quick start
def _requirements(built: Path, extra: str) -> "list[str]":
    """The wheel's requirements for ``pip install "edge-detect[extra]"`` (its METADATA's Requires-Dist)."""
    import zipfile
    from email.parser import HeaderParser

    with zipfile.ZipFile(built) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        reqs = HeaderParser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []
    return reqs


def _closure(requirements: "list[str]", extra: str) -> "dict[str, object]":
    """The installed distributions that ``requirements`` (with ``extra``) need, recursively (name -> importlib
    Distribution)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: "dict[str, object]" = {}
    todo = [(Requirement(r), extra) for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = found[name] = distribution(req.name)
        except PackageNotFoundError:
            pytest.skip(f"{req.name} (needed by the runtime install) is not installed here")
        for sub in dist.requires or []:
            todo += [(Requirement(sub), e) for e in ("", *req.extras)]
    return found


def _borrowed_site(dists: "dict[str, object]", folder: Path) -> Path:
    """A folder of links to the top-level files and folders of ``dists`` (their modules and dist-info)."""
    folder.mkdir()
    for dist in dists.values():
        for f in dist.files or []:
            top = Path(str(f)).parts[0]
            target = Path(dist.locate_file(top))
            if top not in ("..", "__pycache__") and target.exists() and not (folder / top).exists():
                (folder / top).symlink_to(target)
    return folder


@pytest.fixture(scope="module")
def runtime_venv(wheel) -> "tuple[Path, dict]":
    """A venv with the wheel and only what ``pip install "edge-detect[runtime]"`` installs (no torch)."""
    built, env = wheel
    dists = _closure(_requirements(built, "runtime"), "runtime")
    assert "torch" not in dists and {"onnxruntime", "onnx", "av", "opencv-python-headless"} <= set(dists)
    deps = _borrowed_site(dists, built.parent.parent / "runtime-deps")
    return _make_venv(built, built.parent.parent / "runtime-venv", [str(deps)], env), env


def test_readme_quick_start_runs_with_the_runtime_install(runtime_venv, shared: Path, weights_pt: Path,
                                                          tmp_path: Path) -> None:
    """The README's quick start command, verbatim, in a fresh venv from the wheel with the runtime-only install
    and no display: the default model is exported without PyTorch and the main job leaves a playable mp4 and a
    JSONL of every frame of vtest.avi in runs/run/1/."""
    import shlex

    from conftest import count_frames

    bindir, env = runtime_venv
    env = {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "EDGE_DETECT_WEIGHTS")}
    env["EDGE_DETECT_CACHE"] = str(tmp_path / "cache")  # nothing exported yet
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    probe = "import importlib.util as u; print([m for m in ('torch', 'onnxruntime', 'onnx', 'av', 'cv2') if u.find_spec(m)])"
    assert _run([bindir / "python", "-c", probe], tmp_path, env).stdout.strip() == \
        "['onnxruntime', 'onnx', 'av', 'cv2']"  # no torch
    readme = (REPO / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):]
    line = next(ln for ln in quick.splitlines() if ln.startswith("edge-detect run --source "))
    assert line == "edge-detect run --source ../shared/videos/vtest.avi"
    clone = tmp_path / "clone"  # a clone with the shared folder beside it, as the README says
    clone.mkdir()
    (tmp_path / "shared").symlink_to(shared)
    out = _run(shlex.split(line), clone, env, timeout=600).stdout
    run_dir = clone / "runs" / "run" / "1"
    assert out.strip() == "results saved to runs/run/1: out.jsonl, out.mp4, summary.json"
    assert len((run_dir / "out.jsonl").read_text().splitlines()) == 795
    assert count_frames(run_dir / "out.mp4") == 795  # playable: every frame decodes with OpenCV
    assert json.loads((run_dir / "summary.json").read_text())["processed"] == 795
