"""Benchmark: inference-only latency, end-to-end video throughput and accuracy, per model/backend/shape.

Measurements per configuration (model file x backend x input size x batch), all on one loaded
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
* **detect settings** (with a ``source`` and ``detect`` specs, ``--detect always --detect motion@5``): instead of
  the one end-to-end run, one run per setting through the app's pipeline (gating, tracking, counting as in
  ``run``), with inference calls, CPU per frame per stage, line counts and tracks compared with the first setting
  (:mod:`.detect`; ``e2e`` is then the first setting's run).
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
        "tf32": bool | null,                # CUDA FP32 with TensorFloat-32 (--tf32); false = strict FP32 (the
                                            # default); null = the backend has no such switch
        "device": str | null,               # the backend's device (cuda:0, cpu, an OpenVINO device), if it has one
        "imgsz": [h, w],                    # network input in pixels
        "batch": int,
        "inference": {"fps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",   # fps = images/s
                      "min_ms", "max_ms", "std_ms", "warmup", "iters"},
        "output_layout": str, "input_format": str,                                 # from the metadata
        "e2e": {"fps", "frames", "frames_read", "dropped", "corrupt", "ratio_to_inference",  # with a source
                "inference_fps_before", "inference_fps_after",                      # ratio uses their mean
                "mean_batch",                                                       # frames per inference call
                "cpu_ms_per_frame": {"decode" | "preprocess" | "inference" | "postprocess" | "sinks" | "total"},
                "latency_ms": {"p50", "p95", "p99"},                                # glass-to-glass
                "stages": {"decode" | "preprocess" | "inference" | "postprocess" | "sinks":
                           {"mean_ms", "p95_ms"}}},
        "accuracy": {"map50_95", "map50", "images", "boxes"},                       # with data
        "detect": [{"spec", "mode", "fps", "inference_calls", "skipped_frames",     # with --detect: one per
                    "motion_frames", "cpu_ms_per_frame", "lines", "tracks",         # setting, compared with the
                    "vs_first": {"inference_calls", "cpu", "lines_equal",           # first (edge_detect.bench.
                                 "tracks_found", "same_output_frames"}, ...}],      # detect)
        "notes": [str, ...]
      }],
      "skipped": [{"model", "backend", "imgsz", "batch", "reason"}]
    }

Numbers are floats in milliseconds or per second; a value that could not be measured is ``null``.
Modules: :mod:`.measure` (configurations, timing, the driver) and :mod:`.report` (schema, table, Markdown,
plot, files). :data:`REPORT_SCHEMA` is the JSON Schema of the stable part; :func:`validate_report` checks a
report with it.
"""
from __future__ import annotations

from edge_detect.bench.measure import (BenchConfig, bench_config, benchmark_accuracy, benchmark_e2e,
                                       benchmark_inference, e2e_result, expand_configs, inference_result,
                                       latency_stats, run_benchmark, stream_shape, synthetic_frame,
                                       time_inference)
from edge_detect.bench.parity import ImageMatch, MatchReport, match_detections, match_image
from edge_detect.bench.report import (PLOT_BASE_IN, PLOT_ROW_IN, REPORT_SCHEMA, SCHEMA_VERSION, STAGES, BenchReport,
                                      format_table, plot_report, to_markdown, validate_report, write_report)
from edge_detect.config import parse_imgsz

__all__ = [
    "BenchConfig", "BenchReport", "REPORT_SCHEMA", "STAGES", "parse_imgsz", "expand_configs", "latency_stats",
    "time_inference", "benchmark_inference", "benchmark_e2e", "benchmark_accuracy", "run_benchmark",
    "validate_report", "format_table", "to_markdown", "plot_report", "write_report", "bench_config", "e2e_result",
    "inference_result", "synthetic_frame", "stream_shape", "SCHEMA_VERSION", "PLOT_BASE_IN", "PLOT_ROW_IN",
    "match_detections", "match_image", "ImageMatch", "MatchReport",
]
