"""tools/gpu_check.sh: its CPU dry run lists every check and skips each with the reason."""
from __future__ import annotations

import json
import os
import subprocess

from conftest import REPO

TRT_CHECKS = ["trt_build", "trt_fresh_process_load", "trt_fp16_int8_parity", "trt_bench",
              "trt_fp16_nms_precision", "trt_timing_cache_refusal", "trt_inms_candidates", "trt_hardware_compat"]
PIPELINE_CHECKS = ["torch_detection_parity", "device_path_parity", "cuda_graph_ceiling", "e2e_single_stream",
                   "e2e_16_streams", "official_detect"]
# issue 19's pipeline rows come before the GPU tests and the TensorRT builds (the time budget keeps them)
CHECKS = ["torch_cuda_parity", "cuda_helpers", *PIPELINE_CHECKS, "gpu_tests", *TRT_CHECKS]


def test_dry_run_lists_and_skips_every_check(tmp_path, shared) -> None:
    proc = subprocess.run([str(REPO / "tools" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path),
                           "--data", str(shared)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": "/usr/bin:/bin:" + os.environ.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and [c["check"] for c in report["checks"]] == CHECKS
    for c in report["checks"]:
        assert c["status"] == "skipped" and c["reason"].startswith("dry run (~") and " s on an H200)" in c["reason"], c
    md = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert md[0] == "| check | status | details |" and len(md) == 2 + len(CHECKS)
    for name in CHECKS:
        assert any(line.startswith(f"{name:<24} skipped  dry run") for line in proc.stdout.splitlines()), name


def test_without_a_gpu_each_check_says_why(tmp_path, shared) -> None:
    import shutil

    if shutil.which("nvidia-smi"):
        import pytest

        pytest.skip("an NVIDIA GPU is present: the real run happens instead")
    proc = subprocess.run([str(REPO / "tools" / "gpu_check.sh"), "--out", str(tmp_path), "--data", str(shared)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    checks = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert all(c["status"] == "skipped" and "no NVIDIA GPU (nvidia-smi not found)" in c["reason"] for c in checks)


def _module(monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("gpu_check_module", REPO / "tools" / "gpu_check.py")
    g = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check_module", g)
    spec.loader.exec_module(g)
    return g


def test_pipeline_rows_run_on_the_cpu(tmp_path, shared, monkeypatch) -> None:
    """The pipeline rows' code (detection parity, device path vs host path through the Detector, graph ceiling,
    720p video, the Pipeline on the host and on the device path for 1 and 2 streams, the paced glass-to-glass row,
    the Markdown tables) runs on torch's CPU device (device_path=True runs the device code there) with tiny caps; on
    a GPU the same functions run at full size."""
    import pytest

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is several times faster than two on busy cores
    try:
        _pipeline_rows(tmp_path, shared, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _pipeline_rows(tmp_path, shared, monkeypatch) -> None:
    g = _module(monkeypatch)
    g.PIPELINE.update(device="cpu", video_frames=3, max_frames=2, streams=2, streams_max_frames=2, parity_images=1,
                      parity_frames=1, batch_frames=2, graph_iters=1, graph_batches=(1,), fp16=False, live_frames=2)
    ctx = g.Context(shared, tmp_path)
    results = []
    for name, fn in (("torch_detection_parity", g.check_torch_detection_parity),
                     ("device_path_parity", g.check_device_path_parity),
                     ("cuda_graph_ceiling", g.check_cuda_graph_ceiling), ("e2e_single_stream", g.check_e2e_single_stream),
                     ("e2e_16_streams", g.check_e2e_16_streams)):
        res = fn(ctx)
        results.append({"check": name, "status": "passed" if res.pop("ok") else "failed", **res})
    parity, device, ceiling, single, streams = results
    assert parity["status"] == "passed" and parity["fp32_vs_cpu"]["fraction"] == 1.0
    assert parity["fp32_device_path"] is False  # the CPU default: host batches
    assert device["status"] == "passed" and device["fp32_device_vs_host"]["counts_equal"]
    assert device["fp32_batch16_vs_batch1"]["frames"] == 2 and device["graphs"] == []  # no graphs on the CPU
    assert ceiling["graphs"] == 0 and ceiling["graph_b1_img_s"] > 0 and ceiling["eager_b1_img_s"] > 0
    assert single["pipeline_host_fp32"]["frames"] == single["pipeline_device_fp32"]["frames"] == 2
    assert single["pipeline_device_fp32"]["device_path"] and not single["pipeline_host_fp32"]["device_path"]
    live = single["live_720p60_fp32"]
    assert live["frames"] == 2 and live["device_path"] and live["latency_ms_p50"] > 0
    assert single["glass_to_glass_target_ms"] == 33.3 and isinstance(single["meets_glass_to_glass"], bool)
    assert {"decode", "preprocess", "inference", "postprocess"} <= set(single["pipeline_device_fp32"]["stages_mean_ms"])
    assert streams["pipeline_host"]["frames"] == streams["pipeline_device"]["frames"] == 2
    assert streams["pipeline_device"]["mean_batch"] == 2.0 and streams["pipeline_device"]["batch"] == 2
    md = "\n".join(g.pipeline_markdown(results))
    assert "| pipeline_device | 2 | 2 | device |" in md and "| pipeline_host | 2 | 2 | host |" in md
    assert "| live_720p60_fp32 | 1 | 1 | device |" in md and "glass-to-glass p50 ms" in md
    assert "| pipeline_device_fp32 |" in md.split("## Per stage")[1] and "| graph_b1 |" in md


def test_time_budget_skips_what_does_not_fit_and_says_how_to_run_it(monkeypatch) -> None:
    g = _module(monkeypatch)
    ready = [lambda: None]
    assert g._skip_reason("e2e_16_streams", ready, False, None, 100.0, 290.0) is None
    reason = g._skip_reason("trt_fp16_int8_parity", ready, False, None, 250.0, 290.0)
    assert reason == "time budget: 40 s left of 290, this check takes ~90 s (run it alone: --only trt_fp16_int8_parity)"
    assert g._skip_reason("trt_fp16_int8_parity", ready, False, None, 250.0, 0) is None  # --budget-s 0: no budget
    assert g._skip_reason("cuda_helpers", ready, False, ["trt_build"], 0.0, 290.0) == "not selected (--only)"
    assert g._skip_reason("cuda_helpers", [lambda: "no GPU"], False, None, 0.0, 290.0) == "no GPU"
    # without TensorRT every check fits: the plan of a GPU machine is under the default budget
    monkeypatch.setattr(g, "has_tensorrt", lambda: "not installed")
    plan = sum(g.estimate_s(c[0]) for c in g.CHECKS if not c[0].startswith("trt_"))
    assert plan <= g.BUDGET_S < 300, plan
