"""Per-source processors between postprocess and the sinks: trackers, line and zone counters.

``make_processor("iou", iou_threshold=0.3)``; the protocol and registry are in :mod:`.base`, one module per
processor (:mod:`.iou`, ...).
"""
from edge_detect.stream.processors.base import (
    PROCESSOR_MODULES,
    Processor,
    make_processor,
    processor_names,
    processor_takes,
    register_processor,
    tracker_names,
)

__all__ = ["Processor", "register_processor", "make_processor", "processor_names", "processor_takes",
           "tracker_names", "PROCESSOR_MODULES"]
