"""Latency and rate helpers shared by the pipeline and the benchmark.

* :func:`percentiles` -- linear-interpolated percentiles of a list of samples (NumPy's default method).
* :class:`StageTimer` -- thread-safe per-stage duration samples in milliseconds, summarised as
  ``{stage: {"mean_ms", "p50_ms", "p95_ms", "count"}}``; all samples, the most recent ones, or (a run of any
  length) a :class:`Reservoir` per stage.
* :class:`Reservoir` -- exact count and mean of every sample plus a bounded uniform sample of them for
  percentiles: the memory of a run's figures stays flat however long it runs.
* :class:`RateMeter` -- events per second over a sliding time window (live FPS overlays, stats lines).

All durations are milliseconds (float) measured with :func:`time.perf_counter`.
"""
from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

__all__ = ["percentiles", "summarize", "StageTimer", "RateMeter", "Reservoir", "nan_to_none"]


def percentiles(samples: Iterable[float], qs: Sequence[float] = (50, 90, 95, 99)) -> Dict[float, float]:
    """Percentiles of ``samples`` (linear interpolation between closest ranks, as ``numpy.percentile``).

    Args:
        samples: numbers (e.g. latencies in ms); any iterable.
        qs: percentiles to compute, each in ``[0, 100]``.

    Returns:
        ``{q: value}`` in the order of ``qs``; every value is ``nan`` when ``samples`` is empty.

    Raises:
        ValueError: a percentile is outside ``[0, 100]``.
    """
    for q in qs:
        if not 0 <= q <= 100:
            raise ValueError(f"percentile: expected a value in [0, 100], got {q}")
    arr = np.asarray(list(samples), dtype=np.float64)
    if arr.size == 0:
        return {q: math.nan for q in qs}
    values = np.percentile(arr, list(qs))
    return {q: float(v) for q, v in zip(qs, values)}


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    """``{"mean_ms", "p50_ms", "p95_ms", "count"}`` of millisecond samples (``nan`` stats when empty)."""
    arr = np.asarray(samples, dtype=np.float64)
    p = percentiles(arr, (50, 95))
    return {
        "mean_ms": float(arr.mean()) if arr.size else math.nan,
        "p50_ms": p[50],
        "p95_ms": p[95],
        "count": int(arr.size),
    }


def nan_to_none(obj):  # type: ignore[no-untyped-def]
    """Recursively replace float ``nan`` by ``None`` (strict JSON has no NaN); other values unchanged."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


class Reservoir:
    """Samples of a run of any length in bounded memory: the exact ``count``, ``total`` and :attr:`mean` of every
    sample, and a uniform random sample of at most ``size`` of them (Algorithm R, seeded: deterministic) for
    :meth:`percentiles` -- exact while ``count <= size``, an unbiased estimate afterwards (10,000 samples put the
    p95 within about +-0.5 percentile points). Not thread-safe (its users hold a lock).

    Args:
        size: samples kept at most (float64: ``8 * size`` bytes).
        seed: of the replacement choices.
    """

    def __init__(self, size: int = 10_000, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"Reservoir size: expected >= 1, got {size}")
        self.size, self.count, self.total = int(size), 0, 0.0
        self._kept = np.empty(0, np.float64)  # grows to `size`, then stays
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        """Record one sample."""
        self.count += 1
        self.total += value
        n = self.count - 1
        if n < self.size:
            if n >= len(self._kept):
                self._kept = np.resize(self._kept, min(max(2 * len(self._kept), 64), self.size))
            self._kept[n] = value
        else:
            j = self._rng.randrange(self.count)
            if j < self.size:
                self._kept[j] = value

    @property
    def mean(self) -> float:
        """The mean of every sample (``nan`` before any)."""
        return self.total / self.count if self.count else math.nan

    def values(self) -> np.ndarray:
        """The samples kept (a copy; every sample while ``count <= size``, in order)."""
        return self._kept[:min(self.count, self.size)].copy()

    def percentiles(self, qs: Sequence[float] = (50, 90, 95, 99)) -> Dict[float, float]:
        """:func:`percentiles` of the samples kept."""
        return percentiles(self.values(), qs)


class StageTimer:
    """Collects duration samples (milliseconds) per named stage; safe to share between threads.

    Example::

        timer = StageTimer()
        with timer.measure("inference"):
            backend.infer(batch)
        timer.add("decode", 1.7)
        timer.summary()   # {"inference": {"mean_ms": ..., "p50_ms": ..., "p95_ms": ..., "count": 1}, ...}

    Args:
        stages: names reported even when they have no sample yet (keeps the summary's keys stable).
        max_samples: keep at most this many recent samples per stage (``None`` = all).
        reservoir: keep a :class:`Reservoir` of this size per stage instead (exact count and mean of every
            sample, percentiles from a bounded uniform sample: for runs of any length).
    """

    def __init__(self, stages: Sequence[str] = (), max_samples: Optional[int] = None,
                 reservoir: Optional[int] = None) -> None:
        self._lock = threading.Lock()
        self._max = max_samples
        self._reservoir = reservoir
        self._samples: Dict[str, Union[Deque[float], Reservoir]] = {}
        for s in stages:
            self._samples[s] = self._new()

    def _new(self) -> Union[Deque[float], Reservoir]:
        return Reservoir(self._reservoir) if self._reservoir else deque(maxlen=self._max)

    def add(self, stage: str, ms: float) -> None:
        """Record one duration of ``stage`` in milliseconds."""
        with self._lock:
            kept = self._samples.get(stage)
            if kept is None:
                kept = self._samples[stage] = self._new()
            if isinstance(kept, Reservoir):
                kept.add(float(ms))
            else:
                kept.append(float(ms))

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Context manager timing its body with ``perf_counter`` and recording it under ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - t0) * 1e3)

    def samples(self, stage: str) -> List[float]:
        """A copy of the samples of ``stage`` kept (empty list if unknown)."""
        with self._lock:
            kept = self._samples.get(stage, ())
            return kept.values().tolist() if isinstance(kept, Reservoir) else list(kept)

    @property
    def stages(self) -> List[str]:
        with self._lock:
            return list(self._samples)

    def summary(self) -> Dict[str, Dict[str, float]]:
        """``{stage: {"mean_ms", "p50_ms", "p95_ms", "count"}}`` in insertion order of the stages."""
        with self._lock:  # copies taken under the lock, figures computed outside it
            snap = {k: (v.values(), v.mean, v.count) if isinstance(v, Reservoir) else (list(v), None, None)
                    for k, v in self._samples.items()}
        out: Dict[str, Dict[str, float]] = {}
        for k, (kept, mean, count) in snap.items():
            out[k] = summarize(kept)
            if count is not None:  # a reservoir: mean and count of every sample
                out[k].update(mean_ms=mean, count=count)
        return out


class RateMeter:
    """Events per second over the last ``window_s`` seconds (e.g. a live FPS overlay).

    ``tick()`` once per event; ``rate`` is ``(n - 1) / (t_last - t_first)`` over the events in the window,
    0.0 with fewer than two events.
    """

    def __init__(self, window_s: float = 2.0) -> None:
        if window_s <= 0:
            raise ValueError(f"RateMeter window_s: expected > 0, got {window_s}")
        self.window_s = float(window_s)
        self._times: Deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        t = time.perf_counter() if now is None else now
        with self._lock:
            self._times.append(t)
            while self._times and t - self._times[0] > self.window_s:
                self._times.popleft()

    @property
    def rate(self) -> float:
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0
