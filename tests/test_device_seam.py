"""The device-agnostic batch: a backend with a device path (DeviceBackend) gets device handles, returns final boxes
in letterbox pixels, and the pipeline and Detector deliver them in original pixels; the host path is unchanged."""
from __future__ import annotations

import cv2
import numpy as np

from edge_detect.backends.base import Backend, DeviceBackend, DeviceBatch, InputSpec
from edge_detect.detector import Detector
from edge_detect.metadata import ModelMetadata
from edge_detect.preprocess import letterbox
from edge_detect.stream.batcher import Batcher
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.sources import open_source
from edge_detect.types import Frame, Sink


class Handle:
    """Stands in for a picture already on the device (what a GPU decoder would give)."""

    def __init__(self, image):
        self.image = image


class FakeDeviceBackend:
    """A 'fake:0' device: letterboxes with the host function (standing in for device kernels); one box per image
    at a fixed place in letterbox pixels."""

    name = "fake"

    def __init__(self):
        self.metadata = ModelMetadata(names=["person", "car"], imgsz=(64, 64), stride=32)
        self.input_spec = InputSpec("images", (-1, 3, 64, 64), np.dtype(np.float32), device="fake:0")
        self.got, self.host_calls = [], 0

    def preprocess_device(self, images, input_hw, stride, auto):
        self.got.append([type(im).__name__ for im in images])
        infos = [letterbox(im.image if isinstance(im, Handle) else im, input_hw, auto=auto, stride=stride)[1]
                 for im in images]
        return DeviceBatch(data=f"device-buffer-{len(images)}", device="fake:0", infos=infos)

    def infer_device(self, batch):
        assert batch.nms["conf_thres"] == 0.25 and batch.nms["max_det"] == 1000
        return [np.array([[8, 16, 24, 48, 0.9, 1]], np.float32) for _ in batch.infos]

    def infer(self, batch):  # the host path stays available
        self.host_calls += 1
        raise AssertionError("host path used")

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_device_backend_protocol_and_detector_take_the_device_path():
    backend = FakeDeviceBackend()
    assert isinstance(backend, Backend) and isinstance(backend, DeviceBackend)
    det = Detector(backend)
    assert det.device_path and det.input_device == "fake:0" and det.buffer_hw((32, 64)) is None
    image = np.zeros((32, 64, 3), np.uint8)  # letterboxed to 64x64: ratio 1, 16 px bars top and bottom
    (dets,) = det([image])
    assert dets.xyxy.tolist() == [[8.0, 0.0, 24.0, 32.0]] and dets.class_id.tolist() == [1]
    assert backend.host_calls == 0


def test_batcher_hands_device_images_to_a_device_detector():
    backend = FakeDeviceBackend()
    det = Detector(backend)
    import threading

    batcher = Batcher([], det, 2, None, 1, threading.Event())
    host = np.zeros((32, 64, 3), np.uint8)
    frames = [Frame(host, "a", 0, device_image=Handle(host)), Frame(host, "b", 0)]
    batch = batcher.prepare(frames)
    assert backend.got == [["Handle", "ndarray"]] and isinstance(batch.data, DeviceBatch)


class Collect(Sink):
    name = "collect"

    def __init__(self):
        self.results = []

    def write(self, result):
        self.results.append(result)


def test_pipeline_runs_a_device_backend_end_to_end(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((32, 64, 3), i, np.uint8))
    backend, sink = FakeDeviceBackend(), Collect()
    s = Pipeline([open_source(tmp_path)], Detector(backend), [sink], batch=2, progress=False).run()
    assert s.processed == 5 and backend.host_calls == 0
    assert all(r.detections.xyxy.tolist() == [[8.0, 0.0, 24.0, 32.0]] for r in sink.results)
