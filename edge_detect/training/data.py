"""Training data: YOLO-format datasets, YOLOv5-style augmentation and batching.

The augmentations are the few YOLOv5 trains with by default, implemented with OpenCV/NumPy (small and tested;
albumentations is not a dependency):

* **mosaic**: four images tiled around a random centre on a ``2s x 2s`` grey canvas, then cropped back to
  ``s x s`` by the random affine;
* **random affine**: rotation (``degrees``), scale (``1 +/- scale``), shear (``shear``), perspective and
  translation (``translate``) about the image centre, boxes transformed by their corners and filtered;
* **HSV jitter** with gains ``hsv_h``, ``hsv_s``, ``hsv_v`` (lookup tables, in place);
* **flips** left-right (``fliplr``) and up-down (``flipud``);
* **letterbox** (no augmentation) for validation.

Box conventions inside this module: labels are float32 ``(n, 5)`` rows ``[class, x1, y1, x2, y2]`` in pixels
of the image they belong to; the dataset returns ``[class, cx, cy, w, h]`` normalized to the output image.
Images are BGR ``uint8 (H, W, 3)`` until the collate function, which returns RGB ``uint8 (B, 3, H, W)``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edge_detect.boxes import clip_boxes, cxcywh_to_xyxy, denormalize_boxes, normalize_boxes, xyxy_to_cxcywh
from edge_detect.errors import DataError
from edge_detect.preprocess import letterbox

__all__ = [
    "AUG_HYP_DEFAULTS", "SplitData", "load_split", "load_image", "augment_hsv", "random_affine", "mosaic4",
    "box_candidates", "flip_lr", "flip_ud", "xyxy_to_cxcywh_norm", "cxcywh_norm_to_xyxy",
    "YOLODataset", "collate", "create_dataloader",
]

LOGGER = logging.getLogger(__name__)

#: augmentation hyperparameters and their YOLOv5 "scratch-low" values
AUG_HYP_DEFAULTS: Dict[str, float] = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
    "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0,
}
PAD_VALUE = 114


# ----------------------------------------------------------------------------------------------- dataset files
@dataclass
class SplitData:
    """One split of a YOLO dataset, labels parsed and validated.

    Attributes:
        images: image paths.
        labels: per image a float32 ``(n, 5)`` array ``[class, cx, cy, w, h]`` normalized to ``[0, 1]``.
        names: class names (index = class id).
    """

    images: List[Path]
    labels: List[np.ndarray]
    names: List[str]

    def __len__(self) -> int:
        return len(self.images)


def load_split(data_yaml: Union[str, os.PathLike], split: str = "train", limit: Optional[int] = None) -> SplitData:
    """Read one split (``"train"`` or ``"val"``) of a dataset yaml through :mod:`edge_detect.datasets`.

    Labels are validated there (class ids in range, 5 columns, normalized coordinates); the first
    ``limit`` images are kept when given.

    Raises:
        DataError: the yaml, split, images or labels are invalid.
    """
    from edge_detect import datasets

    spec = datasets.load_dataset(data_yaml)
    images = spec.images(split)
    if limit is not None:
        images = images[: int(limit)]
    if not images:
        raise DataError(f"{data_yaml}: split '{split}' has no images (expected at least 1)")
    labels = datasets.load_labels(images, nc=spec.nc)
    LOGGER.info("%s %s: %d images, %d boxes", Path(data_yaml).name, split, len(images), sum(map(len, labels)))
    return SplitData(images=[Path(p) for p in images], labels=[lab.astype(np.float32) for lab in labels],
                     names=list(spec.names))


# ----------------------------------------------------------------------------------------------- box helpers
def cxcywh_norm_to_xyxy(labels: np.ndarray, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> np.ndarray:
    """``(n, 5) [cls, cx, cy, w, h]`` normalized -> ``(n, 5) [cls, x1, y1, x2, y2]`` pixels (+ padding offset)."""
    out = labels.astype(np.float32, copy=True)
    out[:, 1:5] = cxcywh_to_xyxy(denormalize_boxes(out[:, 1:5], (h, w))) + np.float32([padw, padh, padw, padh])
    return out


def xyxy_to_cxcywh_norm(labels: np.ndarray, w: float, h: float) -> np.ndarray:
    """``(n, 5) [cls, x1, y1, x2, y2]`` pixels -> ``(n, 5) [cls, cx, cy, w, h]`` normalized, clipped to the image."""
    out = labels.astype(np.float32, copy=True)
    out[:, 1:5] = normalize_boxes(xyxy_to_cxcywh(clip_boxes(labels[:, 1:5], (h, w))), (h, w))
    return out


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2.0, ar_thr: float = 20.0,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Boxes worth keeping after a geometric transform.

    Args:
        before: ``(n, 4)`` xyxy pixel boxes before the transform (scaled by the transform's zoom).
        after: ``(n, 4)`` the same boxes after the transform and clipping.

    Returns:
        bool ``(n,)``: wider and taller than ``wh_thr`` px, at least ``area_thr`` of the area kept, aspect
        ratio below ``ar_thr``.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


# ----------------------------------------------------------------------------------------------- pixel transforms
def load_image(path: Union[str, os.PathLike], imgsz: int, augment: bool = False) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Read an image and resize it so its long side is ``imgsz`` (aspect kept).

    Returns:
        ``(img, (h0, w0))``: BGR ``uint8 (h, w, 3)`` with ``max(h, w) == imgsz`` and the original size.

    Raises:
        DataError: the file cannot be decoded as an image.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: expected a readable image file, OpenCV could not decode it")
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        interp = cv2.INTER_LINEAR if (augment or r > 1) else cv2.INTER_AREA
        img = cv2.resize(img, (max(1, round(w0 * r)), max(1, round(h0 * r))), interpolation=interp)
    return img, (h0, w0)


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float = 0.5, sgain: float = 0.5,
                vgain: float = 0.5) -> None:
    """Random hue/saturation/value jitter of a BGR ``uint8`` image, in place.

    Each channel is multiplied by a factor drawn uniformly in ``[1 - gain, 1 + gain]`` (hue wraps modulo 180).
    """
    if not (hgain or sgain or vgain):
        return
    gains = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=img)


def _affine_matrix(height: int, width: int, out_hw: Tuple[int, int], rng: np.random.Generator, degrees: float,
                   translate: float, scale: float, shear: float, perspective: float) -> Tuple[np.ndarray, float]:
    """3x3 matrix (centre -> perspective -> rotate/scale -> shear -> translate) and its zoom factor."""
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -width / 2, -height / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective, 2)
    angle = rng.uniform(-degrees, degrees)
    zoom = rng.uniform(1 - scale, 1 + scale)
    rot = np.eye(3)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)
    sh = np.eye(3)
    sh[0, 1], sh[1, 0] = np.tan(np.deg2rad(rng.uniform(-shear, shear, 2)))
    tr = np.eye(3)
    tr[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[1]
    tr[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[0]
    return tr @ sh @ rot @ persp @ centre, zoom


def random_affine(img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, out_hw: Tuple[int, int],
                  degrees: float = 0.0, translate: float = 0.1, scale: float = 0.5, shear: float = 0.0,
                  perspective: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """Random geometric transform of an image and its boxes, output ``out_hw``.

    Args:
        img: BGR ``uint8 (H, W, 3)`` (for mosaic the ``2s x 2s`` canvas).
        labels: float32 ``(n, 5)`` ``[class, x1, y1, x2, y2]`` in ``img`` pixels.
        out_hw: output ``(h, w)``; the transform is centred so that the input centre maps near the output
            centre (shifted by ``translate``).

    Returns:
        ``(img_out, labels_out)``: BGR ``uint8 (*out_hw, 3)`` and the kept boxes ``(k, 5)`` in output pixels,
        clipped (see :func:`box_candidates`).
    """
    height, width = img.shape[:2]
    m, zoom = _affine_matrix(height, width, out_hw, rng, degrees, translate, scale, shear, perspective)
    dsize = (out_hw[1], out_hw[0])
    if perspective:
        img = cv2.warpPerspective(img, m, dsize=dsize, borderValue=(PAD_VALUE,) * 3)
    else:
        img = cv2.warpAffine(img, m[:2], dsize=dsize, borderValue=(PAD_VALUE,) * 3)
    if len(labels) == 0:
        return img, labels.reshape(0, 5).astype(np.float32)
    corners = np.ones((len(labels) * 4, 3))
    corners[:, :2] = labels[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(-1, 2)  # x1y1, x2y2, x1y2, x2y1
    corners = corners @ m.T
    corners = (corners[:, :2] / corners[:, 2:3] if perspective else corners[:, :2]).reshape(-1, 8)
    xs, ys = corners[:, 0::2], corners[:, 1::2]
    boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    boxes = clip_boxes(boxes, out_hw)
    keep = box_candidates(labels[:, 1:5] * zoom, boxes)
    out = np.concatenate([labels[keep, :1], boxes[keep]], axis=1).astype(np.float32)
    return img, out


def flip_lr(img: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; ``labels`` ``(n, 5)`` ``[class, cx, cy, w, h]`` normalized."""
    labels = labels.copy()
    labels[:, 1] = 1 - labels[:, 1]
    return np.ascontiguousarray(img[:, ::-1]), labels


