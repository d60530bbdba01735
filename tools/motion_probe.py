#!/usr/bin/env python3
"""Figures for motion gating (issue 25): motion methods and the gate in a plain loop, region inference through the
pipeline.

    python tools/motion_probe.py methods SCENE.mp4 [--truth SCENE.json] [--busy vtest.avi]
    python tools/motion_probe.py gate SCENE.mp4 --model M.onnx [--method diff] [--fps N]
    python tools/motion_probe.py regions FAR.mp4 --model M.onnx [--truth FAR.json]

``methods``: each background model of :class:`~edge_detect.stream.motion.MotionDetector` on a scene from
``tools/make_motion_scene.py static`` (per frame: motion vs a walker in view; per truth box: covered by a motion
box) and on the busy sample video (the fraction of frames with motion), with its CPU ms per frame.

``gate``: decode -> motion -> :class:`~edge_detect.stream.motion.MotionGate` -> detector (when the gate says
so) -> ByteTrack -> line counter, once with ``mode: always`` and once with ``mode: motion`` (optionally with an
``fps`` cap): inference calls, process CPU ms per frame, line counts, confirmed tracks and how many of the
``always`` run's tracks the gated run also has (a track with IoU >= 0.5 on a frame both saw). Skipped frames reach
the tracker as the pipeline hands them on (empty, ``metadata["inferred"] = False``: predicted, not missed). The
pipeline's own figures come from ``edge-detect bench --detect always --detect motion`` (BENCHMARKS.md "CPU boxes:
motion gating"); this loop is the quick probe.

``regions``: on the ``far`` scene, recall and precision vs its truth boxes of the app's pipeline
(:func:`edge_detect.bench.detect.run_detect_setting`, as ``edge-detect bench --detect motion --detect
motion+regions`` runs it) with ``detect: {mode: motion}`` (whole-frame letterbox) and with ``regions`` (the gate's
motion boxes -> :func:`~edge_detect.stream.regions.plan_regions` -> each crop a row of the batch ->
:func:`~edge_detect.stream.regions.regions_to_frame`), crops per frame and CPU ms per frame; the detector's boxes
(``whole``, ``regions``) and the confirmed tracks' boxes with ByteTrack on (``*_tracked``).

``methods`` and ``gate`` are loop figures, not ``edge-detect bench`` figures. CPU is process CPU time
(``time.process_time``), which counts ONNX Runtime's worker threads.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_detect.boxes import box_iou  # noqa: E402
from edge_detect.stream.motion import METHODS, MotionDetector, MotionGate, TrackStillness  # noqa: E402
from edge_detect.types import Detections, Frame  # noqa: E402


def frames_of(path: Path, limit: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray, float]]:
    """``(index, BGR image, stream time s)`` of a video file (time = index / container fps)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    i = 0
    while limit is None or i < limit:
        ok, img = cap.read()
        if not ok:
            break
        yield i, img, i / fps
        i += 1
    cap.release()


def truth_boxes(truth: Dict[str, Any]) -> Dict[int, List[List[float]]]:
    """frame -> truth boxes (static scene walkers, or the far scene's boxes)."""
    out: Dict[int, List[List[float]]] = {}
    if "walkers" in truth:
        for w in truth["walkers"]:
            for f, b in w["boxes"].items():
                out.setdefault(int(f), []).append(b)
    else:
        for f, bs in truth["boxes"].items():
            out[int(f)] = bs
    return out


