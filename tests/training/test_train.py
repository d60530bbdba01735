"""Training: hyperparameters, optimizer, schedules, EMA, augmentation, and short end-to-end runs.

The end-to-end runs are marked ``slow`` (they still run in CI): a synthetic shapes dataset that must be learnt
(mAP50 > 0.5), one coco128 fine-tuning epoch whose checkpoints ``load_model``/``export``/``val`` accept, a
resume, and a 2-process gloo DDP epoch.
"""
from __future__ import annotations

import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, has_module, requires_torch

pytestmark = [requires_torch, pytest.mark.usefixtures("torch_one_thread")]


def _shapes_tool():
    spec = importlib.util.spec_from_file_location("make_shapes_dataset", REPO / "tools" / "make_shapes_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def shapes_yaml(tmp_path_factory) -> Path:
    """64 train / 16 val images of 128 px, 3 shape classes."""
    return _shapes_tool().make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 64, 16, 128, seed=0)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    """8 train / 4 val images of 64 px, 2 classes (for plumbing tests, not learning)."""
    return _shapes_tool().make_shapes_dataset(tmp_path_factory.mktemp("tiny"), 8, 4, 64,
                                              classes=("circle", "square"), seed=1)


# ------------------------------------------------------------------------------------------ synthetic dataset
def test_shapes_dataset_labels_match_pixels(tmp_path):
    import cv2

    from edge_detect.datasets import load_dataset, load_labels

    yaml_path = _shapes_tool().make_shapes_dataset(tmp_path, 6, 2, 96, seed=3)
    spec = load_dataset(yaml_path)
    assert spec.names == ("circle", "square", "triangle")
    images = spec.images("train")
    assert len(images) == 6 and len(spec.images("val")) == 2
    for img_path, lab in zip(images, load_labels(images, spec.nc)):
        img = cv2.imread(str(img_path))
        assert img.shape == (96, 96, 3) and 1 <= len(lab) <= 3
        for c, cx, cy, w, h in lab:
            x1, y1, x2, y2 = (int(round(v)) for v in ((cx - w / 2) * 96, (cy - h / 2) * 96,
                                                        (cx + w / 2) * 96, (cy + h / 2) * 96))
            inside = img[y1:y2, x1:x2].astype(int).min(axis=2)
            # shapes are drawn with every channel >= 150; the box centre is always inside the shape
            assert inside[(y2 - y1) // 2 + ((y2 - y1) // 4 if c == 2 else 0), (x2 - x1) // 2] >= 150


# ------------------------------------------------------------------------------------------ augmentation
def test_box_conversions_round_trip():
    from edge_detect.training.data import cxcywh_norm_to_xyxy, xyxy_to_cxcywh_norm

    lab = np.array([[1, 0.5, 0.25, 0.2, 0.1], [0, 0.1, 0.9, 0.2, 0.2]], np.float32)
    xyxy = cxcywh_norm_to_xyxy(lab, 200, 100, padw=10, padh=5)
    np.testing.assert_allclose(xyxy[0], [1, 80 + 10, 20 + 5, 120 + 10, 30 + 5])
    back = xyxy_to_cxcywh_norm(cxcywh_norm_to_xyxy(lab, 200, 100), 200, 100)
    np.testing.assert_allclose(back, lab, atol=1e-6)


@pytest.mark.parametrize("before, after, keep", [
    ([0, 0, 10, 10], [0, 0, 10, 10], True),       # unchanged
    ([0, 0, 10, 10], [0, 0, 2, 10], False),       # 2 px wide: too thin
    ([0, 0, 100, 100], [0, 0, 30, 30], False),    # 9 % of the area left
    ([0, 0, 100, 100], [0, 0, 40, 40], True),     # 16 % left
    ([0, 0, 100, 100], [0, 0, 3, 63], False),     # aspect ratio 21
])
def test_box_candidates(before, after, keep):
    from edge_detect.training.data import box_candidates

    assert box_candidates(np.array([before], float), np.array([after], float)).tolist() == [keep]


def test_random_affine_identity_centres_the_image():
    from edge_detect.training.data import random_affine

    img = np.zeros((100, 100, 3), np.uint8)
    img[10:30, 20:60] = 255
    labels = np.array([[2, 20, 10, 60, 30]], np.float32)
    out, boxes = random_affine(img, labels, np.random.default_rng(0), (100, 100), translate=0.0, scale=0.0)
    assert out.shape == (100, 100, 3)
    np.testing.assert_allclose(boxes, labels, atol=1e-4)
    # a 200 px canvas (mosaic) is cropped around its centre to 100 px
    canvas = np.zeros((200, 200, 3), np.uint8)
    out, boxes = random_affine(canvas, labels + [0, 50, 50, 50, 50], np.random.default_rng(0), (100, 100),
                               translate=0.0, scale=0.0)
    assert out.shape == (100, 100, 3)
    np.testing.assert_allclose(boxes, labels, atol=1e-4)


def test_random_affine_scale_and_drop():
    from edge_detect.training.data import random_affine

    img = np.full((100, 100, 3), 50, np.uint8)
    labels = np.array([[0, 40, 40, 60, 60], [1, 0, 0, 4, 4]], np.float32)
    rng = np.random.default_rng(0)
    _, boxes = random_affine(img, labels, rng, (100, 100), translate=0.0, scale=0.5)
    # the centred box keeps its centre; the 4 px corner box shrinks below 2 px or leaves: at most the first kept
    assert 1 <= len(boxes) <= 2 and boxes[0, 0] == 0
    cx, cy = (boxes[0, 1] + boxes[0, 3]) / 2, (boxes[0, 2] + boxes[0, 4]) / 2
    assert cx == pytest.approx(50, abs=1e-3) and cy == pytest.approx(50, abs=1e-3)
    side = boxes[0, 3] - boxes[0, 1]
    assert 10 <= side <= 30  # 20 px x zoom in [0.5, 1.5]


def test_mosaic_places_four_images_around_the_centre():
    from edge_detect.training.data import mosaic4

    imgs = [np.full((64, 64, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    labels = [np.array([[i, 0.5, 0.5, 0.5, 0.5]], np.float32) for i in range(4)]
    canvas, boxes = mosaic4(imgs, labels, 64, np.random.default_rng(5))
    assert canvas.shape == (128, 128, 3) and boxes.shape == (4, 5)
    xc = int(boxes[0, 3] + 16)  # box 0 ends 16 px before the centre (image 0 ends at the centre)
    yc = int(boxes[0, 4] + 16)
    assert 32 <= xc < 96 and 32 <= yc < 96
    assert canvas[yc - 1, xc - 1, 0] == 10 and canvas[yc - 1, xc, 0] == 20
    assert canvas[yc, xc - 1, 0] == 30 and canvas[yc, xc, 0] == 40
    # image 3 starts at the centre; its box is clipped to the canvas
    np.testing.assert_allclose(boxes[3, 1:], np.minimum([xc + 16, yc + 16, xc + 48, yc + 48], 128))


def test_mosaic_needs_four_images():
    from edge_detect.training.data import mosaic4
    from edge_detect.errors import DataError

    with pytest.raises(DataError, match="expected 4 images"):
        mosaic4([np.zeros((8, 8, 3), np.uint8)] * 3, [np.zeros((0, 5), np.float32)] * 3, 8,
                np.random.default_rng(0))


def test_hsv_and_flips():
    from edge_detect.training.data import augment_hsv, flip_lr, flip_ud

    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    same = img.copy()
    augment_hsv(same, np.random.default_rng(0), 0, 0, 0)
    assert np.array_equal(same, img)
    jittered = img.copy()
    augment_hsv(jittered, np.random.default_rng(0), 0.015, 0.7, 0.4)
    assert jittered.shape == img.shape and not np.array_equal(jittered, img)
    lab = np.array([[0, 0.2, 0.3, 0.1, 0.1]], np.float32)
    out, l2 = flip_lr(img, lab)
    assert np.array_equal(out, img[:, ::-1]) and l2[0, 1] == pytest.approx(0.8) and lab[0, 1] == pytest.approx(0.2)
    out, l3 = flip_ud(img, lab)
    assert np.array_equal(out, img[::-1]) and l3[0, 2] == pytest.approx(0.7)


def test_dataset_items_and_collate(tiny_yaml):
    from edge_detect.training.data import YOLODataset, collate, load_split

    split = load_split(tiny_yaml, "train")
    assert len(split) == 8 and split.names == ["circle", "square"]
    ds = YOLODataset(split, 64, augment=True, seed=0)
    assert np.array_equal(YOLODataset(split, 64, augment=True, seed=0, cache_images=True)[5][0], ds[5][0])
    a, b = ds[3], ds[3]
    assert np.array_equal(a[0], b[0])  # same (seed, epoch, index) -> same augmentation
    ds.set_epoch(1)
    assert not np.array_equal(ds[3][0], a[0])
    for i in range(len(ds)):
        img, lab, _, info = ds[i]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and info is None
        assert lab.shape[1] == 5 and (lab[:, 1:] >= 0).all() and (lab[:, 1:] <= 1).all()
    val = YOLODataset(load_split(tiny_yaml, "val"), 64, augment=False)
    img, lab, path, info = val[0]
    np.testing.assert_allclose(lab, val.split.labels[0], atol=1e-5)  # square 64 px images: letterbox = identity
    assert info.ratio == 1.0 and Path(path).name == "val_00000.png"
    imgs, targets, paths, infos = collate([val[0], val[1]])
    assert tuple(imgs.shape) == (2, 3, 64, 64) and str(imgs.dtype) == "torch.uint8"
    assert targets.shape[1] == 6 and set(targets[:, 0].tolist()) == {0.0, 1.0}
    assert np.array_equal(imgs[0].numpy(), val[0][0][:, :, ::-1].transpose(2, 0, 1))  # BGR -> RGB CHW


def test_loader_workers_see_the_new_epoch(tiny_yaml):
    from edge_detect.training.data import YOLODataset, create_dataloader, load_split

    ds = YOLODataset(load_split(tiny_yaml, "train"), 64, augment=True, seed=0)
    loader = create_dataloader(ds, batch_size=8, shuffle=False, workers=1)
    first = next(iter(loader))[0]
    assert np.array_equal(first[0].numpy(), ds[0][0][:, :, ::-1].transpose(2, 0, 1))  # worker = main process
    ds.set_epoch(1)
    second = next(iter(loader))[0]
    assert not np.array_equal(first.numpy(), second.numpy())


def test_val_labels_follow_the_letterbox(coco128_yaml):
    from edge_detect.training.data import YOLODataset, load_split

    ds = YOLODataset(load_split(coco128_yaml, "val", limit=2), 160, augment=False)
    img, lab, _, info = ds[0]
    assert img.shape == (160, 160, 3)
    h0, w0 = info.orig_shape
    orig = ds.split.labels[0]
    # x centre in letterbox pixels = original pixels * ratio + left pad
    np.testing.assert_allclose(lab[:, 1] * 160, orig[:, 1] * w0 * info.ratio + info.pad[0], atol=1e-3)
    np.testing.assert_allclose(lab[:, 4] * 160, orig[:, 4] * h0 * info.ratio, atol=1e-3)


# ------------------------------------------------------------------------------------------ settings
def test_default_hyp_values():
    from edge_detect.training.train import DEFAULT_HYP, load_hyp

    hyp = load_hyp()
    assert DEFAULT_HYP.name == "hyp.scratch-low.yaml"
    assert hyp["lr0"] == 0.01 and hyp["momentum"] == 0.937 and hyp["weight_decay"] == 0.0005
    assert hyp["box"] == 0.05 and hyp["cls"] == 0.5 and hyp["obj"] == 1.0 and hyp["anchor_t"] == 4.0
    assert hyp["mosaic"] == 1.0 and hyp["fliplr"] == 0.5 and hyp["warmup_epochs"] == 3.0
    assert load_hyp({"lr0": 0.02, "iou_t": 0.2, "mixup": 0.0})["lr0"] == 0.02
    assert load_hyp("hyp.scratch-low") == hyp


@pytest.mark.parametrize("hyp, message", [
    ({"lr_0": 0.01}, "unknown hyperparameter 'lr_0' (did you mean 'lr0'?)"),
    ({"mixup": 0.1}, "mixup augmentation is not implemented"),
    ({"lr0": "fast"}, "expected a number, got 'fast'"),
    ("/nonexistent/hyp.yaml", "config file not found"),
])
def test_hyp_errors(hyp, message):
    import re

    from edge_detect.training.train import load_hyp
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_hyp(hyp)


@pytest.mark.parametrize("nl, nc, imgsz, expected", [
    (3, 80, 640, (0.05, 0.5, 1.0)),
    (3, 3, 128, (0.05, 0.5 * 3 / 80, (128 / 640) ** 2)),
    (4, 80, 640, (0.05 * 3 / 4, 0.5 * 3 / 4, 3 / 4)),
])
def test_scale_loss_gains(nl, nc, imgsz, expected):
    from edge_detect.training.train import load_hyp, scale_loss_gains

    g = scale_loss_gains(load_hyp(), nl, nc, imgsz)
    assert (g["box"], g["cls"], g["obj"]) == pytest.approx(expected)


@pytest.mark.parametrize("cos", [False, True])
def test_lr_lambda(cos):
    from edge_detect.training.train import lr_lambda

    f = lr_lambda(11, 0.01, cos)
    assert f(0) == pytest.approx(1.0) and f(10) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.505)  # both schedules pass the midpoint at half-way
    assert f(2) == pytest.approx(1 - 0.99 * (0.2 if not cos else (1 - math.cos(0.2 * math.pi)) / 2))
    assert all(f(i) >= f(i + 1) for i in range(10))


@pytest.mark.parametrize("device, error, message", [
    ("0,1", "ConfigError", "torchrun"),
    ("gpu", "ConfigError", "expected 'cpu'"),
])
def test_select_device_errors(device, error, message):
    import torch

    from edge_detect import errors
    from edge_detect.training.train import select_device

    if not torch.cuda.is_available() and device == "0,1":
        error, message = "BackendUnavailableError", "CUDA is not available"
    with pytest.raises(getattr(errors, error), match=message):
        select_device(device)
    assert select_device("cpu").type == "cpu"


def test_optimizer_groups_and_freeze():
    from torch import nn

    from edge_detect.training.model import YOLOv5
    from edge_detect.training.train import _freeze, build_optimizer

    model = YOLOv5("yolov5n", nc=3)
    opt = build_optimizer(model, 0.01, 0.937, 5e-4)
    names = [g["name"] for g in opt.param_groups]
    assert names == ["bias", "weight", "bn"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert all(g["nesterov"] and g["momentum"] == 0.937 for g in opt.param_groups)
    n_bn = sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    n_conv = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert [len(g["params"]) for g in opt.param_groups] == [n_bn + 3, n_conv, n_bn]  # 3 Detect conv biases
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    frozen = _freeze(model, 10)
    assert frozen and all(n.startswith(tuple(f"model.{i}." for i in range(10))) for n in frozen)
    opt2 = build_optimizer(model, 0.01, 0.937, 5e-4)
    assert sum(len(g["params"]) for g in opt2.param_groups) == sum(len(g["params"]) for g in opt.param_groups) \
        - len(frozen)


def test_freeze_rejects_detect_layer():
    from edge_detect.training.model import YOLOv5
    from edge_detect.training.train import _freeze
    from edge_detect.errors import ConfigError

    with pytest.raises(ConfigError, match=r"expected layer indices in 0\.\.23"):
        _freeze(YOLOv5("yolov5n", nc=2), [24])


def test_warmup_interpolation():
    import torch

    from edge_detect.training.train import _warmup, build_optimizer, load_hyp

    hyp = load_hyp()
    opt = build_optimizer(torch.nn.Linear(2, 2), 0.01, 0.937, 5e-4)
    for g in opt.param_groups:
        g["initial_lr"] = 0.01
    acc = _warmup(opt, 0, 100, 1.0, hyp, 4.0)
    assert acc == 1 and [g["lr"] for g in opt.param_groups] == [0.1, 0.0, 0.0]
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    acc = _warmup(opt, 50, 100, 0.5, hyp, 4.0)
    assert acc == 2 and opt.param_groups[1]["lr"] == pytest.approx(0.0025)
    assert opt.param_groups[0]["lr"] == pytest.approx((0.1 + 0.005) / 2)
    acc = _warmup(opt, 100, 100, 1.0, hyp, 4.0)
    assert acc == 4 and [g["lr"] for g in opt.param_groups] == pytest.approx([0.01] * 3)
    assert opt.param_groups[2]["momentum"] == pytest.approx(0.937)


def test_model_ema_follows_then_smooths():
    import torch

    from edge_detect.training.train import ModelEMA

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9999, tau=2000)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert float(ema.ema.weight) == pytest.approx(1 - d)  # first update: almost the model itself
    ema.updates = 100_000
    assert ema.current_decay() == pytest.approx(0.9999, rel=1e-6)
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_build_model_transfer_resets_head(weights_pt):
    import torch

    from edge_detect.training.checkpoint import load_checkpoint
    from edge_detect.training.train import _build_model

    model = _build_model(weights_pt, None, ["a", "b"])
    ref = load_checkpoint(weights_pt)["state_dict"]
    state = model.state_dict()
    assert model.nc == 2 and model.names == ["a", "b"]
    assert tuple(state["model.24.m.0.weight"].shape) == (21, 64, 1, 1)
    kept = [k for k in state if not k.startswith("model.24.m.")]
    assert all(torch.equal(state[k], ref[k]) for k in kept)
    assert torch.equal(state["model.24.anchors"], ref["model.24.anchors"])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"data": "TINY"}, "ConfigError", "expected --weights"),
    ({"cfg": "yolov5n", "data": "TINY", "imgsz": 100}, "ConfigError", "multiple of 32, got 100"),
    ({"cfg": "yolov5n", "data": "TINY", "batch": 0}, "ConfigError", "multiple of the 1 processes, got 0"),
    ({"cfg": "yolov5n"}, "ConfigError", "expected --data"),
    ({"resume": "NOPE"}, "ModelError", "checkpoint not found"),
    ({"resume": True}, "ModelError", "found none"),
    ({"cfg": "yolov5n", "data": "TINY", "hyp": {"mixup": 0.5}}, "ConfigError", "mixup"),
    ({"cfg": "yolov5n", "data": "TINY", "freeze": [30]}, "ConfigError", "expected layer indices"),
])
def test_train_argument_errors(kwargs, error, message, tiny_yaml, tmp_path):
    from edge_detect import errors
    from edge_detect.training.train import train

    subst = {"TINY": tiny_yaml, "NOPE": tmp_path / "nope"}
    kwargs = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    args = {"epochs": 1, "imgsz": 64, "batch": 2, "device": "cpu", "project": tmp_path, "workers": 0,
            "progress": False, **kwargs}
    with pytest.raises(getattr(errors, error), match=message):
        train(**args)
    assert not (tmp_path / "exp" / "weights" / "last.pt").exists()


