"""One-command GPU check for edge-detect (run by ``tools/gpu_check.sh``; needs no network).

Checks, in order (each one runs, or is skipped with the reason):

1. ``gpu_tests``: the ``gpu``-marked pytest tests.
2. ``torch_cuda_parity``: the torch backend on CUDA vs ``<data>/reference/infer_bus.npz`` (raw output).
3. ``cuda_helpers``: real cuda-python: pinned host buffers, async H2D/D2H copies on a non-blocking stream, a
   CUDA graph capturing a copy, replayed.
4. ``trt_build``: FP32 engine with in-graph EfficientNMS (uint8 input) built from the exported yolov5n.
5. ``trt_fresh_process_load``: that engine loaded and run in a NEW Python process (plugins registered at load).
6. ``trt_fp16_int8_parity``: FP16 and implicit-INT8 raw engines vs the reference output (max abs diff, and
   the detections' count after NMS).
7. ``trt_bench``: ``edge-detect bench`` on the FP16 engine.

TensorRT round 2 (issue 20), each the GPU half of a finding tested with doubles on CPU:

8. ``trt_fp16_nms_precision``: an FP16 engine with in-graph ONNX NMS (``inms``) on bus.jpg gives the reference
   detections: the NMS layer itself must run in FP32 (its class-offset boxes exceed FP16's range).
9. ``trt_timing_cache_refusal``: a timing cache TensorRT cannot read is replaced by a new one (the build succeeds
   and the rewritten cache is accepted by the next build).
10. ``trt_inms_candidates``: 8000 candidates above conf 0.001: the graph's pre-NMS top-K (3840) gives the engine
    the same detections as ONNX Runtime; without it TensorRT's NMS layer silently keeps only 5000.
11. ``trt_hardware_compat``: ``hardware_compatible=True`` is refused on TensorRT < 8.6, Jetson and pre-Ampere GPUs,
    else builds an AMPERE_PLUS engine that loads and runs.

Results go to ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``. ``--dry-run`` (or a machine without an
NVIDIA GPU) lists every check as skipped with the reason; ``tests/test_gpu_check.py`` runs that dry run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def nvidia_gpu() -> Optional[str]:
    """Why there is no usable NVIDIA GPU here, or ``None`` when there is one."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"
    return None if out.returncode == 0 and "GPU" in out.stdout else "nvidia-smi lists no GPU"


def has_torch_cuda() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "torch not installed (pip install 'edge-detect[build]')"
    return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"


def has_cudart() -> Optional[str]:
    try:
        from edge_detect.backends import _cuda

        _cuda.runtime()
    except ImportError as exc:
        return f"cuda-python not importable: {exc}"
    return None


