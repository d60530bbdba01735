"""Q/DQ INT8 through ONNX Runtime's public quantizer: ranges handed over as a calibration cache
(:func:`write_ranges_cache`), then ``quantize_static`` with symmetric signed INT8 (:func:`quantize_qdq`)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Sequence, Tuple

import numpy as np

from edge_detect._optional import require
from edge_detect.errors import ConfigError
from edge_detect.paths import PathLike

__all__ = ["SCHEMES", "write_ranges_cache", "quantize_qdq"]

SCHEMES = ("conv", "all")
_ORT_METHOD = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """Hide ONNX Runtime's generic 'consider pre-processing' warning (the graph is already folded and fused)."""
    flt = _DropMessage("pre-processing")
    root = logging.getLogger()
    root.addFilter(flt)
    handlers = list(root.handlers)
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)
        for h in handlers:
            h.removeFilter(flt)


def write_ranges_cache(ranges: Mapping[str, Tuple[float, float]], path: PathLike, method: str = "percentile") -> Path:
    """Save ranges as an ONNX Runtime calibration cache (``TensorsData`` JSON) for ``quantize_static``."""
    q = require("onnxruntime.quantization", "onnx")
    cm = getattr(q.CalibrationMethod, _ORT_METHOD[method])
    data = {k: q.TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()}
    q.save_tensors_data(q.TensorsData(cm, data), Path(path))
    return Path(path)


def quantize_qdq(fp32_onnx: PathLike, output: PathLike, ranges_cache: PathLike, exclude_nodes: Sequence[str] = (),
                 method: str = "percentile", per_channel: bool = True, scheme: str = "conv") -> Path:
    """Quantize with ONNX Runtime to Q/DQ INT8 (symmetric activations and weights) from precomputed ranges.

    Args:
        fp32_onnx: FP32 model path.
        output: where to write the Q/DQ model.
        ranges_cache: cache written by :func:`write_ranges_cache` for ``method``.
        exclude_nodes: node names left in float.
        method: the calibration method the cache was made with (recorded by ONNX Runtime, must match).
        per_channel: per-output-channel weight scales.
        scheme: ``"conv"``: Q/DQ on the inputs and weights of Conv (and MaxPool/Resize/Concat that follow
            quantized tensors are left float), the placement TensorRT recommends; ``"all"``: every operator
            ONNX Runtime can quantize, outputs included.
    """
    q = require("onnxruntime.quantization", "onnx")
    if scheme not in SCHEMES:
        raise ConfigError(f"quantization scheme: expected one of {SCHEMES}, got {scheme!r}")
    extra: Dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True}
    op_types = None
    if scheme == "conv":
        op_types = ["Conv"]
        extra["OpTypesToExcludeOutputQuantization"] = ["Conv"]
    with _quiet_preprocess_hint():
        q.quantize_static(
            str(fp32_onnx), str(output), calibration_data_reader=None,
            quant_format=q.QuantFormat.QDQ, per_channel=per_channel, reduce_range=False,
            activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes), op_types_to_quantize=op_types,
            calibrate_method=getattr(q.CalibrationMethod, _ORT_METHOD[method]),
            extra_options=extra,
            calibration_cache_path=str(ranges_cache))
    return Path(output)
