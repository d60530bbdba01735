"""edge_detect.stream.processors.bytetrack: ids through occlusion, turn-backs, class flicker; events; settings."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.errors import ConfigError
from edge_detect.stream.processors.bytetrack import ByteTrack, giou_distance, iou_distance
from edge_detect.boxes import box_iou
from edge_detect.types import Detections, ObjectEnd, ObjectNew
from synthetic_world import Actor, FakeDetector, World, events_of, gate_scene, run_processors

NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"]


def ids_per_actor(world: World, outputs, min_iou: float = 0.3) -> dict:
    """{actor name: set of track ids given to boxes overlapping its ground truth}."""
    seen = {a.name: set() for a in world.actors}
    for f, dets in enumerate(outputs):
        for box, tid in zip(dets.xyxy, dets.track_id):
            gts = [(a.name, a.box(f)) for a in world.actors if a.box(f) is not None]
            ious = [box_iou(box[None], gt[None])[0, 0] for _, gt in gts]
            best = int(np.argmax(ious))
            assert ious[best] >= min_iou, f"frame {f}: box {box} matches no actor"
            seen[gts[best][0]].add(int(tid))
    return seen


def test_gate_scene_one_id_per_object():
    world, _ = gate_scene()
    tracker = ByteTrack(names=NAMES)
    out = run_processors(world, FakeDetector(world, noise_px=1.0, seed=1), [tracker])
    ids = ids_per_actor(world, out)
    assert ids == {"a": {1}, "c": {2}, "b": {3}, "d": {4}, "e": {5}}  # confirmation order, no gaps
    assert tracker.summary()["tracker"]["tracks"] == 5
    # b is hidden behind the pillar (frames ~65-75) and keeps its id
    b_frames = [f for f, d in enumerate(out) if 3 in d.track_id.tolist()]
    assert min(b_frames) < 64 and max(b_frames) > 78 and len(set(range(64, 77)) - set(b_frames)) >= 9


def slowing_walker(hidden_speed: float) -> World:
    """A walker that changes speed while hidden ~1 s behind a pillar (constant-velocity prediction is off by
    ``(9 - hidden_speed) * 10`` px when it reappears); 10 fps."""
    # 9 px/frame until x=160 (frame 15), then hidden_speed behind the pillar [180, 300], then 9 px/frame again
    hide_frames = int(round(150 / hidden_speed))
    keys = [(0, 25.0, 300.0), (15, 160.0, 300.0), (15 + hide_frames, 310.0, 300.0),
            (15 + hide_frames + 16, 454.0, 300.0)]
    return World([Actor("w", keys, height=110, crop=1)], keys[-1][0] + 1, occluders=[(180, 150, 300, 360)])


@pytest.mark.parametrize("hidden_speed", [9.0, 7.0, 6.0, 11.0, 14.0])
def test_walker_hidden_about_a_second_keeps_its_id(hidden_speed):
    world = slowing_walker(hidden_speed)
    det = FakeDetector(world, noise_px=1.0, seed=2)
    gap = [f for f in range(world.frames) if not len(det(f))]
    det = FakeDetector(world, noise_px=1.0, seed=2)
    assert 9 <= len(gap) <= 19, gap  # hidden 0.9-1.9 s at 10 fps (slower = longer)
    tracker = ByteTrack()
    out = run_processors(world, det, [tracker])
    assert ids_per_actor(world, out) == {"w": {1}}


def test_stitching_is_what_keeps_a_slowed_walker():
    world = slowing_walker(12.0)  # ~30 px ahead of the constant-velocity prediction when it reappears
    plain = ByteTrack(stitch=False)
    ids = ids_per_actor(world, run_processors(world, FakeDetector(world, seed=2), [plain]))
    assert ids == {"w": {1, 2}}  # plain ByteTrack splits it
    stitched = ByteTrack()
    assert ids_per_actor(world, run_processors(world, FakeDetector(world, seed=2), [stitched])) == {"w": {1}}
    assert stitched.summary()["tracker"]["stitched"] == 1


def test_class_flicker_keeps_id_and_class():
    car = Actor("car", [(0, 40, 200), (40, 440, 200)], height=60, crop=1, class_id=2,
                flicker={f: 7 for f in (10, 11, 12, 20, 21)})
    world = World([car], 41)
    tracker = ByteTrack(names=NAMES)
    out = run_processors(world, FakeDetector(world, seed=3), [tracker])
    assert ids_per_actor(world, out) == {"car": {1}}
    assert {int(c) for d in out for c in d.class_id} == {2}  # the track's (majority) class
    raw = [int(c) for d in out[10:13] for c in d.data["det_class_id"]]
    assert raw == [7, 7, 7]
    (new,) = events_of(out, "object_new")
    assert new["class_name"] == "car"


def test_unconfirmed_tracks_never_get_an_id():
    world = World([Actor("w", [(0, 40, 200), (30, 440, 200)], height=100, crop=1)], 31)
    spurious = {5: (300, 20, 330, 80), 6: (301, 21, 331, 81), 12: (100, 250, 140, 330)}  # 2-frame and 1-frame
    out = run_processors(world, FakeDetector(world, seed=4, false_positives=spurious), [ByteTrack(min_hits=3)])
    all_ids = [int(t) for d in out for t in d.track_id]
    assert set(all_ids) == {1}  # only the walker, confirmed after 3 hits; no -1, no shared placeholder
    assert [len(d) for d in out[:2]] == [0, 0] and len(out[2]) == 1
    kept = run_processors(world, FakeDetector(world, seed=4, false_positives=spurious),
                          [ByteTrack(min_hits=3, keep_unconfirmed=True)])
    assert [d.track_id.tolist() for d in kept[5:7]] == [[1, -1], [1, -1]]
    assert kept[0].track_id.tolist() == [-1]


def test_low_score_detections_keep_a_track_alive():
    world = World([Actor("w", [(0, 40, 200), (30, 440, 200)], height=100, crop=1)], 31)
    low = {"w": range(10, 16)}
    out = run_processors(world, FakeDetector(world, seed=5, low_score_frames=low), [ByteTrack()])
    assert [d.track_id.tolist() for d in out[10:16]] == [[1]] * 6
    np.testing.assert_allclose([float(d.score[0]) for d in out[10:16]], 0.3, rtol=1e-6)
    # without the second stage (low_thresh = high_thresh) those frames are simply not output, id survives
    out = run_processors(world, FakeDetector(world, seed=5, low_score_frames=low),
                         [ByteTrack(low_thresh=0.5, high_thresh=0.5)])
    assert [len(d) for d in out[10:16]] == [0] * 6 and out[16].track_id.tolist() == [1]


@pytest.mark.parametrize("fps, gap_s, same", [(10, 1.0, True), (30, 1.0, True), (10, 3.0, False), (30, 3.0, False)])
def test_track_buffer_is_in_seconds(fps, gap_s, same):
    gap = int(gap_s * fps)
    n = 20 + gap + 10
    world = World([Actor("w", [(0, 200, 200), (n, 200, 200)], height=100, crop=1)], n, fps=fps)
    det = FakeDetector(world, noise_px=0.0)
    hide = set(range(20, 20 + gap))
    tracker = ByteTrack(buffer_s=2.0)
    out = run_processors(world, lambda f: Detections.empty() if f in hide else det(f), [tracker])
    assert out[-1].track_id.tolist() == ([1] if same else [2])
    ends = events_of(out, "object_end")
    assert len(ends) == (0 if same else 1)


def test_events_schema_and_finish():
    world = World([Actor("w", [(0, 40, 200), (20, 240, 200)], height=100, crop=1)], 21)
    tracker = ByteTrack(names=NAMES, min_hits=2)
    out = run_processors(world, FakeDetector(world, noise_px=0.0), [tracker])
    (new,) = events_of(out, "object_new")
    assert isinstance(new, ObjectNew)
    assert set(new) == {"type", "track_id", "class_name", "score", "xyxy", "entered", "frame", "wall_time"}
    assert (new["track_id"], new["class_name"], new["frame"], new["score"], new["entered"]) == \
        (1, "person", 1, 0.85, "")  # appeared inside the picture
    assert new["wall_time"] == pytest.approx(world.frame(1).wall_time)
    np.testing.assert_allclose(new["xyxy"], world.actors[0].box(1), atol=0.01)
    (end,) = tracker.finish(world.frame(20))
    assert isinstance(end, ObjectEnd)
    assert set(end) == {"type", "track_id", "class_name", "first_seen", "last_seen", "first_frame", "last_frame",
                        "best_score", "dwell_s", "entered", "exited", "frame", "wall_time"}
    assert (end["type"], end["track_id"], end["first_frame"], end["last_frame"], end["best_score"]) == \
        ("object_end", 1, 0, 20, 0.85)
    assert (end["dwell_s"], end["entered"], end["exited"]) == (2.0, "", "")  # 20 frames at 10 fps, inside
    assert end["first_seen"] == pytest.approx(world.frame(0).wall_time)
    assert end["last_seen"] == pytest.approx(world.frame(20).wall_time)
    assert tracker.finish(world.frame(20)) == []


def test_trail_and_detection_order():
    world = World([Actor("a", [(0, 40, 150), (10, 140, 150)], height=80, crop=1),
                   Actor("b", [(0, 400, 300), (10, 300, 300)], height=80, crop=1)], 11)
    base = FakeDetector(world, noise_px=0.0)

    def reversed_det(f):
        d = base(f)
        return d[np.arange(len(d))[::-1]]

    out = run_processors(world, reversed_det, [ByteTrack(trail=4)])
    last = out[-1]
    assert last.track_id.tolist() == [1, 2]  # detector order kept (b first, confirmed first)
    trail = last.data["trail"]
    assert trail.shape == (2, 4, 2) and trail.dtype == np.float32
    np.testing.assert_allclose(trail[1, :, 0], [110, 120, 130, 140])  # a's bottom-centre x, oldest first
    np.testing.assert_allclose(trail[1, :, 1], 150)
    early = out[2].data["trail"]
    assert np.isnan(early[:, :1]).all() and not np.isnan(early[:, 1:]).any()


def test_dropped_frames_advance_the_motion_model():
    world = World([Actor("w", [(0, 20, 200), (40, 420, 200)], height=60, crop=1)], 41)
    det = FakeDetector(world, noise_px=0.0)
    tracker = ByteTrack(stitch=False)
    frames = list(range(0, 12)) + list(range(14, 41, 3))  # a live source dropping 2 of every 3 frames
    ids = set()
    for f in frames:
        ids.update(tracker.update(det(f), world.frame(f)).track_id.tolist())
    assert ids == {1}


def test_custom_distance_and_giou():
    calls = []

    def centroid(tracks, dets):
        calls.append((tracks.shape, dets.shape))
        ct = (tracks[:, None, :2] + tracks[:, None, 2:]) / 2
        cd = (dets[None, :, :2] + dets[None, :, 2:]) / 2
        return np.linalg.norm(ct - cd, axis=2) / 100.0

    world = World([Actor("w", [(0, 40, 200), (30, 440, 200)], height=100, crop=1)], 31)
    out = run_processors(world, FakeDetector(world, seed=6), [ByteTrack(distance=centroid)])
    assert ids_per_actor(world, out) == {"w": {1}} and calls
    a = np.array([[0, 0, 10, 10]], np.float64)
    b = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [5, 0, 15, 10]], np.float64)
    np.testing.assert_allclose(iou_distance(a, b), [[0, 1, 1 - 50 / 150]], rtol=1e-6)
    # GIoU of disjoint boxes: IoU 0 minus (hull - union) / hull = -(300 - 200) / 300
    np.testing.assert_allclose(giou_distance(a, b), [[0, (1 + 1 / 3) / 2, (1 - 1 / 3) / 2]], rtol=1e-6)


def test_clone_has_same_settings_and_fresh_state():
    tracker = ByteTrack(min_hits=1, buffer_s=0.5, names=NAMES)
    world = World([Actor("w", [(0, 40, 200), (5, 90, 200)], height=100, crop=1)], 6)
    run_processors(world, FakeDetector(world), [tracker])
    twin = tracker.clone()
    assert (twin.min_hits, twin.buffer_s, twin.names, twin.active_tracks) == (1, 0.5, tuple(NAMES), 0)
    out = run_processors(world, FakeDetector(world), [twin])
    assert out[0].track_id.tolist() == [1]


@pytest.mark.parametrize("kwargs, match", [
    ({"high_thresh": 0.3, "low_thresh": 0.5},
     r"low_thresh <= high_thresh: expected 0 <= low <= high <= 1, got \(0.5, 0.3\)"),
    ({"match_thresh": 0}, r"match_thresh: expected a value in \(0, 1\], got 0"),
    ({"min_hits": 0}, "min_hits: expected >= 1, got 0"),
    ({"buffer_s": -1}, "buffer_s: expected >= 0 seconds, got -1"),
    ({"fps": 0}, "fps: expected > 0, got 0"),
    ({"distance": "cosine"}, "distance: expected one of iou, giou or a callable, got 'cosine'"),
    ({"distance": 3}, "distance: expected a name or a callable, got int"),
    ({"trail": -2}, "trail: expected >= 0 points, got -2"),
    ({"stitch_size_ratio": 0.5}, "stitch_size_ratio: expected >= 1, got 0.5"),
    ({"cross_class_iou": 0}, r"cross_class_iou: expected a value in \(0, 1\] or null, got 0"),
    ({"velocity_window_s": 0}, "velocity_window_s: expected > 0 seconds, got 0"),
    ({"tentative_gap": -1}, "tentative_gap: expected >= 0 frames, got -1"),
    ({"meters_per_px": -0.1}, "meters_per_px: expected > 0 or null, got -0.1"),
])
def test_invalid_settings(kwargs, match):
    with pytest.raises(ConfigError, match="bytetrack " + match):
        ByteTrack(**kwargs)


@pytest.mark.parametrize("speed", [10, 30, 60])  # px/frame for a 41 px wide box: up to 1.5 widths per frame
def test_fast_objects_are_picked_up_and_kept(speed):
    n = int(440 / speed) + 1
    world = World([Actor("w", [(0, 20, 200), (n, 20 + speed * n, 200)], height=130, crop=1)], n + 1)
    out = run_processors(world, FakeDetector(world, noise_px=1.0, seed=0), [ByteTrack()])
    assert ids_per_actor(world, out) == {"w": {1}}
    assert [len(d) for d in out[:3]] == [0, 0, 1]  # confirmed on the third sighting, whatever the speed


def test_object_that_stops_then_hides_keeps_its_id():
    # 20 px/frame, stops at frame 10, hidden frames 20-29 where it stands: the constant-velocity prediction has
    # drifted away, the "where it was last seen" hypothesis takes it back
    world = World([Actor("w", [(0, 100, 250), (10, 300, 250), (50, 300, 250)], height=100, crop=1)], 51)
    det = FakeDetector(world, noise_px=0.5)
    out = run_processors(world, lambda f: Detections.empty() if 20 <= f < 30 else det(f), [ByteTrack()])
    assert ids_per_actor(world, out) == {"w": {1}}


def test_a_new_object_where_a_lost_one_was_last_seen_far_away_gets_a_new_id():
    # b leaves at the bottom left and is lost; 1.5 s later e appears 115 px above where b was last seen
    world = World([Actor("b", [(0, 300, 355), (20, 20, 355)], height=110, crop=1),
                   Actor("e", [(35, 20, 240), (60, 300, 240)], height=110, crop=1)], 61)
    out = run_processors(world, FakeDetector(world, noise_px=1.0), [ByteTrack()])
    assert ids_per_actor(world, out) == {"b": {1}, "e": {2}}


# ------------------------------------------------------------------------------------------------ issue 21


def edge_handoff(gap_s: float, fps: float = 10.0, third: bool = False) -> World:
    """The issue's case on a 480x360 frame (gate x=240): ``a`` walks left to right across the gate and out
    through the right edge; ``gap_s`` after its box left the picture ``b`` comes in through the right edge and
    walks back across the gate and out through the left edge; with ``third``, ``c`` comes in through the left
    edge ``gap_s`` after ``b`` left, walking right. 11 px per frame at 10 fps."""
    f = lambda s: int(round(s * fps))  # noqa: E731
    speed = 110.0 / fps
    span = 480 + 2 * 20  # from just outside one edge to just outside the other (boxes 34 px wide)
    walk = int(round(span / speed))
    a = Actor("a", [(0, -20, 300), (walk, 500, 300)], height=110, crop=1)
    b0 = walk + f(gap_s)
    b = Actor("b", [(b0, 500, 290), (b0 + walk, -20, 290)], height=110, crop=1)
    actors = [a, b]
    if third:
        c0 = b0 + walk + f(gap_s)
        actors.append(Actor("c", [(c0, -20, 280), (c0 + walk, 500, 280)], height=110, crop=1))
    return World(actors, actors[-1].keyframes[-1][0] + 1, fps=fps)


@pytest.mark.parametrize("gap_s, fps", [(0.5, 10.0), (1.0, 10.0), (0.5, 30.0)])
def test_a_person_entering_where_another_left_gets_a_new_track_and_both_crossings_count(gap_s, fps):
    from edge_detect.stream.processors.lines import LineCounter
    from synthetic_world import GATE

    world = edge_handoff(gap_s, fps)
    tracker, lines = ByteTrack(), LineCounter({"gate": GATE})
    out = run_processors(world, FakeDetector(world, noise_px=1.0, seed=11), [tracker, lines])
    assert ids_per_actor(world, out) == {"a": {1}, "b": {2}}
    assert lines.counts == {"gate": {"in": 1, "out": 1}}  # out (a, left to right) and in (b, right to left)
    assert tracker.summary()["tracker"] == {"name": "bytetrack", "tracks": 2, "stitched": 0}


def test_the_third_object_of_the_issue_gets_its_own_track_too():
    from edge_detect.stream.processors.lines import LineCounter
    from synthetic_world import GATE

    world = edge_handoff(1.0, third=True)
    lines = LineCounter({"gate": GATE})
    out = run_processors(world, FakeDetector(world, noise_px=1.0, seed=12), [ByteTrack(), lines])
    assert ids_per_actor(world, out) == {"a": {1}, "b": {2}, "c": {3}}
    assert lines.counts == {"gate": {"in": 1, "out": 2}}


def test_a_track_that_left_through_an_edge_says_so_and_ends():
    world = edge_handoff(2.0)
    tracker = ByteTrack(names=NAMES)
    det = FakeDetector(world, noise_px=1.0, seed=13)
    a_last = max(f for f in range(world.frames) if world.visible_box(world.actors[0], f) is not None)
    infos, ends = {}, {}
    for f in range(world.frames):
        out = tracker.update(det(f), world.frame(f))
        infos.update({i.track_id: i for i in tracker.track_infos()})
        ends.update({e["track_id"]: f for e in out.metadata["events"] if e["type"] == "object_end"})
    assert (infos[1].entered, infos[1].exited) == ("left", "right")
    assert (infos[2].entered, infos[2].exited) == ("right", "left")
    assert ends[1] - a_last <= 4  # ended within exit_grace_s (0.3 s) of its last sighting, not after buffer_s


def test_a_lost_track_is_only_reattached_ahead_of_its_own_motion():
    # w walks right at 9 px/frame and is missed from frame 20 on; at frame 26 a person shows up either ahead of
    # it (where it would be at 70 % of its speed: w itself) or 80 px behind where it was last seen
    def run(x_new):
        w = Actor("w", [(0, 40, 250), (19, 211, 250)], height=110, crop=1)
        n = Actor("n", [(26, x_new, 250), (40, x_new + 9 * 14 * (1 if x_new > 211 else -1), 250)], height=110, crop=1)
        world = World([w, n], 41)
        return ids_per_actor(world, run_processors(world, FakeDetector(world, noise_px=1.0, seed=14), [ByteTrack()]))

    assert run(211 + 0.7 * 9 * 7) == {"w": {1}, "n": {1}}  # ahead, reachable: the same object
    assert run(211 - 80) == {"w": {1}, "n": {2}}  # behind it: someone else


def test_car_and_truck_boxes_on_one_vehicle_make_one_track():
    frames = range(0, 41)
    car = Actor("car", [(0, 40, 200), (40, 440, 200)], height=60, crop=1, class_id=2,
                duplicates={f: 7 for f in frames if f % 3 != 1}, flicker={f: 7 for f in (5, 6, 7, 20)})
    world = World([car], 41)
    out = run_processors(world, FakeDetector(world, seed=15), [ByteTrack(names=NAMES)])
    assert ids_per_actor(world, out) == {"car": {1}}
    assert {int(c) for d in out for c in d.class_id} == {2}
    assert all(len(d) <= 1 for d in out)  # the duplicate box is not output as a second object
    plain = run_processors(world, FakeDetector(world, seed=15), [ByteTrack(names=NAMES, cross_class_iou=None)])
    assert len({int(t) for d in plain for t in d.track_id}) == 2  # without the suppression: a second track


def test_per_object_dwell_speed_and_entry_edge():
    # 10 fps, 12 px per frame = 120 px/s, from outside the left edge
    world = World([Actor("w", [(0, -20, 250), (30, 340, 250)], height=110, crop=1)], 31)
    tracker = ByteTrack(meters_per_px=0.01)
    out = run_processors(world, FakeDetector(world, noise_px=0.0), [tracker])
    last = out[-1]
    assert last.data["entered"].tolist() == ["left"]
    np.testing.assert_allclose(last.data["speed_px_s"], [120.0], rtol=0.05)
    np.testing.assert_allclose(last.data["velocity_px_s"], [[120.0, 0.0]], atol=6.0)
    np.testing.assert_allclose(last.data["speed_m_s"], last.data["speed_px_s"] * 0.01, rtol=1e-6)
    first = min(f for f in range(31) if world.visible_box(world.actors[0], f) is not None)
    assert last.data["dwell_s"][0] == pytest.approx((30 - first) / 10.0)
    (info,) = tracker.track_infos()
    assert (info.track_id, info.state, info.entered, info.exited) == (1, "tracked", "left", "")
    assert info.speed_px_s == pytest.approx(float(last.data["speed_px_s"][0]))
    assert info.speed_m_s == pytest.approx(info.speed_px_s * 0.01)


@pytest.mark.parametrize("freeze_s, same", [(2.0, True), (2.8, True), (4.0, False)])
def test_a_camera_freeze_does_not_expire_tracks(freeze_s, same):
    # a walker missed 1 s just before the camera delivers nothing for freeze_s: 1 s + freeze > buffer_s (3 s)
    # only for the longest freeze, which is beyond max_freeze_s (3 s) and counts in full
    n = 100
    world = World([Actor("w", [(0, 20, 250), (n, 420, 250)], height=110, crop=1)], n)
    det = FakeDetector(world, noise_px=1.0, seed=16)
    frozen = set(range(30, 30 + int(freeze_s * 10)))
    tracker = ByteTrack()
    ids = set()
    for f in range(n):
        if f in frozen:
            continue
        dets = Detections.empty() if 20 <= f < 30 else det(f)
        ids.update(tracker.update(dets, world.frame(f)).track_id.tolist())
    assert ids == ({1} if same else {1, 2})


def test_a_tentative_track_survives_one_missed_frame():
    # 45 px per frame (1.3 box widths), missed on its second frame: confirmed on its third sighting all the same
    world = World([Actor("w", [(0, -20, 250), (12, 520, 250)], height=110, crop=1)], 13)
    det = FakeDetector(world, noise_px=1.0, seed=17)
    out = run_processors(world, lambda f: Detections.empty() if f == 2 else det(f), [ByteTrack()])
    assert ids_per_actor(world, out) == {"w": {1}}
    first = min(f for f, d in enumerate(out) if len(d))
    assert first <= 4
    strict = run_processors(world, lambda f: Detections.empty() if f == 2 else det(f),
                            [ByteTrack(tentative_gap=0)])
    assert min(f for f, d in enumerate(strict) if len(d)) > first
