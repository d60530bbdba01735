"""Per-block sensitivity of INT8 quantization: :func:`output_error` (an output-level distance between FP32
and quantized raw predictions), probes that put one block back in float at a time, and
:func:`select_float_blocks` (keep the blocks that dominate the error)."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_detect.boxes import cxcywh_to_xyxy, paired_box_iou
from edge_detect.deploy.quantize.analysis import session
from edge_detect.deploy.quantize.qdq import quantize_qdq
from edge_detect.errors import ConfigError

__all__ = ["output_error", "select_float_blocks", "run_all", "speed_ms", "Probe", "run_sensitivity",
           "candidate_blocks"]

LOGGER = logging.getLogger(__name__)


def output_error(ref: Sequence[np.ndarray], out: Sequence[np.ndarray], min_conf: float = 0.001,
                 head: str = "yolov5") -> float:
    """Distance between FP32 and quantized raw predictions (lower is better, 0 = identical).

    Args:
        ref, out: per-batch raw predictions: float ``(B, N, 5 + nc)`` = ``cx, cy, w, h`` (letterbox px),
            objectness, class probabilities for ``head="yolov5"``; ``(B, 4 + nc, N)`` = ``cx, cy, w, h``, class
            scores for ``head="anchor_free"``.
        min_conf: anchors whose FP32 best score (``obj * cls``, or the class score) is at most this are ignored
            (the mAP protocol's confidence threshold).
        head: the model's :attr:`~edge_detect.metadata.ModelMetadata.head`.

    Returns:
        ``sum w * |score_fp32 - score_q| / sum w + sum w * (1 - IoU(box_fp32, box_q)) / sum w`` with weights
        ``w = score_fp32`` (best FP32 class): score and box damage, both in ``[0, 1]``, weighted towards the
        confident detections that decide mAP.
    """
    from edge_detect.postprocess import split_raw

    num_s = num_b = den = 0.0
    for r, o in zip(ref, out):
        rb, rs = split_raw(np.asarray(r, np.float32), head)
        ob, os_ = split_raw(np.asarray(o, np.float32), head)
        rb, rs = rb.reshape(-1, 4), rs.reshape(-1, rs.shape[-1])
        ob, os_ = ob.reshape(-1, 4), os_.reshape(-1, os_.shape[-1])
        best = rs.argmax(1)
        rows = np.arange(len(best))
        w = rs[rows, best]
        keep = w > min_conf
        if not keep.any():
            continue
        w, rows, best = w[keep], rows[keep], best[keep]
        s_out = os_[rows, best]
        iou = paired_box_iou(cxcywh_to_xyxy(rb[rows]), cxcywh_to_xyxy(ob[rows]))
        num_s += float((w * np.abs(w - s_out)).sum())
        num_b += float((w * (1.0 - iou)).sum())
        den += float(w.sum())
    return (num_s + num_b) / den if den > 0 else 0.0


def select_float_blocks(costs: Mapping[str, float], baseline_error: float, max_blocks: int = 3,
                        min_share: float = 0.25) -> List[Tuple[str, str]]:
    """Blocks to keep in float: the costliest first, at most ``max_blocks``, each costing >= ``min_share`` of
    the baseline error (a block that alone accounts for that share of the error dominates it; smaller gains
    are within the noise of the accuracy a 128-image validation can measure).

    Returns:
        ``[(block, reason)]`` in decreasing cost order.
    """
    chosen: List[Tuple[str, str]] = []
    for block, cost in sorted(costs.items(), key=lambda kv: -kv[1]):
        if len(chosen) >= max_blocks:
            break
        share = cost / baseline_error if baseline_error > 0 else 0.0
        if share < min_share:
            break
        chosen.append((block, f"quantizing it costs {cost:.4f} output error, {100 * share:.1f}% of the "
                              f"baseline {baseline_error:.4f} (threshold {100 * min_share:.0f}%)"))
    return chosen


def run_all(sess: Any, batches: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The first output of ``sess`` for each batch."""
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: b})[0] for b in batches]


