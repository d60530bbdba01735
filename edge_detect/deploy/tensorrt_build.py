"""Build TensorRT engines from ONNX: precision, INT8 calibration, optimization profiles, timing cache, metadata.

Importing this module needs neither TensorRT nor CUDA: everything that can be decided without them is
plain Python and unit-tested here — the build plan (:func:`plan_build`: which builder flags, strongly or
weakly typed, explicit or implicit INT8, for the TensorRT version at hand), the optimization profile
(:func:`plan_profile`), the ONNX inspection (:func:`inspect_onnx`), the calibrator's batching and cache
(:class:`CalibrationBatcher`), the in-graph NMS checks (:func:`check_nms_support`) and the progress bars
(:class:`PhaseBars`). :func:`build_engine` imports TensorRT and wraps those pieces thinly. It uses the
process-lifetime TensorRT logger and registers TensorRT's plugins first
(:mod:`edge_detect.backends.trt_common`); FP16 builds keep the NMS section FP32 (:func:`keep_fp32`); an
exception raised while calibrating (which TensorRT's Python wrapper would swallow) is re-raised after the
build and the partial calibration cache deleted; a timing cache TensorRT refuses is replaced by a fresh one.

Precision, by TensorRT version:

* TensorRT 8.6 – 10.x: ``fp16`` sets ``BuilderFlag.FP16``. ``int8`` with a Q/DQ ONNX (from
  ``edge-detect export --int8``) is explicit quantization: ``INT8`` + ``FP16`` flags, the scales come from
  the graph. ``int8`` with a plain FP32 ONNX is implicit quantization through an
  ``IInt8EntropyCalibrator2`` (default) or ``IInt8MinMaxCalibrator`` fed with the same preprocessed batches
  as the Q/DQ quantizer (:class:`edge_detect.deploy.calibration.CalibrationData`), with a calibration cache
  that later builds reuse without touching the images.
* TensorRT 11+: networks are strongly typed (weak-typing flags and calibrators were removed): FP16 needs an
  FP16 ONNX (``export --half``) and INT8 a Q/DQ ONNX; anything else fails with a one-line explanation.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect import __version__
from edge_detect._optional import require
from edge_detect.backends.buffers import ShapeProfile, TensorSpec
from edge_detect.backends.engine_meta import EngineInfo, sha256_file, write_engine_metadata
from edge_detect.backends.trt_common import (MIN_TENSORRT, MIN_VERSION_COMPATIBLE, import_tensorrt,
                                             init_plugins, version_tuple)
from edge_detect.errors import BackendUnavailableError, ConfigError, DataError, ModelError, ModelLoadError
from edge_detect.metadata import ModelMetadata, read_onnx_metadata
from edge_detect.paths import PathLike

__all__ = [
    "build_engine",
    "BuildPlan",
    "plan_build",
    "plan_profile",
    "OnnxInfo",
    "inspect_onnx",
    "CalibrationBatcher",
    "make_calibrator",
    "PhaseBars",
    "check_nms_support",
    "nms_layers",
    "keep_fp32",
    "CALIBRATION_METHODS",
    "MIN_TENSORRT",
    "INMS_MAX_DET",
]

LOGGER = logging.getLogger(__name__)
TRT_LOGGER = logging.getLogger("edge_detect.tensorrt")  # TensorRT's own messages (trt_common logger)

CALIBRATION_METHODS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
NMS_PREFIX = "nms/"  # every node/tensor edge_detect.deploy.graph.add_nms appends is named nms/...
# TensorRT's INMSLayer (what the ONNX parser makes of NonMaxSuppression) caps its top-K: 2000 boxes on
# compute capability 5.3 / 6.2 (Jetson Nano / TX2), 5000 elsewhere.
INMS_MAX_DET = {"5.3": 2000, "6.2": 2000, "default": 5000}


def _version(version: str) -> Tuple[int, int]:
    major, minor = version_tuple(version, 2)
    return major, minor


# ------------------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class BuildPlan:
    """What to ask the builder for.

    Attributes:
        flags: ``trt.BuilderFlag`` names to set (``"FP16"``, ``"INT8"``, ``"GPU_FALLBACK"``).
        strongly_typed: create the network with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.
        calibration: ``"explicit"`` (Q/DQ graph), ``"implicit"`` (calibrator), or ``None``.
        precision: the engine's precision for its metadata: ``"fp32"``, ``"fp16"`` or ``"int8"``.
    """

    flags: Tuple[str, ...]
    strongly_typed: bool
    calibration: Optional[str]
    precision: str


def plan_build(tensorrt_version: str, fp16: bool = False, int8: bool = False, has_qdq: bool = False,
               onnx_fp16: bool = False, can_calibrate: bool = False, dla: Optional[int] = None,
               version_compatible: bool = False) -> BuildPlan:
    """Decide builder flags and typing for a TensorRT version (see module doc).

    Args:
        tensorrt_version: ``trt.__version__``.
        fp16 / int8: what the user asked for.
        has_qdq: the ONNX holds QuantizeLinear/DequantizeLinear nodes.
        onnx_fp16: the ONNX computes in float16 already.
        can_calibrate: calibration data or a calibration cache is available (implicit INT8).
        dla: DLA core, or ``None`` for the GPU.
        version_compatible: a version-compatible engine is asked for (TensorRT >= 8.6).

    Raises:
        BackendUnavailableError: this TensorRT cannot do what is asked (too old, or 11+ without weak typing).
        ConfigError: the request is contradictory (INT8 without Q/DQ or data; DLA in FP32).
    """
    major, minor = _version(tensorrt_version)
    if (major, minor) < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {tensorrt_version} is too old: expected >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} "
            "(named-tensor API; JetPack 5.1+ ships 8.5)")
    if version_compatible and (major, minor) < MIN_VERSION_COMPATIBLE:
        raise BackendUnavailableError(
            f"version-compatible engines: expected TensorRT >= {MIN_VERSION_COMPATIBLE[0]}."
            f"{MIN_VERSION_COMPATIBLE[1]}, got {tensorrt_version}")
    int8 = int8 or has_qdq
    if dla is not None and not (fp16 or int8 or onnx_fp16):
        raise ConfigError(f"dla={dla}: DLA runs FP16 or INT8 only; add --half or --int8")
    fallback = ("GPU_FALLBACK",) if dla is not None else ()
    precision = "int8" if int8 else ("fp16" if fp16 or onnx_fp16 else "fp32")
    if major >= 11:
        if int8 and not has_qdq:
            raise BackendUnavailableError(
                f"TensorRT {tensorrt_version} has no implicit INT8 calibration: quantize to a Q/DQ ONNX first "
                "(edge-detect export --format onnx --int8 --calib DATA) and build from it")
        if fp16 and not onnx_fp16 and not has_qdq:
            raise BackendUnavailableError(
                f"TensorRT {tensorrt_version} builds strongly typed networks only: FP16 needs an FP16 ONNX "
                "(edge-detect export --format onnx --half), got an FP32 ONNX")
        return BuildPlan(fallback, True, "explicit" if int8 else None, precision)
    if int8 and has_qdq:
        return BuildPlan(("INT8", "FP16") + fallback, False, "explicit", "int8")
    if int8:
        if not can_calibrate:
            raise ConfigError("INT8 needs a Q/DQ ONNX (edge-detect export --int8 --calib DATA) or calibration "
                              "data for TensorRT's calibrator (--calib DATA, or an existing calibration cache)")
        return BuildPlan(("INT8", "FP16") + fallback, False, "implicit", "int8")
    flags = ("FP16",) if fp16 or onnx_fp16 else ()
    return BuildPlan(flags + fallback, False, None, precision)


@dataclass(frozen=True)
class OnnxInfo:
    """The facts about an ONNX file that the build needs."""

    path: Path
    input: TensorSpec
    has_qdq: bool
    fp16: bool
    metadata: ModelMetadata
    outputs: Tuple[str, ...] = ()
    nms_op: Optional[str] = None
    nms_agnostic: bool = False
    nms_max_det: Optional[int] = None

    @property
    def dynamic(self) -> bool:
        return self.input.dynamic


def inspect_onnx(path: PathLike) -> OnnxInfo:
    """Read the input tensor, Q/DQ presence, float16-ness and edge-detect metadata of an ONNX model.

    Raises:
        ModelLoadError: missing file, not one input, or no edge-detect metadata.
    """
    onnx = require("onnx", "onnx")
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"ONNX model not found: {p}")
    model = onnx.load(str(p), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelLoadError(f"{p}: expected 1 input, got {[i.name for i in inputs]}")
    tt = inputs[0].type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
    meta = read_onnx_metadata(model)
    if meta is None:
        raise ModelLoadError(f"{p}: no edge_detect metadata; export it with edge-detect export --format onnx")
    ops = {n.op_type for n in model.graph.node}
    fp16 = dtype == np.float16 or any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    nms_op, agnostic, max_det = None, False, None
    for node in model.graph.node:
        if node.op_type == "EfficientNMS_TRT":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            nms_op, agnostic, max_det = node.op_type, bool(attrs.get("class_agnostic", 0)), \
                int(attrs.get("max_output_boxes", 100))
        elif node.op_type == "NonMaxSuppression":
            nms_op = node.op_type
            init = {i.name: i for i in model.graph.initializer}
            if len(node.input) > 2 and node.input[2] in init:
                max_det = int(onnx.numpy_helper.to_array(init[node.input[2]]).reshape(-1)[0])
    return OnnxInfo(p, TensorSpec(inputs[0].name, shape, dtype, True), bool(ops & _QDQ_OPS), bool(fp16), meta,
                    tuple(o.name for o in model.graph.output), nms_op, agnostic, max_det)


def check_nms_support(tensorrt_version: str, info: OnnxInfo, compute_capability: str) -> None:
    """Refuse in-graph NMS that this TensorRT would build wrongly or not at all.

    * ``EfficientNMS_TRT`` with ``class_agnostic`` needs TensorRT >= 8.6: the 8.5 plugin has no such field and
      the parser drops unknown attributes, so the NMS would silently be class-aware.
    * ONNX ``NonMaxSuppression`` becomes TensorRT's ``INMSLayer`` (TensorRT >= 8.6), whose top-K is capped at
      5000 boxes, 2000 on compute capability 5.3 / 6.2 (:data:`INMS_MAX_DET`).

    Raises:
        ConfigError: agnostic EfficientNMS below 8.6, or ``max_det`` above the INMS cap on this GPU.
        BackendUnavailableError: ONNX NonMaxSuppression below TensorRT 8.6.
    """
    version = _version(tensorrt_version)
    if info.nms_op == "EfficientNMS_TRT" and info.nms_agnostic and version < (8, 6):
        raise ConfigError(
            f"{info.path.name}: class-agnostic EfficientNMS_TRT needs TensorRT >= 8.6, got {tensorrt_version} "
            "(its plugin has no class_agnostic field and would run class-aware NMS); export without --agnostic, "
            "or with --nms-plugin onnx on TensorRT >= 8.6")
    if info.nms_op == "NonMaxSuppression":
        if version < (8, 6):
            raise BackendUnavailableError(
                f"{info.path.name}: ONNX NonMaxSuppression needs TensorRT >= 8.6 (INMSLayer), got "
                f"{tensorrt_version}; export with --nms-plugin efficient")
        cap = INMS_MAX_DET.get(compute_capability, INMS_MAX_DET["default"])
        if info.nms_max_det is not None and info.nms_max_det > cap:
            raise ConfigError(
                f"{info.path.name}: max_det: expected <= {cap} for TensorRT's NMS layer on compute capability "
                f"{compute_capability}, got {info.nms_max_det}")


def nms_layers(network: Any, prefix: str = NMS_PREFIX) -> List[Any]:
    """The layers of a parsed network that belong to the in-graph NMS section appended by ``add_nms``.

    A layer belongs to it when its name or one of its input tensors' names starts with ``prefix`` (the
    parser names layers and tensors after the ONNX nodes and tensors), or when one of its inputs comes from
    such a layer (helper layers the parser adds, e.g. broadcasts of constants, have generated names).
    """
    marked: List[Any] = []
    tensors: set = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        inputs = [layer.get_input(j) for j in range(layer.num_inputs)]
        names = [t.name for t in inputs if t is not None]
        if layer.name.startswith(prefix) or any(n in tensors or n.startswith(prefix) for n in names):
            marked.append(layer)
            tensors.update(layer.get_output(j).name for j in range(layer.num_outputs))
    return marked


def keep_fp32(trt: Any, layers: Sequence[Any]) -> int:
    """Pin the float outputs of ``layers`` to FP32 (``layer.precision`` and ``set_output_type``).

    Used for the NMS section of FP16 builds: its class offsets (``class x 7680`` px, up to ~600k for 80
    classes) overflow FP16's 65,504. The builder config needs ``PREFER_PRECISION_CONSTRAINTS``.

    Returns:
        the number of layers pinned.
    """
    pinned = 0
    for layer in layers:
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype == trt.float32]
        if not outs:
            continue
        layer.precision = trt.float32
        for j in outs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def plan_profile(info: OnnxInfo, dynamic: Any = None) -> Optional[ShapeProfile]:
    """The optimization profile of the input, or ``None`` for a static input.

    Args:
        info: from :func:`inspect_onnx`.
        dynamic: ``None``, ``True``, or ``{"min": shape, "opt": shape, "max": shape}`` / ``(min, opt, max)``.
            For a dynamic ONNX and ``dynamic=None`` the profile is the nominal shape (batch from the
            metadata, ``imgsz``), min = opt = max. ``True`` = batch 1 to the metadata batch and sides from
            half of ``imgsz`` (rounded down to the stride) up to ``imgsz``; opt = max.

    Raises:
        ConfigError: a profile for a static ONNX, or one that contradicts the input's static axes or the
            model stride.
    """
    spec, meta = info.input, info.metadata
    if not spec.dynamic:
        if dynamic is not None:
            raise ConfigError(f"dynamic shapes: {info.path.name} has a static input {spec.shape}; export it "
                              "with --dynamic to build a dynamic-shape engine")
        return None
    nchw = meta.input_format == "float32_nchw_rgb"

    def shape_of(batch: int, h: int, w: int) -> Tuple[int, ...]:
        nominal = (batch, 3, h, w) if nchw else (batch, h, w, 3)
        return tuple(s if s > 0 else n for s, n in zip(spec.shape, nominal))

    h, w = meta.imgsz
    if dynamic is None or dynamic is False:
        shape = shape_of(max(meta.batch, 1), h, w)
        LOGGER.info("dynamic ONNX without a profile: building for %s only", shape)
        return ShapeProfile.static(shape)
    if dynamic is True:  # batch 1..metadata batch, sides from half the nominal size up to it
        s = meta.stride
        lo_h, lo_w = max(s, h // 2 // s * s), max(s, w // 2 // s * s)
        top = max(meta.batch, 1)
        dynamic = (shape_of(1, lo_h, lo_w), shape_of(top, h, w), shape_of(top, h, w))
    try:
        profile = ShapeProfile.parse(dynamic)
        profile.fits(spec)
    except DataError as exc:
        raise ConfigError(f"dynamic shapes: {exc}") from exc
    hw_axes = (2, 3) if nchw else (1, 2)
    bad = [s for s in (profile.min, profile.opt, profile.max) if any(s[a] % meta.stride for a in hw_axes)]
    if bad:
        raise ConfigError(f"dynamic shapes: height and width must be multiples of the stride {meta.stride}, "
                          f"got {bad[0]}")
    return profile


# ------------------------------------------------------------------------------------------------ calibration
BatchSource = Union[Iterable[np.ndarray], Callable[[], Iterator[np.ndarray]], None]


class CalibrationBatcher:
    """The TensorRT-free core of the INT8 calibrators: hand out batches one by one, read/write the cache.

    Args:
        batches: the calibration batches (float32 NCHW ``(B, 3, H, W)``, or uint8 NHWC for uint8-input
            models), as an iterable or a zero-argument callable returning an iterator (e.g.
            ``CalibrationData.batches``); ``None`` for cache-only calibration. Iteration starts lazily, on
            the first :meth:`next_batch`, so a cache hit never touches the images.
        cache_file: calibration cache path; read when it exists (and not ``overwrite_cache``), written after
            calibration.
        input_shape: the exact batch shape the engine's input takes during calibration; batches must match.
        dtype: the input dtype (batches are converted to it; float batches for a uint8 input are rejected).
        total: number of batches, for the progress bar.
        progress: show a tqdm bar.
    """

    def __init__(self, batches: BatchSource, cache_file: Optional[PathLike], input_shape: Sequence[int],
                 dtype: Any = np.float32, total: Optional[int] = None, overwrite_cache: bool = False,
                 progress: bool = True) -> None:
        self.source = batches
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = np.dtype(dtype)
        self.total = total
        self.overwrite_cache = overwrite_cache
        self.progress = progress
        self.batches_served = 0
        self.cache_hit = False
        self._iter: Optional[Iterator[np.ndarray]] = None
        self._bar: Any = None
        if len(self.input_shape) != 4 or min(self.input_shape) <= 0:
            raise DataError(f"calibration input shape: expected 4 positive dims, got {self.input_shape}")

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    def _start(self) -> Iterator[np.ndarray]:
        if self.source is None:
            raise DataError("calibration: no calibration cache found and no calibration data given "
                            f"(cache {self.cache_file}); pass --calib DATA")
        it = self.source() if callable(self.source) else iter(self.source)
        if self.progress:
            tqdm = require("tqdm", "build").tqdm
            self._bar = tqdm(total=self.total, desc="INT8 calibration", unit="batch")
        return it

    def next_batch(self) -> Optional[np.ndarray]:
        """The next batch as a C-contiguous array of :attr:`input_shape` / :attr:`dtype`; ``None`` at the end.

        Raises:
            DataError: a batch has the wrong shape or a float batch is given for a uint8 input.
        """
        if self._iter is None:
            self._iter = self._start()
        batch = next(self._iter, None)
        if batch is None:
            self._finish()
            return None
        arr = np.asarray(batch)
        if tuple(arr.shape) != self.input_shape:
            raise DataError(f"calibration batch {self.batches_served}: expected shape {self.input_shape}, "
                            f"got {tuple(arr.shape)}")
        if self.dtype == np.uint8 and arr.dtype != np.uint8:
            raise DataError(f"calibration batch {self.batches_served}: expected uint8 (uint8-input model), "
                            f"got {arr.dtype}")
        self.batches_served += 1
        if self._bar is not None:
            self._bar.update(1)
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def read_cache(self) -> Optional[bytes]:
        """The cache's bytes when it exists and is non-empty (sets :attr:`cache_hit`), else ``None``."""
        if self.cache_file is None or self.overwrite_cache or not self.cache_file.is_file():
            return None
        data = self.cache_file.read_bytes()
        if not data:
            return None
        self.cache_hit = True
        LOGGER.info("INT8 calibration: reusing cache %s (%d bytes); no images read", self.cache_file, len(data))
        return data

    def write_cache(self, data: bytes) -> None:
        """Write the cache atomically (no-op without a cache path)."""
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + ".tmp")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, self.cache_file)
        LOGGER.info("INT8 calibration: wrote cache %s (%d bytes, %d batches)", self.cache_file, len(data),
                 self.batches_served)

    def reset(self) -> None:
        """Start over at the next :meth:`next_batch`."""
        self._finish()
        self._iter = None
        self.batches_served = 0


