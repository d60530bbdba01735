"""Self-describing TensorRT engines: a metadata sidecar, version/GPU mismatch checks, rebuild planning.

A serialized TensorRT engine only runs on the TensorRT version and the GPU it was built for. Every engine
edge-detect builds gets a sidecar ``<engine>.json`` (``yolov5n.engine`` -> ``yolov5n.engine.json``) holding
a :class:`~edge_detect.metadata.ModelMetadata` whose ``extra["engine"]`` is an :class:`EngineInfo`: the
TensorRT version, GPU name and compute capability, the input tensor, the build options, and (in
``source_path`` / ``source_sha256``) the ONNX it was built from.

At load time :func:`check_compatible` compares that record with the running machine (a
:class:`RuntimeInfo`) and raises a one-line :class:`~edge_detect.errors.VersionMismatchError`; with
``--rebuild-on-mismatch``, :func:`edge_detect.models.open_model` (above the backends) instead asks
:func:`plan_rebuild` for the recorded ONNX (checked against its sha256) and the recorded build options, and
rebuilds before opening the backend. Nothing here imports TensorRT.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from edge_detect.backends.trt_common import MIN_VERSION_COMPATIBLE, version_tuple
from edge_detect.errors import ModelError, ModelLoadError, VersionMismatchError
from edge_detect.weights import sha256_file
from edge_detect.metadata import ModelMetadata
from edge_detect.paths import PathLike

__all__ = [
    "EngineInfo",
    "RuntimeInfo",
    "RebuildPlan",
    "sidecar_path",
    "sha256_file",
    "write_engine_metadata",
    "read_engine_metadata",
    "engine_info",
    "find_mismatches",
    "check_compatible",
    "plan_rebuild",
]

LOGGER = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"
# Build options recorded so that an engine can be rebuilt the same way (keyword arguments of build_engine).
BUILD_OPTION_KEYS = ("fp16", "int8", "workspace_gb", "dynamic", "dla", "calibration_cache", "calibration_method")


@dataclass(frozen=True)
class EngineInfo:
    """What a serialized engine is tied to, stored under ``ModelMetadata.extra["engine"]``.

    Attributes:
        tensorrt: TensorRT version that built it (``"10.3.0"``).
        gpu: GPU name at build time (``"NVIDIA GeForce RTX 3090"``, ``"Orin"``).
        compute_capability: ``"major.minor"`` (``"8.6"``).
        input_name / input_shape / input_dtype: the input tensor (``-1`` for dynamic axes, dtype as NumPy
            names it: ``"float32"``, ``"float16"``, ``"uint8"``).
        build: the build options (keys of :data:`BUILD_OPTION_KEYS`), replayed by a rebuild.
        version_compatible: built with TensorRT's version-compatible flag (TensorRT >= 8.6): runs on the same
            or any later TensorRT version.
        hardware_compatible: built for all Ampere-and-later discrete GPUs (compute capability >= 8.0; not
            supported on JetPack's integrated GPUs).
    """

    tensorrt: str
    gpu: str
    compute_capability: str
    input_name: str = "images"
    input_shape: Tuple[int, ...] = ()
    input_dtype: str = "float32"
    build: Mapping[str, Any] = field(default_factory=dict)
    version_compatible: bool = False
    hardware_compatible: bool = False

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["build"] = dict(self.build)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineInfo":
        missing = [k for k in ("tensorrt", "gpu", "compute_capability") if k not in d]
        if missing:
            raise ModelLoadError(f"engine metadata: expected keys tensorrt, gpu, compute_capability; "
                                 f"missing {missing}")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["input_shape"] = tuple(int(v) for v in kwargs.get("input_shape", ()))
        return cls(**kwargs)


@dataclass(frozen=True)
class RuntimeInfo:
    """The machine loading an engine: TensorRT version, GPU name, compute capability ``"major.minor"``, and
    whether the GPU is integrated (Jetson)."""

    tensorrt: str
    gpu: str
    compute_capability: str
    integrated: bool = False


@dataclass(frozen=True)
class RebuildPlan:
    """How to rebuild a mismatched engine: from ``onnx`` with ``options`` (``build_engine`` keywords)."""

    engine: Path
    onnx: Path
    options: Mapping[str, Any]
    reason: str


def sidecar_path(engine: PathLike) -> Path:
    """``yolov5n.engine`` -> ``yolov5n.engine.json``."""
    p = Path(engine)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_engine_metadata(engine: PathLike, meta: ModelMetadata, info: EngineInfo) -> Path:
    """Write ``meta`` with ``extra["engine"] = info`` to the engine's sidecar; returns the sidecar path."""
    full = meta.replace(extra={**dict(meta.extra), "engine": info.to_dict()})
    out = sidecar_path(engine)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(full.to_dict(), sort_keys=True, indent=1), encoding="utf-8")
    os.replace(tmp, out)
    LOGGER.debug("wrote engine metadata %s", out)
    return out


def read_engine_metadata(engine: PathLike) -> ModelMetadata:
    """Read the sidecar of ``engine`` (validated :class:`ModelMetadata`, with ``extra["engine"]``).

    Raises:
        ModelLoadError: the sidecar is missing, not JSON, or lacks the engine record.
    """
    path = sidecar_path(engine)
    if not path.is_file():
        raise ModelLoadError(
            f"engine metadata not found: expected {path} next to {Path(engine).name} "
            f"(engines built by edge-detect export --format engine have one)")
    meta = ModelMetadata.from_json(path.read_text(encoding="utf-8"))
    engine_info(meta)  # validates the record
    return meta


