"""The device-resident path of the torch backend, on torch's CPU device (the same tensor code as on CUDA):
letterbox bit-exact with the host's, NMS equal to the host's, detections equal to the host path's, batches equal
to single frames, the ring and the graph fallback. The CUDA side (streams, pinned staging, graphs) is tested by the
``gpu``-marked tests at the end."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import requires_torch

pytestmark = requires_torch

torch = pytest.importorskip("torch")

from edge_detect.postprocess import non_max_suppression  # noqa: E402
from edge_detect.training import device_pipeline as dpm  # noqa: E402
from edge_detect.training.device_pipeline import (DevicePipeline, device_nms, resize_coefficients,  # noqa: E402
                                                  resize_like_cv2)


@pytest.fixture(scope="module")
def frames(shared: Path) -> list:
    """bus (portrait, downscaled), zidane (landscape, downscaled) and two vtest frames (upscaled)."""
    out = [cv2.imread(str(shared / "images" / n)) for n in ("bus.jpg", "zidane.jpg")]
    cap = cv2.VideoCapture(str(shared / "videos" / "vtest.avi"))
    for k in range(121):
        ok, frame = cap.read()
        assert ok
        if k in (0, 120):
            out.append(frame)
    cap.release()
    return out


@pytest.fixture(scope="module")
def detector(weights_pt: Path):
    from edge_detect.detector import Detector

    with Detector(weights_pt, threads=2) as det:  # the host path: cv2 letterbox, NumPy NMS
        yield det


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    coeffs = {k: torch.from_numpy(v) for k, v in resize_coefficients(img.shape[:2], (h, w)).items()}
    return resize_like_cv2(torch.from_numpy(img), coeffs).numpy().astype(np.uint8)


def test_resize_is_bit_exact_with_cv2_up_and_down(frames) -> None:
    rng = np.random.default_rng(0)
    cases = [(frames[0], 480, 640), (frames[1], 640, 360), (frames[2], 640, 480), (frames[2], 973, 727)]
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(2, 120, 2))
        cases.append((rng.integers(0, 256, (h, w, 3), dtype=np.uint8), *(int(v) for v in rng.integers(1, 260, 2))))
    for img, w, h in cases:
        want = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(_resize(img, w, h), want, err_msg=f"{img.shape[:2]} -> {(h, w)}")


def test_float_bilinear_would_differ_by_one_grey_level(frames) -> None:
    """Why the resize is integer: F.interpolate(bilinear, align_corners=False, antialias=False) is 1 level off
    on ~10% of the pixels against cv2.INTER_LINEAR, downscale and upscale alike."""
    import torch.nn.functional as F

    for img, (w, h) in ((frames[0], (480, 640)), (frames[2], (640, 480))):
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
        got = y.round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
        diff = np.abs(got - cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))
        assert diff.max() == 1 and 0.05 < (diff > 0).mean() < 0.2


def test_letterboxed_batch_equals_the_hosts(detector, frames) -> None:
    dp = DevicePipeline.from_detector(detector)
    for frame in frames:
        want, infos = detector.preprocess([frame])
        batch = dp.preprocess([frame])
        assert batch.tensor.dtype == torch.float32 and tuple(batch.tensor.shape) == want.shape == (1, 3, 640, 640)
        np.testing.assert_array_equal(batch.tensor.numpy(), want)
        assert batch.infos == infos
        batch.release()


def test_minimum_rectangle_letterbox_equals_the_hosts(detector, frames) -> None:
    from edge_detect.preprocess import preprocess

    dp = DevicePipeline(detector.backend, (320, 320), auto=True)
    # one 1280x720 frame -> 192x320; with a 480x360 frame the batch takes their common rectangle 256x320
    for group, hw in (([frames[1]], (192, 320)), (frames[1:3], (256, 320))):
        want, infos = preprocess(group, (320, 320), auto=True)
        batch = dp.preprocess(group)
        assert tuple(batch.tensor.shape) == want.shape == (len(group), 3, *hw)
        np.testing.assert_array_equal(batch.tensor.numpy(), want)
        assert batch.infos == infos
        batch.release()


@pytest.mark.parametrize("options", [
    dict(conf_thres=0.25, iou_thres=0.45, max_det=1000),
    dict(conf_thres=0.001, iou_thres=0.6, max_det=300),
    dict(conf_thres=0.1, iou_thres=0.45, max_det=5, agnostic=True),
    dict(conf_thres=0.05, iou_thres=0.5, max_det=100, multi_label=True, classes=[0, 5]),
    dict(conf_thres=0.01, iou_thres=0.45, max_det=50, max_nms=40),
])
def test_device_nms_equals_the_host_nms(reference: Path, options: dict) -> None:
    raw = np.concatenate([np.load(reference / f"infer_{n}.npz")["raw"] for n in ("bus", "zidane")])
    want = non_max_suppression(raw, **options)
    got = device_nms(torch.from_numpy(raw), **options)
    assert [len(g) for g in got] == [len(w) for w in want] and sum(map(len, want)) > 3
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)


def test_device_nms_anchor_free_head(reference: Path) -> None:
    raw = np.load(reference / "infer_bus.npz")["raw"]
    anchor_free = np.concatenate([raw[..., :4], raw[..., 5:] * raw[..., 4:5]], axis=2).transpose(0, 2, 1)
    want = non_max_suppression(np.ascontiguousarray(anchor_free), 0.25, 0.45, head="anchor_free")
    got = device_nms(torch.from_numpy(np.ascontiguousarray(anchor_free)), 0.25, 0.45, head="anchor_free")
    assert len(got[0]) == len(want[0]) == 4
    np.testing.assert_array_equal(got[0].numpy(), want[0])
    with pytest.raises(ValueError, match=r"expected shape \(B, N, 5\+nc\) for head 'yolov5', got \(1, 85\)"):
        device_nms(torch.zeros(1, 85))


def test_detections_equal_the_host_path_and_batch_4_equals_batch_1(detector, frames) -> None:
    dp = DevicePipeline.from_detector(detector)
    host = [detector(f) for f in frames]
    single = [dp([f])[0] for f in frames]
    batched = dp(frames)
    assert [len(d) for d in host] == [len(d) for d in single] == [len(d) for d in batched] == [4, 3, 7, 11]
    for h, s, b in zip(host, single, batched):
        np.testing.assert_allclose(s.xyxy, h.xyxy, atol=0.5)
        np.testing.assert_allclose(s.score, h.score, atol=1e-4)
        np.testing.assert_array_equal(s.class_id, h.class_id)
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=0.5)
        np.testing.assert_allclose(b.score, s.score, atol=1e-4)
        np.testing.assert_array_equal(b.class_id, s.class_id)
    assert dp.captured == []  # no graphs on the CPU: eager


def test_ring_batch_is_refilled_only_after_infer_or_release(detector, frames) -> None:
    dp = DevicePipeline(detector.backend, (64, 64), ring=2)
    small = [cv2.resize(frames[0], (48, 64))]
    first, second = dp.preprocess(small), dp.preprocess(small)
    assert first.tensor.data_ptr() != second.tensor.data_ptr()
    third: list = []
    worker = threading.Thread(target=lambda: third.append(dp.preprocess(small)), daemon=True)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and not third  # waits for the first batch's buffer
    first.release()
    worker.join(10)
    assert third and third[0].tensor.data_ptr() == first.tensor.data_ptr()
    with pytest.raises(Exception, match="already inferred or released"):
        dp.infer(first)
    assert len(dp.infer(second)) == 1 and len(dp.infer(third[0])) == 1


class _FakeGraphOps(dpm.HostOps):
    """CPU ops that claim graph support: capture either succeeds (a replay recomputes into a static output)
    or is refused like CUDA refuses one."""

    graphs = True

    def __init__(self, refuse: bool) -> None:
        super().__init__(torch, torch.device("cpu"))
        self.refuse, self.captures = refuse, 0

    def capture(self, fn, example):
        self.captures += 1
        if self.refuse:
            raise RuntimeError("operation not permitted when stream is capturing")
        static_in = example.clone()
        static_out = fn(static_in)
        return static_in, lambda: static_out.copy_(fn(static_in)), static_out


def test_graphs_are_cached_per_shape_and_refusal_falls_back_once(caplog) -> None:
    def forward(x):
        return x * 2

    ops = _FakeGraphOps(refuse=False)
    runner = dpm._GraphRunner(forward, ops, enabled=True)
    a, b = torch.ones(1, 3, 2, 2), torch.full((2, 3, 2, 2), 3.0)
    assert torch.equal(runner(a), a * 2) and torch.equal(runner(a + 1), (a + 1) * 2) and torch.equal(runner(b), b * 2)
    assert ops.captures == 2 and sorted(k[0] for k in runner.graphs) == [(1, 3, 2, 2), (2, 3, 2, 2)]
    refusing = _FakeGraphOps(refuse=True)
    runner = dpm._GraphRunner(forward, refusing, enabled=True)
    with caplog.at_level(logging.WARNING, logger="edge_detect.training.device_pipeline"):
        assert torch.equal(runner(a), a * 2) and torch.equal(runner(a), a * 2) and torch.equal(runner(b), b * 2)
    assert refusing.captures == 2 and runner.graphs == {} and len(runner.refused) == 2
    warnings = [r for r in caplog.records if "CUDA graph capture refused" in r.getMessage()]
    assert len(warnings) == 1 and "running eagerly" in warnings[0].getMessage()


def test_backend_factory_and_bad_input(detector, frames) -> None:
    from edge_detect.errors import DataError

    dp = detector.backend.device_pipeline(conf=0.5)
    assert dp.input_hw == (640, 640) and dp.nms["conf_thres"] == 0.5 and dp.ops.graphs is False
    with pytest.raises(DataError, match="expected at least one frame"):
        dp.preprocess([])
    with pytest.raises(DataError, match="expected dtype uint8"):
        dp.preprocess([frames[0].astype(np.float32)])


# ------------------------------------------------------------------------------------------------ GPU
def _cuda_detector(weights_pt: Path, **options):
    """The torch backend on CUDA with host batches (``det(frame)`` is the host path the device path must equal)."""
    from edge_detect.detector import Detector

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return Detector(weights_pt, device="cuda:0", device_path=False, **options)


@pytest.mark.gpu
def test_cuda_device_path_equals_the_host_path(weights_pt: Path, frames) -> None:
    """Pinned staging, async upload on a stream, graph replay: the CUDA host path's detections, batch 4 = batch 1."""
    with _cuda_detector(weights_pt) as det:
        dp = DevicePipeline.from_detector(det)
        host = [det(f) for f in frames]
        for f in frames:
            want, _ = det.preprocess([f])
            batch = dp.preprocess([f])
            torch.cuda.synchronize()
            np.testing.assert_array_equal(batch.tensor.cpu().numpy(), want)
            batch.release()
        single = [dp([f])[0] for f in frames]
        batched = dp(frames)
        assert len(dp.captured) == 2 and not dp.runner.refused  # (1, 3, 640, 640) and (4, 3, 640, 640)
        for h, s, b in zip(host, single, batched):
            assert len(h) == len(s) == len(b)
            np.testing.assert_allclose(s.xyxy, h.xyxy, atol=0.5)
            np.testing.assert_allclose(s.score, h.score, atol=1e-4)
            np.testing.assert_allclose(b.xyxy, s.xyxy, atol=0.5)
            np.testing.assert_allclose(b.score, s.score, atol=1e-4)


@pytest.mark.gpu
def test_cuda_device_path_fp16_keeps_the_detections(weights_pt: Path, frames) -> None:
    from edge_detect.bench.parity import match_detections

    with _cuda_detector(weights_pt, half=True) as det:
        dp = DevicePipeline.from_detector(det)
        host = [det(f) for f in frames]
        report = match_detections(host, dp(frames), iou=0.95, score_tol=0.01)
    assert report.fraction >= 0.99 and report.extra == 0, report.to_dict()