def flip_ud(img: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror up-down; ``labels`` ``(n, 5)`` ``[class, cx, cy, w, h]`` normalized."""
    labels = labels.copy()
    labels[:, 2] = 1 - labels[:, 2]
    return np.ascontiguousarray(img[::-1]), labels


def mosaic4(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], size: int,
            rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Tile four images around a random centre of a ``2*size`` square grey canvas.

    Args:
        images: four BGR ``uint8`` images, each with long side ``size`` (see :func:`load_image`).
        labels: per image ``(n, 5)`` ``[class, cx, cy, w, h]`` normalized to that image.
        size: the training image size ``s``.

    Returns:
        ``(canvas, boxes)``: BGR ``uint8 (2s, 2s, 3)`` and ``(N, 5)`` ``[class, x1, y1, x2, y2]`` canvas pixels.
        The centre ``(xc, yc)`` is drawn in ``[s/2, 3s/2)``; image 0 ends at it from the top-left, 1 from the
        top-right, 2 from the bottom-left, 3 from the bottom-right (cropped to the canvas).
    """
    if len(images) != 4 or len(labels) != 4:
        raise DataError(f"mosaic: expected 4 images and 4 label arrays, got {len(images)} and {len(labels)}")
    s = size
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, dtype=np.uint8)
    xc, yc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, 2))
    out = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        h, w = img.shape[:2]
        # destination rectangle on the canvas, then the matching source rectangle
        x1 = max(xc - w, 0) if i in (0, 2) else xc
        x2 = xc if i in (0, 2) else min(xc + w, 2 * s)
        y1 = max(yc - h, 0) if i in (0, 1) else yc
        y2 = yc if i in (0, 1) else min(yc + h, 2 * s)
        sx1 = w - (x2 - x1) if i in (0, 2) else 0
        sy1 = h - (y2 - y1) if i in (0, 1) else 0
        canvas[y1:y2, x1:x2] = img[sy1:sy1 + (y2 - y1), sx1:sx1 + (x2 - x1)]
        out.append(cxcywh_norm_to_xyxy(lab, w, h, padw=x1 - sx1, padh=y1 - sy1))
    boxes = np.concatenate(out, 0) if out else np.zeros((0, 5), np.float32)
    boxes[:, 1:] = clip_boxes(boxes[:, 1:], (2 * s, 2 * s))
    return canvas, boxes.astype(np.float32)