def has_torch() -> Optional[str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch not installed, needed to export yolov5n.pt to ONNX (pip install 'edge-detect[build]')"
    return None


def has_tensorrt() -> Optional[str]:
    from edge_detect.backends.trt_common import tensorrt_available

    return None if tensorrt_available() else "TensorRT not installed (pip install 'edge-detect[tensorrt]')"


def has_onnxruntime() -> Optional[str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime not installed (pip install 'edge-detect[onnx]')"
    return None


class Context:
    def __init__(self, data: Path, work: Path) -> None:
        self.data, self.work = data, work
        self.onnx: Optional[Path] = None
        self.engines: Dict[str, Path] = {}

    def ref(self) -> Dict[str, Any]:
        import numpy as np

        return dict(np.load(self.data / "reference" / "infer_bus.npz"))

    def yolov5n_onnx(self) -> Path:
        if self.onnx is None:
            from edge_detect.training.export import export_onnx

            self.onnx = export_onnx(self.data / "weights" / "yolov5n.pt", self.work / "yolov5n.onnx", imgsz=(640, 640))
        return self.onnx


# ------------------------------------------------------------------------------------------------ checks
def check_gpu_tests(ctx: Context) -> Dict[str, Any]:
    env = {**os.environ, "EDGE_DETECT_DATA": str(ctx.data)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=3600)
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    return {"ok": proc.returncode == 0, "summary": tail[0]}


def check_torch_cuda_parity(ctx: Context) -> Dict[str, Any]:
    import numpy as np

    from edge_detect.models import open_model
    from edge_detect.preprocess import preprocess

    ref = ctx.ref()
    batch, _ = preprocess([ref["letterboxed_bgr"]], (640, 640))
    with open_model(ctx.data / "weights" / "yolov5n.pt", backend="torch", device="cuda") as be:
        (raw,) = be.infer(batch)
    diff = float(np.abs(raw - ref["raw"]).max())
    return {"ok": diff < 1e-2, "max_abs_diff_raw": diff}


def check_cuda_helpers(ctx: Context) -> Dict[str, Any]:
    import numpy as np

    from edge_detect.backends import _cuda

    n = 1 << 20
    data = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
    with _cuda.HostBuffer(n) as src, _cuda.HostBuffer(n) as dst, _cuda.DeviceBuffer(n) as dev, _cuda.Stream() as s:
        src.array[:] = data
        t0 = time.perf_counter()
        s.copy_htod(dev, src, n)
        s.copy_dtoh(dst, dev, n)
        s.synchronize()
        copy_ms = (time.perf_counter() - t0) * 1e3
        roundtrip = bool((dst.array == data).all())
        src.array[:] = data[::-1]
        graph = _cuda.CudaGraph(s, lambda st: (st.copy_htod(dev, src, n), True)[1])
        try:
            graph.launch(s)
            s.copy_dtoh(dst, dev, n)
            s.synchronize()
            replay = bool((dst.array == data[::-1]).all())
        finally:
            graph.close()
    gpu, cc = _cuda.device_info(0)
    return {"ok": roundtrip and replay, "gpu": gpu, "compute_capability": cc, "pinned_roundtrip": roundtrip,
            "graph_replay": replay, "1MiB_h2d_d2h_ms": round(copy_ms, 3)}


def check_trt_build(ctx: Context) -> Dict[str, Any]:
    from edge_detect.deploy.graph import add_nms, add_uint8_input
    from edge_detect.deploy.tensorrt_build import build_engine

    u8 = add_uint8_input(ctx.yolov5n_onnx(), ctx.work / "u8.onnx")
    nms = add_nms(u8, ctx.work / "nms.onnx", plugin="efficient", conf=0.25, iou=0.45, max_det=100)
    t0 = time.perf_counter()
    ctx.engines["nms"] = build_engine(nms, ctx.work / "nms.engine", progress=False)
    return {"ok": True, "build_s": round(time.perf_counter() - t0, 1),
            "engine_mb": round(ctx.engines["nms"].stat().st_size / 1e6, 2)}


FRESH = """
import json, sys
import numpy as np
from edge_detect.models import open_model
ref = np.load(sys.argv[2])
with open_model(sys.argv[1]) as be:
    num, boxes, scores, classes = be.infer(ref["letterboxed_bgr"][None])
print(json.dumps({"num_dets": int(num[0, 0]), "classes": classes[0, :int(num[0, 0])].tolist()}))
"""


def check_trt_fresh_process_load(ctx: Context) -> Dict[str, Any]:
    if "nms" not in ctx.engines:
        raise RuntimeError("trt_build did not produce an engine")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(ctx.engines["nms"]),
                           str(ctx.data / "reference" / "infer_bus.npz")], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        return {"ok": False, "stderr": proc.stderr[-2000:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    want = len(ctx.ref()["nms_display_letterbox"])
    return {"ok": res["num_dets"] == want, "num_dets": res["num_dets"], "reference_num_dets": want}


def check_trt_fp16_int8_parity(ctx: Context) -> Dict[str, Any]:
    import numpy as np

    from edge_detect.deploy.graph import add_uint8_input
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.models import open_model
    from edge_detect.postprocess import non_max_suppression

    ref = ctx.ref()
    u8 = add_uint8_input(ctx.yolov5n_onnx(), ctx.work / "u8_raw.onnx")
    want = len(non_max_suppression(ref["raw"], 0.25, 0.45)[0])
    out: Dict[str, Any] = {"reference_detections": want}
    calib = ctx.data / "datasets" / "coco128" / "images" / "train2017"
    for name, kwargs in (("fp16", {"fp16": True}), ("int8", {"int8": True, "calib": calib, "calib_images": 64})):
        engine = build_engine(u8, ctx.work / f"{name}.engine", progress=False, **kwargs)
        ctx.engines[name] = engine
        with open_model(engine) as be:
            (raw,) = be.infer(ref["letterboxed_bgr"][None])
        out[name] = {"max_abs_diff_raw": float(np.abs(raw - ref["raw"]).max()),
                     "detections": len(non_max_suppression(raw, 0.25, 0.45)[0])}
    out["ok"] = abs(out["fp16"]["detections"] - want) <= 1 and abs(out["int8"]["detections"] - want) <= 2
    return out


def check_trt_bench(ctx: Context) -> Dict[str, Any]:
    if "fp16" not in ctx.engines:
        raise RuntimeError("trt_fp16_int8_parity did not produce the FP16 engine")
    out = ctx.work / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "edge_detect", "bench", "--model", str(ctx.engines["fp16"]),
                           "--iters", "200", "--warmup", "20", "--json", str(out), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        return {"ok": False, "stderr": proc.stderr[-2000:]}
    return {"ok": True, "bench": json.loads(out.read_text())["results"]}


# ------------------------------------------------------------------------------------------------ TensorRT round 2
def _identity_raw_onnx(path: Path, n: int, nc: int) -> Path:
    """A "model" taking ``images`` float ``(1, 3, n, 5 + nc)`` (image-shaped, as the TensorRT backend wants) whose
    ``output0`` ``(1, n, 5 + nc)`` is its first channel: feed it a raw prediction broadcast over 3 channels."""
    import onnx
    from onnx import TensorProto, helper

    from edge_detect.metadata import METADATA_KEY, ModelMetadata

    c = 5 + nc
    inits = [helper.make_tensor(name, TensorProto.INT64, [len(v)], v)
             for name, v in (("starts", [0]), ("ends", [1]), ("axes", [1]), ("shape", [1, n, c]))]
    nodes = [helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["first"], name="model/slice"),
             helper.make_node("Reshape", ["first", "shape"], ["output0"], name="model/reshape")]
    graph = helper.make_graph(nodes, "raw", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, n, c])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, n, c])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = ModelMetadata(names=tuple(f"c{i}" for i in range(nc)))
    model.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
    onnx.save(model, str(path))
    return path


