#!/usr/bin/env python3
"""Interleaved inference-only timing of several model/backend pairs in one process (robust ratios on a busy machine).

    python tools/interleaved_inference.py --imgsz 640 --rounds 100 \
        onnxruntime=runs/bench/yolov5n.onnx openvino=runs/bench/yolov5n.onnx openvino=runs/bench/yolov5n-int8.xml

Each round calls every configuration once, in turn, on the same synthetic frame (preprocessed once), so a burst
of load from other processes hits all of them alike; prints min and median ms per configuration and the ratios
of the first configuration's median / min to each other's (speed-up vs the first).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", metavar="BACKEND=MODEL")
    p.add_argument("--imgsz", default="640", help="S or HxW (dynamic models; static ones use their own size)")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()
    from edge_detect.bench import parse_imgsz, synthetic_frame
    from edge_detect.detector import Detector

    hw = parse_imgsz(args.imgsz)
    runs = []
    for spec in args.configs:
        backend, _, model = spec.partition("=")
        det = Detector(model, backend=backend)
        if det.dynamic_hw:
            det.input_hw = hw
        batch = np.ascontiguousarray(det.preprocess([synthetic_frame(tuple(det.input_hw))])[0])
        for _ in range(args.warmup):
            det.infer(batch)
        name = f"{backend} {getattr(det.backend, 'precision', det.metadata.precision)} {model.rsplit('/', 1)[-1]}"
        runs.append((name, det, batch, []))
    for _ in range(args.rounds):
        for _, det, batch, times in runs:
            t0 = time.perf_counter()
            det.infer(batch)
            times.append((time.perf_counter() - t0) * 1e3)
    base_med, base_min = np.median(runs[0][3]), np.min(runs[0][3])
    for name, det, _, times in runs:
        med, mn = np.median(times), np.min(times)
        print(f"{name:48s} {det.input_hw[0]}x{det.input_hw[1]}  median {med:6.2f} ms  min {mn:6.2f} ms  "
              f"speed-up vs first: median {base_med / med:4.2f}x  min {base_min / mn:4.2f}x")
        det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