# ----------------------------------------------------------------------------------------------- torch dataset
class YOLODataset(Dataset):
    """A split of a YOLO dataset producing augmented (train) or letterboxed (val) square images.

    Args:
        split: images and labels (see :func:`load_split`).
        imgsz: square output size (a multiple of the model stride).
        augment: YOLOv5 training augmentation (mosaic, affine, HSV, flips) when True, else letterbox only.
        hyp: augmentation hyperparameters (missing keys take :data:`AUG_HYP_DEFAULTS`).
        seed: base seed; each item draws from ``(seed, epoch, index)`` so workers and ranks are reproducible.
        cache_images: load every resized training image into memory up front (small datasets).

    Items are ``(img, labels, path, shape_info)``: BGR ``uint8 (imgsz, imgsz, 3)``, float32 ``(n, 5)``
    ``[class, cx, cy, w, h]`` normalized to the output image, the image path and, for val, the
    :class:`~edge_detect.types.LetterboxInfo` from original pixels to the output (None when augmented).
    """

    def __init__(self, split: SplitData, imgsz: int, augment: bool = False,
                 hyp: Optional[Mapping[str, float]] = None, seed: int = 0, cache_images: bool = False) -> None:
        self.split = split
        self.imgsz = int(imgsz)
        self.augment = augment
        self.hyp = {**AUG_HYP_DEFAULTS, **{k: float(v) for k, v in (hyp or {}).items() if k in AUG_HYP_DEFAULTS}}
        self.seed = int(seed)
        self.epoch = 0
        self._cache: Dict[int, Tuple[np.ndarray, Tuple[int, int]]] = {}
        if cache_images:  # loaded up front so that DataLoader workers inherit the cache
            for i in range(len(split)):
                self._cache[i] = load_image(split.images[i], self.imgsz, augment)
            LOGGER.info("cached %d images (%.1f MB)", len(self._cache),
                        sum(im.nbytes for im, _ in self._cache.values()) / 1e6)

    def __len__(self) -> int:
        return len(self.split)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation random stream (call once per epoch, like ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def _image(self, i: int) -> Tuple[np.ndarray, Tuple[int, int]]:
        if i in self._cache:
            return self._cache[i]
        return load_image(self.split.images[i], self.imgsz, self.augment)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray, str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch, int(index)))
        if not self.augment:
            img, info = letterbox(self._raw(index), (self.imgsz, self.imgsz), auto=False)
            h0, w0 = info.orig_shape
            boxes = cxcywh_norm_to_xyxy(self.split.labels[index], w0 * info.ratio, h0 * info.ratio, *info.pad)
            return img, xyxy_to_cxcywh_norm(boxes, self.imgsz, self.imgsz), str(self.split.images[index]), info
        if rng.random() < self.hyp["mosaic"]:
            idx = [index, *rng.integers(0, len(self), 3)]
            imgs = [self._image(int(i))[0] for i in idx]
            canvas, boxes = mosaic4(imgs, [self.split.labels[int(i)] for i in idx], self.imgsz, rng)
        else:
            img = self._image(index)[0]
            canvas, _ = letterbox(img, (self.imgsz, self.imgsz), auto=False, scaleup=False)
            h, w = img.shape[:2]
            pw, ph = (self.imgsz - w) / 2, (self.imgsz - h) / 2
            boxes = cxcywh_norm_to_xyxy(self.split.labels[index], w, h, padw=pw, padh=ph)
        img, boxes = random_affine(canvas, boxes, rng, (self.imgsz, self.imgsz), self.hyp["degrees"],
                                   self.hyp["translate"], self.hyp["scale"], self.hyp["shear"],
                                   self.hyp["perspective"])
        labels = xyxy_to_cxcywh_norm(boxes, self.imgsz, self.imgsz)
        augment_hsv(img, rng, self.hyp["hsv_h"], self.hyp["hsv_s"], self.hyp["hsv_v"])
        if rng.random() < self.hyp["flipud"]:
            img, labels = flip_ud(img, labels)
        if rng.random() < self.hyp["fliplr"]:
            img, labels = flip_lr(img, labels)
        return img, labels, str(self.split.images[index]), None

    def _raw(self, i: int) -> np.ndarray:
        img = cv2.imread(str(self.split.images[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{self.split.images[i]}: expected a readable image file, OpenCV could not decode it")
        return img


def collate(batch: Sequence[Tuple[np.ndarray, np.ndarray, str, Any]]) -> Tuple[torch.Tensor, torch.Tensor, List[str], List[Any]]:
    """Stack items into ``(images, targets, paths, infos)``.

    Returns:
        images: RGB ``uint8 (B, 3, H, W)`` tensor (divide by 255 on the device);
        targets: float32 ``(M, 6)`` rows ``[image_index, class, cx, cy, w, h]`` normalized;
        paths and per-image letterbox infos (None for augmented items).
    """
    imgs = np.stack([np.ascontiguousarray(b[0][:, :, ::-1].transpose(2, 0, 1)) for b in batch])
    rows = [np.concatenate([np.full((len(b[1]), 1), i, np.float32), b[1]], 1) for i, b in enumerate(batch)]
    targets = np.concatenate(rows, 0) if rows else np.zeros((0, 6), np.float32)
    return torch.from_numpy(imgs), torch.from_numpy(targets.astype(np.float32)), [b[2] for b in batch], \
        [b[3] for b in batch]


def create_dataloader(dataset: YOLODataset, batch_size: int, shuffle: bool, workers: int = 0,
                      distributed: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` with :func:`collate`; a ``DistributedSampler`` when ``distributed``."""
    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      generator=gen, drop_last=False)  # workers restart each epoch: they see set_epoch()
