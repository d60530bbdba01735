"""edge_detect.app.App: built from a config file, run as a service, changed while it runs (sources added and
removed, lines replaced) with no restart; counts carry on."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.app import App
from edge_detect.app_config import SourceConfig, load_app_config
from edge_detect.errors import ConfigError, DuplicateSourceError, UnknownSourceError
from edge_detect.types import Detections

CYCLE = 40  # frames of one walk across the picture


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory) -> Path:
    """400 frames at 40 FPS (10 s when paced), 320x48; frame i is a flat grey of ``5 * (i % CYCLE)``."""
    path = tmp_path_factory.mktemp("walk") / "walk.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 40.0, (320, 48))
    for i in range(400):
        writer.write(np.full((48, 320, 3), 5 * (i % CYCLE), np.uint8))
    writer.release()
    return path


class Walker:
    """Reads the walk position back from the frame's grey level: one person walks left to right, 8 px a frame,
    then starts again on the left (a new track every cycle)."""

    names = ("person",)

    def preprocess(self, images):
        return np.zeros((len(images), 1), np.float32), [int(round(float(im.mean()) / 5)) for im in images]

    def infer(self, batch):
        return [batch]

    def postprocess(self, outputs, infos):
        return [Detections([[8 * k, 4, 8 * k + 40, 44]], [0.9], [0]) for k in infos]


def _wait(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _processed(app, sid):
    return next(s for s in app.status()["sources"] if s["id"] == sid)["processed"]


def test_app_changes_sources_and_lines_while_running(walk_video, tmp_path):
    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text(f"""
sources:
  - {{uri: "{walk_video}", id: a, options: {{realtime: true}}, lines: {{g1: [100, 0, 100, 48]}}}}
  - {{uri: "{walk_video}", id: b, options: {{realtime: true}}}}
analytics:
  tracker: {{enabled: true, name: iou}}
