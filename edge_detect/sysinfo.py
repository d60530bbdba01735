"""System information recorded with every benchmark result (never imports torch).

:func:`system_info` returns a JSON-ready dict::

    {
      "timestamp": "2025-01-01T12:00:00+00:00",   # UTC, ISO 8601
      "hostname": str, "platform": str, "python": str, "machine": str,
      "cpu": {"model": str, "logical_cores": int, "physical_cores": int | None,
              "usable_cores": int, "simd": [str, ...], "load_avg": [1 min, 5 min, 15 min] | None},
      "ram_gb": float | None,
      "gpu": [{"name": str, "driver": str, "memory_mb": int | None}, ...],   # [] without an NVIDIA GPU
      "cuda": str | None,            # CUDA version the driver supports (nvidia-smi), else None
      "versions": {"edge_detect", "numpy", "opencv", "onnxruntime", "tensorrt", ...: str | None},
      "onnxruntime_providers": [str, ...],
      "jetson": None | {"model": str, "l4t": str | None, "nvpmodel": str | None, "jetson_clocks": bool | None,
                        "dla_cores": int},
    }

Every probe is best-effort: a missing tool or file gives ``None`` (or ``[]``) and a debug log line, never an
exception, because a benchmark must not fail for want of ``nvidia-smi``.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata as _md
import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["system_info", "cpu_info", "ram_gb", "gpu_info", "package_versions", "jetson_info", "summary_line"]

LOGGER = logging.getLogger(__name__)

_SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
               "neon", "asimd", "asimddp")

# distribution names tried in order for each reported package (first installed wins)
_DISTRIBUTIONS: Dict[str, Sequence[str]] = {
    "edge_detect": ("edge-detect",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
               "opencv-contrib-python-headless"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "onnx": ("onnx",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs"),
    "cuda_python": ("cuda-python",),
}
# module whose __version__ is a fallback when no distribution is found (e.g. OpenCV built from source)
_MODULES = {"edge_detect": "edge_detect", "numpy": "numpy", "opencv": "cv2", "onnxruntime": "onnxruntime",
            "onnx": "onnx"}


def _run(cmd: Sequence[str], timeout: float = 5.0) -> Optional[str]:
    """stdout of ``cmd``, or ``None`` when the tool is absent, fails or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        LOGGER.debug("%s failed: %s", " ".join(cmd), exc)
        return None
    return out.stdout


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _cpuinfo_fields(text: str) -> Dict[str, str]:
    """First value of each ``key : value`` line of ``/proc/cpuinfo``."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model(cpuinfo: Optional[str] = None) -> str:
    """CPU model name (``/proc/cpuinfo`` ``model name``, ARM ``Hardware``/device tree, else ``platform``)."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    if text:
        fields = _cpuinfo_fields(text)
        for key in ("model name", "hardware", "cpu model", "processor"):
            value = fields.get(key, "")
            if value and not value.isdigit():
                return value
        if "cpu part" in fields:  # ARM without a model name: implementer/part codes
            return f"ARM implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return platform.processor() or platform.machine() or "unknown"


