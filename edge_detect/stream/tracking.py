"""Former home of the IoU tracker, kept importable: see :mod:`edge_detect.stream.processors.iou`."""
from edge_detect.boxes import box_iou
from edge_detect.stream.processors.iou import IoUTracker

__all__ = ["IoUTracker", "box_iou"]