server: {{progress: false}}
""")
    app = App(load_app_config(cfg_file), detector=Walker())
    pulled = app.subscribe(name="test", queue_size=10000)
    app.start()
    try:
        assert _wait(lambda: app.counts()["sources"].get("a", {}).get("lines", {}).get("g1", {}).get("in", 0)
                     + app.counts()["sources"]["a"]["lines"]["g1"]["out"] >= 1)
        before = {sid: _processed(app, sid) for sid in ("a", "b")}

        with pytest.raises(DuplicateSourceError, match="source id 'b': expected a new id"):
            app.add_source(SourceConfig(str(walk_video), id="b"))
        assert app.add_source(SourceConfig(str(walk_video), id="c", options={"realtime": True})) == "c"
        assert _wait(lambda: _processed(app, "c") >= 5)
        mid = {sid: _processed(app, sid) for sid in ("a", "b")}
        assert all(mid[sid] > before[sid] for sid in mid)  # the others never stopped

        g1 = app.counts()["sources"]["a"]["lines"]["g1"]
        results = _drain(pulled)  # all processed before the change below
        last_before_change = max(r.frame.index for r in results if r.frame.source_id == "a")
        app.update_source("a", lines={"g2": [200, 0, 200, 48]})
        g1 = app.counts()["sources"]["a"]["lines"]["g1"]  # no g1 crossing after the change: frozen from here
        assert app.counts()["sources"]["a"]["lines"]["g2"] == {"in": 0, "out": 0, "by_class": {}}
        assert _wait(lambda: sum(app.counts()["sources"]["a"]["lines"]["g2"][d] for d in ("in", "out")) >= 1)
        assert app.counts()["sources"]["a"]["lines"]["g1"] == g1  # old counts carry on, no longer counted

        with pytest.raises(UnknownSourceError, match="source 'zz': expected one of"):
            app.remove_source("zz")
        app.remove_source("b")
        after_remove = {sid: _processed(app, sid) for sid in ("a", "c")}
        assert _wait(lambda: all(_processed(app, sid) > after_remove[sid] for sid in ("a", "c")))
        status = app.status()
        assert [s["id"] for s in status["sources"]] == ["a", "c"] and status["running"]
        assert {s["state"] for s in status["sources"]} == {"online"}
        assert app.latest_frame("a").shape == (48, 320, 3)
        with pytest.raises(UnknownSourceError, match="source 'zz'"):
            app.latest_frame("zz")
        jsonl = app.add_sink(str(tmp_path / "late.jsonl"))
        assert _wait(lambda: jsonl.queue_stats()["sent"] >= 5)
        app.remove_sink(jsonl)
        lines = sum(len((tmp_path / f"late_{sid}.jsonl").read_text().splitlines()) for sid in ("a", "c"))
        assert lines == jsonl.queue_stats()["sent"] >= 5  # started with the run's context: one file per source
        results += _drain(pulled)
    finally:
        summary = app.stop("test").wait(60)
    assert summary.stopped_by == "test" and set(summary.sources) == {"a", "b", "c"}
    crossings = {name: [r.frame.index for r in results if r.frame.source_id == "a" for e in r.events
                        if e.get("line") == name] for name in ("g1", "g2")}
    assert crossings["g1"] and crossings["g2"]
    assert max(crossings["g1"]) < min(crossings["g2"]) and min(crossings["g2"]) > last_before_change
    assert summary.sources["a"]["lines"]["g1"] == g1 and "g2" in summary.sources["a"]["lines"]
    assert summary.sources["b"]["processed"] >= mid["b"]


def _drain(sub):
    out = []
    while True:
        r = sub.get(timeout=0)
        if r is None:
            return out
        out.append(r)


def test_served_app_outlives_its_sources_and_takes_new_ones(walk_video, tmp_path):
    """keep_alive (serve, run --http): starts with no source, stays up once its file has ended, takes new sources;
    config_dict() is the running config (resolved ids, runtime changes) and loads back to the same config."""
    import yaml

    from edge_detect.app_config import AppConfig

    short = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 40.0, (320, 48))
    for i in range(10):
        writer.write(np.full((48, 320, 3), 5 * i, np.uint8))
    writer.release()
    app = App(AppConfig(), detector=Walker(), keep_alive=True).start()
    try:
        assert app.status()["sources"] == [] and app.running
        assert app.add_source(str(short)) == "short"
        assert _wait(lambda: app.status()["sources"][0]["state"] == "ended")
        time.sleep(0.3)
        assert app.running and _processed(app, "short") == 10 and app.wait(0) is None
        assert app.add_source(SourceConfig(str(short), lines={"g": [100, 0, 100, 48]})) == "short-1"
        assert _wait(lambda: _processed(app, "short-1") == 10)
        app.update_source("short-1", enabled=False, conf=0.5)
        saved = tmp_path / "app.yaml"
        saved.write_text(yaml.safe_dump(app.config_dict()))
        assert load_app_config(saved).to_dict() == app.config_dict() == {"sources": [
            {"uri": str(short), "id": "short"},
            {"uri": str(short), "id": "short-1", "lines": {"g": [100, 0, 100, 48]}, "conf": 0.5, "enabled": False}]}
        app.remove_source("short")
        assert app.add_source(SourceConfig(str(short), id="short")) == "short"  # a removed source's id is free again
    finally:
        summary = app.stop("test").wait(30)
    assert summary.stopped_by == "test" and summary.processed >= 20


def test_runtime_changes_after_the_run_ended_are_refused(walk_video):
    app = App(load_app_config(overrides={"sources": [str(walk_video)], "server.max_frames": 5}), detector=Walker())
    assert app.start().wait(30).stopped_by == "max_frames"
    with pytest.raises(ConfigError, match=r"expected a running app, got one whose run has ended \(max_frames\)"):
        app.add_source(str(walk_video))
    with pytest.raises(ConfigError, match="run has ended"):
        app.update_source("walk", enabled=False)
