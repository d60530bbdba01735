"""The processor protocol and its lazy registry.

A processor turns one frame's :class:`~edge_detect.types.Detections` into enriched ones, between postprocess
and the sinks, in the pipeline's postprocess thread (stage ``"processors"``): a tracker sets ``track_id``, a line
or zone counter attaches per-box ``data[...]`` and returns its typed events (:class:`~edge_detect.types.Event`:
``LineCross``, ``ZoneEnter``...) by appending them to ``metadata["events"]`` (a plain dict with a ``"type"`` is
turned into one by the pipeline, :func:`~edge_detect.types.as_event`). The pipeline publishes them on the run's
event bus, where :class:`~edge_detect.events.Counts` counts them. Processors keep state across frames, so the
pipeline runs one chain of :meth:`Processor.clone` copies per source, in order (tracker first, then lines /
zones; both derive from :class:`~edge_detect.stream.processors.region.RegionCounter`).

Processors register a factory ``(**options) -> Processor`` with :func:`register_processor`;
:func:`make_processor` builds one by name. :data:`PROCESSOR_MODULES` says which module registers each built-in
name, so importing this module imports no processor and no optional dependency (scipy, lap...).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Protocol, runtime_checkable

from edge_detect.config import check_options
from edge_detect.errors import ConfigError
from edge_detect.types import Detections, Frame

__all__ = ["Processor", "register_processor", "make_processor", "processor_names", "processor_takes",
           "tracker_names", "PROCESSOR_MODULES"]

# name -> module that registers it on import
PROCESSOR_MODULES: Dict[str, str] = {
    "iou": "edge_detect.stream.processors.iou",
    "bytetrack": "edge_detect.stream.processors.bytetrack",
    "lines": "edge_detect.stream.processors.lines",
    "zones": "edge_detect.stream.processors.zones",
    "filter": "edge_detect.stream.processors.filter",
}

ProcessorFactory = Callable[..., "Processor"]
_REGISTRY: Dict[str, ProcessorFactory] = {}
# the processors that are trackers (set track_id): the built-in ones, and those registered with tracker=True
_TRACKERS = {"bytetrack", "iou"}


@runtime_checkable
class Processor(Protocol):
    """What the pipeline calls on each processor of a source's chain.

    Optional:

    * ``finish(frame) -> list[Event]``, called once at the end of each source with its last frame; the events it
      returns are published and written to the sinks in an end-of-source :class:`~edge_detect.types.Result`
      (``final=True``);
    * ``regions(source_id) -> {"lines": [names]}`` / ``{"zones": [...]}``: the regions it counts on that source,
      declared to the run's :class:`~edge_detect.events.Counts` when the chain is built (listed with zero counts
      until they count).
    """

    name: str

    def update(self, detections: Detections, frame: Frame) -> Detections:
        """Process one frame's detections (xyxy, original-frame pixels) and return them, possibly with
        ``track_id`` set, ``data[...]`` attached and typed events appended to ``metadata["events"]``."""
        ...

    def clone(self) -> "Processor":
        """Same settings, fresh state (one per source)."""
        ...

    def summary(self) -> Dict[str, Any]:
        """Figures of the processor merged into the run summary (e.g. ``{"tracker": {...}}``; ``{}`` when nothing;
        counts of events are not repeated here: :class:`~edge_detect.events.Counts` keeps them)."""
        ...


def register_processor(name: str, tracker: bool = False) -> Callable[[ProcessorFactory], ProcessorFactory]:
    """Decorator: make ``factory(**options)`` buildable as ``make_processor(name, **options)``; ``tracker=True``:
    it assigns ``track_id`` and may be the app's tracker (:func:`tracker_names`)."""

    def deco(factory: ProcessorFactory) -> ProcessorFactory:
        _REGISTRY[name] = factory
        if tracker:
            _TRACKERS.add(name)
        return factory

    return deco


def processor_names() -> List[str]:
    """Every processor name known (built-in and registered), whether or not its module is installed."""
    return sorted(set(PROCESSOR_MODULES) | set(_REGISTRY))


def tracker_names() -> List[str]:
    """The processors that are trackers (built-in and registered with ``tracker=True``), e.g. for ``--tracker``."""
    return sorted(_TRACKERS)


def _factory(name: str) -> Optional[ProcessorFactory]:
    if name not in _REGISTRY and name in PROCESSOR_MODULES:
        try:
            importlib.import_module(PROCESSOR_MODULES[name])
        except ModuleNotFoundError as exc:
            if exc.name != PROCESSOR_MODULES[name]:
                raise
            return None
    return _REGISTRY.get(name)


def processor_takes(name: str, option: str) -> bool:
    """Whether processor ``name`` (known or not) accepts the keyword option ``option`` (e.g. ``"names"``)."""
    import inspect

    factory = _factory(name)
    if factory is None:
        return False
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def make_processor(name: str, **options: Any) -> Processor:
    """Build the processor registered as ``name`` with ``options``.

    Raises:
        ConfigError: unknown name (with the known ones), or an option the processor does not take.
    """
    factory = _factory(name)
    if factory is None:
        known = [n for n in processor_names() if n in _REGISTRY or _factory(n) is not None]
        raise ConfigError(f"processor: unknown name {name!r}; expected one of {known}")
    check_options(f"processor '{name}'", factory, options)
    return factory(**options)
