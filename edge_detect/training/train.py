"""Training loop: fine-tune or train YOLOv5 from scratch on a YOLO-format dataset.

What one call of :func:`train` does, following the documented YOLOv5 recipe:

* model from an official/edge-detect checkpoint (``weights``) or a model yaml (``cfg``); a new class count
  re-initializes the Detect output convolutions and keeps every other weight;
* SGD (momentum 0.937, nesterov) with three parameter groups: biases, conv weights (with weight decay scaled
  to the nominal batch of 64), batch-norm weights (no decay); gradient accumulation to the nominal batch;
* warmup (learning rate, momentum and bias learning rate interpolated over ``warmup_epochs``), then a linear or
  one-cycle (cosine) decay to ``lr0 * lrf``; an exponential moving average (EMA) of the weights;
* AMP on CUDA only; gradient-norm clipping at 10;
* the loss of :mod:`edge_detect.training.loss` with gains scaled for ``nl`` levels, ``nc`` classes and ``imgsz``;
* after every epoch, validation of the EMA model: losses and COCO mAP@0.5 / mAP@0.5:0.95 with the protocol of
  ``edge-detect val`` (:mod:`edge_detect.evaluate`: square letterbox, NMS conf 0.001 / IoU 0.6 / max_det 300,
  pycocotools on boxes in original image pixels); ``weights/last.pt`` and
  ``weights/best.pt`` (best fitness = 0.1 mAP50 + 0.9 mAP50-95) in edge-detect's checkpoint format;
  ``results.csv`` and ``results.png``;
* DistributedDataParallel when launched with ``torchrun`` (``gloo`` on CPU, ``nccl`` on GPUs): the batch is
  split across processes, only rank 0 validates and writes files.

Run folder layout: ``<project>/<name>/{weights/{last,best}.pt, results.csv, results.png, hyp.yaml, args.yaml}``.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edge_detect._optional import require
from edge_detect.config import load_yaml
from edge_detect.errors import BackendUnavailableError, ConfigError, MissingDependencyError, ModelError
from edge_detect.evaluate import coco_ground_truth, coco_map, coco_results
from edge_detect.paths import PathLike, next_run_dir, resource_path
from edge_detect.postprocess import non_max_suppression
from edge_detect.types import Detections
from edge_detect.training.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from edge_detect.training.data import YOLODataset, create_dataloader, load_split
from edge_detect.training.loss import LOSS_HYP_KEYS, YOLOv5Loss
from edge_detect.training.model import YOLOv5

__all__ = ["train", "load_hyp", "scale_loss_gains", "build_optimizer", "ModelEMA", "lr_lambda",
           "validate", "plot_results", "select_device", "HYP_DIR", "DEFAULT_HYP", "RESULT_COLUMNS"]

LOGGER = logging.getLogger(__name__)

HYP_DIR = resource_path("configs", "hyp")
DEFAULT_HYP = HYP_DIR / "hyp.scratch-low.yaml"
NOMINAL_BATCH = 64
GRAD_CLIP = 10.0
VAL_CONF, VAL_IOU, VAL_MAX_DET = 0.001, 0.6, 300
_IGNORED_HYP = ("iou_t",)  # present in YOLOv5 hyp files, unused by the v6 loss
_UNSUPPORTED_HYP = ("mixup", "copy_paste")  # accepted only when 0
RESULT_COLUMNS = ("epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/mAP_0.5",
                  "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss", "x/lr0", "x/lr1",
                  "x/lr2", "time_s")


# --------------------------------------------------------------------------------------------------- settings
def load_hyp(hyp: Union[None, PathLike, Mapping[str, Any]] = None) -> Dict[str, float]:
    """Hyperparameters: ``configs/hyp/hyp.scratch-low.yaml`` overridden by ``hyp`` (a yaml path, a name in
    ``configs/hyp`` such as ``"hyp.scratch-low"``, or a mapping of some keys).

    Raises:
        ConfigError: unknown key (with the closest known one), non-numeric value, or a YOLOv5 augmentation
            this project does not implement (``mixup``, ``copy_paste``) set to a non-zero value.
    """
    base = {k: float(v) for k, v in load_yaml(DEFAULT_HYP).items()}
    if hyp is None:
        return base
    if isinstance(hyp, Mapping):
        data, where = dict(hyp), "hyp"
    else:
        path = Path(hyp)
        if not path.exists() and (HYP_DIR / f"{path.name}.yaml").is_file():
            path = HYP_DIR / f"{path.name}.yaml"
        data, where = load_yaml(path) or {}, str(path)
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of hyperparameters, got {type(data).__name__}")
    out = dict(base)
    for key, value in data.items():
        if key in _IGNORED_HYP:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
        if key in _UNSUPPORTED_HYP:
            if value:
                raise ConfigError(f"{where}.{key}: expected 0 ({key} augmentation is not implemented), got {value}")
            continue
        if key not in base:
            match = difflib.get_close_matches(str(key), list(base), n=1, cutoff=0.5)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ConfigError(f"{where}: unknown hyperparameter '{key}'{hint}")
        out[key] = float(value)
    return out


def scale_loss_gains(hyp: Mapping[str, float], nl: int, nc: int, imgsz: int) -> Dict[str, float]:
    """Loss gains of ``hyp`` (tuned for 3 levels, 80 classes, 640 px) scaled to a model and image size:
    ``box *= 3/nl``, ``cls *= nc/80 * 3/nl``, ``obj *= (imgsz/640)^2 * 3/nl``."""
    out = dict(hyp)
    out["box"] = hyp["box"] * 3 / nl
    out["cls"] = hyp["cls"] * nc / 80 * 3 / nl
    out["obj"] = hyp["obj"] * (imgsz / 640) ** 2 * 3 / nl
    return out


def select_device(device: Optional[str] = None, local_rank: int = -1) -> torch.device:
    """``None``/``""`` (first GPU if any, else CPU), ``"cpu"``, ``"0"``, ``"0,1"``, ``"cuda:0"``.

    Several GPUs need one process each (``torchrun --nproc_per_node N``); under torchrun each process takes
    the GPU of its ``LOCAL_RANK``.

    Raises:
        BackendUnavailableError: a GPU was asked for but CUDA is not available.
        ConfigError: several GPUs without torchrun, or an unparseable value.
    """
    spec = str(device or "").strip().lower().replace("cuda:", "")
    if spec == "cpu" or (spec == "" and not torch.cuda.is_available()):
        return torch.device("cpu")
    ids = [s for s in spec.replace(" ", "").split(",") if s] if spec else ["0"]
    if not all(s.isdigit() for s in ids):
        raise ConfigError(f"device: expected 'cpu', a GPU index like '0' or a list like '0,1', got {device!r}")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r}: expected a CUDA GPU, but CUDA is not available "
                                      "(use --device cpu)")
    if local_rank >= 0:
        return torch.device("cuda", int(ids[local_rank % len(ids)]))
    if len(ids) > 1:
        raise ConfigError(f"device {device!r}: several GPUs need one process each; launch with "
                          f"'torchrun --nproc_per_node {len(ids)} -m edge_detect train ...'")
    return torch.device("cuda", int(ids[0]))


# --------------------------------------------------------------------------------------------------- optimization
def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD (nesterov) with three groups: ``bias`` (no decay), ``weight`` (decay), ``bn`` (BN weights, no decay).

    Frozen parameters (``requires_grad=False``) are left out. Groups carry a ``name`` key.
    """
    groups: Dict[str, List[nn.Parameter]] = {"bias": [], "weight": [], "bn": []}
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                groups["bias"].append(p)
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                groups["bn"].append(p)
            else:
                groups["weight"].append(p)
    opt = torch.optim.SGD([{"params": groups["bias"], "weight_decay": 0.0, "name": "bias"},
                           {"params": groups["weight"], "weight_decay": weight_decay, "name": "weight"},
                           {"params": groups["bn"], "weight_decay": 0.0, "name": "bn"}],
                          lr=lr, momentum=momentum, nesterov=True)
    LOGGER.info("optimizer: SGD(lr=%g, momentum=%g, nesterov) groups: %d biases, %d weights (decay %g), "
                "%d BN weights", lr, momentum, len(groups["bias"]), len(groups["weight"]), weight_decay,
                len(groups["bn"]))
    return opt


