"""Motion detection, the inference gate and region planning (issue 25) on synthetic frames: no model, no video."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_detect.errors import ConfigError
from edge_detect.preprocess import letterbox
from edge_detect.stream.motion import METHODS, MotionDetector, MotionGate, MotionResult, TrackStillness
from edge_detect.stream.regions import Region, merge_boxes, plan_regions, regions_to_frame
from edge_detect.types import Detections

FPS = 25.0
H, W = 360, 480


def background(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A textured static scene, BGR uint8."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(40, 220, (h, w, 3), dtype=np.uint8), (0, 0), 3)


def with_rect(img: np.ndarray, x: int, y: int, w: int = 30, h: int = 70) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (20, 30, 230), -1)
    return out


def noisy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)


def feed(det: MotionDetector, frames, start: int = 0):
    return [det.update(f, (start + i) / FPS) for i, f in enumerate(frames)]


# ------------------------------------------------------------------------------------------------ detector

@pytest.mark.parametrize("method", METHODS)
def test_static_scene_has_no_motion_and_a_moving_rectangle_is_boxed(method):
    rng = np.random.default_rng(1)
    bg = background()
    det = MotionDetector(method=method, calibration_s=0.4)
    still = feed(det, [noisy(bg, rng) for _ in range(30)])
    assert [r.calibrating for r in still] == [True] * 10 + [False] * 20
    assert not any(r.motion for r in still)
    moving = feed(det, [noisy(with_rect(bg, 40 + 6 * k, 150), rng) for k in range(20)], start=30)
    assert all(r.motion for r in moving)
    for k, r in enumerate(moving):
        assert len(r.boxes) == 1, (k, r.boxes)
        x1, y1, x2, y2 = r.boxes[0]
        # covers the rectangle (40 + 6k .. +30, 150 .. 220), a few pixels of dilation and trail around it
        assert x1 <= 40 + 6 * k + 1 and x2 >= 40 + 6 * k + 29 and y1 <= 151 and y2 >= 219
        assert x2 - x1 <= 30 + 6 + 24 and y2 - y1 <= 70 + 24


def test_motion_boxes_are_in_original_frame_pixels_for_a_large_frame():
    bg = background(720, 1280)
    det = MotionDetector(width=320, calibration_s=0.0)
    feed(det, [bg, bg])
    r = det.update(with_rect(bg, 600, 300, 80, 200), 2 / FPS)
    assert r.motion and len(r.boxes) == 1
    x1, y1, x2, y2 = r.boxes[0]
    assert 590 <= x1 <= 600 and 290 <= y1 <= 300 and 680 <= x2 <= 690 and 500 <= y2 <= 510


@pytest.mark.parametrize("method", METHODS)
def test_light_switch_does_not_fire_after_calibration(method):
    rng = np.random.default_rng(2)
    bg = background()
    bright = cv2.convertScaleAbs(bg, alpha=1.0, beta=70)
    det = MotionDetector(method=method, calibration_s=0.4)
    feed(det, [noisy(bg, rng) for _ in range(25)])
    after = feed(det, [noisy(bright, rng) for _ in range(40)], start=25)
    assert det.lighting_jumps == 1
    assert not any(r.motion for r in after)
    assert [r.calibrating for r in after[:12]] == [True] * 10 + [False] * 2
    # and it still sees a walker under the new light
    walk = feed(det, [noisy(with_rect(bright, 100 + 6 * k, 120), rng) for k in range(5)], start=65)
    assert all(r.motion for r in walk)
    assert det.lighting_jumps == 1


def flicker(img: np.ndarray, k: int) -> np.ndarray:
    """The region x 300..420, y 20..100 changes brightness at random every frame (a screen, a blinking sign)."""
    out = img.copy()
    gain = np.random.default_rng(k).uniform(0.2, 1.5)
    out[20:100, 300:420] = cv2.convertScaleAbs(out[20:100, 300:420], alpha=gain, beta=0)
    return out


@pytest.mark.parametrize("method", ["diff", "mog2"])
def test_mask_ignores_a_flickering_region(method):
    bg = background()
    frames = [flicker(bg, k) for k in range(40)]
    unmasked = feed(MotionDetector(method=method, calibration_s=0.2), frames)
    assert sum(r.motion for r in unmasked[5:]) >= 10  # the flicker is motion without a mask
    masked_det = MotionDetector(method=method, calibration_s=0.2, mask=[[290, 10, 430, 10, 430, 110, 290, 110]])
    masked = feed(masked_det, frames)
    assert not any(r.motion for r in masked)
    walk = feed(masked_det, [flicker(with_rect(bg, 40 + 6 * k, 200), 40 + k) for k in range(6)], start=40)
    assert all(r.motion for r in walk)
    assert all(len(r.boxes) == 1 and r.boxes[0][2] < 290 for r in walk)


def test_min_area_in_pixels_and_as_a_fraction():
    bg = background()
    small = bg.copy()
    cv2.rectangle(small, (200, 200), (207, 207), (0, 0, 255), -1)  # 8 x 8 = 64 px
    for min_area, expect in ((20.0, True), (400.0, False), (0.0002, True), (0.01, False)):
        det = MotionDetector(calibration_s=0.0, dilate=0, blur=0, min_area=min_area)
        feed(det, [bg, bg])
        assert det.update(small, 1.0).motion is expect, min_area


def test_detector_rejects_bad_settings_with_the_key():
    with pytest.raises(ConfigError, match="method: expected one of diff, mog2, knn, got 'sub'"):
        MotionDetector(method="sub")
    with pytest.raises(ConfigError, match="blur"):
        MotionDetector(blur=4)
    with pytest.raises(ConfigError, match="motion_mask"):
        MotionDetector(mask=[[0, 0, 10, 10]])


# ------------------------------------------------------------------------------------------------ gate

def no_motion() -> MotionResult:
    return MotionResult(False, np.zeros((0, 4), np.float32), 0.0)


def some_motion() -> MotionResult:
    return MotionResult(True, np.array([[10, 10, 50, 90]], np.float32), 0.01)


def test_gate_skips_frames_without_motion_or_tracks_and_runs_on_motion():
    gate = MotionGate(mode="motion")
    seq = [no_motion()] * 5 + [some_motion()] * 3 + [no_motion()] * 4
    decisions = [gate.decide(i / FPS, m) for i, m in enumerate(seq)]
    assert [d.infer for d in decisions] == [False] * 5 + [True] * 3 + [False] * 4
    assert {d.reason for d in decisions} == {"idle", "motion"}
    assert gate.summary() == {"inference_calls": 3, "motion_frames": 3, "skipped_frames": 9, "frames": 12,
                              "reasons": {"idle": 9, "motion": 3}}


def test_gate_keeps_detecting_while_tracks_are_active_and_skips_once_they_are_stationary():
    gate = MotionGate(mode="motion", stationary_s=2.0)
    # tracks active, no motion, moving (still_s 0) -> infer
    assert gate.decide(0.0, no_motion(), active_tracks=2, still_s=0.0) == (True, "tracks")
    # still for less than stationary_s -> still infer
    assert gate.decide(0.04, no_motion(), active_tracks=2, still_s=1.96) == (True, "tracks")
    # still beyond stationary_s -> skip, the tracker keeps them
    assert gate.decide(0.08, no_motion(), active_tracks=2, still_s=2.0) == (False, "stationary")
    assert gate.decide(0.12, no_motion(), active_tracks=2, still_s=5.0) == (False, "stationary")
    # motion always wins; tracks ended -> idle
    assert gate.decide(0.16, some_motion(), active_tracks=2, still_s=5.0) == (True, "motion")
    assert gate.decide(0.20, no_motion(), active_tracks=0, still_s=0.0) == (False, "idle")


def test_gate_refreshes_stationary_tracks_once_per_refresh_s():
    gate = MotionGate(mode="motion", stationary_s=1.0, refresh_s=1.0)
    infers = [gate.decide(i / FPS, no_motion(), active_tracks=1, still_s=5.0).infer for i in range(100)]
    assert np.flatnonzero(infers).tolist() == [0, 25, 50, 75]


def test_gate_runs_while_the_motion_detector_calibrates():
    calibrating = MotionResult(False, np.zeros((0, 4), np.float32), 0.0, calibrating=True)
    assert MotionGate().decide(0.0, calibrating) == (True, "calibrating")
    assert MotionGate(infer_calibrating=False).decide(0.0, calibrating) == (False, "idle")


def test_gate_fps_5_on_a_25_fps_clock_infers_exactly_one_frame_in_five():
    gate = MotionGate(mode="always", fps=5)
    infers = [gate.decide(i / FPS).infer for i in range(250)]
    assert np.flatnonzero(infers).tolist() == list(range(0, 250, 5))
    assert gate.summary()["inference_calls"] == 50 and gate.summary()["skipped_frames"] == 200
    assert gate.summary()["reasons"] == {"always": 50, "rate": 200}


def test_gate_fps_cap_applies_to_motion_mode_from_the_first_wanted_frame_of_each_slot():
    gate = MotionGate(mode="motion", fps=5)
    motion = [i >= 7 for i in range(30)]  # motion from frame 7 on
    infers = [gate.decide(i / FPS, m).infer for i, m in enumerate(motion)]
    assert np.flatnonzero(infers).tolist() == [7, 10, 15, 20, 25]


def test_gate_rejects_bad_settings_with_the_key():
    with pytest.raises(ConfigError, match="detect.mode: expected one of always, motion, got 'sometimes'"):
        MotionGate(mode="sometimes")
    with pytest.raises(ConfigError, match="detect.fps: expected a number > 0"):
        MotionGate(fps=0)


def tracked(boxes, ids) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(b, np.ones(len(b)), np.zeros(len(b)), track_id=np.asarray(ids))


def test_stillness_measures_how_long_every_track_stayed_in_place():
    still = TrackStillness(move_frac=0.25, min_move_px=4.0)
    assert still.still_s(0.0) == 0.0
    parked = [100, 100, 200, 150]  # larger side 100 -> moves up to 25 px are jitter
    for k in range(50):  # a parked car with jitter, a walker moving 5 px a frame (re-anchors every 6 frames)
        x = 300 + 5 * k
        still.update(k / FPS, tracked([[p + (k % 3) for p in parked], [x, 100, x + 30, 190]], [1, 2]))
    assert still.active == 2
    assert still.still_s(49 / FPS) < 6 / FPS + 1e-9  # the walker keeps moving
    for k in range(50, 100):
        still.update(k / FPS, tracked([parked], [1]))  # the walker left
    assert still.active == 1
    assert still.still_s(99 / FPS) == pytest.approx(99 / FPS)  # the car has not moved since frame 0
    still.update(4.0, tracked([[150, 100, 250, 150]], [1]))  # it drives off
    assert still.still_s(4.0) == 0.0


# ------------------------------------------------------------------------------------------------ regions

MODEL_HW = (384, 640)


def test_merge_boxes_joins_overlapping_and_near_boxes_only():
    boxes = [[0, 0, 10, 10], [12, 0, 20, 10], [100, 100, 110, 110], [5, 5, 30, 30]]
    assert merge_boxes(boxes, gap=0).tolist() == [[0, 0, 30, 30], [100, 100, 110, 110]]
    assert merge_boxes([[0, 0, 10, 10], [12, 0, 20, 10]], gap=2).tolist() == [[0, 0, 20, 10]]
    assert merge_boxes([[0, 0, 10, 10], [13, 0, 20, 10]], gap=2).tolist() == [[0, 0, 10, 10], [13, 0, 20, 10]]


def test_plan_regions_gives_model_shaped_crops_around_the_boxes_inside_the_frame():
    frame_hw = (1080, 1920)
    boxes = np.array([[100, 80, 130, 140], [1500, 900, 1530, 980]], np.float32)
    regions = plan_regions(boxes, frame_hw, MODEL_HW)
    assert len(regions) == 2
    for r, b in zip(regions, boxes):
        h, w = r.hw
        assert (h, w) == MODEL_HW  # never upscaled (max_zoom 1), the model's aspect: the letterbox pads nothing
        assert 0 <= r.x1 and 0 <= r.y1 and r.x2 <= 1920 and r.y2 <= 1080
        assert r.x1 <= b[0] and r.y1 <= b[1] and r.x2 >= b[2] and r.y2 >= b[3]
    # near boxes share one crop; boxes all over the frame fall back to the whole frame
    near = plan_regions(np.array([[100, 80, 130, 140], [300, 200, 330, 260]]), frame_hw, MODEL_HW)
    assert len(near) == 1 and near[0].hw == MODEL_HW
    spread = np.array([[x, y, x + 30, y + 60] for x in (100, 800, 1500) for y in (100, 500, 900)], np.float32)
    assert plan_regions(spread, frame_hw, MODEL_HW) == [Region(0, 0, 1920, 1080)]
    assert plan_regions(np.zeros((0, 4)), frame_hw, MODEL_HW) == []
    # a frame no larger than the model: the whole frame
    assert plan_regions(boxes[:1], (360, 480), MODEL_HW) == [Region(0, 0, 480, 360)]
    # zoom: a 2x-enlarged crop is half the model size
    assert plan_regions(boxes[:1], frame_hw, MODEL_HW, max_zoom=2.0)[0].hw == (192, 320)


def test_region_boxes_map_back_to_original_pixels_exactly():
    frame = background(1080, 1920)
    region = plan_regions(np.array([[700, 500, 740, 580]], np.float32), (1080, 1920), (640, 640))[0]
    assert region.hw == (640, 640)
    crop = region.crop(frame)
    assert np.shares_memory(crop, frame) and crop.shape == (640, 640, 3)
    boxed, info = letterbox(crop, (640, 640))
    assert info.ratio == 1.0 and info.pad == (0.0, 0.0)
    # a detection in letterbox pixels of the crop -> crop pixels -> frame pixels
    in_crop = Detections(info.to_original(np.array([[12.5, 40.25, 80.0, 200.75]], np.float32)), [0.9], [0])
    out = regions_to_frame([in_crop], [region], (1080, 1920))
    np.testing.assert_array_equal(out.xyxy, np.array([[region.x1 + 12.5, region.y1 + 40.25, region.x1 + 80.0,
                                                       region.y1 + 200.75]], np.float32))
    # a half-size crop enlarged 2x by the letterbox maps back through the ratio, then the offset
    small = Region(1000, 300, 1320, 492)
    _, info2 = letterbox(small.crop(frame), MODEL_HW)
    assert info2.ratio == 2.0
    back = regions_to_frame([Detections(info2.to_original(np.array([[100, 50, 300, 250]], np.float32)), [0.8],
                                        [0])], [small], (1080, 1920))
    np.testing.assert_array_equal(back.xyxy, np.array([[1050, 325, 1150, 425]], np.float32))


def test_regions_to_frame_merges_duplicates_across_overlapping_regions():
    a, b = Region(0, 0, 640, 384), Region(400, 0, 1040, 384)
    # the same person seen by both crops (frame box 500..540 x 100..200), and one seen cut by a's right edge
    da = Detections(np.array([[500, 100, 540, 200], [610, 50, 640, 150]], np.float32), [0.9, 0.7], [0, 0])
    db = Detections(np.array([[100.5, 100, 140, 200], [200, 50, 260, 150]], np.float32), [0.8, 0.85], [0, 0])
    out = regions_to_frame([da, db], [a, b], (1080, 1920))
    np.testing.assert_array_equal(out.xyxy, np.array([[500, 100, 540, 200], [600, 50, 660, 150]], np.float32))
    np.testing.assert_array_equal(out.score, np.array([0.9, 0.85], np.float32))
    # another class at the same place is kept
    dc = Detections(np.array([[100, 100, 140, 200]], np.float32), [0.6], [2])
    assert len(regions_to_frame([da[:1], dc], [a, b], (1080, 1920))) == 2
    with pytest.raises(ValueError, match="expected one Detections per region"):
        regions_to_frame([da], [a, b], (1080, 1920))


def test_from_config_builds_both_and_names_the_closest_key_for_a_typo():
    gate = MotionGate.from_config({"mode": "always", "fps": 5})
    assert (gate.mode, gate.fps) == ("always", 5)
    assert MotionDetector.from_config({"method": "knn", "min_area": 50}).method == "knn"
    with pytest.raises(ConfigError, match="detect: unknown key 'fsp' \\(did you mean 'fps'\\?\\)"):
        MotionGate.from_config({"fsp": 5})
    with pytest.raises(ConfigError, match="motion: unknown key 'min_aera' \\(did you mean 'min_area'\\?\\)"):
        MotionDetector.from_config({"min_aera": 5})
