"""edge_detect.app_config: YAML (nested sections; flat files converted) -> frozen dataclasses, overrides, class
resolution."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_detect.app_config import (AnalyticsConfig, AppConfig, ModelConfig, OutputsConfig, ServerConfig, SinkConfig,
                                    SourceConfig, add_sinks, load_app_config, resolve_classes)
from edge_detect.errors import ConfigError, SourceError
from edge_detect.stream.sources import CaptureOptions

REPO = Path(__file__).resolve().parents[1]
NAMES = ("person", "bicycle", "car")


def test_defaults_file_equals_builtin_defaults():
    """The shipped config is the built-in defaults plus what the README's `run --config` line needs: the
    default model by name and the sample video beside the repository."""
    cfg = load_app_config(REPO / "configs" / "app" / "default.yaml")
    assert cfg == dataclasses.replace(AppConfig(), model=ModelConfig(path="yolov5n"),
                                      sources=(SourceConfig("../shared/videos/vtest.avi"),))
    assert (cfg.model.conf, cfg.model.iou, cfg.model.max_det, cfg.outputs.sinks, cfg.outputs.show) == \
        (0.25, 0.45, 1000, (), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.conf = 0.5  # type: ignore[misc]


def test_example_rtsp_jetson_config_loads():
    cfg = load_app_config(REPO / "configs" / "app" / "rtsp_jetson.yaml")
    assert [s.id for s in cfg.sources] == ["gate", "csi0"]
    assert cfg.sources[0].uri.startswith("rtsp://") and cfg.sources[0].options["rtsp_transport"] == "tcp"
    assert cfg.sources[1].uri.startswith("nvarguscamerasrc") and cfg.sources[1].uri.endswith("sync=false")
    assert cfg.model.classes == ("person", "car", "bicycle")
    assert cfg.analytics.tracker.enabled and cfg.capture.backoff_max_s == 30.0
    assert [s.spec for s in cfg.outputs.sinks] == ["detections.jsonl", "mjpeg://127.0.0.1:8080"]
    assert cfg.outputs.show is False and cfg.server.stats_interval_s == 30


def test_plain_string_sources_and_int_imgsz(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("model: m.onnx\nimgsz: 320\nsources: [a.mp4, 0]\nclasses: [person, 2]\n"
                 "capture: {read_timeout_s: 3}\n")
    cfg = load_app_config(p)
    assert cfg.sources == (SourceConfig("a.mp4"), SourceConfig("0"))
    assert cfg.model.imgsz == (320, 320)
    assert cfg.model.classes == ("person", 2)
    assert cfg.capture == CaptureOptions(read_timeout_s=3.0)


def test_overrides_replace_only_given_values(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("model: m.onnx\nconf: 0.4\nsources: [a.mp4]\nsinks: [x.jsonl, a.mp4]\n")
    cfg = load_app_config(p, {"conf": None, "iou": 0.6, "sources": ["b.mp4", "c.mp4"],
                              "tracker.enabled": True, "imgsz": [384, 640]})
    assert cfg.model.conf == 0.4 and cfg.model.iou == 0.6
    assert [s.uri for s in cfg.sources] == ["b.mp4", "c.mp4"]
    assert cfg.outputs.sinks == (SinkConfig("x.jsonl"), SinkConfig("a.mp4"))
    assert cfg.analytics.tracker.enabled and cfg.model.imgsz == (384, 640)
    # CLI sink flags add to the list and replace a config sink of the same kind (any video suffix is one kind)
    cfg = add_sinks(cfg, ["o.mkv", "mjpeg://0.0.0.0:9000"])
    assert [s.spec for s in cfg.outputs.sinks] == ["x.jsonl", "o.mkv", "mjpeg://0.0.0.0:9000"]
    nested = load_app_config(p, {"model.conf": 0.5, "analytics.tracker.name": "iou", "server.max_frames": 3})
    assert (nested.model.conf, nested.analytics.tracker.name, nested.server.max_frames) == (0.5, "iou", 3)


def test_sink_list_with_options(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("sinks:\n  - out.jsonl\n  - {spec: out.mp4, options: {fps: 12.5}}\nshow: true\n")
    cfg = load_app_config(p)
    assert cfg.outputs.sinks == (SinkConfig("out.jsonl"), SinkConfig("out.mp4", {"fps": 12.5}))
    assert cfg.outputs.show is True


def test_tracker_and_processors(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("tracker: {enabled: true, iou: 0.5, max_age: 3}\n"
                 "processors: [iou, {name: iou, options: {max_age: 1}}]\n")
    cfg = load_app_config(p)
    t = cfg.analytics.tracker
    assert (t.enabled, t.name, t.options) == (True, "iou", {"iou_threshold": 0.5, "max_age": 3})
    assert [(x.name, x.options) for x in cfg.analytics.processors] == [("iou", {}), ("iou", {"max_age": 1})]
    cfg = load_app_config(p, {"tracker.name": "iou", "tracker.enabled": False})
    assert not cfg.analytics.tracker.enabled


def test_legacy_sinks_mapping_converted(tmp_path, caplog):
    p = tmp_path / "a.yaml"
    p.write_text("sinks: {show: false, save_video: v.mp4, video_fps: 10, save_jsonl: d.jsonl, preview_port: 8081,"
                 " preview_host: 0.0.0.0}\n")
    with caplog.at_level("WARNING"):
        cfg = load_app_config(p)
    assert cfg.outputs.sinks == (SinkConfig("v.mp4", {"fps": 10.0}), SinkConfig("d.jsonl"),
                                 SinkConfig("mjpeg://0.0.0.0:8081"))
    assert cfg.outputs.show is False
    assert "write a list of specs instead" in caplog.text


@pytest.mark.parametrize("text, match", [
    ("confidence: 0.3\n", r"unknown key 'confidence' \(did you mean 'conf'\?\)"),
    ("sinks: {save_vdeo: a.mp4}\n", r"unknown key 'save_vdeo' \(did you mean 'save_video'\?\)"),
    ("capture: {read_timeout: 3}\n", r"unknown key 'read_timeout' \(did you mean 'read_timeout_s'\?\)"),
    ("source: a.mp4\n", r"did you mean 'sources'"),
    ("conf: 1.5\n", r"conf: expected a value in \[0, 1\], got 1.5"),
    ("max_det: 0\n", r"max_det: expected >= 1, got 0"),
    ("imgsz: [1, 2, 3]\n", r"imgsz: expected .S. or .HxW. \(one or two positive integers\), got \[1, 2, 3\]"),
    ("duration: -1\n", r"duration: expected > 0 seconds"),
    ("tracker: {iou: 0}\n", r"tracker: IoUTracker iou_threshold: expected a value in \(0, 1\], got 0"),
    ("tracker: {name: kalman}\n", r"tracker: unknown name 'kalman'; expected one of bytetrack, iou, none$"),
    ("tracker: {options: {max_ag: 3}}\n", r"processor 'bytetrack': unknown option 'max_ag'; expected one of"),
    ("tracker: {name: iou, options: {max_ag: 3}}\n", r"processor 'iou': unknown option 'max_ag'; expected one of"),
    ("processors: [{name: iou, options: {iou: 1}}]\n", r"processor 'iou': unknown option 'iou'"),
    ("sinks: {preview_port: 70000}\n", r"preview_port: expected a port in 0..65535"),
    ("sinks: [out.xyz]\n", r"sinks: sink 'out.xyz': expected 'display', a URI with a known scheme"),
    ("sinks: [{spec: a.mp4, option: {}}]\n", r"unknown key 'option' \(did you mean 'options'\?\)"),
    ("conf: high\n", r"expected a number, got 'high'"),
    ("- a\n- b\n", r"expected a mapping at the top level"),
])
def test_invalid_configs_rejected(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_app_config(p)


def test_flat_file_converted_with_one_deprecation_warning_equals_the_nested_one(tmp_path, caplog):
    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text("model: m.onnx\nconf: 0.3\nbatch: 2\nsources: [a.mp4]\ntracker: {enabled: true}\n"
                    "lines: {g: [0, 0, 10, 10]}\nsinks: [o.jsonl]\nshow: false\nmax_frames: 9\n")
    nested.write_text("model: {path: m.onnx, conf: 0.3, batch: 2}\nsources: [a.mp4]\n"
                      "analytics: {tracker: {enabled: true}, lines: {g: [0, 0, 10, 10]}}\n"
                      "outputs: {sinks: [o.jsonl], show: false}\nserver: {max_frames: 9}\n")
    with caplog.at_level("WARNING"):
        a = load_app_config(flat)
    assert caplog.text.count("deprecated") == 1 and "sections model, sources" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        b = load_app_config(nested)
    assert a == b and caplog.text == ""
    assert (b.model, b.analytics.lines, b.outputs, b.server.max_frames) == (
        ModelConfig(path="m.onnx", conf=0.3, batch=2), {"g": [0, 0, 10, 10]},
        OutputsConfig(sinks=(SinkConfig("o.jsonl"),), show=False), 9)
    assert AppConfig.from_flat(model="m.onnx", conf=0.3, batch=2, sources=["a.mp4"], tracker={"enabled": True},
                               lines={"g": [0, 0, 10, 10]}, sinks=["o.jsonl"], show=False, max_frames=9) == b
    assert isinstance(b.analytics, AnalyticsConfig) and isinstance(b.server, ServerConfig)


@pytest.mark.parametrize("text, match", [
    ("model: {path: m.onnx, confidence: 0.3}\n", r"unknown key 'confidence' \(did you mean 'conf'\?\)"),
    ("outputs: {sink: [a.mp4]}\n", r"unknown key 'sink' \(did you mean 'sinks'\?\)"),
    ("sources: [{uri: a.mp4, id: a}, {uri: b.mp4, id: a}]\n", r"sources: expected unique ids, got 'a' twice"),
    ("sources: [{uri: a.mp4, conf: 2}]\n", r"source a.mp4 conf: expected a value in \[0, 1\], got 2"),
    ("events: {mqtt: 'http://h'}\n", r"events.mqtt: expected mqtt://"),
    ("events: {snapshot_crop: true}\n", r"events.snapshot_crop: expected events.snapshots DIR too"),
    ("server: {port: 70000}\n", r"server.port: expected a port in 0..65535, got 70000"),
    ("analytic: {lines: {}}\n", r"unknown key 'analytic' \(did you mean 'analytics'\?\)"),
    ("model: {path: m.onnx}\nconf: 0.3\n", r"expected either sections .* or the older top-level keys, got both"),
])
def test_invalid_nested_configs_rejected(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_app_config(p)


def test_events_section_becomes_the_event_sinks(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("events: {mqtt: 'mqtts://b/site', mqtt_options: {ca: ca.pem}, webhook: 'https://h/x', "
                 "snapshots: snaps, snapshot_keep: 5, metrics_port: 9100}\n")
    from edge_detect.app_config import run_sinks

    specs = run_sinks(load_app_config(p), display=False)
    assert [(s.spec, s.options) for s in specs] == [
        ("mqtts://b/site", {"ca": "ca.pem"}), ("webhook+https://h/x", {}),
        ("events", {"snapshots": "snaps", "snapshot_keep": 5}), ("metrics://127.0.0.1:9100", {})]


def test_invalid_capture_option_value_rejected(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("capture: {backoff_initial_s: 20, backoff_max_s: 10}\n")
    with pytest.raises(SourceError, match=r"backoff_initial_s: expected in \(0, backoff_max_s=10.0\], got 20"):
        load_app_config(p)


def test_unknown_override_rejected():
    with pytest.raises(ConfigError, match=r"unknown option 'confi' \(did you mean 'conf'\?\)"):
        load_app_config(None, {"confi": 0.3})


@pytest.mark.parametrize("classes, expected", [
    (None, None),
    (["person", "car"], [0, 2]),
    ([2, "0"], [2, 0]),
    (("bicycle",), [1]),
])
def test_resolve_classes(classes, expected):
    assert resolve_classes(classes, NAMES) == expected


@pytest.mark.parametrize("classes, match", [
    (["persn"], r"unknown class name 'persn' \(did you mean 'person'\?\)"),
    (["zebra"], r"unknown class name 'zebra'; the model has 3 classes"),
    ([3], r"expected ids in \[0, 2\], got 3"),
])
def test_resolve_classes_errors(classes, match):
    with pytest.raises(ConfigError, match=match):
        resolve_classes(classes, NAMES)