def lr_lambda(epochs: int, lrf: float, cos: bool = False) -> Callable[[int], float]:
    """Learning-rate factor per epoch: 1 at epoch 0 down to ``lrf`` at the last epoch, linear or one-cycle."""
    span = max(epochs - 1, 1)
    if cos:
        return lambda x: ((1 - math.cos(min(x, span) * math.pi / span)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - min(x, span) / span) * (1.0 - lrf) + lrf


def _unwrap(model: nn.Module) -> YOLOv5:
    return model.module if isinstance(model, (DistributedDataParallel, nn.DataParallel)) else model  # type: ignore


class ModelEMA:
    """Exponential moving average of a model's floating-point state.

    ``decay_t = decay * (1 - exp(-updates / tau))``: the average follows the model closely at the start of
    training and becomes smoother as updates accumulate.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(_unwrap(model)).eval()
        self.decay, self.tau, self.updates = decay, tau, int(updates)
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        self.updates += 1
        d = self.current_decay()
        state = _unwrap(model).state_dict()
        for key, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(state[key].detach(), alpha=1 - d)


def _freeze(model: YOLOv5, freeze: Union[int, Sequence[int]]) -> List[str]:
    """Turn off gradients for the layers ``model.<i>.`` with ``i`` in ``freeze`` (an int ``n`` = first ``n``)."""
    layers = list(range(int(freeze))) if isinstance(freeze, int) else [int(i) for i in freeze]
    if not layers:
        return []
    n_layers = len(model.model)
    bad = [i for i in layers if not 0 <= i < n_layers - 1]
    if bad:
        raise ConfigError(f"freeze: expected layer indices in 0..{n_layers - 2} (the Detect layer cannot be "
                          f"frozen), got {bad}")
    prefixes = tuple(f"model.{i}." for i in layers)
    frozen = [n for n, p in model.named_parameters() if n.startswith(prefixes)]
    for n, p in model.named_parameters():
        if n.startswith(prefixes):
            p.requires_grad_(False)
    LOGGER.info("froze %d parameter tensors in layers %s", len(frozen), layers)
    return frozen


# --------------------------------------------------------------------------------------------------- model
def _build_model(weights: Optional[PathLike], cfg: Optional[Any], names: Sequence[str]) -> YOLOv5:
    """Model for ``len(names)`` classes from a checkpoint, a yaml, or a yaml plus the checkpoint's matching weights."""
    nc = len(names)
    if weights is None and cfg is None:
        raise ConfigError("train: expected --weights (a checkpoint to fine-tune) or --cfg (a model yaml), got neither")
    if weights is None:
        return YOLOv5(cfg, nc=nc, names=names)
    info = load_checkpoint(weights)
    if cfg is not None:
        model = YOLOv5(cfg, nc=nc, names=names)
        own = model.state_dict()
        common = {k: v for k, v in info["state_dict"].items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(common, strict=False)
        LOGGER.info("transferred %d/%d tensors from %s", len(common), len(own), weights)
        return model
    if info.get("fused"):
        raise ModelError(f"{weights}: expected an unfused checkpoint to train from, got a fused one")
    model = build_from_checkpoint(info, weights)
    if model.nc != nc:
        LOGGER.info("new class count %d (checkpoint has %d): re-initializing the Detect output convolutions",
                    nc, model.nc)
        model.reset_head(nc, names)
    else:
        model.names = list(names)
    return model


# --------------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: YOLOv5, loader: Any, loss_fn: YOLOv5Loss, device: torch.device, progress: bool = True,
             half: bool = False) -> Dict[str, float]:
    """Validate ``model`` on a letterboxed val loader (``augment=False``, not shuffled): mean per-image
    losses and COCO mAP (see :mod:`edge_detect.evaluate`).

    Returns:
        ``{"map50": ..., "map50_95": ..., "box": ..., "obj": ..., "cls": ..., "images": n}``.
    """
    from edge_detect.progress import progress as progress_bar

    model.eval()
    detect = model.detect
    detect.train()  # raw maps out; decoded below so that one forward gives both the loss and the boxes
    sums, n_batches = torch.zeros(3, dtype=torch.float64), 0
    detections: List[Detections] = []
    shapes: List[Tuple[int, int]] = []
    try:
        for imgs, targets, _, infos in progress_bar(loader, desc="val", disable=not progress, leave=False):
            x = imgs.to(device, non_blocking=True).float() / 255
            with torch.autocast(device.type, enabled=half and device.type == "cuda"):
                raw = model(x)
            raw = [r.float() for r in raw]
            sums += torch.stack(loss_fn(raw, targets.to(device))[1]).double().cpu()
            n_batches += 1
            pred = torch.cat([detect.decode(i, r) for i, r in enumerate(raw)], 1).cpu().numpy()
            for rows, info in zip(non_max_suppression(pred, VAL_CONF, VAL_IOU, max_det=VAL_MAX_DET), infos):
                detections.append(Detections(info.to_original(rows[:, :4]), rows[:, 4], rows[:, 5]))
                shapes.append(info.orig_shape)
    finally:
        detect.eval()
    split = loader.dataset.split  # the val loader is sequential: item k is split image k
    ids = list(range(len(detections)))
    gt = coco_ground_truth(ids, shapes, split.labels[: len(ids)], split.names)
    results = [r for iid, det in zip(ids, detections) for r in coco_results(iid, det)]
    map50_95, map50 = coco_map(gt, results)
    box, obj, cls = (sums / max(n_batches, 1)).tolist()
    return {"map50": max(map50, 0.0), "map50_95": max(map50_95, 0.0), "box": box, "obj": obj, "cls": cls,
            "images": len(detections)}


# --------------------------------------------------------------------------------------------------- results
def _write_row(path: Path, row: Mapping[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(RESULT_COLUMNS))
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in RESULT_COLUMNS})


