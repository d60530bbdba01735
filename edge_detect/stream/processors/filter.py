"""Per-source detection filters: a confidence threshold and a class list on top of the model's own.

The model's ``conf`` / ``classes`` apply to every source (one backend call serves several); this processor,
first in a chain, keeps of each frame's detections those with ``score >= conf`` and a class in ``classes`` for the
source the frame comes from (sources without an entry pass unchanged). It cannot lower the model's threshold.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_detect.config import check_thresholds
from edge_detect.stream.processors._common import class_allowed, resolve_class_filter
from edge_detect.stream.processors.base import register_processor
from edge_detect.types import Detections, Frame

__all__ = ["SourceFilter"]


@register_processor("filter")
class SourceFilter:
    """Keep detections above a per-source ``conf`` and of per-source ``classes`` (see module doc).

    Args:
        sources: ``{source_id: {"conf": float | None, "classes": [names or ids] | None}}``.
        names: the model's class names (for class names in ``classes``).

    Raises:
        ConfigError: a threshold outside ``[0, 1]`` or an unknown class name.
    """

    name = "filter"

    def __init__(self, sources: Mapping[str, Mapping[str, Any]] = (), names: Sequence[str] = ()) -> None:
        self._options = dict(sources=dict(sources or {}), names=tuple(names))
        self.names = tuple(names)
        self._rules: Dict[str, Tuple[Optional[float], Any]] = {}
        for sid, rule in dict(sources or {}).items():
            conf, classes = rule.get("conf"), rule.get("classes")
            check_thresholds(conf=conf, names=(f"source {sid} conf", "iou", "max_det"))
            self._rules[str(sid)] = (conf, resolve_class_filter(classes, self.names, f"source {sid}"))

    def update(self, detections: Detections, frame: Frame) -> Detections:
        rule = self._rules.get(frame.source_id)
        if rule is None or not len(detections):
            return detections
        conf, allowed = rule
        keep = np.ones(len(detections), bool)
        if conf is not None:
            keep &= detections.score >= conf
        if allowed is not None:
            keep &= np.array([class_allowed(int(c), allowed, self.names) for c in detections.class_id.tolist()])
        return detections if keep.all() else detections[keep]

    def clone(self) -> "SourceFilter":
        return SourceFilter(**self._options)

    def summary(self) -> Dict[str, Any]:
        return {}

