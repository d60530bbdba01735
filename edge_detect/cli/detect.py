"""``edge-detect detect``: detect objects in image files, save annotated images and YOLO label files."""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edge_detect.backends.base import backend_names
from edge_detect.errors import ConfigError, DataError, SinkError

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

#: suffixes of video files, which `run` reads (a video given to `detect` gets that hint instead of a decode error)
VIDEO_INPUT_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                        ".3gp", ".mjpeg", ".mjpg", ".h264", ".h265")


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
    p.add_argument("--model", required=True, type=Path, metavar="PATH", help="model file (.onnx, .engine, .pt)")
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
                   help="ONNX Runtime intra-op threads (default: ORT's choice, one per core)")
    p.add_argument("--rebuild-on-mismatch", action="store_true",
                   help="TensorRT engines: rebuild from the recorded ONNX when the engine was built by another "
                        "TensorRT version or GPU (default: fail with a one-line explanation)")


def backend_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Backend keyword options from the parsed flags (only those given)."""
    from edge_detect.backends.base import backend_for_path

    opts: Dict[str, Any] = {}
    if args.providers:
        opts["providers"] = args.providers
    if args.threads is not None:
        opts["threads"] = args.threads
    if getattr(args, "rebuild_on_mismatch", False):
        if (args.backend or backend_for_path(args.model)) != "tensorrt":
            raise ConfigError(f"--rebuild-on-mismatch: expected a TensorRT engine, got {args.model}")
        return {"rebuild_on_mismatch": True}
    if opts and (args.backend or backend_for_path(args.model)) != "onnxruntime":
        raise ConfigError(f"--providers/--threads: expected the onnxruntime backend, got "
                          f"{args.backend or backend_for_path(args.model)} for {args.model}")
    return opts


def imgsz_arg(values: Optional[Sequence[int]]) -> Any:
    """``--imgsz`` values -> ``None``, an int, or ``(h, w)``."""
    if values is None:
        return None
    if len(values) > 2:
        raise ConfigError(f"--imgsz: expected S or H W, got {len(values)} values {list(values)}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def next_run_dir(base: Path = Path("runs/detect"), name: str = "exp") -> Path:
    """First of ``base/exp``, ``base/exp2``, ``base/exp3``... that does not exist."""
    n = 1
    while (base / (name if n == 1 else f"{name}{n}")).exists():
        n += 1
    return base / (name if n == 1 else f"{name}{n}")


def yolo_label_rows(dets: Any, shape: Sequence[int]) -> str:
    """Text of a YOLO label file: ``class cx cy w h conf`` per detection, normalized by the image ``(h, w)``."""
    h, w = shape[:2]
    from edge_detect.boxes import normalize_boxes, xyxy_to_cxcywh

    cx, cy, bw, bh = normalize_boxes(xyxy_to_cxcywh(dets.xyxy.astype(np.float64)), (h, w)).reshape(-1, 4).T
    return "".join(f"{c} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f} {s:.5f}\n"
                   for c, x, y, ww, hh, s in zip(dets.class_id.tolist(), cx, cy, bw, bh, dets.score.tolist()))


def _summary(dets: Any, names: Sequence[str]) -> str:
    counts = Counter(int(c) for c in dets.class_id)
    if not counts:
        return "no detections"
    return ", ".join(f"{n} {names[c] if 0 <= c < len(names) else c}" for c, n in sorted(counts.items()))


def _write_image(path: Path, image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), image):
        raise SinkError(f"could not write image {path} (unsupported extension or unwritable folder)")


def main(args: argparse.Namespace) -> int:
    """Run ``detect``; returns 0 when at least one image was processed."""
    import cv2

    from edge_detect.app_config import resolve_classes
    from edge_detect.paths import check_outputs, input_paths
    from edge_detect.stream.annotate import draw_detections
    from edge_detect.datasets import list_images
    from edge_detect.detector import Detector
    from edge_detect.evaluate import coco_results, image_ids

    for src in args.source:
        if Path(src).suffix.lower() in VIDEO_INPUT_SUFFIXES and "://" not in str(src):
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
    with Detector(args.model, conf=args.conf, iou=args.iou, max_det=args.max_det,
                  agnostic=args.agnostic, backend=args.backend, imgsz=imgsz_arg(args.imgsz),
                  force_imgsz=args.force_imgsz, **backend_options(args)) as det:
        det.classes = resolve_classes(args.classes, det.names)
        records: List[Dict[str, Any]] = []  # COCO results format
        done = 0
        skipped, total_boxes, start = 0, 0, time.perf_counter()
        ids = image_ids(files)
        for k, f in enumerate(files):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                LOGGER.warning("skipping %s: not a decodable image", f)
                skipped += 1
                continue
            if not done:  # create the output folder only once there is something to write
                out_dir.mkdir(parents=True, exist_ok=True)
                if not args.no_save_labels:
                    (out_dir / "labels").mkdir(exist_ok=True)
            t0 = time.perf_counter()
            dets = det(img)
            ms = (time.perf_counter() - t0) * 1000
            total_boxes += len(dets)
            LOGGER.info("%s %dx%d: %s (%.1f ms)", f, img.shape[1], img.shape[0], _summary(dets, det.names), ms)
            if not args.no_save_images:
                _write_image(out_dir / f.name, draw_detections(img, dets, det.names, line_width=args.line_width))
            if not args.no_save_labels:
                (out_dir / "labels" / f"{f.stem}.txt").write_text(yolo_label_rows(dets, img.shape))
            records.extend(coco_results(ids[k], dets))
            done += 1
    if args.save_json is not None:
        args.save_json.parent.mkdir(parents=True, exist_ok=True)
        args.save_json.write_text(json.dumps(records, indent=1))
    if done == 0:
        raise DataError(f"none of the {len(files)} image(s) could be decoded (videos and streams: use "
                        "`edge-detect run --source ...`)")
    elapsed = time.perf_counter() - start
    print(f"{done} image(s), {total_boxes} detection(s), {skipped} skipped (undecodable), "
          f"{elapsed:.1f} s; results in {out_dir}")
    return 0
