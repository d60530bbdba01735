"""The recorder core on a real H.264 file: pre/post-roll clips that decode, byte-identical remux, one clip for
events 3 s apart, clip_saved events, the encoded-frames path, a failing disk, retention with an open clip."""
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from edge_detect.recording import RecordConfig, RecordedStream, Recorder, RetainConfig  # noqa: E402
from edge_detect.types import Detections, Frame, Result  # noqa: E402

FPS, GOP = 10, 10  # a keyframe every second


def _make_h264(path: Path, seconds: float, size=(160, 120), gop: int = GOP) -> None:
    """A 10 fps H.264 mp4 whose frames differ (a moving bar), a keyframe every ``gop`` frames."""
    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "ultrafast",
                     "bf": "0"}
        for i in range(int(seconds * FPS)):
            img = np.full((h, w, 3), 40, np.uint8)
            img[:, (i * 3) % w: (i * 3) % w + 8] = 255
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts, f.time_base = i, Fraction(1, FPS)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)


def _frames(path: Path):
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="bgr24"), float(f.pts * f.time_base)


def _packets(path: Path):
    with av.open(str(path)) as c:
        return [(float(p.pts * p.time_base), bytes(p), p.is_keyframe) for p in c.demux(video=0) if p.dts is not None]


def _result(image, i, t, events=()):
    frame = Frame(image, "cam", i, pts_ms=t * 1000.0, wall_time=1_700_000_000.0 + t)
    dets = Detections(np.array([[10, 10, 40, 60]], np.float32), np.array([0.8], np.float32), np.array([0]))
    dets.metadata["events"] = [dict(e) for e in events]
    return Result(frame, dets, ["person"])


def _run(tmp_path, video, event_times, config=None, live=False):
    saved = []
    cfg = config or RecordConfig(dir=str(tmp_path / "clips"), pre_s=2.0, post_s=2.0, max_clip_s=60)
    rec = Recorder(cfg, [RecordedStream("cam", str(video), True, live)],
                   publish=lambda event, sid: saved.append(event.to_dict()))
    rec.start()
    pending = sorted(event_times)
    for i, (img, t) in enumerate(_frames(video)):
        evs = []
        while pending and pending[0] <= t + 1e-6:
            pending.pop(0)
            evs.append({"type": "line_cross", "id": f"{i:032x}", "class_name": "person", "line": "g",
                        "direction": "in", "track_id": 1})
        rec.handle(_result(img, i, t, evs))
    rec.close()
    return rec, saved


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "src.mp4"
    _make_h264(path, 20.0)
    return path


def test_clip_has_pre_and_post_roll_starts_on_a_keyframe_and_decodes(tmp_path, video):
    rec, saved = _run(tmp_path, video, [8.0])
    assert rec.error is None and len(saved) == 1
    clip = saved[0]
    assert clip["type"] == "clip_saved" and Path(clip["path"]).is_file() and Path(clip["thumbnail"]).is_file()
    # starts <= pre_s (+ one GOP) before the event, ends >= post_s after; keyframes every 1 s
    assert 8.0 - 2.0 - 1.0 <= clip["start"] <= 8.0 - 2.0 + 1e-6
    assert clip["end"] >= 8.0 + 2.0 - 1.0 / FPS - 1e-6
    decoded = sum(1 for _ in _frames(Path(clip["path"])))
    assert decoded == clip["frames"] and decoded == pytest.approx((clip["end"] - clip["start"]) * FPS + 1, abs=1)
    assert abs(clip["duration_s"] - 4.0) <= 0.5 + 1.0  # expected 4 s plus the keyframe alignment (< 1 GOP)


def test_remuxed_clip_packets_are_byte_identical_to_the_source(tmp_path, video):
    _, saved = _run(tmp_path, video, [8.0])
    src = [data for _, data, _ in _packets(video)]
    clip = _packets(Path(saved[0]["path"]))
    first = src.index(clip[0][1])
    assert [data for _, data, _ in clip] == src[first:first + len(clip)]  # the same bytes, in the same order
    assert clip[0][2], "a clip starts on a keyframe"
    assert len(clip) >= 4 * FPS


