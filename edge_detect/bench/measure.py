"""Bench measurements: configurations (:class:`BenchConfig`, :func:`expand_configs`), inference-only timing,
end-to-end runs through the pipeline, accuracy, and the driver :func:`run_benchmark` that fills a
:class:`~edge_detect.bench.report.BenchReport`. What is measured and how is described in :mod:`edge_detect.bench`."""
from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_detect.errors import BackendUnavailableError, ConfigError, DataError, EdgeDetectError, SourceError
from edge_detect.bench.report import STAGES, BenchReport
from edge_detect.stats import percentiles
from edge_detect.paths import PathLike

__all__ = ["BenchConfig", "expand_configs", "latency_stats", "time_inference", "inference_result", "synthetic_frame",
           "benchmark_inference", "e2e_result", "benchmark_e2e", "benchmark_accuracy", "bench_config",
           "run_benchmark", "stream_shape"]

LOGGER = logging.getLogger(__name__)


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


def time_inference(infer: Callable[[Any], Any], batch: Any, warmup: int = 10, iters: int = 100,
                   progress: bool = True, desc: str = "inference",
                   prepare: Optional[Callable[[], Any]] = None) -> np.ndarray:
    """Call ``infer(batch)`` ``warmup`` times untimed, then ``iters`` times timed.

    The garbage collector is paused during the timed loop so a collection does not land in a sample.

    Args:
        infer: the function to time (typically ``detector.infer`` / ``backend.infer``).
        batch: the preallocated input, passed unchanged every call.
        warmup: untimed calls first (allocations, lazy initialisation, caches, clocks).
        iters: timed calls (>= 1).
        prepare: for inputs one call consumes (a device batch): called untimed before each call, its result is
            the call's input instead of ``batch``.

    Returns:
        float64 ``(iters,)`` latencies in milliseconds, in call order.

    Raises:
        ConfigError: ``warmup < 0`` or ``iters < 1``.
    """
    if warmup < 0 or iters < 1:
        raise ConfigError(f"bench: expected warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    from edge_detect.progress import progress as tqdm

    for _ in tqdm(range(warmup), desc=f"{desc} warm-up", disable=not progress, leave=False):
        infer(batch if prepare is None else prepare())
    samples = np.empty(iters, dtype=np.float64)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with tqdm(total=iters, desc=desc, unit="it", disable=not progress, leave=False) as bar:
            for i in range(iters):
                x = batch if prepare is None else prepare()
                t0 = time.perf_counter()
                infer(x)
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
    ``detector.infer`` is timed. On the device path (``detector.device_path``) each call consumes its device batch,
    so one is prepared untimed before each call, and the timed call is inference plus NMS on the device with only
    the boxes coming back (it also waits for that batch's letterbox kernels when they have not finished).

    Returns:
        ``{"fps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "warmup",
        "iters"}``; latencies are per batch in ms, ``fps`` is images/s.
    """
    hw = tuple(int(v) for v in detector.input_hw)
    image = synthetic_frame(hw) if frame is None else frame  # type: ignore[arg-type]
    desc = f"inference b{batch_size} {hw[0]}x{hw[1]}"
    if getattr(detector, "device_path", False):
        samples = time_inference(detector.infer, None, warmup=warmup, iters=iters, progress=progress, desc=desc,
                                 prepare=lambda: detector.preprocess([image] * batch_size)[0])
        return inference_result(samples, batch_size, warmup)
    batch, _ = detector.preprocess([image] * batch_size)
    batch = np.ascontiguousarray(batch)
    samples = time_inference(detector.infer, batch, warmup=warmup, iters=iters, progress=progress, desc=desc)
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
        "cpu_ms_per_frame": {k: float(v) for k, v in (summary.get("cpu_ms_per_frame") or {}).items()},
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
                 detect: Optional[Mapping[str, Any]] = None, **backend_options: Any) -> Dict[str, Any]:
    """Measure one configuration and return its result entry (see the module doc).

    ``detect``: ``{"specs": ["always", "motion@5", ...], "app_config", "lines", "repeat"}``: instead of one
    end-to-end run, one per detect setting (:func:`edge_detect.bench.detect.benchmark_detect`; the result's
    ``detect`` list, its ``e2e`` the first setting's run).

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
            if detect:
                from edge_detect.bench.detect import benchmark_detect

                entry["detect"] = benchmark_detect(det, source, detect["specs"], app_config=detect.get("app_config"),
                                                   lines=detect.get("lines"), max_frames=max_frames, sinks=sinks,
                                                   repeat=int(detect.get("repeat") or 1), batch=config.batch,
                                                   progress=progress, inference_fps=before)
                entry["e2e"] = entry["detect"][0]["e2e"]
            else:
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
            "tf32": _tf32(detector), "device": _device(detector),
            "output_layout": meta.output_layout, "input_format": meta.input_format, "notes": []}


def _tf32(detector: Any) -> Optional[bool]:
    """Whether the run let CUDA FP32 use TF32 (the backend's ``tf32``); ``None`` for backends without the switch."""
    value = getattr(getattr(detector, "backend", None), "tf32", None)
    return None if value is None else bool(value)


def _device(detector: Any) -> Optional[str]:
    """The backend's device as text (``"cuda:0"``, ``"cpu"``, an OpenVINO device), or ``None`` when it has none."""
    value = getattr(getattr(detector, "backend", None), "device", None)
    return None if value is None else str(value)


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
                  backend_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
                  detect: Optional[Mapping[str, Any]] = None) -> BenchReport:
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
        detect: detect settings to compare on ``source`` (:func:`bench_config`; needs a source).

    Returns:
        a :class:`BenchReport`; ``report.results`` follows the order of ``configs``.
    """
    from edge_detect.progress import progress as tqdm
    from edge_detect.sysinfo import system_info

    if warmup < 0 or iters < 1:
        raise ConfigError(f"bench: expected warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"bench max_frames: expected >= 1, got {max_frames}")
    _check_sinks(sinks)
    _check_inputs(source, data)
    if detect:
        from edge_detect.bench.detect import parse_detect_spec

        for spec in detect["specs"]:
            parse_detect_spec(spec)
        if source is None:
            raise ConfigError("bench --detect: expected --source too (the settings are compared on a video), got "
                              "none")
    options: Dict[str, Any] = {} if threads is None else {"threads": int(threads)}
    report = BenchReport(system=system if system is not None else system_info(), settings={
        "warmup": warmup, "iters": iters, "source": None if source is None else str(source),
        "max_frames": max_frames, "sinks": list(sinks), "data": None if data is None else str(data),
        "threads": threads, "backend_options": {k: dict(v) for k, v in (backend_options or {}).items() if v},
        **({"detect": {k: v for k, v in detect.items()}} if detect else {})})
    cache: Dict[Any, Dict[str, Any]] = {}
    for config in tqdm(configs, desc="bench", unit="config", disable=not progress or len(configs) < 2):
        try:
            per_backend = dict((backend_options or {}).get(config.backend or _suffix_backend(config.model)) or {})
            report.results.append(bench_config(config, source=source, data=data, warmup=warmup, iters=iters,
                                               max_frames=max_frames, sinks=sinks, progress=progress,
                                               accuracy_cache=cache, detect=detect, **options, **per_backend))
        except (EdgeDetectError, ImportError) as exc:  # backend/precision/shape not available here
            _skip(report, config, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    try:
        report.settings["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not available on this OS
        report.settings["load_avg_end"] = None
    return report
