"""tools/gpu_check.sh: its CPU dry run lists every check and skips each with the reason."""
from __future__ import annotations

import json
import os
import subprocess

from conftest import REPO

CHECKS = ["gpu_tests", "torch_cuda_parity", "cuda_helpers", "trt_build", "trt_fresh_process_load",
          "trt_fp16_int8_parity", "trt_bench",
          "trt_fp16_nms_precision", "trt_timing_cache_refusal", "trt_inms_candidates", "trt_hardware_compat"]
PIPELINE_CHECKS = ["torch_detection_parity", "device_path_parity", "cuda_graph_ceiling", "e2e_single_stream",
                   "e2e_16_streams", "official_detect"]
CHECKS += PIPELINE_CHECKS


def test_dry_run_lists_and_skips_every_check(tmp_path, shared) -> None:
    proc = subprocess.run([str(REPO / "tools" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path),
                           "--data", str(shared)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": "/usr/bin:/bin:" + os.environ.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and [c["check"] for c in report["checks"]] == CHECKS
    for c in report["checks"]:
        assert c["status"] == "skipped" and c["reason"].startswith("dry run"), c
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


def test_pipeline_rows_run_on_the_cpu(tmp_path, shared, monkeypatch) -> None:
    """The pipeline rows' code (detection parity, graph ceiling, 720p video, Pipeline and device-loop e2e, the
    "not wired" device-path row, the Markdown tables) runs on torch's CPU device with tiny caps; on a GPU the same
    functions run at full size."""
    import importlib.util
    import sys

    import pytest

    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("gpu_check_module", REPO / "tools" / "gpu_check.py")
    g = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check_module", g)
    spec.loader.exec_module(g)
    g.PIPELINE.update(device="cpu", video_frames=2, max_frames=2, streams=2, streams_max_frames=2, parity_images=1,
                      graph_iters=1, graph_batches=(1,), fp16=False)
    ctx = g.Context(shared, tmp_path)
    results = []
    for name, fn in (("torch_detection_parity", g.check_torch_detection_parity),
                     ("cuda_graph_ceiling", g.check_cuda_graph_ceiling), ("e2e_16_streams", g.check_e2e_16_streams)):
        res = fn(ctx)
        results.append({"check": name, "status": "passed" if res.pop("ok") else "failed", **res})
    parity, ceiling, streams = (r for r in results)
    assert parity["status"] == "passed" and parity["fp32_vs_cpu"]["fraction"] == 1.0
    assert ceiling["graphs"] == 0 and ceiling["graph_b1_img_s"] > 0 and ceiling["eager_b1_img_s"] > 0
    assert streams["pipeline_host"]["frames"] == 2 and streams["pipeline_host"]["mean_batch"] == 2.0
    assert streams["device_loop"]["frames"] == 2 and streams["device_loop"]["batch"] == 2
    assert streams["pipeline_device"]["status"] == "not wired"
    md = "\n".join(g.pipeline_markdown(results))
    assert "| device_loop | 2 | 2 |" in md and "| pipeline_device | 2 | 2 | not wired | - |" in md
    assert "| graph_b1 |" in md and "| eager_b1 |" in md