def plot_results(csv_path: Path, out: Optional[Path] = None) -> Path:
    """Plot losses and mAP per epoch from ``results.csv`` into ``results.png`` (matplotlib, Agg backend)."""
    mpl = require("matplotlib", "build")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    keys = ["train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/mAP_0.5",
            "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5:0.95"]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), tight_layout=True)
    for ax, key in zip(axes.ravel(), keys):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".")
        ax.set_title(key)
        ax.set_xlabel("epoch")
    out = out or csv_path.with_suffix(".png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------------- main loop
def _find_resume(resume: Union[bool, PathLike], project: PathLike) -> Path:
    if resume is True:
        found = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ModelError(f"--resume: expected a run with weights/last.pt under {project}, found none")
        return found[-1]
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise ModelError(f"--resume: checkpoint not found: {path}")
    return path


@dataclass(frozen=True)
class _Dist:
    """Process placement under torchrun (``rank -1``, ``world 1`` when not distributed)."""

    rank: int = -1
    local_rank: int = -1
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank in (-1, 0)

    @classmethod
    def from_env(cls) -> "_Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)


@dataclass
class _Settings:
    """The arguments of :func:`train` that define a run (saved in ``last.pt`` for ``--resume``)."""

    data: str
    epochs: int
    imgsz: int
    batch: int
    hyp: Dict[str, float]
    freeze: Union[int, List[int]] = 0
    cos_lr: bool = False
    seed: int = 0
    limit: Optional[int] = None
    nominal_batch: int = NOMINAL_BATCH
    weights: Optional[str] = None
    cfg: Optional[str] = None
    world_size: int = 1

    def check(self, world: int) -> None:
        if self.imgsz % 32:
            raise ConfigError(f"imgsz: expected a multiple of 32, got {self.imgsz}")
        if self.batch < world or self.batch % world:
            raise ConfigError(f"batch: expected a multiple of the {world} processes, got {self.batch}")
        if self.epochs < 1:
            raise ConfigError(f"epochs: expected >= 1, got {self.epochs}")


@dataclass
class _Resume:
    """What ``--resume`` restores: checkpoint info, training state, first epoch and best fitness."""

    info: Dict[str, Any]
    state: Dict[str, Any]
    start_epoch: int
    best_fitness: float


def _load_resume(resume: Union[bool, PathLike], project: PathLike) -> Tuple[Path, _Settings, _Resume]:
    last = _find_resume(resume, project)
    info = load_checkpoint(last)
    extra = info.get("extra") or {}
    if "train_state" not in extra or "train_args" not in extra:
        raise ModelError(f"--resume: {last} has no training state (expected a last.pt written by train)")
    try:
        settings = _Settings(**extra["train_args"])
    except TypeError as exc:
        raise ModelError(f"--resume: {last}: saved training settings do not match this version: {exc}") from exc
    start = int(info["epoch"]) + 1
    if start >= settings.epochs:
        raise ConfigError(f"--resume: {last} finished all {settings.epochs} epochs already "
                          "(expected an unfinished run)")
    LOGGER.info("resuming %s from epoch %d/%d", last.parent.parent, start + 1, settings.epochs)
    return last.parent.parent, settings, _Resume(info, extra["train_state"], start,
                                                 float(extra.get("best_fitness", -1.0)))


def train(weights: Optional[PathLike] = None, cfg: Optional[Any] = None, data: Optional[PathLike] = None,
          epochs: int = 100, imgsz: int = 640, batch: int = 16, device: Optional[str] = None,
          project: PathLike = "runs/train", name: str = "exp", hyp: Union[None, PathLike, Mapping[str, Any]] = None,
          workers: int = 2, resume: Union[bool, PathLike] = False, freeze: Union[int, Sequence[int]] = 0,
          progress: bool = True, exist_ok: bool = False, cos_lr: bool = False, seed: int = 0,
          limit: Optional[int] = None, cache: bool = False, nominal_batch: int = NOMINAL_BATCH) -> Dict[str, Any]:
    """Train or fine-tune a YOLOv5 model (see the module doc).

    Args:
        weights: checkpoint to start from (official ``yolov5n.pt`` or an edge-detect ``.pt``).
        cfg: model yaml path or name (``"yolov5n"``) to train from scratch (with ``weights``: matching tensors
            are transferred).
        data: dataset yaml (``train`` and ``val`` splits, ``names``).
        epochs: number of epochs.
        imgsz: square training/validation size in pixels (a multiple of 32).
        batch: total batch size (split across processes under torchrun).
        device: ``"cpu"``, ``"0"``, ``"0,1"`` (with torchrun) or None for the first GPU if any.
        project, name: run folder ``project/name`` (``name2``... if it exists, unless ``exist_ok``).
        hyp: hyperparameters overriding ``configs/hyp/hyp.scratch-low.yaml`` (yaml path, name or mapping).
        workers: DataLoader worker processes (per process).
        resume: True (latest ``last.pt`` under ``project``), or a ``last.pt`` / run folder to continue; the
            saved settings (data, epochs, imgsz, batch, hyp...) are reused and these arguments ignored.
        freeze: first ``n`` layers (int) or a list of layer indices to keep frozen (e.g. 10 = the backbone).
        progress: tqdm bars.
        exist_ok: reuse ``project/name`` instead of incrementing the name.
        cos_lr: one-cycle (cosine) instead of linear learning-rate decay.
        seed: random seed (model init, shuffling, augmentation).
        limit: use only the first ``limit`` images of each split (smoke tests).
        cache: keep the resized training images in memory.
        nominal_batch: accumulate gradients to this batch before each optimizer step (64).

    Returns:
        ``{"best": Path, "last": Path, "results_csv": Path, "results_png": Path, "run_dir": Path,
        "metrics": {"map50", "map50_95", "box", "obj", "cls", "epoch", "fitness", "images"},
        "history": [results rows]}``. Under torchrun only rank 0 validates: other ranks get ``metrics`` None.

    Raises:
        ConfigError, DataError, ModelError, BackendUnavailableError: invalid settings, data or checkpoints.
    """
    dist_env = _Dist.from_env()
    if resume:
        run_dir, settings, resumed = _load_resume(resume, project)
        settings.world_size = dist_env.world
    else:
        if data is None:
            raise ConfigError("train: expected --data DATA.yaml, got none")
        frz = int(freeze) if isinstance(freeze, int) else [int(i) for i in freeze]
        settings = _Settings(data=str(Path(data).resolve()), epochs=int(epochs), imgsz=int(imgsz), batch=int(batch),
                             hyp=load_hyp(hyp), freeze=frz, cos_lr=bool(cos_lr), seed=int(seed), limit=limit,
                             nominal_batch=int(nominal_batch), weights=str(weights) if weights else None,
                             cfg=str(cfg) if cfg is not None and not isinstance(cfg, Mapping) else None,
                             world_size=dist_env.world)
        run_dir, resumed = next_run_dir(project, name, exist_ok), None
    settings.check(dist_env.world)
    dev = select_device(device, dist_env.local_rank)
    if dist_env.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    torch.manual_seed(settings.seed + max(dist_env.rank, 0))
    try:
        trainer = _Trainer(settings, run_dir, dev, dist_env, workers, progress, cache, resumed,
                           cfg if isinstance(cfg, Mapping) else None)
        return trainer.fit()
    finally:
        if dist_env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Trainer:
    """One training process: model, loss, optimizer, schedules, EMA, loaders; :meth:`fit` runs the epochs."""

    def __init__(self, s: _Settings, run_dir: Path, device: torch.device, dist_env: _Dist, workers: int,
                 progress: bool, cache: bool, resumed: Optional[_Resume], cfg_mapping: Optional[Mapping] = None):
        self.s, self.run_dir, self.device, self.dist, self.progress = s, run_dir, device, dist_env, progress
        self.paths = {"run_dir": run_dir, "last": run_dir / "weights" / "last.pt",
                      "best": run_dir / "weights" / "best.pt", "results_csv": run_dir / "results.csv",
                      "results_png": run_dir / "results.png"}
        self.start_epoch = resumed.start_epoch if resumed else 0
        self.best_fitness = resumed.best_fitness if resumed else -1.0
        train_split = load_split(s.data, "train", s.limit)
        self.names = train_split.names
        self.model = self._model(resumed, cfg_mapping)
        self.loss_fn = self._loss()
        self.accumulate = max(round(s.nominal_batch / s.batch), 1)
        decay = s.hyp["weight_decay"] * s.batch * self.accumulate / s.nominal_batch
        self.optimizer = build_optimizer(self.model, s.hyp["lr0"], s.hyp["momentum"], decay)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = s.hyp["lr0"]
        self.lf = lr_lambda(s.epochs, s.hyp["lrf"], s.cos_lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lf, last_epoch=self.start_epoch - 1)
        self.ema = ModelEMA(self.model) if dist_env.main else None
        if resumed is not None:
            self._restore(resumed)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.net: nn.Module = self.model
        if dist_env.world > 1:
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda"
                                               else None)
        batch_rank = s.batch // dist_env.world
        self.train_ds = YOLODataset(train_split, s.imgsz, augment=True, hyp=s.hyp, seed=s.seed, cache_images=cache)
        self.train_loader = create_dataloader(self.train_ds, batch_rank, shuffle=True, workers=workers,
                                              distributed=dist_env.world > 1, seed=s.seed)
        self.val_loader = None
        if dist_env.main:
            val_ds = YOLODataset(load_split(s.data, "val", s.limit), s.imgsz, augment=False)
            self.val_loader = create_dataloader(val_ds, batch_rank * 2, shuffle=False, workers=workers)
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            (run_dir / "hyp.yaml").write_text(yaml.safe_dump(s.hyp, sort_keys=False))
            (run_dir / "args.yaml").write_text(yaml.safe_dump(dataclasses.asdict(s), sort_keys=False))

    def _model(self, resumed: Optional[_Resume], cfg_mapping: Optional[Mapping]) -> YOLOv5:
        if resumed is not None:
            model = build_from_checkpoint(resumed.info)
            model.load_state_dict(resumed.state["model"])
        else:
            model = _build_model(self.s.weights, cfg_mapping or self.s.cfg, self.names)
        _freeze(model, self.s.freeze)
        return model.to(self.device).train()

    def _loss(self) -> YOLOv5Loss:
        detect = self.model.detect
        gains = scale_loss_gains(self.s.hyp, detect.nl, self.model.nc, self.s.imgsz)
        return YOLOv5Loss(detect.anchors.detach().cpu(), self.model.stride.tolist(), self.model.nc,
                          {k: gains[k] for k in LOSS_HYP_KEYS})

    def _restore(self, resumed: _Resume) -> None:
        self.optimizer.load_state_dict(resumed.state["optimizer"])
        if self.ema is not None:
            self.ema.ema.load_state_dict(build_from_checkpoint(resumed.info).state_dict())
            self.ema.updates = int(resumed.state["ema_updates"])

    # ------------------------------------------------------------------ loop
    def fit(self) -> Dict[str, Any]:
        s = self.s
        LOGGER.info("training epochs %d..%d on %d images, imgsz %d, batch %d x %d process(es), nominal batch %d, "
                    "device %s -> %s", self.start_epoch + 1, s.epochs, len(self.train_ds), s.imgsz,
                    s.batch // self.dist.world, self.dist.world, s.nominal_batch, self.device, self.run_dir)
        nb = len(self.train_loader)
        warmup = s.hyp["warmup_epochs"] > 0
        self.nw = max(round(s.hyp["warmup_epochs"] * nb), int(s.hyp["warmup_min_iters"])) if warmup else -1
        self.last_step = self.start_epoch * nb - 1
        history: List[Dict[str, Any]] = []
        metrics: Optional[Dict[str, Any]] = None
        self.optimizer.zero_grad()
        for epoch in range(self.start_epoch, s.epochs):
            t0 = time.perf_counter()
            mloss = self._train_epoch(epoch, nb)
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.scheduler.step()
            if self.dist.main:
                row, metrics = self._end_epoch(epoch, mloss, lrs, t0)
                history.append(row)
        if self.dist.main and self.paths["results_csv"].exists():
            try:
                plot_results(self.paths["results_csv"], self.paths["results_png"])
            except MissingDependencyError as exc:  # the chart is optional; results.csv has the numbers
                LOGGER.warning("results.png not written: %s", exc)
        if self.dist.world > 1:
            dist.barrier()
        return {**self.paths, "metrics": metrics, "history": history}

    def _train_epoch(self, epoch: int, nb: int) -> torch.Tensor:
        """One pass over the training data; returns the mean ``(box, obj, cls)`` losses per image."""
        from edge_detect.progress import progress

        self.net.train()
        self.train_ds.set_epoch(epoch)
        if self.dist.world > 1:
            self.train_loader.sampler.set_epoch(epoch)
        mloss = torch.zeros(3)
        bar = progress(self.train_loader, total=nb, desc=f"epoch {epoch + 1}/{self.s.epochs}",
                   disable=not (self.progress and self.dist.main))
        for i, (imgs, targets, _, _) in enumerate(bar):
            ni = i + nb * epoch
            if ni <= self.nw:
                self.accumulate = _warmup(self.optimizer, ni, self.nw, self.lf(epoch), self.s.hyp,
                                          self.s.nominal_batch / self.s.batch)
            x = imgs.to(self.device, non_blocking=True).float() / 255
            with torch.autocast(self.device.type, enabled=self.amp):
                preds = self.net(x)
            loss, items = self.loss_fn(preds, targets.to(self.device))
            self.scaler.scale(loss * self.dist.world).backward()  # DDP averages gradients over processes
            if ni - self.last_step >= self.accumulate:
                self._step()
                self.last_step = ni
            mloss = (mloss * i + torch.stack(items).float().cpu()) / (i + 1)
            bar.set_postfix(box=f"{mloss[0]:.4f}", obj=f"{mloss[1]:.4f}", cls=f"{mloss[2]:.4f}")
        return mloss

    def _step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)

    def _end_epoch(self, epoch: int, mloss: torch.Tensor, lrs: List[float],
                   t0: float) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Validate the EMA model, append to results.csv, save last.pt / best.pt (rank 0 only)."""
        val = validate(self.ema.ema, self.val_loader, self.loss_fn, self.device, self.progress)
        fitness = 0.1 * val["map50"] + 0.9 * val["map50_95"]
        row = {"epoch": epoch, "train/box_loss": float(mloss[0]), "train/obj_loss": float(mloss[1]),
               "train/cls_loss": float(mloss[2]), "metrics/mAP_0.5": val["map50"],
               "metrics/mAP_0.5:0.95": val["map50_95"], "val/box_loss": val["box"], "val/obj_loss": val["obj"],
               "val/cls_loss": val["cls"], "x/lr0": lrs[0], "x/lr1": lrs[1], "x/lr2": lrs[2],
               "time_s": time.perf_counter() - t0}
        _write_row(self.paths["results_csv"], row)
        metrics = {**val, "epoch": epoch, "fitness": fitness}
        improved = fitness > self.best_fitness
        self.best_fitness = max(self.best_fitness, fitness)
        self._save(epoch, metrics, improved)
        LOGGER.info("epoch %d/%d: box %.4f obj %.4f cls %.4f | val mAP50 %.4f mAP50-95 %.4f (%.1fs)", epoch + 1,
                    self.s.epochs, *mloss.tolist(), val["map50"], val["map50_95"], row["time_s"])
        return row, metrics

    def _save(self, epoch: int, metrics: Mapping[str, Any], improved: bool) -> None:
        """``last.pt`` (EMA weights + training state for ``--resume``); ``best.pt`` (EMA weights) when improved."""
        date = datetime.now(timezone.utc).isoformat(timespec="seconds")
        common = {"epoch": epoch, "date": date, "metrics": {k: float(v) for k, v in metrics.items()},
                  "hyp": dict(self.s.hyp), "train_args": dataclasses.asdict(self.s),
                  "best_fitness": float(self.best_fitness)}
        state = {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "ema_updates": self.ema.updates}
        save_checkpoint(self.paths["last"], self.ema.ema, self.names, train_state=state, **common)
        if improved:
            save_checkpoint(self.paths["best"], self.ema.ema, self.names, **common)


def _warmup(optimizer: torch.optim.Optimizer, ni: int, nw: int, lr_factor: float, hyp: Mapping[str, float],
            max_accumulate: float) -> int:
    """Interpolate learning rates (bias from ``warmup_bias_lr`` down, others from 0 up), momentum and the
    accumulation count over the first ``nw`` iterations; returns the accumulation count to use."""
    xi = [0, nw]
    for g in optimizer.param_groups:
        start = hyp["warmup_bias_lr"] if g.get("name") == "bias" else 0.0
        g["lr"] = float(np.interp(ni, xi, [start, g["initial_lr"] * lr_factor]))
        g["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return max(1, int(np.interp(ni, xi, [1, max_accumulate]).round()))
