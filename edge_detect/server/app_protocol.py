"""What the HTTP server needs from the running app: a :class:`typing.Protocol` of :class:`edge_detect.app.App`.

The server is a thin door over the ``App`` service (``edge_detect.app``): it never reaches into the pipeline,
its sources or sinks. Everything it shows or changes goes through these calls, so anything that implements them
(the real ``App``, or the small fake of ``tests/server/fake_app.py``) can be served.

Data shapes (plain JSON-ready Python, no numpy scalars):

* :meth:`AppLike.status` -> ``{"sources": [{"id", "uri" (credentials masked), "state" ("online" | "offline" |
  "reconnecting" | "ended"), "fps_in", "fps_out", "read", "processed", "dropped", "reconnects",
  "last_frame_age_s"}, ...], "stages_ms": {STAGE: ms}, "model": str, "device": str, "uptime_s": float}``.
* :meth:`AppLike.counts` -> the one ``Counts`` object's snapshot: ``{"sources": {ID: {"lines": {NAME: {"in",
  "out", "by_class"}}, "zones": {NAME: {"entered", "exited", "occupancy", "max_occupancy", "by_class"}},
  "events": {TYPE: n}}}, "total": {same keys, summed over sources}}``.
* :meth:`AppLike.config_dict` -> the current nested config (sections ``model``, ``sources``, ``analytics``,
  ``outputs``, ``events``, ``server``) as YAML-ready data, runtime changes included; ``sources`` is a list of
  ``{"uri", "id" (the resolved id), "lines", "zones", ...}`` plus ``conf`` / ``classes`` / ``enabled`` where a
  source has its own. URIs are NOT masked here (this is what ``--save-config`` writes back); the server masks
  everything it returns.
* :meth:`AppLike.latest_frame` -> BGR ``uint8 (H, W, 3)`` in source-frame pixels (annotated: boxes, track ids,
  lines and zones drawn), or ``None`` before the source's first frame.

Errors the server maps to HTTP statuses (:mod:`edge_detect.errors`): :class:`~edge_detect.errors.
UnknownSourceError` -> 404, :class:`~edge_detect.errors.DuplicateSourceError` -> 409, any other
:class:`~edge_detect.errors.ConfigError` (bad lines, zones, thresholds, URI) -> 422.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["AppLike", "EventLike", "FrameLike", "ResultLike", "SubscriptionLike"]


class EventLike(Protocol):
    """A typed event (``edge_detect.types.Event``): ``type`` and the JSON of ``schemas/events.schema.json``."""

    @property
    def type(self) -> str: ...

    def to_dict(self) -> Dict[str, Any]: ...


class FrameLike(Protocol):
    """The parts of ``edge_detect.types.Frame`` the server reads."""

    image: np.ndarray  # BGR uint8 (H, W, 3), source-frame pixels
    source_id: str
    index: int
    wall_time: float  # Unix seconds at capture


class ResultLike(Protocol):
    """One processed frame as published on the event bus (``edge_detect.types.Result``)."""

    frame: FrameLike

    @property
    def events(self) -> Sequence[EventLike]: ...

    @property
    def annotated(self) -> np.ndarray:
        """The frame with boxes and track ids drawn (BGR ``uint8 (H, W, 3)``); used for event thumbnails."""


class SubscriptionLike(Protocol):
    """What :meth:`AppLike.subscribe` returns: closing it unsubscribes (and ends its delivery thread)."""

    def close(self, timeout: float = 2.0) -> None: ...


@runtime_checkable
class AppLike(Protocol):
    """The ``App`` service as the server uses it (see module doc for the data shapes).

    Runtime operations (``add_source``, ``remove_source``, ``update_source``, ``add_sink``, ``remove_sink``) take
    effect between two batches and may block the caller until they have; counts carry on across them.
    """

    def start(self) -> None:
        """Start the pipeline in its own thread; returns at once."""

    def run(self) -> Any:
        """Start and block until the sources end or :meth:`stop` is called."""

    def stop(self, reason: str = "stopped") -> None:
        """Stop the pipeline and close sources and sinks."""

    def status(self) -> Dict[str, Any]: ...

    def counts(self) -> Dict[str, Any]: ...

    def config_dict(self) -> Dict[str, Any]: ...

    def subscribe(self, callback: Callable[[ResultLike], None]) -> SubscriptionLike:
        """Call ``callback(result)`` for every published result, on a thread of the bus (never the pipeline's);
        a slow callback drops its own oldest results, never the pipeline's frames."""

    def latest_frame(self, source_id: str, annotated: bool = True) -> Optional[np.ndarray]:
        """Raises :class:`~edge_detect.errors.UnknownSourceError` for an unknown id."""

    def add_source(self, config: Any) -> Any:
        """Add ``config`` (an ``edge_detect.app_config.SourceConfig``); returns the new source's resolved id.

        Raises:
            DuplicateSourceError: the id is taken.
            ConfigError: bad lines / zones / options.
            SourceError: the URI cannot be opened.
        """

    def remove_source(self, source_id: str) -> None:
        """Raises :class:`~edge_detect.errors.UnknownSourceError`."""

    def update_source(self, source_id: str, *, lines: Optional[Any] = None, zones: Optional[Any] = None,
                      conf: Optional[float] = None, classes: Optional[List[Any]] = None,
                      enabled: Optional[bool] = None) -> None:
        """Change what is given (``None`` = unchanged); ``lines`` / ``zones`` replace the source's own set.

        Raises:
            UnknownSourceError: unknown id.
            ConfigError: bad geometry, threshold or class.
        """

    def add_sink(self, spec: Any) -> Any: ...

    def remove_sink(self, name: Any) -> None: ...
