#!/usr/bin/env python3
"""Cost of the analytics processors per frame (ms), without a model.

Objects walk across a 1280x720 frame at constant velocity with a little box noise (seeded), 5 % of their boxes
missed on any frame; the detections go through each processor chain and the cost of the chain's ``update`` calls
is reported per frame: CPU time of the calling thread (``time.thread_time``, mean over the frames after a
warm-up: what the chain costs, unaffected by other processes on a shared machine) and the wall-clock p95. One
CPU thread of numpy is used (``OMP_NUM_THREADS=1``), as in the pipeline's postprocess thread.

    python tools/bench_tracker.py                      # 10, 50 and 100 objects, 300 frames each
    python tools/bench_tracker.py --objects 20 --frames 1000 --json tracker.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from edge_detect.stream.processors.bytetrack import ByteTrack  # noqa: E402
from edge_detect.stream.processors.lines import LineCounter  # noqa: E402
from edge_detect.stream.processors.zones import ZoneCounter  # noqa: E402
from edge_detect.stream.processors.iou import IoUTracker  # noqa: E402
from edge_detect.types import Detections, Frame  # noqa: E402

W, H, FPS = 1280, 720, 30.0


def scene(n_objects: int, frames: int, seed: int = 0):
    """Per frame Detections of ``n_objects`` walkers (boxes 30-60 x 80-160 px), re-spawned when they leave."""
    rng = np.random.default_rng(seed)
    size = np.stack([rng.uniform(30, 60, n_objects), rng.uniform(80, 160, n_objects)], 1)
    pos = np.stack([rng.uniform(0, W, n_objects), rng.uniform(160, H, n_objects)], 1)
    vel = np.stack([rng.choice([-1, 1], n_objects) * rng.uniform(1, 4, n_objects),
                    rng.uniform(-1, 1, n_objects)], 1)
    out = []
    for _ in range(frames):
        pos += vel
        gone = (pos[:, 0] < -30) | (pos[:, 0] > W + 30) | (pos[:, 1] < 100) | (pos[:, 1] > H + 40)
        pos[gone] = np.stack([np.where(vel[gone, 0] > 0, 0.0, float(W)), rng.uniform(160, H, gone.sum())], 1)
        boxes = np.concatenate([pos - size * [0.5, 1.0], pos + size * [0.5, 0.0]], 1)
        boxes += rng.normal(0, 1.0, (n_objects, 4))
        keep = rng.random(n_objects) > 0.05
        score = rng.uniform(0.3, 0.95, n_objects)
        out.append((boxes[keep], score[keep], np.zeros(keep.sum(), np.int32)))
    return out


def chains():
    lines = {"a": (W / 2, 0, W / 2, H), "b": (0, H / 2, W, H / 2)}
    zones = {"z": (100, 300, 600, 300, 600, 700, 100, 700)}

    return {
        "iou": lambda: [IoUTracker()],
        "bytetrack": lambda: [ByteTrack()],
        "bytetrack+lines+zones": lambda: [ByteTrack(), LineCounter(lines), ZoneCounter(zones)],
    }


def run(n_objects: int, frames: int, warmup: int = 30) -> dict:
    data = scene(n_objects, frames + warmup)
    image = np.zeros((1, 1, 3), np.uint8)
    result = {}
    for name, make in chains().items():
        procs = make()
        cpu, wall = [], []
        for i, (b, s, c) in enumerate(data):
            dets = Detections(b, s, c)
            frame = Frame(image, "bench", i, i * 1000 / FPS, 0.0, i / FPS)
            c0, t0 = time.thread_time(), time.perf_counter()
            for p in procs:
                dets = p.update(dets, frame)
            if i >= warmup:
                cpu.append((time.thread_time() - c0) * 1e3)
                wall.append((time.perf_counter() - t0) * 1e3)
        result[name] = {"cpu_ms": round(float(np.mean(cpu)), 3),
                        "wall_p95_ms": round(float(np.percentile(wall, 95)), 3)}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = {n: run(n, args.frames) for n in args.objects}
    print("| objects | " + " | ".join(f"{k}: CPU ms/frame (wall p95)" for k in chains()) + " |")
    print("|---:|" + "---:|" * len(chains()))
    for n, r in rows.items():
        print(f"| {n} | " + " | ".join(f"{v['cpu_ms']:.2f} ({v['wall_p95_ms']:.1f})" for v in r.values()) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"frames": args.frames, "results": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
