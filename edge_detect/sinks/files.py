"""Per-image file sinks used by ``edge-detect detect``: annotated images, YOLO label files, COCO results JSON.

They write one output per frame named after the image file the frame came from (:attr:`Frame.path
<edge_detect.types.Frame.path>`, set by image sources), so they suit image sources; a frame without a path
(video, camera) is named ``<source_id>_<frame index>``. Folders are created on the first write, so a run that
processes nothing writes nothing. Images and label files are written by the sink's own thread
(:class:`~edge_detect.sinks.threaded.ThreadedSink`, ``never_drop``).

Specs::

    open_sink("images://out/")                  # out/<image name>: the image with boxes and labels drawn
    open_sink("yolo-labels://out/labels")       # out/labels/<stem>.txt: "class cx cy w h conf" per detection
    open_sink("coco://preds.json")              # one COCO results list for the whole run, written at close
                                                # (edge_detect.evaluate.coco_results records)
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import cv2
import numpy as np

from edge_detect.boxes import normalize_boxes, xyxy_to_cxcywh
from edge_detect.errors import SinkError
from edge_detect.sinks.base import Sink, register_sink
from edge_detect.sinks.threaded import ThreadedSink
from edge_detect.types import Detections, Frame, Result

__all__ = ["AnnotatedImagesSink", "YoloLabelsSink", "CocoResultsSink", "yolo_label_rows"]

LOGGER = logging.getLogger(__name__)

ImageId = Union[int, str]


def _target_path(target: str, scheme: str) -> Path:
    return Path(re.sub(rf"^{re.escape(scheme)}://", "", target, flags=re.IGNORECASE))


def _name(frame: Frame, suffix: str = ".jpg") -> Path:
    """The file name a frame's outputs are named after (its image file, else ``<source>_<index><suffix>``)."""
    return Path(Path(frame.path).name) if frame.path else Path(f"{frame.source_id}_{frame.index:06d}{suffix}")


def yolo_label_rows(dets: Detections, shape: Any) -> str:
    """Text of a YOLO label file: ``class cx cy w h conf`` per detection, normalized by the image ``(h, w)``.

    Args:
        dets: detections in the image's pixels (xyxy).
        shape: the image shape, ``(h, w, ...)``.

    Returns:
        One line per detection, ``cx cy w h`` with 6 decimals in ``[0, 1]``, ``conf`` with 5; ``""`` for none.
    """
    h, w = shape[:2]
    cx, cy, bw, bh = normalize_boxes(xyxy_to_cxcywh(dets.xyxy.astype(np.float64)), (h, w)).reshape(-1, 4).T
    return "".join(f"{c} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f} {s:.5f}\n"
                   for c, x, y, ww, hh, s in zip(dets.class_id.tolist(), cx, cy, bw, bh, dets.score.tolist()))


class AnnotatedImagesSink(ThreadedSink):
    """Writes each frame with its boxes and labels drawn (no FPS overlay) to ``folder/<image name>``.

    Args:
        folder: output folder (created on the first write).
        line_width: box line width in pixels (default: from the image size).
    """

    name = "images"

    def __init__(self, folder: Union[str, Path], line_width: Optional[int] = None) -> None:
        super().__init__()
        self.folder, self.line_width = Path(folder), line_width
        self.written = 0

    def prepare(self, result: Result) -> Optional[Result]:
        return None if result.events_only else result

    def handle(self, result: Result) -> bool:
        from edge_detect.annotate import draw_detections

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / _name(result.frame)
        image = draw_detections(result.frame.image, result.detections, result.names, line_width=self.line_width,
                                copy=True)
        if not cv2.imwrite(str(path), image):
            raise SinkError(f"could not write image {path} (unsupported extension or unwritable folder)")
        self.written += 1
        return True


class YoloLabelsSink(ThreadedSink):
    """Writes ``folder/<image stem>.txt`` per frame with :func:`yolo_label_rows` (empty file: no detection)."""

    name = "yolo-labels"

    def __init__(self, folder: Union[str, Path]) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.written = 0

    def prepare(self, result: Result) -> Optional[Tuple[Path, str]]:
        """``(file, text)``: the rows are formatted here, written by the sink's thread."""
        if result.events_only:
            return None
        return (self.folder / f"{_name(result.frame).stem}.txt",
                yolo_label_rows(result.detections, result.frame.image.shape))

    def handle(self, item: Tuple[Path, str]) -> bool:
        path, text = item
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise SinkError(f"could not write labels {path} ({exc})") from exc
        self.written += 1
        return True


class CocoResultsSink(Sink):
    """Collects every frame's detections as COCO results and writes the list to ``path`` at close.

    Args:
        path: the JSON file (parent folders created).
        image_ids: image id per image file path (``str(path)`` keys), e.g. from
            :func:`edge_detect.evaluate.image_ids`; default: the file stem (an int when it is all digits).
    """

    name = "coco"

    def __init__(self, path: Union[str, Path], image_ids: Optional[Mapping[str, ImageId]] = None) -> None:
        self.path = Path(path)
        self.image_ids = dict(image_ids or {})
        self.records: List[Dict[str, Any]] = []
        self._frames = 0

    def _image_id(self, frame: Frame) -> ImageId:
        if frame.path is not None and str(frame.path) in self.image_ids:
            return self.image_ids[str(frame.path)]
        stem = _name(frame).stem
        return int(stem) if stem.isdigit() else stem

    def write(self, result: Result) -> None:
        from edge_detect.evaluate import coco_results

        if not result.events_only:
            self._frames += 1
            self.records.extend(coco_results(self._image_id(result.frame), result.detections))

    def close(self) -> None:
        if not self._frames:  # the file sinks' rule: no frame written, no file created or truncated
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.records, indent=1))
        except OSError as exc:
            raise SinkError(f"could not write COCO results {self.path} ({exc})") from exc


@register_sink("images")
def _open_images(target: str, line_width: Optional[int] = None) -> AnnotatedImagesSink:
    return AnnotatedImagesSink(_target_path(target, "images"), line_width=line_width)


@register_sink("yolo-labels")
def _open_labels(target: str) -> YoloLabelsSink:
    return YoloLabelsSink(_target_path(target, "yolo-labels"))


@register_sink("coco")
def _open_coco(target: str, image_ids: Optional[Mapping[str, ImageId]] = None) -> CocoResultsSink:
    return CocoResultsSink(_target_path(target, "coco"), image_ids=image_ids)
