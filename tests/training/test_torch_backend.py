"""Torch backend: registry, input spec, metadata and parity with the official outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import requires_torch

pytestmark = requires_torch

from edge_detect.backends import load_backend  # noqa: E402
from edge_detect.errors import BackendUnavailableError, DataError  # noqa: E402

SHA = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"


@pytest.fixture(scope="module")
def backend(weights_pt: Path):
    with load_backend(weights_pt, threads=2) as b:  # chosen by the .pt suffix
        yield b


def test_protocol(backend) -> None:
    from edge_detect.backends.base import Backend

    assert isinstance(backend, Backend) and backend.name == "torch"
    spec = backend.input_spec
    assert (spec.name, spec.shape, spec.dtype, spec.format) == ("images", (-1, 3, -1, -1), np.float32,
                                                                "float32_nchw_rgb")
    assert spec.dynamic and spec.hw == (-1, -1)


def test_metadata(backend, weights_pt: Path) -> None:
    meta = backend.metadata
    assert meta.nc == 80 and meta.names[0] == "person" and meta.stride == 32
    assert (meta.output_layout, meta.precision, meta.dynamic) == ("raw", "fp32", True)
    assert meta.source_sha256 == SHA and Path(meta.source_path) == weights_pt.resolve()


@pytest.mark.parametrize("image", ["bus", "zidane"])
def test_parity(backend, reference: Path, image: str) -> None:
    ref = np.load(reference / f"infer_{image}.npz")
    x = (np.ascontiguousarray(ref["letterboxed_bgr"][..., ::-1].transpose(2, 0, 1))[None] / 255.0)
    outputs = backend.infer(x.astype(np.float32))
    assert len(outputs) == 1 and outputs[0].dtype == np.float32 and outputs[0].shape == (1, 25200, 85)
    pred, raw = outputs[0], ref["raw"]
    assert np.abs(pred[..., :4] - raw[..., :4]).max() <= 1e-2
    assert np.abs(pred[..., 4:] - raw[..., 4:]).max() <= 1e-3


def test_dynamic_batch_and_size(backend) -> None:
    out = backend.infer(np.zeros((3, 3, 128, 96), np.float32))
    assert out[0].shape == (3, 3 * (16 * 12 + 8 * 6 + 4 * 3), 85) == (3, 756, 85)


@pytest.mark.parametrize("shape, message", [
    ((3, 64, 64), "expected an ndarray (B, 3, H, W), got (3, 64, 64)"),
    ((1, 4, 64, 64), "expected an ndarray (B, 3, H, W), got (1, 4, 64, 64)"),
    ((1, 3, 64, 100), "expected H and W multiples of 32, got 64x100"),
])
def test_bad_input(backend, shape, message: str) -> None:
    with pytest.raises(DataError) as exc:
        backend.infer(np.zeros(shape, np.float32))
    assert message in str(exc.value)


@pytest.mark.parametrize("options, message", [
    ({"device": "cuda:0"}, "CUDA is not available"),
    ({"device": "banana"}, "invalid device 'banana'"),
    ({"half": True}, "half precision needs a CUDA device"),
])
def test_unavailable_device(weights_pt: Path, options, message: str) -> None:
    import torch

    if torch.cuda.is_available() and options.get("device") == "cuda:0":
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendUnavailableError) as exc:
        load_backend(weights_pt, backend="torch", **options)
    assert message in str(exc.value)


def test_unsafe_checkpoint_refused(tmp_path: Path) -> None:
    import os

    import torch

    from edge_detect.errors import UnsafeCheckpointError

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_backend(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_tf32_is_a_cuda_fp32_option(weights_pt: Path, backend) -> None:
    assert backend.tf32 is False and backend.numerics == "fp32"
    with pytest.raises(BackendUnavailableError, match="tf32 needs a CUDA device, got 'cpu'"):
        load_backend(weights_pt, tf32=True)


# ------------------------------------------------------------------------------------------------ GPU
# Judged by detections, not raw float32 (issue 19): CUDA FP32 must find the CPU's boxes (>= 99% matched at
# IoU >= 0.95 with scores within 0.01, no extra box) on the coco128 val images; FP16 by mAP within 0.3 pt.
def _cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def _val_images(coco128: Path) -> list:
    files = sorted((coco128 / "images" / "val2017").glob("*.jpg"))
    assert len(files) == 128
    return files


def _detections(backend, files, device_path: bool = False) -> list:
    import cv2

    from edge_detect.detector import Detector

    det = Detector(backend, conf=0.25, iou=0.45, max_det=1000, auto=False)
    assert det.device_path is device_path
    return [det(cv2.imread(str(f))) for f in files]


@pytest.mark.gpu
def test_cuda_fp32_raw_output_has_tf32_off(weights_pt: Path, reference: Path) -> None:
    """TF32 off by default: raw boxes within 0.05 px of the CPU reference (with cuDNN's TF32: 1.88 px)."""
    import torch

    _cuda()
    ref = np.load(reference / "infer_bus.npz")
    x = (np.ascontiguousarray(ref["letterboxed_bgr"][..., ::-1].transpose(2, 0, 1))[None] / 255.0)
    with load_backend(weights_pt, device="cuda:0") as b:
        assert (b.tf32, b.numerics, b.metadata.precision) == (False, "fp32", "fp32")
        pred = b.infer(x.astype(np.float32))[0]
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert pred.dtype == np.float32 and pred.shape == (1, 25200, 85)
    assert np.abs(pred[..., :4] - ref["raw"][..., :4]).max() <= 5e-2
    assert np.abs(pred[..., 4:] - ref["raw"][..., 4:]).max() <= 2e-3
    with load_backend(weights_pt, device="cuda:0", tf32=True) as b:
        assert (b.tf32, b.numerics) == (True, "fp32+tf32") and torch.backends.cudnn.allow_tf32 is True


@pytest.mark.gpu
@pytest.mark.parametrize("device_path", [True, False], ids=["device_path", "host_path"])
def test_cuda_fp32_detections_match_the_cpu(weights_pt: Path, coco128: Path, device_path: bool) -> None:
    """CUDA FP32 on the device path (the default on CUDA: letterbox, graphs and NMS on the GPU) and on the host path
    finds the CPU's boxes on the coco128 val images."""
    from edge_detect.bench.parity import match_detections

    _cuda()
    files = _val_images(coco128)
    with load_backend(weights_pt, threads=4) as cpu:
        want = _detections(cpu, files)
    with load_backend(weights_pt, device="cuda:0", device_path=device_path) as gpu:
        got = _detections(gpu, files, device_path)
    report = match_detections(want, got, iou=0.95, score_tol=0.01)
    assert report.reference > 500, report.to_dict()
    assert report.fraction >= 0.99 and report.extra == 0, report.to_dict()


@pytest.mark.gpu
def test_cuda_fp16_map_within_0_3_points_of_fp32(weights_pt: Path, coco128_yaml: Path) -> None:
    from edge_detect.evaluate import evaluate

    _cuda()
    maps = {}
    for half in (False, True):  # the device path (NMS at evaluation's conf 0.001 on the GPU)
        with load_backend(weights_pt, device="cuda:0", half=half) as b:
            assert b.input_spec.device == "cuda:0"
            maps[half] = evaluate(b, coco128_yaml, imgsz=640, progress=False)["map50_95"]
    assert maps[False] == pytest.approx(0.334, abs=0.005), maps  # the official figure (shared/README.md)
    assert abs(maps[True] - maps[False]) <= 0.003, maps
