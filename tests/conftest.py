"""Shared fixtures: the data in ``../shared`` (read in place, never copied) and models built once per session.

``EDGE_DETECT_DATA`` points at the shared folder (``.ci/run`` sets it); by default ``../shared`` beside the
repository. Tests that need a piece of it skip with the reason when it is missing; tests that need torch skip
when the ``build`` extra is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    env = os.environ.get("EDGE_DETECT_DATA")
    return Path(env).resolve() if env else (REPO.parent / "shared").resolve()


SHARED = _shared()


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set EDGE_DETECT_DATA to the shared folder)")
    return path


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


requires_torch = pytest.mark.skipif(not has_module("torch"), reason="torch not installed (pip install -e '.[build]')")
requires_ort = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="session")
def shared() -> Path:
    return need(SHARED)


@pytest.fixture(scope="session")
def weights_pt(shared: Path) -> Path:
    return need(shared / "weights" / "yolov5n.pt")


@pytest.fixture(scope="session")
def coco128(shared: Path) -> Path:
    return need(shared / "datasets" / "coco128")


@pytest.fixture(scope="session")
def coco128_yaml(coco128: Path, tmp_path_factory) -> Path:
    """A dataset yaml pointing at the shared coco128 in place (path made absolute)."""
    import yaml

    src = yaml.safe_load((coco128 / "coco128.yaml").read_text())
    src["path"] = str(coco128)
    out = tmp_path_factory.mktemp("data") / "coco128.yaml"
    out.write_text(yaml.safe_dump(src))
    return out


@pytest.fixture(scope="session")
def video(shared: Path) -> Path:
    return need(shared / "videos" / "vtest.avi")


@pytest.fixture(scope="session")
def reference(shared: Path) -> Path:
    return need(shared / "reference")


@pytest.fixture(scope="session")
def yolov5n_onnx(weights_pt: Path, tmp_path_factory) -> Path:
    """yolov5n exported once per session to a static 1x3x640x640 ONNX (fp32, raw output layout)."""
    if not has_module("torch"):
        pytest.skip("torch not installed: cannot export the ONNX model (pip install -e '.[build]')")
    from edge_detect.build.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "yolov5n.onnx"
    export_onnx(weights_pt, out, imgsz=(640, 640))
    return out


@pytest.fixture(scope="session")
def yolov5n_onnx_dynamic(weights_pt: Path, tmp_path_factory) -> Path:
    """yolov5n exported once per session with dynamic batch/height/width."""
    if not has_module("torch"):
        pytest.skip("torch not installed: cannot export the ONNX model (pip install -e '.[build]')")
    from edge_detect.build.export import export_onnx

    out = tmp_path_factory.mktemp("onnx_dyn") / "yolov5n-dynamic.onnx"
    export_onnx(weights_pt, out, imgsz=(640, 640), dynamic=True)
    return out