def test_events_three_seconds_apart_give_one_clip_naming_both(tmp_path, video):
    cfg = RecordConfig(dir=str(tmp_path / "clips"), pre_s=2.0, post_s=5.0)
    _, saved = _run(tmp_path, video, [6.0, 9.0], cfg)
    assert len(saved) == 1 and len(saved[0]["events"]) == 2
    assert saved[0]["end"] >= 9.0 + 5.0 - 0.2


def test_distant_events_give_separate_clips(tmp_path, video):
    _, saved = _run(tmp_path, video, [4.0, 14.0])
    assert len(saved) == 2 and saved[0]["end"] <= saved[1]["start"] + 1e-6


def test_annotated_clips_are_encoded_and_decode_completely(tmp_path, video):
    cfg = RecordConfig(dir=str(tmp_path / "clips"), pre_s=1.0, post_s=1.0, annotate=True)
    _, saved = _run(tmp_path, video, [5.0], cfg)
    assert len(saved) == 1
    n = sum(1 for _ in _frames(Path(saved[0]["path"])))
    assert n == saved[0]["frames"] and 15 <= n <= 31  # 2 s at 10 fps, plus up to one GOP before


def test_full_disk_stops_the_recorder_with_one_error_and_never_raises(tmp_path, video):
    from edge_detect.recording.retention import clip_path

    cfg = RecordConfig(dir=str(tmp_path / "clips"), pre_s=1.0, post_s=1.0)
    event_id = f"{30:032x}"
    target = clip_path(tmp_path / "clips", "cam", 1_700_000_000.0 + 3.0, event_id)
    target.parent.mkdir(parents=True)
    target.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    rec, saved = _run(tmp_path, video, [3.0], cfg)
    assert saved == [] and rec.error is not None and rec.error.startswith("recording stopped:")
    assert "No space left" in rec.error


def test_a_folder_that_cannot_be_created_fails_at_start(tmp_path, video):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rec = Recorder(RecordConfig(dir=str(blocker / "clips")), [RecordedStream("cam", str(video), True, False)])
    with pytest.raises(OSError):
        rec.start()


def test_retention_deletes_oldest_and_never_the_open_clip(tmp_path, video):
    root = tmp_path / "clips"
    old = root / "cam" / "2020-01-01"
    old.mkdir(parents=True)
    for k in range(3):
        p = old / f"00000{k}-old.mp4"
        p.write_bytes(b"x" * 1000)
        import os
        os.utime(p, (1_000_000 + k, 1_000_000 + k))
    cfg = RecordConfig(dir=str(root), pre_s=1.0, post_s=1.0, retain=RetainConfig(days=None, max_gb=1e-9),
                       retention_interval_s=0.0)
    rec, saved = _run(tmp_path, video, [5.0], cfg)
    assert not old.exists(), "old clips deleted first"
    assert rec.deleted >= 3
    # the new clip was open while retention ran after every frame, so it survived until it closed
    assert saved and saved[0]["frames"] > 0


def test_a_live_stream_an_mp4_cannot_copy_is_encoded_instead(tmp_path, caplog):
    """An MJPEG-over-HTTP camera (the preview sink as the camera): its recording connection finds MJPEG, which an
    mp4 clip cannot take as is, so the recorder encodes the processed frames instead (and says so once)."""
    import logging
    import threading
    import time

    from edge_detect.sinks.mjpeg import MjpegPreviewSink
    from edge_detect.types import StreamInfo

    caplog.set_level(logging.INFO)
    camera = MjpegPreviewSink(port=0)
    camera.start([StreamInfo("cam")])
    stop = threading.Event()
    img = np.full((120, 160, 3), 90, np.uint8)

    def feed():
        while not stop.is_set():
            camera.publish(img, "cam", force=True)
            time.sleep(0.05)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    saved = []
    cfg = RecordConfig(dir=str(tmp_path / "clips"), pre_s=0.5, post_s=0.5)
    rec = Recorder(cfg, [RecordedStream("cam", f"http://127.0.0.1:{camera.port}/cam", False, True)],
                   publish=lambda event, sid: saved.append(event.to_dict()))
    try:
        rec.start()
        deadline = time.monotonic() + 30  # hang guard: the connection says what it found
        while "cannot be copied into an mp4 clip" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        t0 = time.time()
        for i in range(25):  # 2.5 s of live frames, an event at 1.2 s
            frame = Frame(img, "cam", i, wall_time=t0 + i * 0.1)
            dets = Detections(np.array([[10, 10, 40, 60]], np.float32), np.array([0.8], np.float32), np.array([0]))
            dets.metadata["events"] = [{"type": "line_cross", "id": "e" * 32, "line": "g", "direction": "in",
                                        "track_id": 1, "class_name": "person"}] if i == 12 else []
            rec.handle(Result(frame, dets, ["person"]))
        rec.close()
    finally:
        stop.set()
        camera.close()
    assert rec.error is None and len(saved) == 1
    n = sum(1 for _ in _frames(Path(saved[0]["path"])))
    assert n == saved[0]["frames"] and 10 <= n <= 11 + 10  # 0.5 s around the event at 10 fps, from a keyframe (1 s)


