"""Multi-source batching: batch N == batch 1 per frame (dynamic and static-batch models), bounded gathering wait,
per-source order and outputs, CLI/config/API."""
from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import has_module
from polling import wait_for
from edge_detect.errors import ConfigError
from edge_detect.sinks import MjpegPreviewSink, Sink
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.sources import open_source
from edge_detect.types import Detections

requires_model = pytest.mark.skipif(not (has_module("torch") and has_module("onnxruntime")),
                                    reason="needs torch (export) and onnxruntime")

# three clips cut from different parts of vtest (so a batch holds different images) and of different lengths
# (so the last batches are partial)
CLIPS = {"a": (0, 9), "b": (300, 7), "c": (600, 5)}


@pytest.fixture(scope="module")
def clips(video, tmp_path_factory):
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    out = tmp_path_factory.mktemp("clips")
    paths = {}
    for name, (start, n) in CLIPS.items():
        folder = out / name  # image folders: lossless, so every run sees exactly the same pixels
        folder.mkdir()
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:03d}.png"), frames[start + i])
        paths[name] = folder
    return paths


class ListSink(Sink):
    name = "list"

    def __init__(self) -> None:
        self.results = []

    def write(self, result):
        self.results.append(result)


def run(detector, clips, batch, **kwargs):
    sink = ListSink()
    sources = [open_source(p, source_id=name) for name, p in clips.items()]
    pipe = Pipeline(sources, detector, [sink], batch=batch, progress=False, **kwargs)
    summary = pipe.run()
    return sink.results, summary, pipe


def by_frame(results):
    return {(r.frame.source_id, r.frame.index): r.detections for r in results}


def assert_same_detections(one, many):
    a, b = by_frame(one), by_frame(many)
    assert sorted(a) == sorted(b) == sorted((s, i) for s, (_, n) in CLIPS.items() for i in range(n))
    for key in a:
        da, db = a[key], b[key]
        assert len(da) > 0, key  # vtest is full of pedestrians: every frame has detections
        assert len(da) == len(db), key
        np.testing.assert_array_equal(da.class_id, db.class_id, err_msg=str(key))
        np.testing.assert_array_equal(da.xyxy, db.xyxy, err_msg=str(key))
        np.testing.assert_array_equal(da.score, db.score, err_msg=str(key))


def assert_order_per_source(results):
    for sid, (_, n) in CLIPS.items():
        assert [r.frame.index for r in results if r.frame.source_id == sid] == list(range(n))


@requires_model
def test_dynamic_batch_3_equals_batch_1(yolov5n_onnx_dynamic, clips):
    from edge_detect.detector import Detector

    with Detector(yolov5n_onnx_dynamic, imgsz=320, threads=1) as det:
        one, s1, p1 = run(det, clips, batch=1)
        many, s3, p3 = run(det, clips, batch=3)
    assert list(p1.stats.batch_sizes) == [1] * 21 and s1.batch["size"] == 1
    assert s3.batch["size"] == 3 and max(p3.stats.batch_sizes) == 3 and sum(p3.stats.batch_sizes) == 21
    assert s3.batch["calls"] == len(p3.stats.batch_sizes) < 21  # frames really went through the model together
    assert_same_detections(one, many)
    assert_order_per_source(many)
    assert {sid: s3.sources[sid]["processed"] for sid in CLIPS} == {sid: n for sid, (_, n) in CLIPS.items()}


@pytest.fixture(scope="module")
def static_b3(weights_pt, tmp_path_factory):
    if not has_module("torch"):
        pytest.skip("torch not installed: cannot export the ONNX model")
    from edge_detect.training.export import export_onnx

    return export_onnx(weights_pt, tmp_path_factory.mktemp("b3") / "yolov5n-b3.onnx", imgsz=(320, 320), batch=3,
                       progress=False)


