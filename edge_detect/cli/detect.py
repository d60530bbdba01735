"""``edge-detect detect``: detect objects in image files, save annotated images and YOLO label files.

The command is argument parsing over the run pipeline: an image source (:func:`~edge_detect.stream.sources.
open_images`) into the ``images://``, ``yolo-labels://`` and ``coco://`` sinks of :mod:`edge_detect.sinks.files`.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_detect import paths
from edge_detect.backends.base import backend_names
from edge_detect.cli._types import imgsz_option
from edge_detect.errors import ConfigError, DataError
from edge_detect.sinks.base import Sink
from edge_detect.types import Result

LOGGER = logging.getLogger(__name__)

_EPILOG = """\
examples:
  edge-detect detect --model yolov5n.onnx --source bus.jpg
  edge-detect detect --model yolov5n.onnx --source images/ --conf 0.4 --classes person car --output out/
  edge-detect detect --model yolov5n.onnx --source 'frames/*.png' --save-json preds.json --no-save-labels

Outputs in --output: the annotated images (same names) and labels/<stem>.txt with one row per detection
"class cx cy w h conf" (box centre and size normalized by the image size). Images that cannot be decoded are
skipped with a warning and counted. --output must not be an input folder (nor the folder of an input image):
the annotated images keep their names. Videos, cameras and streams: use `edge-detect run`.
"""



def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``detect`` and its flags."""
    p = subparsers.add_parser(
        "detect", help="detect objects in images (files, folders, globs)",
        description="Run a model on image files; save annotated images, YOLO label files and optionally JSON.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--source", required=True, nargs="+", metavar="IMAGE|DIR|GLOB",
                   help="image file(s), folder(s) (searched recursively) or glob pattern(s)")
    p.add_argument("--conf", type=float, default=0.25, metavar="T",
                   help="confidence threshold: objectness and score must exceed it (default: 0.25)")
    p.add_argument("--iou", type=float, default=0.45, metavar="T", help="NMS IoU threshold (default: 0.45)")
    p.add_argument("--max-det", type=int, default=1000, metavar="N",
                   help="most detections per image (default: 1000)")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME|ID",
                   help="keep only these classes, by name or id, e.g. --classes person car or --classes 0 2 "
                        "(default: all)")
    p.add_argument("--agnostic", action="store_true",
                   help="class-agnostic NMS (boxes of different classes suppress each other)")
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help="output folder (default: a new runs/detect/expN)")
    p.add_argument("--save-json", type=Path, default=None, metavar="PRED.json",
                   help="also write all detections in the COCO results format: a list of {image_id (file stem), "
                        "category_id (class index), bbox [x, y, w, h] original pixels, score}")
    p.add_argument("--no-save-labels", action="store_true", help="do not write labels/<stem>.txt files")
    p.add_argument("--no-save-images", action="store_true", help="do not write annotated images")
    p.add_argument("--line-width", type=int, default=None, metavar="PX",
                   help="box line width in pixels (default: from the image size)")
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``detect`` and ``val``: model, backend, input size and ONNX Runtime options."""
    p.add_argument("--model", required=True, type=Path, metavar="PATH", help="model file (.onnx, .xml, .engine, .pt)")
    p.add_argument("--backend", choices=backend_names(), default=None,
                   help="inference backend (default: chosen from the model file suffix)")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="S",
                   help="input size: S or H W, multiples of 32, at most 4096; only for dynamic-shape models "
                        "(default: the model's own size)")
    p.add_argument("--force-imgsz", action="store_true", help="allow --imgsz sides above 4096 (memory grows "
                   "with the square of the size)")
    p.add_argument("--providers", nargs="+", default=None, metavar="P",
                   help="ONNX Runtime execution providers in priority order: cpu, cuda, tensorrt or full ORT "
                        "names (default: cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="ONNX Runtime / OpenVINO inference threads (default: the runtime's choice, one per core)")
    p.add_argument("--rebuild-on-mismatch", action="store_true",
                   help="TensorRT engines: rebuild from the recorded ONNX when the engine was built by another "
                        "TensorRT version or GPU (default: fail with a one-line explanation)")
    add_device_args(p)
    add_openvino_args(p, device=False)


def add_device_args(p: Any) -> None:
    """``--device``, ``--half``, ``--tf32``: where the model runs and in which precision (detect, val, bench; one
    line for ``run``). Routed per backend by :func:`edge_detect.devices.device_options`."""
    p.add_argument("--device", default=None, metavar="DEV",
                   help="where to run: cpu or cuda[:N] (GPU N) for .pt, .onnx (CUDA needs onnxruntime-gpu) and "
                        ".engine models; an OpenVINO device (CPU, GPU = Intel GPU, NPU, AUTO...) for .xml models "
                        "(default: cpu / CPU)")
    p.add_argument("--half", action="store_true",
                   help="FP16 inference of a .pt model on CUDA (needs --device cuda[:N]); .onnx / .engine models "
                        "get FP16 when exported (edge-detect export --half)")
    p.add_argument("--tf32", action="store_true",
                   help="let FP32 on CUDA use TensorFloat-32 tensor cores (faster on Ampere and later; boxes may "
                        "move by about a pixel; default: strict FP32, the CPU's detections)")
    p.add_argument("--device-path", action=argparse.BooleanOptionalAction, default=None,
                   help="the GPU-resident path: frames uploaded once, letterbox, inference and NMS on the GPU, only "
                        "boxes back (default: on for a .pt on CUDA, off for .onnx (needs --device cuda) and .engine; "
                        "--no-device-path keeps the CPU letterbox and NMS)")


def add_openvino_args(p: Any, device: bool = True) -> None:
    """``--precision``, ``--hint`` (and ``--device`` unless ``device=False``, for a parser that has
    :func:`add_device_args`): options of the OpenVINO backend (detect, val, run, bench)."""
    if device:
        p.add_argument("--device", default=None, metavar="DEV",
                       help="OpenVINO device: CPU, GPU (Intel iGPU), NPU, AUTO... (default: CPU)")
    p.add_argument("--precision", choices=OPENVINO_PRECISIONS, default=None,
                   help="OpenVINO inference precision, always passed as INFERENCE_PRECISION_HINT (default: int8 for "
                        "a quantized model, else fp32; never OpenVINO's own bf16 default)")
    p.add_argument("--hint", choices=("latency", "throughput"), default=None,
                   help="OpenVINO performance hint (default: latency)")


OPENVINO_PRECISIONS = ("fp32", "bf16", "fp16", "int8")
_OPENVINO_FLAGS = ("precision", "hint")


def openvino_options(args: argparse.Namespace, backend: Optional[str]) -> Dict[str, Any]:
    """``--precision`` / ``--hint`` when given, as backend options; ConfigError if given for another backend.
    (``--device`` is routed by :func:`device_flag_options`.)"""
    opts = {k: getattr(args, k) for k in _OPENVINO_FLAGS if getattr(args, k, None) is not None}
    if opts and backend not in (None, "openvino"):
        flags = ", ".join(f"--{k}" for k in opts)
        raise ConfigError(f"{flags}: expected the openvino backend (--backend openvino or an .xml model), "
                          f"got {backend}")
    return opts


def device_flag_options(args: argparse.Namespace, backend: str) -> Dict[str, Any]:
    """``--device`` / ``--half`` / ``--tf32`` as the options of ``backend`` (:func:`edge_detect.devices.
    device_options`); ConfigError for a combination that backend cannot take."""
    from edge_detect.devices import device_options

    return device_options(backend, getattr(args, "device", None), bool(getattr(args, "half", False)),
                          bool(getattr(args, "tf32", False)), getattr(args, "device_path", None))


def backend_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Backend keyword options from the parsed flags (only those given)."""
    from edge_detect.backends.base import backend_for_path

    name = args.backend or backend_for_path(args.model)
    dev_opts = {**openvino_options(args, name), **device_flag_options(args, name)}
    if name == "openvino":
        if args.providers:
            raise ConfigError("--providers: expected the onnxruntime backend, got openvino (use --device)")
        return {**dev_opts, **({"threads": args.threads} if args.threads is not None else {})}
    opts: Dict[str, Any] = {}
    if args.providers:
        opts["providers"] = args.providers
    if args.threads is not None:
        opts["threads"] = args.threads
    if getattr(args, "rebuild_on_mismatch", False):
        if name != "tensorrt":
            raise ConfigError(f"--rebuild-on-mismatch: expected a TensorRT engine, got {args.model}")
        return {"rebuild_on_mismatch": True, **dev_opts}
    if opts and name != "onnxruntime":
        raise ConfigError(f"--providers/--threads: expected the onnxruntime backend, got {name} for {args.model}")
    return {**opts, **dev_opts}


