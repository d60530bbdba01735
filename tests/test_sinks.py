"""edge_detect.sinks: JSONL, browser-friendly mp4, MJPEG preview, headless display, open_sink."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import count_frames
from edge_detect.errors import SinkError
from edge_detect.sinks import (
    DisplaySink,
    JsonlSink,
    MjpegPreviewSink,
    Result,
    StreamInfo,
    VideoSink,
    display_available,
    open_sink,
)
from edge_detect.types import Detections, Frame

NAMES = ("person", "bicycle", "car")


def result(i: int, sid: str = "cam", shape=(120, 160)) -> Result:
    img = np.full((*shape, 3), (i * 7) % 255, np.uint8)
    dets = Detections(np.array([[10, 20, 60, 90]], np.float32), np.array([0.875]), np.array([2]))
    return Result(Frame(img, sid, i, pts_ms=100.0 * i, capture_time=0.0, wall_time=1.7e9 + i), dets, NAMES, 12.5)


def test_result_record_and_annotation():
    r = result(3)
    assert r.record() == {"source": "cam", "frame": 3, "pts_ms": 300.0, "wall_time": 1.7e9 + 3,
                          "detections": [{"xyxy": [10.0, 20.0, 60.0, 90.0], "score": 0.875, "class_id": 2,
                                          "class_name": "car"}], "events": []}
    assert r.events == []
    ann = r.annotated
    assert ann.shape == r.frame.image.shape and ann is r.annotated  # drawn once, cached
    assert (ann != r.frame.image).any() and (r.frame.image == 21).all()  # original untouched


def test_jsonl_lines_are_flushed_as_written(tmp_path):
    path = tmp_path / "sub" / "d.jsonl"
    sink = JsonlSink(path)
    for i in range(5):
        sink.write(result(i))
    assert sink.flush(30)  # written by the sink's own thread, each line flushed
    lines = path.read_text().splitlines()  # before close: already on disk
    assert len(lines) == 5 and sink.lines == 5
    assert [json.loads(line)["frame"] for line in lines] == [0, 1, 2, 3, 4]
    sink.close()
    with pytest.raises(SinkError, match="write after close"):
        sink.write(result(5))


@pytest.mark.parametrize("streams, files", [
    ([], {"d.jsonl": ["cam", "cam", "other"]}),  # no start(): everything in the given file
    (["cam"], {"d.jsonl": ["cam", "cam", "other"]}),  # one source: the given file
    (["cam", "other"], {"d_cam.jsonl": ["cam", "cam"], "d_other.jsonl": ["other"]}),  # one file per source
    # an unannounced source gets its own file; an announced one without a line gets none (created on the first line)
    (["cam", "x"], {"d_cam.jsonl": ["cam", "cam"], "d_other.jsonl": ["other"]}),
])
def test_jsonl_one_file_per_source_when_several(tmp_path, streams, files):
    sink = JsonlSink(tmp_path / "d.jsonl")
    if streams:
        sink.start([StreamInfo(s) for s in streams])
    for r in (result(0), result(1), result(0, sid="other")):
        sink.write(r)
    sink.close()
    got = {p.name: [json.loads(line)["source"] for line in p.read_text().splitlines()]
           for p in tmp_path.iterdir()}
    assert got == files and sink.lines == 3


def test_video_is_h264_yuv420p_fragmented_with_every_frame(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "out.mp4"
    sink = VideoSink(path)
    sink.start([StreamInfo("cam", 10.0)])
    for i in range(23):
        sink.write(result(i, shape=(121, 161)))  # odd size: cropped to even for yuv420p
    sink.close()
    assert count_frames(path) == 23
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (s.codec_context.width, s.codec_context.height) == (160, 120)
        assert float(s.average_rate) == pytest.approx(10.0)
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"moof") < data.find(b"mdat")  # index up front, then fragments


def test_video_one_file_per_source(tmp_path):
    sink = VideoSink(tmp_path / "o.mp4", fps=5)
    sink.start([StreamInfo("a"), StreamInfo("b")])
    for i in range(4):
        sink.write(result(i, "a"))
        if i % 2:
            sink.write(result(i, "b"))
    sink.close()
    assert count_frames(tmp_path / "o_a.mp4") == 4 and count_frames(tmp_path / "o_b.mp4") == 2


def read_mjpeg_frames(url: str, n: int):
    frames = []
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        while len(frames) < n:
            line = resp.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                resp.readline()
                frames.append(cv2.imdecode(np.frombuffer(resp.read(length), np.uint8), cv2.IMREAD_COLOR))
    return frames


def test_mjpeg_preview_serves_latest_frames_on_loopback():
    sink = MjpegPreviewSink(port=0)
    try:
        assert sink.host == "127.0.0.1" and sink.url == f"http://127.0.0.1:{sink.port}/"
        sink.start([StreamInfo("cam")])
        import threading

        stop = threading.Event()

        def feed():
            i = 0
            while not stop.is_set():
                sink.write(result(i))
                i += 1
                stop.wait(0.02)

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        frames = read_mjpeg_frames(sink.url + "cam", 3)
        assert [f.shape for f in frames] == [(120, 160, 3)] * 3
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(sink.url + "nope", timeout=5)
        assert info.value.code == 404
        stop.set()
        t.join()
    finally:
        sink.close()


def test_preview_port_in_use_is_a_sink_error():
    a = MjpegPreviewSink(port=0)
    try:
        with pytest.raises(SinkError, match=f"cannot listen on 127.0.0.1:{a.port}"):
            MjpegPreviewSink(port=a.port)
    finally:
        a.close()


def test_display_headless_is_told_once_and_disabled(monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, reason = display_available()
    assert not ok and reason
    with caplog.at_level(logging.WARNING, logger="edge_detect.sinks"):
        sink = DisplaySink()
        for i in range(3):
            sink.write(result(i))
        sink.close()
    assert not sink.enabled and not sink.stop_requested
    assert caplog.text.count("display disabled") == 1


@pytest.mark.parametrize("spec, cls", [
    ("display", DisplaySink), ("out.mp4", VideoSink), ("out.mkv", VideoSink), ("d.jsonl", JsonlSink),
    ("d.ndjson", JsonlSink), ("mjpeg://127.0.0.1:0", MjpegPreviewSink), ("preview:0", MjpegPreviewSink),
])
def test_open_sink_kinds(tmp_path, monkeypatch, spec, cls):
    monkeypatch.chdir(tmp_path)
    sink = open_sink(spec)
    try:
        assert isinstance(sink, cls)
        assert open_sink(sink) is sink
    finally:
        sink.close()


@pytest.mark.parametrize("spec", ["out.txt", "rtsp://host/x", "whatever", "ftp://host/d.jsonl"])
def test_open_sink_unknown(spec):
    with pytest.raises(SinkError, match=r"expected 'display', a URI with a known scheme or a path with a known "
                                        r"suffix \(known: .*\.jsonl.*mjpeg"):
        open_sink(spec)


def test_result_events_and_track_ids_in_record():
    r = result(1)
    r.detections.track_id = np.array([7], np.int64)
    ev = {"type": "line_cross", "line": "gate", "direction": "in", "track_id": 7, "class_name": "car",
          "frame": 1, "wall_time": 1.7e9 + 1}
    r.detections.metadata.setdefault("events", []).append(ev)
    rec = r.record()
    assert rec["events"] == [ev] and r.events == [ev] and rec["detections"][0]["track_id"] == 7
    assert json.loads(json.dumps(rec)) == rec


@pytest.mark.parametrize("spec, options, match", [
    ("out.jsonl", {"fps": 5}, r"out.jsonl': unknown option 'fps'; expected one of \[\]"),
    ("out.mp4", {"fsp": 5},
     r"'fsp'; expected one of \['fps', 'crf', 'preset', 'threads', 'annotate', 'fragment_s', 'segment_s'\]"),
    ("mjpeg://127.0.0.1:0", {"qualty": 5}, r"unknown option 'qualty'"),
])
def test_open_sink_unknown_option(tmp_path, spec, options, match):
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        open_sink(str(tmp_path / spec) if "://" not in spec else spec, **options)
    assert not (tmp_path / spec).exists()


def test_register_sink_adds_a_scheme(tmp_path):
    from edge_detect.sinks import Sink, register_sink, sink_kinds

    class Collect(Sink):
        def __init__(self, target: str, tag: str = "") -> None:
            self.target, self.tag, self.results = target, tag, []

        def write(self, result):
            self.results.append(result)

    register_sink("collect")(Collect)
    try:
        sink = open_sink("collect://anything", tag="x")
        assert isinstance(sink, Collect) and (sink.target, sink.tag) == ("collect://anything", "x")
        assert "collect" in sink_kinds()
    finally:
        from edge_detect.sinks import base

        base._REGISTRY.pop("collect")


def test_final_result_skipped_by_image_sinks(tmp_path):
    pytest.importorskip("av")
    video = VideoSink(tmp_path / "v.mp4")
    video.start([StreamInfo("cam", 10.0)])
    video.write(result(0))
    video.write(Result(result(1).frame, Detections.empty(), NAMES, final=True))
    assert video.flush(30)  # written by the sink's own thread
    assert video.frames == {"cam": 1}
    video.close()
    assert count_frames(tmp_path / "v.mp4") == 1


def test_file_sinks_name_outputs_after_the_image(tmp_path):
    """images://, yolo-labels:// and coco:// write per image file (detect's outputs), lazily, final skipped."""
    from edge_detect.sinks.files import AnnotatedImagesSink, CocoResultsSink, YoloLabelsSink

    out = tmp_path / "out"
    images = open_sink(f"images://{out}", line_width=3)
    labels = open_sink(f"yolo-labels://{out / 'labels'}")
    coco = open_sink(f"coco://{tmp_path / 'p.json'}", image_ids={"/data/a/42.png": 7})
    assert (type(images), type(labels), type(coco)) == (AnnotatedImagesSink, YoloLabelsSink, CocoResultsSink)
    assert not out.exists()  # nothing written before the first frame
    r = result(0, shape=(100, 200))
    r.frame.path = "/data/a/42.png"
    for sink in (images, labels, coco):
        sink.write(r)
        sink.write(Result(r.frame, Detections.empty(), NAMES, final=True))
        sink.close()
    assert sorted(p.name for p in out.iterdir()) == ["42.png", "labels"]
    assert cv2.imread(str(out / "42.png")).shape == (100, 200, 3)
    assert (out / "labels" / "42.txt").read_text() == "2 0.175000 0.550000 0.250000 0.700000 0.87500\n"
    assert json.loads((tmp_path / "p.json").read_text()) == [
        {"image_id": 7, "category_id": 2, "bbox": [10.0, 20.0, 50.0, 70.0], "score": 0.875}]
    r2 = result(1)  # a frame without a file (video): named after its source and index
    labels2 = open_sink(f"yolo-labels://{tmp_path / 'l2'}")
    labels2.write(r2)
    assert labels2.flush(30)  # written by the sink's own thread
    assert [p.name for p in (tmp_path / "l2").iterdir()] == ["cam_000001.txt"]