def _coverage(box: List[float], motion: np.ndarray) -> float:
    """Fraction of ``box`` inside the union of motion boxes (sampled on a 1-px grid)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if x2 <= x1 or y2 <= y1 or not len(motion):
        return 0.0
    m = np.zeros((y2 - y1, x2 - x1), bool)
    for a in motion:
        ax1, ay1 = int(max(a[0] - x1, 0)), int(max(a[1] - y1, 0))
        ax2, ay2 = int(min(a[2] - x1, x2 - x1)), int(min(a[3] - y1, y2 - y1))
        if ax2 > ax1 and ay2 > ay1:
            m[ay1:ay2, ax1:ax2] = True
    return float(m.mean())


def run_motion(path: Path, method: str, truth: Optional[Dict[int, List[List[float]]]], width: int,
               min_area: float, mask: Sequence[List[float]] = ()) -> Dict[str, Any]:
    det = MotionDetector(method=method, width=width, min_area=min_area, mask=mask)
    stats = dict(frames=0, motion=0, tp=0, fp=0, fn=0, tn=0, boxes=0, covered=0, calibrating=0)
    fp_late = 0
    cpu = 0.0
    for i, img, t in frames_of(path):
        c0 = time.thread_time()
        r = det.update(img, t)
        cpu += time.thread_time() - c0
        stats["frames"] += 1
        stats["motion"] += r.motion
        stats["calibrating"] += r.calibrating
        if truth is None or r.calibrating:
            continue
        present = bool(truth.get(i))
        key = ("tp" if r.motion else "fn") if present else ("fp" if r.motion else "tn")
        stats[key] += 1
        fp_late += key == "fp" and t >= 30.0
        for b in truth.get(i, []):
            if (b[2] - b[0]) * (b[3] - b[1]) < 0.5 * 30 * 80:  # mostly outside the frame
                continue
            stats["boxes"] += 1
            stats["covered"] += _coverage(b, r.boxes) >= 0.5
    stats["cpu_ms_per_frame"] = round(1000 * cpu / max(stats["frames"], 1), 3)
    stats["lighting_jumps"] = det.lighting_jumps
    stats["fp_after_30s"] = fp_late
    return stats


def cmd_methods(args: argparse.Namespace) -> int:
    truth = truth_boxes(json.loads(Path(args.truth or args.scene.with_suffix(".json")).read_text()))
    rows = {}
    for method in args.methods:
        mask = [[float(v) for v in m.split(",")] for m in args.mask]
        s = run_motion(args.scene, method, truth, args.width, args.min_area, mask)
        busy = run_motion(args.busy, method, None, args.width, args.min_area) if args.busy else None
        rows[method] = {
            "cpu_ms_per_frame": s["cpu_ms_per_frame"],
            "frame_recall": round(s["tp"] / max(s["tp"] + s["fn"], 1), 4),
            "false_motion_frames": round(s["fp"] / max(s["fp"] + s["tn"], 1), 4),
            "box_recall": round(s["covered"] / max(s["boxes"], 1), 4),
            "false_motion_frames_after_30s": s["fp_after_30s"], "motion_frames": s["motion"],
            "frames": s["frames"], "lighting_jumps": s["lighting_jumps"],
            "busy_motion_frac": None if busy is None else round(busy["motion"] / max(busy["frames"] - busy[
                "calibrating"], 1), 4),
            "busy_cpu_ms_per_frame": None if busy is None else busy["cpu_ms_per_frame"],
        }
        print(method, json.dumps(rows[method]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


# ----------------------------------------------------------------------------------------------- gate loop

def _make_chain(line: List[float]) -> Tuple[Any, Any]:
    from edge_detect.stream.processors.bytetrack import ByteTrack
    from edge_detect.stream.processors.lines import LineCounter

    return ByteTrack(), LineCounter(lines={"middle": line})  # stream time from the frames' pts


def run_gated(path: Path, detector: Any, mode: str, method: str, line: List[float], fps_cap: Optional[float],
              width: int, min_area: float, limit: Optional[int]) -> Dict[str, Any]:
    tracker, lines = _make_chain(line)
    motion = MotionDetector(method=method, width=width, min_area=min_area) if mode == "motion" else None
    gate, still = MotionGate(mode=mode, fps=fps_cap), TrackStillness()
    tracks: Dict[int, Dict[int, np.ndarray]] = {}
    cpu = {"motion": 0.0, "detector": 0.0, "processors": 0.0}
    p0 = time.process_time()
    n = 0
    for i, img, t in frames_of(path, limit):
        n += 1
        c0 = time.thread_time()
        result = motion.update(img, t) if motion is not None else None
        cpu["motion"] += time.thread_time() - c0
        decision = gate.decide(t, result, *still.snapshot(t))
        c0 = time.process_time()
        if decision.infer:
            dets = detector(img)
        else:  # as the pipeline hands a gated frame on: the tracker predicts
            dets = Detections.empty()
            dets.metadata["inferred"] = False
        cpu["detector"] += time.process_time() - c0
        c0 = time.thread_time()
        frame = Frame(img, "scene", i, pts_ms=1000.0 * t, skip_inference=not decision.infer)
        out = lines.update(tracker.update(dets, frame), frame)
        if decision.infer:
            still.update(t, out)
        cpu["processors"] += time.thread_time() - c0
        if not decision.infer:
            continue
        for box, tid in zip(out.xyxy, out.track_id if out.track_id is not None else []):
            tracks.setdefault(int(tid), {})[i] = box
    total = time.process_time() - p0
    return {"mode": mode, "fps_cap": fps_cap, "frames": n, **gate.summary(),
            "cpu_ms_per_frame": round(1000 * total / max(n, 1), 3),
            "cpu_ms_per_frame_by_part": {k: round(1000 * v / max(n, 1), 3) for k, v in cpu.items()},
            "lines": lines.summary()["lines"], "confirmed_tracks": tracker.summary()["tracker"]["tracks"],
            "_tracks": tracks}


def tracks_found(ref: Dict[int, Dict[int, np.ndarray]], other: Dict[int, Dict[int, np.ndarray]]) -> int:
    """How many tracks of ``ref`` have a track in ``other`` with IoU >= 0.5 on a frame both observed."""
    found = 0
    for frames in ref.values():
        hit = False
        for boxes in other.values():
            common = sorted(set(frames) & set(boxes))
            if any(box_iou(frames[f][None], boxes[f][None])[0, 0] >= 0.5 for f in common):
                hit = True
                break
        found += hit
    return found


def cmd_gate(args: argparse.Namespace) -> int:
    from edge_detect.detector import Detector

    truth = json.loads(Path(args.truth or args.scene.with_suffix(".json")).read_text()) \
        if (args.truth or args.scene.with_suffix(".json").exists()) else {}
    line = truth.get("line", {}).get("xyxy") or [float(v) for v in args.line.split(",")]
    detector = Detector(str(args.model), imgsz=args.imgsz, threads=args.threads)
    detector(np.zeros((64, 64, 3), np.uint8))  # warm-up
    runs = []
    plan = [("always", None)] + ([("always", args.fps)] if args.fps else []) + [("motion", args.fps)]
    for mode, cap in plan:
        r = run_gated(args.scene, detector, mode, args.method, line, cap, args.width, args.min_area, args.frames)
        runs.append(r)
    ref = runs[0]
    for r in runs:
        r["always_tracks_found"] = f"{tracks_found(ref['_tracks'], r['_tracks'])}/{len(ref['_tracks'])}"
        r["inference_frac"] = round(r["inference_calls"] / max(r["frames"], 1), 4)
        r["cpu_vs_always"] = round(r["cpu_ms_per_frame"] / max(ref["cpu_ms_per_frame"], 1e-9), 4)
        print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([{k: v for k, v in r.items() if not k.startswith("_")}
                                               for r in runs], indent=1))
    return 0


# ----------------------------------------------------------------------------------------------- regions

def match(pred: np.ndarray, truth: np.ndarray, thr: float = 0.5) -> int:
    """Greedy one-to-one matches at IoU >= ``thr`` (highest IoU first)."""
    if not len(pred) or not len(truth):
        return 0
    iou = box_iou(pred, truth)
    hits, used_p, used_t = 0, set(), set()
    for flat in np.argsort(-iou, axis=None):
        p, t = divmod(int(flat), iou.shape[1])
        if iou[p, t] < thr:
            break
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        hits += 1
    return hits


def cmd_regions(args: argparse.Namespace) -> int:
    import tempfile

    from edge_detect.bench.detect import run_detect_setting
    from edge_detect.detector import Detector

    truth = truth_boxes(json.loads(Path(args.truth or args.scene.with_suffix(".json")).read_text()))
    det = Detector(str(args.model), imgsz=args.imgsz, auto=False, classes=[0], conf=args.conf,
                   threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app.yaml"
        app.write_text(json.dumps({"detect": {"regions": {"max_zoom": args.max_zoom}},
                                   "motion": {"method": args.method, "width": args.width,
                                              "min_area": args.min_area}}))
        out: Dict[str, Any] = {"model_hw": det.input_hw, "max_zoom": args.max_zoom}
        runs = [(key, spec, track) for track in (False, True)
                for key, spec in (("whole", "motion"), ("regions", "motion+regions"))]
        for key, spec, track in runs:
            summary, rec = run_detect_setting(det, str(args.scene), spec, app_config=app, max_frames=args.frames,
                                              progress=False, track=track)
            key = f"{key}_tracked" if track else key
            m = p_ = n = 0
            for f, (_, xyxy, _) in rec.frames.items():
                if f < args.skip:
                    continue
                tb = np.asarray(truth.get(f, []), np.float32).reshape(-1, 4)
                m, p_, n = m + match(xyxy, tb), p_ + len(xyxy), n + len(tb)
            src = next(iter(summary.sources.values()))
            out[key] = {"recall": round(m / max(n, 1), 4), "precision": round(m / max(p_, 1), 4), "matched": m,
                        "predicted": p_, "truth": n, "frames": summary.processed,
                        "inference_calls": summary.inference_calls, "regions": src["detect"].get("regions"),
                        "cpu_ms_per_frame": round(summary.cpu_ms_per_frame.get("total", 0.0), 2)}
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("methods")
    m.add_argument("scene", type=Path)
    m.add_argument("--truth", type=Path)
    m.add_argument("--busy", type=Path, default=None, help="a busy video (the sample video)")
    m.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    m.add_argument("--mask", action="append", default=[], help="x1,y1,x2,y2,... polygon to ignore (repeatable)")
    for sp in (m,):
        sp.add_argument("--width", type=int, default=320)
        sp.add_argument("--min-area", type=float, default=0.0002)
        sp.add_argument("--json", default=None)
    g = sub.add_parser("gate")
    g.add_argument("scene", type=Path)
    g.add_argument("--truth", type=Path)
    g.add_argument("--model", type=Path, required=True)
    g.add_argument("--line", default="240,100,240,360", help="x1,y1,x2,y2 when the scene has no truth JSON")
    g.add_argument("--method", default="diff", choices=METHODS)
    g.add_argument("--fps", type=float, default=None, help="detect fps cap (also runs always + cap)")
    g.add_argument("--frames", type=int, default=None)
    r = sub.add_parser("regions")
    r.add_argument("scene", type=Path)
    r.add_argument("--truth", type=Path)
    r.add_argument("--model", type=Path, required=True)
    r.add_argument("--method", default="diff", choices=METHODS)
    r.add_argument("--conf", type=float, default=0.25)
    r.add_argument("--max-zoom", type=float, default=1.0)
    r.add_argument("--frames", type=int, default=None)
    r.add_argument("--skip", type=int, default=0, help="frames not scored at the start")
    for sp in (g, r):
        sp.add_argument("--imgsz", type=int, default=640)
        sp.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: its default)")
        sp.add_argument("--width", type=int, default=320)
        sp.add_argument("--min-area", type=float, default=0.0002)
        sp.add_argument("--json", default=None)
    args = p.parse_args(argv)
    return {"methods": cmd_methods, "gate": cmd_gate, "regions": cmd_regions}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
