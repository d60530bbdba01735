"""The clip planner: pre/post-roll, overlapping events share a clip, the max_clip_s cap, end of stream."""
import pytest

from edge_detect.recording.clips import ClipPlanner


def _run(planner, events, until, step=0.1):
    """Feed events at their times and frames every ``step`` s up to ``until``; returns the closed clips."""
    clips, pending = [], sorted(events)
    t = 0.0
    while t <= until + 1e-9:
        while pending and pending[0][0] <= t + 1e-9:
            ev_t, eid = pending.pop(0)
            planner.on_event(ev_t, eid)
            clips += planner.closed()
        clips += planner.advance(t)
        t = round(t + step, 6)
    return clips + planner.flush(until)


def test_one_event_gives_pre_and_post_roll():
    clips = _run(ClipPlanner(5, 5, 120), [(20.0, "a")], 40)
    assert [(c.start, c.end, c.event_ids) for c in clips] == [(15.0, 25.0, ["a"])]


def test_events_three_seconds_apart_share_one_clip_extended_to_the_last():
    clips = _run(ClipPlanner(5, 5, 120), [(20.0, "a"), (23.0, "b")], 40)
    assert [(c.start, c.end, c.event_ids) for c in clips] == [(15.0, 28.0, ["a", "b"])]


def test_events_further_apart_than_post_roll_give_two_clips_that_never_overlap():
    clips = _run(ClipPlanner(5, 5, 120), [(20.0, "a"), (31.0, "b")], 50)
    assert [(c.start, c.end) for c in clips] == [(15.0, 25.0), (26.0, 36.0)]
    clips = _run(ClipPlanner(5, 5, 120), [(20.0, "a"), (27.0, "b")], 50)  # b's pre-roll starts inside a's clip
    assert [(c.start, c.end) for c in clips] == [(15.0, 25.0), (25.0, 32.0)]


def test_max_clip_caps_a_clip_and_the_next_event_opens_the_next():
    events = [(float(t), f"e{t}") for t in range(10, 40, 2)]  # an event every 2 s for 30 s
    clips = _run(ClipPlanner(5, 5, 12), events, 60)
    assert clips[0].start == 5.0 and clips[0].end <= 17.0
    assert all(c.duration <= 12.0 + 1e-9 for c in clips)
    assert all(b.start >= a.end for a, b in zip(clips, clips[1:]))
    assert sum(len(c.event_ids) for c in clips) == len(events)


def test_end_of_stream_closes_the_open_clip_at_the_last_frame():
    planner = ClipPlanner(5, 5, 120)
    planner.on_event(8.0, "a")
    assert planner.advance(9.0) == []
    (clip,) = planner.flush(10.0)
    assert (clip.start, clip.end) == (3.0, 10.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"pre_s": -1}, "pre_s >= 0"), ({"post_s": -0.5}, "post_s >= 0"), ({"max_clip_s": 0}, "max_clip_s"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipPlanner(**kwargs)