def _many_candidates(n: int) -> Any:
    """``(1, 3, n, 7)`` input of :func:`_identity_raw_onnx`: n disjoint 10x10 boxes of class 0 with scores
    0.9 - i * 1e-4 (all > 0.001), the same raw prediction on each channel."""
    import numpy as np

    i = np.arange(n)
    raw = np.zeros((n, 7), np.float32)
    raw[:, 0], raw[:, 1] = (i % 100) * 20 + 10, (i // 100) * 20 + 10
    raw[:, 2:4], raw[:, 4], raw[:, 5] = 10, 1.0, 0.9 - i * 1e-4
    return np.ascontiguousarray(np.broadcast_to(raw, (1, 3, n, 7)))


def check_trt_fp16_nms_precision(ctx: Context) -> Dict[str, Any]:
    """Finding 1: FP16 engine with the standard ONNX NMS on bus.jpg == the reference detections."""
    from edge_detect.deploy.graph import add_nms, add_uint8_input
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.models import open_model

    ref = ctx.ref()
    u8 = add_uint8_input(ctx.yolov5n_onnx(), ctx.work / "u8_f1.onnx")
    nms = add_nms(u8, ctx.work / "inms_f1.onnx", plugin="inms", conf=0.25, iou=0.45, max_det=100)
    engine = build_engine(nms, ctx.work / "inms_fp16.engine", fp16=True, progress=False)
    with open_model(engine) as be:
        num, boxes, scores, classes = be.infer(ref["letterboxed_bgr"][None])
    want = ref["nms_display_letterbox"]
    n = int(num[0, 0])
    same_classes = n == len(want) and classes[0, :n].tolist() == want[:, 5].astype(int).tolist()
    max_box_err = float(abs(boxes[0, :n] - want[:, :4]).max()) if n == len(want) and n else None
    return {"ok": same_classes and max_box_err is not None and max_box_err < 2.0, "num_dets": n,
            "reference_num_dets": len(want), "max_abs_box_err_px": max_box_err}


def check_trt_timing_cache_refusal(ctx: Context) -> Dict[str, Any]:
    """Finding 3: an unreadable timing cache is replaced, and the rewritten one is accepted next time."""
    import logging

    from edge_detect.deploy.tensorrt_build import build_engine

    model = _identity_raw_onnx(ctx.work / "tc.onnx", 64, 2)
    cache = ctx.work / "bad.timing"
    cache.write_bytes(b"\x00\x01 not a timing cache")
    records: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("edge_detect.deploy.tensorrt_build").addHandler(handler)
    try:
        build_engine(model, ctx.work / "tc1.engine", timing_cache=cache, progress=False)
        replaced = any("is not a timing cache TensorRT can read" in r for r in records)
        records.clear()
        build_engine(model, ctx.work / "tc2.engine", timing_cache=cache, progress=False)
        reused = not any("starting a new one" in r for r in records)
    finally:
        logging.getLogger("edge_detect.deploy.tensorrt_build").removeHandler(handler)
    return {"ok": replaced and reused, "replaced": replaced, "rewritten_cache_reused": reused,
            "cache_bytes": cache.stat().st_size}


def check_trt_inms_candidates(ctx: Context) -> Dict[str, Any]:
    """Finding 4: engine == ONNX Runtime with the pre-NMS top-K; TensorRT's own 5000 limit without it."""
    import numpy as np
    import onnxruntime as ort

    from edge_detect.deploy.graph import add_nms
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.models import open_model

    raw = _many_candidates(8000)
    model = _identity_raw_onnx(ctx.work / "cand.onnx", 8000, 2)
    out: Dict[str, Any] = {}
    for name, top_k, max_det in (("top_k", 3840, 5000), ("no_top_k", None, 8000)):
        graph = add_nms(model, ctx.work / f"cand_{name}.onnx", plugin="inms", conf=0.001, iou=0.6, max_det=max_det,
                        top_k=top_k)
        sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        ort_out = sess.run(None, {"images": raw})
        with open_model(build_engine(graph, ctx.work / f"cand_{name}.engine", progress=False)) as be:
            trt_out = be.infer(raw)
        n_ort, n_trt = int(ort_out[0][0, 0]), int(trt_out[0][0, 0])
        out[name] = {"onnxruntime_num_dets": n_ort, "tensorrt_num_dets": n_trt}
        if name == "top_k":
            out[name]["max_score_diff"] = float(np.abs(ort_out[2][0, :n_ort] - trt_out[2][0, :n_ort]).max())
    out["ok"] = (out["top_k"]["onnxruntime_num_dets"] == out["top_k"]["tensorrt_num_dets"] == 3840
                 and out["top_k"]["max_score_diff"] < 1e-5)
    return out


def check_trt_hardware_compat(ctx: Context) -> Dict[str, Any]:
    """Finding 5: refused where TensorRT cannot (< 8.6, Jetson, pre-Ampere), else an engine that loads."""
    import numpy as np

    from edge_detect.backends import _cuda
    from edge_detect.backends.trt_common import import_tensorrt, version_tuple
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.errors import BackendUnavailableError
    from edge_detect.models import open_model

    props, version = _cuda.device_props(0), import_tensorrt().__version__
    expect_refusal = version_tuple(version, 2) < (8, 6) or props.integrated or \
        version_tuple(props.compute_capability, 1)[0] < 8
    model = _identity_raw_onnx(ctx.work / "hw.onnx", 64, 2)
    try:
        engine = build_engine(model, ctx.work / "hw.engine", hardware_compatible=True, progress=False)
    except BackendUnavailableError as exc:
        return {"ok": expect_refusal, "refused": str(exc), "tensorrt": version, "gpu": props.name}
    with open_model(engine) as be:
        (got,) = be.infer(_many_candidates(64))
    return {"ok": not expect_refusal and bool(np.allclose(got, _many_candidates(64)[:, 0])), "built": engine.name,
            "tensorrt": version, "gpu": props.name, "compute_capability": props.compute_capability}


CHECKS: List[tuple] = [
    ("gpu_tests", "pytest -m gpu", [nvidia_gpu], check_gpu_tests),
    ("torch_cuda_parity", "torch backend on CUDA vs reference raw output", [nvidia_gpu, has_torch_cuda],
     check_torch_cuda_parity),
    ("cuda_helpers", "pinned buffers, async copies, CUDA graph of a copy (cuda-python)", [nvidia_gpu, has_cudart],
     check_cuda_helpers),
    ("trt_build", "FP32 uint8-input engine with EfficientNMS", [nvidia_gpu, has_cudart, has_tensorrt, has_torch],
     check_trt_build),
    ("trt_fresh_process_load", "load + infer that engine in a new process (plugins)",
     [nvidia_gpu, has_cudart, has_tensorrt], check_trt_fresh_process_load),
    ("trt_fp16_int8_parity", "FP16 / implicit INT8 engines vs reference", [nvidia_gpu, has_cudart, has_tensorrt,
                                                                          has_torch], check_trt_fp16_int8_parity),
    ("trt_bench", "edge-detect bench on the FP16 engine", [nvidia_gpu, has_cudart, has_tensorrt], check_trt_bench),
    # TensorRT round 2 (issue 20)
    ("trt_fp16_nms_precision", "FP16 engine with ONNX NMS (inms) on bus.jpg == reference detections",
     [nvidia_gpu, has_cudart, has_tensorrt, has_torch], check_trt_fp16_nms_precision),
    ("trt_timing_cache_refusal", "unreadable timing cache replaced, rewritten cache reused",
     [nvidia_gpu, has_cudart, has_tensorrt], check_trt_timing_cache_refusal),
    ("trt_inms_candidates", "8000 candidates at conf 0.001: engine == ONNX Runtime with the pre-NMS top-K",
     [nvidia_gpu, has_cudart, has_tensorrt, has_onnxruntime], check_trt_inms_candidates),
    ("trt_hardware_compat", "hardware_compatible refused on < 8.6 / Jetson / pre-Ampere, else builds and runs",
     [nvidia_gpu, has_cudart, has_tensorrt], check_trt_hardware_compat),
]


def run(data: Path, out: Path, dry_run: bool = False) -> Dict[str, Any]:
    """Run every check (or skip it with the reason); write ``gpu_check.json`` / ``.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(data, Path(tmp))
        for name, what, needs, fn in CHECKS:
            entry: Dict[str, Any] = {"check": name, "what": what}
            reasons = [r for r in (need() for need in needs) if r]
            if dry_run:
                reasons.insert(0, "dry run")
            if reasons:
                entry.update(status="skipped", reason="; ".join(reasons))
            else:
                t0 = time.perf_counter()
                try:
                    res = fn(ctx)
                    entry.update(status="passed" if res.pop("ok") else "failed", **res)
                except Exception as exc:  # noqa: BLE001 - a check's failure is reported, the others still run
                    entry.update(status="error", error=f"{type(exc).__name__}: {exc}")
                entry["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(entry)
    report = {"host": platform.node(), "python": platform.python_version(), "dry_run": dry_run,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "checks": results}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    lines = ["| check | status | details |", "|---|---|---|"]
    for r in results:
        details = r.get("reason") or r.get("error") or ", ".join(
            f"{k}={v}" for k, v in r.items() if k not in ("check", "what", "status"))
        lines.append(f"| {r['check']} | {r['status']} | {details} |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_DETECT_DATA", REPO.parent / "shared")))
    p.add_argument("--out", type=Path, default=Path("gpu_check_results"))
    p.add_argument("--dry-run", action="store_true", help="list every check, run none")
    args = p.parse_args(argv)
    report = run(args.data, args.out, args.dry_run)
    for r in report["checks"]:
        print(f"{r['check']:<24} {r['status']:<8} {r.get('reason') or r.get('error') or ''}")
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 1 if any(r["status"] in ("failed", "error") for r in report["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
