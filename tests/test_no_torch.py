"""The runtime imports and runs with torch absent: every module outside edge_detect/training/, a Detector on an
exported ONNX, and ``edge-detect --help``, in a subprocess where ``import torch`` raises ImportError."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, has_module, requires_ort

SCRIPT = textwrap.dedent(r'''
    import importlib, json, sys, traceback
    from pathlib import Path

    BLOCKED = ("torch", "torchvision")
    attempts = []

    class BlockTorch:
        """Meta-path finder that makes torch unimportable and records who tried."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                stack = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()
                         if "edge_detect" in f.filename]
                attempts.append({"module": name, "by": stack[-1] if stack else "?", "during": current[0]})
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by test_no_torch)", name=name)
            return None

    for mod in list(sys.modules):
        if mod.split(".")[0] in BLOCKED:
            del sys.modules[mod]
    sys.meta_path.insert(0, BlockTorch())
    current = ["<start>"]

    pkg = Path(sys.argv[1]) / "edge_detect"
    names = sorted(".".join(("edge_detect",) + p.relative_to(pkg).with_suffix("").parts).replace(".__init__", "")
                   for p in pkg.rglob("*.py")
                   if "training" not in p.relative_to(pkg).parts[:1] and p.name != "__main__.py")  # __main__ runs the CLI
    from edge_detect.errors import MissingDependencyError

    result = {"imported": [], "missing_optional": {}, "failed": {}, "attempts": attempts}
    for name in names:
        current[0] = name
        try:
            importlib.import_module(name)
            result["imported"].append(name)
        except MissingDependencyError as exc:
            result["missing_optional"][name] = str(exc)
        except Exception as exc:  # report any import failure, not only torch
            result["failed"][name] = f"{type(exc).__name__}: {exc}"

    current[0] = "<detector>"
    import cv2
    from edge_detect.detector import Detector
    with Detector(sys.argv[2], threads=1) as det:
        result["detections"] = len(det(cv2.imread(sys.argv[3])))

    current[0] = "<--help>"
    from edge_detect import cli
    try:
        cli.main(["--help"])
    except SystemExit as exc:
        result["help_exit"] = exc.code
    result["torch_loaded"] = any(m.split(".")[0] in BLOCKED for m in sys.modules)
    print("RESULT " + json.dumps(result))
''')


@pytest.fixture(scope="module")
def model(request, reference, onnx_builder, tmp_path_factory):
    """The exported yolov5n when torch can export it here, else a replay model of the reference output."""
    if has_module("torch"):
        return request.getfixturevalue("yolov5n_onnx"), 4
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    path = onnx_builder(tmp_path_factory.mktemp("nt") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=[str(i) for i in range(80)]).to_dict())
    return path, 4


@requires_ort
def test_runtime_works_without_torch(model, shared, tmp_path):
    path, expected = model
    script = tmp_path / "no_torch.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script), str(REPO), str(path), str(shared / "images" / "bus.jpg")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(line[0][len("RESULT "):])
    assert res["attempts"] == [], f"modules tried to import torch: {res['attempts']}"
    assert res["failed"] == {}, f"modules failed to import without torch: {res['failed']}"
    for core in ("edge_detect.preprocess", "edge_detect.postprocess", "edge_detect.detector",
                 "edge_detect.evaluate", "edge_detect.backends.onnxruntime", "edge_detect.cli.detect"):
        assert core in res["imported"]
    assert not any(n.startswith("edge_detect.training") for n in res["imported"])
    assert res["detections"] == expected
    assert res["help_exit"] == 0
    assert res["torch_loaded"] is False