def make_calibrator(trt: Any, batcher: CalibrationBatcher, method: str = "entropy") -> Any:
    """A TensorRT ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` delegating to ``batcher``.

    TensorRT's Python wrapper catches any exception raised in ``get_batch`` or the cache callbacks, prints it
    and carries on as if the data had ended, which would give a silently partial calibration and a cache
    that later builds reuse. So every callback here stores the first exception in ``calibrator.error`` and
    returns ``None`` (no more batches, no cache); :func:`build_engine` re-raises it after the build and
    deletes the partial cache. Nothing is written to the cache once an error was stored.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method: expected one of {sorted(CALIBRATION_METHODS)}, got {method!r}")
    base = getattr(trt, CALIBRATION_METHODS[method], None)
    if base is None:
        raise BackendUnavailableError(f"TensorRT {trt.__version__} has no {CALIBRATION_METHODS[method]}")
    from edge_detect.backends._cuda import DeviceBuffer

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.batcher = batcher
            self.device: Optional[DeviceBuffer] = None
            self.error: Optional[BaseException] = None
            self.cache_written = False

        def _fail(self, exc: BaseException) -> None:
            if self.error is None:
                self.error = exc
                LOGGER.debug("INT8 calibration: stored %s: %s (re-raised after the build)", type(exc).__name__, exc)

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: Sequence[str]) -> Optional[list]:
            if self.error is not None:
                return None
            try:
                batch = batcher.next_batch()
                if batch is None:
                    return None
                if self.device is None:
                    self.device = DeviceBuffer(batch.nbytes)
                self.device.upload(batch)
                return [self.device.ptr]
            except BaseException as exc:  # noqa: BLE001 - TensorRT would swallow it; stored and re-raised
                self._fail(exc)
                return None

        def read_calibration_cache(self) -> Optional[bytes]:
            if self.error is not None:
                return None
            try:
                return batcher.read_cache()
            except BaseException as exc:  # noqa: BLE001 - see get_batch
                self._fail(exc)
                return None

        def write_calibration_cache(self, cache: Any) -> None:
            if self.error is not None:
                return
            try:
                batcher.write_cache(bytes(memoryview(cache)))
                self.cache_written = True
            except BaseException as exc:  # noqa: BLE001 - see get_batch
                self._fail(exc)

        def close(self) -> None:
            if self.device is not None:
                self.device.close()
                self.device = None

    return _Calibrator()


# ------------------------------------------------------------------------------------------------ progress
class PhaseBars:
    """tqdm bars for TensorRT's nested build phases (the TensorRT-free half of the progress monitor)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: Dict[str, Any] = {}
        self.parents: Dict[str, Optional[str]] = {}
        self.cancelled = False

    def start(self, phase: str, parent: Optional[str], steps: int) -> None:
        self.parents[phase] = parent
        depth, p = 0, parent
        while p is not None:
            depth, p = depth + 1, self.parents.get(p)
        if self.enabled:
            tqdm = require("tqdm", "build").tqdm
            self.bars[phase] = tqdm(total=int(steps), desc=phase, position=depth, leave=depth == 0, unit="step")
        TRT_LOGGER.debug("phase start: %s (parent %s, %d steps)", phase, parent, steps)

    def step(self, phase: str, step: int) -> bool:
        bar = self.bars.get(phase)
        if bar is not None:
            bar.n = int(step) + 1
            bar.refresh()
        return not self.cancelled

    def finish(self, phase: str) -> None:
        bar = self.bars.pop(phase, None)
        if bar is not None:
            bar.close()
        self.parents.pop(phase, None)


