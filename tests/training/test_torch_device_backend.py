"""The torch backend's device path behind the backend seam (DeviceBackend), through the real stream Pipeline, on
torch's CPU device (``device_path=True`` runs the same tensor code as CUDA): detections equal the host path's, batch
4 over 4 sources equals each source's batch-1 run, a stalled source does not hold the batch, the sinks get the host
frame, and a batch the pipeline drops never blocks the ring. Models run at 320 with one thread (fast on busy cores).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import requires_torch
from edge_detect.types import Detections, Frame, Sink

pytestmark = requires_torch

torch = pytest.importorskip("torch")

from edge_detect.backends.base import DeviceBackend, DeviceBatch  # noqa: E402
from edge_detect.detector import Detector  # noqa: E402
from edge_detect.errors import ConfigError  # noqa: E402
from edge_detect.stream.pipeline import Pipeline  # noqa: E402
from edge_detect.stream.sources import open_source  # noqa: E402

CLIPS = {"a": (0, 5), "b": (300, 4), "c": (600, 3), "d": (450, 6)}  # start frame, length: partial last batches


@pytest.fixture(scope="module")
def host320(weights_pt: Path):
    with Detector(weights_pt, imgsz=320, threads=1) as det:
        yield det


@pytest.fixture(scope="module")
def device320(weights_pt: Path):
    with Detector(weights_pt, imgsz=320, threads=1, device="cpu", device_path=True) as det:
        yield det


@pytest.fixture(scope="module")
def clips(video: Path, tmp_path_factory):
    """Four image folders cut from different parts of vtest (lossless: every run sees the same pixels)."""
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(max(s + n for s, n in CLIPS.values()))]
    cap.release()
    out, paths = tmp_path_factory.mktemp("device_clips"), {}
    for name, (start, n) in CLIPS.items():
        (out / name).mkdir()
        for i in range(n):
            cv2.imwrite(str(out / name / f"{i:03d}.png"), frames[start + i])
        paths[name] = out / name
    return paths


class ListSink(Sink):
    name = "list"

    def __init__(self) -> None:
        self.results = []

    def write(self, result):
        self.results.append(result)


def _run(detector, sources, **kwargs):
    sink = ListSink()
    summary = Pipeline(sources, detector, [sink], progress=False, **kwargs).run()
    return {(r.frame.source_id, r.frame.index): r for r in sink.results}, summary


def _assert_equal(want: Detections, got: Detections, key) -> None:
    assert len(got) == len(want), key
    np.testing.assert_array_equal(got.class_id, want.class_id, err_msg=str(key))
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=0.5, err_msg=str(key))
    np.testing.assert_allclose(got.score, want.score, atol=1e-4, err_msg=str(key))


def test_backend_takes_the_device_path_only_when_asked(host320, device320) -> None:
    assert isinstance(device320.backend, DeviceBackend) and device320.device_path
    assert device320.input_device == "cpu:0" and device320.buffer_hw((360, 480)) is None
    assert not host320.device_path and host320.input_device == "cpu"  # the CPU default: host batches
    with pytest.raises(ConfigError, match="the device path is off"):
        host320.backend.preprocess_device([np.zeros((8, 8, 3), np.uint8)], (64, 64), 32, False)
    with pytest.raises(ConfigError, match="expected the model stride 32, got 16"):
        device320.backend.preprocess_device([np.zeros((8, 8, 3), np.uint8)], (64, 64), 16, False)


def test_pipeline_device_path_equals_host_path_on_vtest(host320, device320, video: Path) -> None:
    want, _ = _run(host320, [open_source(video, source_id="v")], max_frames=30)
    got, summary = _run(device320, [open_source(video, source_id="v")], max_frames=30)
    assert summary.processed == 30 and sorted(got) == sorted(want) == [("v", i) for i in range(30)]
    assert sum(len(r.detections) for r in want.values()) > 60  # pedestrians in every frame
    for key, r in want.items():
        _assert_equal(r.detections, got[key].detections, key)
        frame = got[key].frame  # the sinks get the decoded host frame, untouched
        assert isinstance(frame.image, np.ndarray) and frame.image.shape == (360, 480, 3)
        np.testing.assert_array_equal(frame.image, r.frame.image)


def test_pipeline_device_path_equals_host_path_on_bus_and_zidane(weights_pt: Path, shared: Path) -> None:
    images = shared / "images"
    with Detector(weights_pt, threads=1) as host, Detector(weights_pt, threads=1, device_path=True) as dev:
        want, _ = _run(host, [open_source(images, source_id="im")], batch=2)
        got, _ = _run(dev, [open_source(images, source_id="im")], batch=2)
    assert [len(want[("im", i)].detections) for i in range(2)] == [4, 3]  # bus, zidane at 640
    for key, r in want.items():
        _assert_equal(r.detections, got[key].detections, key)
        assert got[key].frame.device_image is None and got[key].frame.image.dtype == np.uint8


def test_batch_4_over_4_sources_equals_each_sources_batch_1(device320, clips) -> None:
    def sources():
        return [open_source(p, source_id=name) for name, p in clips.items()]

    one, s1 = _run(device320, sources(), batch=1)
    four, s4 = _run(device320, sources(), batch=4)
    n = sum(length for _, length in CLIPS.values())
    assert s1.processed == s4.processed == n and s4.batch["size"] == 4
    assert s1.batch["calls"] == n and s4.batch["calls"] < n  # frames really went through the model together
    assert sorted(one) == sorted(four) == sorted((s, i) for s, (_, k) in CLIPS.items() for i in range(k))
    for key in one:
        assert len(one[key].detections) > 0, key
        _assert_equal(one[key].detections, four[key].detections, key)
    for sid, (_, k) in CLIPS.items():  # each source's frames in order
        assert [i for s, i in four if s == sid] == list(range(k))


def test_stalled_source_does_not_hold_a_device_batch(device320, video: Path) -> None:
    """A camera that stops sending after it was opened, next to a paced file, batch 2: the run reaches max_frames on
    the file's frames alone (a held batch would only end at the 60 s guard)."""
    from edge_detect.sinks import MjpegPreviewSink

    cam = MjpegPreviewSink(port=0)
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            cam.publish(np.full((120, 160, 3), 50, np.uint8), "cam", force=True)
            time.sleep(0.04)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        sources = [open_source(video, source_id="file", realtime=True),
                   open_source(f"http://127.0.0.1:{cam.port}/", source_id="stalled", read_timeout_s=30)]
        stop.set()  # from now on the camera sends nothing
        feeder.join(5)
        results, s = _run(device320, sources, batch=2, max_frames=12, duration=60)
    finally:
        stop.set()
        cam.close()
    file_frames = sorted(i for sid, i in results if sid == "file")
    assert s.stopped_by == "max_frames" and len(file_frames) >= 12 - 5, s.to_dict()
    assert file_frames == list(range(len(file_frames)))
    assert s.sources["stalled"]["processed"] <= 5  # at most what was buffered before it stalled
    assert all(len(results[("file", i)].detections) > 0 for i in file_frames)


