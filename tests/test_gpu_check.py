"""tools/gpu_check.sh: its CPU dry run lists every check and skips each with the reason."""
from __future__ import annotations

import json
import os
import subprocess

from conftest import REPO

CHECKS = ["gpu_tests", "torch_cuda_parity", "cuda_helpers", "trt_build", "trt_fresh_process_load",
          "trt_fp16_int8_parity", "trt_bench",
          "trt_fp16_nms_precision", "trt_timing_cache_refusal", "trt_inms_candidates", "trt_hardware_compat"]


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
