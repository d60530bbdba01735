"""Retention: oldest first by age and size, never an open clip; clip names."""
import os
from pathlib import Path

from edge_detect.recording.retention import ClipFile, clip_path, delete_clips, plan_retention, scan_clips


def _clip(name, mtime, size):
    return ClipFile(Path(name), mtime, size)


def test_size_limit_deletes_oldest_first_until_under_the_limit():
    clips = [_clip("c.mp4", 30, 100), _clip("a.mp4", 10, 100), _clip("b.mp4", 20, 100)]
    assert plan_retention(clips, max_bytes=150, now=40) == [Path("a.mp4"), Path("b.mp4")]


def test_an_open_clip_is_never_deleted_even_when_oldest_and_over_every_limit():
    clips = [_clip("open.mp4", 0, 500), _clip("b.mp4", 20, 100)]
    doomed = plan_retention(clips, open_paths={Path("open.mp4")}, days=1e-6, max_bytes=1, now=10 ** 6)
    assert doomed == [Path("b.mp4")]


def test_age_limit_deletes_only_older_clips():
    day = 86400.0
    clips = [_clip("old.mp4", 0, 1), _clip("new.mp4", 9 * day, 1)]
    assert plan_retention(clips, days=7, now=10 * day) == [Path("old.mp4")]


def test_clip_path_is_source_date_time_event(tmp_path):
    p = clip_path(tmp_path, "cam 1/../x", 1_700_000_000.0, "abc")
    assert p.parent.parent.parent == tmp_path
    assert p.parent.parent.name == "cam_1_.._x"  # one path component: no separator survives
    assert p.name.endswith("-abc.mp4") and len(p.name) == len("HHMMSS-abc.mp4")


def test_scan_and_delete_remove_clip_thumbnail_and_empty_day_folder(tmp_path):
    day = tmp_path / "cam" / "2026-01-01"
    day.mkdir(parents=True)
    (day / "000001-a.mp4").write_bytes(b"x" * 10)
    (day / "000001-a.jpg").write_bytes(b"y" * 5)
    (clip,) = scan_clips(tmp_path)
    assert clip.size == 15
    assert delete_clips([clip.path]) == 1
    assert not day.exists() and not os.listdir(tmp_path / "cam")
