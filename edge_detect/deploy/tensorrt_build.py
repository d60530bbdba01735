"""Build TensorRT engines from ONNX: precision, INT8 calibration, optimization profiles, timing cache, metadata.

Importing this module needs neither TensorRT nor CUDA: everything that can be decided without them is
plain Python and unit-tested here — the build plan (:func:`plan_build`: which builder flags, strongly or
weakly typed, explicit or implicit INT8, hardware compatibility, for the TensorRT version and GPU at hand), the
optimization profile (:func:`plan_profile`), the ONNX inspection (:func:`inspect_onnx`), the calibrator's
batching and cache (:class:`CalibrationBatcher`), the in-graph NMS checks (:func:`check_nms_support`,
:func:`default_nms_plugin`) and the progress bars (:class:`PhaseBars`). :func:`build_engine` imports TensorRT
and runs those pieces in named steps. It uses the process-lifetime TensorRT logger and registers TensorRT's
plugins first (:mod:`edge_detect.backends.trt_common`); weakly typed FP16 builds keep every layer of the NMS
section in FP32, the NMS layer itself included (:func:`keep_fp32`); an exception raised while calibrating
(which TensorRT's Python wrapper would swallow) is re-raised after the build and the partial calibration cache
deleted; a timing cache TensorRT refuses (another version or GPU, or not a timing cache at all) is replaced by
a fresh one.

Precision, by TensorRT version:

* TensorRT 8.5 – 10.11: ``fp16`` sets ``BuilderFlag.FP16``. ``int8`` with a Q/DQ ONNX (from
  ``edge-detect export --int8``) is explicit quantization: ``INT8`` + ``FP16`` flags, the scales come from
  the graph. ``int8`` with a plain FP32 ONNX is implicit quantization through an
  ``IInt8EntropyCalibrator2`` (default) or ``IInt8MinMaxCalibrator`` fed with the same preprocessed batches
  as the Q/DQ quantizer (:class:`edge_detect.deploy.calibration.CalibrationData`), with a calibration cache
  that later builds reuse without touching the images.
* TensorRT 10.12 – 10.x: the weak-typing APIs (FP16/INT8 flags, precision constraints, per-layer precision)
  are deprecated: an FP16 ONNX (``export --half``) or a Q/DQ ONNX is built strongly typed (types from the
  graph; with Q/DQ the layers outside the Q/DQ pairs then run in the ONNX's FP32); ``fp16`` on an FP32 ONNX and
  implicit INT8 still build weakly typed, with a deprecation warning.
* TensorRT 11+: networks are always strongly typed (weak-typing flags and calibrators were removed, the
  ``STRONGLY_TYPED`` flag is deprecated and not set): FP16 needs an FP16 ONNX and INT8 a Q/DQ ONNX; anything
  else fails with a one-line explanation. TensorRT 11.0 – 11.4.0 has no DLA on Jetson: ``dla`` is refused.

Hardware-compatible engines (``AMPERE_PLUS``) need TensorRT >= 8.6, an Ampere or later GPU to build on, and
are not supported on JetPack (integrated GPUs): refused there.
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
    "default_nms_plugin",
    "engine_nms_plugin",
    "nms_layers",
    "keep_fp32",
    "CALIBRATION_METHODS",
    "MIN_TENSORRT",
    "INMS_TOP_K",
    "TOPK_MAX_K",
]

LOGGER = logging.getLogger(__name__)
TRT_LOGGER = logging.getLogger("edge_detect.tensorrt")  # TensorRT's own messages (trt_common logger)

CALIBRATION_METHODS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
NMS_PREFIX = "nms/"  # every node/tensor edge_detect.deploy.graph.add_nms appends is named nms/...
# TensorRT's INMSLayer (what the ONNX parser makes of NonMaxSuppression) considers only the K highest-scoring
# candidate boxes per image and drops the rest (NvInfer.h): 2000 on compute capability 5.3 / 6.2, 5000 elsewhere.
INMS_TOP_K = {"5.3": 2000, "6.2": 2000, "default": 5000}
TOPK_MAX_K = 3840  # the largest K TensorRT's TopK layer takes (NvInfer.h ITopKLayer, 8.5 - 11.x)
STRONG_TYPING_FROM = (10, 12)  # weak-typing APIs deprecated from TensorRT 10.12 (NvInfer.h BuilderFlag::kFP16)
EFFICIENT_NMS_DEPRECATED = (10, 12)  # EfficientNMS_TRT deprecated, no replacement planned (plugin README)
NO_DLA = ((11, 0, 0), (11, 4, 1))  # TensorRT 11.0 - 11.4.0: no DLA on JetPack (TensorRT 11 DLA docs)


def _version(version: str) -> Tuple[int, int]:
    major, minor = version_tuple(version, 2)
    return major, minor


# ------------------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class BuildPlan:
    """What to ask the builder for.

    Attributes:
        flags: ``trt.BuilderFlag`` names to set (``"FP16"``, ``"INT8"``, ``"GPU_FALLBACK"``).
        strongly_typed: the network is strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` below
            TensorRT 11, always from 11).
        calibration: ``"explicit"`` (Q/DQ graph), ``"implicit"`` (calibrator), or ``None``.
        precision: the engine's precision for its metadata: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        hardware_level: ``trt.HardwareCompatibilityLevel`` name to set (``"AMPERE_PLUS"``), or ``None``.
        notes: deprecation notes to log (weak typing from 10.12, implicit INT8 from 10.1).
    """

    flags: Tuple[str, ...]
    strongly_typed: bool
    calibration: Optional[str]
    precision: str
    hardware_level: Optional[str] = None
    notes: Tuple[str, ...] = ()


def _check_release(version: str, version_compatible: bool, hardware_compatible: bool, integrated: bool,
                   compute_capability: Optional[str], dla: Optional[int]) -> None:
    """Refuse what this TensorRT release or GPU cannot build (see :func:`plan_build`)."""
    v = version_tuple(version, 3)
    if v[:2] < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: expected >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} "
            "(named-tensor API; JetPack 5.1+ ships 8.5)")
    if version_compatible and v[:2] < MIN_VERSION_COMPATIBLE:
        raise BackendUnavailableError(
            f"version-compatible engines: expected TensorRT >= {MIN_VERSION_COMPATIBLE[0]}."
            f"{MIN_VERSION_COMPATIBLE[1]}, got {version}")
    if hardware_compatible:
        if v[:2] < (8, 6):
            raise BackendUnavailableError(f"hardware-compatible engines: expected TensorRT >= 8.6, got {version} "
                                          "(it has no hardware compatibility level)")
        if integrated:
            raise BackendUnavailableError("hardware-compatible engines: not supported on JetPack (integrated GPU); "
                                          "build a plain engine on the device")
        if compute_capability and version_tuple(compute_capability, 1)[0] < 8:
            raise BackendUnavailableError(f"hardware-compatible engines: expected an Ampere or later GPU to build "
                                          f"on (compute capability >= 8.0), got {compute_capability}")
    if dla is not None and NO_DLA[0] <= v < NO_DLA[1]:
        raise BackendUnavailableError(f"dla={dla}: TensorRT {version} has no DLA support on JetPack (DLA is back "
                                      "in 11.4.1 with JetPack 7.2.2); build with JetPack's TensorRT 10.x")


def plan_build(tensorrt_version: str, fp16: bool = False, int8: bool = False, has_qdq: bool = False,
               onnx_fp16: bool = False, can_calibrate: bool = False, dla: Optional[int] = None,
               version_compatible: bool = False, hardware_compatible: bool = False, integrated: bool = False,
               compute_capability: Optional[str] = None) -> BuildPlan:
    """Decide builder flags and typing for a TensorRT version and GPU (see module doc).

    Args:
        tensorrt_version: ``trt.__version__``.
        fp16 / int8: what the user asked for.
        has_qdq: the ONNX holds QuantizeLinear/DequantizeLinear nodes.
        onnx_fp16: the ONNX computes in float16 already.
        can_calibrate: calibration data or a calibration cache is available (implicit INT8).
        dla: DLA core, or ``None`` for the GPU.
        version_compatible: a version-compatible engine is asked for (TensorRT >= 8.6).
        hardware_compatible: an Ampere+ hardware-compatible engine is asked for (TensorRT >= 8.6, not Jetson).
        integrated / compute_capability: the GPU that builds (integrated = Jetson's iGPU).

    Raises:
        BackendUnavailableError: this TensorRT or GPU cannot do what is asked (too old, 11+ without weak typing,
            hardware compatibility on 8.5 / Jetson / pre-Ampere, DLA on 11.0 - 11.4.0).
        ConfigError: the request is contradictory (INT8 without Q/DQ or data; DLA in FP32).
    """
    _check_release(tensorrt_version, version_compatible, hardware_compatible, integrated, compute_capability, dla)
    v = version_tuple(tensorrt_version, 3)
    int8 = int8 or has_qdq
    if dla is not None and not (fp16 or int8 or onnx_fp16):
        raise ConfigError(f"dla={dla}: DLA runs FP16 or INT8 only; add --half or --int8")
    fallback = ("GPU_FALLBACK",) if dla is not None else ()
    precision = "int8" if int8 else ("fp16" if fp16 or onnx_fp16 else "fp32")
    hw = "AMPERE_PLUS" if hardware_compatible else None
    if v[0] >= 11:
        if int8 and not has_qdq:
            raise BackendUnavailableError(
                f"TensorRT {tensorrt_version} has no implicit INT8 calibration: quantize to a Q/DQ ONNX first "
                "(edge-detect export --format onnx --int8 --calib DATA) and build from it")
        if fp16 and not onnx_fp16 and not has_qdq:
            raise BackendUnavailableError(
                f"TensorRT {tensorrt_version} builds strongly typed networks only: FP16 needs an FP16 ONNX "
                "(edge-detect export --format onnx --half), got an FP32 ONNX")
        return BuildPlan(fallback, True, "explicit" if int8 else None, precision, hw)
    if v[:2] >= STRONG_TYPING_FROM and (has_qdq or (onnx_fp16 and not int8)):
        return BuildPlan(fallback, True, "explicit" if int8 else None, precision, hw)
    return _weak_plan(tensorrt_version, fp16 or onnx_fp16, int8, has_qdq, can_calibrate, fallback, precision, hw)


def _weak_plan(version: str, fp16: bool, int8: bool, has_qdq: bool, can_calibrate: bool, fallback: Tuple[str, ...],
               precision: str, hw: Optional[str]) -> BuildPlan:
    """The weakly typed plan (builder precision flags) of TensorRT 8.5 - 10.x."""
    v = version_tuple(version, 2)
    if int8 and has_qdq:
        return BuildPlan(("INT8", "FP16") + fallback, False, "explicit", "int8", hw)
    if int8:
        if not can_calibrate:
            raise ConfigError("INT8 needs a Q/DQ ONNX (edge-detect export --int8 --calib DATA) or calibration "
                              "data for TensorRT's calibrator (--calib DATA, or an existing calibration cache)")
        notes = (f"implicit INT8 calibration is deprecated since TensorRT 10.1 (got {version}): quantize to a Q/DQ "
                 "ONNX (edge-detect export --int8) instead",) if v >= (10, 1) else ()
        return BuildPlan(("INT8", "FP16") + fallback, False, "implicit", "int8", hw, notes)
    notes = (f"FP16 through BuilderFlag.FP16 (weak typing) is deprecated since TensorRT 10.12 (got {version}): "
             "export an FP16 ONNX (edge-detect export --half) for a strongly typed build",) \
        if fp16 and v >= STRONG_TYPING_FROM else ()
    return BuildPlan(("FP16",) + fallback if fp16 else fallback, False, None, precision, hw, notes)


def engine_nms_plugin() -> str:
    """:func:`default_nms_plugin` for the TensorRT importable here (``"efficient"`` when there is none)."""
    from edge_detect.backends.trt_common import tensorrt_available

    return default_nms_plugin(import_tensorrt().__version__ if tensorrt_available() else None)


def default_nms_plugin(tensorrt_version: Optional[str]) -> str:
    """The in-graph NMS to export for engines of ``tensorrt_version``: ``"inms"`` (ONNX NonMaxSuppression ->
    INMSLayer) from TensorRT 10.12, where EfficientNMS_TRT is deprecated; ``"efficient"`` before (and when the
    version is unknown, ``None``)."""
    if tensorrt_version is None:
        return "efficient"
    return "inms" if _version(tensorrt_version) >= EFFICIENT_NMS_DEPRECATED else "efficient"


@dataclass(frozen=True)
class OnnxInfo:
    """The facts about an ONNX file that the build needs.

    ``nms_top_k``: the boxes per image the ``"onnx"`` / ``"inms"`` graph keeps before NMS (its metadata's
    ``nms.top_k``; ``None`` when it keeps them all, e.g. graphs exported before that step existed).
    """

    path: Path
    input: TensorSpec
    has_qdq: bool
    fp16: bool
    metadata: ModelMetadata
    outputs: Tuple[str, ...] = ()
    nms_op: Optional[str] = None
    nms_agnostic: bool = False
    nms_max_det: Optional[int] = None
    nms_top_k: Optional[int] = None

    @property
    def dynamic(self) -> bool:
        return self.input.dynamic


def _nms_facts(onnx: Any, model: Any, meta: ModelMetadata) -> Tuple[Optional[str], bool, Optional[int], Optional[int]]:
    """``(op, agnostic, max_det, top_k)`` of the in-graph NMS of ``model`` (all empty without one)."""
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
    top_k = meta.nms.get("top_k") if nms_op == "NonMaxSuppression" else None
    return nms_op, agnostic, max_det, int(top_k) if top_k is not None else None


def inspect_onnx(path: PathLike) -> OnnxInfo:
    """Read the input tensor, Q/DQ presence, float16-ness, in-graph NMS and edge-detect metadata of an ONNX model.

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
    return OnnxInfo(p, TensorSpec(inputs[0].name, shape, dtype, True), bool(ops & _QDQ_OPS), bool(fp16), meta,
                    tuple(o.name for o in model.graph.output), *_nms_facts(onnx, model, meta))


def check_nms_support(tensorrt_version: str, info: OnnxInfo, compute_capability: str) -> None:
    """Refuse in-graph NMS that this TensorRT would build wrongly or not at all; warn about what it would drop.

    * ``EfficientNMS_TRT`` with ``class_agnostic`` needs TensorRT >= 8.6: the 8.5 plugin has no such field and
      the parser drops unknown attributes, so the NMS would silently be class-aware. From TensorRT 10.12 the
      plugin is deprecated (warning: re-export with the ``"inms"`` plugin).
    * ONNX ``NonMaxSuppression`` becomes TensorRT's ``INMSLayer`` (TensorRT >= 8.5), which considers only the
      5000 (2000 on compute capability 5.3 / 6.2, :data:`INMS_TOP_K`) highest-scoring candidate boxes per image
      and silently drops the others. ``max_det`` is not limited by it. The graph's pre-NMS ``top_k`` must fit
      that limit and TensorRT's TopK layer (K <= :data:`TOPK_MAX_K`); a graph without one gets a warning.

    Raises:
        ConfigError: agnostic EfficientNMS below 8.6, or a pre-NMS ``top_k`` above what this TensorRT / GPU takes.
    """
    version = _version(tensorrt_version)
    name = info.path.name
    if info.nms_op == "EfficientNMS_TRT":
        if info.nms_agnostic and version < (8, 6):
            raise ConfigError(
                f"{name}: class-agnostic EfficientNMS_TRT needs TensorRT >= 8.6, got {tensorrt_version} "
                "(its plugin has no class_agnostic field and would run class-aware NMS); export without --agnostic, "
                "or with --nms-plugin inms")
        if version >= EFFICIENT_NMS_DEPRECATED:
            LOGGER.warning("%s: EfficientNMS_TRT is deprecated since TensorRT 10.12 (no replacement planned; got %s): "
                        "re-export with --nms-plugin inms", name, tensorrt_version)
    if info.nms_op != "NonMaxSuppression":
        return
    cap = INMS_TOP_K.get(compute_capability, INMS_TOP_K["default"])
    if info.nms_top_k is None:
        LOGGER.warning("%s: no pre-NMS top-K in the graph: TensorRT's NMS layer considers only the %d best candidate "
                    "boxes per image on compute capability %s and drops the rest (a low conf such as 0.001 can pass "
                    "more); re-export it (add_nms keeps the top %d)", name, cap, compute_capability, TOPK_MAX_K)
    elif info.nms_top_k > min(cap, TOPK_MAX_K):
        raise ConfigError(
            f"{name}: nms top_k: expected <= {min(cap, TOPK_MAX_K)} (TensorRT's TopK layer takes K <= {TOPK_MAX_K}, "
            f"its NMS layer keeps {cap} candidates on compute capability {compute_capability}), got "
            f"{info.nms_top_k}; re-export with add_nms(top_k=...)")


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
    """Run ``layers`` in FP32: every layer with a float input or output gets ``layer.precision = float32``, and
    its float outputs ``set_output_type(j, float32)``.

    Used for the NMS section of weakly typed FP16 builds: its class offsets (``class x 7680`` px, up to ~600k for
    80 classes) overflow FP16's 65,504. The NMS layer itself outputs int32 indices but consumes those boxes
    (NvInfer.h: boxes "of type kFLOAT or kHALF"), so a float *input* is enough to pin a layer. The builder
    config needs ``PREFER_PRECISION_CONSTRAINTS``.

    Returns:
        the number of layers pinned.
    """
    floats = {trt.float32, trt.float16}
    pinned = 0
    for layer in layers:
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outs and not any(t is not None and t.dtype in floats for t in ins):
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
            from edge_detect.progress import progress

            self._bar = progress(total=self.total, desc="INT8 calibration", unit="batch")
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
            from edge_detect.progress import progress

            self.bars[phase] = progress(total=int(steps), desc=phase, position=depth, leave=depth == 0, unit="step")
        TRT_LOGGER.debug("phase start: %s (parent %s, %d steps)", phase, parent, steps)

    def step(self, phase: str, step: int) -> bool:
        bar = self.bars.get(phase)
        if bar is not None:
            bar.update(int(step) + 1 - bar.n)  # a tqdm bar, or log lines when stderr is not a terminal
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
    """``create_network`` flags: ``EXPLICIT_BATCH`` below TensorRT 10 (the ONNX parser needs it; deprecated in 10),
    ``STRONGLY_TYPED`` for strongly typed plans below 11 (from 11 always on and the flag deprecated)."""
    flags = 0
    kinds = trt.NetworkDefinitionCreationFlag
    major = _version(trt.__version__)[0]
    if major < 10 and hasattr(kinds, "EXPLICIT_BATCH"):
        flags |= 1 << int(kinds.EXPLICIT_BATCH)
    if strongly_typed and major < 11 and hasattr(kinds, "STRONGLY_TYPED"):
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

    A cache TensorRT cannot read at all makes ``create_timing_cache`` return ``None`` (the C++ API's nullptr,
    which ``set_timing_cache`` would not accept); one from another TensorRT version or GPU makes
    ``set_timing_cache`` return ``False`` (``ignore_mismatch=False``). Both are replaced by an empty cache,
    overwritten after the build, as Polygraphy and trtexec do.

    Raises:
        ModelError: TensorRT refused even an empty timing cache.
    """
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    why = "is not a timing cache TensorRT can read" if cache is None else \
        "was made by another TensorRT version or GPU"
    LOGGER.warning("timing cache %s %s: starting a new one", path, why)
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise ModelError(f"TensorRT refused an empty timing cache for {path.name} (see the TensorRT log)")


@dataclass
class _Job:
    """One engine build: the ONNX, the output, the plan, the GPU and the options to record for rebuilds."""

    trt: Any
    info: OnnxInfo
    out: Path
    plan: BuildPlan
    profile: Optional[ShapeProfile]
    gpu: Any  # edge_detect.backends._cuda.DeviceProps
    cache_path: Path
    options: Dict[str, Any]


def _plan_job(trt: Any, onnx: PathLike, output: PathLike, options: Dict[str, Any], can_calibrate: bool,
              device: int) -> _Job:
    """Step 1: inspect the ONNX and the GPU, plan flags / typing / profile, check the in-graph NMS."""
    from edge_detect.backends._cuda import device_props, set_device

    info = inspect_onnx(onnx)
    out = Path(output)
    cache = options["calibration_cache"]
    cache_path = Path(cache) if cache else out.with_name(out.name + ".calib")
    set_device(device)
    gpu = device_props(device)
    plan = plan_build(trt.__version__, options["fp16"], options["int8"], info.has_qdq, info.fp16,
                      can_calibrate or cache_path.is_file(), options["dla"], options["version_compatible"],
                      options["hardware_compatible"], gpu.integrated, gpu.compute_capability)
    for note in plan.notes:
        LOGGER.warning("%s", note)
    profile = plan_profile(info, options["dynamic"])
    check_nms_support(trt.__version__, info, gpu.compute_capability)
    LOGGER.info("building %s from %s: TensorRT %s on %s (sm %s), precision %s, flags %s%s", out.name,
             info.path.name, trt.__version__, gpu.name, gpu.compute_capability, plan.precision,
             ",".join(plan.flags) or "none", ", strongly typed" if plan.strongly_typed else "")
    return _Job(trt, info, out, plan, profile, gpu, cache_path, options)


def _make_network(job: _Job, logger: Any) -> Tuple[Any, Any, Any]:
    """Step 2: builder, network (flags of the plan) and the parsed ONNX; the parser must outlive the build."""
    trt, dla = job.trt, job.options["dla"]
    builder = trt.Builder(logger)
    if dla is not None and not 0 <= int(dla) < builder.num_DLA_cores:
        raise ConfigError(f"dla={dla}: expected a DLA core of this device (it has {builder.num_DLA_cores}; "
                          "Orin AGX / Xavier have 2, Orin Nano none)")
    network = builder.create_network(_network_flags(trt, job.plan.strongly_typed))
    parser = _parse(trt, network, logger, job.info.path)
    return builder, network, parser


def _add_profile(job: _Job, builder: Any, config: Any) -> Optional[Any]:
    """The optimization profile of a dynamic input, added to ``config`` (``None`` for a static input).

    Raises:
        ConfigError: TensorRT refused the profile (``add_optimization_profile`` returned -1).
    """
    if job.profile is None:
        return None
    p, name = job.profile, job.info.input.name
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(name, p.min, p.opt, p.max)
    if config.add_optimization_profile(trt_profile) < 0:
        raise ConfigError(f"dynamic shapes: TensorRT refused the optimization profile of '{name}' (min {p.min}, "
                          f"opt {p.opt}, max {p.max}); see the TensorRT log")
    return trt_profile


def _configure(job: _Job, builder: Any, network: Any) -> Tuple[Any, Optional[Any]]:
    """Step 3: builder config: workspace, precision flags (and FP32 NMS on weak FP16), compatibility, DLA,
    optimization profile. Returns ``(config, optimization profile or None)``."""
    trt, plan, options = job.trt, job.plan, job.options
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(float(options["workspace_gb"]) * (1 << 30)))
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if "FP16" in plan.flags and not plan.strongly_typed:
        pinned = keep_fp32(trt, nms_layers(network))
        if pinned:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            LOGGER.info("FP16 build: %d NMS layers kept in FP32 (class offsets exceed FP16's range)", pinned)
    if options["version_compatible"]:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if plan.hardware_level:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_level)
    if options["dla"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options["dla"])
    return config, _add_profile(job, builder, config)


def _attach_calibrator(job: _Job, config: Any, trt_profile: Optional[Any], calibrator: Any, calib: Any,
                       calib_images: int, progress: bool) -> Optional[Any]:
    """Step 4 (implicit INT8 only): the calibrator, set on ``config``; ``None`` otherwise."""
    if job.plan.calibration != "implicit":
        return None
    batcher = _calibration_batcher(job.info, job.profile, calibrator, calib, job.cache_path, calib_images, progress)
    calibrator_obj = make_calibrator(job.trt, batcher, job.options["calibration_method"])
    config.int8_calibrator = calibrator_obj
    if trt_profile is not None:
        config.set_calibration_profile(trt_profile)
    return calibrator_obj


def _run_build(job: _Job, builder: Any, network: Any, config: Any, calibrator_obj: Optional[Any],
               calibration: Dict[str, Any]) -> Any:
    """Step 5: ``build_serialized_network``; a stored calibrator exception is re-raised (partial cache deleted).

    Raises:
        ModelError: TensorRT could not build the engine.
    """
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator_obj is not None:
            calibrator_obj.close()
            calibration["batches"] = calibrator_obj.batcher.batches_served
            calibration["cache_hit"] = calibrator_obj.batcher.cache_hit
    if calibrator_obj is not None and calibrator_obj.error is not None:
        batcher, cache_path = calibrator_obj.batcher, job.cache_path
        if calibrator_obj.cache_written or (not batcher.cache_hit and cache_path.is_file()
                                            and batcher.batches_served):
            cache_path.unlink(missing_ok=True)
            LOGGER.warning("INT8 calibration failed after %d batches: deleted the partial cache %s",
                        batcher.batches_served, cache_path)
        raise calibrator_obj.error
    if serialized is None:
        raise ModelError(f"TensorRT could not build {job.out.name} from {job.info.path.name} (see the TensorRT log "
                         "above; -vv shows all of it)")
    return serialized


def _save(job: _Job, serialized: Any, calibration: Dict[str, Any]) -> None:
    """Step 6: the engine file and its metadata sidecar (TensorRT, GPU, input, build options)."""
    _write_atomic(job.out, serialized)
    info, plan, options = job.info, job.plan, job.options
    source = _persistent_source(info.path, job.out)
    meta = _engine_metadata(info, plan, job.profile, job.trt.__version__, calibration, source)
    implicit = plan.calibration == "implicit"
    build = {"fp16": options["fp16"], "int8": options["int8"], "workspace_gb": options["workspace_gb"],
             "dynamic": job.profile.to_dict() if job.profile is not None and info.dynamic and options["dynamic"]
             else None, "dla": options["dla"], "calibration_cache": str(job.cache_path) if implicit else None,
             "calibration_method": options["calibration_method"] if implicit else None}
    record = EngineInfo(tensorrt=job.trt.__version__, gpu=job.gpu.name, compute_capability=job.gpu.compute_capability,
                        input_name=info.input.name, input_shape=info.input.shape, input_dtype=info.input.dtype.name,
                        build=build, version_compatible=options["version_compatible"],
                        hardware_compatible=bool(plan.hardware_level))
    write_engine_metadata(job.out, meta, record)


def build_engine(onnx: PathLike, output: PathLike, fp16: bool = False, int8: bool = False,
                 workspace_gb: float = 4, dynamic: Any = None, dla: Optional[int] = None,
                 timing_cache: Optional[PathLike] = None, calibrator: Any = None, progress: bool = True,
                 calib: Optional[PathLike] = None, calibration_cache: Optional[PathLike] = None,
                 calibration_method: Optional[str] = "entropy", calib_images: int = 500, device: int = 0,
                 version_compatible: bool = False, hardware_compatible: bool = False) -> Path:
    """Build a TensorRT engine from an edge-detect ONNX and write it with its metadata sidecar.

    Args:
        onnx: ONNX from ``export_onnx`` (raw or nms layout, float or uint8 input, FP32/FP16/Q-DQ INT8).
        output: engine path (``.engine``); the metadata goes to ``<output>.json``.
        fp16: allow FP16 kernels (weak typing, TensorRT <= 10) / an FP16 ONNX is built strongly typed (10.12+).
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
        calibration_method: ``"entropy"`` (IInt8EntropyCalibrator2, also for ``None``) or ``"minmax"``
            (IInt8MinMaxCalibrator); recorded, so a rebuild uses the same one.
        calib_images: number of calibration images taken from ``calib``.
        device: CUDA device to build on.
        version_compatible / hardware_compatible: TensorRT's forward-compatible / Ampere+ engines.
        progress: tqdm bars for the build phases (TensorRT >= 10) and calibration.

    Returns:
        ``output``.

    Raises:
        MissingDependencyError: TensorRT or cuda-python missing. ModelLoadError: the ONNX cannot be read or
        parsed. ConfigError / BackendUnavailableError: see :func:`plan_build`; a DLA core the device lacks; a
        refused optimization profile. ModelError: the build failed.
    """
    trt = import_tensorrt()
    options = {"fp16": fp16, "int8": int8, "workspace_gb": workspace_gb, "dynamic": dynamic, "dla": dla,
               "calibration_cache": calibration_cache, "calibration_method": calibration_method or "entropy",
               "version_compatible": version_compatible, "hardware_compatible": hardware_compatible}
    job = _plan_job(trt, onnx, output, options, calibrator is not None or calib is not None, device)
    logger = init_plugins(trt)  # the process-lifetime logger, plugins registered before parsing
    builder, network, parser = _make_network(job, logger)  # noqa: F841  (the parser must outlive the build)
    config, trt_profile = _configure(job, builder, network)
    calibrator_obj = _attach_calibrator(job, config, trt_profile, calibrator, calib, calib_images, progress)
    calibration: Dict[str, Any] = {}
    if calibrator_obj is not None:
        calibration = {"method": options["calibration_method"], "cache": str(job.cache_path)}
    if timing_cache is not None:
        _use_timing_cache(config, Path(timing_cache))
    monitor = make_progress_monitor(trt, PhaseBars(enabled=progress)) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    t0 = time.perf_counter()
    serialized = _run_build(job, builder, network, config, calibrator_obj, calibration)
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), config.get_timing_cache().serialize())
    _save(job, serialized, calibration)
    LOGGER.info("wrote %s (%.1f MB) in %.0f s", job.out, job.out.stat().st_size / 1e6, time.perf_counter() - t0)
    return job.out
