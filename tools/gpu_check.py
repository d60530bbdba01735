"""One-command GPU check for edge-detect (run by ``tools/gpu_check.sh``; needs no network).

Run it on the GPU machine from the repository root::

    tools/gpu_check.sh --data ../shared --out gpu_check_results [--yolov5 ~/yolov5]   # < 5 minutes
    tools/gpu_check.sh --only trt_build,trt_fp16_int8_parity                           # what the budget skipped
    tools/gpu_check.sh --dry-run                                                       # the plan, with estimates

Checks, in this order (each one runs, or is skipped with the reason):

1. ``torch_cuda_parity``: the torch backend on CUDA vs ``<data>/reference/infer_bus.npz`` (raw output).
2. ``cuda_helpers``: real cuda-python: pinned host buffers, async H2D/D2H copies on a non-blocking stream, a
   CUDA graph capturing a copy, replayed.

The pipeline rows (issue 19; the figures of BENCHMARKS.md's GPU section):

3. ``torch_detection_parity``: CUDA FP32 (TF32 off, through the device path) vs CPU detections on the coco128 val
   images (>= 99% matched at IoU >= 0.95 and scores within 0.01, no extra box; also with TF32 for comparison);
   FP16 mAP50-95 vs FP32.
4. ``device_path_parity``: the Detector's device path (the backend seam, :class:`edge_detect.backends.base.
   DeviceBackend`) vs its host path; batch 16 vs batch 1; FP16 device vs FP16 host.
5. ``cuda_graph_ceiling``: yolov5n forward alone with the input on the GPU, CUDA graphs per batch size.
6. ``e2e_single_stream``: a 720p60 video (made by ``tools/make_720p_video.py``) end to end through the stream
   Pipeline, host path and device path, FP32 and FP16, with the per-stage table; then the same video paced at 60 FPS
   (a live camera) on the device path: glass-to-glass p50 (target: <= 2 frame intervals, 33.3 ms).
7. ``e2e_16_streams``: 16 sources of that video, ``batch=16``, host path and device path, total FPS.
8. ``official_detect``: the official YOLOv5 ``detect.py`` on the same video (with ``--yolov5 DIR``).

Then:

9. ``gpu_tests``: the ``gpu``-marked pytest tests.
10. ``trt_build``: FP32 engine with in-graph EfficientNMS (uint8 input) built from the exported yolov5n.
11. ``trt_fresh_process_load``: that engine loaded and run in a NEW Python process (plugins registered at load).
12. ``trt_fp16_int8_parity``: FP16 and implicit-INT8 raw engines vs the reference output (max abs diff, and
    the detections' count after NMS).
13. ``trt_bench``: ``edge-detect bench`` on the FP16 engine.

TensorRT round 2 (issue 20), each the GPU half of a finding tested with doubles on CPU:

14. ``trt_fp16_nms_precision``: an FP16 engine with in-graph ONNX NMS (``inms``) on bus.jpg gives the reference
    detections: the NMS layer itself must run in FP32 (its class-offset boxes exceed FP16's range).
15. ``trt_timing_cache_refusal``: a timing cache TensorRT cannot read is replaced by a new one (the build succeeds
    and the rewritten cache is accepted by the next build).
16. ``trt_inms_candidates``: 8000 candidates above conf 0.001: the graph's pre-NMS top-K (3840) gives the engine
    the same detections as ONNX Runtime; without it TensorRT's NMS layer silently keeps only 5000.
17. ``trt_hardware_compat``: ``hardware_compatible=True`` is refused on TensorRT < 8.6, Jetson and pre-Ampere GPUs,
    else builds an AMPERE_PLUS engine that loads and runs.

**Time.** Each check has an estimate for an H200-class GPU (:data:`ESTIMATE_S`, from issue 19's measured figures:
host path ~140 FPS, decode ~1 ms per 720p frame; TensorRT engine builds estimated at 20-60 s each). ``--budget-s``
(default 290) skips a check that would end past the budget, saying so and how to run it alone (``--only NAME``);
the pipeline rows come first so their figures are always measured. Without TensorRT the whole run is about 3.5
minutes (video 15 s, pipeline rows ~2 min, ``pytest -m gpu`` ~1 min); with TensorRT the engine builds do not all fit
in 5 minutes and the rest runs with ``--only`` (or ``--budget-s 0``, ~10 minutes).

Results go to ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (checks table, then the end-to-end, per-stage and
graph-ceiling tables that BENCHMARKS.md's GPU section is built from). ``--dry-run`` (or a machine without an
NVIDIA GPU) lists every check as skipped with the reason; ``tests/test_gpu_check.py`` runs that dry run and the
pipeline rows on torch's CPU device.
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


# ------------------------------------------------------------------------------------------------ GPU pipeline rows
# Issue 19: parity judged by detections, the device path, the CUDA-graph ceiling, end-to-end FPS (1 and 16 streams
# of a 720p video, side by side with the official YOLOv5 detect.py when --yolov5 DIR is given) and the per-stage
# table. Separate functions and their own list (PIPELINE_CHECKS), appended to CHECKS.

#: settings of these rows (main() sets them; tests/test_gpu_check.py runs the rows on the CPU with small caps)
PIPELINE: Dict[str, Any] = {
    "device": "cuda:0",          # where the torch backend runs
    "yolov5": None,              # an official YOLOv5 checkout (--yolov5 DIR) for the detect.py rows
    "max_frames": None,          # cap on the 1-stream e2e frames (None: the whole 795-frame video)
    "streams_max_frames": 3200,  # cap on the 16-stream e2e frames (200 per stream)
    "streams": 16,
    "video_frames": None,        # frames of the generated 720p video (None: all 795 of vtest.avi)
    "video_fps": 60,             # its frame rate: the paced (live) row reads it at 60 FPS
    "live_frames": 300,          # frames of the paced 720p60 glass-to-glass row (5 s)
    "parity_images": 128,        # coco128 val images in the CUDA-vs-CPU parity
    "parity_frames": 6,          # vtest frames (besides bus and zidane) in the device-vs-host parity
    "batch_frames": 16,          # frames of the batch-vs-single parity
    "graph_iters": 200,          # timed forwards per batch size in the graph ceiling
    "graph_batches": (1, 8, 32),
    "fp16": True,                # also run FP16 (CUDA only)
}
E2E_TARGETS = {"single_stream_fps": 500.0, "streams16_fps": 3000.0, "vs_official": 4.0,  # issue 19 "Done when"
               "glass_to_glass_frames": 2.0}


def yolov5_given() -> Optional[str]:
    """Why the official detect.py rows cannot run (no ``--yolov5 DIR``), or ``None``."""
    d = PIPELINE["yolov5"]
    if not d:
        return "no YOLOv5 checkout given (--yolov5 DIR)"
    return None if (Path(d) / "detect.py").is_file() else f"{d}/detect.py not found"


def _weights(ctx: Context) -> Path:
    return ctx.data / "weights" / "yolov5n.pt"


def _on_cuda() -> bool:
    return str(PIPELINE["device"]).startswith("cuda")


def _detector(ctx: Context, half: bool = False, tf32: bool = False, auto: bool = True,
              device_path: Optional[bool] = None) -> Any:
    """yolov5n.pt on the torch backend at :data:`PIPELINE` ``["device"]``; ``auto`` = minimum rectangle (a 720p
    frame runs at 384x640, as the official detect.py does); ``device_path``: the backend's device path (``None``:
    its default, on for CUDA; ``True`` on the CPU runs the device code there; ``False``: host batches)."""
    from edge_detect.detector import Detector

    opts: Dict[str, Any] = {"device": PIPELINE["device"]}
    opts.update({k: True for k, on in (("half", half), ("tf32", tf32)) if on})
    if device_path is not None:
        opts["device_path"] = bool(device_path)
    return Detector(_weights(ctx), auto=auto, **opts)


def video_720p(ctx: Context) -> Path:
    """The 1280x720 test video (vtest.avi upscaled by tools/make_720p_video.py), made once per run in the work dir."""
    path = ctx.work / "720p.mp4"
    if not path.exists():
        cmd = [sys.executable, str(REPO / "tools" / "make_720p_video.py"), str(path), "--source",
               str(ctx.data / "videos" / "vtest.avi"), "--fps", str(PIPELINE["video_fps"])]
        if PIPELINE["video_frames"]:
            cmd += ["--frames", str(int(PIPELINE["video_frames"]))]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return path


def _frames(ctx: Context, vtest_every: int = 60, vtest_count: int = 6) -> List[Any]:
    """bus, zidane and ``vtest_count`` frames of vtest.avi (every ``vtest_every``-th)."""
    import cv2

    out = [cv2.imread(str(ctx.data / "images" / n)) for n in ("bus.jpg", "zidane.jpg")]
    cap = cv2.VideoCapture(str(ctx.data / "videos" / "vtest.avi"))
    k = 0
    while len(out) < 2 + vtest_count:
        ok, frame = cap.read()
        if not ok:
            break
        if k % vtest_every == 0:
            out.append(frame)
        k += 1
    cap.release()
    return out


def _diff(a: List[Any], b: List[Any]) -> Dict[str, Any]:
    """Two runs of the same frames: equal counts and classes, the largest box / score differences."""
    import numpy as np

    same = [len(x) == len(y) and bool((x.class_id == y.class_id).all()) for x, y in zip(a, b)]
    boxes = [float(np.abs(x.xyxy - y.xyxy).max()) for x, y, s in zip(a, b, same) if s and len(x)]
    scores = [float(np.abs(x.score - y.score).max()) for x, y, s in zip(a, b, same) if s and len(x)]
    return {"frames": len(a), "detections": int(sum(len(x) for x in a)), "counts_equal": all(same),
            "max_box_px": max(boxes, default=0.0), "max_score": max(scores, default=0.0)}


def _equal(d: Dict[str, Any]) -> bool:
    return bool(d["counts_equal"] and d["max_box_px"] <= 0.5 and d["max_score"] <= 1e-4)


def check_torch_detection_parity(ctx: Context) -> Dict[str, Any]:
    """CUDA FP32 (TF32 off; the device path, the torch backend's default on CUDA) vs CPU on the coco128 val images:
    >= 99% of the boxes matched (IoU >= 0.95, scores within 0.01), no extra box; with --tf32 for comparison; FP16
    mAP50-95 (through the device path's NMS at conf 0.001) within 0.3 pt of FP32."""
    import cv2
    import yaml

    from edge_detect.bench.parity import match_detections
    from edge_detect.detector import Detector
    from edge_detect.evaluate import evaluate

    files = sorted((ctx.data / "datasets" / "coco128" / "images" / "val2017").glob("*.jpg"))
    images = [cv2.imread(str(f)) for f in files[: int(PIPELINE["parity_images"])]]
    with Detector(_weights(ctx), auto=False) as cpu:
        want = [cpu(im) for im in images]
    out: Dict[str, Any] = {"images": len(images)}
    for name, kw in (("fp32", {}), ("fp32_tf32", {"tf32": True})) if _on_cuda() else (("fp32", {}),):
        with _detector(ctx, auto=False, **kw) as det:
            out[f"{name}_vs_cpu"] = match_detections(want, [det(im) for im in images]).to_dict()
            out[f"{name}_device_path"] = det.device_path
    fp32 = out["fp32_vs_cpu"]
    ok = fp32["fraction"] >= 0.99 and fp32["extra"] == 0
    if _on_cuda() and PIPELINE["fp16"]:
        spec = yaml.safe_load((ctx.data / "datasets" / "coco128" / "coco128.yaml").read_text())
        spec["path"] = str(ctx.data / "datasets" / "coco128")
        data = ctx.work / "coco128.yaml"
        data.write_text(yaml.safe_dump(spec))
        maps = {}
        for name, half in (("fp32", False), ("fp16", True)):
            with _detector(ctx, half=half, auto=False) as det:
                maps[name] = round(evaluate(det, data, progress=False)["map50_95"], 4)
        out["map50_95"] = maps
        ok = ok and abs(maps["fp16"] - maps["fp32"]) <= 0.003
    return {"ok": ok, **out}


def check_device_path_parity(ctx: Context) -> Dict[str, Any]:
    """The Detector's device path (the DeviceBackend seam: upload once, letterbox + NMS on the device, graphs) vs the
    host path of the same model, on bus, zidane and vtest frames; a batch of 16 frames vs the same frames one by
    one; FP16 device path vs FP16 host path."""
    from edge_detect.bench.parity import match_detections

    frames = _frames(ctx, vtest_count=int(PIPELINE["parity_frames"]))
    sixteen = _frames(ctx, vtest_every=7, vtest_count=int(PIPELINE["batch_frames"]))[2:]
    out: Dict[str, Any] = {}
    with _detector(ctx, auto=False, device_path=False) as host, _detector(ctx, auto=False, device_path=True) as dev:
        out["fp32_device_vs_host"] = _diff([host(f) for f in frames], [dev(f) for f in frames])
        out["fp32_batch16_vs_batch1"] = _diff([dev(f) for f in sixteen], dev.detect_batch(sixteen))
        out.update(dev.backend.graph_shapes())
    ok = _equal(out["fp32_device_vs_host"]) and _equal(out["fp32_batch16_vs_batch1"])
    if _on_cuda() and PIPELINE["fp16"]:
        with _detector(ctx, half=True, auto=False, device_path=False) as host, \
                _detector(ctx, half=True, auto=False, device_path=True) as dev:
            out["fp16_device_vs_host"] = match_detections([host(f) for f in frames], [dev(f) for f in frames]).to_dict()
        ok = ok and out["fp16_device_vs_host"]["fraction"] >= 0.99 and out["fp16_device_vs_host"]["extra"] == 0
    return {"ok": ok, **out}


def check_cuda_graph_ceiling(ctx: Context) -> Dict[str, Any]:
    """yolov5n forward alone, input already on the device, 384x640: images/s through the device path's graph
    runner per batch size (FP16 on CUDA), and eager batch 1 for comparison."""
    import torch

    from edge_detect.training.device_pipeline import DevicePipeline

    out: Dict[str, Any] = {"imgsz": [384, 640]}
    with _detector(ctx, half=_on_cuda() and PIPELINE["fp16"]) as det:
        dp = DevicePipeline.from_detector(det)
        out["precision"] = det.backend.numerics
        for b in PIPELINE["graph_batches"]:
            x = torch.rand(b, 3, 384, 640, device=dp.device).to(dp.dtype)
            out[f"graph_b{b}_img_s"] = _images_per_s(dp.runner, x)
        out["eager_b1_img_s"] = _images_per_s(dp._forward, torch.rand(1, 3, 384, 640, device=dp.device).to(dp.dtype))
        out["graphs"] = len(dp.captured)
    return {"ok": True, **out}


def _images_per_s(fn: Any, x: Any) -> float:
    import torch

    n = int(PIPELINE["graph_iters"])
    with torch.inference_mode():
        for _ in range(min(5, n)):  # capture + warm-up
            fn(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
    return round(n * x.shape[0] / (time.perf_counter() - t0), 1)


def _pipeline_e2e(det: Any, videos: List[Path], batch: int, max_frames: Optional[int],
                  realtime: bool = False) -> Dict[str, Any]:
    """``videos`` (one source each; ``realtime``: paced at the file's frame rate, like a camera) through the stream
    Pipeline with ``det`` (its host or device path): FPS, frames, mean batch, per-stage mean ms, glass-to-glass p50."""
    from edge_detect.bench.measure import e2e_result
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.stream.sources import open_source

    sources = [open_source(str(v), source_id=f"cam{i}", realtime=realtime) for i, v in enumerate(videos)]
    summary = Pipeline(sources, det, max_frames=max_frames, progress=False, batch=batch).run().to_dict()
    res = e2e_result(summary, None)
    return {"fps": round(res["fps"], 1), "frames": res["frames"], "batch": batch,
            "mean_batch": round(res["mean_batch"], 2), "device_path": bool(det.device_path),
            "stages_mean_ms": {k: round(v["mean_ms"], 2) for k, v in res["stages"].items()
                               if v.get("mean_ms") is not None and v["mean_ms"] == v["mean_ms"]},
            "latency_ms_p50": round(res["latency_ms"]["p50"], 2), "dropped": res["dropped"]}


def _warm_up(det: Any, video: Path, batch: int) -> None:
    """One detection of a full batch of the video's first frame, outside the timing: the device path captures the
    CUDA graph of that input shape and batch (partial batches later capture their own, inside the timing)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    if ok:
        for _ in range(2):
            det.detect_batch([frame] * batch)


def pipeline_device_e2e(det: Any, videos: List[Path], batch: int, max_frames: Optional[int],
                        realtime: bool = False) -> Dict[str, Any]:
    """End to end through the stream Pipeline on the device path: a Detector whose backend is a
    :class:`~edge_detect.backends.base.DeviceBackend` (the torch backend on CUDA: frames uploaded once, letterbox,
    CUDA-graph inference and NMS on the device, only boxes back; the sinks still get the host frame)."""
    if not det.device_path:
        raise ValueError(f"pipeline_device_e2e: expected a detector on the device path, got {det!r}")
    _warm_up(det, videos[0], batch)
    return {**_pipeline_e2e(det, videos, batch, max_frames, realtime), **det.backend.graph_shapes()}


def _precisions() -> List[str]:
    return ["fp32", "fp16"] if _on_cuda() and PIPELINE["fp16"] else ["fp32"]


def check_e2e_single_stream(ctx: Context) -> Dict[str, Any]:
    """One 720p stream end to end, FP32 and FP16: the Pipeline on the host path and on the device path (with the
    per-stage table), and glass-to-glass on the same video paced at 60 FPS (a live 720p60 camera) on the device path
    of the last precision."""
    video = video_720p(ctx)
    out: Dict[str, Any] = {"video": f"720p{PIPELINE['video_fps']} (vtest.avi upscaled)",
                           "max_frames": PIPELINE["max_frames"]}
    for prec in _precisions():
        with _detector(ctx, half=prec == "fp16", device_path=False) as host:
            out["imgsz"] = list(host.target_hw((720, 1280)))
            out[f"pipeline_host_{prec}"] = _pipeline_e2e(host, [video], 1, PIPELINE["max_frames"])
        with _detector(ctx, half=prec == "fp16", device_path=True) as dev:
            out[f"pipeline_device_{prec}"] = pipeline_device_e2e(dev, [video], 1, PIPELINE["max_frames"])
            if prec == _precisions()[-1]:
                out[f"live_720p{PIPELINE['video_fps']}_{prec}"] = pipeline_device_e2e(
                    dev, [video], 1, PIPELINE["live_frames"], realtime=True)
    best = max(v["fps"] for k, v in out.items() if k.startswith("pipeline_device"))
    live = next(v for k, v in out.items() if k.startswith("live_"))
    budget_ms = E2E_TARGETS["glass_to_glass_frames"] * 1e3 / float(PIPELINE["video_fps"])
    out.update(target_fps=E2E_TARGETS["single_stream_fps"], meets_target=best >= E2E_TARGETS["single_stream_fps"],
               glass_to_glass_target_ms=round(budget_ms, 1), meets_glass_to_glass=live["latency_ms_p50"] <= budget_ms)
    return {"ok": True, **out}


def check_e2e_16_streams(ctx: Context) -> Dict[str, Any]:
    """16 sources of the 720p video, batch 16 (FP16 on CUDA): the Pipeline on the host path and on the device path,
    total FPS; each source's detections equal to its batch-1 run is checked by ``pytest -m gpu``."""
    video = video_720p(ctx)
    n, cap = int(PIPELINE["streams"]), PIPELINE["streams_max_frames"]
    out: Dict[str, Any] = {"streams": n, "batch": n, "max_frames": cap}
    prec = _precisions()[-1]
    out["precision"] = prec
    with _detector(ctx, half=prec == "fp16", device_path=False) as host:
        out["pipeline_host"] = _pipeline_e2e(host, [video] * n, n, cap)
    with _detector(ctx, half=prec == "fp16", device_path=True) as dev:
        out["pipeline_device"] = pipeline_device_e2e(dev, [video] * n, n, cap)
    best = out["pipeline_device"]["fps"]
    out["target_fps"], out["meets_target"] = E2E_TARGETS["streams16_fps"], best >= E2E_TARGETS["streams16_fps"]
    return {"ok": True, **out}


OFFICIAL = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.argv = sys.argv[:1] + sys.argv[2:]
import detect
stamps = []
cls = detect.LoadImages
nxt = cls.__next__
def timed(self):
    item = nxt(self)
    stamps.append(time.perf_counter())
    return item
cls.__next__ = timed
weights, source, half = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
detect.run(weights=weights, source=source, imgsz=(640, 640), device="0", half=half, nosave=True)
n = len(stamps)
print(json.dumps({"frames": n, "fps": (n - 1) / (time.perf_counter() - stamps[0]) if n > 1 else None}))
"""


def check_official_detect(ctx: Context) -> Dict[str, Any]:
    """The official YOLOv5 ``detect.py`` (from ``--yolov5 DIR``) on the same 720p video and GPU, FP32 and FP16: FPS
    from its first frame to its last (model loading excluded), for the side-by-side ratio."""
    video = video_720p(ctx)
    out: Dict[str, Any] = {"yolov5": str(PIPELINE["yolov5"])}
    for prec in ("fp32", "fp16"):
        proc = subprocess.run([sys.executable, "-c", OFFICIAL, str(PIPELINE["yolov5"]), str(_weights(ctx)), str(video),
                               "1" if prec == "fp16" else "0"], capture_output=True, text=True, timeout=600,
                              cwd=ctx.work)
        if proc.returncode != 0:
            return {"ok": False, "precision": prec, "stderr": proc.stderr[-2000:]}
        out[prec] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"ok": True, **out}


PIPELINE_CHECKS: List[tuple] = [
    ("torch_detection_parity", "CUDA FP32 (device path) vs CPU detections on coco128 val; FP16 mAP vs FP32",
     [nvidia_gpu, has_torch_cuda], check_torch_detection_parity),
    ("device_path_parity", "Detector device path (upload, letterbox, graphs, NMS on the GPU) vs host path; batch 16 "
     "vs 1", [nvidia_gpu, has_torch_cuda], check_device_path_parity),
    ("cuda_graph_ceiling", "yolov5n forward alone, input on the GPU, CUDA graphs, 384x640",
     [nvidia_gpu, has_torch_cuda], check_cuda_graph_ceiling),
    ("e2e_single_stream", "one 720p stream: Pipeline host vs device path, per-stage table, 720p60 glass-to-glass",
     [nvidia_gpu, has_torch_cuda], check_e2e_single_stream),
    ("e2e_16_streams", "16 x 720p sources, batch 16, total FPS (host vs device path)", [nvidia_gpu, has_torch_cuda],
     check_e2e_16_streams),
    ("official_detect", "official YOLOv5 detect.py on the same video (--yolov5 DIR)",
     [nvidia_gpu, has_torch_cuda, yolov5_given], check_official_detect),
]
# the pipeline rows (issue 19's figures) first, then the GPU tests, then TensorRT (whose engine builds are the slow
# part): within the time budget the figures always come first
CHECKS = CHECKS[1:3] + PIPELINE_CHECKS + CHECKS[:1] + CHECKS[3:]

#: seconds each check takes on an H200-class GPU (issue 19's figures: ~140 FPS host path, decode 1 ms/frame; TensorRT
#: builds of yolov5n estimated at 20-40 s FP32/FP16, 60 s INT8 with calibration): the time budget plans with them
ESTIMATE_S: Dict[str, float] = {
    "torch_cuda_parity": 5, "cuda_helpers": 2, "torch_detection_parity": 30, "device_path_parity": 10,
    "cuda_graph_ceiling": 10, "e2e_single_stream": 45, "e2e_16_streams": 25, "official_detect": 30,
    "gpu_tests": 60, "trt_build": 30, "trt_fresh_process_load": 10, "trt_fp16_int8_parity": 90, "trt_bench": 15,
    "trt_fp16_nms_precision": 40, "trt_timing_cache_refusal": 10, "trt_inms_candidates": 20,
    "trt_hardware_compat": 10,
}
GPU_TESTS_WITH_TENSORRT_S = 200  # pytest -m gpu also builds engines when TensorRT is installed
BUDGET_S = 290.0  #: default --budget-s: the whole run under 5 minutes


def estimate_s(name: str) -> float:
    """:data:`ESTIMATE_S` of a check (``gpu_tests`` costs more when TensorRT is installed)."""
    if name == "gpu_tests" and has_tensorrt() is None:
        return float(GPU_TESTS_WITH_TENSORRT_S)
    return float(ESTIMATE_S.get(name, 30))


def pipeline_markdown(results: List[Dict[str, Any]]) -> List[str]:
    """The e2e, per-stage, graph-ceiling tables of the pipeline rows (for gpu_check.md and BENCHMARKS.md)."""
    by = {r["check"]: r for r in results if r.get("status") in ("passed", "failed")}
    lines: List[str] = []
    e2e_rows = []
    for check, streams in (("e2e_single_stream", 1), ("e2e_16_streams", int(PIPELINE["streams"]))):
        for key, row in sorted(by.get(check, {}).items()):
            if isinstance(row, dict) and "fps" in row:
                e2e_rows.append(f"| {key} | {streams} | {row['batch']} | {'device' if row['device_path'] else 'host'} "
                                f"| {row['fps']} | {row['frames']} | {row['latency_ms_p50']} |")
    official = by.get("official_detect", {})
    for prec in ("fp32", "fp16"):
        if isinstance(official.get(prec), dict):
            e2e_rows.append(f"| official_detect_{prec} | 1 | 1 | detect.py | {round(official[prec]['fps'] or 0, 1)} | "
                            f"{official[prec]['frames']} | - |")
    if e2e_rows:
        lines += ["", "## End to end (720p video, yolov5n)", "",
                  "| row | streams | batch | path | FPS | frames | glass-to-glass p50 ms |", "|---|---|---|---|---|---|---|",
                  *e2e_rows]
    single = by.get("e2e_single_stream", {})
    device_fp16 = (single.get("pipeline_device_fp16") or {}).get("fps")
    official_fp16 = (official.get("fp16") or {}).get("fps")
    if device_fp16 and official_fp16:
        lines += ["", f"Device path FP16 / official detect.py FP16: {device_fp16 / official_fp16:.2f}x (target "
                      f"{E2E_TARGETS['vs_official']}x)"]
    stages = [(k, v["stages_mean_ms"]) for c in ("e2e_single_stream", "e2e_16_streams")
              for k, v in sorted(by.get(c, {}).items()) if isinstance(v, dict) and "stages_mean_ms" in v]
    if stages:
        names = [n for n in ("decode", "preprocess", "inference", "postprocess", "sinks")
                 if any(n in st for _, st in stages)]
        lines += ["", "## Per stage, mean ms per batch (Pipeline)", "", "| row | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        lines += [f"| {k} | " + " | ".join(str(st.get(n, "-")) for n in names) + " |" for k, st in stages]
    ceiling = by.get("cuda_graph_ceiling", {})
    if ceiling:
        lines += ["", f"## Forward alone, input on the device ({ceiling.get('precision')}, 384x640)", "",
                  "| mode | images/s |", "|---|---|"]
        lines += [f"| {k[:-6]} | {v} |" for k, v in ceiling.items() if k.endswith("_img_s")]
    return lines


def _skip_reason(name: str, needs: List[Any], dry_run: bool, only: Optional[List[str]], elapsed: float,
                 budget_s: float) -> Optional[str]:
    """Why check ``name`` does not run (dry run, not selected, a missing requirement, the time budget), or None."""
    if dry_run:
        return f"dry run (~{estimate_s(name):.0f} s on an H200)"
    if only is not None and name not in only:
        return "not selected (--only)"
    reasons = [r for r in (need() for need in needs) if r]
    if reasons:
        return "; ".join(reasons)
    if budget_s and elapsed + estimate_s(name) > budget_s:
        return (f"time budget: {max(budget_s - elapsed, 0):.0f} s left of {budget_s:.0f}, this check takes "
                f"~{estimate_s(name):.0f} s (run it alone: --only {name})")
    return None


def run(data: Path, out: Path, dry_run: bool = False, budget_s: float = BUDGET_S,
        only: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run every check (or skip it with the reason); write ``gpu_check.json`` / ``.md`` under ``out``.

    Args:
        budget_s: wall-clock budget of the whole run: a check that would end past it (by its :data:`ESTIMATE_S`)
            is skipped, saying how to run it alone; ``0``: no budget.
        only: run just these checks (names).
    """
    out.mkdir(parents=True, exist_ok=True)
    results: List[Dict[str, Any]] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Context(data, Path(tmp))
        for name, what, needs, fn in CHECKS:
            entry: Dict[str, Any] = {"check": name, "what": what}
            reason = _skip_reason(name, needs, dry_run, only, time.perf_counter() - t_start, budget_s)
            if reason:
                entry.update(status="skipped", reason=reason)
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
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": budget_s,
              "seconds": round(time.perf_counter() - t_start, 1), "checks": results}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    lines = ["| check | status | details |", "|---|---|---|"]
    for r in results:
        details = r.get("reason") or r.get("error") or ", ".join(
            f"{k}={v}" for k, v in r.items() if k not in ("check", "what", "status"))
        lines.append(f"| {r['check']} | {r['status']} | {details} |")
    lines += pipeline_markdown(results)
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_DETECT_DATA", REPO.parent / "shared")))
    p.add_argument("--out", type=Path, default=Path("gpu_check_results"))
    p.add_argument("--dry-run", action="store_true", help="list every check with its estimate, run none")
    p.add_argument("--yolov5", type=Path, default=None, metavar="DIR",
                   help="an official YOLOv5 checkout: also run its detect.py on the same 720p video, side by side")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, metavar="S",
                   help=f"skip the checks that would end after S seconds (default {BUDGET_S:.0f}: under 5 minutes; "
                        "0 = run everything)")
    p.add_argument("--only", default=None, metavar="A,B", help="run only these checks (comma-separated names)")
    args = p.parse_args(argv)
    PIPELINE["yolov5"] = args.yolov5
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    unknown = sorted(set(only or ()) - {c[0] for c in CHECKS})
    if unknown:
        p.error(f"--only: unknown check(s) {unknown}; expected names from {[c[0] for c in CHECKS]}")
    report = run(args.data, args.out, args.dry_run, args.budget_s, only)
    for r in report["checks"]:
        print(f"{r['check']:<24} {r['status']:<8} {r.get('reason') or r.get('error') or ''}")
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} ({report['seconds']} s)")
    return 1 if any(r["status"] in ("failed", "error") for r in report["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