def engine_info(meta: ModelMetadata) -> EngineInfo:
    """The :class:`EngineInfo` recorded in ``meta.extra["engine"]``; :class:`ModelLoadError` if absent."""
    record = meta.extra.get("engine")
    if not isinstance(record, Mapping):
        raise ModelLoadError("engine metadata: expected an 'engine' record (TensorRT version, GPU), got none")
    return EngineInfo.from_dict(record)


def _cc_major(cc: str) -> int:
    return version_tuple(cc, 1)[0]


def find_mismatches(info: EngineInfo, runtime: RuntimeInfo) -> List[str]:
    """Why an engine cannot run here; empty when it can.

    Rules (TensorRT's own): the TensorRT version must match to ``major.minor.patch`` (the build number is
    ignored). A version-compatible engine (built by TensorRT >= 8.6 with ``BuilderFlag.VERSION_COMPATIBLE``)
    runs on the TensorRT version that built it or any later one, not on an earlier one. The GPU's compute
    capability must match, or be >= 8.0 for hardware-compatible engines, which do not run on integrated GPUs
    (hardware compatibility is not supported on JetPack). A different GPU name with the same compute capability
    is allowed (TensorRT warns; logged here).
    """
    problems = []
    built, here = version_tuple(info.tensorrt, 3), version_tuple(runtime.tensorrt, 3)
    if info.version_compatible:
        floor = ".".join(map(str, MIN_VERSION_COMPATIBLE))
        if built[:2] < MIN_VERSION_COMPATIBLE:
            problems.append(f"TensorRT {info.tensorrt} (marked version-compatible, but version compatibility needs "
                            f"TensorRT >= {floor} to build it)")
        elif here < built:
            problems.append(f"TensorRT {info.tensorrt} (version-compatible: runs on {info.tensorrt} or later) "
                            f"vs {runtime.tensorrt} here")
    elif built != here:
        problems.append(f"TensorRT {info.tensorrt} vs {runtime.tensorrt} here")
    if info.hardware_compatible:
        if runtime.integrated:
            problems.append(f"hardware-compatible engine, not supported on JetPack's integrated GPU ({runtime.gpu} "
                            f"here, compute {runtime.compute_capability})")
        elif _cc_major(runtime.compute_capability) < 8:
            problems.append(f"hardware-compatible engine needs compute capability >= 8.0, "
                            f"{runtime.gpu} here is {runtime.compute_capability}")
    elif version_tuple(info.compute_capability, 2) != version_tuple(runtime.compute_capability, 2):
        problems.append(f"GPU {info.gpu} (compute {info.compute_capability}) vs {runtime.gpu} "
                        f"(compute {runtime.compute_capability}) here")
    elif info.gpu != runtime.gpu:
        LOGGER.warning("engine built on %s, running on %s (same compute capability %s): it loads, but "
                    "rebuilding on this GPU may be faster", info.gpu, runtime.gpu, runtime.compute_capability)
    return problems


def check_compatible(engine: PathLike, meta: ModelMetadata, runtime: RuntimeInfo) -> None:
    """Raise a one-line :class:`VersionMismatchError` if ``engine`` cannot run on ``runtime``.

    Example message::

        yolov5n.engine was built for TensorRT 8.6.1 vs 10.3.0 here; GPU Orin (compute 8.7) vs NVIDIA
        GeForce RTX 3090 (compute 8.6) here: rebuild it (edge-detect export --format engine) or load it
        with --rebuild-on-mismatch
    """
    problems = find_mismatches(engine_info(meta), runtime)
    if problems:
        raise VersionMismatchError(
            f"{Path(engine).name} was built for {'; '.join(problems)}: rebuild it "
            f"(edge-detect export --format engine) or load it with --rebuild-on-mismatch")


def plan_rebuild(engine: PathLike, meta: ModelMetadata, reason: str = "") -> RebuildPlan:
    """Where to rebuild ``engine`` from: the recorded ONNX, checked against its recorded sha256.

    Raises:
        ModelError: no ONNX recorded, the file is gone, or its sha256 differs from the recorded one.
    """
    if not meta.source_path:
        raise ModelError(f"cannot rebuild {Path(engine).name}: its metadata records no source ONNX path")
    onnx = Path(meta.source_path)
    if not onnx.is_file():
        raise ModelError(f"cannot rebuild {Path(engine).name}: recorded source ONNX {onnx} does not exist")
    if meta.source_sha256:
        actual = sha256_file(onnx)
        if actual != meta.source_sha256:
            raise ModelError(
                f"cannot rebuild {Path(engine).name}: {onnx} has sha256 {actual[:12]}..., expected "
                f"{meta.source_sha256[:12]}... (the ONNX changed since the engine was built)")
    info = engine_info(meta)
    options = {k: v for k, v in info.build.items() if k in BUILD_OPTION_KEYS}
    options.update(version_compatible=info.version_compatible, hardware_compatible=info.hardware_compatible)
    return RebuildPlan(Path(engine), onnx, options, reason)
