"""Motion gating and a detect rate through the real Pipeline / App (issue 25): frames gated out skip the detector,
still reach every sink (JSONL ``"inferred": false``, the tracker's predicted boxes), and the line counts are the
ones of the every-frame run; the tracker confirms tracks across frames the detector did not run on."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.app import App
from edge_detect.app_config import AppConfig, SourceConfig, load_app_config
from edge_detect.errors import ConfigError
from edge_detect.stream.gating import SourceGate, make_gate
from edge_detect.stream.processors.bytetrack import ByteTrack
from edge_detect.stream.processors.lines import LineCounter
from edge_detect.types import Detections, Frame

FPS = 25.0
W, H = 320, 240
FRAMES = 200
WALK = range(60, 150)  # frames a walker is in view, left to right at 4 px a frame
LINE = [160.0, 0.0, 160.0, float(H)]  # drawn top to bottom: left to right is "out"


def walker_x(f: int) -> int:
    return -20 + 4 * (f - WALK.start)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A static textured background (sensor noise on every frame) and one dark walker 20x50 px crossing the line
    from left to right on the frames of :data:`WALK`; 25 fps, MJPG."""
    path = tmp_path_factory.mktemp("gating") / "scene.avi"
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.integers(110, 190, (H, W, 3), dtype=np.uint8), (9, 9), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for f in range(FRAMES):
        img = np.clip(bg + rng.normal(0, 2, bg.shape), 0, 255).astype(np.uint8)
        if f in WALK:
            x = walker_x(f)
            img[150:200, max(x, 0):max(x + 20, 0)] = 25
        writer.write(img)
    writer.release()
    return path