@requires_model
def test_static_batch_3_model_equals_one_image_calls(static_b3, clips):
    """A static batch-3 model always gets 3 images (partial batches padded); every slot gets its own boxes."""
    from edge_detect.detector import Detector

    with Detector(static_b3, threads=1) as det:
        assert det.backend.input_spec.batch == 3
        many, s, pipe = run(det, clips, batch=1)  # the model's batch wins over the requested 1
        assert s.batch["size"] == 3 and max(pipe.stats.batch_sizes) == 3 and min(pipe.stats.batch_sizes) >= 1
        reference = []
        for r in many:  # batch-1 reference: the same model, one real image per call (padded with grey)
            reference.append(type(r)(r.frame, det.detect_batch([r.frame.image])[0], r.names))
    assert_same_detections(reference, many)
    assert_order_per_source(many)


class FakeDetector:
    names = ("person",)

    def __init__(self, infer_ms: float = 5.0) -> None:
        self.infer_ms = infer_ms

    def preprocess(self, images):
        return np.zeros((len(images), 3, 8, 8), np.float32), [im.shape[:2] for im in images]

    def infer(self, batch):
        time.sleep(self.infer_ms / 1e3)
        return [np.arange(len(batch), dtype=np.float32)]

    def postprocess(self, outputs, infos):
        # box i of a batch carries its slot index in x1, so a result delivered to the wrong frame shows up
        return [Detections(np.array([[float(v), 0, 10, 10]], np.float32), np.array([0.9]), np.array([0]))
                for v in outputs[0][:len(infos)]]


@pytest.mark.parametrize("timed", [False, pytest.param(True, marks=pytest.mark.perf)])
def test_stalled_source_does_not_hold_the_others(video, timed):
    """A camera that stops sending after it was opened, next to a 10 FPS file, with batch 2: the run reaches
    --max-frames on the file's frames alone (a held batch would only end at the 60 s hang guard). Timed (perf):
    the file is served at its rate and its frames wait at most the gathering bound."""
    cam = MjpegPreviewSink(port=0)
    feeding = threading.Event()
    feeding.set()

    def feed():
        while feeding.wait(0.04) and not cam_closed.is_set():
            cam.publish(np.full((120, 160, 3), 50, np.uint8), "cam", force=True)
            time.sleep(0.04)

    cam_closed = threading.Event()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    sink = ListSink()
    try:
        sources = [open_source(video, source_id="file", realtime=True),
                   open_source(f"http://127.0.0.1:{cam.port}/", source_id="stalled", read_timeout_s=30)]
        feeding.clear()  # from now on the camera sends nothing
        stop = {"duration": 2.5} if timed else {"max_frames": 12, "duration": 60}
        pipe = Pipeline(sources, FakeDetector(), [sink], batch=2, progress=False, **stop)
        s = pipe.run()
    finally:
        cam_closed.set()
        feeding.set()
        cam.close()
    file_frames = [r for r in sink.results if r.frame.source_id == "file"]
    if timed:
        assert len(file_frames) >= 18, s.to_dict()  # ~25 frames in 2.5 s at 10 FPS: the file is served at its rate
    else:
        assert s.stopped_by == "max_frames" and len(file_frames) >= 12 - 5, s.to_dict()
    assert [r.frame.index for r in file_frames] == list(range(len(file_frames)))
    assert s.sources["stalled"]["processed"] <= 5  # at most what was buffered before it stalled
    # a file frame waits at most the gathering bound (one frame interval of the fastest source: the camera
    # announces 25 FPS, so 40 ms) plus a short inference
    assert pipe.batcher.batch_wait_s == pytest.approx(1 / max(s_.fps for s_ in sources))
    if timed:
        assert s.latency_ms["p95"] < 300, s.latency_ms


def test_batch_slots_map_back_to_their_frames(video, tmp_path):
    """Two file sources, batch 4: each frame gets the detections of its own slot, in order per source."""
    sink = ListSink()
    sources = [open_source(video, source_id="x"), open_source(video, source_id="y")]
    for src in sources:  # both queues filled first (8 frames each): a busy machine may start one decoder late
        src.start()
    wait_for(lambda: all(src.stats.read >= 8 for src in sources), what="both sources' first frames")
    pipe = Pipeline(sources, FakeDetector(infer_ms=1), [sink], batch=4, max_frames=40, progress=False)
    s = pipe.run()
    assert s.processed == 40 and sum(pipe.stats.batch_sizes) == 40 and max(pipe.stats.batch_sizes) == 4
    for sid in ("x", "y"):
        idx = [r.frame.index for r in sink.results if r.frame.source_id == sid]
        assert idx == list(range(len(idx))) and len(idx) >= 5
    slots = [i for n in pipe.stats.batch_sizes for i in range(n)]
    assert [float(r.detections.xyxy[0, 0]) for r in sink.results] == [float(v) for v in slots]


