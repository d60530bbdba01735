"""Tracking, lines and zones end to end: ``edge-detect run`` on a rendered synthetic video with the real yolov5n,
and the app config (per-source geometry, flags, errors) through the pipeline with a scripted detector."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import has_module
from edge_detect.app_config import build_pipeline, load_app_config
from edge_detect.cli import main
from synthetic_world import GATE, Actor, FakeDetector, World, gate_scene, render_frame, render_video, background, _crops

requires_model = pytest.mark.skipif(not (has_module("torch") and has_module("onnxruntime")),
                                    reason="needs torch (export) and onnxruntime")
GATE_FLAG = "gate=" + ",".join(str(int(v)) for v in GATE)
# the bottom-left corner, where the hidden walker b goes after the pillar (extends below the frame so that a
# bottom-centre anchor on the frame's edge is well inside)
BAY = (0, 290, 180, 290, 180, 400, 0, 400)
BAY_FLAG = "bay=" + ",".join(str(v) for v in BAY)


@pytest.fixture(scope="module")
def gate_video(shared, tmp_path_factory):
    world, expected = gate_scene()
    return render_video(world, tmp_path_factory.mktemp("synthetic") / "synthetic.mp4", shared), world, expected


@requires_model
def test_real_detector_sees_the_pasted_people(yolov5n_onnx, gate_video):
    """The synthetic world is only a test if the model finds its people: every visible actor on sampled frames."""
    from edge_detect.boxes import box_iou
    from edge_detect.detector import Detector

    path, world, _ = gate_video
    cap = cv2.VideoCapture(str(path))
    frames = []
    ok, img = cap.read()
    while ok:
        frames.append(img)
        ok, img = cap.read()
    assert len(frames) == world.frames
    det = Detector(yolov5n_onnx, conf=0.25, classes=[0], threads=1)
    try:
        for f in range(0, world.frames, 10):
            d = det(frames[f])
            for actor in world.actors:
                gt = world.visible_box(actor, f, min_visible=0.9)  # fully visible only
                if gt is not None:
                    assert len(d) and box_iou(gt[None], d.xyxy).max() > 0.6, (f, actor.name)
    finally:
        det.close()


@requires_model
def test_cli_counts_the_gate_scene_exactly(yolov5n_onnx, gate_video, tmp_path):
    path, world, expected = gate_video
    out = tmp_path / "out"
    rc = main(["--quiet", "run", "--model", str(yolov5n_onnx), "--source", str(path), "--line", GATE_FLAG,
               "--zone", BAY_FLAG, "--summary-json", str(out / "s.json"), "--save-jsonl", str(out / "d.jsonl"),
               "--save-video", str(out / "a.mp4"), "--no-show", "--no-progress", "--threads", "1",
               "--classes", "person"])
    assert rc == 0
    summary = json.loads((out / "s.json").read_text())
    assert summary["lines"] == {"gate": {**expected, "by_class": {"person": expected}}}
    assert summary["zones"] == {"bay": {"entered": 1, "exited": 1, "occupancy": 0, "max_occupancy": 1}}
    assert summary["tracker"]["tracks"] == 5  # one per walker: the hidden one and the one turning back keep theirs
    lines = [json.loads(x) for x in (out / "d.jsonl").read_text().splitlines()]
    frames = [x for x in lines if x.get("detections") is not None and "final" not in x]
    events = [e for x in lines for e in x["events"]]
    crossings = [(e["track_id"], e["direction"]) for e in events if e["type"] == "line_cross"]
    assert sorted(d for _, d in crossings) == ["in", "in", "out", "out"] and len({t for t, _ in crossings}) == 4
    ids = {d["track_id"] for x in frames for d in x["detections"]}
    assert ids == {1, 2, 3, 4, 5}  # never -1, never a placeholder
    new = [e for e in events if e["type"] == "object_new"]
    end = [e for e in events if e["type"] == "object_end"]
    assert sorted(e["track_id"] for e in new) == [1, 2, 3, 4, 5] == sorted(e["track_id"] for e in end)
    zone = [e["type"] for e in events if e["type"].startswith("zone")]
    assert zone == ["zone_enter", "zone_exit"]
    cap = cv2.VideoCapture(str(out / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == world.frames


# ------------------------------------------------------------------------------- pipeline with a scripted detector


def index_video(world: World, path: Path, shared: Path) -> Path:
    """The world rendered with the frame index written as 8 black/white 16x16 squares (bit 0 leftmost), so a
    scripted detector knows which frame it is given after lossy compression."""
    crops, bg = _crops(shared), background(world.size)
    h, w = world.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), world.fps, (w, h))
    for f in range(world.frames):
        img = render_frame(world, f, crops, bg)
        for bit in range(8):
            img[0:16, 16 * bit:16 * bit + 16] = 255 if (f >> bit) & 1 else 0
        writer.write(img)
    writer.release()
    return path


class ScriptedDetector:
    """Detector stages for the Pipeline returning a :class:`FakeDetector`'s boxes for the frame index read from
    the image."""

    names = ("person", "bicycle", "car")

    def __init__(self, world: World) -> None:
        self.fake = FakeDetector(world, noise_px=1.0, seed=3)

    def preprocess(self, images):
        idx = [sum(1 << b for b in range(8) if im[4:12, 16 * b + 4:16 * b + 12].mean() > 127) for im in images]
        return np.zeros((len(images), 1), np.float32), idx

    def infer(self, batch):
        return [batch]

    def postprocess(self, outputs, infos):
        return [self.fake(i) for i in infos]


def test_config_lines_zones_per_source(gate_video, shared, tmp_path):
    _, world, expected = gate_video
    video = index_video(world, tmp_path / "idx.mp4", shared)
    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text(f"""
