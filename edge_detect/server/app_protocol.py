"""What the HTTP server needs from the running app: a :class:`typing.Protocol` of :class:`edge_detect.app.App`.

The server is a thin door over the ``App`` service (``edge_detect.app``): it never reaches into the pipeline,
its sources or sinks. Everything it shows or changes goes through the calls below, which have exactly the
signatures of ``App``'s methods of the same names (``tests/server/test_server_real_app.py`` checks ``App``, this
protocol and the small fake of ``tests/server/fake_app.py`` against each other).

Data shapes (plain JSON-ready Python, no numpy scalars):

* :meth:`AppLike.status` -> ``{"running", "uptime_s", "model", "device", "processed", "fps", "stages_ms": {STAGE:
  ms}, "stopped_by" (once ended), "sources": [{"id", "uri" (credentials masked), "state" ("online" | "offline" |
  "reconnecting" | "paused" | "ended"), "fps_in", "fps_out", "read", "processed", "dropped", "reconnects",
  "last_frame_age_s", "enabled"}, ...]}``, sources in the order they were added.
* :meth:`AppLike.counts` -> the one ``Counts`` object's snapshot: ``{"sources": {ID: {"lines": {NAME: {"in",
  "out", "by_class"}}, "zones": {NAME: {"entered", "exited", "occupancy", "max_occupancy", "by_class"}},
  "events": {TYPE: n}}}, "total": {same keys, summed over sources}}``.
* :meth:`AppLike.config_dict` -> the current nested config (``AppConfig.to_dict()``: sections ``model``,
  ``sources``, ``capture``, ``analytics``, ``outputs``, ``events``, ``server``, only what differs from the
  defaults) as YAML-ready data, runtime changes included; ``sources`` is a list of ``{"uri", "id" (the resolved
  id), ...}`` plus ``options`` / ``lines`` / ``zones`` / ``conf`` / ``classes`` / ``enabled`` where a source has its
  own. URIs are NOT masked here (this is what ``--save-config`` writes back); the server masks everything it
  returns.
* :meth:`AppLike.latest_frame` -> BGR ``uint8 (H, W, 3)`` in source-frame pixels (annotated: boxes, track ids,
  lines and zones drawn), or ``None`` before the source's first frame.

Errors the server maps to HTTP statuses (:mod:`edge_detect.errors`, :mod:`edge_detect.server.errors`):
:class:`~edge_detect.errors.UnknownSourceError` -> 404, :class:`~edge_detect.errors.DuplicateSourceError` -> 409,
any other :class:`~edge_detect.errors.ConfigError` (bad lines, zones, thresholds, class names, options) and
:class:`~edge_detect.errors.SourceError` (a URI that cannot be opened) -> 422.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np

__all__ = ["AppLike", "EventLike", "FrameLike", "ResultLike", "SubscriptionLike", "APP_METHODS"]

#: the ``App`` methods the server and ``serve_app`` call (and nothing else)
APP_METHODS = ("start", "stop", "wait", "status", "counts", "config_dict", "subscribe", "latest_frame", "add_source",
               "remove_source", "update_source")


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
    """What :meth:`AppLike.subscribe` returns (``edge_detect.events.Subscription``): closing it unsubscribes (and
    ends its delivery thread)."""

    def close(self, timeout: float = 2.0) -> None: ...


@runtime_checkable
class AppLike(Protocol):
    """The ``App`` service as the server uses it (see module doc for the data shapes; :data:`APP_METHODS`).

    Runtime operations (``add_source``, ``remove_source``, ``update_source``) take effect between two batches and
    block the caller until they have; counts carry on across them.
    """

    def start(self) -> Any:
        """Open everything (errors raise here) and run the pipeline in its own thread; returns the app at once."""

    def stop(self, reason: str = "stop") -> Any:
        """Ask the run to stop (frames in flight finished, outputs finalized); returns the app at once."""

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait for the run to end; its ``RunSummary`` (``None`` on timeout); re-raises what ended it with an
        error."""

    def status(self) -> Dict[str, Any]: ...

    def counts(self) -> Dict[str, Any]: ...

    def config_dict(self) -> Dict[str, Any]: ...

    def subscribe(self, callback: Optional[Callable[[ResultLike], None]] = None, *, name: str = "subscriber",
                  inline: bool = False, queue_size: int = 256) -> SubscriptionLike:
        """Call ``callback(result)`` for every published result, on a thread of its own (never the pipeline's);
        a slow callback drops its own oldest results (``queue_size``), never the pipeline's frames."""

    def latest_frame(self, source_id: str, annotated: bool = True) -> Optional[np.ndarray]:
        """Raises :class:`~edge_detect.errors.UnknownSourceError` for an unknown id."""

    def add_source(self, source: Union[Any, str]) -> str:
        """Add ``source`` (an ``edge_detect.app_config.SourceConfig`` or a URI); returns the new source's id (its
        own, or one made from the URI and made unique).

        Raises:
            DuplicateSourceError: the id is taken.
            ConfigError: bad lines / zones / options.
            SourceError: the URI cannot be opened.
        """

    def remove_source(self, source_id: str) -> None:
        """Raises :class:`~edge_detect.errors.UnknownSourceError`."""

    def update_source(self, source_id: str, *, lines: Optional[Dict[str, Any]] = None,
                      zones: Optional[Dict[str, Any]] = None, conf: Optional[float] = None,
                      classes: Optional[List[Union[int, str]]] = None, enabled: Optional[bool] = None,
                      detect: Optional[Dict[str, Any]] = None, motion: Optional[Dict[str, Any]] = None) -> Any:
        """Change what is given (``None`` = unchanged); ``lines`` / ``zones`` / ``detect`` / ``motion`` replace the
        source's own set. Returns
        the source's new ``SourceConfig``.

        Raises:
            UnknownSourceError: unknown id.
            ConfigError: bad geometry, threshold or class.
        """
