"""Q/DQ INT8 ONNX that keeps its accuracy: streaming calibration, per-block sensitivity, ONNX Runtime quantizer.

Pipeline of :func:`quantize_int8`:

1. **Streaming statistics.** The FP32 model is augmented to also output every float activation that the
   quantizer may need; calibration batches (:class:`~edge_detect.deploy.calibration.CalibrationData`, preprocessed
   exactly like at run time) run one at a time, and each activation updates a :class:`StreamingHistogram`
   (exact min/max plus a fixed-size histogram of ``|x|`` whose range doubles by merging bin pairs when a larger
   value arrives). Memory is bounded by one batch of activations plus ``num_bins`` counters per tensor,
   whatever the number of images; ONNX Runtime's own histogram calibrators keep every activation instead.
2. **Ranges.** ``minmax`` (``max |x|``), ``percentile`` (the given percentile of ``|x|``, within one histogram
   bin) or ``entropy`` (the clipping threshold minimising the KL divergence between the ``|x|`` distribution and
   its 128-level quantization) give one symmetric range per tensor, handed to ONNX Runtime through its public
   calibration-cache API (:class:`onnxruntime.quantization.TensorsData` + ``save_tensors_data`` +
   ``quantize_static(calibration_cache_path=...)``).
3. **Quantization.** ``onnxruntime.quantization.quantize_static`` writes Q/DQ (``QuantFormat.QDQ``) with signed
   INT8 activations and weights, symmetric (``ActivationSymmetric``/``WeightSymmetric``), per-channel weights:
   the explicit-quantization form TensorRT consumes.
4. **Sensitivity.** The YOLOv5 Detect head (the last convolutions, found from the graph topology, and the box
   decoding after them) always stays in float. On a hold-out subset disjoint from the calibration images, the
   model with everything else quantized is the baseline; for each block (``model.N`` from node names such as
   ``/model.9/cv1/conv/Conv``, or each Conv when names carry no index) the block is put back in float and the
   output error is measured again; the error it removes is what quantizing that block costs. Blocks that
   dominate the error (each at least ``min_share`` of it, 25 % by default) are kept in float automatically
   (see :func:`select_float_blocks`); every block's cost is reported. The error is :func:`output_error`, an
   output-level distance between the FP32 and INT8 decoded predictions (FP32-score-weighted score error plus
   ``1 - IoU``), cheap and tracking large accuracy losses (entropy 0.17 -> mAP 0.287, all-operators Q/DQ
   0.12 -> 0.329, Conv-input Q/DQ 0.085 -> 0.341 on coco128 val2017). Differences below ~0.01 of it are
   below the noise of mAP on a 128-image set, which is why only dominant blocks are kept by default.

   With the default ``scheme="conv"`` (Q/DQ on Conv inputs and weights only, TensorRT's placement) no block of
   yolov5n dominates and only the Detect head stays in float; with ``scheme="all"`` (every operator ONNX
   Runtime can quantize, outputs included) the error is larger and the analysis has more to keep.
5. **Report and metadata.** A JSON report (per-block cost, what was kept and why, timings, FP32 vs INT8 speed on
   this machine) is saved next to the output and logged; the output's ``ModelMetadata`` gets
   ``precision="int8"`` and ``quantization={...}`` (method, images, excluded nodes, mAP when measured).

Modules: :mod:`.statistics` (streaming histograms, ranges), :mod:`.analysis` (graph: Detect head, blocks,
exclusions, tensors to calibrate), :mod:`.qdq` (ONNX Runtime quantizer), :mod:`.sensitivity` (output error,
probes, block selection), :mod:`.report` (the JSON report); this package's :func:`quantize_int8` runs them in
order.

Only the build side imports this package (it needs ``onnx`` and ``onnxruntime``; never torch).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edge_detect._optional import require
from edge_detect.deploy.quantize.analysis import (calibration_tensors, find_detect_head, group_blocks, input_hw,
                                                  load_model, resolve_exclude, session, static_batch)
from edge_detect.deploy.quantize.qdq import SCHEMES, quantize_qdq, write_ranges_cache
from edge_detect.deploy.quantize.report import (compare_speed, log_report, measure_map, peak_rss_mb,
                                                report_path_for, rss_mb, write_report)
from edge_detect.deploy.quantize.sensitivity import (Probe, candidate_blocks, output_error, run_all,
                                                     run_sensitivity, select_float_blocks)
from edge_detect.deploy.quantize.statistics import METHODS, StreamingHistogram, collect_statistics, compute_ranges
from edge_detect.errors import ConfigError, ModelError
from edge_detect.metadata import ModelMetadata, read_onnx_metadata, write_onnx_metadata
from edge_detect.paths import PathLike

__all__ = [
    "METHODS",
    "SCHEMES",
    "StreamingHistogram",
    "calibration_tensors",
    "collect_statistics",
    "compute_ranges",
    "find_detect_head",
    "group_blocks",
    "resolve_exclude",
    "output_error",
    "select_float_blocks",
    "quantize_qdq",
    "write_ranges_cache",
    "quantize_int8",
    "report_path_for",
]

LOGGER = logging.getLogger(__name__)


def _write_metadata(path: Path, meta: Optional[ModelMetadata], quantization: Dict[str, Any]) -> None:
    onnx = require("onnx", "onnx")
    if meta is None:
        LOGGER.warning("%s: the FP32 model has no edge_detect metadata; the INT8 model gets none either", path)
        return
    model = onnx.load(str(path))
    write_onnx_metadata(model, meta.replace(precision="int8", quantization=quantization))
    onnx.save(model, str(path))


def _calibrate(model: Any, data: Any, tensors: Sequence[str], method: str, percentile: float, num_bins: int,
               threads: Optional[int]) -> Dict[str, Tuple[float, float]]:
    """Streaming statistics of ``tensors`` over the calibration batches, turned into symmetric ranges."""
    LOGGER.info("calibrating %d tensors on %d images from %s (%s)", len(tensors), data.num_images, data.source,
                method)
    stats = collect_statistics(model, data.batches(), tensors, num_bins=num_bins, threads=threads)
    return compute_ranges(stats, method, percentile)


@dataclass
class _Job:
    """One :func:`quantize_int8` call: its arguments, the FP32 graph and what each step adds."""

    fp32_onnx: Path
    output: Path
    method: str
    percentile: float
    per_channel: bool
    scheme: str
    threads: Optional[int]
    progress: bool
    exclude: Sequence[str]
    model: Any = None
    meta: Optional[ModelMetadata] = None
    data: Any = None
    head_convs: List[str] = field(default_factory=list)
    decode: List[str] = field(default_factory=list)
    blocks: Dict[str, List[str]] = field(default_factory=dict)
    forced: List[str] = field(default_factory=list)
    always_float: List[str] = field(default_factory=list)
    kept_blocks: List[str] = field(default_factory=list)
    report: Dict[str, Any] = field(default_factory=dict)


def _check_options(method: str, scheme: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"calibration method: expected one of {METHODS}, got {method!r}")
    if scheme not in SCHEMES:
        raise ConfigError(f"quantization scheme: expected one of {SCHEMES}, got {scheme!r}")


def _load_fp32(job: _Job) -> None:
    """Step 1: the FP32 graph, its metadata (checked: fp32, raw output, float input), Detect head and blocks."""
    job.model = load_model(job.fp32_onnx)
    meta = job.meta = read_onnx_metadata(job.model)
    if meta is not None and (meta.output_layout != "raw" or meta.input_format != "float32_nchw_rgb"
                             or meta.precision != "fp32"):
        raise ModelError(f"{job.fp32_onnx}: expected an fp32 model with raw output and float32_nchw_rgb input, got "
                         f"{meta.precision} / {meta.output_layout} / {meta.input_format} (quantize first, then add "
                         f"NMS or the uint8 input)")
    job.head_convs, job.decode = find_detect_head(job.model)
    job.blocks = group_blocks(job.model, skip=set(job.head_convs) | set(job.decode))
    job.forced = resolve_exclude(job.model, job.exclude, group_blocks(job.model))
    job.always_float = list(dict.fromkeys(job.head_convs + job.decode + job.forced))


def _open_data(job: _Job, calib: Union[PathLike, Any], num_images: int, split: str, holdout: int) -> None:
    """Step 2: the calibration images (and the hold-out ones), preprocessed exactly like at run time."""
    from edge_detect.deploy.calibration import CalibrationData

    if isinstance(calib, CalibrationData):
        job.data = calib
        return
    job.data = CalibrationData(calib, input_hw(job.model, job.meta), num_images=num_images, split=split,
                               batch_size=static_batch(job.model), holdout=holdout,
                               stride=job.meta.stride if job.meta else 32, progress=job.progress)


def _ranges(job: _Job, num_bins: int) -> Dict[str, Tuple[float, float]]:
    """Step 3: streaming statistics -> one symmetric range per tensor; timings and memory into the report."""
    rss0, t0 = rss_mb(), time.perf_counter()
    tensors = calibration_tensors(job.model, skip_nodes=job.decode,
                                  inputs_of=("Conv",) if job.scheme == "conv" else None)
    ranges = _calibrate(job.model, job.data, tensors, job.method, job.percentile, num_bins, job.threads)
    job.report.update(
        fp32_model=str(job.fp32_onnx), output=str(job.output), method=job.method,
        percentile=job.percentile if job.method == "percentile" else None, per_channel=job.per_channel,
        scheme=job.scheme, symmetric=True, format="qdq", calibration=job.data.describe(), tensors=len(tensors),
        num_bins=num_bins, detect_head={"convs": job.head_convs, "decode_nodes": len(job.decode)},
        forced_exclude=list(job.exclude),
        rss_mb={"before_calibration": rss0, "after_calibration": rss_mb()},
        time_s={"calibration": round(time.perf_counter() - t0, 1)})
    return ranges


def _sensitivity(job: _Job, cache: Path, tmp: Path, max_float_blocks: int, min_share: float,
                 sensitivity_blocks: Optional[Sequence[str]]) -> Optional[Probe]:
    """Step 4: per-block cost on the hold-out images; the dominant blocks join ``job.always_float``."""
    if not job.data.num_holdout:
        LOGGER.warning("sensitivity analysis skipped: no hold-out images available")
        return None
    t1 = time.perf_counter()
    held = list(job.data.holdout_batches())
    probe = Probe(job.fp32_onnx, cache, tmp, job.method, job.per_channel, job.scheme, job.threads, held,
                  run_all(session(job.model, job.threads), held), job.progress,
                  head=job.meta.head if job.meta is not None else "yolov5")
    candidates = candidate_blocks(job.model, job.blocks, job.forced, job.scheme, sensitivity_blocks)
    sens = job.report["sensitivity"] = run_sensitivity(probe, candidates, job.always_float, max_float_blocks,
                                                       min_share)
    job.kept_blocks = [k["block"] for k in sens["kept_float"]]
    for b in job.kept_blocks:
        job.always_float += [n for n in job.blocks[b] if n not in job.always_float]
    sens["time_s"] = round(time.perf_counter() - t1, 1)
    return probe


def _quantization_record(job: _Job) -> Dict[str, Any]:
    """What the INT8 model's metadata says about how it was quantized."""
    return {"format": "qdq", "scheme": job.scheme, "method": job.method, "percentile": job.report["percentile"],
            "symmetric": True, "per_channel": job.per_channel, "calibration_images": job.data.num_images,
            "calibration_source": str(job.data.source), "float_blocks": job.kept_blocks,
            "forced_exclude": list(job.exclude), "detect_head_float": True,
            "excluded_nodes": [n for n in job.always_float if n not in set(job.decode)]}


