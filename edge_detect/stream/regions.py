"""Region inference planning: which crops of a frame to run the model on, and mapping their boxes back.

A far-away person 30 px tall in a 1920x1080 frame is 10 px tall after a whole-frame letterbox to 640: too small
for a nano model. Cropping around where something moves and letterboxing only the crop gives the same model
size more pixels on the object. Two pure functions, no model, no state:

* :func:`plan_regions`: boxes of interest (motion boxes, predicted track boxes; ``xyxy`` original-frame pixels)
  -> a few :class:`Region` s (integer ``xyxy`` original-frame pixels) with the model's aspect ratio, padded
  around the boxes, merged where a merge costs no resolution or where they overlap, at least
  ``model size / max_zoom`` big, inside the frame. Too many or too large regions fall back to one region that is
  the whole frame (the plain letterbox path).
* :func:`regions_to_frame`: the :class:`~edge_detect.types.Detections` of each region (crop pixels, what
  :meth:`~edge_detect.detector.Detector.postprocess` returns for the crop image) -> one ``Detections`` in
  original-frame pixels: shifted by the region's offset, clipped to the frame, duplicates across overlapping
  regions removed by class-aware NMS (:func:`edge_detect.postprocess.nms`), and boxes cut by a region's
  inner edge dropped when a kept box of the same class covers them.

The crop itself is a view, ``region.crop(image)``; letterboxing it to the model is the detector's ordinary
preprocess (:func:`edge_detect.preprocess.letterbox`), so the only new mapping is the integer offset.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect.boxes import box_area, box_iou, clip_boxes
from edge_detect.config import suggest_key
from edge_detect.errors import ConfigError
from edge_detect.postprocess import MAX_WH, nms
from edge_detect.types import Detections

__all__ = ["Region", "RegionOptions", "merge_boxes", "plan_regions", "regions_to_frame"]


@dataclass(frozen=True)
class Region:
    """An integer crop of a frame, ``xyxy`` in original-frame pixels (``x2``, ``y2`` exclusive, like slices)."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def xyxy(self) -> Tuple[int, int, int, int]:
        return self.x1, self.y1, self.x2, self.y2

    @property
    def hw(self) -> Tuple[int, int]:
        """``(h, w)`` of the crop in pixels."""
        return self.y2 - self.y1, self.x2 - self.x1

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The region of ``image`` (a view, ``(h, w, C)``)."""
        return image[self.y1:self.y2, self.x1:self.x2]


@dataclass(frozen=True)
class RegionOptions:
    """The settings of region inference (``detect: {regions: ...}``): :func:`plan_regions`'s keyword arguments.

    ``detect.regions`` takes ``true`` (these defaults), ``false`` / ``null`` (off) or a mapping of some of the
    fields (:meth:`from_config`).
    """

    pad: float = 0.25
    min_pad_px: float = 8.0
    max_zoom: float = 1.0
    max_regions: int = 4
    max_area_frac: float = 0.6
    overlap_frac: float = 0.25

    def __post_init__(self) -> None:
        plan_regions(np.zeros((0, 4)), (1, 1), (1, 1), **asdict(self))  # range checks, one line

    @classmethod
    def from_config(cls, value: Union[bool, None, Mapping[str, Any]], section: str = "detect.regions"
                    ) -> Optional["RegionOptions"]:
        """``None`` for ``false`` / ``None``, the defaults for ``true``, else the mapping's fields over them.

        Raises:
            ConfigError: an unknown key (naming the closest), a value out of range, or another type.
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{section}: expected true, false or a mapping of {', '.join(_REGION_KEYS)}, "
                              f"got {value!r}")
        for key in value:
            if key not in _REGION_KEYS:
                raise ConfigError(f"{section}: unknown key {key!r}{suggest_key(str(key), _REGION_KEYS)}; expected "
                                  f"some of {', '.join(_REGION_KEYS)}")
        try:
            numbers = {k: (int(v) if k == "max_regions" else float(v)) for k, v in value.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{section}: expected numbers, got {dict(value)!r}") from exc
        try:
            return cls(**numbers)
        except ConfigError as exc:
            raise ConfigError(f"{section}: {exc}") from exc

    def plan(self, boxes: np.ndarray, frame_hw: Tuple[int, int], model_hw: Tuple[int, int]) -> List[Region]:
        """:func:`plan_regions` with these settings."""
        return plan_regions(boxes, frame_hw, model_hw, **asdict(self))


_REGION_KEYS = tuple(f.name for f in fields(RegionOptions))


def merge_boxes(boxes: np.ndarray, gap: float = 0.0) -> np.ndarray:
    """Merge boxes that overlap or lie within ``gap`` pixels of each other into their union, until none do.

    Args:
        boxes: float ``(N, 4)`` xyxy, any pixel space.
        gap: boxes whose distance on both axes is at most ``gap`` are merged (0: touching or overlapping).

    Returns:
        float32 ``(M, 4)`` xyxy, ``M <= N``, no two within ``gap`` of each other; order: by first member.
    """
    out = [np.asarray(b, np.float64) for b in np.asarray(boxes, np.float64).reshape(-1, 4)]
    merged = True
    while merged and len(out) > 1:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] - gap <= b[2] and b[0] - gap <= a[2] and a[1] - gap <= b[3] and b[1] - gap <= a[3]:
                    out[i] = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return np.asarray(out, np.float32).reshape(-1, 4)