def cpu_simd(cpuinfo: Optional[str] = None) -> List[str]:
    """The SIMD extensions that matter for inference speed (AVX2, AVX-512, VNNI, NEON...) the CPU reports."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    if not text:
        return []
    fields = _cpuinfo_fields(text)
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return [f for f in _SIMD_FLAGS if f in flags]


def cpu_info() -> Dict[str, Any]:
    """CPU model, core counts (logical, physical, usable by this process), SIMD flags and load average."""
    logical = os.cpu_count() or 1
    physical: Optional[int] = None
    try:
        import psutil  # optional: the 'bench' extra

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        LOGGER.debug("psutil not installed: physical core count unknown")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = logical
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"model": cpu_model(), "logical_cores": logical, "physical_cores": physical, "usable_cores": usable,
            "simd": cpu_simd(), "load_avg": load}


def ram_gb() -> Optional[float]:
    """Total RAM in GiB (psutil, else ``/proc/meminfo``), ``None`` when unknown."""
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    text = _read("/proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.MULTILINE)
    return round(int(match.group(1)) / 2**20, 1) if match else None


def parse_nvidia_smi_csv(text: str) -> List[Dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0]:
            continue
        mem = parts[2] if len(parts) > 2 else ""
        gpus.append({"name": parts[0], "driver": parts[1],
                     "memory_mb": int(float(mem)) if re.fullmatch(r"\d+(\.\d+)?", mem) else None})
    return gpus


def parse_cuda_version(nvidia_smi_text: str) -> Optional[str]:
    """The ``CUDA Version: X.Y`` that plain ``nvidia-smi`` prints in its header, else ``None``."""
    match = re.search(r"CUDA Version:\s*([\d.]+)", nvidia_smi_text or "")
    return match.group(1) if match else None


def gpu_info() -> Dict[str, Any]:
    """``{"gpu": [...], "cuda": str | None}`` from ``nvidia-smi`` (empty without an NVIDIA driver)."""
    csv = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"])
    gpus = parse_nvidia_smi_csv(csv) if csv else []
    cuda = parse_cuda_version(_run(["nvidia-smi"]) or "") if gpus else None
    return {"gpu": gpus, "cuda": cuda}


def _version(key: str) -> Optional[str]:
    if key == "edge_detect":  # the running code, not whatever distribution is installed
        from edge_detect import __version__

        return __version__
    for dist in _DISTRIBUTIONS.get(key, (key,)):
        try:
            return _md.version(dist)
        except _md.PackageNotFoundError:
            continue
    module = _MODULES.get(key)
    if module:
        try:
            return str(getattr(importlib.import_module(module), "__version__", None) or "") or None
        except ImportError:
            return None
    return None


def package_versions() -> Dict[str, Optional[str]]:
    """Versions of the packages that shape inference speed; ``None`` for those not installed.

    TensorRT is looked up in the installed distributions only (importing it would initialise CUDA).
    """
    return {key: _version(key) for key in _DISTRIBUTIONS}


def ort_providers() -> List[str]:
    """ONNX Runtime execution providers available here (``[]`` without onnxruntime)."""
    try:
        import onnxruntime

        return list(onnxruntime.get_available_providers())
    except ImportError:
        return []


def jetson_info() -> Optional[Dict[str, Any]]:
    """On an NVIDIA Jetson: ``{"model", "l4t", "nvpmodel", "jetson_clocks", "dla_cores"}``; ``None`` elsewhere.

    Delegates to :func:`edge_detect.jetson.status` (power mode from ``nvpmodel``, ``jetson_clocks`` from the
    pinned frequency limits).
    """
    from edge_detect.jetson import status

    return status()


def system_info() -> Dict[str, Any]:
    """Everything above in one JSON-ready dict (see the module docstring for the keys)."""
    gpu = gpu_info()
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "ram_gb": ram_gb(),
        "gpu": gpu["gpu"],
        "cuda": gpu["cuda"],
        "versions": package_versions(),
        "onnxruntime_providers": ort_providers(),
        "jetson": jetson_info(),
    }


def summary_line(info: Dict[str, Any]) -> str:
    """One human line: ``AMD EPYC, 2 cores (2 usable), 23.4 GiB RAM, no GPU, onnxruntime 1.20, OpenCV 4.10``."""
    cpu = info.get("cpu", {})
    parts = [f"{cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} cores "
             f"({cpu.get('usable_cores', '?')} usable)"]
    if info.get("ram_gb"):
        parts.append(f"{info['ram_gb']} GiB RAM")
    gpus = info.get("gpu") or []
    parts.append(", ".join(f"{g['name']} (driver {g['driver']})" for g in gpus) if gpus else "no GPU")
    if info.get("cuda"):
        parts.append(f"CUDA {info['cuda']}")
    versions = info.get("versions", {})
    for key, label in (("onnxruntime", "onnxruntime"), ("tensorrt", "TensorRT"), ("opencv", "OpenCV")):
        if versions.get(key):
            parts.append(f"{label} {versions[key]}")
    jetson = info.get("jetson")
    if jetson:
        parts.append(f"{jetson.get('model')}, nvpmodel {jetson.get('nvpmodel')}, "
                     f"jetson_clocks {'on' if jetson.get('jetson_clocks') else 'off'}")
    return ", ".join(parts)
