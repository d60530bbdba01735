"""OpenVINO IR building, torch-free: ONNX -> IR (FP32 / FP16 weights) and INT8 with NNCF.

Our Q/DQ ONNX (:mod:`edge_detect.deploy.quantize`, made for TensorRT: signed INT8 activations and full-range
INT8 weights) runs on OpenVINO through :mod:`edge_detect.backends.openvino_qdq`, which rewrites it on load: its
signed activation quantizers become the same quantizers with ``uint8`` zero points (OpenVINO 2026.4 mis-scales a
signed one that it moves across a ``Concat``: mAP50-95 0.022 instead of 0.341 on coco128 val2017), and on CPUs
without VNNI its full-range weights, whose ``u8 x s8`` pair sums overflow 16 bits there, run in float. That gives
ONNX Runtime's accuracy (0.336 / 0.337) but, without VNNI, not INT8 speed.

The OpenVINO INT8 path proper quantizes with NNCF (:func:`quantize_openvino`): asymmetric activations, OpenVINO's
own quantizer placement (every branch entering an ``Add``/``Concat``, scales unified where its low-precision
transformations need them) and 7-bit first-layer weights where the CPU lacks VNNI. It is calibrated on the same
images and preprocessing as :mod:`edge_detect.deploy.quantize`, with the Detect head (found from the graph,
:func:`~edge_detect.deploy.quantize.find_detect_head`) and any block the sensitivity analysis picks kept in float
through NNCF's ``ignored_scope``. The sensitivity analysis reuses :func:`~edge_detect.deploy.quantize.output_error`
and :func:`~edge_detect.deploy.quantize.select_float_blocks`: the NNCF model is the baseline, and each block's
cost is measured by bypassing that block's ``FakeQuantize`` operations in a copy of the quantized model (no
re-quantization per block).

Model metadata (:class:`~edge_detect.metadata.ModelMetadata`) is stored as JSON in the IR's ``rt_info`` under
``edge_detect`` and read back by :mod:`edge_detect.backends.openvino`.

Only the build side imports this module (it needs ``openvino``, ``nncf`` for INT8, and ``onnx`` to find the
Detect head; never torch).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.backends.openvino import shared_core
from edge_detect.errors import ConfigError, ModelError, ModelLoadError
from edge_detect.metadata import METADATA_KEY, ModelMetadata
from edge_detect.paths import PathLike

__all__ = ["ir_path", "convert_to_ir", "quantize_openvino", "write_ir_metadata", "PRESETS", "FLOAT_OP_TYPES",
           "RANGE_ESTIMATORS"]

LOGGER = logging.getLogger(__name__)

PRESETS = ("mixed", "performance")
# OpenVINO op types whose inputs NNCF must not quantize: SiLU's Sigmoid and Multiply (and the Subtract of the
# box decoding). Quantizing them adds a second rounding per activation for no INT8 convolution gained:
# mAP50-95 on coco128 val2017 was 0.314 with them quantized, 0.327 without (128 calibration images).
FLOAT_OP_TYPES = ("Multiply", "Subtract", "Sigmoid")
# activation ranges: "minmax" (the min and max over every calibration image) kept the accuracy of FP32 on coco128
# val2017 (mAP50-95 0.335 vs FP32 0.334, 128 images), NNCF's default estimator (means of per-image extremes,
# "default" here) lost 0.7 points (0.327)
RANGE_ESTIMATORS = ("minmax", "default")
_BLOCK_RE = re.compile(r"(?:^|/)model\.(\d+)(?=/|$)")


def _ov() -> Any:
    return require("openvino", "openvino")


def ir_path(output: PathLike) -> Path:
    """The ``.xml`` path of an IR output (``.bin`` beside it); ``output`` must end in ``.xml``.

    Raises:
        ConfigError: another suffix.
    """
    out = Path(output)
    if out.suffix.lower() != ".xml":
        raise ConfigError(f"OpenVINO IR output: expected a path ending in .xml (weights go to .bin beside it), "
                          f"got {out}")
    return out


def _read(model: Union[PathLike, Any]) -> Any:
    ov = _ov()
    if isinstance(model, ov.Model):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        return shared_core().read_model(str(path))
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: not a loadable ONNX / OpenVINO IR model ({str(exc).splitlines()[0]})") from exc


def _metadata_of(model: Any) -> Optional[ModelMetadata]:
    from edge_detect.backends.openvino import read_ov_metadata

    return read_ov_metadata(model)


def write_ir_metadata(model: Any, meta: ModelMetadata) -> None:
    """Store ``meta`` as JSON in ``model``'s ``rt_info["edge_detect"]`` (saved with the IR)."""
    model.set_rt_info(meta.to_json(), [METADATA_KEY])


