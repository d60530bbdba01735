"""--device / --half / --tf32: the planner (edge_detect.devices) and the CLI routing of detect, val and bench."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_detect import cli
from edge_detect.cli import build_parser
from edge_detect.cli.bench import bench_backend_options
from edge_detect.cli.detect import backend_options
from edge_detect.devices import device_options, parse_device
from edge_detect.errors import ConfigError


@pytest.mark.parametrize("text, want", [
    ("cpu", ("cpu", 0)), ("CUDA", ("cuda", 0)), ("cuda:3", ("cuda", 3)), (" cuda:0 ", ("cuda", 0)),
    ("GPU", None), ("cpu:1", None), ("cuda:x", None), (None, None),
])
def test_parse_device(text, want) -> None:
    assert parse_device(text) == want


@pytest.mark.parametrize("backend, device, half, tf32, want", [
    ("torch", "cuda", True, False, {"device": "cuda:0", "half": True}),
    ("torch", "cuda:1", False, True, {"device": "cuda:1", "tf32": True}),
    ("torch", "CPU", False, False, {"device": "cpu"}),
    ("torch", None, False, False, {}),
    ("onnxruntime", "cuda:2", False, True, {"device": "cuda:2", "tf32": True}),
    ("tensorrt", "cuda:1", False, False, {"device": 1}),
    ("tensorrt", None, False, False, {}),
    ("openvino", "GPU.1", False, False, {"device": "GPU.1"}),
    ("openvino", "cpu", False, False, {"device": "cpu"}),
])
def test_device_options_per_backend(backend, device, half, tf32, want) -> None:
    assert device_options(backend, device, half, tf32) == want


@pytest.mark.parametrize("backend, device, half, tf32, message", [
    ("torch", None, True, False, "--half: expected a CUDA device (--device cuda[:N]), got the default device (cpu)"),
    ("torch", "cpu", False, True, "--tf32: expected a CUDA device (--device cuda[:N]), got cpu"),
    ("torch", "cuda", True, True, "--half --tf32: expected one of them (TF32 is an FP32 mode), got both"),
    ("torch", "GPU", False, False, "--device: expected cpu or cuda[:N] for the torch backend, got 'GPU'"),
    ("onnxruntime", "cuda", True, False, "--half: expected a .pt model (torch backend), got onnxruntime"),
    ("tensorrt", "cpu", False, False, "--device cpu: expected --device cuda[:N] alone for a TensorRT engine"),
    ("tensorrt", "cuda", False, True, "--tf32: expected --device cuda[:N] alone for a TensorRT engine"),
    ("openvino", "CPU", True, False, "--half: expected a .pt model on a CUDA device, got an OpenVINO model"),
    ("triton", "cuda", False, False, "--device: expected a torch, onnxruntime, tensorrt or openvino model, got the "
                                     "triton backend"),
])
def test_device_options_refuse_what_a_backend_cannot_take(backend, device, half, tf32, message) -> None:
    with pytest.raises(ConfigError) as info:
        device_options(backend, device, half, tf32)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("argv, want", [
    (["val", "--model", "m.pt", "--data", "d.yaml", "--device", "cuda:1", "--half"], {"device": "cuda:1", "half": True}),
    (["detect", "--model", "m.pt", "--source", "x", "--device", "cuda", "--tf32"], {"device": "cuda:0", "tf32": True}),
    (["detect", "--model", "m.onnx", "--source", "x", "--device", "cuda:0", "--threads", "2"],
     {"device": "cuda:0", "threads": 2}),
    (["val", "--model", "m.xml", "--data", "d.yaml", "--device", "GPU", "--precision", "fp16"],
     {"device": "GPU", "precision": "fp16"}),
    (["detect", "--model", "m.engine", "--source", "x", "--device", "cuda:1"], {"device": 1}),
])
def test_cli_routes_the_flags_to_the_models_backend(argv, want) -> None:
    assert backend_options(build_parser().parse_args(argv)) == want


@pytest.mark.parametrize("argv, want", [
    (["detect", "--model", "m.pt", "--source", "x", "--device", "cuda", "--half", "--no-device-path"],
     {"device": "cuda:0", "half": True, "device_path": False}),
    (["detect", "--model", "m.pt", "--source", "x", "--device-path"], {"device_path": True}),  # the CPU, for tests
    (["val", "--model", "m.onnx", "--data", "d.yaml", "--device", "cuda:1", "--device-path"],
     {"device": "cuda:1", "device_path": True}),
    (["detect", "--model", "m.engine", "--source", "x", "--device", "cuda:0", "--device-path"],
     {"device": 0, "device_path": True}),
    (["detect", "--model", "m.engine", "--source", "x", "--device-path"], {"device_path": True}),
])
def test_device_path_flag_reaches_the_backend(argv, want) -> None:
    assert backend_options(build_parser().parse_args(argv)) == want


@pytest.mark.parametrize("argv, message", [
    (["detect", "--model", "m.onnx", "--source", "x", "--device-path"],
     "--device-path: expected --device cuda[:N] for an ONNX model (ONNX Runtime's CUDA provider), got the default "
     "device (cpu)"),
    (["detect", "--model", "m.xml", "--source", "x", "--no-device-path"],
     "--no-device-path: expected a torch, onnxruntime or tensorrt model, got the openvino backend"),
])
def test_device_path_flag_refused_where_it_cannot_apply(argv, message) -> None:
    with pytest.raises(ConfigError) as info:
        backend_options(build_parser().parse_args(argv))
    assert str(info.value) == message


def test_bench_routes_the_flags_per_backend() -> None:
    args = build_parser().parse_args(["bench", "--model", "a.pt", "--device", "cuda:0", "--half", "--hint", "throughput"])
    assert bench_backend_options(args) == {"openvino": {"hint": "throughput"}, "torch": {"device": "cuda:0", "half": True},
                                           "onnxruntime": {"device": "cuda:0"}, "tensorrt": {"device": 0}}
    args = build_parser().parse_args(["bench", "--model", "a.xml", "--device", "NPU"])
    assert bench_backend_options(args) == {"openvino": {"device": "NPU"}, "torch": {}, "onnxruntime": {}}


def _one_line_error(argv, capsys) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edge-detect: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_errors_are_one_line_exit_2(weights_pt: Path, coco128_yaml: Path, tmp_path: Path, capsys,
                                        monkeypatch) -> None:
    pytest.importorskip("torch")
    import torch

    monkeypatch.chdir(tmp_path)
    img = tmp_path / "img.jpg"
    import cv2

    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    line = _one_line_error(["detect", "--model", str(weights_pt), "--source", str(img), "--half"], capsys)
    assert "--half: expected a CUDA device (--device cuda[:N])" in line
    line = _one_line_error(["val", "--model", str(weights_pt), "--data", str(coco128_yaml), "--device", "GPU"], capsys)
    assert "--device: expected cpu or cuda[:N] for the torch backend, got 'GPU'" in line
    line = _one_line_error(["bench", "--model", str(weights_pt), "--tf32"], capsys)
    assert "--tf32: expected a CUDA device" in line
    if not torch.cuda.is_available():  # the .pt reaches the torch backend, which says there is no CUDA
        line = _one_line_error(["val", "--model", str(weights_pt), "--data", str(coco128_yaml), "--device", "cuda:0"],
                               capsys)
        assert "device 'cuda:0' requested but CUDA is not available" in line
    assert not (tmp_path / "runs").exists()


def test_onnx_on_cuda_without_the_gpu_build_names_the_package(onnx_builder, tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    import cv2

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    monkeypatch.chdir(tmp_path)
    model = onnx_builder(tmp_path / "m.onnx", [np.zeros((1, 4, 85), np.float32)])
    cv2.imwrite(str(tmp_path / "img.jpg"), np.zeros((32, 32, 3), np.uint8))
    line = _one_line_error(["detect", "--model", str(model), "--source", str(tmp_path / "img.jpg"), "--device",
                            "cuda"], capsys)
    assert "no CUDA provider" in line and "pip install onnxruntime-gpu" in line