def _fit(box: np.ndarray, frame_hw: Tuple[int, int], aspect: float, min_w: float) -> Region:
    """The smallest region of ``aspect`` (w / h), at least ``min_w`` wide, centred on ``box`` and shifted inside
    the frame (cut to the frame where it is larger)."""
    fh, fw = frame_hw
    bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
    w = max(bw, bh * aspect, min_w)
    h = w / aspect
    w, h = min(w, fw), min(h, fh)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x1 = int(round(min(max(cx - w / 2, 0.0), fw - w)))
    y1 = int(round(min(max(cy - h / 2, 0.0), fh - h)))
    return Region(x1, y1, min(x1 + int(round(w)), fw), min(y1 + int(round(h)), fh))


def _pad(boxes: np.ndarray, pad: float, min_pad_px: float, frame_hw: Tuple[int, int]) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    size = np.maximum(b[:, 2:] - b[:, :2], 0.0)
    margin = np.maximum(size * pad, min_pad_px)
    return clip_boxes(np.concatenate([b[:, :2] - margin, b[:, 2:] + margin], axis=1), frame_hw)


def plan_regions(boxes: np.ndarray, frame_hw: Tuple[int, int], model_hw: Tuple[int, int], pad: float = 0.25,
                 min_pad_px: float = 8.0, max_zoom: float = 1.0, max_regions: int = 4,
                 max_area_frac: float = 0.6, overlap_frac: float = 0.25) -> List[Region]:
    """Crops to run the model on so that ``boxes`` are seen at the best resolution for few calls.

    Args:
        boxes: float ``(N, 4)`` xyxy original-frame pixels (motion boxes, track boxes).
        frame_hw: ``(h, w)`` of the frame.
        model_hw: ``(h, w)`` of the model input; regions take its aspect ratio (so a letterbox pads nothing).
        pad: margin added on each side of every box, as a fraction of the box's size (context for the model).
        min_pad_px: least margin in pixels.
        max_zoom: largest enlargement of a crop by the letterbox: regions are at least ``model / max_zoom``
            pixels (1.0: never upscale, as the whole-frame path on a large frame never does).
        max_regions: more regions than this -> one whole-frame region.
        max_area_frac: regions covering more than this fraction of the frame in total -> one whole-frame region
            (one call on the frame is then cheaper and not much coarser).
        overlap_frac: two regions are merged when their intersection exceeds this fraction of the smaller one
            (besides when their union still fits a minimum-size region, which costs no resolution).

    Returns:
        Regions inside the frame, ``[]`` for no boxes; ``[Region(0, 0, w, h)]`` on fallback.

    Raises:
        ConfigError: a parameter out of range.
    """
    if not (pad >= 0 and min_pad_px >= 0 and max_zoom > 0 and max_regions >= 1 and 0 < max_area_frac <= 1
            and 0 <= overlap_frac <= 1):
        raise ConfigError(f"plan_regions: expected pad >= 0, min_pad_px >= 0, max_zoom > 0, max_regions >= 1, "
                          f"0 < max_area_frac <= 1, 0 <= overlap_frac <= 1, got {pad}, {min_pad_px}, {max_zoom}, "
                          f"{max_regions}, {max_area_frac}, {overlap_frac}")
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(b):
        return []
    mh, mw = model_hw
    aspect, min_w = mw / mh, mw / max_zoom
    whole = [Region(0, 0, fw, fh)]
    if min_w >= fw and min_w / aspect >= fh:  # the frame is no bigger than a minimum region: nothing to gain
        return whole
    contents = _merge_contents(list(merge_boxes(_pad(b, pad, min_pad_px, (fh, fw)))), (fh, fw), aspect, min_w,
                               overlap_frac)
    regions = [_fit(c, (fh, fw), aspect, min_w) for c in contents]
    total = sum(r.hw[0] * r.hw[1] for r in regions)
    if len(regions) > max_regions or total > max_area_frac * fh * fw:
        return whole
    return regions