def _versions() -> Dict[str, str]:
    ov = _ov()
    out = {"openvino": ov.__version__.split("-")[0]}
    try:
        import nncf

        out["nncf"] = nncf.__version__
    except ImportError:
        pass
    return out


def _save(model: Any, output: Path, meta: Optional[ModelMetadata], half: bool) -> Path:
    ov = _ov()
    if meta is not None:
        write_ir_metadata(model, meta.replace(versions={**dict(meta.versions), **_versions()}))
    else:
        LOGGER.warning("%s: the source model has no edge_detect metadata; the IR gets none either", output)
    output.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(output), compress_to_fp16=half)
    return output


def _read_qdq_onnx(path: Path) -> Any:
    """A Q/DQ ONNX with its activation quantizers in the form OpenVINO handles (see
    :func:`~edge_detect.backends.openvino_qdq.activations_to_uint8`); weights are left as they are, so the IR's
    INT8 convolutions overflow on CPUs without VNNI (:func:`quantize_openvino` is the INT8 IR for those)."""
    onnx = require("onnx", "onnx")
    from edge_detect.backends.openvino_qdq import activations_to_uint8

    model = onnx.load(str(path))
    n = activations_to_uint8(model)
    LOGGER.warning("%s is a Q/DQ INT8 ONNX: %d activation quantizers rewritten for OpenVINO; its full-range INT8 "
                   "weights overflow on CPUs without VNNI (edge-detect export --format openvino --int8 makes an "
                   "INT8 IR that does not)", path.name, n)
    return shared_core().read_model(model.SerializeToString())


def convert_to_ir(onnx_path: PathLike, output: PathLike, half: bool = False) -> Path:
    """ONNX -> OpenVINO IR (``.xml`` + ``.bin``) with our metadata in ``rt_info``.

    Args:
        onnx_path: an ONNX exported by this project (any layout / input format).
        output: ``.xml`` path.
        half: store the weights in FP16 (``compress_to_fp16``); the compute precision is still chosen at load
            time (``--precision``), as OpenVINO upcasts FP16 weights for f32 inference.

    Returns:
        The ``.xml`` path.
    """
    out = ir_path(output)
    model = _read(onnx_path)
    if Path(onnx_path).suffix.lower() == ".onnx" and any(op.get_type_name() == "FakeQuantize"
                                                          for op in model.get_ops()):
        model = _read_qdq_onnx(Path(onnx_path))
    meta = _metadata_of(model)
    if meta is not None and half and meta.precision == "fp32":
        meta = meta.replace(precision="fp16")
    _save(model, out, meta, half)
    LOGGER.info("OpenVINO IR written: %s (%s weights)", out, "fp16" if half else "fp32")
    return out


# --------------------------------------------------------------------------------------------- INT8 (NNCF)
def _block_of(name: str) -> Optional[str]:
    m = _BLOCK_RE.search(name)
    return f"model.{m.group(1)}" if m else None


def _fq_blocks(model: Any) -> Dict[str, List[Any]]:
    """``FakeQuantize`` ops grouped by the block of the operation they feed (``model.N``)."""
    out: Dict[str, List[Any]] = {}
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        blocks = {_block_of(t.get_node().get_friendly_name()) for t in op.output(0).get_target_inputs()}
        for b in blocks - {None}:
            out.setdefault(b, []).append(op)  # type: ignore[arg-type]
    return out