class BlobDetector:
    """Finds the dark walker by its grey level (a scripted detector: no model); records the frames it ran on."""

    names = ("person",)

    def __init__(self) -> None:
        self.seen = 0

    def preprocess(self, images):
        self.seen += len(images)
        infos = []
        for im in images:
            ys, xs = np.nonzero(im.min(axis=2) < 70)
            infos.append(None if len(xs) < 40 else [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return np.zeros((len(images), 1), np.float32), infos

    def infer(self, batch):
        return [batch]

    def postprocess(self, outputs, infos):
        return [Detections.empty() if b is None else Detections([b], [0.9], [0]) for b in infos]


def run_app(scene: Path, tmp_path: Path, name: str, **detect):
    jsonl = tmp_path / f"{name}.jsonl"
    cfg = load_app_config(None, {"sources": [str(scene)], "outputs.sinks": [str(jsonl)], "outputs.show": False,
                                 "server.progress": False, "analytics.lines": {"middle": LINE},
                                 **{f"detect.{k}": v for k, v in detect.items()}})
    det = BlobDetector()
    summary = App(cfg, detector=det).run()
    lines = [json.loads(t) for t in jsonl.read_text().splitlines()]
    return summary, det, [r for r in lines if not r.get("final")]


def test_motion_gating_keeps_the_count_and_skips_idle_frames(scene, tmp_path):
    always, det_a, rec_a = run_app(scene, tmp_path, "always")
    motion, det_m, rec_m = run_app(scene, tmp_path, "motion", mode="motion", stationary_s=1.0)
    assert always.to_dict()["lines"]["middle"] == motion.to_dict()["lines"]["middle"]
    assert motion.to_dict()["lines"]["middle"]["out"] == 1 and always.inference_calls == det_a.seen == FRAMES
    # inferred: the calibration second (frames 0-24), every frame the walker is in view (61-144) and a few
    # frames of the fading ghost it leaves behind
    inferred = [r["frame"] for r in rec_m if r.get("inferred", True)]
    assert motion.inference_calls == det_m.seen == len(inferred) <= 25 + 84 + 8
    assert set(range(25)) | set(range(61, 145)) <= set(inferred)
    src = motion.sources["scene"]
    assert (src["inference_calls"], src["skipped_frames"]) == (det_m.seen, FRAMES - det_m.seen)
    assert src["motion_frames"] >= len(WALK) - 5 and src["detect"]["mode"] == "motion"
    assert motion.skipped_frames == FRAMES - det_m.seen and "motion" in motion.cpu_ms_per_frame
    assert "motion" not in always.cpu_ms_per_frame and always.skipped_frames == 0
    # the JSONL has every frame; gated ones say so, those on the walker's track before it carry boxes
    assert [r["frame"] for r in rec_m] == list(range(FRAMES))
    gated = [r for r in rec_m if r.get("inferred") is False]
    assert len(gated) == FRAMES - det_m.seen and all("inferred" not in r for r in rec_a)
    assert not [r for r in gated if r["detections"]]  # no track was alive on a gated frame here


def test_detect_fps_5_on_a_25_fps_clock_runs_one_frame_in_five(scene, tmp_path):
    every, _, _ = run_app(scene, tmp_path, "every")
    capped, det, rec = run_app(scene, tmp_path, "fps5", fps=5)
    assert det.seen == capped.inference_calls == FRAMES // 5
    inferred = [r["frame"] for r in rec if r.get("inferred", True)]
    assert inferred == list(range(0, FRAMES, 5))
    assert capped.to_dict()["lines"]["middle"] == every.to_dict()["lines"]["middle"] == {
        "in": 0, "out": 1, "by_class": {"person": {"in": 0, "out": 1}}}
    # between inferred frames the walker's track carries its predicted box, moving with the walker
    carried = [r for r in rec if r.get("inferred") is False and r["detections"]]
    assert len(carried) >= 4 * 12
    for r in carried:
        (d,) = r["detections"]
        assert d["track_id"] == 1 and abs(d["xyxy"][0] - max(walker_x(r["frame"]), 0)) <= 6


def _tracked(tracker, lines, f, box, inferred):
    frame = Frame(np.zeros((H, W, 3), np.uint8), "s", f, f * 40.0)
    dets = Detections([box], [0.9], [0]) if inferred else Detections.empty()
    if not inferred:
        dets.metadata["inferred"] = False
    return lines.update(tracker.update(dets, frame), frame)


@pytest.mark.parametrize("every", [1, 5, 12])
def test_bytetrack_confirms_and_keeps_a_track_across_frames_it_did_not_see(every):
    tracker, lines = ByteTrack(), LineCounter(lines={"middle": LINE})
    first = []
    for f in range(0, 90):
        inferred = f % every == 0
        out = _tracked(tracker, lines, f, [20 + 3 * f, 150, 40 + 3 * f, 200], inferred)
        if len(out) and not first:
            first.append(f)
        if first:  # then carried on every frame, predicted or seen
            assert out.track_id.tolist() == [1]
            assert abs(out.xyxy[0, 0] - (20 + 3 * f)) <= 1.0
    # confirmed on the third consecutive frame, or on the second sighting when the skipped frames cover as much
    assert first == [2 if every == 1 else every] and lines.counts["middle"] == {"in": 0, "out": 1}


@pytest.mark.parametrize("skipped, confirmed", [(True, True), (False, False)])
def test_a_new_track_takes_a_low_score_sighting_at_walking_pace_after_skipped_frames(skipped, confirmed):
    """A narrow walker (20x60 px, 60 px/s) first seen with a high score, then only with low scores: at a detect rate
    of 5 on 25 fps its second sighting 0.2 s later (12 px on, IoU 0.25 with the first box) confirms it; with no
    skipped frames between the two sightings (the same boxes on consecutive inferred frames: a 60 px/frame object)
    a low score never continues a track that far away."""
    tracker = ByteTrack()
    frame_of = (lambda k: 5 * k) if skipped else (lambda k: k)
    outs = []
    for k in range(4):
        f = frame_of(k)
        for g in range(frame_of(k - 1) + 1 if k else 0, f):  # the frames the detector skipped
            empty = Detections.empty()
            empty.metadata["inferred"] = False
            tracker.update(empty, Frame(np.zeros((H, W, 3), np.uint8), "s", g, g * 40.0))
        x = 100 + 12 * k
        dets = Detections([[x, 100, x + 20, 160]], [0.9 if k == 0 else 0.35], [0])
        outs.append(tracker.update(dets, Frame(np.zeros((H, W, 3), np.uint8), "s", f, f * 40.0)))
    assert [len(o) for o in outs] == ([0, 1, 1, 1] if confirmed else [0, 0, 0, 0])


@pytest.mark.parametrize("every", [1, 5])
def test_an_object_back_in_view_within_buffer_s_keeps_its_id_at_a_detect_rate(every):
    """Seen on frames 0-39 (25 fps), hidden 2.84 s, back on frame 111: within ``buffer_s`` (3 s) of its last
    sighting, so the every-frame run keeps its id. At 5 looks a second the next look is frame 115, 3.04 s after
    the last frame it was presumed present; the 0.16 s the detector skipped before that look do not count
    against it, so it keeps its id too."""
    tracker, lines = ByteTrack(buffer_s=3.0), LineCounter(lines={"m": LINE})
    ids = set()
    for f in range(140):
        inferred = f % every == 0
        if f < 40 or f >= 111:
            out = _tracked(tracker, lines, f, [100, 100, 130, 190], inferred)
        else:
            out = _hidden(tracker, f, inferred)
        ids |= set(out.track_id.tolist()) if out.track_id is not None else set()
    assert ids == {1} and tracker.summary()["tracker"]["tracks"] == 1


@pytest.mark.parametrize("every, xs, confirmed", [
    # 5 Hz: seen once at x=20, missed on the next look, then a box 260 px away: not the same object
    (5, {0: 20, 10: 280}, False),
    # every frame: seen once, missed once, then 100 and 150 px on (a fast object): one track, confirmed on the
    # third sighting, which it only is if the second was paired with the first across the missed frame
    (1, {0: 20, 2: 120, 3: 170}, True),
])
def test_a_track_seen_once_and_missed_on_a_look_is_not_paired_across_the_picture(every, xs, confirmed):
    tracker, lines = ByteTrack(), LineCounter(lines={"m": LINE})
    last = max(xs)
    for f in range(last + 1):
        inferred = f % every == 0
        out = (_tracked(tracker, lines, f, [xs[f], 150, xs[f] + 20, 200], inferred) if f in xs
               else _hidden(tracker, f, inferred))
    assert len(out) == (1 if confirmed else 0)


def _hidden(tracker, f, inferred):
    frame = Frame(np.zeros((H, W, 3), np.uint8), "s", f, f * 40.0)
    dets = Detections.empty()
    if not inferred:
        dets.metadata["inferred"] = False
    return tracker.update(dets, frame)


def test_a_still_object_outlives_buffer_s_while_the_detector_rests():
    """A tracked object presumed present through 20 s of skipped frames is still the same track when the detector
    looks again; its lost clock starts at the first inferred frame that misses it."""
    tracker = ByteTrack(buffer_s=3.0)
    box = [100, 100, 140, 200]
    for f in range(5):
        _tracked(tracker, LineCounter(lines={"m": LINE}), f, box, True)
    lines = LineCounter(lines={"m": LINE})
    for f in range(5, 505):
        out = _tracked(tracker, lines, f, box, False)
    assert out.track_id.tolist() == [1]
    assert _tracked(tracker, lines, 505, box, True).track_id.tolist() == [1]
    frame = Frame(np.zeros((H, W, 3), np.uint8), "s", 506, 506 * 40.0)
    missed = tracker.update(Detections.empty(), frame)  # lost now, not expired (20 s after its last sighting)
    assert tracker.active_tracks == 1 and not [e for e in missed.metadata["events"] if e["type"] == "object_end"]


def test_gate_hand_off_reads_whole_observations():
    gate = make_gate({"mode": "motion", "stationary_s": 1.0}, {"calibration_s": 0.0})
    assert isinstance(gate, SourceGate) and make_gate({"mode": "always"}) is None
    still = np.full((H, W, 3), 120, np.uint8)
    frames = [Frame(still, "s", f, f * 40.0) for f in range(80)]
    assert gate(frames[0]) is False  # first frame learns the background: no motion, no tracks
    tracked = Detections([[10, 10, 40, 90]], [0.9], [0], track_id=[7])
    gate.observe(frames[0], tracked)  # the processors' thread hands the tracks over
    assert [gate(f) for f in frames[1:25]] == [True] * 24  # a track, not yet still for 1 s
    assert [gate(f) for f in frames[26:40]] == [False] * 14  # still for 1 s: kept without re-detection
    fig = gate.figures()
    assert fig["detect"]["reasons"] == {"idle": 1, "tracks": 24, "stationary": 14} and fig["motion_frames"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"detect.mode": "moton"}, "detect.mode: expected one of always, motion, got 'moton' (did you mean 'motion'?)"),
    ({"detect.fsp": 5}, "unknown option 'fsp' (did you mean 'fps'?)"),
    ({"detect.fps": 0}, "detect.fps: expected a number > 0"),
    ({"motion": {"min_aera": 10}}, "motion: unknown key 'min_aera' (did you mean 'min_area'?)"),
    ({"motion": {"method": "mog"}}, "motion method: expected one of diff, mog2, knn, got 'mog' (did you mean 'mog2'?)"),
])
def test_bad_detect_and_motion_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_app_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_per_source_detect_keys_override_the_section_and_name_the_source(tmp_path):
    cfg = AppConfig(sources=(SourceConfig("a.mp4", id="door", detect={"mode": "motion"},
                                          motion={"mask": [[0, 0, 10, 0, 10, 10]]}), SourceConfig("b.mp4")),
                    motion={"method": "mog2"})
    door, other = cfg.gate_for(cfg.sources[0]), cfg.gate_for(cfg.sources[1])
    assert door.gate.mode == "motion" and door.motion.method == "mog2" and len(door.motion.mask) == 1
    assert other is None  # the section's mode: always, no fps: no gate
    with pytest.raises(ConfigError, match=r"source door detect: unknown key 'stationary' \(did you mean "
                                          r"'stationary_s'\?\)"):
        SourceConfig("a.mp4", id="door", detect={"stationary": 3})
    cfg_file = tmp_path / "app.yaml"
    cfg_file.write_text("sources: [{uri: a.mp4, detect: {fps: 5}}]\ndetect: {mode: motion, stationary_s: 4}\n")
    gate = load_app_config(cfg_file).gate_for(load_app_config(cfg_file).sources[0])
    assert (gate.gate.mode, gate.gate.fps, gate.gate.stationary_s) == ("motion", 5.0, 4.0)


