"""Benchmark: inference-only latency, end-to-end video throughput and accuracy, per model/backend/shape.

Three measurements per configuration (model file x backend x input size x batch), all on one loaded
:class:`~edge_detect.detector.Detector` so they see the same session, threads and shape:

* **inference-only** (:func:`time_inference`): ``warmup`` untimed calls, then ``iters`` timed calls of the
  detector's inference stage (``backend.infer``) on one batch preprocessed once before the loop (host memory,
  preallocated; GPU backends include their host-to-device copies). Reported: mean, p50, p90, p95, p99 latency
  per batch in ms and throughput ``fps = batch / mean latency`` in images/s.
* **end-to-end** (:func:`benchmark_e2e`, with a ``source``): the video goes through the same
  :class:`~edge_detect.stream.pipeline.Pipeline` as ``edge-detect run`` (sinks configurable, never a display):
  FPS, per-stage mean/p95 ms, glass-to-glass latency p50/p95/p99 (capture to sinks done), dropped and corrupt
  frames, and ``ratio_to_inference`` = e2e FPS / inference-only FPS of the same detector, timed just before
  and again just after the end-to-end run (the mean of both; ``inference_fps_before`` / ``_after`` are kept).
* **accuracy** (with a dataset yaml): mAP50-95 and mAP50 from :func:`edge_detect.evaluate.evaluate` at the
  validation thresholds (conf 0.001, IoU 0.6, max_det 300), once per model/backend/shape.

A configuration that cannot run here (backend or precision unavailable, static shape that does not match)
is skipped with a note in ``report.skipped``; the other configurations still run.

JSON report (stable keys; more may be added, none removed or renamed within ``schema`` 1)::

    {
      "schema": 1,
      "system": {...},                      # edge_detect.sysinfo.system_info()
      "settings": {"warmup", "iters", "source", "max_frames", "sinks", "data", "threads", "load_avg_end"},
      "results": [{
        "model": str,                       # file name
        "model_path": str,
        "backend": str,                     # onnxruntime | tensorrt | torch
        "precision": str,                   # fp32 | bf16 | fp16 | int8 (the backend's compute precision when it
                                            # has one, e.g. OpenVINO's hint, else the model metadata's)
        "imgsz": [h, w],                    # network input in pixels
        "batch": int,
        "inference": {"fps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",   # fps = images/s
                      "min_ms", "max_ms", "std_ms", "warmup", "iters"},
        "output_layout": str, "input_format": str,                                 # from the metadata
        "e2e": {"fps", "frames", "frames_read", "dropped", "corrupt", "ratio_to_inference",  # with a source
                "inference_fps_before", "inference_fps_after",                      # ratio uses their mean
                "mean_batch",                                                       # frames per inference call
                "latency_ms": {"p50", "p95", "p99"},                                # glass-to-glass
                "stages": {"decode" | "preprocess" | "inference" | "postprocess" | "sinks":
                           {"mean_ms", "p95_ms"}}},
        "accuracy": {"map50_95", "map50", "images", "boxes"},                       # with data
        "notes": [str, ...]
      }],
      "skipped": [{"model", "backend", "imgsz", "batch", "reason"}]
    }

Numbers are floats in milliseconds or per second; a value that could not be measured is ``null``.
:data:`REPORT_SCHEMA` is the JSON Schema of the stable part; :func:`validate_report` checks a report with it.
"""
from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect._optional import require
from edge_detect.errors import BackendUnavailableError, ConfigError, DataError, EdgeDetectError, SourceError
from edge_detect.stats import nan_to_none, percentiles

__all__ = [
    "BenchConfig", "BenchReport", "REPORT_SCHEMA", "STAGES", "parse_imgsz", "expand_configs", "latency_stats",
    "time_inference", "benchmark_inference", "benchmark_e2e", "benchmark_accuracy", "run_benchmark",
    "validate_report", "format_table", "to_markdown", "plot_report", "write_report",
]

LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PLOT_BASE_IN, PLOT_ROW_IN = 1.8, 0.6  # PNG chart height in inches: base + per configuration (100 dpi)
STAGES = ("decode", "preprocess", "inference", "postprocess", "sinks")
PathLike = Union[str, "os.PathLike[str]"]

