"""The INT8 quantization report: resource and speed measurements, mAP of the models, the JSON file beside the
output (``<stem>.quant.json``) and its log summary.

Report keys (JSON): ``output`` (the final model file), ``fp32_model`` (the FP32 ONNX it was quantized from, or
``null`` when that was a temporary intermediate of ``edge_detect.export``), ``weights`` (the checkpoint, when
exported from one), ``method``, ``percentile``, ``per_channel``, ``scheme``, ``symmetric``, ``format``,
``calibration`` (source, images, size), ``tensors``, ``num_bins``, ``detect_head``, ``forced_exclude``,
``sensitivity`` (per-block costs, ``kept_float``, errors), ``speed_ms_per_image`` (FP32 vs Q/DQ on ORT CPU),
``map`` (INT8 ``map50_95``/``map50`` when measured), ``map_fp32`` (the FP32 model on the same split, when
measured), ``map_data`` (the dataset yaml whose val split was scored), ``excluded_nodes``, ``float_blocks``,
``time_s``, ``rss_mb``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from edge_detect.deploy.quantize.analysis import session
from edge_detect.deploy.quantize.sensitivity import speed_ms
from edge_detect.paths import PathLike

__all__ = ["report_path_for", "write_report", "read_report", "update_report", "measure_map", "compare_speed",
           "rss_mb", "peak_rss_mb", "log_report"]

LOGGER = logging.getLogger(__name__)


def report_path_for(output: PathLike) -> Path:
    """``<stem>.quant.json`` beside the model ``output`` (the default report location)."""
    output = Path(output)
    return output.with_name(output.stem + ".quant.json")


def write_report(report: Mapping[str, Any], path: PathLike) -> Path:
    """Save ``report`` as indented JSON (NumPy scalars as floats); returns the path."""
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, default=float))
    return path


def read_report(path: PathLike) -> Optional[Dict[str, Any]]:
    """A saved report, or ``None`` when the file is missing or is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        LOGGER.warning("%s is not valid JSON; ignoring it", path)
        return None
    return data if isinstance(data, dict) else None


def update_report(path: PathLike, **fields: Any) -> Optional[Dict[str, Any]]:
    """Set ``fields`` in a saved report (e.g. the final ``output`` after later export stages); ``None`` if absent."""
    data = read_report(path)
    if data is None:
        return None
    data.update(fields)
    write_report(data, path)
    return data


def rss_mb() -> Optional[float]:
    """Resident memory of this process in MiB (``None`` without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process so far in MiB (``None`` where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def compare_speed(model: Any, output: Path, batch: np.ndarray, threads: Optional[int]) -> Dict[str, Any]:
    """FP32 vs INT8 Q/DQ milliseconds per image on ONNX Runtime CPU (warm, 5 runs each)."""
    return {"fp32": round(speed_ms(session(model, threads), batch), 2),
            "int8_qdq": round(speed_ms(session(str(output), threads), batch), 2),
            "threads": threads, "note": "ONNX Runtime CPU; Q/DQ is an accuracy format here, not a speed one"}


def measure_map(model_path: Path, val_data: PathLike, threads: Optional[int], progress: bool) -> Dict[str, Any]:
    """mAP of ``model_path`` on the ``val`` split of ``val_data`` (:func:`edge_detect.evaluate.evaluate`)."""
    from edge_detect.backends.base import load_backend
    from edge_detect.evaluate import evaluate

    with load_backend(model_path, backend="onnxruntime", threads=threads or 0) as backend:
        res = evaluate(backend, val_data, split="val", progress=progress)
    return {"map50_95": float(res["map50_95"]), "map50": float(res["map50"]), "map_data": str(val_data)}


def log_report(report: Mapping[str, Any], path: Path) -> None:
    LOGGER.info("INT8 %s: %s calibration on %d images, %d tensors, %.1fs", report["output"], report["method"],
                report["calibration"]["images"], report["tensors"], report["time_s"]["calibration"])
    sens = report.get("sensitivity")
    if sens:
        LOGGER.info("sensitivity (%d hold-out images): baseline error %.4f -> final %.4f", sens["holdout_images"],
                    sens["baseline_error"], sens["final_error"])
        for row in sens["blocks"][:8]:
            LOGGER.info("  %-24s cost %+.4f (%d nodes)", row["block"], row["cost"], row["nodes"])
        for k in sens["kept_float"]:
            LOGGER.info("  kept in float: %s: %s", k["block"], k["reason"])
        if not sens["kept_float"]:
            LOGGER.info("  no block kept in float: none costs %.0f%% or more of the baseline error",
                        100 * sens["min_share"])
    if "speed_ms_per_image" in report:
        s = report["speed_ms_per_image"]
        LOGGER.info("CPU speed: FP32 %.1f ms/img, INT8 Q/DQ %.1f ms/img", s["fp32"], s["int8_qdq"])
    LOGGER.info("Detect head kept in float: %s; report saved to %s", ", ".join(report["detect_head"]["convs"]), path)