def _bypass(model: Any, blocks: Sequence[str]) -> Any:
    """A copy of ``model`` whose ``FakeQuantize`` ops feeding ``blocks`` are removed (those blocks in float)."""
    clone = model.clone()
    groups = _fq_blocks(clone)
    for b in blocks:
        for fq in groups.get(b, []):
            fq.output(0).replace(fq.input_value(0))
    return clone


def _compile(model: Any, threads: Optional[int]) -> Any:
    config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return shared_core().compile_model(model, "CPU", config)


def _run(compiled: Any, batches: Sequence[np.ndarray]) -> List[np.ndarray]:
    request = compiled.create_infer_request()
    return [np.array(request.infer({0: b})[0]) for b in batches]


def _speed_ms(compiled: Any, batch: np.ndarray, runs: int = 10) -> float:
    """Median milliseconds per image over ``runs`` calls after two warm-up calls."""
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({0: batch})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: batch})
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times)) / len(batch)


def _measure_map(model: Path, val_data: PathLike, progress: bool, precision: Optional[str] = None) -> Dict[str, Any]:
    """mAP of an IR / ONNX on OpenVINO CPU over the ``val`` split of ``val_data``."""
    from edge_detect.backends.base import load_backend
    from edge_detect.evaluate import evaluate

    with load_backend(model, backend="openvino", precision=precision) as backend:
        res = evaluate(backend, val_data, split="val", progress=progress)
    return {"map50_95": float(res["map50_95"]), "map50": float(res["map50"]), "map_data": str(val_data)}


def _sensitivity(fp32: Any, quantized: Any, holdout: List[np.ndarray], threads: Optional[int],
                 max_blocks: int, min_share: float, progress: bool, head: str = "yolov5") -> Dict[str, Any]:
    from edge_detect.deploy.quantize import output_error, select_float_blocks
    from edge_detect.progress import progress as progress_bar

    reference = _run(_compile(fp32, threads), holdout)
    baseline = output_error(reference, _run(_compile(quantized, threads), holdout), head=head)
    LOGGER.info("sensitivity: baseline (NNCF INT8, Detect head in float) output error %.4f", baseline)
    rows = []
    groups = _fq_blocks(quantized)
    for block in progress_bar(sorted(groups, key=lambda b: int(b.split(".")[1])), desc="sensitivity", unit="block",
                      disable=not progress):
        err = output_error(reference, _run(_compile(_bypass(quantized, [block]), threads), holdout), head=head)
        rows.append({"block": block, "quantizers": len(groups[block]), "error_with_block_float": err,
                     "cost": baseline - err})
    chosen = select_float_blocks({r["block"]: r["cost"] for r in rows}, baseline, max_blocks, min_share)
    rows.sort(key=lambda r: -r["cost"])
    return {"metric": "output_error vs FP32 (edge_detect.deploy.quantize.output_error)",
            "holdout_images": sum(len(b) for b in holdout), "baseline_error": baseline, "blocks": rows,
            "kept_float": [{"block": b, "reason": why} for b, why in chosen],
            "max_float_blocks": max_blocks, "min_share": min_share}


def _advanced(range_estimator: str) -> Any:
    """NNCF ``AdvancedQuantizationParameters`` for the activation range estimator (``None`` = NNCF's default)."""
    if range_estimator == "default":
        return None
    require("nncf", "openvino")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def _ignored_scope(onnx_model: Any, exclude: Sequence[str], blocks: Sequence[str]) -> Tuple[Any, Dict[str, Any]]:
    """NNCF ``IgnoredScope`` for the Detect head, ``exclude`` entries and whole ``blocks``."""
    nncf = require("nncf", "openvino")
    from edge_detect.deploy.quantize import find_detect_head, group_blocks, resolve_exclude

    head, decode = find_detect_head(onnx_model)
    forced = resolve_exclude(onnx_model, exclude, group_blocks(onnx_model)) if exclude else []
    names = list(dict.fromkeys(head + decode + forced))
    # OpenVINO splits an ONNX Conv with bias into "<name>/WithoutBiases" (the Convolution) and "<name>" (the
    # Add), so ONNX node names are matched as prefixes
    patterns = [rf"^{re.escape(n)}(/.*)?$" for n in names] + [rf"(^|/)model\.{b.split('.')[1]}/" for b in blocks]
    return (nncf.IgnoredScope(patterns=patterns, types=list(FLOAT_OP_TYPES), validate=False),
            {"detect_head": head, "decode_nodes": len(decode), "forced": forced, "float_blocks": list(blocks),
             "types": list(FLOAT_OP_TYPES)})