# ---------------------------------------------------------------------------------------------- schema
_NUM = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}


def _obj(props: Mapping[str, Any], required: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    return {"type": "object", "properties": dict(props), "required": list(required or props)}


REPORT_SCHEMA: Dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edge-detect bench report",
    **_obj({
        "schema": {"const": SCHEMA_VERSION},
        "system": {"type": "object"},
        "results": {"type": "array", "items": _obj({
            "model": {"type": "string"},
            "backend": {"type": "string"},
            "precision": {"type": "string", "enum": ["fp32", "bf16", "fp16", "int8"]},
            "imgsz": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
            "batch": {"type": "integer", "minimum": 1},
            "inference": _obj({k: _NUM for k in ("fps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms")}),
            "e2e": _obj({
                "fps": _NUM, "frames": _INT, "dropped": _INT, "corrupt": _INT, "ratio_to_inference": _NUM,
                "latency_ms": _obj({k: _NUM for k in ("p50", "p95", "p99")}),
                "stages": _obj({s: _obj({"mean_ms": _NUM, "p95_ms": _NUM}) for s in STAGES}),
            }),
            "accuracy": _obj({"map50_95": _NUM, "map50": _NUM}),
        }, required=("model", "backend", "precision", "imgsz", "batch", "inference"))},
        "skipped": {"type": "array", "items": _obj({"model": {"type": "string"}, "reason": {"type": "string"}})},
    }, required=("system", "results")),
}


def validate_report(report: Mapping[str, Any]) -> None:
    """Check a report dict (as written to JSON) against :data:`REPORT_SCHEMA`.

    Raises:
        DataError: a stable key is missing or has the wrong type; the message gives the JSON path, what was
            expected and what was found.
        MissingDependencyError: ``jsonschema`` is not installed.
    """
    jsonschema = require("jsonschema", "dev")
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise DataError(f"bench report {where}: expected {err.validator} {err.validator_value!r}, "
                        f"got {err.instance!r} ({err.message}); {len(errors)} error(s) in all")


# ---------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class BenchConfig:
    """One configuration to measure.

    Attributes:
        model: model file (``.onnx``, ``.engine``, ``.pt``).
        backend: backend name, or ``None`` to choose by file suffix.
        imgsz: ``(h, w)`` network input in pixels, or ``None`` for the model's own size.
        batch: images per inference call (dynamic-batch models for ``batch > 1``).
    """

    model: str
    backend: Optional[str] = None
    imgsz: Optional[Tuple[int, int]] = None
    batch: int = 1

    def describe(self) -> str:
        size = f"{self.imgsz[0]}x{self.imgsz[1]}" if self.imgsz else "native"
        return f"{Path(self.model).name} [{self.backend or 'auto'}, {size}, batch {self.batch}]"


def parse_imgsz(text: Union[str, int, Sequence[int]]) -> Tuple[int, int]:
    """``"640"`` -> ``(640, 640)``; ``"384x640"`` / ``"384,640"`` / ``(384, 640)`` -> ``(h, w)``.

    Raises:
        ConfigError: not one or two positive integers.
    """
    if isinstance(text, (str, int)):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", str(text).lower())
        values = [v for v in match.groups() if v is not None] if match else []
    else:
        values = [str(v) for v in text]
    if len(values) not in (1, 2) or not all(v.isdigit() and int(v) > 0 for v in values):
        raise ConfigError(f"imgsz: expected 'S' or 'HxW' with positive integers, got {text!r}")
    h = int(values[0])
    return (h, int(values[1]) if len(values) == 2 else h)


def expand_configs(models: Sequence[PathLike], backends: Sequence[Optional[str]] = (None,),
                   imgszs: Sequence[Optional[Tuple[int, int]]] = (None,),
                   batches: Sequence[int] = (1,)) -> List[BenchConfig]:
    """Every combination of models x backends x input sizes x batch sizes, in that nesting order."""
    if not models:
        raise ConfigError("bench: expected at least one model, got none")
    for b in batches:
        if int(b) < 1:
            raise ConfigError(f"bench batch: expected >= 1, got {b}")
    return [BenchConfig(str(m), be, None if s is None else tuple(s), int(b))  # type: ignore[arg-type]
            for m, be, s, b in itertools.product(models, backends or (None,), imgszs or (None,), batches)]