@pytest.mark.parametrize("kwargs, match", [
    ({"batch": 0}, r"batch: expected >= 1, got 0"),
    ({"batch_wait_s": -1}, r"batch_wait_s: expected >= 0 seconds, got -1"),
])
def test_invalid_batch_arguments(video, kwargs, match):
    src = open_source(video)
    try:
        with pytest.raises(ConfigError, match=match):
            Pipeline([src], FakeDetector(), **kwargs)
    finally:
        src.close()


@requires_model
def test_cli_three_sources_batch_3_same_jsonl_as_batch_1(yolov5n_onnx_dynamic, clips, tmp_path):
    from edge_detect.cli import main

    outs = {}
    for batch in (1, 3):
        out = tmp_path / f"b{batch}"
        argv = ["--quiet", "run", "--model", str(yolov5n_onnx_dynamic), "--imgsz", "320", "--threads", "1",
                "--no-show", "--no-progress", "--save-jsonl", str(out / "d.jsonl"), "--summary-json",
                str(out / "s.json"), "--batch", str(batch)]
        for p in clips.values():
            argv += ["--source", str(p)]
        assert main(argv) == 0
        assert not (out / "d.jsonl").exists()  # several sources: one file per source, in its frame order
        outs[batch] = {}
        for name, n in ((name, n) for name, (_, n) in CLIPS.items()):
            lines = [json.loads(x) for x in (out / f"d_{name}.jsonl").read_text().splitlines()]
            assert [(d["source"], d["frame"]) for d in lines] == [(name, i) for i in range(n)]
            outs[batch].update({(d["source"], d["frame"]): d["detections"] for d in lines})
        summary = json.loads((out / "s.json").read_text())
        assert summary["batch"]["size"] == batch and summary["processed"] == 21
    assert outs[1] == outs[3] and len(outs[1]) == 21
    assert all(outs[1][k] for k in outs[1])


def test_batch_in_app_config(tmp_path):
    from edge_detect.app_config import load_app_config

    p = tmp_path / "a.yaml"
    p.write_text("batch: 4\nsources: [a.mp4, b.mp4]\n")
    assert load_app_config(p).model.batch == 4
    p.write_text("batch: 0\n")
    with pytest.raises(ConfigError, match=r"batch: expected >= 1, got 0"):
        load_app_config(p)


class ShapeCheckingDetector(FakeDetector):
    """Like a dynamic-shape model letterboxing to the minimum rectangle: a batch must hold one image size."""

    dynamic_hw, auto = True, True

    def __init__(self) -> None:
        super().__init__(infer_ms=1)
        self.batches = []

    def preprocess(self, images):
        self.batches.append([im.shape for im in images])
        assert len({im.shape for im in images}) == 1, [im.shape for im in images]
        return super().preprocess(images)


def test_dynamic_shape_batches_hold_one_image_size(tmp_path):
    folders = {}
    for name, hw, n in (("small", (48, 64), 7), ("tall", (96, 64), 5), ("small2", (48, 64), 6)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((*hw, 3), i * 10, np.uint8))
        folders[name] = folder
    det = ShapeCheckingDetector()
    sink = ListSink()
    sources = [open_source(p, source_id=name) for name, p in folders.items()]
    s = Pipeline(sources, det, [sink], batch=3, progress=False).run()
    assert s.processed == 18 and {sid: s.sources[sid]["processed"] for sid in folders} == {
        "small": 7, "tall": 5, "small2": 6}
    for sid in folders:  # order within each source kept although frames of another size were held back
        assert [r.frame.index for r in sink.results if r.frame.source_id == sid] == list(
            range(s.sources[sid]["processed"]))
    assert max(len(b) for b in det.batches) == 3  # the two same-size sources still batch together
