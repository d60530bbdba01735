"""edge_detect.stats: percentiles, StageTimer, RateMeter, nan_to_none."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from edge_detect.stats import RateMeter, StageTimer, nan_to_none, percentiles, summarize


def test_percentiles_of_1_to_100_match_linear_interpolation():
    p = percentiles(range(1, 101), (50, 90, 95, 99))
    assert list(p) == [50, 90, 95, 99]
    assert p[50] == pytest.approx(50.5)
    assert p[90] == pytest.approx(90.1)
    assert p[95] == pytest.approx(95.05)
    assert p[99] == pytest.approx(99.01)


def test_percentiles_single_sample_and_empty():
    assert percentiles([7.0], (0, 50, 100)) == {0: 7.0, 50: 7.0, 100: 7.0}
    assert all(math.isnan(v) for v in percentiles([], (50, 95)).values())


@pytest.mark.parametrize("q", [-1, 100.5, 1000])
def test_percentiles_rejects_out_of_range(q):
    with pytest.raises(ValueError, match=r"expected a value in \[0, 100\]"):
        percentiles([1, 2, 3], (q,))


def test_summarize_figures():
    s = summarize([10.0, 20.0, 30.0, 40.0])
    assert s["mean_ms"] == pytest.approx(25.0)
    assert s["p50_ms"] == pytest.approx(25.0)
    assert s["p95_ms"] == pytest.approx(38.5)
    assert s["count"] == 4
    assert math.isnan(summarize([])["mean_ms"])


def test_stage_timer_add_measure_and_summary_order():
    t = StageTimer(("decode", "inference"))
    for ms in (1.0, 2.0, 3.0):
        t.add("inference", ms)
    with t.measure("sinks"):
        sum(range(1000))
    s = t.summary()
    assert list(s) == ["decode", "inference", "sinks"]
    assert s["decode"]["count"] == 0 and math.isnan(s["decode"]["mean_ms"])
    assert s["inference"]["mean_ms"] == pytest.approx(2.0)
    assert s["inference"]["p95_ms"] == pytest.approx(2.9)
    assert s["sinks"]["count"] == 1 and 0 <= s["sinks"]["mean_ms"] < 1000
    assert t.samples("inference") == [1.0, 2.0, 3.0]


def test_stage_timer_is_thread_safe_and_bounded():
    t = StageTimer()
    threads = [threading.Thread(target=lambda: [t.add("x", 1.0) for _ in range(2000)]) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(t.samples("x")) == 8000
    small = StageTimer(max_samples=10)
    for i in range(100):
        small.add("x", float(i))
    assert small.samples("x") == [float(i) for i in range(90, 100)]


def test_rate_meter_window():
    r = RateMeter(window_s=1.0)
    assert r.rate == 0.0
    for i in range(31):  # 30 intervals of 0.1 s; only the last ~1 s stays in the window
        r.tick(now=i * 0.1)
    assert r.rate == pytest.approx(10.0, rel=0.01)
    with pytest.raises(ValueError, match="expected > 0"):
        RateMeter(0)


def test_nan_to_none_recursive():
    assert nan_to_none({"a": float("nan"), "b": [1.0, float("nan")], "c": {"d": np.nan}, "e": "x"}) == \
        {"a": None, "b": [1.0, None], "c": {"d": None}, "e": "x"}


def test_reservoir_is_exact_until_full_then_bounded_and_close():
    from edge_detect.stats import Reservoir

    r = Reservoir(size=1000)
    values = [float(v) for v in np.random.default_rng(1).exponential(20.0, 100_000)]
    for v in values[:1000]:
        r.add(v)
    assert r.values().tolist() == values[:1000]  # every sample, in order, while count <= size
    assert r.percentiles((50, 95)) == percentiles(values[:1000], (50, 95))
    for v in values[1000:]:
        r.add(v)
    assert r.count == 100_000 and len(r.values()) == 1000 and r.values().nbytes == 8000  # bounded
    assert r.mean == pytest.approx(np.mean(values), rel=1e-12)  # the mean of every sample, exactly
    exact = percentiles(values, (50, 95))
    got = r.percentiles((50, 95))
    assert got[50] == pytest.approx(exact[50], rel=0.1) and got[95] == pytest.approx(exact[95], rel=0.1)
    again = Reservoir(size=1000)
    for v in values:
        again.add(v)
    assert again.values().tolist() == r.values().tolist()  # seeded: deterministic


def test_stage_timer_with_a_reservoir_keeps_every_frames_mean():
    t = StageTimer(("inference",), reservoir=100)
    for i in range(1000):
        t.add("inference", float(i))
    s = t.summary()["inference"]
    assert s["count"] == 1000 and s["mean_ms"] == pytest.approx(499.5) and len(t.samples("inference")) == 100
