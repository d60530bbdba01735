"""The default test run is deterministic: timed assertions carry the opt-in ``perf`` marker, which setup.cfg
registers and deselects by default, while ``pytest -m perf`` still selects them."""
from __future__ import annotations

import configparser
import subprocess
import sys

from conftest import REPO

PERF_TESTS = {
    "tests/test_bench.py::test_repeated_inference_medians_agree",
    "tests/test_cli_bench.py::test_acceptance_e2e_ratio",
    "tests/stream/test_pipeline.py::test_end_to_end_fps_close_to_inference_only",
    "tests/stream/test_pipeline.py::test_live_source_latency_stays_bounded",
    "tests/sinks/test_mqtt.py::test_outage_rate_within_10_percent_of_a_run_without_outage",
}


def _pytest_cfg() -> configparser.SectionProxy:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["tool:pytest"]


def test_perf_marker_registered_and_deselected_by_default() -> None:
    section = _pytest_cfg()
    assert any(line.strip().startswith("perf:") for line in section["markers"].splitlines())
    assert '-m "not perf"' in section["addopts"]


def _collect(*extra: str) -> set:
    files = sorted({t.split("::")[0] for t in PERF_TESTS})
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           *extra, *files], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def test_m_perf_selects_the_timed_tests_and_the_default_run_does_not() -> None:
    default, perf = _collect(), _collect("-m", "perf")
    assert PERF_TESTS <= perf  # (other perf tests may live in the same files)
    assert not default & perf and default  # disjoint; the rest still runs by default