sources:
  - {{uri: {video}, id: cam1}}
  - uri: {video}
    id: cam2
    lines: {{top: [0, 60, 480, 60]}}
    zones: {{bay: [0, 0, 100, 0, 100, 100, 0, 100]}}
lines:
  gate: {list(GATE)}
  cars: {{xyxy: {list(GATE)}, classes: [car]}}
zones:
  bay: {list(BAY)}
line_options: {{hysteresis_px: 4}}
progress: false
show: false
""")
    cfg = load_app_config(cfg_file, {"summary_json": str(tmp_path / "s.json")})
    assert not cfg.analytics.tracker.enabled and cfg.has_analytics
    pipe = build_pipeline(cfg, detector=ScriptedDetector(world))
    assert [p.name for p in pipe.processors] == ["bytetrack", "lines", "zones"]  # tracking turned on by the lines
    summary = pipe.run().to_dict()
    cam1, cam2 = summary["sources"]["cam1"], summary["sources"]["cam2"]
    assert cam1["lines"] == {"gate": {**expected, "by_class": {"person": expected}},
                             "cars": {"in": 0, "out": 0, "by_class": {}}}
    assert cam2["lines"]["gate"] == cam1["lines"]["gate"]
    assert cam2["lines"]["top"] == {"in": 0, "out": 0, "by_class": {}}  # no walker's feet go above y 60
    assert cam1["zones"] == {"bay": {"entered": 1, "exited": 1, "occupancy": 0, "max_occupancy": 1}}
    assert cam2["zones"] == {"bay": {"entered": 0, "exited": 0, "occupancy": 0, "max_occupancy": 0}}  # replaced
    assert summary["lines"]["gate"] == {"in": 4, "out": 4, "by_class": {"person": {"in": 4, "out": 4}}}


def run_scripted(world: World, shared: Path, tmp_path: Path, analytics: str) -> tuple:
    """``world`` rendered with its frame index, through the app (``analytics``: the YAML of that section) with the
    scripted detector and a JSONL sink: (summary dict, JSONL records)."""
    video = index_video(world, tmp_path / "scene.mp4", shared)
    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text(f"sources: [{{uri: {video}, id: cam}}]\nanalytics:\n  {analytics}\n"
                        f"outputs: {{sinks: [{tmp_path / 'd.jsonl'}], show: false}}\nserver: {{progress: false}}\n")
    cfg = load_app_config(cfg_file, {"summary_json": str(tmp_path / "s.json")})
    summary = build_pipeline(cfg, detector=ScriptedDetector(world)).run().to_dict()
    records = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    return summary, records


def test_exit_and_reentry_at_one_edge_two_tracks_two_crossings_end_to_end(shared, tmp_path):
    """Issue 21's case through the app: ``a`` walks left to right across the gate and out through the right edge;
    1 s later ``b`` comes in through that edge and walks back across the gate. Two tracks, two crossings."""
    from test_bytetrack import edge_handoff

    world = edge_handoff(1.0)
    summary, records = run_scripted(world, shared, tmp_path, f"lines: {{gate: {list(GATE)}}}")
    assert summary["lines"]["gate"] == {"in": 1, "out": 1, "by_class": {"person": {"in": 1, "out": 1}}}
    assert summary["tracker"]["tracks"] == 2 and summary["tracker"]["stitched"] == 0
    events = [e for r in records for e in r["events"]]
    assert [(e["track_id"], e["direction"]) for e in events if e["type"] == "line_cross"] == [(1, "out"), (2, "in")]
    new = {e["track_id"]: e for e in events if e["type"] == "object_new"}
    end = {e["track_id"]: e for e in events if e["type"] == "object_end"}
    assert sorted(new) == sorted(end) == [1, 2]
    assert end[1]["last_frame"] < new[2]["frame"]  # a was over before b got its track
    assert (end[1]["exited"], end[2]["entered"], end[2]["exited"]) == ("right", "right", "left")


def test_speed_dwell_and_edges_reach_the_jsonl_events(shared, tmp_path):
    """A walker at 50 px/s (5 px per frame at 10 fps) comes in through the right edge, crosses the gate (a line with
    a ground scale of 0.02 m/px), walks through a 120 px wide zone and leaves through the left edge."""
    from edge_detect.sinks.events import EventBuilder, validate_event

    world = World([Actor("w", [(0, 500, 300), (104, -20, 300)], height=110, crop=1)], 112)
    zone = [60, 200, 180, 200, 180, 360, 60, 360]
    summary, records = run_scripted(world, shared, tmp_path, f"lines: {{gate: {{xyxy: {list(GATE)}, "
                                    f"meters_per_px: 0.02}}}}\n  zones: {{mid: {zone}}}")
    assert summary["lines"]["gate"]["in"] == 1 and summary["zones"]["mid"]["exited"] == 1
    events = {e["type"]: e for r in records for e in r["events"]}
    cross, enter, leave = events["line_cross"], events["zone_enter"], events["zone_exit"]
    for ev in (cross, enter, leave):
        assert ev["speed_px_s"] == pytest.approx(50.0, rel=0.1), ev
    assert cross["direction"] == "in" and cross["speed_m_s"] == pytest.approx(cross["speed_px_s"] * 0.02, abs=1e-3)
    assert "speed_m_s" not in enter and "speed_m_s" not in leave  # no scale for the zone
    assert leave["dwell_s"] == pytest.approx(120 / 50, abs=0.25)
    new, end = events["object_new"], events["object_end"]
    assert new["entered"] == "right" and (end["entered"], end["exited"]) == ("right", "left")
    assert end["dwell_s"] == pytest.approx((end["last_frame"] - end["first_frame"]) / 10.0)
    if has_module("jsonschema"):
        builder = EventBuilder()
        for r in records:
            for ev in r["events"]:
                validate_event(builder.envelope(ev, r["source"], r["frame"], r["wall_time"]))


def test_flags_add_to_config_lines_and_tracker_none_is_refused(tmp_path):
    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text("lines: {a: [0, 0, 10, 10], b: [0, 0, 5, 5]}\n")
    cfg = load_app_config(cfg_file, {"lines": {"b": [1, 1, 2, 2], "c": [3, 3, 4, 4]}})
    assert cfg.analytics.lines == {"a": [0, 0, 10, 10], "b": [1, 1, 2, 2], "c": [3, 3, 4, 4]}
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match="tracker: expected a tracker for lines/zones"):
        load_app_config(cfg_file, {"tracker.name": "none"})


@pytest.mark.parametrize("argv, message", [
    (["--line", "gate"], "--line: expected NAME=x1,y1,x2,y2, got 'gate'"),
    (["--line", "gate=1,2,3"], "--line gate: expected 4 numbers (NAME=x1,y1,x2,y2), got 3"),
    (["--line", "gate=1,2,a,4"], "--line gate: expected numbers separated by commas, got '1,2,a,4'"),
    (["--line", "gate=5,5,5,5"], "line gate: expected two distinct endpoints"),
    (["--line", "g=0,0,1,1", "--line", "g=0,0,2,2"], "--line: expected unique names, got 'g' twice"),
    (["--zone", "bay=0,0,10,0"], "--zone bay: expected an even number of at least 6 numbers"),
    (["--zone", "bay=0,0,1,1,2,2"], "zone bay: expected a polygon with a non-zero area"),
    (["--zone", "0,0,1,0,1,1"], "--zone: expected NAME=x1,y1,x2,y2,x3,y3[,...], got '0,0,1,0,1,1'"),
    (["--line", "gate=0,0,1,1", "--tracker", "none"], "tracker: expected a tracker for lines/zones"),
    (["--tracker", "kalman"], "tracker: unknown name 'kalman'; expected one of bytetrack, iou, none"),
])
def test_bad_analytics_flags_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["--quiet", "run", "--model", "m.onnx", "--source", "v.mp4", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("edge-detect: error: ") and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("yaml_text, message", [
    ("lines: {g: [0, 0, 1]}\n", "line g: expected 4 finite numbers x1,y1,x2,y2"),
    ("zones: {z: {polygon: [0, 0, 1, 0, 1, 1], colour: red}}\n", "zone z: unknown key 'colour'"),
    ("sources: [{uri: a.mp4, lines: {g: [1, 1, 1, 1]}}]\n", "line g: expected two distinct endpoints"),
    ("lines: {g: [0, 0, 1, 1]}\nline_options: {hysteresis: 3}\n", "processor 'lines': unknown option 'hysteresis'"),
    ("zones: {z: [0, 0, 9, 0, 9, 9]}\nzone_options: {anchor: feet}\n", "zones anchor: expected one of bottom_center"),
    ("lines: {g: [0, 0, 1, 1]}\nline_options: {count: each}\n", "lines count: expected one of crossing, once"),
    ("lines: {g: [0, 0, 1, 1]}\ntracker: {name: none}\n", "tracker: expected a tracker for lines/zones"),
])
def test_bad_analytics_config(yaml_text, message, tmp_path):
    from edge_detect.errors import ConfigError

    p = tmp_path / "app.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_app_config(p)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_help_documents_the_analytics_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in ("--line NAME=x1,y1,x2,y2", "--zone NAME=x1,y1,x2,y2,x3,y3[,...]", "--tracker NAME", "bytetrack",
                 "'in' = from the left of (x1,y1)->(x2,y2)"):
        assert text in out, text


def test_run_summary_text_shows_counts():
    from edge_detect.stream.pipeline import RunSummary

    text = RunSummary(extra={"lines": {"gate": {"in": 2, "out": 1, "by_class": {}}},
                             "zones": {"bay": {"entered": 3, "exited": 2, "occupancy": 1,
                                               "max_occupancy": 2}}}).format()
    assert "line gate: in 2, out 1" in text and "zone bay: entered 3, exited 2, occupancy 1 (max 2)" in text