def _check_nncf_options(preset: str, range_estimator: str) -> None:
    if preset not in PRESETS:
        raise ConfigError(f"NNCF preset: expected one of {PRESETS}, got {preset!r}")
    if range_estimator not in RANGE_ESTIMATORS:
        raise ConfigError(f"NNCF range estimator: expected one of {RANGE_ESTIMATORS}, got {range_estimator!r}")


def _read_fp32(fp32_onnx: Path) -> Tuple[Any, Optional[ModelMetadata]]:
    """The FP32 model and its metadata, checked: fp32, raw output, float input."""
    fp32 = _read(fp32_onnx)
    meta = _metadata_of(fp32)
    if meta is not None and (meta.output_layout != "raw" or meta.input_format != "float32_nchw_rgb"
                             or meta.precision != "fp32"):
        raise ModelError(f"{fp32_onnx}: expected an fp32 model with raw output and float32_nchw_rgb input, got "
                         f"{meta.precision} / {meta.output_layout} / {meta.input_format}")
    return fp32, meta


class _Nncf:
    """NNCF post-training quantization of one FP32 model with fixed settings; :meth:`run` takes the float blocks."""

    def __init__(self, fp32: Any, fp32_onnx: Path, data: Any, exclude: Sequence[str], preset: str,
                 range_estimator: str, fast_bias_correction: bool) -> None:
        onnx = require("onnx", "onnx")
        self.fp32, self.data, self.exclude = fp32, data, exclude
        self.preset, self.range_estimator, self.fast_bias_correction = preset, range_estimator, fast_bias_correction
        self.onnx_model = onnx.load(str(fp32_onnx), load_external_data=False)

    def run(self, blocks: Sequence[str]) -> Tuple[Any, Dict[str, Any]]:
        """The quantized ``ov.Model`` with ``blocks`` (and the Detect head, excludes) in float, and the scope used."""
        nncf = require("nncf", "openvino")
        presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
        scope, info = _ignored_scope(self.onnx_model, self.exclude, blocks)
        t0 = time.perf_counter()
        q = nncf.quantize(self.fp32, nncf.Dataset(self.data), preset=presets[self.preset],
                          subset_size=self.data.num_images, fast_bias_correction=self.fast_bias_correction,
                          ignored_scope=scope, advanced_parameters=_advanced(self.range_estimator))
        info["time_s"] = round(time.perf_counter() - t0, 1)
        return q, info


def _keep_sensitive(nncf_run: _Nncf, quantized: Any, report: Dict[str, Any], held: List[np.ndarray],
                    threads: Optional[int], max_float_blocks: int, min_share: float, progress: bool,
                    head: str) -> Tuple[Any, List[str]]:
    """Sensitivity on the hold-out images; with dominant blocks, quantize again with them in float."""
    t1 = time.perf_counter()
    report["sensitivity"] = _sensitivity(nncf_run.fp32, quantized, held, threads, max_float_blocks, min_share,
                                         progress, head=head)
    kept = [k["block"] for k in report["sensitivity"]["kept_float"]]
    if kept:
        LOGGER.info("sensitivity: keeping %s in float; quantizing again", ", ".join(kept))
        quantized, report["ignored_scope"] = nncf_run.run(kept)
    report["sensitivity"]["time_s"] = round(time.perf_counter() - t1, 1)
    return quantized, kept


