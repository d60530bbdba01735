"""``edge-detect train``: fine-tune or train YOLOv5 on a YOLO-format dataset (needs the ``build`` extra)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List, Union

_EPILOG = """\
examples:
  edge-detect train --weights yolov5n.pt --data my.yaml --epochs 50 --imgsz 640 --batch 16
  edge-detect train --cfg yolov5n --data my.yaml --epochs 300 --device 0
  edge-detect train --resume runs/train/exp
  torchrun --nproc_per_node 2 -m edge_detect train --weights yolov5n.pt --data my.yaml --device 0,1

Writes <project>/<name>/weights/{last,best}.pt (edge-detect checkpoints that `export` and `val` accept),
results.csv and results.png (losses and mAP per epoch), hyp.yaml and args.yaml. A new class count
re-initializes the Detect output convolutions and keeps the other weights. Under torchrun the batch is split
across processes (gloo on CPU, nccl on GPUs) and only rank 0 validates and writes.
"""


def _freeze_arg(text: str) -> Union[int, List[int]]:
    """``10`` (first 10 layers) or ``0,1,2`` (those layers)."""
    try:
        if "," in text:
            return [int(t) for t in text.split(",") if t.strip()]
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N or a list like 0,1,2, got {text!r}") from exc


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` and its flags."""
    p = subparsers.add_parser(
        "train", help="fine-tune or train a YOLOv5 model on a YOLO-format dataset",
        description="Train YOLOv5 with its documented loss, YOLOv5 augmentation (mosaic, affine, HSV, flips), "
                    "SGD with warmup, EMA and per-epoch COCO mAP validation.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("model (one of --weights / --cfg, or --resume)")
    src.add_argument("--weights", type=Path, default=None, metavar="PT",
                     help="checkpoint to fine-tune (official yolov5*.pt or an edge-detect .pt)")
    src.add_argument("--cfg", default=None, metavar="MODEL.yaml",
                     help="model yaml or name (yolov5n/s/m/l/x) to train from scratch; with --weights, matching "
                          "tensors are transferred")
    src.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                     help="continue an interrupted run: a run folder or its weights/last.pt (no value: the "
                          "latest run under --project); its saved settings are reused")
    p.add_argument("--data", type=Path, default=None, metavar="DATA.yaml",
                   help="dataset yaml with train/val splits and names (required unless --resume)")
    p.add_argument("--epochs", type=int, default=100, metavar="N", help="number of epochs (default: 100)")
    p.add_argument("--imgsz", type=int, default=640, metavar="PX",
                   help="square train/val image size, a multiple of 32 (default: 640)")
    p.add_argument("--batch", type=int, default=16, metavar="N",
                   help="total batch size, split across processes under torchrun (default: 16)")
    p.add_argument("--nbs", type=int, default=64, metavar="N",
                   help="nominal batch: gradients are accumulated to this many images per step (default: 64)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="cpu, a GPU index (0) or list (0,1 with torchrun); default: first GPU if any, else cpu")
    p.add_argument("--project", type=Path, default=Path("runs/train"), metavar="DIR",
                   help="parent folder of runs (default: runs/train)")
    p.add_argument("--name", default="exp", help="run folder name; exp2, exp3... if it exists (default: exp)")
    p.add_argument("--exist-ok", action="store_true", help="reuse --name even if the folder exists")
    p.add_argument("--hyp", default=None, metavar="HYP.yaml",
                   help="hyperparameters overriding configs/hyp/hyp.scratch-low.yaml (path or name)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="data-loading worker processes per training process (default: 2; 0 = main process)")
    p.add_argument("--freeze", type=_freeze_arg, default=0, metavar="N|I,J",
                   help="freeze the first N layers (10 = backbone) or the listed layer indices (default: 0)")
    p.add_argument("--cos-lr", action="store_true", help="one-cycle (cosine) learning-rate decay instead of linear")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N images of each split (quick smoke tests)")
    p.add_argument("--cache", action="store_true", help="keep resized training images in memory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(args: argparse.Namespace) -> int:
    """Run ``train``: print where the checkpoints are and the final mAP; returns 0."""
    from edge_detect._optional import require
    from edge_detect.errors import ConfigError

    require("torch", "build")
    if not args.resume and args.data is None:
        raise ConfigError("train: expected --data DATA.yaml (or --resume), got none")
    if not args.resume and args.weights is None and args.cfg is None:
        raise ConfigError("train: expected --weights PT or --cfg MODEL.yaml (or --resume), got neither")
    from edge_detect.training.train import train

    res = train(weights=args.weights, cfg=args.cfg, data=args.data, epochs=args.epochs, imgsz=args.imgsz,
                batch=args.batch, device=args.device, project=args.project, name=args.name, hyp=args.hyp,
                workers=args.workers, resume=args.resume, freeze=args.freeze, progress=not args.no_progress,
                exist_ok=args.exist_ok, cos_lr=args.cos_lr, seed=args.seed, limit=args.limit, cache=args.cache,
                nominal_batch=args.nbs)
    if res["metrics"] is None:  # a non-zero rank under torchrun
        return 0
    m = res["metrics"]
    print(f"mAP50-95 {m['map50_95']:.3f} mAP50 {m['map50']:.3f} (epoch {m['epoch'] + 1}, EMA weights)")
    print(f"best: {res['best']}")
    print(f"last: {res['last']}")
    print(f"results: {res['results_csv']}, {res['results_png']}")
    return 0
