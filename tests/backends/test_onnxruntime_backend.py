"""ONNX Runtime backend: metadata, input spec, providers, layout validation, loading errors, parity."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import requires_ort

pytestmark = requires_ort

from edge_detect.backends.base import load_backend  # noqa: E402
from edge_detect.errors import BackendUnavailableError, ModelError, ModelLoadError  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402

NAMES = [f"n{i}" for i in range(80)]


@pytest.fixture(scope="module")
def raw_bus(reference):
    return np.load(reference / "infer_bus.npz")["raw"]


@pytest.fixture(scope="module")
def replay(onnx_builder, raw_bus, tmp_path_factory):
    meta = ModelMetadata(names=NAMES, imgsz=(640, 640)).to_dict()
    return onnx_builder(tmp_path_factory.mktemp("ort") / "replay.onnx", [raw_bus], metadata=meta)


def test_loads_metadata_and_input_spec(replay, raw_bus):
    with load_backend(replay, threads=1) as b:
        assert b.name == "onnxruntime"
        assert b.metadata.names == tuple(NAMES) and b.metadata.output_layout == "raw"
        assert b.input_spec.shape == (1, 3, 640, 640) and b.input_spec.dtype == np.float32
        assert b.input_spec.format == "float32_nchw_rgb" and not b.input_spec.dynamic
        assert b.providers == ["CPUExecutionProvider"]
        out = b.infer(np.zeros((1, 3, 640, 640), np.float32))
        assert len(out) == 1
        np.testing.assert_array_equal(out[0], raw_bus)


def test_missing_metadata_is_inferred_with_warning(onnx_builder, tmp_path, caplog):
    pred = np.zeros((1, 10, 5 + 3), np.float32)
    path = onnx_builder(tmp_path / "plain.onnx", [pred], input_shape=("batch", 3, "h", "w"))
    with caplog.at_level(logging.WARNING, logger="edge_detect.backends.onnxruntime"):
        b = load_backend(path)
    assert b.metadata.names == ("class0", "class1", "class2") and b.metadata.nc == 3
    assert b.metadata.dynamic and b.metadata.output_layout == "raw"
    assert b.input_spec.shape == (-1, 3, -1, -1) and b.input_spec.dynamic
    assert "no edge_detect metadata" in caplog.text
    out = b.infer(np.zeros((3, 3, 64, 96), np.float32))[0]
    assert out.shape == (3, 10, 8)


def test_float16_and_uint8_inputs(onnx_builder, tmp_path):
    pred = np.zeros((1, 4, 85), np.float32)
    half = onnx_builder(tmp_path / "half.onnx", [pred], input_dtype="float16",
                        metadata=ModelMetadata(names=NAMES, precision="fp16").to_dict())
    b = load_backend(half)
    assert b.input_spec.dtype == np.float16
    assert b.infer(np.zeros((1, 3, 640, 640), np.float32))[0].shape == (1, 4, 85)  # cast on the way in
    u8 = onnx_builder(tmp_path / "u8.onnx", [pred], input_shape=(1, 640, 640, 3), input_dtype="uint8",
                      metadata=ModelMetadata(names=NAMES, input_format="uint8_nhwc_bgr").to_dict())
    b = load_backend(u8)
    assert b.input_spec.dtype == np.uint8 and b.input_spec.nhwc and b.input_spec.hw == (640, 640)


def test_nms_layout_accepted(onnx_builder, tmp_path):
    outs = [np.array([[2]], np.int32), np.zeros((1, 100, 4), np.float32), np.zeros((1, 100), np.float32),
            np.zeros((1, 100), np.int32)]
    meta = ModelMetadata(names=NAMES, output_layout="nms").to_dict()
    b = load_backend(onnx_builder(tmp_path / "nms.onnx", outs, metadata=meta))
    res = b.infer(np.zeros((1, 3, 640, 640), np.float32))
    assert [r.shape for r in res] == [(1, 1), (1, 100, 4), (1, 100), (1, 100)]


@pytest.mark.parametrize("outputs, layout, expected", [
    ([np.zeros((1, 10, 8), np.float32)], "raw", "expected one output (B, N, 85) for 80 classes"),
    ([np.zeros((1, 10, 85), np.float32)] * 2, "raw", "expected one output (B, N, 85)"),
    ([np.zeros((1, 10), np.float32)], "raw", "expected one output"),
    ([np.zeros((1, 10, 85), np.float32)], "nms", "expected four outputs"),
    ([np.zeros((1, 10, 85), np.float32)] * 3, None, "expected one output (B, N, 5+nc) or four NMS outputs"),
    ([np.zeros((1, 10, 4), np.float32)], None, "expected one output (B, N, 5+nc) or four NMS outputs"),
], ids=["wrong-nc", "two-outputs", "rank-2", "nms-but-raw", "three-no-meta", "too-few-channels"])
def test_unexpected_output_layout(onnx_builder, tmp_path, outputs, layout, expected):
    meta = None if layout is None else ModelMetadata(names=NAMES, output_layout=layout).to_dict()
    path = onnx_builder(tmp_path / "bad.onnx", outputs, metadata=meta)
    with pytest.raises(ModelLoadError) as err:
        load_backend(path)
    assert "unexpected output layout" in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("content, error, message", [
    (None, ModelError, "model file not found"),
    (b"this is not a model\n", ModelLoadError, "not a loadable ONNX model"),
    (b"", ModelLoadError, "not a loadable ONNX model"),
], ids=["missing", "text", "empty"])
def test_bad_model_files(tmp_path, content, error, message):
    path = tmp_path / "x.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        load_backend(path)


@pytest.mark.parametrize("providers, ok", [
    ("cpu", True), (["CPUExecutionProvider"], True), ("CPU", True),
    ("nope", False), (["cpu", "NoSuchExecutionProvider"], False),
])
def test_provider_selection(replay, providers, ok):
    if ok:
        assert load_backend(replay, providers=providers).providers == ["CPUExecutionProvider"]
    else:
        with pytest.raises(BackendUnavailableError, match="expected one of .*CPUExecutionProvider"):
            load_backend(replay, providers=providers)


def test_unavailable_gpu_provider_lists_available(replay):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider is available here")
    with pytest.raises(BackendUnavailableError, match="'cuda' is not available"):
        load_backend(replay, providers="cuda")


def test_cuda_device_without_the_gpu_build_names_the_package(replay):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(BackendUnavailableError) as info:
            load_backend(replay, device=device)
        msg = str(info.value)
        assert "\n" not in msg and "no CUDA provider" in msg and "pip install onnxruntime-gpu" in msg
        assert f"device '{device if ':' in device else 'cuda:0'}'" in msg


@pytest.mark.parametrize("options, match", [
    ({"device": "GPU"}, r"expected 'cpu' or 'cuda\[:N\]', got 'GPU' \(OpenVINO device names .* --backend openvino"),
    ({"device": "cpu:1"}, r"expected 'cpu' or 'cuda\[:N\]', got 'cpu:1'"),
    ({"device": "cpu", "providers": "cpu"}, r"expected either device or providers"),
    ({"device": "cpu", "tf32": True}, r"tf32: expected the CUDA provider"),
])
def test_device_option_errors(replay, options, match):
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_backend(replay, **options)


def test_device_cpu_and_io_binding(replay, raw_bus):
    with load_backend(replay, device="cpu", threads=1) as b:
        assert (b.providers, b.device, b.tf32) == (["CPUExecutionProvider"], "cpu", None)
        x = np.zeros((1, 3, 640, 640), np.float32)
        out = b.infer_bound(x.ctypes.data, x.shape, x.dtype, device="cpu")  # the binding path, on host memory
        assert len(out) == 1
        np.testing.assert_array_equal(out[0], raw_bus)
        with pytest.raises(ValueError, match=r"expected float32 \(1, 3, 640, 640\).*got float16"):
            b.infer_bound(x.ctypes.data, x.shape, np.float16, device="cpu")


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_graph_optimization_levels(replay, level, raw_bus):
    b = load_backend(replay, graph_optimization=level, threads=1)
    np.testing.assert_array_equal(b.infer(np.zeros((1, 3, 640, 640), np.float32))[0], raw_bus)


def test_bad_option_values(replay):
    with pytest.raises(BackendUnavailableError, match="graph_optimization"):
        load_backend(replay, graph_optimization="max")
    b = load_backend(replay)
    with pytest.raises(ValueError, match=r"expected shape \(1, 3, 640, 640\).*got \(1, 3, 320, 320\)"):
        b.infer(np.zeros((1, 3, 320, 320), np.float32))


@pytest.mark.parametrize("options, match", [
    ({"half": True}, r"backend 'onnxruntime': unknown option 'half'; expected one of "
                     r"\['providers', 'threads', 'graph_optimization', 'device', 'tf32', 'device_path'\]"),
    ({"rebuild_on_mismatch": True, "fuse": False}, r"unknown options 'fuse', 'rebuild_on_mismatch'"),
])
def test_unknown_backend_option_is_an_error(replay, options, match):
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_backend(replay, **options)


@pytest.mark.parametrize("cmd", ["run", "detect", "bench"])
def test_registry_names_are_the_cli_choices(cmd, capsys, monkeypatch):
    import re

    from edge_detect.backends import base
    from edge_detect.cli import build_parser

    monkeypatch.setitem(base.BACKEND_MODULES, "triton", ("edge_detect.backends.triton", ("triton",)))
    assert "triton" in base.backend_names() and base.backend_names() == sorted(base.BACKEND_MODULES)
    with pytest.raises(SystemExit):
        build_parser().parse_args([cmd, "--backend", "bogus"])
    choices = re.search(r"choose from (.*)\)", capsys.readouterr().err).group(1)
    assert re.findall(r"\w+", choices) == base.backend_names()


@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_exported_yolov5n_matches_reference(yolov5n_onnx, reference, name):
    d = np.load(reference / f"infer_{name}.npz")
    x = d["letterboxed_bgr"][None, ..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255
    with load_backend(yolov5n_onnx, threads=2) as b:
        assert b.metadata.nc == 80 and b.metadata.names[0] == "person"
        out = b.infer(np.ascontiguousarray(x))[0]
    assert out.shape == (1, 25200, 85)
    np.testing.assert_allclose(out[..., :4], d["raw"][..., :4], atol=0.01, rtol=0)   # px
    np.testing.assert_allclose(out[..., 4:], d["raw"][..., 4:], atol=5e-5, rtol=0)   # probabilities


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_cuda_device_with_strict_fp32_and_device_binding(yolov5n_onnx, reference):
    """device='cuda:0': the CUDA provider with TF32 off (raw boxes within 0.05 px of the CPU reference), and an input
    that is already on the GPU (a torch CUDA tensor) run through IO binding gives the same outputs."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    torch = pytest.importorskip("torch")
    ref = np.load(reference / "infer_bus.npz")
    x = np.ascontiguousarray(ref["letterboxed_bgr"][..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255
    with load_backend(yolov5n_onnx, device="cuda:0") as b:
        assert (b.device, b.tf32, b.providers[0]) == ("cuda:0", False, "CUDAExecutionProvider")
        (raw,) = b.infer(x)
        assert np.abs(raw[..., :4] - ref["raw"][..., :4]).max() <= 5e-2
        on_gpu = torch.from_numpy(x).cuda()
        (bound,) = b.infer_bound(on_gpu.data_ptr(), x.shape, x.dtype, device="cuda")
        np.testing.assert_allclose(bound, raw, atol=1e-4)