def _measure(job: _Job, quantization: Dict[str, Any], val_data: PathLike, compare_fp32: bool) -> None:
    """Step 6 (optional): mAP of the INT8 model (and of the FP32 one) on ``val_data``'s val split."""
    quantization.update(measure_map(job.output, val_data, job.threads, job.progress))
    job.report["map"] = {k: quantization[k] for k in ("map50_95", "map50")}
    job.report["map_data"] = str(val_data)
    if compare_fp32:
        fp32_map = measure_map(job.fp32_onnx, val_data, job.threads, job.progress)
        job.report["map_fp32"] = {k: fp32_map[k] for k in ("map50_95", "map50")}


def quantize_int8(fp32_onnx: PathLike, output: PathLike, calib: Union[PathLike, Any], num_images: int = 500,
                  method: str = "percentile", percentile: float = 99.999, exclude: Sequence[str] = (),
                  sensitivity: bool = True, sensitivity_images: int = 8, max_float_blocks: int = 3,
                  min_share: float = 0.25, sensitivity_blocks: Optional[Sequence[str]] = None,
                  per_channel: bool = True, scheme: str = "conv", num_bins: int = 2048, split: str = "train",
                  threads: Optional[int] = None, val_data: Optional[PathLike] = None, compare_fp32: bool = False,
                  progress: bool = True, report_path: Optional[PathLike] = None) -> Path:
    """Write a Q/DQ INT8 ONNX model calibrated on real images, keeping the sensitive parts in float.

    Args:
        fp32_onnx: FP32 ONNX exported by :func:`edge_detect.training.export.export_onnx` (``raw`` output layout,
            ``float32_nchw_rgb`` input).
        output: path of the INT8 model to write.
        calib: image folder, dataset yaml (``split``), video file, or a ready
            :class:`~edge_detect.deploy.calibration.CalibrationData`.
        num_images: calibration images/frames (fewer if the source has fewer).
        method: ``"percentile"``, ``"minmax"`` or ``"entropy"`` (see module doc).
        percentile: percentile of ``|x|`` for ``method="percentile"``.
        exclude: blocks (``"model.9"`` or ``"9"``), node names or node-name prefixes forced to float.
        sensitivity: run the per-block sensitivity analysis and keep the costliest blocks in float.
        sensitivity_images: hold-out images for it (taken out of the calibration source, disjoint when it is
            large enough).
        max_float_blocks, min_share: selection rule, see :func:`select_float_blocks`.
        sensitivity_blocks: analyse only these blocks (default: every block holding a quantized operator).
        per_channel: per-channel weight scales (what TensorRT expects).
        scheme: Q/DQ placement, ``"conv"`` (TensorRT style, default) or ``"all"``, see :func:`quantize_qdq`.
        num_bins: histogram bins per tensor.
        split: dataset split when ``calib`` is a yaml.
        threads: ONNX Runtime intra-op threads for calibration and probes (``None``: its default).
        val_data: dataset yaml; when given, the INT8 model's mAP on its ``val`` split is measured with
            :func:`edge_detect.evaluate.evaluate` and recorded in the metadata and report.
        compare_fp32: with ``val_data``, also measure the FP32 model on the same split (report ``map_fp32``,
            side by side with the INT8 ``map``; one more evaluation pass).
        progress: progress bars (plain log lines when stderr is not a terminal).
        report_path: where to save the JSON report (default: ``<output stem>.quant.json`` beside the output).

    Returns:
        The output path. The report is also logged (INFO) and saved.

    Raises:
        ModelError / ModelLoadError: the input is missing, not ONNX, or not a raw-layout float model.
        ConfigError: bad method, percentile or exclude entry.
        DataError / SourceError: bad calibration source.
    """
    _check_options(method, scheme)
    t_start = time.perf_counter()
    job = _Job(Path(fp32_onnx), Path(output), method, percentile, per_channel, scheme, threads, progress, exclude)
    _load_fp32(job)
    _open_data(job, calib, num_images, split, sensitivity_images if sensitivity else 0)
    ranges = _ranges(job, num_bins)
    with tempfile.TemporaryDirectory(prefix="edge_detect_quant_") as tmp_dir:
        tmp = Path(tmp_dir)
        cache = write_ranges_cache(ranges, tmp / "ranges.json", method)
        probe = _sensitivity(job, cache, tmp, max_float_blocks, min_share, sensitivity_blocks) if sensitivity \
            else None
        job.output.parent.mkdir(parents=True, exist_ok=True)  # step 5: the Q/DQ model
        quantize_qdq(job.fp32_onnx, job.output, cache, job.always_float, method, per_channel, scheme)
        if probe is not None:
            job.report["sensitivity"]["final_error"] = probe.error_of(job.output)
            job.report["speed_ms_per_image"] = compare_speed(job.model, job.output, probe.holdout[0], threads)
    quantization = _quantization_record(job)
    if val_data is not None:
        _measure(job, quantization, val_data, compare_fp32)
    _write_metadata(job.output, job.meta, quantization)
    job.report["time_s"]["total"] = round(time.perf_counter() - t_start, 1)
    job.report["rss_mb"]["peak"] = peak_rss_mb()
    job.report.update(excluded_nodes=quantization["excluded_nodes"], float_blocks=job.kept_blocks)
    rpath = write_report(job.report, report_path if report_path else report_path_for(job.output))
    log_report(job.report, rpath)
    return job.output