def _final_figures(fp32: Any, quantized: Any, held: List[np.ndarray], threads: Optional[int], head: str,
                   report: Dict[str, Any]) -> None:
    """Output error of the final model and FP32 vs INT8 speed on the hold-out images, into ``report``."""
    from edge_detect.deploy.quantize import output_error

    reference = _run(_compile(fp32, threads), held)
    compiled_q = _compile(quantized, threads)
    report.setdefault("sensitivity", {})["final_error"] = output_error(reference, _run(compiled_q, held), head=head)
    report["speed_ms_per_image"] = {
        "fp32": round(_speed_ms(_compile(fp32, threads), held[0]), 2),
        "int8": round(_speed_ms(compiled_q, held[0]), 2),
        "note": "OpenVINO CPU, f32 inference precision hint, median of 10 warm calls"}


def _record_map(out: Path, fp32_onnx: Path, val_data: PathLike, progress: bool, report: Dict[str, Any],
                quantization: Dict[str, Any], int8_meta: Optional[ModelMetadata]) -> None:
    """FP32 and INT8 mAP into the report; the INT8 one into the saved IR's metadata too."""
    fp32_map = _measure_map(fp32_onnx, val_data, progress, precision="fp32")
    int8_map = _measure_map(out, val_data, progress, precision="int8")
    report["map"] = {"fp32": fp32_map, "int8": int8_map,
                     "drop_map50_95": round(fp32_map["map50_95"] - int8_map["map50_95"], 4)}
    quantization.update(int8_map)
    if int8_meta is None:
        return
    model = _read(out)
    write_ir_metadata(model, int8_meta.replace(quantization=quantization))
    tmp = out.with_name(out.stem + ".tmp.xml")
    _ov().save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp, out)
    os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))


def _quantization_record(nncf_run: _Nncf, kept: Sequence[str]) -> Dict[str, Any]:
    """What the INT8 IR's metadata says about how it was quantized."""
    return {"format": "openvino_fakequantize", "quantizer": "nncf", "preset": nncf_run.preset,
            "range_estimator": nncf_run.range_estimator, "calibration_images": nncf_run.data.num_images,
            "calibration_source": str(nncf_run.data.source), "float_blocks": list(kept),
            "forced_exclude": list(nncf_run.exclude), "detect_head_float": True, "versions": _versions()}