def imgsz_arg(values: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """``--imgsz`` values -> ``None`` or ``(h, w)`` (see :func:`edge_detect.cli._types.imgsz_option`)."""
    return imgsz_option(values)


def next_run_dir(base: Path = Path("runs/detect"), name: str = "exp") -> Path:
    """First free of ``base/exp``, ``base/exp2``, ``base/exp3``... (:func:`edge_detect.paths.next_run_dir`)."""
    return paths.next_run_dir(base, name)


class _Report(Sink):
    """Logs one line per image (``<file> WxH: 3 person, 1 car (12.3 ms)``) and counts the boxes."""

    name = "report"

    def __init__(self, names: Sequence[str]) -> None:
        self.names, self.boxes = tuple(names), 0

    def write(self, result: Result) -> None:
        frame, dets = result.frame, result.detections
        self.boxes += len(dets)
        ms = sum(frame.timings.get(k, 0.0) for k in ("preprocess", "inference", "postprocess"))
        counts = Counter(int(c) for c in dets.class_id)
        text = ", ".join(f"{n} {self.names[c] if 0 <= c < len(self.names) else c}"
                         for c, n in sorted(counts.items())) or "no detections"
        LOGGER.info("%s %dx%d: %s (%.1f ms)", frame.path, frame.image.shape[1], frame.image.shape[0], text, ms)


def main(args: argparse.Namespace) -> int:
    """Run ``detect``: the pipeline over an image source into image / label / COCO sinks; 0 when at least one
    image was processed."""
    from edge_detect.app_config import resolve_classes
    from edge_detect.datasets import list_images
    from edge_detect.detector import Detector
    from edge_detect.evaluate import image_ids
    from edge_detect.paths import check_outputs, input_paths
    from edge_detect.sinks import open_sink
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.stream.sources import open_images

    for src in args.source:
        if Path(src).suffix.lower() in paths.VIDEO_SUFFIXES and "://" not in str(src):  # `run` reads videos
            raise DataError(f"--source {src}: expected images, got a video; run the app on it with: "
                            f"edge-detect run --source {src}")
    files = list_images(args.source)
    if not files:
        raise DataError(f"no image files found in {' '.join(map(str, args.source))}")
    out_dir = args.output or next_run_dir()
    outputs: Dict[str, Any] = {"--output": out_dir}
    if args.save_json is not None:
        outputs["--save-json"] = args.save_json
    # an explicit --output may not be (inside) an input folder; the default runs/detect/expN is always new
    check_outputs(outputs, inputs=[*input_paths(args.source), *files], dirs=("--output",),
                  inside_inputs_ok=args.output is None)
    start = time.perf_counter()
    with Detector(args.model, conf=args.conf, iou=args.iou, max_det=args.max_det,
                  agnostic=args.agnostic, backend=args.backend, imgsz=imgsz_arg(args.imgsz),
                  force_imgsz=args.force_imgsz, **backend_options(args)) as det:
        det.classes = resolve_classes(args.classes, det.names)
        report = _Report(det.names)
        sinks: List[Sink] = [report]
        if not args.no_save_images:
            sinks.append(open_sink(f"images://{out_dir}", line_width=args.line_width))
        if not args.no_save_labels:
            sinks.append(open_sink(f"yolo-labels://{out_dir / 'labels'}"))
        if args.save_json is not None:
            ids = dict(zip(map(str, files), image_ids(files)))
            sinks.append(open_sink(f"coco://{args.save_json}", image_ids=ids))
        source = open_images(files, source_id="images")
        summary = Pipeline([source], det, sinks, progress=False).run()
    if summary.processed == 0:
        raise DataError(f"none of the {len(files)} image(s) could be decoded (videos and streams: use "
                        "`edge-detect run --source ...`)")
    elapsed = time.perf_counter() - start
    print(f"{summary.processed} image(s), {report.boxes} detection(s), {summary.corrupt} skipped (undecodable), "
          f"{elapsed:.1f} s; results in {out_dir}")
    return 0