def speed_ms(sess: Any, batch: np.ndarray, runs: int = 5) -> float:
    """Mean milliseconds per image of ``runs`` inferences on ``batch`` after one warm-up run."""
    name = sess.get_inputs()[0].name
    sess.run(None, {name: batch})
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: batch})
    return 1000.0 * (time.perf_counter() - t0) / (runs * len(batch))


@dataclass
class Probe:
    """What a sensitivity probe needs: the FP32 model, the ranges cache, a scratch folder, the quantizer
    settings, the hold-out batches and the FP32 reference outputs on them; ``runs`` counts the probes."""

    fp32: Path
    cache: Path
    tmp: Path
    method: str
    per_channel: bool
    scheme: str
    threads: Optional[int]
    holdout: List[np.ndarray]
    reference: List[np.ndarray]
    progress: bool
    runs: int = field(default=0)
    head: str = "yolov5"

    def error(self, exclude: Sequence[str]) -> float:
        """Quantize with ``exclude`` in float and return its :func:`output_error` on the hold-out batches."""
        self.runs += 1
        path = self.tmp / f"probe{self.runs}.onnx"
        quantize_qdq(self.fp32, path, self.cache, exclude, self.method, self.per_channel, self.scheme)
        err = self.error_of(path)
        path.unlink()
        return err

    def error_of(self, path: Path) -> float:
        """:func:`output_error` of an already quantized model on the hold-out batches."""
        return output_error(self.reference, run_all(session(str(path), self.threads), self.holdout),
                            head=self.head)


def run_sensitivity(ctx: Probe, blocks: Mapping[str, Sequence[str]], always_float: Sequence[str],
                    max_blocks: int, min_share: float) -> Dict[str, Any]:
    """Baseline error with all but ``always_float`` quantized, then each block put back in float in turn.

    Returns:
        the report's ``sensitivity`` section: per-block ``cost`` (error removed by keeping it float), sorted
        costliest first, and ``kept_float`` (:func:`select_float_blocks`).
    """
    from edge_detect.progress import progress

    baseline = ctx.error(always_float)
    LOGGER.info("sensitivity: baseline (all quantized but the Detect head) output error %.4f", baseline)
    rows = []
    for block, nodes in progress(blocks.items(), desc="sensitivity", unit="block", disable=not ctx.progress):
        err = ctx.error(list(always_float) + list(nodes))
        rows.append({"block": block, "nodes": len(nodes), "error_with_block_float": err, "cost": baseline - err})
        LOGGER.debug("sensitivity: %s float -> error %.4f (cost %.4f)", block, err, baseline - err)
    chosen = select_float_blocks({r["block"]: r["cost"] for r in rows}, baseline, max_blocks, min_share)
    rows.sort(key=lambda r: -r["cost"])
    return {"metric": "output_error vs FP32: FP32-score-weighted |score difference| + (1 - IoU) of the boxes",
            "holdout_images": sum(len(b) for b in ctx.holdout), "baseline_error": baseline, "blocks": rows,
            "kept_float": [{"block": b, "reason": why} for b, why in chosen],
            "max_float_blocks": max_blocks, "min_share": min_share}


def candidate_blocks(model: Any, blocks: Mapping[str, Sequence[str]], forced: Sequence[str], scheme: str,
                     wanted: Optional[Sequence[str]]) -> "OrderedDict[str, List[str]]":
    """Blocks worth probing: not already forced to float, holding an operator the scheme quantizes."""
    ops = {n.name: n.op_type for n in model.graph.node}
    forced_set = set(forced)
    out: "OrderedDict[str, List[str]]" = OrderedDict()
    if wanted is not None:
        wanted = [f"model.{w}" if str(w).isdigit() else str(w) for w in wanted]
        unknown = [w for w in wanted if w not in blocks]
        if unknown:
            raise ConfigError(f"sensitivity blocks {unknown}: expected names among {list(blocks)}")
    for block, nodes in blocks.items():
        if wanted is not None and block not in wanted:
            continue
        if set(nodes) <= forced_set:
            continue
        if scheme == "conv" and not any(ops[n] == "Conv" for n in nodes):
            continue  # nothing quantized in it
        out[block] = list(nodes)
    return out
