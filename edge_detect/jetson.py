"""NVIDIA Jetson state that changes benchmark figures: power mode (``nvpmodel``), clocks (``jetson_clocks``), DLA.

Everything returns ``None`` (or ``0`` DLA cores) off a Jetson, never raises, and needs no root: the power
mode comes from ``nvpmodel -q`` (or ``/var/lib/nvpmodel/status``), the clock state from the cpufreq / GPU
devfreq limits (``jetson_clocks`` pins min = max), the board from the device tree. :func:`status` bundles
them for :func:`edge_detect.sysinfo.jetson_info` and the benchmark report. Parsers take text so they are
tested anywhere; ``root`` lets tests point the file reads at a fake ``/``.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
from typing import Any, Dict, List, Optional

__all__ = ["is_jetson", "board_model", "l4t_release", "parse_nvpmodel", "nvpmodel_mode", "clocks_pinned",
           "dla_cores", "status"]

LOGGER = logging.getLogger(__name__)

# Devfreq nodes of Jetson GPUs: gp10b (TX2), gv11b (Xavier), ga10b (Orin), and generic gpu names.
_GPU_DEVFREQ = ("*gp10b*", "*gv11b*", "*ga10b*", "*gpu*")


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _p(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def board_model(root: str = "/") -> Optional[str]:
    """``"NVIDIA Jetson AGX Orin Developer Kit"`` from the device tree, or ``None``."""
    text = _read(_p(root, "/proc/device-tree/model"))
    return text.strip("\x00\n ") if text else None


def l4t_release(root: str = "/") -> Optional[str]:
    """L4T release ``"36.3.0"`` from ``/etc/nv_tegra_release``, or ``None``."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", _read(_p(root, "/etc/nv_tegra_release")) or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def is_jetson(root: str = "/") -> bool:
    """Whether this is a Jetson (L4T release file, or "jetson"/"tegra" in the device-tree model)."""
    model = (board_model(root) or "").lower()
    return l4t_release(root) is not None or "jetson" in model or "tegra" in model


def parse_nvpmodel(text: str) -> Optional[str]:
    """Power mode from ``nvpmodel -q`` (``"NV Power Mode: MAXN\\n0"`` -> ``"MAXN (0)"``) or from the status
    file (``"pmode:0002 fmode:..."`` -> ``"2"``); ``None`` when absent."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text or "")
    if m:
        mode_id = re.search(r"^\s*(\d+)\s*$", text[m.end():], re.MULTILINE)
        return f"{m.group(1)} ({mode_id.group(1)})" if mode_id else m.group(1)
    m = re.search(r"pmode:\s*(\d+)", text or "")
    return str(int(m.group(1))) if m else None


def nvpmodel_mode(root: str = "/", timeout: float = 5.0) -> Optional[str]:
    """The current power mode (see :func:`parse_nvpmodel`), or ``None`` off a Jetson / when unknown."""
    if not is_jetson(root):
        return None
    exe = shutil.which("nvpmodel")
    if exe and root == "/":
        try:
            out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=timeout, check=False)
            mode = parse_nvpmodel(out.stdout)
            if mode:
                return mode
        except (OSError, subprocess.SubprocessError) as exc:
            LOGGER.debug("nvpmodel -q failed: %s", exc)
    return parse_nvpmodel(_read(_p(root, "/var/lib/nvpmodel/status")) or "")


def _pinned(lo: Optional[str], hi: Optional[str]) -> Optional[bool]:
    if lo is None or hi is None:
        return None
    return lo.strip() == hi.strip()


def clocks_pinned(root: str = "/") -> Optional[bool]:
    """Whether ``jetson_clocks`` is active: CPU0 and GPU min frequency == max frequency.

    ``None`` off a Jetson or when the limits cannot be read; ``False`` if any readable limit pair differs.
    """
    if not is_jetson(root):
        return None
    cpu = _p(root, "/sys/devices/system/cpu/cpu0/cpufreq/")
    states: List[Optional[bool]] = [_pinned(_read(cpu + "scaling_min_freq"), _read(cpu + "scaling_max_freq"))]
    for pattern in _GPU_DEVFREQ:
        nodes = sorted(glob.glob(_p(root, "/sys/class/devfreq/" + pattern)))
        if nodes:
            states.append(_pinned(_read(nodes[0] + "/min_freq"), _read(nodes[0] + "/max_freq")))
            break
    known = [s for s in states if s is not None]
    return all(known) if known else None


def dla_cores(root: str = "/") -> int:
    """Number of DLA engines (Xavier / Orin AGX and NX: 2, Orin Nano: 0), from the nvdla device nodes."""
    if not is_jetson(root):
        return 0
    return len(glob.glob(_p(root, "/dev/nvhost-nvdla[0-9]*"))) or len(glob.glob(_p(root, "/dev/nvdla[0-9]*")))


def status(root: str = "/") -> Optional[Dict[str, Any]]:
    """``{"model", "l4t", "nvpmodel", "jetson_clocks", "dla_cores"}`` on a Jetson, ``None`` elsewhere."""
    if not is_jetson(root):
        return None
    return {"model": board_model(root) or "Jetson (unknown model)", "l4t": l4t_release(root),
            "nvpmodel": nvpmodel_mode(root), "jetson_clocks": clocks_pinned(root), "dla_cores": dla_cores(root)}