def quantize_openvino(fp32_onnx: PathLike, output: PathLike, calib: Union[PathLike, Any], num_images: int = 300,
                      exclude: Sequence[str] = (), preset: str = "mixed", range_estimator: str = "minmax",
                      sensitivity: bool = True,
                      sensitivity_images: int = 8, max_float_blocks: int = 3, min_share: float = 0.25,
                      fast_bias_correction: bool = True, split: str = "train", threads: Optional[int] = None,
                      val_data: Optional[PathLike] = None, progress: bool = True,
                      report_path: Optional[PathLike] = None) -> Path:
    """INT8 OpenVINO IR with NNCF post-training quantization, the Detect head and sensitive blocks in float.

    Args:
        fp32_onnx: FP32 ONNX exported by this project (``raw`` layout, ``float32_nchw_rgb`` input; static or
            dynamic shape: calibration runs at the metadata's ``imgsz``).
        output: ``.xml`` path of the IR to write.
        calib: image folder, dataset yaml (``split``), video file, or a ready
            :class:`~edge_detect.deploy.calibration.CalibrationData`.
        num_images: calibration images (NNCF ``subset_size``).
        exclude: blocks (``"model.9"`` / ``"9"``), node names or name prefixes kept in float, as for ONNX INT8.
        preset: NNCF preset: ``"mixed"`` (symmetric weights, asymmetric activations; default) or
            ``"performance"`` (symmetric both; mAP 0.318 vs 0.327 for mixed with the default estimator).
        range_estimator: activation ranges, ``"minmax"`` (default) or NNCF's ``"default"`` (see
            :data:`RANGE_ESTIMATORS`).
        sensitivity: measure each block's cost on hold-out images and keep the dominant ones in float
            (:func:`~edge_detect.deploy.quantize.select_float_blocks` with ``max_float_blocks`` / ``min_share``);
            the model is then quantized again with those blocks in NNCF's ignored scope.
        sensitivity_images: hold-out images for it (disjoint from the calibration images where possible).
        fast_bias_correction: NNCF's fast bias correction (``False`` = the slower full one).
        threads: OpenVINO CPU threads for the probes (``None``: its default).
        val_data: dataset yaml; the FP32 and INT8 mAP on its ``val`` split (OpenVINO CPU, FP32 hint) go into the
            report and the INT8 mAP into the metadata.
        progress: progress bars.
        report_path: JSON report path (default ``<output stem>.quant.json`` beside the output).

    Returns:
        The ``.xml`` path.

    Raises:
        ModelError / ModelLoadError: missing or unsuitable input model.
        ConfigError: bad preset or output suffix.
        MissingDependencyError: ``nncf`` / ``openvino`` / ``onnx`` not installed (extra ``openvino``).
    """
    require("nncf", "openvino")
    from edge_detect.deploy.calibration import CalibrationData

    _check_nncf_options(preset, range_estimator)
    out, t_start, fp32_onnx = ir_path(output), time.perf_counter(), Path(fp32_onnx)
    fp32, meta = _read_fp32(fp32_onnx)
    head = meta.head if meta is not None else "yolov5"
    data = calib if isinstance(calib, CalibrationData) else CalibrationData(
        calib, meta.imgsz if meta is not None else (640, 640), num_images=num_images, split=split,
        holdout=sensitivity_images if sensitivity else 0, stride=meta.stride if meta else 32, progress=progress)
    nncf_run = _Nncf(fp32, fp32_onnx, data, exclude, preset, range_estimator, fast_bias_correction)
    quantized, scope_info = nncf_run.run(())
    report: Dict[str, Any] = {"fp32_model": str(fp32_onnx), "output": str(out), "format": "openvino_ir",
                              "quantizer": "nncf", "preset": preset, "range_estimator": range_estimator,
                              "fast_bias_correction": fast_bias_correction,
                              "calibration": data.describe(), "ignored_scope": scope_info,
                              "forced_exclude": list(exclude)}
    kept: List[str] = []
    held = list(data.holdout_batches()) if sensitivity and data.num_holdout else []
    if held:
        quantized, kept = _keep_sensitive(nncf_run, quantized, report, held, threads, max_float_blocks, min_share,
                                          progress, head)
        _final_figures(fp32, quantized, held, threads, head, report)
    elif sensitivity:
        LOGGER.warning("sensitivity analysis skipped: no hold-out images available")
    quantization = _quantization_record(nncf_run, kept)
    int8_meta = meta.replace(precision="int8", quantization=quantization) if meta is not None else None
    _save(quantized, out, int8_meta, half=False)
    if val_data is not None:
        _record_map(out, fp32_onnx, val_data, progress, report, quantization, int8_meta)
    report["time_s"] = round(time.perf_counter() - t_start, 1)
    rpath = Path(report_path) if report_path else out.with_name(out.stem + ".quant.json")
    rpath.write_text(json.dumps(report, indent=2, default=float))
    _log_report(report, rpath)
    return out


def _log_report(report: Mapping[str, Any], path: Path) -> None:
    LOGGER.info("OpenVINO INT8 %s: NNCF %s preset on %d images, %.1f s", report["output"], report["preset"],
                report["calibration"]["images"], report["time_s"])
    sens = report.get("sensitivity") or {}
    if "baseline_error" in sens:
        LOGGER.info("sensitivity (%d hold-out images): baseline error %.4f -> final %.4f", sens["holdout_images"],
                    sens["baseline_error"], sens.get("final_error", float("nan")))
        for row in sens["blocks"][:6]:
            LOGGER.info("  %-10s cost %+.4f", row["block"], row["cost"])
    if "speed_ms_per_image" in report:
        s = report["speed_ms_per_image"]
        LOGGER.info("OpenVINO CPU speed: FP32 %.1f ms/img, INT8 %.1f ms/img", s["fp32"], s["int8"])
    if "map" in report:
        m = report["map"]
        LOGGER.info("mAP50-95 on %s: FP32 %.3f, INT8 %.3f (drop %.4f)", m["int8"]["map_data"],
                    m["fp32"]["map50_95"], m["int8"]["map50_95"], m["drop_map50_95"])
    LOGGER.info("report saved to %s", path)