def make_progress_monitor(trt: Any, bars: PhaseBars) -> Optional[Any]:
    """A ``trt.IProgressMonitor`` driving ``bars`` (TensorRT >= 10.0), else ``None``."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            bars.start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return bars.step(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            bars.finish(phase_name)

    return _Monitor()


# ------------------------------------------------------------------------------------------------ build
def _network_flags(trt: Any, strongly_typed: bool) -> int:
    flags = 0
    kinds = trt.NetworkDefinitionCreationFlag
    if _version(trt.__version__)[0] < 10 and hasattr(kinds, "EXPLICIT_BATCH"):
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if strongly_typed and hasattr(kinds, "STRONGLY_TYPED"):
        flags |= 1 << int(kinds.STRONGLY_TYPED)
    return flags


def _parse(trt: Any, network: Any, logger: Any, onnx: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "unknown error"
        raise ModelLoadError(f"TensorRT could not parse {onnx.name}: {first} ({len(errors)} error(s); "
                             "run with -vv for the TensorRT log)")
    return parser


def _calibration_batcher(info: OnnxInfo, profile: Optional[ShapeProfile], calibrator: Any, calib: Any,
                         cache: Optional[PathLike], num_images: int, progress: bool) -> CalibrationBatcher:
    shape = profile.opt if profile is not None else info.input.shape
    if isinstance(calibrator, CalibrationBatcher):
        return calibrator
    source: BatchSource = calibrator
    total = None
    if calibrator is None and calib is not None:
        from edge_detect.deploy.calibration import CalibrationData

        meta = info.metadata
        hw = (shape[2], shape[3]) if meta.input_format == "float32_nchw_rgb" else (shape[1], shape[2])
        data = CalibrationData(calib, input_hw=hw, num_images=num_images, batch_size=shape[0],
                               stride=meta.stride, fmt=meta.input_format, progress=False)
        source, total = data.batches, len(data)
    elif calibrator is not None and hasattr(calibrator, "__len__"):
        total = len(calibrator)
    return CalibrationBatcher(source, cache, shape, info.input.dtype, total=total, progress=progress)


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(data))
    os.replace(tmp, path)


def _persistent_source(onnx: Path, engine: Path) -> Path:
    """The ONNX path to record for rebuilds: a temporary ONNX (e.g. the CLI's intermediate) is kept as
    ``<engine>.onnx`` beside the engine, so that ``--rebuild-on-mismatch`` still finds it later."""
    tmp = Path(tempfile.gettempdir()).resolve()
    src, dst = onnx.resolve(), engine.resolve()
    if tmp in src.parents and tmp not in dst.parents:
        keep = dst.with_name(dst.name + ".onnx")
        shutil.copyfile(src, keep)
        LOGGER.info("kept the source ONNX as %s (for rebuilds)", keep)
        return keep
    return src


def _engine_metadata(info: OnnxInfo, plan: BuildPlan, profile: Optional[ShapeProfile], trt_version: str,
                     calibration: Dict[str, Any], source: Path) -> ModelMetadata:
    meta = info.metadata
    quant = dict(meta.quantization)
    if plan.calibration:
        quant.update({"calibration": plan.calibration, **calibration})
    batch = profile.max[0] if profile is not None else max(info.input.shape[0], 1)
    return meta.replace(precision=plan.precision, source_sha256=sha256_file(source), source_path=str(source),
                        batch=int(batch), dynamic=info.dynamic,
                        versions={**dict(meta.versions), "tensorrt": trt_version, "edge_detect": __version__},
                        quantization=quant)


def _use_timing_cache(config: Any, path: Path) -> None:
    """Load the timing cache at ``path`` into ``config`` (a fresh one when absent or not usable here).

    ``set_timing_cache`` returns ``False`` for a cache from another TensorRT version or GPU
    (``ignore_mismatch=False``): it is then replaced by an empty cache, overwritten after the build.

    Raises:
        ModelError: TensorRT refused even an empty timing cache.
    """
    data = path.read_bytes() if path.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False):
        return
    LOGGER.warning("timing cache %s was made by another TensorRT version or GPU: starting a new one", path)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise ModelError(f"TensorRT refused an empty timing cache for {path.name} (see the TensorRT log)")


def build_engine(onnx: PathLike, output: PathLike, fp16: bool = False, int8: bool = False,
                 workspace_gb: float = 4, dynamic: Any = None, dla: Optional[int] = None,
                 timing_cache: Optional[PathLike] = None, calibrator: Any = None, progress: bool = True,
                 calib: Optional[PathLike] = None, calibration_cache: Optional[PathLike] = None,
                 calibration_method: str = "entropy", calib_images: int = 500, device: int = 0,
                 version_compatible: bool = False, hardware_compatible: bool = False) -> Path:
    """Build a TensorRT engine from an edge-detect ONNX and write it with its metadata sidecar.

    Args:
        onnx: ONNX from ``export_onnx`` (raw or nms layout, float or uint8 input, FP32/FP16/Q-DQ INT8).
        output: engine path (``.engine``); the metadata goes to ``<output>.json``.
        fp16: allow FP16 kernels (TensorRT <= 10) / require an FP16 ONNX (TensorRT 11).
        int8: INT8: explicit when the ONNX has Q/DQ nodes, else implicit calibration (TensorRT <= 10).
        workspace_gb: builder workspace memory pool limit, GiB.
        dynamic: optimization profile ``{"min", "opt", "max"}`` shapes for a dynamic ONNX (see
            :func:`plan_profile`).
        dla: DLA core to build for (Jetson), with GPU fallback for layers DLA cannot run.
        timing_cache: timing cache file, loaded when present and saved after the build.
        calibrator: implicit INT8 batches: a :class:`CalibrationBatcher`, an iterable of batches or a
            callable returning an iterator of them (shape = the profile's opt shape).
        calib: implicit INT8 data source (image folder, dataset yaml, video) when no ``calibrator``.
        calibration_cache: calibration cache path (default ``<output>.calib``); reused when present.
        calibration_method: ``"entropy"`` (IInt8EntropyCalibrator2) or ``"minmax"`` (IInt8MinMaxCalibrator).
        calib_images: number of calibration images taken from ``calib``.
        device: CUDA device to build on.
        version_compatible / hardware_compatible: TensorRT's forward-compatible / Ampere+ engines.
        progress: tqdm bars for the build phases (TensorRT >= 10) and calibration.

    Returns:
        ``output``.

    Raises:
        MissingDependencyError: TensorRT or cuda-python missing. ModelLoadError: the ONNX cannot be read or
        parsed. ConfigError / BackendUnavailableError: see :func:`plan_build`. ModelError: the build failed.
    """
    trt = import_tensorrt()
    from edge_detect.backends._cuda import device_info, set_device

    info = inspect_onnx(onnx)
    out = Path(output)
    cache_path = Path(calibration_cache) if calibration_cache else out.with_name(out.name + ".calib")
    can_calibrate = calibrator is not None or calib is not None or cache_path.is_file()
    plan = plan_build(trt.__version__, fp16, int8, info.has_qdq, info.fp16, can_calibrate, dla, version_compatible)
    profile = plan_profile(info, dynamic)
    set_device(device)
    gpu, cc = device_info(device)
    check_nms_support(trt.__version__, info, cc)
    LOGGER.info("building %s from %s: TensorRT %s on %s (sm %s), precision %s, flags %s%s", out.name,
             info.path.name, trt.__version__, gpu, cc, plan.precision, ",".join(plan.flags) or "none",
             ", strongly typed" if plan.strongly_typed else "")

    logger = init_plugins(trt)  # the process-lifetime logger, plugins registered before parsing
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan.strongly_typed))
    parser = _parse(trt, network, logger, info.path)  # noqa: F841  (must outlive the build)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(float(workspace_gb) * (1 << 30)))
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if "FP16" in plan.flags and not plan.strongly_typed:
        pinned = keep_fp32(trt, nms_layers(network))
        if pinned:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            LOGGER.info("FP16 build: %d NMS layers kept in FP32 (class offsets exceed FP16's range)", pinned)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if dla is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla)
    trt_profile = None
    if profile is not None:
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(info.input.name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(trt_profile)

    calibration: Dict[str, Any] = {}
    calibrator_obj = None
    if plan.calibration == "implicit":
        batcher = _calibration_batcher(info, profile, calibrator, calib, cache_path, calib_images, progress)
        calibrator_obj = make_calibrator(trt, batcher, calibration_method)
        config.int8_calibrator = calibrator_obj
        if trt_profile is not None:
            config.set_calibration_profile(trt_profile)
        calibration = {"method": calibration_method, "cache": str(cache_path)}
    if timing_cache is not None:
        _use_timing_cache(config, Path(timing_cache))
    bars = PhaseBars(enabled=progress)
    monitor = make_progress_monitor(trt, bars) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor

    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator_obj is not None:
            calibrator_obj.close()
            calibration["batches"] = calibrator_obj.batcher.batches_served
            calibration["cache_hit"] = calibrator_obj.batcher.cache_hit
    if calibrator_obj is not None and calibrator_obj.error is not None:
        if calibrator_obj.cache_written or (not calibrator_obj.batcher.cache_hit and cache_path.is_file()
                                            and calibrator_obj.batcher.batches_served):
            cache_path.unlink(missing_ok=True)
            LOGGER.warning("INT8 calibration failed after %d batches: deleted the partial cache %s",
                        calibrator_obj.batcher.batches_served, cache_path)
        raise calibrator_obj.error
    if serialized is None:
        raise ModelError(f"TensorRT could not build {out.name} from {info.path.name} (see the TensorRT log "
                         "above; -vv shows all of it)")
    _write_atomic(out, serialized)
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), config.get_timing_cache().serialize())
    source = _persistent_source(info.path, out)
    meta = _engine_metadata(info, plan, profile, trt.__version__, calibration, source)
    engine_record = EngineInfo(
        tensorrt=trt.__version__, gpu=gpu, compute_capability=cc, input_name=info.input.name,
        input_shape=info.input.shape, input_dtype=info.input.dtype.name,
        build={"fp16": fp16, "int8": int8, "workspace_gb": workspace_gb,
               "dynamic": profile.to_dict() if profile is not None and info.dynamic and dynamic else None,
               "dla": dla, "calibration_cache": str(cache_path) if plan.calibration == "implicit" else None},
        version_compatible=version_compatible, hardware_compatible=hardware_compatible)
    write_engine_metadata(out, meta, engine_record)
    LOGGER.info("wrote %s (%.1f MB) in %.0f s", out, out.stat().st_size / 1e6, time.perf_counter() - t0)
    return out
