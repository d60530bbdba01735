"""Streaming activation statistics for INT8 calibration: :class:`StreamingHistogram` (exact min/max plus a
fixed-size histogram of ``|x|`` whose range doubles by merging bin pairs), :func:`collect_statistics` (run the
model batch by batch and update one histogram per tensor: memory bounded by one batch of activations) and
:func:`compute_ranges` (``minmax`` / ``percentile`` / ``entropy`` symmetric ranges).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.deploy.quantize.analysis import load_model, session
from edge_detect.errors import ConfigError
from edge_detect.paths import PathLike

__all__ = ["METHODS", "StreamingHistogram", "collect_statistics", "compute_ranges"]

METHODS = ("percentile", "minmax", "entropy")
_CHUNK = 1 << 22  # elements per histogram update step: bounds temporaries to ~50 MB


class StreamingHistogram:
    """Streaming statistics of one tensor: exact min/max and a fixed-bin histogram of ``|x|``.

    The histogram covers ``[0, width * num_bins)`` with ``num_bins`` equal bins. The first update sets ``width``
    so that the batch's ``max |x|`` falls in the last bin; when a later value exceeds the covered range, ``width``
    doubles (repeatedly if needed) and adjacent bin pairs merge, which is exact: no count moves across a
    threshold that the coarser bins can represent. Memory is ``num_bins`` int64 counters whatever the data size.

    Args:
        num_bins: number of bins (even, >= 128).
    """

    def __init__(self, num_bins: int = 2048) -> None:
        if num_bins < 128 or num_bins % 2:
            raise ConfigError(f"histogram num_bins: expected an even number >= 128, got {num_bins}")
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.width = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.count = 0

    @property
    def upper(self) -> float:
        """Upper edge of the covered ``|x|`` range."""
        return self.width * self.num_bins

    @property
    def absmax(self) -> float:
        """``max |x|`` seen so far (exact)."""
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def _grow(self, amax: float) -> None:
        if self.width == 0.0:
            self.width = amax / (self.num_bins - 0.5) if amax > 0 else 0.0
            return
        while amax >= self.upper:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([merged, np.zeros(self.num_bins // 2, dtype=np.int64)])
            self.width *= 2.0

    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x`` (any shape, float) to the statistics."""
        flat = np.asarray(x).reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            self._update_chunk(flat[start:start + _CHUNK])

    def _update_chunk(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            x = x[np.isfinite(x)]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(x.size)
        self._grow(max(-lo, hi))
        if self.width == 0.0:  # all zeros so far
            self.counts[0] += x.size
            return
        idx = np.abs(x, dtype=np.float32)  # new array: the scaling below runs in place
        idx *= np.float32(1.0 / self.width)
        np.minimum(idx, self.num_bins - 1, out=idx)
        self.counts += np.bincount(idx.astype(np.int32), minlength=self.num_bins)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of ``|x|`` (0-100), upper edge of the bin reached, at most ``max |x|``."""
        if not 0.0 <= q <= 100.0:
            raise ConfigError(f"percentile: expected a value in [0, 100], got {q}")
        if self.count == 0 or self.width == 0.0:
            return 0.0
        cdf = np.cumsum(self.counts) / float(self.counts.sum())
        idx = int(np.searchsorted(cdf, q / 100.0 - 1e-12))
        return float(min((idx + 1) * self.width, self.absmax))

    def entropy_threshold(self, num_quant_bins: int = 128, max_candidates: int = 512) -> float:
        """Clipping threshold on ``|x|`` that minimises KL(P || Q) (TensorRT-style entropy calibration).

        For each candidate threshold ``i`` bins, P is the histogram of the first ``i`` bins with the outliers
        added to the last one and Q is those ``i`` bins merged into ``num_quant_bins`` levels and expanded back
        over their non-empty bins. At most ``max_candidates`` thresholds, evenly spaced, are tried.
        """
        if self.count == 0 or self.width == 0.0:
            return 0.0
        nz = np.nonzero(self.counts)[0]
        last = int(nz[-1]) + 1
        if last <= num_quant_bins:
            return float(min(last * self.width, self.absmax))
        step = max(1, (last - num_quant_bins) // max_candidates)
        candidates = list(range(num_quant_bins, last + 1, step))
        if candidates[-1] != last:
            candidates.append(last)
        counts = self.counts[:last].astype(np.float64)
        suffix = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
        best_i, best_kl = last, np.inf
        for i in candidates:
            kl = _kl_clipped(counts[:i], suffix[i], num_quant_bins)
            if kl < best_kl:
                best_i, best_kl = i, kl
        return float(min(best_i * self.width, self.absmax))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no counts)."""
        return {"min": self.min, "max": self.max, "count": self.count, "width": self.width,
                "num_bins": self.num_bins}


def _kl_clipped(ref: np.ndarray, outliers: float, nq: int) -> float:
    """KL divergence between ``ref`` with ``outliers`` folded into its last bin and its ``nq``-level version."""
    p = ref.copy()
    p[-1] += outliers
    group = (np.arange(ref.size) * nq) // ref.size
    nonzero = ref > 0
    gsum = np.bincount(group, weights=ref, minlength=nq)
    gnz = np.bincount(group, weights=nonzero, minlength=nq)
    q = np.where(nonzero, gsum[group] / np.maximum(gnz[group], 1.0), 0.0)
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum <= 0 or q_sum <= 0:
        return np.inf
    p, q = p / p_sum, q / q_sum
    mask = p > 0
    q = np.maximum(q[mask], 1e-12)  # the last bin may hold only outliers
    return float(np.sum(p[mask] * np.log(p[mask] / q)))


def collect_statistics(model: Union[PathLike, Any], batches: Iterable[np.ndarray], tensors: Sequence[str],
                       num_bins: int = 2048, threads: Optional[int] = None) -> Dict[str, StreamingHistogram]:
    """Run ``model`` on each batch and update one :class:`StreamingHistogram` per tensor, batch by batch.

    Args:
        model: FP32 ONNX path or ``ModelProto``.
        batches: iterable of model inputs (e.g. float32 ``(B, 3, H, W)``); consumed once, one in memory at a time.
        tensors: names of the tensors to observe (see :func:`calibration_tensors`).
        num_bins: histogram bins per tensor.
        threads: ONNX Runtime intra-op threads (``None``: its default).

    Returns:
        ``{tensor name: StreamingHistogram}``.
    """
    onnx = require("onnx", "onnx")
    proto = load_model(model)
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    present = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in present:
            augmented.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = session(augmented, threads)
    del augmented
    input_name = sess.get_inputs()[0].name
    stats = {name: StreamingHistogram(num_bins) for name in tensors}
    names = list(tensors)
    for batch in batches:
        outputs = sess.run(names, {input_name: batch})
        for name, value in zip(names, outputs):
            stats[name].update(value)
        del outputs
    return stats


def compute_ranges(stats: Mapping[str, StreamingHistogram], method: str = "percentile",
                   percentile: float = 99.999) -> Dict[str, Tuple[float, float]]:
    """Symmetric ``(-t, t)`` range per tensor from its statistics.

    ``minmax``: ``t = max |x|``; ``percentile``: ``t`` = that percentile of ``|x|``; ``entropy``: the KL-optimal
    clipping threshold. A zero ``t`` (constant-zero tensor) becomes a tiny positive range.
    """
    if method not in METHODS:
        raise ConfigError(f"calibration method: expected one of {METHODS}, got {method!r}")
    out: Dict[str, Tuple[float, float]] = {}
    for name, h in stats.items():
        if method == "minmax":
            t = h.absmax
        elif method == "percentile":
            t = h.percentile(percentile)
        else:
            t = h.entropy_threshold()
        t = max(float(t), 1e-8)
        out[name] = (-t, t)
    return out