# ------------------------------------------------------------------------------------------ CLI
def test_cli_help_lists_every_flag(capsys):
    from edge_detect.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--weights", "--cfg", "--data", "--epochs", "--imgsz", "--batch", "--device", "--project",
                 "--name", "--hyp", "--resume", "--workers", "--freeze", "--nbs", "--limit"):
        assert flag in out


@pytest.mark.parametrize("argv, message", [
    (["train", "--cfg", "yolov5n"], "expected --data"),
    (["train", "--data", "x.yaml"], "expected --weights PT or --cfg"),
    (["train", "--cfg", "yolov5n", "--data", "/nonexistent.yaml", "--device", "cpu"], "dataset yaml not found"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    from edge_detect.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-detect: error:") and message in err[0]


# ------------------------------------------------------------------------------------------ end to end
def _read_csv(path: Path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_synthetic_shapes_are_learnt(shapes_yaml, weights_pt, tmp_path):
    """Fine-tuning yolov5n.pt with a new 3-class head reaches mAP50 > 0.5 on the shapes val split."""
    from edge_detect.training.train import train

    res = train(weights=weights_pt, data=shapes_yaml, epochs=16, imgsz=128, batch=16, device="cpu",
                project=tmp_path, name="shapes", workers=0, progress=False, nominal_batch=16,
                hyp={"warmup_min_iters": 20})
    rows = _read_csv(res["results_csv"])
    assert len(rows) == 16
    maps = [float(r["metrics/mAP_0.5"]) for r in rows]
    assert maps[0] < 0.2 and max(maps) > 0.5, maps
    assert res["metrics"]["map50"] > 0.5
    box = [float(r["train/box_loss"]) for r in rows]
    assert box[-1] < 0.8 * box[0]
    assert res["best"].is_file() and res["results_png"].is_file() == has_module("matplotlib")


def _limited_yaml(data_yaml: Path, tmp_path: Path, n: int) -> Path:
    """A copy of ``data_yaml`` whose val split lists only its first ``n`` images (a .txt list file)."""
    import yaml

    from edge_detect.datasets import load_dataset

    spec = load_dataset(data_yaml)
    listing = tmp_path / "val_list.txt"
    listing.write_text("\n".join(str(p) for p in spec.images("val")[:n]) + "\n")
    out = tmp_path / "limited.yaml"
    out.write_text(yaml.safe_dump({"path": str(spec.root), "train": str(spec.splits["train"][0]),
                                   "val": str(listing), "names": list(spec.names)}))
    return out


@pytest.mark.slow
def test_coco128_finetune_epoch_checkpoints_export_and_val(coco128_yaml, weights_pt, tmp_path):
    import torch

    from edge_detect.training.checkpoint import load_checkpoint, load_model
    from edge_detect.training.train import train

    res = train(weights=weights_pt, data=coco128_yaml, epochs=1, imgsz=160, batch=16, device="cpu",
                project=tmp_path, name="coco", workers=0, progress=False, limit=32)
    if has_module("matplotlib"):  # the chart needs matplotlib; without it training still succeeds
        assert res["results_png"].stat().st_size > 10_000
    else:
        assert not res["results_png"].exists()
    rows = _read_csv(res["results_csv"])
    assert len(rows) == 1 and 0.0 < float(rows[0]["metrics/mAP_0.5"]) <= 1.0
    # 80 classes kept: the COCO head is fine-tuned, so mAP on these 32 val images stays far above chance
    assert res["metrics"]["map50"] > 0.2, res["metrics"]
    for key in ("best", "last"):
        model, names = load_model(res[key])
        assert len(names) == 80 and names[0] == "person"
        out = model(torch.zeros(1, 3, 160, 160))
        assert tuple(out.shape) == (1, 3 * (400 + 100 + 25), 85)
    info = load_checkpoint(res["last"])
    assert info["epoch"] == 0 and "train_state" in info["extra"] and "train_state" not in \
        load_checkpoint(res["best"])["extra"]
    if not has_module("onnxruntime"):
        pytest.skip("onnxruntime not installed: export/val of the checkpoint not checked")
    from edge_detect.training.export import export_onnx
    from edge_detect.evaluate import evaluate

    onnx_path = export_onnx(res["best"], tmp_path / "best.onnx", imgsz=(160, 160))
    val = evaluate(onnx_path, coco128_yaml, split="val", imgsz=160, progress=False)
    # the in-training validation follows the `val` protocol: same figures on the same 32 images
    val32 = evaluate(onnx_path, _limited_yaml(coco128_yaml, tmp_path, 32), split="val", imgsz=160, progress=False)
    assert val32["images"] == 32
    assert val32["map50"] == pytest.approx(res["metrics"]["map50"], abs=0.01)
    assert val32["map50_95"] == pytest.approx(res["metrics"]["map50_95"], abs=0.01)
    assert val["map50"] > 0.1 and val["images"] == 128


@pytest.mark.slow
def test_resume_continues_an_unfinished_run(tiny_yaml, tmp_path):
    import torch

    from edge_detect.training.checkpoint import load_checkpoint
    from edge_detect.training.train import train
    from edge_detect.errors import ConfigError

    res = train(cfg="yolov5n", data=tiny_yaml, epochs=1, imgsz=64, batch=4, device="cpu", project=tmp_path,
                name="r", workers=0, progress=False)
    with pytest.raises(ConfigError, match="finished all 1 epochs"):
        train(resume=res["run_dir"], progress=False, workers=0)
    # pretend the run was meant to last 2 epochs and was interrupted after the first
    ckpt = torch.load(res["last"], weights_only=True)
    ckpt["extra"]["train_args"]["epochs"] = 2
    torch.save(ckpt, res["last"])
    again = train(resume=True, project=tmp_path, progress=False, workers=0, device="cpu")
    assert again["run_dir"] == res["run_dir"]
    rows = _read_csv(again["results_csv"])
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert load_checkpoint(again["last"])["epoch"] == 1
    # the learning rate continued on the schedule instead of restarting the warmup from 0
    assert float(rows[1]["x/lr1"]) > 0


@pytest.mark.slow
def test_ddp_two_processes_gloo(tiny_yaml, tmp_path):
    from edge_detect.training.checkpoint import load_checkpoint, load_model

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edge_detect", "train", "--cfg", "yolov5n", "--data", str(tiny_yaml), "--epochs", "1",
           "--imgsz", "64", "--batch", "4", "--device", "cpu", "--project", str(tmp_path), "--name", "ddp",
           "--workers", "0", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mAP50-95" in proc.stdout and proc.stdout.count("mAP50-95") == 1  # only rank 0 reports
    run = tmp_path / "ddp"
    info = load_checkpoint(run / "weights" / "last.pt")
    assert info["extra"]["train_args"]["world_size"] == 2 and info["epoch"] == 0
    model, names = load_model(run / "weights" / "best.pt")
    assert names == ["circle", "square"]
    assert len(_read_csv(run / "results.csv")) == 1
    assert (run / "results.png").is_file() == has_module("matplotlib")
