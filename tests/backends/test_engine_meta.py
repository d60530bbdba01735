"""Engine metadata sidecar: round trip, version/GPU mismatch messages, rebuild planning (no TensorRT needed)."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from edge_detect.backends.engine_meta import (EngineInfo, RuntimeInfo, check_compatible, engine_info, find_mismatches,
                                     plan_rebuild, read_engine_metadata, sha256_file, sidecar_path,
                                     write_engine_metadata)
from edge_detect.errors import ModelError, ModelLoadError, VersionMismatchError
from edge_detect.metadata import ModelMetadata

# What an engine built on a Jetson Orin with JetPack 6.0 records (TensorRT 8.6.2, sm 8.7).
ORIN = EngineInfo(tensorrt="8.6.2.3", gpu="Orin", compute_capability="8.7", input_name="images",
                  input_shape=(1, 3, 640, 640), input_dtype="float32",
                  build={"fp16": True, "int8": False, "workspace_gb": 2, "dynamic": None, "dla": 0,
                         "calibration_cache": None, "not_an_option": 1})
RTX3090 = RuntimeInfo(tensorrt="10.3.0", gpu="NVIDIA GeForce RTX 3090", compute_capability="8.6")


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    onnx = tmp_path / "yolov5n.onnx"
    onnx.write_bytes(b"not really onnx, but hashed")
    path = tmp_path / "yolov5n.engine"
    path.write_bytes(b"engine bytes")
    meta = ModelMetadata(names=("person", "bicycle"), precision="fp16", source_path=str(onnx),
                         source_sha256=hashlib.sha256(onnx.read_bytes()).hexdigest(),
                         versions={"tensorrt": "8.6.2.3"}, quantization={"method": "percentile"})
    write_engine_metadata(path, meta, ORIN)
    return path


def test_sidecar_round_trip(engine: Path) -> None:
    assert sidecar_path(engine) == engine.with_name("yolov5n.engine.json")
    raw = json.loads(sidecar_path(engine).read_text())
    assert raw["extra"]["engine"]["tensorrt"] == "8.6.2.3" and raw["extra"]["engine"]["input_shape"] == [1, 3, 640, 640]
    meta = read_engine_metadata(engine)
    assert meta.names == ("person", "bicycle") and meta.precision == "fp16"
    assert meta.quantization == {"method": "percentile"}
    assert engine_info(meta) == ORIN
    assert not list(engine.parent.glob("*.tmp"))  # atomic write leaves nothing behind


@pytest.mark.parametrize("content, message", [
    (None, "engine metadata not found: expected"),
    ("{not json", "model metadata is not valid JSON"),
    (json.dumps({"names": ["a"]}), "expected an 'engine' record"),
    (json.dumps({"names": ["a"], "extra": {"engine": {"tensorrt": "10.0"}}}), "missing ['gpu', 'compute_capability']"),
])
def test_bad_sidecars(tmp_path: Path, content, message) -> None:
    path = tmp_path / "m.engine"
    path.write_bytes(b"x")
    if content is not None:
        sidecar_path(path).write_text(content)
    with pytest.raises(ModelLoadError) as info:
        read_engine_metadata(path)
    assert message in str(info.value)


@pytest.mark.parametrize("recorded, runtime, expected", [
    # same everything; build number ignored
    (dict(tensorrt="10.3.0.26", gpu="A", compute_capability="8.6"), ("10.3.0.30", "A", "8.6"), []),
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6"), ("10.4.0", "A", "8.6"),
     ["TensorRT 10.3.0 vs 10.4.0 here"]),
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6"), ("10.3.0", "B", "8.9"),
     ["GPU A (compute 8.6) vs B (compute 8.9) here"]),
    # version-compatible engines (TensorRT >= 8.6) run on the building version or any later one, across majors
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6", version_compatible=True),
     ("10.7.0", "A", "8.6"), []),
    (dict(tensorrt="8.6.1", gpu="A", compute_capability="8.6", version_compatible=True), ("10.0.1", "A", "8.6"), []),
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6", version_compatible=True), ("10.2.0", "A", "8.6"),
     ["TensorRT 10.3.0 (version-compatible: runs on 10.3.0 or later) vs 10.2.0 here"]),
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6", version_compatible=True), ("9.9.9", "A", "8.6"),
     ["TensorRT 10.3.0 (version-compatible: runs on 10.3.0 or later) vs 9.9.9 here"]),
    (dict(tensorrt="8.5.2", gpu="A", compute_capability="8.7", version_compatible=True), ("8.5.2", "A", "8.7"),
     ["TensorRT 8.5.2 (marked version-compatible, but version compatibility needs TensorRT >= 8.6 to build it)"]),
    # hardware-compatible (Ampere+) engines run on any sm >= 8.0
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6", hardware_compatible=True),
     ("10.3.0", "H100", "9.0"), []),
    (dict(tensorrt="10.3.0", gpu="A", compute_capability="8.6", hardware_compatible=True), ("10.3.0", "T4", "7.5"),
     ["hardware-compatible engine needs compute capability >= 8.0, T4 here is 7.5"]),
])
def test_find_mismatches(recorded, runtime, expected) -> None:
    assert find_mismatches(EngineInfo(**recorded), RuntimeInfo(*runtime)) == expected


def test_same_compute_capability_other_gpu_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_detect.backends.engine_meta"):
        assert find_mismatches(EngineInfo("10.3.0", "RTX 3090", "8.6"), RuntimeInfo("10.3.0", "RTX A6000", "8.6")) == []
    assert "engine built on RTX 3090, running on RTX A6000" in caplog.text


def test_mismatch_error_is_one_line(engine: Path) -> None:
    meta = read_engine_metadata(engine)
    with pytest.raises(VersionMismatchError) as info:
        check_compatible(engine, meta, RTX3090)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == ("yolov5n.engine was built for TensorRT 8.6.2.3 vs 10.3.0 here; GPU Orin (compute 8.7) vs "
                   "NVIDIA GeForce RTX 3090 (compute 8.6) here: rebuild it (edge-detect export --format engine) "
                   "or load it with --rebuild-on-mismatch")
    check_compatible(engine, meta, RuntimeInfo("8.6.2", "Orin", "8.7"))  # the machine it was built on


def test_plan_rebuild_replays_recorded_options(engine: Path) -> None:
    plan = plan_rebuild(engine, read_engine_metadata(engine), reason="TensorRT changed")
    assert plan.onnx == engine.with_name("yolov5n.onnx") and plan.engine == engine
    assert dict(plan.options) == {"fp16": True, "int8": False, "workspace_gb": 2, "dynamic": None, "dla": 0,
                                  "calibration_cache": None, "version_compatible": False,
                                  "hardware_compatible": False}
    assert plan.reason == "TensorRT changed"


@pytest.mark.parametrize("case, message", [
    ("no_path", "its metadata records no source ONNX path"),
    ("missing", "recorded source ONNX"),
    ("changed", "(the ONNX changed since the engine was built)"),
])
def test_plan_rebuild_refuses(engine: Path, case: str, message: str) -> None:
    meta = read_engine_metadata(engine)
    onnx = Path(meta.source_path)
    if case == "no_path":
        meta = meta.replace(source_path="")
    elif case == "missing":
        onnx.unlink()
    else:
        onnx.write_bytes(b"edited")
    with pytest.raises(ModelError) as info:
        plan_rebuild(engine, meta)
    assert message in str(info.value)


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_finding5_hardware_compatible_engine_does_not_run_on_an_integrated_gpu() -> None:
    """Hardware compatibility is not supported on JetPack: a mismatch on Orin, so a rebuild fires."""
    ampere_plus = EngineInfo(tensorrt="10.3.0", gpu="RTX 3090", compute_capability="8.6", hardware_compatible=True)
    assert find_mismatches(ampere_plus, RuntimeInfo("10.3.0", "NVIDIA H100", "9.0")) == []
    assert find_mismatches(ampere_plus, RuntimeInfo("10.3.0", "Orin", "8.7", integrated=True)) == [
        "hardware-compatible engine, not supported on JetPack's integrated GPU (Orin here, compute 8.7)"]


def test_finding7_rebuild_replays_the_calibration_method(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    build = {"int8": True, "calibration_cache": str(tmp_path / "m.engine.calib"), "calibration_method": "minmax"}
    write_engine_metadata(engine, ModelMetadata(names=("a",), source_path=str(onnx)),
                          EngineInfo("10.3.0", "A", "8.6", build=build))
    assert plan_rebuild(engine, read_engine_metadata(engine)).options["calibration_method"] == "minmax"
