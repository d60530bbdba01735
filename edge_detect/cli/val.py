"""``edge-detect val``: COCO mAP of a model on a YOLO-format dataset split."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_detect.cli.detect import add_model_args, backend_options, imgsz_arg

_EPILOG = """\
examples:
  edge-detect val --model yolov5n.onnx --data coco128.yaml
  edge-detect val --model yolov5n.onnx --data coco128.yaml --split train --save-json preds.json

The first output line is exactly "mAP50-95 X.XXX mAP50 Y.YYY". Images are letterboxed to a square --imgsz
(no minimum-rectangle padding), NMS at --conf/--iou/--max-det, and scored by pycocotools against the YOLO
labels converted to COCO ground truth in memory.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``val`` and its flags."""
    p = subparsers.add_parser(
        "val", help="measure COCO mAP50-95 / mAP50 on a dataset split",
        description="Evaluate a model on a YOLO-format dataset (yaml with path/train/val/names) with pycocotools.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, type=Path, metavar="DATA.yaml", help="dataset yaml")
    p.add_argument("--split", default="val", choices=("train", "val", "test"),
                   help="dataset split to evaluate (default: val)")
    p.add_argument("--conf", type=float, default=0.001, metavar="T",
                   help="confidence threshold (default: 0.001, as for mAP)")
    p.add_argument("--iou", type=float, default=0.6, metavar="T", help="NMS IoU threshold (default: 0.6)")
    p.add_argument("--max-det", type=int, default=300, metavar="N", help="most detections per image (default: 300)")
    p.add_argument("--save-json", type=Path, default=None, metavar="PRED.json",
                   help="write the predictions as a COCO results list (image_id, category_id, bbox xywh, score)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``val``: print the mAP line and a summary; returns 0."""
    from edge_detect.models import open_model
    from edge_detect.evaluate import evaluate

    imgsz = imgsz_arg(args.imgsz)
    if imgsz is not None:
        if imgsz[0] != imgsz[1]:
            from edge_detect.errors import ConfigError

            raise ConfigError(f"--imgsz: val letterboxes to a square; expected one size, got {imgsz[0]} {imgsz[1]}")
        imgsz = imgsz[0]
    if imgsz is not None:
        from edge_detect.preprocess import check_imgsz

        check_imgsz((imgsz, imgsz), stride=1, force=args.force_imgsz)  # the size cap, before loading anything
    with open_model(args.model, args.backend, **backend_options(args)) as backend:
        res = evaluate(backend, args.data, split=args.split, imgsz=imgsz, conf=args.conf, iou=args.iou,
                       max_det=args.max_det, save_json=args.save_json, progress=not args.no_progress)
    print(f"mAP50-95 {res['map50_95']:.3f} mAP50 {res['map50']:.3f}")
    print(f"{res['images']} images, {res['boxes']} labelled boxes, {res['detections']} predictions, "
          f"{res['skipped']} skipped (undecodable), {res['seconds']:.1f} s")
    if args.save_json is not None:
        print(f"predictions saved to {args.save_json}")
    return 0
