"""``run --device / --half / --tf32 / --device-path`` (issue 19): the flags reach the model config and are routed per
backend by edge_detect.devices (TensorRT gets the GPU index, OpenVINO its device name); bad combinations are one
line and exit 2."""
from __future__ import annotations

import pytest

from edge_detect.app_config import ModelConfig, _device_options
from edge_detect.cli import main


@pytest.mark.parametrize("model, expected", [
    (ModelConfig(path="m.pt", device="cuda:1", half=True), {"device": "cuda:1", "half": True}),
    (ModelConfig(path="m.pt", device="cuda", tf32=True, device_path=False),
     {"device": "cuda:0", "tf32": True, "device_path": False}),
    (ModelConfig(path="m.engine", device="cuda:1"), {"device": 1}),
    (ModelConfig(path="m.xml", device="GPU"), {"device": "GPU"}),
    (ModelConfig(path="m.onnx"), {}),
])
def test_model_config_device_options_are_routed_per_backend(model, expected):
    assert _device_options(model) == expected


@pytest.mark.parametrize("flags, message", [
    (["--half"], "--half: expected a CUDA device (--device cuda[:N])"),
    (["--device", "GPU"], "--device: expected cpu or cuda[:N] for the onnxruntime backend, got 'GPU'"),
    (["--device", "cuda:0", "--half"], "--half: expected a .pt model (torch backend), got onnxruntime"),
])
def test_bad_device_flags_are_one_line_exit_2(flags, message, tmp_path, shared, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the flags are checked first")
    rc = main(["--quiet", "run", "--model", str(model), "--source", str(shared / "videos" / "vtest.avi"), "--no-show", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
