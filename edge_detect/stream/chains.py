"""Per-source processor chains: one chain of :meth:`~edge_detect.stream.processors.Processor.clone` copies per
source, so state never mixes between cameras; regions declared to the run's counts; end-of-source ``finish``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence

from edge_detect.events import Counts, merge_counts
from edge_detect.types import Detections, Event, Frame, as_event

__all__ = ["Chains"]

LOGGER = logging.getLogger(__name__)


class Chains:
    """The processor chains of a run, keyed by source id.

    Args:
        processors: prototypes, in order (tracker first); each source runs clones of them.
        counts: the run's :class:`~edge_detect.events.Counts`, told each chain's lines / zones (optional
            ``regions(source_id)`` of a processor).
    """

    def __init__(self, processors: Sequence[Any], counts: Counts) -> None:
        self.processors = list(processors)
        self._counts = counts
        self._chains: Dict[str, List[Any]] = {}

    def __contains__(self, source_id: str) -> bool:
        return source_id in self._chains

    @property
    def source_ids(self) -> List[str]:
        return list(self._chains)

    def build(self, source_id: str) -> None:
        """A fresh chain of clones for ``source_id`` (replacing any)."""
        self._set(source_id, [p.clone() for p in self.processors])

    def update(self, source_id: str, build: Callable[[List[Any]], List[Any]]) -> None:
        """Replace the chain of ``source_id`` by ``build(current_chain)`` (counts carry on)."""
        self._set(source_id, list(build(list(self._chains.get(source_id, [])))))

    def _set(self, source_id: str, chain: List[Any]) -> None:
        for proc in chain:
            regions = proc.regions(source_id) if callable(getattr(proc, "regions", None)) else {}
            self._counts.declare(source_id, **regions)
        self._chains[source_id] = chain

    def run(self, detections: Detections, frame: Frame) -> Detections:
        """The frame's detections through its source's chain; events made typed (:func:`~edge_detect.types.
        as_event`) and given their ids (:meth:`~edge_detect.types.Event.with_id`: assigned once, here)."""
        for proc in self._chains.get(frame.source_id, ()):
            detections = proc.update(detections, frame)
        detections.metadata["events"] = [as_event(e).with_id() for e in detections.metadata.get("events", ())]
        return detections

    def finish(self, source_id: str, frame: Frame) -> List[Event]:
        """The events of the chain's optional ``finish(last_frame)`` calls (typed, with their ids)."""
        events: List[Event] = []
        for proc in self._chains.get(source_id, ()):
            finish = getattr(proc, "finish", None)
            if callable(finish):
                events += [as_event(e).with_id() for e in finish(frame) or ()]
        return events

    def summaries(self) -> Dict[str, Dict[str, Any]]:
        """Per source: its processors' ``summary()`` merged with its counts (:meth:`Counts.summary`)."""
        return {sid: merge_counts([p.summary() for p in chain if hasattr(p, "summary")]
                                  + [self._counts.summary(sid)])
                for sid, chain in self._chains.items()}
