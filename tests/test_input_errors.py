"""Bad models, configs and flags (issue 26 item 8): exit 2, exactly one line on stderr (library noise included, so
each case runs in its own process), no traceback, no input changed."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, requires_ort

pytestmark = requires_ort


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared, onnx_builder, reference):
    """A folder of hostile or mistyped inputs next to a working replay model and image."""
    import numpy as np

    from edge_detect.metadata import ModelMetadata

    d = tmp_path_factory.mktemp("bad_inputs")
    raw = np.load(reference / "infer_bus.npz")["raw"]
    onnx_builder(d / "good.onnx", [raw], metadata=ModelMetadata(names=[f"n{i}" for i in range(80)]).to_dict())
    (d / "bus.jpg").write_bytes((shared / "images" / "bus.jpg").read_bytes())
    (d / "garbage.xml").write_text("garbage <<< not an IR\n")
    (d / "other.xml").write_text('<?xml version="1.0"?>\n<svg width="1"/>\n')
    (d / "garbage.onnx").write_text("garbage\n")
    with zipfile.ZipFile(d / "ckpt.pt", "w") as z:  # what torch.save writes: a zip with <name>/data.pkl
        z.writestr("ckpt/data.pkl", b"\x80\x02}q\x00.")
    (d / "broken.yaml").write_text("model: good.onnx\nsources: [bus.jpg\n  tracker: x\n")
    (d / "typo.yaml").write_text("model: {path: good.onnx}\nsources: [bus.jpg]\n"
                                 "analytics: {tracker: {enabled: true, options: {min_hit: 3}}}\n")
    return d


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


CASES = [
    (["detect", "--model", "garbage.xml", "--source", "bus.jpg"],
     "garbage.xml: expected an OpenVINO IR (an XML file whose root element is <net>, its .bin beside it), got a "
     "file that is not XML"),
    (["detect", "--model", "other.xml", "--source", "bus.jpg"], "expected an OpenVINO IR (an XML file whose root "
                                                                 "element is <net>, its .bin beside it), got other XML"),
    (["detect", "--model", "garbage.onnx", "--backend", "openvino", "--source", "bus.jpg"],
     "garbage.onnx: expected an ONNX model, got a file protobuf cannot parse as one"),
    (["detect", "--model", "ckpt.pt", "--backend", "onnxruntime", "--source", "bus.jpg"],
     "ckpt.pt is a PyTorch checkpoint, not a model for the onnxruntime backend: run it with --backend torch "
     "(pip install 'edge-detect[build]'), or export it first: edge-detect export --weights ckpt.pt --format onnx"),
    (["val", "--model", "ckpt.pt", "--backend", "openvino", "--data", "typo.yaml"],
     "ckpt.pt is a PyTorch checkpoint, not a model for the openvino backend"),
    (["run", "--config", "broken.yaml", "--no-show"],
     "broken.yaml: invalid YAML at line 3, column 10: expected ',' or ']', but got ':' (while parsing a flow "
     "sequence)"),
    (["run", "--config", "typo.yaml", "--no-show", "--max-frames", "1"],
     "processor 'bytetrack': unknown option 'min_hit'; expected one of"),
    (["run", "--sorce", "bus.jpg"],
     "edge-detect run: error: unrecognized argument --sorce (did you mean --source?); see edge-detect run --help"),
    (["detect", "--modle", "good.onnx", "--source", "bus.jpg"],
     "the following arguments are required: --model (--modle: did you mean --model?)"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(inputs, argv, message):
    before = _digest(inputs)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "edge_detect", "--quiet", *argv], cwd=inputs, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and "Traceback" not in proc.stderr
    assert _digest(inputs) == before
    if "min_hit" in message:
        assert lines[0].endswith("(did you mean 'min_hits'?)")
