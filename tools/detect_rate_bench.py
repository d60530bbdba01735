#!/usr/bin/env python3
"""A detect rate of its own (``detect: {fps: 5}`` on a 25 fps camera) on the tracking benchmark's line-crossing
scenes: are the counts those of the every-frame run, and what does it save? (issue 25; BENCHMARKS.md "CPU boxes:
motion gating"). Both parts run the scenes through the app's pipeline with :func:`edge_detect.bench.detect.
benchmark_detect`, the code of ``edge-detect bench --detect always --detect always@5``:

    python tools/detect_rate_bench.py scenes [--seeds 20] [--fps 25] [--rate 5] [--json out.json]
    python tools/detect_rate_bench.py render OUTDIR [--seeds 1] [--fps 25]
    python tools/detect_rate_bench.py model OUTDIR --model yolov5n.onnx [--threads 1] [--json out.json]

``scenes``: every family of :mod:`edge_detect.stream.trackbench` at ``--fps`` (the same scenes in seconds), fed
through the pipeline by a scene source and the scene's noisy detections (:mod:`edge_detect.stream.trackbench.
feed`: exact truth, no model), once on every frame and once at ``--rate`` inference calls a second; per family:
scenes whose counts equal the every-frame run's, and how many of each run are exact against the truth.

``render``: the scenes drawn (sprites from the shared images on a plain background; ``freeze`` left out: a video
cannot hold a camera that delivers nothing) as mp4 files with their lines (``OUTDIR/<family>_<seed>.json``).
``model``: each rendered scene through the real model, every frame vs ``--rate``, with one loaded detector: counts
equal, inference calls, CPU per frame (process CPU, ``--threads 1`` so idle runtime threads do not spin).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_detect.bench.detect import benchmark_detect  # noqa: E402
from edge_detect.stream.trackbench.scenes import FAMILIES, make_scene  # noqa: E402

DATA = Path(os.environ.get("EDGE_DETECT_DATA", REPO.parent / "shared"))


def _specs(rate: float) -> List[str]:
    return ["always", f"always@{rate:g}"]


def cmd_scenes(args: argparse.Namespace) -> int:
    from edge_detect.stream.trackbench.feed import SceneDetector, register_scene_source, scene_of, scene_uri

    register_scene_source()
    rows: Dict[str, Dict[str, Any]] = {}
    for family in args.families:
        row = {"scenes": 0, "equal": 0, "exact_every": 0, "exact_rate": 0, "calls_every": 0, "calls_rate": 0,
               "differ": []}
        for seed in range(args.seeds):
            uri = scene_uri(family, seed, args.fps)
            scene = scene_of(uri)
            every, capped = benchmark_detect(SceneDetector(scene), uri, _specs(args.rate), lines=scene.lines,
                                             progress=False)
            truth = {n: {"in": c["in"], "out": c["out"]} for n, c in scene.truth.items()}
            row["scenes"] += 1
            row["equal"] += capped["vs_first"]["lines_equal"]
            row["exact_every"] += every["lines"] == truth
            row["exact_rate"] += capped["lines"] == truth
            row["calls_every"] += every["inference_calls"]
            row["calls_rate"] += capped["inference_calls"]
            if not capped["vs_first"]["lines_equal"]:
                row["differ"].append({"seed": seed, "every": every["lines"], "rate": capped["lines"], "truth": truth})
        rows[family] = row
        print(family, json.dumps({k: v for k, v in row.items() if k != "differ"}), flush=True)
    total = {k: sum(r[k] for r in rows.values()) for k in ("scenes", "equal", "exact_every", "exact_rate",
                                                            "calls_every", "calls_rate")}
    print("all", json.dumps(total))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args) | {"json": None}, "families": rows,
                                               "total": total}, indent=1, default=str))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    import cv2

    from edge_detect.stream.trackbench.world import background, load_crops, render_frame

    crops = load_crops(DATA)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        if family == "freeze":
            continue
        for seed in range(args.seeds):
            scene = make_scene(family, seed, fps=args.fps)
            w = scene.world
            bg = background(w.size, seed)
            path = out / f"{family}_{seed}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), w.fps, (w.size[1], w.size[0]))
            for f in range(w.frames):
                writer.write(render_frame(w, f, crops, bg))
            writer.release()
            truth = {n: {"in": c["in"], "out": c["out"]} for n, c in scene.truth.items()}
            path.with_suffix(".json").write_text(json.dumps({"family": family, "seed": seed, "fps": w.fps,
                                                             "frames": w.frames, "lines": scene.lines,
                                                             "truth": truth}))
            print(f"{path}: {w.frames} frames at {w.fps:g} fps, lines {scene.lines}", flush=True)
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from edge_detect.detector import Detector

    det = Detector(str(args.model), threads=args.threads, imgsz=args.imgsz)
    scenes = sorted(Path(args.outdir).glob("*.mp4"))
    rows, sums = [], {"frames": 0, "calls_every": 0, "calls_rate": 0, "cpu_every": 0.0, "cpu_rate": 0.0,
                      "equal": 0, "scenes": 0}
    for path in scenes:
        meta = json.loads(path.with_suffix(".json").read_text())
        every, capped = benchmark_detect(det, str(path), _specs(args.rate), lines=meta["lines"],
                                         repeat=args.repeat, progress=False)
        n = every["frames"]
        row = {"scene": path.stem, "frames": n, "calls": [every["inference_calls"], capped["inference_calls"]],
               "cpu_ms_per_frame": [every["cpu_ms_per_frame"]["total"], capped["cpu_ms_per_frame"]["total"]],
               "lines": [every["lines"], capped["lines"]], "truth": meta["truth"],
               "equal": capped["vs_first"]["lines_equal"], "tracks_found": capped["vs_first"]["tracks_found"]}
        rows.append(row)
        sums["frames"] += n
        sums["scenes"] += 1
        sums["equal"] += row["equal"]
        sums["calls_every"] += row["calls"][0]
        sums["calls_rate"] += row["calls"][1]
        sums["cpu_every"] += row["cpu_ms_per_frame"][0] * n
        sums["cpu_rate"] += row["cpu_ms_per_frame"][1] * n
        print(json.dumps(row), flush=True)
    total = {"scenes": sums["scenes"], "counts_equal": sums["equal"], "frames": sums["frames"],
             "inference_calls": [sums["calls_every"], sums["calls_rate"]],
             "cpu_ms_per_frame": [sums["cpu_every"] / max(sums["frames"], 1), sums["cpu_rate"] / max(sums["frames"], 1)]}
    total["cpu_down_x"] = total["cpu_ms_per_frame"][0] / max(total["cpu_ms_per_frame"][1], 1e-9)
    print("all", json.dumps(total))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args) | {"json": None}, "scenes": rows,
                                               "total": total}, indent=1, default=str))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scenes", help="every family through the pipeline with exact truth (no model)")
    r = sub.add_parser("render", help="draw the scenes as mp4 files")
    r.add_argument("outdir")
    m = sub.add_parser("model", help="the rendered scenes through the real model")
    m.add_argument("outdir")
    m.add_argument("--model", required=True)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--imgsz", type=int, default=None)
    m.add_argument("--repeat", type=int, default=1)
    for sp in (s, r, m):
        sp.add_argument("--fps", type=float, default=25.0, help="camera rate (default 25)")
        sp.add_argument("--rate", type=float, default=5.0, help="detect rate (default 5)")
        sp.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
        sp.add_argument("--json", default=None)
    for sp in (s, r):
        sp.add_argument("--seeds", type=int, default=20 if sp is s else 1)
    args = p.parse_args(argv)
    return {"scenes": cmd_scenes, "render": cmd_render, "model": cmd_model}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
