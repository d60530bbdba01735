"""tools/jetson/setup.sh keeps JetPack's NumPy 1.x (issue 20 finding 2) and checks ``import cv2, tensorrt``.

JetPack's OpenCV is built against NumPy 1.x; NumPy 2 breaks it ("_ARRAY_API not found"). The script's NumPy
decision and import check live in ``tools/jetson/jetson_env.py``, run here against fake ``numpy`` / ``cv2`` /
``tensorrt`` packages that behave like JetPack's (OpenCV failing on NumPy 2).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SETUP = REPO / "tools" / "jetson" / "setup.sh"
TOOL = REPO / "tools" / "jetson" / "jetson_env.py"

FAKE_CV2 = '''__version__ = "4.8.0"


def imencode(ext, image):
    import numpy
    if not numpy.__version__.startswith("1."):  # JetPack's OpenCV, built against NumPy 1.x
        raise AttributeError("_ARRAY_API not found")
    return True, b"png"
'''


def _fakes(root: Path, numpy_version: str, cv2: bool = True) -> Path:
    for name, text in (("numpy", f'__version__ = "{numpy_version}"\nuint8 = "uint8"\n\n\n'
                                 'def zeros(shape, dtype=None):\n    return [[0] * shape[1]] * shape[0]\n'),
                       ("cv2", FAKE_CV2 if cv2 else None), ("tensorrt", '__version__ = "10.3.0.30"\n')):
        if text is not None:
            (root / name).mkdir(parents=True)
            (root / name / "__init__.py").write_text(text)
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("version, install", [("1.21.5", "numpy>=1.23,<2"), ("1.26.4", ""), ("2.1.0", "numpy>=1.23,<2")])
def test_numpy_is_kept_when_it_fits_else_pinned_below_2(tmp_path: Path, version: str, install: str) -> None:
    proc = _run(_fakes(tmp_path, version), "numpy-requirement")
    assert proc.returncode == 0 and proc.stdout.strip() == install


@pytest.mark.parametrize("version, ok", [("1.26.4", True), ("2.0.0", False)])
def test_check_imports_cv2_and_tensorrt_with_the_venv_numpy(tmp_path: Path, version: str, ok: bool) -> None:
    proc = _run(_fakes(tmp_path, version), "check")
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    if ok:
        assert "numpy 1.26.4, OpenCV 4.8.0, TensorRT 10.3.0.30" in proc.stdout
    else:
        assert "[fail] NumPy 2.0.0: JetPack's OpenCV is built against NumPy 1.x" in proc.stdout


def test_check_names_a_missing_opencv(tmp_path: Path) -> None:
    proc = _run(_fakes(tmp_path, "1.26.4", cv2=False), "check")
    assert proc.returncode == 1 and "cv2 not importable" in proc.stdout and "python3-opencv" in proc.stdout


def test_setup_never_lets_pip_install_numpy_2() -> None:
    """Finding 2: every pip install runs under the numpy<2 constraint, NumPy itself only as 'numpy>=1.23,<2'
    (before: pip install "numpy>=1.23" pulled NumPy 2 over JetPack's OpenCV), and the import check runs after."""
    text = SETUP.read_text()
    pip_lines = [ln for ln in text.splitlines() if re.search(r"python3? -m pip install", ln)]
    assert pip_lines and not [ln for ln in pip_lines if re.search(r"numpy[><=]", ln) and "<2" not in ln]
    assert text.index('export PIP_CONSTRAINT="$VENV/numpy-constraint.txt"') < text.index(pip_lines[0])
    assert 'echo "numpy<2" > "$VENV/numpy-constraint.txt"' in text
    assert text.index("jetson_env.py\" numpy-requirement") < text.index("jetson_env.py\" check")
    subprocess.run(["bash", "-n", str(SETUP)], check=True)
