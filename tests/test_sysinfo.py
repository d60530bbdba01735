"""System information: parsers on fixed texts, and the live dict's keys and types (no torch imported)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_detect import sysinfo

CPUINFO_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni
processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""
CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""


@pytest.mark.parametrize("text, model, simd", [
    (CPUINFO_X86, "AMD EPYC 7B13 64-Core Processor", ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]),
    (CPUINFO_ARM, "ARM implementer 0x41 part 0xd42", ["asimd", "asimddp"]),
])
def test_cpu_model_and_simd_from_cpuinfo(text: str, model: str, simd: list) -> None:
    assert sysinfo.cpu_model(text) == model
    assert sysinfo.cpu_simd(text) == simd


@pytest.mark.parametrize("text, expected", [
    ("NVIDIA H100 80GB HBM3, 550.54.15, 81559\n",
     [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory_mb": 81559}]),
    ("Tesla T4, 535.104.05, 15360\nTesla T4, 535.104.05, [N/A]\n",
     [{"name": "Tesla T4", "driver": "535.104.05", "memory_mb": 15360},
      {"name": "Tesla T4", "driver": "535.104.05", "memory_mb": None}]),
    ("", []),
    ("garbage\n", []),
])
def test_parse_nvidia_smi_csv(text: str, expected: list) -> None:
    assert sysinfo.parse_nvidia_smi_csv(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4     |", "12.4"),
    ("no header here", None),
])
def test_parse_cuda_version(text: str, expected: object) -> None:
    assert sysinfo.parse_cuda_version(text) == expected


def test_jetson_state_comes_from_the_jetson_module(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_detect import jetson

    state = {"model": "NVIDIA Jetson Orin Nano", "l4t": "36.3.0", "nvpmodel": "15W (0)", "jetson_clocks": False,
             "dla_cores": 0}
    monkeypatch.setattr(jetson, "status", lambda root="/": dict(state))
    info = sysinfo.system_info()
    assert info["jetson"] == state
    assert sysinfo.summary_line(info).endswith("NVIDIA Jetson Orin Nano, nvpmodel 15W (0), jetson_clocks off")


def test_system_info_keys_types_and_json() -> None:
    info = sysinfo.system_info()
    cpu = info["cpu"]
    assert isinstance(cpu["model"], str) and cpu["model"]
    assert isinstance(cpu["logical_cores"], int) and cpu["logical_cores"] >= 1
    assert 1 <= cpu["usable_cores"] <= cpu["logical_cores"]
    assert info["ram_gb"] is None or info["ram_gb"] > 0
    assert isinstance(info["gpu"], list)
    for gpu in info["gpu"]:
        assert set(gpu) == {"name", "driver", "memory_mb"}
    versions = info["versions"]
    assert set(versions) >= {"edge_detect", "numpy", "opencv", "onnxruntime", "tensorrt"}
    import edge_detect
    import numpy

    assert versions["edge_detect"] == edge_detect.__version__
    assert versions["numpy"] == numpy.__version__
    assert isinstance(info["onnxruntime_providers"], list)
    assert info["jetson"] is None or {"nvpmodel", "jetson_clocks"} <= set(info["jetson"])
    assert json.loads(json.dumps(info)) == info  # JSON-ready as is
    line = sysinfo.summary_line(info)
    assert cpu["model"] in line and f"{cpu['logical_cores']} cores" in line


def test_summary_line_with_gpu_and_jetson() -> None:
    info = {"cpu": {"model": "ARMv8", "logical_cores": 6, "usable_cores": 6}, "ram_gb": 7.4,
            "gpu": [{"name": "Orin", "driver": "540.2", "memory_mb": None}], "cuda": "12.2",
            "versions": {"onnxruntime": "1.18.0", "tensorrt": "8.6.2", "opencv": "4.8.0"},
            "jetson": {"model": "Jetson Orin Nano", "nvpmodel": "15W (0)", "jetson_clocks": True}}
    assert sysinfo.summary_line(info) == (
        "ARMv8, 6 cores (6 usable), 7.4 GiB RAM, Orin (driver 540.2), CUDA 12.2, onnxruntime 1.18.0, "
        "TensorRT 8.6.2, OpenCV 4.8.0, Jetson Orin Nano, nvpmodel 15W (0), jetson_clocks on")


def test_no_torch_imported() -> None:
    code = "import sys, edge_detect.sysinfo as s, edge_detect.bench; s.system_info(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