def test_live_camera_faster_than_inference_drops_device_batches_without_blocking(device320, video: Path) -> None:
    """A ~100 FPS loopback camera into the device path (one inference ~50 ms here): the newest-only hand-over drops
    prepared device batches without giving them back, more than the ring holds, and the run goes on to its end."""
    from edge_detect.sinks import MjpegPreviewSink

    cap = cv2.VideoCapture(str(video))
    frame = cap.read()[1]
    cap.release()
    cam, stop = MjpegPreviewSink(port=0), threading.Event()

    def feed():
        while not stop.is_set():
            cam.publish(frame, "cam", force=True)
            time.sleep(0.01)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        results, s = _run(device320, [open_source(f"http://127.0.0.1:{cam.port}/", source_id="cam")], duration=3)
    finally:
        stop.set()
        cam.close()
    assert s.stopped_by == "duration" and s.processed > 0, s.to_dict()
    assert s.sources["cam"]["dropped_in_pipeline"] > 4, s.to_dict()  # more prepared batches dropped than the ring
    assert all(len(r.detections) > 0 for r in results.values())


def test_device_handles_from_frames_reach_the_backend(host320, device320, shared: Path) -> None:
    """A frame whose source put the picture on the device already (Frame.device_image, a torch tensor) is not
    uploaded again and gives the host image's detections."""
    from edge_detect.stream.batcher import Batcher

    img = cv2.imread(str(shared / "images" / "bus.jpg"))
    batcher = Batcher([], device320, 2, None, 1, threading.Event())
    batch = batcher.prepare([Frame(img, "a", 0, device_image=torch.from_numpy(img.copy())), Frame(img, "b", 0)])
    assert isinstance(batch.data, DeviceBatch) and batch.data.device == "cpu:0"
    got = device320.postprocess(device320.infer(batch.data), batch.infos)
    want = host320(img)
    for dets in got:
        _assert_equal(want, dets, "bus")