# ---------------------------------------------------------------------------------------------- inference
def latency_stats(samples_ms: Iterable[float]) -> Dict[str, float]:
    """Summary of latency samples in ms: ``mean_ms, p50_ms, p90_ms, p95_ms, p99_ms, min_ms, max_ms, std_ms``.

    Percentiles interpolate linearly between ranks (``numpy.percentile``'s default). Empty input gives
    ``nan`` everywhere.
    """
    arr = np.asarray(list(samples_ms), dtype=np.float64)
    p = percentiles(arr, (50, 90, 95, 99))
    if arr.size == 0:
        return {k: math.nan for k in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms",
                                      "std_ms")}
    return {"mean_ms": float(arr.mean()), "p50_ms": p[50], "p90_ms": p[90], "p95_ms": p[95], "p99_ms": p[99],
            "min_ms": float(arr.min()), "max_ms": float(arr.max()), "std_ms": float(arr.std())}


def time_inference(infer: Callable[[np.ndarray], Any], batch: np.ndarray, warmup: int = 10, iters: int = 100,
                   progress: bool = True, desc: str = "inference") -> np.ndarray:
    """Call ``infer(batch)`` ``warmup`` times untimed, then ``iters`` times timed.

    The garbage collector is paused during the timed loop so a collection does not land in a sample.

    Args:
        infer: the function to time (typically ``detector.infer`` / ``backend.infer``).
        batch: the preallocated input, passed unchanged every call.
        warmup: untimed calls first (allocations, lazy initialisation, caches, clocks).
        iters: timed calls (>= 1).

    Returns:
        float64 ``(iters,)`` latencies in milliseconds, in call order.

    Raises:
        ConfigError: ``warmup < 0`` or ``iters < 1``.
    """
    if warmup < 0 or iters < 1:
        raise ConfigError(f"bench: expected warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    from tqdm.auto import tqdm

    for _ in tqdm(range(warmup), desc=f"{desc} warm-up", disable=not progress, leave=False):
        infer(batch)
    samples = np.empty(iters, dtype=np.float64)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with tqdm(total=iters, desc=desc, unit="it", disable=not progress, leave=False) as bar:
            for i in range(iters):
                t0 = time.perf_counter()
                infer(batch)
                samples[i] = (time.perf_counter() - t0) * 1e3
                bar.update()
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def inference_result(samples_ms: np.ndarray, batch_size: int, warmup: int) -> Dict[str, Any]:
    """``latency_stats`` plus ``fps`` (images/s = ``batch_size / mean latency``), ``warmup`` and ``iters``."""
    stats = latency_stats(samples_ms)
    mean = stats["mean_ms"]
    fps = batch_size * 1e3 / mean if mean and not math.isnan(mean) else math.nan
    return {"fps": fps, **stats, "warmup": int(warmup), "iters": int(len(samples_ms))}


def synthetic_frame(hw: Tuple[int, int], seed: int = 0) -> np.ndarray:
    """A reproducible BGR uint8 ``(h, w, 3)`` noise image, the input of inference-only runs."""
    return np.random.default_rng(seed).integers(0, 256, size=(hw[0], hw[1], 3), dtype=np.uint8)


def benchmark_inference(detector: Any, batch_size: int = 1, warmup: int = 10, iters: int = 100,
                        frame: Optional[np.ndarray] = None, progress: bool = True) -> Dict[str, Any]:
    """Inference-only latency and throughput of ``detector`` at its input size.

    The batch is built once with ``detector.preprocess`` from ``frame`` (default: :func:`synthetic_frame` of
    the input size), so it has the backend's exact dtype, layout and shape ``(batch, ...)``; only
    ``detector.infer`` is timed.

    Returns:
        ``{"fps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "warmup",
        "iters"}``; latencies are per batch in ms, ``fps`` is images/s.
    """
    hw = tuple(int(v) for v in detector.input_hw)
    image = synthetic_frame(hw) if frame is None else frame  # type: ignore[arg-type]
    batch, _ = detector.preprocess([image] * batch_size)
    batch = np.ascontiguousarray(batch)
    samples = time_inference(detector.infer, batch, warmup=warmup, iters=iters, progress=progress,
                             desc=f"inference b{batch_size} {hw[0]}x{hw[1]}")
    return inference_result(samples, batch_size, warmup)


# ---------------------------------------------------------------------------------------------- e2e
def _stage(stages: Mapping[str, Any], name: str) -> Dict[str, float]:
    s = stages.get(name) or {}
    return {"mean_ms": float(s.get("mean_ms", math.nan)), "p95_ms": float(s.get("p95_ms", math.nan))}


def e2e_result(summary: Mapping[str, Any], inference_fps: Optional[float]) -> Dict[str, Any]:
    """Bench ``e2e`` section from a pipeline ``RunSummary.to_dict()`` and the inference-only FPS."""
    fps = float(summary.get("fps", math.nan))
    lat = summary.get("latency_ms") or {}
    ratio = fps / inference_fps if inference_fps and not math.isnan(inference_fps) else math.nan
    return {
        "fps": fps,
        "frames": int(summary.get("processed", 0)),
        "frames_read": int(summary.get("frames_read", summary.get("processed", 0))),
        "dropped": int(summary.get("dropped", 0)),
        "corrupt": int(summary.get("corrupt", 0)),
        "ratio_to_inference": ratio,
        "latency_ms": {k: float(lat.get(k, math.nan)) for k in ("p50", "p95", "p99")},
        "stages": {s: _stage(summary.get("stages") or {}, s) for s in STAGES},
        "mean_batch": float((summary.get("batch") or {}).get("mean_frames", 1.0)),
    }


def _check_sinks(sinks: Sequence[str]) -> None:
    from edge_detect.sinks.base import resolve_sink

    for uri in sinks:
        if str(uri).split(":", 1)[0].lower() in ("display", "window", "show") or resolve_sink(uri)[1] == "display":
            raise ConfigError(f"bench sinks: expected no display (it would be timed), got {uri!r}")


def benchmark_e2e(detector: Any, source: str, sinks: Sequence[str] = (), max_frames: Optional[int] = None,
                  inference_fps: Optional[float] = None, progress: bool = True, batch: int = 1) -> Dict[str, Any]:
    """Run ``source`` through :class:`~edge_detect.stream.pipeline.Pipeline` with ``detector`` and summarise it.

    Args:
        source: a video file, camera, stream URI... (anything :func:`edge_detect.stream.sources.open_source` takes).
        sinks: sink URIs (:func:`edge_detect.sinks.open_sink`); a display sink is refused because a window
            would be part of the measurement.
        max_frames: stop after this many frames (keeps CI short).
        inference_fps: inference-only FPS of the same detector, for ``ratio_to_inference``.
        batch: frames per inference call in the pipeline (gathered from the source's queue).

    Raises:
        ConfigError: a display sink was requested.
    """
    _check_sinks(sinks)
    from edge_detect.sinks import open_sink
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.stream.sources import open_source

    opened: List[Any] = [open_source(source)]
    try:
        for spec in sinks:
            opened.append(open_sink(spec))
        pipeline = Pipeline(opened[:1], detector, sinks=opened[1:], max_frames=max_frames, progress=progress,
                            batch=batch)
    except BaseException:
        for obj in opened:
            obj.close()
        raise
    summary = pipeline.run()
    return e2e_result(summary.to_dict(), inference_fps)


# ---------------------------------------------------------------------------------------------- accuracy
def benchmark_accuracy(config: BenchConfig, data: PathLike, imgsz: Tuple[int, int], progress: bool = True,
                       **backend_options: Any) -> Dict[str, Any]:
    """mAP50-95 and mAP50 of ``config`` on the dataset yaml ``data`` (val split, conf 0.001, IoU 0.6).

    A separate detector is loaded at the validation thresholds, with the same backend and input size.

    Returns:
        ``{"map50_95", "map50", "images", "boxes"}``.
    """
    from edge_detect.detector import Detector
    from edge_detect.evaluate import evaluate

    with Detector(config.model, conf=0.001, iou=0.6, max_det=300, backend=config.backend, imgsz=imgsz,
                  auto=False, **backend_options) as det:
        res = evaluate(det, data, imgsz=None, conf=0.001, iou=0.6, max_det=300, progress=progress)
    return {"map50_95": float(res["map50_95"]), "map50": float(res["map50"]),
            "images": int(res.get("images", 0)), "boxes": int(res.get("boxes", 0))}


# ---------------------------------------------------------------------------------------------- driver
@dataclass
class BenchReport:
    """Everything one ``bench`` run measured: system info, settings, results and skipped configurations."""

    system: Dict[str, Any]
    settings: Dict[str, Any] = field(default_factory=dict)
    results: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (``nan`` -> ``None``) following :data:`REPORT_SCHEMA`."""
        return nan_to_none({"schema": SCHEMA_VERSION, "system": self.system, "settings": self.settings,
                            "results": self.results, "skipped": self.skipped})


def _skip(report: BenchReport, config: BenchConfig, reason: str) -> None:
    LOGGER.warning("skipping %s: %s", config.describe(), reason)
    report.skipped.append({"model": Path(config.model).name, "model_path": str(config.model),
                           "backend": config.backend, "imgsz": list(config.imgsz) if config.imgsz else None,
                           "batch": config.batch, "reason": reason})


def _check_shape(detector: Any, config: BenchConfig) -> Optional[str]:
    """Why ``detector`` cannot run ``config`` (static shape or batch mismatch), or ``None``."""
    hw = tuple(int(v) for v in detector.input_hw)
    if config.imgsz is not None and hw != tuple(config.imgsz):
        return (f"model input is {hw[0]}x{hw[1]} but {config.imgsz[0]}x{config.imgsz[1]} was asked; "
                f"export a dynamic model (edge-detect export --dynamic) to bench other sizes")
    spec = getattr(getattr(detector, "backend", None), "input_spec", None)
    static_batch = int(spec.batch) if spec is not None else -1
    if static_batch > 0 and static_batch != config.batch:
        return (f"model has a static batch of {static_batch} but batch {config.batch} was asked; "
                f"export with a dynamic batch axis to bench batch {config.batch}")
    return None


def bench_config(config: BenchConfig, *, source: Optional[str] = None, data: Optional[PathLike] = None,
                 warmup: int = 10, iters: int = 100, max_frames: Optional[int] = None, sinks: Sequence[str] = (),
                 progress: bool = True, accuracy_cache: Optional[Dict[Any, Dict[str, Any]]] = None,
                 **backend_options: Any) -> Dict[str, Any]:
    """Measure one configuration and return its result entry (see the module doc).

    Raises:
        EdgeDetectError: the configuration cannot run here (callers skip it with the message).
    """
    from edge_detect.detector import Detector

    # auto=False: every frame is letterboxed to exactly the configured size, as in the inference-only run
    det = Detector(config.model, backend=config.backend, imgsz=config.imgsz, auto=False, **backend_options)
    stream_note = None
    if config.imgsz is None and source is not None and det.dynamic_hw:
        hw = stream_shape(source, det.input_hw, det.metadata.stride)
        if hw is not None and hw != tuple(det.input_hw):
            # like `run`: a dynamic model takes the minimum rectangle of the stream's aspect ratio
            stream_note = f"input follows the stream: {hw[0]}x{hw[1]} (dynamic model, no --imgsz)"
            det.input_hw = hw
            config = BenchConfig(config.model, config.backend, hw, config.batch)
    with det:
        reason = _check_shape(det, config)
        if reason:
            raise BackendUnavailableError(reason)
        entry = _entry(det, config)
        if stream_note:
            entry["notes"].append(stream_note)
        entry["inference"] = benchmark_inference(det, config.batch, warmup=warmup, iters=iters, progress=progress)
        LOGGER.info("%s: inference %.1f images/s, p50 %.2f ms", config.describe(), entry["inference"]["fps"],
                    entry["inference"]["p50_ms"])
        if source is not None:
            before = entry["inference"]["fps"]
            entry["e2e"] = benchmark_e2e(det, source, sinks=sinks, max_frames=max_frames, inference_fps=before,
                                         progress=progress, batch=config.batch)
            # the machine's speed drifts between measurements: time inference-only again right after the
            # end-to-end run and compare with the mean of both (both values are reported)
            after = benchmark_inference(det, config.batch, warmup=min(warmup, 5), iters=iters,
                                        progress=progress)["fps"]
            mean_fps = (before + after) / 2
            entry["e2e"].update(inference_fps_before=before, inference_fps_after=after,
                                ratio_to_inference=entry["e2e"]["fps"] / mean_fps if mean_fps > 0 else math.nan)
    if data is not None:
        hw = (int(entry["imgsz"][0]), int(entry["imgsz"][1]))
        key = (str(config.model), entry["backend"], hw)
        cache = accuracy_cache if accuracy_cache is not None else {}
        if key not in cache:
            cache[key] = benchmark_accuracy(config, data, hw, progress=progress, **backend_options)
        entry["accuracy"] = cache[key]
    return entry


def stream_shape(source: str, input_hw: Tuple[int, int], stride: int = 32) -> Optional[Tuple[int, int]]:
    """The ``(h, w)`` input a dynamic-shape model gets for ``source`` in ``run`` (minimum-rectangle letterbox of
    the stream's frame size into ``input_hw``), or ``None`` when the frame size cannot be read up front.

    Example: a 1280x720 video into 640x640 with stride 32 -> ``(384, 640)``.
    """
    import cv2

    from edge_detect.preprocess import letterbox_shape

    if not Path(str(source)).is_file():  # cameras and streams: the shape is known only once they run
        return None
    cap = cv2.VideoCapture(str(source))
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        return None
    _, unpad, (dw, dh) = letterbox_shape((h, w), input_hw, auto=True, stride=stride)
    return int(unpad[1] + round(2 * dh)), int(unpad[0] + round(2 * dw))


def _entry(detector: Any, config: BenchConfig) -> Dict[str, Any]:
    """The descriptive part of a result entry: model, backend, precision, input size, batch, layout."""
    meta = detector.metadata
    backend = getattr(getattr(detector, "backend", None), "name", None) or config.backend
    return {"model": Path(config.model).name, "model_path": str(config.model),
            "backend": backend or _suffix_backend(config.model),
            "precision": getattr(getattr(detector, "backend", None), "precision", None) or meta.precision,
            "imgsz": [int(v) for v in detector.input_hw], "batch": config.batch,
            "output_layout": meta.output_layout, "input_format": meta.input_format, "notes": []}


def _suffix_backend(model: PathLike) -> str:
    from edge_detect.backends.base import backend_for_path

    return backend_for_path(model)


def _check_inputs(source: Optional[str], data: Optional[PathLike]) -> None:
    """Fail before any measurement when a local video file or the dataset yaml does not exist."""
    src = None if source is None else str(source)
    looks_local = src is not None and not any(t in src for t in ("://", "!")) and not src.isdigit()
    if looks_local and not Path(src).exists():  # type: ignore[arg-type]
        raise SourceError(f"bench source: expected an existing video file, camera index or stream URI, got {src}")
    if data is not None and not Path(data).is_file():
        raise DataError(f"bench data: expected a dataset yaml file, got {data} (not found)")


def run_benchmark(configs: Sequence[BenchConfig], *, source: Optional[str] = None, data: Optional[PathLike] = None,
                  warmup: int = 10, iters: int = 100, max_frames: Optional[int] = None, sinks: Sequence[str] = (),
                  threads: Optional[int] = None, progress: bool = True,
                  system: Optional[Dict[str, Any]] = None,
                  backend_options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> BenchReport:
    """Measure every configuration; the ones that cannot run here are skipped with a reason.

    Args:
        configs: from :func:`expand_configs`.
        source: video for the end-to-end run (omit to skip it).
        data: dataset yaml for accuracy (omit to skip it).
        warmup, iters: inference-only warm-up and timed calls.
        max_frames: cap on end-to-end frames.
        sinks: sink URIs for the end-to-end run (no display).
        threads: backend intra-op threads (``None`` = backend default).
        backend_options: extra options per backend name, e.g. ``{"openvino": {"precision": "int8"}}``; given
            to the configurations that run on that backend only.
        system: system info to record (default: :func:`edge_detect.sysinfo.system_info` now).

    Returns:
        a :class:`BenchReport`; ``report.results`` follows the order of ``configs``.
    """
    from tqdm.auto import tqdm

    from edge_detect.sysinfo import system_info

    if warmup < 0 or iters < 1:
        raise ConfigError(f"bench: expected warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"bench max_frames: expected >= 1, got {max_frames}")
    _check_sinks(sinks)
    _check_inputs(source, data)
    options: Dict[str, Any] = {} if threads is None else {"threads": int(threads)}
    report = BenchReport(system=system if system is not None else system_info(), settings={
        "warmup": warmup, "iters": iters, "source": None if source is None else str(source),
        "max_frames": max_frames, "sinks": list(sinks), "data": None if data is None else str(data),
        "threads": threads, "backend_options": {k: dict(v) for k, v in (backend_options or {}).items() if v}})
    cache: Dict[Any, Dict[str, Any]] = {}
    for config in tqdm(configs, desc="bench", unit="config", disable=not progress or len(configs) < 2):
        try:
            per_backend = dict((backend_options or {}).get(config.backend or _suffix_backend(config.model)) or {})
            report.results.append(bench_config(config, source=source, data=data, warmup=warmup, iters=iters,
                                               max_frames=max_frames, sinks=sinks, progress=progress,
                                               accuracy_cache=cache, **options, **per_backend))
        except (EdgeDetectError, ImportError) as exc:  # backend/precision/shape not available here
            _skip(report, config, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    try:
        report.settings["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not available on this OS
        report.settings["load_avg_end"] = None
    return report


# ---------------------------------------------------------------------------------------------- rendering
def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _label(r: Mapping[str, Any]) -> str:
    return f"{r['model']} {r['backend']} {r['precision']} {r['imgsz'][0]}x{r['imgsz'][1]} b{r['batch']}"


_COLUMNS = ("model", "backend", "precision", "imgsz", "batch", "inf FPS", "mean ms", "p50 ms", "p95 ms",
            "p99 ms", "e2e FPS", "e2e/inf", "g2g p50/p95/p99 ms", "dropped", "mAP50-95", "mAP50")


def _rows(report: Mapping[str, Any]) -> List[List[str]]:
    rows = []
    for r in report["results"]:
        inf, e2e, acc = r["inference"], r.get("e2e") or {}, r.get("accuracy") or {}
        lat = e2e.get("latency_ms") or {}
        rows.append([
            r["model"], r["backend"], r["precision"], f"{r['imgsz'][0]}x{r['imgsz'][1]}", str(r["batch"]),
            _f(inf["fps"]), _f(inf["mean_ms"], 2), _f(inf["p50_ms"], 2), _f(inf["p95_ms"], 2),
            _f(inf["p99_ms"], 2), _f(e2e.get("fps")), _f(e2e.get("ratio_to_inference"), 2),
            "/".join(_f(lat.get(k)) for k in ("p50", "p95", "p99")) if lat else "-",
            str(e2e["dropped"]) if e2e else "-", _f(acc.get("map50_95"), 3), _f(acc.get("map50"), 3),
        ])
    return rows


def _as_dict(report: Union["BenchReport", Mapping[str, Any]]) -> Mapping[str, Any]:
    return report.to_dict() if isinstance(report, BenchReport) else report


def format_table(report: Union[BenchReport, Mapping[str, Any]]) -> str:
    """Plain-text table for the terminal, one row per result, then the skipped configurations."""
    d = _as_dict(report)
    rows = [list(_COLUMNS)] + _rows(d)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"skipped {s['model']} ({s.get('backend') or 'auto'}): {s['reason']}" for s in d.get("skipped", [])]
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int) -> List[str]:
    """Markdown table; the first ``text_columns`` columns left-aligned, the (numeric) rest right-aligned."""
    align = ["---" if i < text_columns else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _name(path: Optional[str]) -> str:
    return Path(path).name if path else "-"


def to_markdown(report: Union[BenchReport, Mapping[str, Any]], title: Optional[str] = None,
                heading: str = "###") -> str:
    """Markdown: system line, settings and load, results table, per-stage e2e table, skipped configurations."""
    from edge_detect.sysinfo import summary_line

    d = _as_dict(report)
    lines = [f"{heading} {title}", ""] if title else []
    lines += [f"System: {summary_line(d['system'])}", ""]
    s = d.get("settings") or {}
    load0 = (d["system"].get("cpu") or {}).get("load_avg")
    load1 = s.get("load_avg_end")
    lines += [f"Settings: warm-up {s.get('warmup')}, {s.get('iters')} timed runs, source {_name(s.get('source'))}"
              f" (max frames {s.get('max_frames') or 'all'}), data {_name(s.get('data'))}, "
              f"threads {s.get('threads') or 'default'}"
              + (f"; load average (1/5/15 min) {load0} at start, {load1} at end" if load0 and load1 else ""), ""]
    lines += _md_table(_COLUMNS, _rows(d), text_columns=4)
    e2e_rows = [[_label(r)] + [f"{_f(st['mean_ms'], 2)} / {_f(st['p95_ms'], 2)}"
                               for st in (r["e2e"]["stages"][k] for k in STAGES)]
                for r in d["results"] if r.get("e2e")]
    if e2e_rows:
        lines += ["", "Per-stage end-to-end time, mean / p95 ms:", ""]
        lines += _md_table(["configuration", *STAGES], e2e_rows, text_columns=1)
    for sk in d.get("skipped", []):
        lines.append(f"\n- skipped `{sk['model']}` ({sk.get('backend') or 'auto'}): {sk['reason']}")
    return "\n".join(lines) + "\n"


def plot_report(report: Union[BenchReport, Mapping[str, Any]], path: PathLike) -> Path:
    """PNG chart: throughput (inference-only and e2e FPS) and latency (p50/p95/p99 ms) per configuration.

    Uses matplotlib's object-oriented API with the Agg canvas (no display, no global pyplot state).
    """
    require("matplotlib", "bench")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = _as_dict(report)
    results = d["results"]
    if not results:
        raise DataError("bench plot: expected at least one result, got none (all configurations skipped?)")
    labels = [_label(r) for r in results]
    y = np.arange(len(results))
    fig = Figure(figsize=(11, PLOT_BASE_IN + PLOT_ROW_IN * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    ax_fps, ax_lat = fig.subplots(1, 2, sharey=True)
    inf = [r["inference"]["fps"] or 0.0 for r in results]
    e2e = [(r.get("e2e") or {}).get("fps") or 0.0 for r in results]
    h = 0.38
    for offset, values, name, color in ((-h / 2, inf, "inference-only FPS", "C0"),
                                        (h / 2, e2e, "end-to-end FPS", "C1")):
        bars = ax_fps.barh(y + offset, values, h, label=name, color=color)
        ax_fps.bar_label(bars, labels=[f"{v:.1f}" if v else "n/a" for v in values], fontsize="x-small",
                         padding=2)
    ax_fps.set_xlabel("images / s (higher is better)")
    ax_fps.set_yticks(y, labels)
    ax_fps.invert_yaxis()
    ax_fps.margins(x=0.15)
    h3 = 0.27
    for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        bars = ax_lat.barh(y + (i - 1) * h3, [r["inference"][q] or 0.0 for r in results], h3,
                           label=f"inference {q[:3]} ms", color=f"C{i + 2}")
        ax_lat.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)
    ax_lat.set_xlabel("inference latency per batch, ms (lower is better)")
    ax_lat.margins(x=0.15)
    handles = [h for ax in (ax_fps, ax_lat) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False)
    fig.suptitle("edge-detect bench")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def write_report(report: BenchReport, json_path: Optional[PathLike] = None,
                 markdown_path: Optional[PathLike] = None, plot_path: Optional[PathLike] = None) -> Dict[str, Path]:
    """Write the JSON, Markdown and PNG outputs that are asked for; returns their paths.

    The JSON is checked against :data:`REPORT_SCHEMA` first when ``jsonschema`` is installed.
    """
    written: Dict[str, Path] = {}
    d = report.to_dict()
    if json_path is not None:
        if importlib.util.find_spec("jsonschema") is not None:  # self-check; optional dependency
            validate_report(d)
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(d, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        written["json"] = p
    if markdown_path is not None:
        p = Path(markdown_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(to_markdown(d), encoding="utf-8")
        written["markdown"] = p
    if plot_path is not None:
        written["plot"] = plot_report(d, plot_path)
    return written
