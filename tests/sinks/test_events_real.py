"""A real run (yolov5n at 320, ByteTrack, a counting line on vtest.avi) publishing to a real mosquitto: the MQTT
events are exactly the processors' events of the run (same order, as in the JSONL), enveloped."""
from __future__ import annotations

import json
import os

import pytest

from conftest import has_module
from fakes_events import Subscriber

pytestmark = [pytest.mark.skipif(not (has_module("paho") and has_module("onnxruntime") and has_module("torch")),
                                 reason="needs paho-mqtt, onnxruntime and torch (ONNX export)")]


def _round6(value):
    """Floats rounded to 6 digits, as in published events."""
    if isinstance(value, dict):
        return {k: _round6(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round6(v) for v in value]
    return round(value, 6) if isinstance(value, float) else value


@pytest.fixture(scope="module")
def model_320(weights_pt, tmp_path_factory):
    from edge_detect.training.export import export_onnx

    return export_onnx(weights_pt, tmp_path_factory.mktemp("m320") / "yolov5n-320.onnx", imgsz=(320, 320))


def test_real_line_crossings_arrive_over_mqtt(mosquitto, model_320, video, tmp_path):
    """``edge-detect run --line ... --mqtt ...``: the issue's "done when" command, on a real broker."""
    from edge_detect.cli import main
    from edge_detect.sinks.events import validate_event

    sub = Subscriber(mosquitto.port)
    try:
        rc = main(["--quiet", "run", "--model", str(model_320), "--source", str(video), "--classes", "person",
                   "--line", "gate=240,0,240,360", "--max-frames", "150", "--no-show", "--no-progress",
                   "--threads", "1", "--mqtt", mosquitto.url, "--snapshots", str(tmp_path / "snaps"),
                   "--save-jsonl", str(tmp_path / "run.jsonl"), "--summary-json", str(tmp_path / "s.json")])
        assert rc == 0
        summary = json.loads((tmp_path / "s.json").read_text())
        lines = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
        expected = [e for line in lines for e in line["events"]]
        assert sub.wait_for(lambda: sub.on("availability")[-1:] == ["offline"] and
                            len([e for e in sub.on("vtest/events") if e["type"] != "object_update"])
                            >= len(expected), 20)
        got = sub.on("vtest/events")
        assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
        for e in got:
            validate_event(e)
        # the processors' events, in order, with the envelope and the snapshot path added (object_update is ours);
        # the same ids as in the JSONL lines (assigned once, by the pipeline)
        assert [{k: v for k, v in e.items() if k not in ("schema", "seq", "source", "snapshot", "last_snapshot")}
                for e in got if e["type"] != "object_update"] == [_round6(e) for e in expected]
        gate = summary["lines"]["gate"]
        crossings = [e for e in got if e["type"] == "line_cross"]
        assert gate["in"] + gate["out"] == len(crossings) >= 1
        assert sum(e["direction"] == "out" for e in crossings) == gate["out"]
        assert {"object_new", "object_end", "line_cross"} <= {e["type"] for e in got}
        news = sum(e["type"] == "object_new" for e in got)
        assert news == sum(e["type"] == "object_end" for e in got)  # every track ended (finish at end of source)
        assert all(e["last_seen"] >= e["first_seen"] for e in got if e["type"] == "object_end")
        assert all(os.path.isfile(e["snapshot"]) for e in got)
        assert all(os.path.isfile(e["last_snapshot"]) for e in got if e["type"] == "object_end")
        stats = sub.on("vtest/stats")[-1]
        assert stats["processed"] == 150 and stats["lines"]["gate"] == {"in": gate["in"], "out": gate["out"]}
    finally:
        sub.close()
