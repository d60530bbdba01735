#!/usr/bin/env python3
"""N ``edge-detect run`` processes against one Triton server vs each with its own local ONNX Runtime.

    python tools/triton_bench.py --weights yolov5n --video ../shared/videos/vtest.avi --clients 4 --frames 100

Both modes run the same N processes at once on the same video (N camera stand-ins), ``--max-frames`` each, JSONL on:

* ``local``:  ``--model <static yolov5n ONNX>``: each process runs the model itself (ONNX Runtime, its default
  threads).
* ``triton``: ``--model grpc://127.0.0.1:PORT/yolov5n`` against ``tools/triton_test_server.py`` serving the
  ``export --format triton`` repository (ONNX Runtime inside the server; dynamic batching).

Reported per mode: total FPS (all frames processed / wall time from the first process start to the last exit),
the clients' CPU seconds (``wait4`` rusage, per process and in total), the server's CPU seconds (its process tree,
psutil), and for Triton the server-side batches (``nv_inference_count / nv_inference_exec_count`` from the metrics
endpoint). Detections of every client are compared with the local run's (boxes within 0.5 px, scores within 1e-4,
same counts). Prints one JSON object; ``--markdown`` also prints the BENCHMARKS.md table rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("triton_test_server", REPO / "tools" / "triton_test_server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tree_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_clients(model: str, video: Path, n: int, frames: int, out: Path) -> Dict[str, Any]:
    """Start ``n`` run processes at once; wall time, per-process CPU seconds, summaries."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "edge_detect", "--quiet", "run", "--model", model, "--source",
                               str(video), "--max-frames", str(frames), "--no-show", "--no-progress", "--save-jsonl",
                               str(out / f"c{i}.jsonl"), "--summary-json", str(out / f"c{i}.json")], env=env)
             for i in range(n)]
    cpu = {}
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"client {p.pid} exited with {p.returncode}")
        cpu[p.pid] = usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - t0
    summaries = [json.loads((out / f"c{i}.json").read_text()) for i in range(n)]
    processed = sum(s["processed"] for s in summaries)
    return {"wall_s": round(wall, 2), "processed": processed, "total_fps": round(processed / wall, 2),
            "per_process_fps": [round(s["fps"], 2) for s in summaries],
            "client_cpu_s": [round(c, 2) for c in cpu.values()], "client_cpu_s_total": round(sum(cpu.values()), 2)}


def compare(local: Path, remote: Path, n: int) -> Dict[str, Any]:
    """Max box / score difference and whether every client's detections match the local run's first client."""
    import numpy as np

    ref = [json.loads(line) for line in (local / "c0.jsonl").read_text().splitlines()]
    worst_box = worst_score = 0.0
    same = True
    for folder in (local, remote):
        for i in range(n):
            got = [json.loads(line) for line in (folder / f"c{i}.jsonl").read_text().splitlines()]
            for a, b in zip(ref, got):
                if a["frame"] != b["frame"] or len(a["detections"]) != len(b["detections"]):
                    same = False
                    continue
                for da, db in zip(a["detections"], b["detections"]):
                    same &= da["class_id"] == db["class_id"]
                    worst_box = max(worst_box, float(np.abs(np.subtract(da["xyxy"], db["xyxy"])).max()))
                    worst_score = max(worst_score, abs(da["score"] - db["score"]))
    return {"identical_within_tolerance": bool(same and worst_box <= 0.5 and worst_score <= 1e-4),
            "max_box_px": worst_box, "max_score": worst_score}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="yolov5n")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--frames", type=int, default=100, help="--max-frames of each client")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from edge_detect import export
    from edge_detect.training.export import export_onnx
    from edge_detect.weights import resolve_weights

    tool = _tool()
    tool.ensure_venv()
    with tempfile.TemporaryDirectory(prefix="triton-bench-") as tmp:
        work = Path(tmp)
        weights = resolve_weights(args.weights)
        onnx = export_onnx(weights, work / "yolov5n.onnx", imgsz=(640, 640), progress=False)
        export(weights, work / "repo", format="triton", progress=False)
        local = run_clients(str(onnx), args.video, args.clients, args.frames, work / "local")
        server = tool.ServerProcess(work / "repo", tool.free_port(), log=work / "server.log").start().wait_ready()
        try:
            cpu0, m0 = _tree_cpu(server.proc.pid), tool.inference_counts(server.metrics_port)
            url = f"grpc://127.0.0.1:{server.grpc_port}/yolov5n"
            remote = run_clients(url, args.video, args.clients, args.frames, work / "triton")
            cpu1, m1 = _tree_cpu(server.proc.pid), tool.inference_counts(server.metrics_port)
        finally:
            server.stop()
        images = m1["nv_inference_count"] - m0["nv_inference_count"]
        batches = m1["nv_inference_exec_count"] - m0["nv_inference_exec_count"]
        remote.update(server_cpu_s=round(cpu1 - cpu0, 2), server_images=images, server_batches=batches,
                      server_mean_batch=round(images / max(batches, 1), 2))
        result = {"clients": args.clients, "frames_each": args.frames, "cpu_count": os.cpu_count(), "local": local,
                  "triton": remote, "detections": compare(work / "local", work / "triton", args.clients)}
    print(json.dumps(result, indent=2))
    if args.markdown:
        for name, r in (("local ONNX Runtime in each process", local), ("one Triton server (gRPC, shm)", remote)):
            batch = f"{r['server_mean_batch']} ({int(r['server_images'])} images / {int(r['server_batches'])} " \
                    f"batches)" if "server_mean_batch" in r else "-"
            server_cpu = r.get("server_cpu_s", "-")
            print(f"| {name} | {r['total_fps']} | {' / '.join(str(f) for f in r['per_process_fps'])} | {batch} | "
                  f"{' / '.join(str(c) for c in r['client_cpu_s'])} | {server_cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
