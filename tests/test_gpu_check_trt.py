"""tools/gpu_check.py's TensorRT round-2 checks (issue 20) run end to end against the TensorRT / CUDA doubles.

On a GPU machine with TensorRT they run for real (``tools/gpu_check.sh``); here the doubles stand in, and the
engines the builder double makes compute their ONNX with ONNX Runtime, so each check's own logic (models,
thresholds, the refusal branches) is exercised before the day a TensorRT wheel is reachable.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")


@pytest.fixture
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_tool", REPO / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ctx(gpu_check, tmp_path: Path, shared: Path):
    return gpu_check.Context(shared, tmp_path)


def test_timing_cache_check(monkeypatch, gpu_check, ctx) -> None:
    from trt_doubles import install

    install(monkeypatch)
    res = gpu_check.check_trt_timing_cache_refusal(ctx)
    assert res["ok"] and res["replaced"] and res["rewritten_cache_reused"], res


def test_inms_candidates_check(monkeypatch, gpu_check, ctx) -> None:
    from trt_doubles import install

    install(monkeypatch)
    res = gpu_check.check_trt_inms_candidates(ctx)
    assert res["ok"] and res["top_k"]["tensorrt_num_dets"] == 3840, res
    assert res["no_top_k"]["onnxruntime_num_dets"] == 8000  # the double runs ONNX Runtime: no TensorRT drop here


@pytest.mark.parametrize("version, gpu, refused", [
    ("10.3.0", {}, False),
    ("8.5.2", {}, True),
    ("10.3.0", {"name": "Orin", "major": 8, "minor": 7, "integrated": True}, True),
])
def test_hardware_compat_check(monkeypatch, gpu_check, ctx, version, gpu, refused) -> None:
    from trt_doubles import install

    install(monkeypatch, version=version, devices=[gpu])
    res = gpu_check.check_trt_hardware_compat(ctx)
    assert res["ok"] and ("refused" in res) is refused, res


def test_fp16_nms_precision_check(monkeypatch, gpu_check, ctx, yolov5n_onnx: Path) -> None:
    from trt_doubles import install

    fakes = install(monkeypatch)
    monkeypatch.setattr(ctx, "onnx", yolov5n_onnx)
    res = gpu_check.check_trt_fp16_nms_precision(ctx)
    assert res["ok"] and res["num_dets"] == res["reference_num_dets"], res
    build = fakes.state.builds[-1]
    nms = next(layer for layer in build.network._d_layers if layer.type.name == "NMS")
    assert build.precisions[nms.name] == "FLOAT" and "FP16" in build.flags
