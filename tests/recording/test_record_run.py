"""``edge-detect run --record`` end to end (the real CLI and App, a replay model, scripted events on an H.264 file
with a keyframe every second): clips with pre- and post-roll that decode completely, one clip for events 3 s
apart, byte-identical remux, clip_saved in the JSONL with the ids of the events it covers, the recorder's CPU in
the summary, a recorder that cannot write (the run goes on, exit 0), retention by size through the sink."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import has_module

av = pytest.importorskip("av")
pytestmark = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime not installed")

from edge_detect.cli import main  # noqa: E402
from recording.scripted import decoded_frames, packets  # noqa: E402  (registers the scripted_events processor)

FPS, GOP_S = 10, 1.0
PRE, POST = 2.0, 4.0
EVENTS = [5.0, 8.0, 15.5]  # 5 and 8 are 3 s apart: one clip; 15.5 opens the next


def _run(tmp_path: Path, video: Path, replay: Path, times, *extra: str, record: str = "") -> dict:
    cfg = tmp_path / "app.yaml"
    cfg.write_text("analytics:\n  processors: [{name: scripted_events, options: {times: %s}}]\n" % list(times)
                   + (f"outputs:\n  record: {record}\n" if record else ""))
    rc = main(["--quiet", "run", "--config", str(cfg), "--model", str(replay), "--source", str(video),
               "--record", str(tmp_path / "clips"), "--record-pre", str(PRE), "--record-post", str(POST),
               "--save-jsonl", str(tmp_path / "out.jsonl"), "--summary-json", str(tmp_path / "s.json"),
               "--no-show", "--no-progress", "--threads", "1", *extra])
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    return {"rc": rc, "summary": json.loads((tmp_path / "s.json").read_text()), "lines": lines,
            "events": [(x["pts_ms"] / 1000.0, e) for x in lines for e in x["events"] if e["type"] == "line_cross"],
            "clips": [e for x in lines for e in x["events"] if e["type"] == "clip_saved" and x.get("emitted")]}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, h264_video, replay):
    return _run(tmp_path_factory.mktemp("rec"), h264_video, replay, EVENTS)


def _keyframe_at_or_before(video: Path, t: float) -> float:
    return max(pt for pt, _, key in packets(video) if key and pt <= t + 1e-6)


def test_each_event_gets_a_clip_with_pre_and_post_roll_that_decodes_completely(recorded, h264_video):
    assert recorded["rc"] == 0 and recorded["summary"]["sink_errors"] == []
    events, clips = recorded["events"], recorded["clips"]
    assert [round(t, 3) for t, _ in events] == EVENTS
    assert len(clips) == 2 and [len(c["events"]) for c in clips] == [2, 1]  # events 3 s apart share one clip
    for clip in clips:
        covered = [(t, e) for t, e in events if e["id"] in clip["events"]]
        assert [e["id"] for _, e in covered] == clip["events"] and clip["trigger"] == clip["events"][0]
        first, last = covered[0][0], covered[-1][0]
        assert first - PRE - GOP_S - 1e-6 <= clip["start"] <= first - PRE + 1e-6  # pre-roll, from a keyframe
        assert clip["end"] >= last + POST - 1e-6  # post-roll after the last event
        expected = last + POST - _keyframe_at_or_before(h264_video, first - PRE)
        frames = decoded_frames(Path(clip["path"]))  # raises when a frame does not decode
        assert frames == clip["frames"] and abs(frames / FPS - expected) <= 0.5
        assert abs(clip["duration_s"] - frames / FPS) <= 1.0 / FPS + 1e-6
        assert Path(clip["thumbnail"]).is_file() and Path(clip["path"]).parent.parent.name == "gate"
        assert Path(clip["path"]).name.endswith(f"-{clip['trigger']}.mp4")  # {HHMMSS}-{event_id}.mp4


def test_clip_packets_are_byte_identical_to_the_source(recorded, h264_video):
    src = [data for _, data, _ in packets(h264_video)]
    for clip in recorded["clips"]:
        got = packets(Path(clip["path"]))
        first = src.index(got[0][1])
        assert [data for _, data, _ in got] == src[first:first + len(got)] and got[0][2]  # copied, from a keyframe


def test_summary_counts_clips_and_the_recorders_cpu(recorded):
    s = recorded["summary"]
    assert s["sinks"]["recorder"]["clips"] == 2 and s["sinks"]["recorder"]["dropped"] == 0
    assert s["processed"] == 200 and 0 < s["cpu_ms_per_frame"]["record"] < s["cpu_ms_per_frame"]["total"]
    assert s["lines"]["gate"]["in"] == len(EVENTS)  # clip_saved went through the bus without counting as a crossing


@pytest.mark.perf
def test_remuxing_costs_under_a_tenth_of_the_pipelines_cpu(recorded):
    cpu = recorded["summary"]["cpu_ms_per_frame"]
    assert cpu["record"] < 0.1 * (cpu["total"] - cpu["record"]), cpu


def test_a_clip_open_when_the_run_ends_is_closed_and_reaches_the_other_outputs(tmp_path, h264_video, replay):
    run = _run(tmp_path, h264_video, replay, [5.0], "--max-frames", "70")  # the clip would end at 9 s
    assert run["rc"] == 0 and len(run["clips"]) == 1
    clip = run["clips"][0]  # emitted while the recorder closed, still written by the JSONL sink closed after it
    assert clip["end"] == pytest.approx(7.0, abs=1e-6) and decoded_frames(Path(clip["path"])) == clip["frames"] == 40
    assert run["lines"][-1]["emitted"] and run["lines"][-1]["frame"] == 69


def test_an_unwritable_folder_stops_the_recorder_and_the_run_goes_on(tmp_path, h264_video, replay):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "gate").write_text("a file where the source's folder should be")
    run = _run(tmp_path, h264_video, replay, [5.0], "--max-frames", "100")
    s = run["summary"]
    assert run["rc"] == 0 and s["stopped_by"] == "max_frames" and s["processed"] == 100
    assert len(run["lines"]) == 100 and run["clips"] == []  # JSONL went on: every frame, no clip
    assert len(s["sink_errors"]) == 1 and s["sink_errors"] == s["degraded"]
    assert s["sink_errors"][0].startswith("recorder: recording stopped:")


def test_retention_by_size_deletes_the_oldest_clips_first(tmp_path, h264_video, replay):
    old = tmp_path / "clips" / "gate" / "2020-01-01"
    old.mkdir(parents=True)
    for k in range(3):  # 3 x 400 kB of old clips: 1.2 MB against a 1 MB limit
        p = old / f"00000{k}-old{k}.mp4"
        p.write_bytes(b"\0" * 400_000)
        os.utime(p, (1_600_000_000 + k, 1_600_000_000 + k))
    run = _run(tmp_path, h264_video, replay, [3.0], "--max-frames", "80",
               record="{retain: {days: null, max_gb: 0.001}, retention_interval_s: 0}")
    assert run["rc"] == 0 and len(run["clips"]) == 1
    kept = sorted(p.name for p in old.glob("*.mp4"))
    new = Path(run["clips"][0]["path"])
    assert kept == ["000001-old1.mp4", "000002-old2.mp4"] and new.is_file()  # the oldest went first
    assert run["summary"]["sinks"]["recorder"]["deleted"] == 1
    total = sum(p.stat().st_size for p in (tmp_path / "clips").rglob("*") if p.is_file())
    assert total <= 1_000_000
