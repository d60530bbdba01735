"""``edge-detect bench``: inference-only, end-to-end and accuracy benchmark of one or several models."""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, List, Optional

from edge_detect.backends.base import backend_names
from edge_detect.cli.detect import add_device_args, add_openvino_args, openvino_options
from edge_detect.config import parse_imgsz
from edge_detect.errors import ConfigError
from edge_detect.cli._types import non_negative_int, positive_int

LOGGER = logging.getLogger(__name__)

_EPILOG = """\
examples:
  edge-detect bench --model yolov5n.onnx --source video.mp4 --json bench.json
  edge-detect bench --model yolov5n-dyn.onnx --imgsz 640 384x640 --batch 1 4 --markdown bench.md --plot bench.png
  edge-detect bench --model yolov5n.onnx --model yolov5n-int8.onnx --data coco128.yaml --json acc.json
  edge-detect bench --model yolov5n.onnx --source scene.mp4 --threads 1 --detect always --detect motion \\
      --detect always@5 --line middle=240,100,240,360 --markdown gating.md   # CPU boxes: README "CPU boxes"

Every combination of --model x --backend x --imgsz x --batch is measured; a combination that cannot run
here (backend or precision unavailable, static model at another size) is skipped with a note.
The JSON keys are documented in the edge_detect.bench module docstring and BENCHMARKS.md.
"""


def _imgsz(text: str) -> Any:
    try:
        return parse_imgsz(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` and its flags."""
    p = subparsers.add_parser(
        "bench", help="measure FPS, latency percentiles and accuracy of models",
        description="Benchmark models: inference-only latency (mean, p50/p90/p95/p99) and throughput, "
                    "end-to-end FPS on a video with per-stage and glass-to-glass latency, and mAP on a dataset.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="PATH",
                   help="model file (.onnx, .xml, .engine, .pt); repeat to compare several")
    p.add_argument("--backend", action="append", choices=backend_names(), default=None,
                   help="inference backend; repeat to compare (default: chosen from each model's suffix)")
    p.add_argument("--imgsz", nargs="+", type=_imgsz, default=None, metavar="S|HxW",
                   help="network input size(s), e.g. 640 or 384x640 (default: the model's own size; "
                        "other sizes need a dynamic model)")
    p.add_argument("--batch", nargs="+", type=positive_int, default=[1], metavar="N",
                   help="batch size(s) for inference-only timing (default: 1; >1 needs a dynamic-batch model)")
    p.add_argument("--warmup", type=non_negative_int, default=10, metavar="K",
                   help="untimed warm-up calls before timing (default: 10)")
    p.add_argument("--iters", type=positive_int, default=100, metavar="N",
                   help="timed inference calls per configuration (default: 100)")
    p.add_argument("--source", default=None, metavar="VIDEO",
                   help="video file / camera / stream for the end-to-end run (omit to skip it)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="stop the end-to-end run after N frames (default: the whole video)")
    p.add_argument("--sink", action="append", default=[], metavar="URI",
                   help="sink for the end-to-end run, e.g. out.mp4 or dets.jsonl; repeatable "
                        "(default: none; a display is not allowed since it would be timed)")
    d = p.add_argument_group("detect settings (README 'CPU boxes'): with --source, one run per setting instead of "
                             "the single end-to-end run, compared with the first")
    d.add_argument("--detect", action="append", default=None, metavar="MODE[@FPS][+regions]",
                   help="always | motion, optionally at most FPS inference calls a second (always@5), and for "
                        "motion optionally region inference (motion+regions); repeat to compare (the first is the "
                        "reference)")
    d.add_argument("--line", action="append", default=None, metavar="NAME=x1,y1,x2,y2",
                   help="counting line for the detect runs (repeatable; tracking is on in those runs)")
    d.add_argument("--app-config", default=None, metavar="APP.yaml",
                   help="app config for the detect runs: its motion section, tracker options, lines (its sources "
                        "are replaced by --source)")
    d.add_argument("--repeat", type=positive_int, default=1, metavar="K",
                   help="rounds of the detect runs, settings interleaved; CPU figures are the median (default: 1)")
    p.add_argument("--data", default=None, metavar="DATA.yaml",
                   help="dataset yaml: also report mAP50-95 and mAP50 on its val split")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="backend intra-op threads (default: the backend's own choice)")
    dev = p.add_argument_group("device (cpu / cuda[:N] apply to the torch, onnxruntime and tensorrt configurations, "
                               "an OpenVINO device name to the openvino ones)")
    add_device_args(dev)
    ov = p.add_argument_group("OpenVINO (applies to the openvino configurations only)")
    add_openvino_args(ov, device=False)
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON (stable keys)")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the results as a Markdown table")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="write a PNG chart of FPS and latency per configuration")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def bench_backend_options(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """The options of each backend from ``--device`` / ``--half`` / ``--tf32`` and the OpenVINO flags.

    ``--device cpu|cuda[:N]`` goes to the torch, onnxruntime and (CUDA only) tensorrt configurations, ``--half`` to
    torch, ``--tf32`` to torch and onnxruntime; any other device name is an OpenVINO device.

    Raises:
        ConfigError: ``--half`` / ``--tf32`` without a CUDA device (one line).
    """
    from edge_detect.devices import device_options, parse_device

    out: Dict[str, Dict[str, Any]] = {"openvino": openvino_options(args, "openvino")}
    device, half, tf32 = args.device, bool(args.half), bool(args.tf32)
    parsed = parse_device(device)
    if device is not None and parsed is None:  # an OpenVINO device name
        out["openvino"].update(device_options("openvino", device))
        device = None
    path = getattr(args, "device_path", None)
    on_cuda = parsed is not None and parsed[0] == "cuda"
    out["torch"] = device_options("torch", device, half, tf32, path)
    out["onnxruntime"] = device_options("onnxruntime", device, tf32=tf32, device_path=path if on_cuda else None)
    if on_cuda:
        out["tensorrt"] = device_options("tensorrt", device, device_path=path)
    return out


def _detect(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The detect settings of ``--detect`` / ``--line`` / ``--app-config`` / ``--repeat`` (``None`` without
    ``--detect``; ConfigError: a line flag without it)."""
    if not args.detect:
        if args.line or args.app_config:
            raise ConfigError("bench --line / --app-config: expected --detect MODE[@FPS] too, got none")
        return None
    from edge_detect.stream.processors._common import parse_named_numbers

    lines = dict(parse_named_numbers(text, "--line", count=4) for text in args.line or ())
    return {"specs": list(args.detect), "lines": lines or None, "app_config": args.app_config,
            "repeat": args.repeat}


def main(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table and write the requested files. Exit 0 if any config ran, else 1."""
    from edge_detect.bench import expand_configs, format_table, run_benchmark, write_report
    from edge_detect.sysinfo import summary_line

    backends: List[Optional[str]] = list(args.backend) if args.backend else [None]
    configs = expand_configs(args.model, backends, args.imgsz or [None], args.batch)
    report = run_benchmark(configs, source=args.source, data=args.data, warmup=args.warmup, iters=args.iters,
                           max_frames=args.max_frames, sinks=args.sink, threads=args.threads,
                           backend_options=bench_backend_options(args),
                           progress=not args.no_progress, detect=_detect(args))
    print(summary_line(report.system))
    print(format_table(report))
    for kind, path in write_report(report, args.json, args.markdown, args.plot).items():
        LOGGER.info("wrote %s: %s", kind, path)
    return 0 if report.results else 1