@pytest.mark.parametrize("argv, message", [
    (["--detect", "motoin"], "argument --detect: invalid choice: 'motoin'"),
    (["--detect-fps", "0"], "argument --detect-fps: expected a positive number, got 0.0"),
])
def test_detect_flags_are_checked(argv, message, capsys):
    from edge_detect.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "--source", "x.mp4", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_status_and_metrics_report_inference_calls(scene, tmp_path):
    cfg = load_app_config(None, {"sources": [str(scene)], "outputs.show": False, "server.progress": False,
                                 "detect.fps": 5, "analytics.tracker.enabled": True})
    app = App(cfg, detector=BlobDetector())
    app.run()
    (src,) = app.status()["sources"]
    assert (src["inference_calls"], src["skipped_frames"]) == (FRAMES // 5, FRAMES - FRAMES // 5)
    assert src["detect"]["reasons"] == {"always": FRAMES // 5, "rate": FRAMES - FRAMES // 5}
    assert set(app.status()["cpu_ms_per_frame"]) >= {"motion", "preprocess", "inference", "total"}


@pytest.mark.parametrize("family", ["edge_reentry", "occlusion", "stop_and_go", "freeze", "class_flicker"])
def test_detect_fps_5_counts_like_every_frame_on_tracking_bench_scenes(family):
    """The tracking benchmark's scenes at 25 fps through the real pipeline (the scene's noisy detections instead
    of a model): 5 inference calls a second give the every-frame counts, which are the truth here."""
    from edge_detect.bench.detect import benchmark_detect
    from edge_detect.stream.trackbench.feed import SceneDetector, register_scene_source, scene_of, scene_uri

    register_scene_source()
    uri = scene_uri(family, 0, 25.0)
    scene = scene_of(uri)
    every, capped = benchmark_detect(SceneDetector(scene), uri, ["always", "always@5"], lines=scene.lines,
                                     progress=False)
    truth = {n: {"in": c["in"], "out": c["out"]} for n, c in scene.truth.items()}
    assert every["lines"] == capped["lines"] == truth and sum(truth["gate"].values()) >= 1
    slots = {int(f // 5) for f in scene.world.delivered()}  # the 0.2 s slots that have a frame
    assert capped["inference_calls"] == len(slots) and every["inference_calls"] == every["frames"]
    assert capped["vs_first"]["tracks_found_frac"] == 1.0