def test_a_file_whose_keyframes_are_far_apart_is_encoded_so_clips_start_at_their_pre_roll(tmp_path, caplog):
    import logging

    from edge_detect.recording.packets import probe_keyframe_reach

    caplog.set_level(logging.INFO)
    sparse = tmp_path / "sparse.mp4"
    _make_h264(sparse, 20.0, gop=50)  # keyframes at 0, 5, 10, 15 s
    assert probe_keyframe_reach(str(sparse)) == pytest.approx(4.9)
    _, copied = _run(tmp_path / "a", sparse, [9.0], RecordConfig(dir=str(tmp_path / "a"), pre_s=2.0, post_s=2.0))
    assert copied[0]["start"] == pytest.approx(5.0)  # 4.9 <= the default 5 s: copied, from the keyframe at 5 s
    assert "keyframes up to" not in caplog.text
    _, saved = _run(tmp_path / "c", sparse, [9.0], RecordConfig(dir=str(tmp_path / "c"), pre_s=2.0, post_s=2.0,
                                                                 max_gop_s=2.0))
    assert "keyframes up to 4.9 s apart (record.max_gop_s: 2)" in caplog.text
    clip = saved[0]
    assert 9.0 - 2.0 - 1.0 <= clip["start"] <= 9.0 - 2.0 + 1e-6  # encoded with a keyframe a second
    n = sum(1 for _ in _frames(Path(clip["path"])))
    assert n == clip["frames"] and 40 <= n <= 51


def test_the_ring_measures_how_far_packets_come_after_their_keyframe():
    from edge_detect.recording.packets import PacketRing

    ring = PacketRing(keep_s=2.0)
    for i in range(100):  # 10 per second; keyframes at 0, 3, 8 s
        ring.append(i / 10, b"x", i, i, 1, Fraction(1, 10), keyframe=i in (0, 30, 80))
    assert ring.keyframe_reach_s == pytest.approx(4.9)  # 3.0 .. 7.9 s


def test_keyframes_found_far_apart_while_copying_switch_the_source_to_encoding(tmp_path, caplog, monkeypatch):
    """What a live camera's connection shows only as it goes (here: a file whose probe saw nothing): once the copied
    packets' keyframes turn out too far apart, the source's frames are encoded from then on (no clip open)."""
    import logging

    caplog.set_level(logging.INFO)
    monkeypatch.setattr("edge_detect.recording.recorder.probe_keyframe_reach", lambda uri: 0.0)
    sparse = tmp_path / "sparse.mp4"
    _make_h264(sparse, 20.0, gop=50)
    _, saved = _run(tmp_path, sparse, [16.0], RecordConfig(dir=str(tmp_path / "c"), pre_s=2.0, post_s=2.0,
                                                           max_gop_s=2.0))
    assert "keyframes up to 2.1 s apart (record.max_gop_s: 2): encoding the frames from now on" in caplog.text
    assert 16.0 - 2.0 - 1.0 <= saved[0]["start"] <= 16.0 - 2.0 + 1e-6  # copied: from the keyframe at 10 s
    assert sum(1 for _ in _frames(Path(saved[0]["path"]))) == saved[0]["frames"]
