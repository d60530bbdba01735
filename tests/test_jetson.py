"""Jetson power-mode / clock detection against a fake root filesystem (no Jetson needed)."""
from pathlib import Path

import pytest

from edge_detect import jetson


def _fake_jetson(root: Path, pinned: bool) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 1, BOARD: generic\n")
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text("pmode:0002 fmode:quiet\n")
    cpu = root / "sys/devices/system/cpu/cpu0/cpufreq"
    cpu.mkdir(parents=True)
    (cpu / "scaling_min_freq").write_text("2201600\n" if pinned else "729600\n")
    (cpu / "scaling_max_freq").write_text("2201600\n")
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "min_freq").write_text("1300500000\n" if pinned else "306000000\n")
    (gpu / "max_freq").write_text("1300500000\n")
    (root / "dev").mkdir()
    for i in range(2):
        (root / f"dev/nvhost-nvdla{i}").write_text("")
    return root


@pytest.mark.parametrize("pinned", [True, False])
def test_status_on_fake_jetson(tmp_path, pinned):
    root = str(_fake_jetson(tmp_path, pinned))
    st = jetson.status(root)
    assert st == {"model": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "36.3.0", "nvpmodel": "2",
                  "jetson_clocks": pinned, "dla_cores": 2}


def test_not_a_jetson(tmp_path):
    assert jetson.status(str(tmp_path)) is None
    assert jetson.clocks_pinned(str(tmp_path)) is None and jetson.dla_cores(str(tmp_path)) == 0


@pytest.mark.parametrize(
    "text, mode",
    [
        ("NV Power Mode: MAXN\n0\n", "MAXN (0)"),
        ("NV Power Mode: 15W\n", "15W"),
        ("pmode:0003 fmode:cool", "3"),
        ("", None),
    ],
)
def test_parse_nvpmodel(text, mode):
    assert jetson.parse_nvpmodel(text) == mode