def _merge_contents(contents: List[np.ndarray], frame_hw: Tuple[int, int], aspect: float, min_w: float,
                    overlap_frac: float) -> List[np.ndarray]:
    """Merge the content boxes of two regions when the union of their contents still fits a minimum-size region
    (no resolution lost, one call saved), or when their regions overlap by more than ``overlap_frac`` of the
    smaller one."""
    out = [np.asarray(c, np.float64) for c in contents]
    changed = True
    while changed and len(out) > 1:
        changed = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                union = np.concatenate([np.minimum(out[i][:2], out[j][:2]), np.maximum(out[i][2:], out[j][2:])])
                if _fit(union, frame_hw, aspect, min_w).hw[1] <= min_w + 1 or \
                        _overlap(_fit(out[i], frame_hw, aspect, min_w), _fit(out[j], frame_hw, aspect, min_w)) \
                        > overlap_frac:
                    out[i] = union
                    del out[j]
                    changed = True
                    break
            if changed:
                break
    return out


def _overlap(a: Region, b: Region) -> float:
    """Intersection of two regions over the smaller one's area."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    small = min(a.hw[0] * a.hw[1], b.hw[0] * b.hw[1])
    return max(w, 0) * max(h, 0) / small if small > 0 else 0.0


def _cut_by_inner_edge(xyxy: np.ndarray, region: Region, frame_hw: Tuple[int, int], edge_px: float) -> np.ndarray:
    """bool ``(N,)``: the box touches a side of ``region`` that is not a side of the frame (the object may go on
    outside the crop)."""
    fh, fw = frame_hw
    x1, y1, x2, y2 = region.xyxy
    b = xyxy.reshape(-1, 4)
    return (((b[:, 0] <= x1 + edge_px) & (x1 > 0)) | ((b[:, 1] <= y1 + edge_px) & (y1 > 0))
            | ((b[:, 2] >= x2 - edge_px) & (x2 < fw)) | ((b[:, 3] >= y2 - edge_px) & (y2 < fh)))


def regions_to_frame(detections: Sequence[Detections], regions: Sequence[Region], frame_hw: Tuple[int, int],
                     iou_thres: float = 0.45, cover_thres: float = 0.6, edge_px: float = 2.0) -> Detections:
    """Map each region's detections to the frame and merge them into one set.

    Args:
        detections: one :class:`Detections` per region, boxes float32 xyxy in **crop pixels** (the region's
            ``crop(image)`` as the detector saw it; letterbox already undone).
        regions: the regions, same order.
        frame_hw: ``(h, w)`` of the frame.
        iou_thres: class-aware NMS IoU between boxes of different regions (duplicates where regions overlap).
        cover_thres: a box cut by a region's inner edge is dropped when more than this fraction of its area lies
            in a kept, uncut box of the same class (the other region saw the whole object).
        edge_px: distance to a region's inner edge under which a box counts as cut.

    Returns:
        :class:`Detections` (``xyxy``, ``score``, ``class_id``) in original-frame pixels, clipped to the frame,
        by descending score. Per-box ``data`` and ``track_id`` of the inputs are not carried.

    Raises:
        ValueError: ``len(detections) != len(regions)``.
    """
    if len(detections) != len(regions):
        raise ValueError(f"regions_to_frame: expected one Detections per region ({len(regions)}), "
                         f"got {len(detections)}")
    rows, cut = [], []
    for dets, region in zip(detections, regions):
        arr = dets.to_array()
        arr[:, [0, 2]] += region.x1
        arr[:, [1, 3]] += region.y1
        arr[:, :4] = clip_boxes(arr[:, :4], frame_hw)
        rows.append(arr)
        cut.append(_cut_by_inner_edge(arr[:, :4], region, frame_hw, edge_px))
    allrows = np.concatenate(rows) if rows else np.zeros((0, 6), np.float32)
    allcut = np.concatenate(cut) if cut else np.zeros(0, bool)
    if len(regions) > 1 and len(allrows):
        keep = nms(allrows[:, :4] + allrows[:, 5:6] * np.float32(MAX_WH), allrows[:, 4], iou_thres)
        allrows, allcut = allrows[keep], allcut[keep]
        allrows, allcut = _drop_covered_cut(allrows, allcut, cover_thres)
    order = np.argsort(-allrows[:, 4], kind="stable")
    return Detections.from_array(allrows[order])


def _drop_covered_cut(rows: np.ndarray, cut: np.ndarray, cover_thres: float) -> Tuple[np.ndarray, np.ndarray]:
    """Drop cut boxes mostly covered by an uncut box of the same class."""
    if not cut.any() or cut.all():
        return rows, cut
    a, b = rows[cut], rows[~cut]
    iou = box_iou(a[:, :4], b[:, :4]).astype(np.float64)
    area_a, area_b = box_area(a[:, :4])[:, None], box_area(b[:, :4])[None, :]
    inter = iou * (area_a + area_b) / (1.0 + iou)
    cover = np.where(area_a > 0, inter / np.maximum(area_a, 1e-9), 0.0)
    same = a[:, 5:6] == b[:, 5][None, :]
    drop = ((cover > cover_thres) & same).any(axis=1)
    keep = np.ones(len(rows), bool)
    keep[np.flatnonzero(cut)[drop]] = False
    return rows[keep], cut[keep]