def test_dropped_batches_never_block_the_ring_and_overrides_reach_the_device_nms(host320, device320,
                                                                                 shared: Path) -> None:
    """Live hand-overs drop prepared batches without inferring them (the seam's contract): the ring rotates.
    ``detect_batch`` NMS overrides (evaluation's conf 0.001) reach the NMS on the device."""
    small = np.full((48, 64, 3), 90, np.uint8)
    ptrs = []
    for _ in range(6):  # more than the ring holds, none inferred: a holding ring would wait for ever here
        b, _ = device320.preprocess([small])
        ptrs.append(b.data.tensor.data_ptr())
    assert len(set(ptrs)) == 4 and ptrs[4:] == ptrs[:2]  # a ring of 4 batches per shape, reused in turn
    assert device320.postprocess(device320.infer(b), b.infos)[0].xyxy.shape == (0, 4)
    img = cv2.imread(str(shared / "images" / "zidane.jpg"))
    want = host320.detect_batch([img], conf_thres=0.01, iou_thres=0.6, max_det=50)[0]
    got = device320.detect_batch([img], conf_thres=0.01, iou_thres=0.6, max_det=50)[0]
    assert len(want) > len(host320(img))
    _assert_equal(want, got, "zidane conf 0.01")


def test_bench_inference_times_the_device_path(device320) -> None:
    """``edge-detect bench`` inference-only on a device-path detector: each timed call gets a fresh device batch
    (a device batch is consumed by its inference)."""
    from edge_detect.bench.measure import benchmark_inference

    calls = []
    infer = device320.infer
    device320.infer = lambda batch: calls.append(batch) or infer(batch)  # type: ignore[method-assign]
    try:
        res = benchmark_inference(device320, batch_size=2, warmup=1, iters=2, progress=False)
    finally:
        del device320.infer
    assert res["iters"] == 2 and res["fps"] > 0 and len(calls) == 3
    assert len({id(b) for b in calls}) == 3 and all(isinstance(b, DeviceBatch) and len(b.infos) == 2 for b in calls)


# ------------------------------------------------------------------------------------------------ GPU
def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")


@pytest.mark.gpu
def test_cuda_16_sources_batch_16_equal_each_sources_batch_1(weights_pt: Path, clips) -> None:
    """16 sources (the four clips, four times each) in batches of 16 on the CUDA device path (FP16, CUDA graphs):
    every source's detections are its batch-1 run's (>= 99% matched at IoU 0.95, scores within 0.01, no extra)."""
    from edge_detect.bench.parity import match_detections

    _cuda()

    def sources():
        return [open_source(p, source_id=f"{name}{k}") for k in range(4) for name, p in clips.items()]

    with Detector(weights_pt, device="cuda:0", half=True) as det:
        assert det.device_path and det.input_device == "cuda:0"
        one, s1 = _run(det, sources(), batch=1)
        many, s16 = _run(det, sources(), batch=16)
        graphs = det.backend.graph_shapes()
    n = 4 * sum(k for _, k in CLIPS.values())
    assert s1.processed == s16.processed == n and s16.batch["size"] == 16 and s16.batch["calls"] < n // 4
    assert any(g.startswith("[16, 3, 640, 640]") for g in graphs["graphs"]) and not graphs["graphs_refused"]
    for sid in sorted({sid for sid, _ in one}):
        keys = sorted(k for k in one if k[0] == sid)
        assert keys == sorted(k for k in many if k[0] == sid)
        report = match_detections([one[k].detections for k in keys], [many[k].detections for k in keys], iou=0.95,
                                  score_tol=0.01)
        assert report.reference > 0 and report.fraction >= 0.99 and report.extra == 0, (sid, report.to_dict())


@pytest.mark.gpu
def test_cuda_pipeline_device_path_equals_the_cpu_host_path(weights_pt: Path, host320, video: Path) -> None:
    """The real Pipeline on the CUDA device path (FP32, TF32 off) over 30 vtest frames: the CPU host path's
    detections (>= 99% matched at IoU 0.95, scores within 0.01, no extra), the sinks get the host frame."""
    from edge_detect.bench.parity import match_detections

    _cuda()
    want, _ = _run(host320, [open_source(video, source_id="v")], max_frames=30)
    with Detector(weights_pt, imgsz=320, device="cuda:0") as det:
        got, _ = _run(det, [open_source(video, source_id="v")], max_frames=30)
    keys = sorted(want)
    assert keys == sorted(got) and all(isinstance(got[k].frame.image, np.ndarray) for k in keys)
    report = match_detections([want[k].detections for k in keys], [got[k].detections for k in keys], iou=0.95,
                              score_tol=0.01)
    assert report.fraction >= 0.99 and report.extra == 0, report.to_dict()
