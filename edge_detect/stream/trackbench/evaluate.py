"""Run trackers over benchmark scenes and score them: MOT identity metrics (py-motmetrics) and line count errors.

Every tracker of :data:`TRACKERS` gets the same detections of a scene frame by frame (fresh copies) and the
frame's timestamps; its output boxes with a track id ``>= 1`` are the hypotheses. Per scene:

* ``motmetrics``: ground truth = every actor's visible box on the delivered frames
  (:meth:`~edge_detect.stream.trackbench.scenes.Scene.frames`), matched to hypotheses at IoU >= 0.5 (the
  distance matrix is computed here with :func:`edge_detect.boxes.box_iou`: ``motmetrics.distances.iou_matrix``
  1.4 calls ``np.asfarray``, gone in NumPy 2); the raw counts (objects, misses, false positives, switches,
  fragmentations, IDTP/IDFP/IDFN) are kept so that families and the whole run aggregate as one long sequence
  (MOTA = 1 - (FN + FP + IDSW) / GT, IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN));
* count error of each counting rule of :class:`~edge_detect.stream.processors.lines.LineCounter` (:data:`RULES`:
  ``crossing``, the default, every crossing of a track's path; ``once``, a track at most once per line) = sum
  over lines of ``|in - truth| + |out - truth|``; the counters get the tracker's output frame by frame and
  ``finish`` at the scene's end, as in a run.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge_detect.boxes import box_iou
from edge_detect.stream.processors.bytetrack import ByteTrack
from edge_detect.stream.processors.iou import IoUTracker
from edge_detect.stream.processors.lines import LineCounter
from edge_detect.stream.trackbench.scenes import HYSTERESIS_PX, Scene, make_scene
from edge_detect.stream.trackbench.world import background, load_crops, render_frame
from edge_detect.types import Detections, Frame

__all__ = ["TRACKERS", "RAW_KEYS", "RULES", "available_trackers", "run_scene", "run_task", "aggregate", "default_data"]

RAW_KEYS = ("num_frames", "num_objects", "num_misses", "num_false_positives", "num_switches",
            "num_fragmentations", "idtp", "idfp", "idfn")
#: the counting rules scored (``LineCounter(count=...)``), the default first
RULES = ("crossing", "once")


class _Processor:
    """One of our tracker processors (``update(detections, frame)``)."""

    def __init__(self, proc: Any, needs_image: bool = False) -> None:
        self.proc, self.needs_image = proc, needs_image

    def update(self, dets: Detections, frame: Frame) -> Detections:
        return self.proc.update(dets, frame)


class _Roboflow:
    """A tracker of the ``trackers`` package (roboflow), fed ``supervision.Detections`` and the frame's time.

    Its ids start at 0 and unconfirmed boxes come back with -1: ids are shifted by one to our ``>= 1``."""

    needs_image = False

    def __init__(self, cls_name: str, fps: float, **kwargs: Any) -> None:
        import trackers

        self.tracker = getattr(trackers, cls_name)(frame_rate=fps, **kwargs)

    def update(self, dets: Detections, frame: Frame) -> Detections:
        import supervision as sv

        sd = sv.Detections(xyxy=dets.xyxy.astype(np.float64).reshape(-1, 4),
                           confidence=dets.score.astype(np.float64), class_id=dets.class_id.astype(np.int64))
        out = self.tracker.update(sd, timestamp=frame.pts_ms / 1000.0)
        if len(out) == 0:
            return Detections.empty()
        tid = np.asarray(out.tracker_id, np.int64)
        return Detections(out.xyxy.astype(np.float32), np.asarray(out.confidence, np.float32),
                          np.asarray(out.class_id, np.int32), np.where(tid >= 0, tid + 1, -1))


Factory = Callable[..., Any]
#: name -> (factory(scene, **options) -> object with ``update(dets, frame)`` and ``needs_image``, module it needs)
TRACKERS: Dict[str, Tuple[Factory, Optional[str]]] = {
    "bytetrack": (lambda s, **o: _Processor(ByteTrack(**o), needs_image=bool(o.get("appearance"))), None),
    "iou": (lambda s, **o: _Processor(IoUTracker(**o)), None),
    "trackers.ByteTrack": (lambda s, **o: _Roboflow("ByteTrackTracker", s.world.fps, **o), "trackers"),
    "trackers.SORT": (lambda s, **o: _Roboflow("SORTTracker", s.world.fps, **o), "trackers"),
    "trackers.OC-SORT": (lambda s, **o: _Roboflow("OCSORTTracker", s.world.fps, **o), "trackers"),
    "trackers.BoT-SORT": (lambda s, **o: _Roboflow("BoTSORTTracker", s.world.fps, **{"enable_cmc": False, **o}),
                          "trackers"),
}


def available_trackers(names: Optional[Iterable[str]] = None) -> List[str]:
    """The trackers of ``names`` (default: all of :data:`TRACKERS`) whose package is installed."""
    out = []
    for name in names or TRACKERS:
        if name not in TRACKERS:
            raise KeyError(f"tracker: expected one of {', '.join(TRACKERS)}, got {name!r}")
        module = TRACKERS[name][1]
        if module is None or importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


@dataclass
class _Images:
    """Rendered frames of a scene, made on demand (only trackers with ``needs_image`` look at them)."""

    scene: Scene
    data: Optional[Path]
    _crops: Optional[list] = None
    _bg: Optional[np.ndarray] = None

    def __call__(self, f: int) -> Optional[np.ndarray]:
        if self.data is None:
            return None
        if self._crops is None:
            self._crops, self._bg = load_crops(self.data), background(self.scene.world.size, self.scene.seed)
        return render_frame(self.scene.world, f, self._crops, self._bg)


def _mot_distances(gt: np.ndarray, hyp: np.ndarray) -> np.ndarray:
    """``1 - IoU`` (G, K), NaN where IoU < 0.5 (motmetrics' "no match")."""
    if not len(gt) or not len(hyp):
        return np.empty((len(gt), len(hyp)))
    iou = box_iou(gt.astype(np.float32), hyp.astype(np.float32)).astype(np.float64)
    return np.where(iou >= 0.5, 1.0 - iou, np.nan)


def run_scene(scene: Scene, trackers: Sequence[str], data: Optional[Path] = None,
              options: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """Run each tracker (with ``options[name]`` as keyword arguments) over ``scene``: ``{tracker: {raw MOT counts
    (:data:`RAW_KEYS`), "count_error": {rule: error for each of RULES}, "counts": {rule: counts, "truth": ...}}}``."""
    import motmetrics as mm

    images = _Images(scene, data)
    truth = scene.truth
    mh = mm.metrics.create()
    result = {}
    for name in trackers:
        tracker = TRACKERS[name][0](scene, **(options or {}).get(name, {}))
        counters = {rule: LineCounter(scene.lines, hysteresis_px=HYSTERESIS_PX, count=rule) for rule in RULES}
        acc = mm.MOTAccumulator(auto_id=True)
        frame = None
        for sf in scene.frames():
            frame = scene.world.frame(sf.index, images(sf.index) if tracker.needs_image else None)
            out = tracker.update(sf.detections, frame)
            ids = out.track_id if out.track_id is not None else np.full(len(out), -1, np.int64)
            keep = np.flatnonzero(ids >= 1)
            acc.update(sf.gt_ids.tolist(), ids[keep].tolist(),
                       _mot_distances(sf.gt_xyxy, out.xyxy[keep].astype(np.float64)))
            for counter in counters.values():
                counter.update(out, frame)
        for counter in counters.values():
            if frame is not None:
                counter.finish(frame)
        summary = mh.compute(acc, metrics=list(RAW_KEYS), name=name)
        row: Dict[str, Any] = {k: int(summary[k].iloc[0]) for k in RAW_KEYS}
        row["counts"] = {**{rule: c.counts for rule, c in counters.items()}, "truth": truth}
        row["count_error"] = {rule: _count_error(c.counts, truth) for rule, c in counters.items()}
        result[name] = row
    return result


def _count_error(counts: Dict[str, Dict[str, int]], truth: Dict[str, Dict[str, int]]) -> int:
    return sum(abs(counts[k]["in"] - t["in"]) + abs(counts[k]["out"] - t["out"]) for k, t in truth.items())


def run_task(task: Tuple[str, int, Tuple[str, ...], Optional[str], Dict[str, Dict[str, Any]]]
             ) -> Tuple[str, int, str, Dict[str, Any]]:
    """Worker entry: ``(family, seed, trackers, data, options)`` -> ``(family, seed, variant, run_scene(...))``."""
    family, seed, names, data, options = task
    scene = make_scene(family, seed)
    return family, seed, scene.variant, run_scene(scene, names, Path(data) if data else None, options)


def aggregate(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Pool scene rows of one tracker: MOTA, IDF1, IDsw, Frag, count errors (total, scenes with error 0)."""
    raw = {k: sum(r[k] for r in rows) for k in RAW_KEYS}
    gt = max(raw["num_objects"], 1)
    mota = 1.0 - (raw["num_misses"] + raw["num_false_positives"] + raw["num_switches"]) / gt
    denom = 2 * raw["idtp"] + raw["idfp"] + raw["idfn"]
    out: Dict[str, Any] = {"scenes": len(rows), "MOTA": mota, "IDF1": 2 * raw["idtp"] / denom if denom else 0.0,
                           "IDsw": raw["num_switches"], "Frag": raw["num_fragmentations"], **raw}
    for rule in RULES:
        errs = [r["count_error"][rule] for r in rows]
        out[f"count_error_{rule}"] = int(sum(errs))
        out[f"exact_{rule}"] = sum(1 for e in errs if e == 0) / max(len(errs), 1)
    return out


def default_data() -> Optional[Path]:
    """``$EDGE_DETECT_DATA`` or ``../shared`` beside the repository, when it holds the sprite images."""
    env = os.environ.get("EDGE_DETECT_DATA")
    cand = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared"
    return cand if (cand / "images" / "bus.jpg").exists() else None
