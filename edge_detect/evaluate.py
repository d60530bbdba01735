"""Accuracy of a model on a YOLO-format dataset split: COCO mAP50-95 / mAP50 scored by pycocotools.

Protocol (matches the reference figures in the shared data): every image of the split is letterboxed to a
square ``imgsz`` (``auto=False``), NMS at conf 0.001 / IoU 0.6 / max_det 300, predictions are mapped back to
original pixels, and both the YOLO labels (as COCO ground truth, built in memory) and the predictions are
scored by ``pycocotools.cocoeval.COCOeval`` (``bbox``).

COCO conventions used: ``image_id`` = the file stem as an int when every stem is numeric (COCO file names),
else the stem string (the path without suffix if stems collide); ``category_id`` = class index; ``bbox`` =
``[x, y, w, h]`` in original pixels (top-left corner, size); ground-truth ``area`` = ``w * h``, ``iscrowd`` 0.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_detect._optional import require
from edge_detect.backends.base import Backend, load_backend
from edge_detect.boxes import xyxy_to_xywh
from edge_detect.datasets import DatasetSpec, load_dataset, load_labels
from edge_detect.detector import Detector
from edge_detect.errors import DataError
from edge_detect.progress import progress as progress_bar
from edge_detect.types import Detections
from edge_detect.paths import PathLike

__all__ = ["evaluate", "image_ids", "coco_ground_truth", "coco_results", "coco_map"]

LOGGER = logging.getLogger(__name__)

ImageId = Union[int, str]


def image_ids(images: Sequence[Path]) -> List[ImageId]:
    """COCO image ids for image files: int stems if all numeric, else stems (paths without suffix if clashing)."""
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        return [str(p.with_suffix("")) for p in images]
    if all(s.isdigit() for s in stems):
        return [int(s) for s in stems]
    return stems


def coco_ground_truth(ids: Sequence[ImageId], shapes: Sequence[Tuple[int, int]], labels: Sequence[np.ndarray],
                      names: Sequence[str], files: Optional[Sequence[Path]] = None) -> Dict[str, Any]:
    """A COCO ground-truth dataset dict from YOLO labels.

    Args:
        ids: image ids.
        shapes: ``(h, w)`` of each original image in pixels.
        labels: float ``(n, 5)`` per image, rows ``[class, cx, cy, w, h]`` normalized.
        names: class names (category ``id`` = index).
        files: image paths for ``file_name`` (optional).

    Returns:
        ``{"info", "licenses", "images", "annotations", "categories"}``; annotation ids start at 1 (COCOeval
        treats id 0 as "unmatched"), ``bbox`` ``[x, y, w, h]`` in original pixels, ``area = w * h``.
    """
    images, anns = [], []
    for k, (iid, (h, w), lab) in enumerate(zip(ids, shapes, labels)):
        images.append({"id": iid, "height": int(h), "width": int(w),
                       "file_name": files[k].name if files is not None else str(iid)})
        if not len(lab):
            continue
        bw, bh = lab[:, 3] * w, lab[:, 4] * h
        x1, y1 = lab[:, 1] * w - bw / 2, lab[:, 2] * h - bh / 2
        for c, x, y, bwi, bhi in zip(lab[:, 0], x1, y1, bw, bh):
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": int(c),
                         "bbox": [float(x), float(y), float(bwi), float(bhi)], "area": float(bwi * bhi),
                         "iscrowd": 0})
    cats = [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(names)]
    return {"info": {"description": "edge-detect ground truth from YOLO labels"}, "licenses": [],
            "images": images, "annotations": anns, "categories": cats}


def coco_results(iid: ImageId, dets: Detections) -> List[Dict[str, Any]]:
    """COCO result records for one image: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``."""
    xywh = xyxy_to_xywh(dets.xyxy.astype(np.float64))
    return [{"image_id": iid, "category_id": int(c), "bbox": [round(float(v), 3) for v in box],
             "score": round(float(s), 5)} for box, s, c in zip(xywh, dets.score, dets.class_id)]


def coco_map(gt: Dict[str, Any], results: List[Dict[str, Any]]) -> Tuple[float, float]:
    """``(mAP50-95, mAP50)`` of ``results`` against ``gt`` with pycocotools (``bbox``); 0 with no results."""
    if not results or not gt["annotations"]:
        return 0.0, 0.0
    coco_mod = require("pycocotools.coco", "eval", package="pycocotools")
    eval_mod = require("pycocotools.cocoeval", "eval", package="pycocotools")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # pycocotools reports with print()
        coco_gt = coco_mod.COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = eval_mod.COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    LOGGER.debug("pycocotools:\n%s", out.getvalue())
    return float(ev.stats[0]), float(ev.stats[1])


def _read_images(files: Sequence[Path]) -> Iterator[Tuple[int, Optional[np.ndarray]]]:
    for k, f in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            LOGGER.warning("skipping %s: not a decodable image", f)
        yield k, img


def _detector(model: Union[PathLike, Detector, Backend], imgsz: Optional[int], conf: float, iou: float,
              max_det: int) -> Tuple[Detector, bool]:
    """The detector to evaluate and whether this function owns it (must close it)."""
    if isinstance(model, Detector):
        return model, False
    backend = load_backend(model) if isinstance(model, (str, os.PathLike)) else model
    dynamic = min(backend.input_spec.hw) < 0
    owned = isinstance(model, (str, os.PathLike))  # a backend passed in stays open for its owner
    return Detector(backend, conf=conf, iou=iou, max_det=max_det, imgsz=imgsz if dynamic else None,
                    auto=False), owned


def _check_static_size(det: Detector, imgsz: Optional[int]) -> None:
    if imgsz is not None and not det.dynamic_hw and det.input_hw != (int(imgsz), int(imgsz)):
        LOGGER.warning("model input is a static %dx%d; evaluating at that size instead of imgsz=%d",
                       det.input_hw[0], det.input_hw[1], int(imgsz))


def evaluate(model_or_detector: Union[PathLike, Detector, Backend], data_yaml: Union[PathLike, DatasetSpec],
             split: str = "val", imgsz: Optional[int] = 640, conf: float = 0.001, iou: float = 0.6,
             max_det: int = 300, save_json: Optional[PathLike] = None, progress: bool = True) -> Dict[str, Any]:
    """COCO mAP of a model on a dataset split (see the module doc for the protocol).

    Args:
        model_or_detector: a model path (``.onnx``, ``.engine``, ``.pt``), a loaded backend, or a
            :class:`Detector` (its input size is used; thresholds are those given here).
        data_yaml: dataset yaml path or a loaded :class:`DatasetSpec`.
        split: ``"val"``, ``"train"`` or ``"test"``.
        imgsz: square letterbox size for dynamic-shape models (static models run at their own size; a
            different ``imgsz`` only logs a warning); ``None`` = the model's nominal size.
        conf, iou, max_det: NMS settings.
        save_json: write the COCO results list (JSON) here.
        progress: a progress bar (plain log lines when stderr is not a terminal, :mod:`edge_detect.progress`).

    Returns:
        ``{"map50_95", "map50", "images", "boxes", "detections", "skipped", "seconds"}``: the two mAPs, images
        evaluated, ground-truth boxes, predicted boxes, undecodable images skipped, wall time.

    Raises:
        DataError: missing dataset folders, bad labels (file and line named), or no readable images.
        ModelError / ConfigError: the model cannot be loaded or run at ``imgsz``.
    """
    start = time.perf_counter()
    spec = data_yaml if isinstance(data_yaml, DatasetSpec) else load_dataset(data_yaml)
    files = spec.images(split)
    if not files:
        raise DataError(f"{spec.yaml_path}: split '{split}' has no images in {list(map(str, spec.splits[split]))}")
    labels = load_labels(files, spec.nc)
    det, owned = _detector(model_or_detector, imgsz, conf, iou, max_det)
    try:
        _check_static_size(det, imgsz)
        if det.metadata.nc and det.metadata.nc != spec.nc:
            LOGGER.warning("model has %d classes, dataset %d: class ids are compared as they are",
                           det.metadata.nc, spec.nc)
        ids, kept, shapes, results, skipped = image_ids(files), [], [], [], 0
        nms = dict(conf_thres=conf, iou_thres=iou, max_det=max_det, classes=None)
        batch: List[Tuple[int, np.ndarray]] = []
        for k, img in progress_bar(_read_images(files), total=len(files), desc=f"evaluate {split}", unit="img",
                                   disable=not progress):
            if img is None:
                skipped += 1
                continue
            batch.append((k, img))
            if len(batch) == det.batch_size:
                _run_batch(det, batch, nms, ids, kept, shapes, results)
                batch = []
        if batch:
            _run_batch(det, batch, nms, ids, kept, shapes, results)
    finally:
        if owned:
            det.close()
    if not kept:
        raise DataError(f"{spec.yaml_path}: split '{split}': none of the {len(files)} images could be decoded")
    gt = coco_ground_truth([ids[k] for k in kept], shapes, [labels[k] for k in kept], spec.names,
                           [files[k] for k in kept])
    if save_json is not None:
        Path(save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(save_json).write_text(json.dumps(results))
        LOGGER.info("saved %d predictions to %s", len(results), save_json)
    map50_95, map50 = coco_map(gt, results)
    return {"map50_95": map50_95, "map50": map50, "images": len(kept), "boxes": len(gt["annotations"]),
            "detections": len(results), "skipped": skipped, "seconds": time.perf_counter() - start}


def _run_batch(det: Detector, batch: List[Tuple[int, np.ndarray]], nms: Dict[str, Any], ids: List[ImageId],
               kept: List[int], shapes: List[Tuple[int, int]], results: List[Dict[str, Any]]) -> None:
    """Detect one batch of ``(index, image)`` and append its bookkeeping and COCO records."""
    dets = det.detect_batch([img for _, img in batch], auto=False, **nms)
    for (k, img), d in zip(batch, dets):
        kept.append(k)
        shapes.append((int(img.shape[0]), int(img.shape[1])))
        results.extend(coco_results(ids[k], d))
