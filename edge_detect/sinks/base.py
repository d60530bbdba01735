"""The sink protocol and the registry that opens a sink from a spec string.

A sink receives every processed frame of a run as a :class:`~edge_detect.types.Result`: the protocol
(:class:`~edge_detect.types.Sink`: ``start(context)``, ``write(result)``, ``close()``, ``counters()``) and the
:class:`~edge_detect.types.RunContext` it is started with live with the shared types, so ``sinks/`` and
``stream/`` never import each other. A sink's ``write`` never does file or network I/O on the caller's thread:
sinks that write files or talk to the network derive from :class:`~edge_detect.sinks.threaded.ThreadedSink`
(bounded queue, named drop policy, counters).

**Files: created or truncated on their first write, never before.** A file sink checks its path when it is
opened (writable, nothing created) and creates -- or truncates -- each file only when the first frame for it is
written (video, JSONL, images, YOLO labels; the COCO JSON at close only when a frame was written; snapshot
retention from the first snapshot on). Everything that can fail at start (the model, the sources, a port to bind,
a source with no decodable frame) has failed by then, so such a run leaves existing files as they were. One file
per source when a file sink serves several (:func:`per_source_path`); ``run`` checks those names before the run.

Sinks register a factory ``(target: str, **options) -> Sink`` with :func:`register_sink` under one or more
keys: a kind (``"display"``), a URI scheme (``"mjpeg"`` for ``mjpeg://...``) or a file suffix (``".jsonl"``).
:func:`open_sink` resolves a spec in that order: exact kind, ``scheme://``, suffix. :data:`SINK_MODULES` says
which module registers each built-in key, so importing this module imports no sink and no optional
dependency; adding a sink is one module plus one line there (or an import of the module before
:func:`open_sink` is called).
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from edge_detect.config import check_options
from edge_detect.errors import SinkError
from edge_detect.types import Result, RunContext, Sink, StreamInfo

__all__ = ["Sink", "StreamInfo", "RunContext", "Result", "register_sink", "open_sink", "resolve_sink", "sink_kinds",
           "SINK_MODULES", "VIDEO_SUFFIXES", "JSONL_SUFFIXES", "per_source_path"]

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
JSONL_SUFFIXES = (".jsonl", ".ndjson")

# key (kind, URI scheme without "://", or file suffix with its dot) -> module that registers it on import.
SINK_MODULES: Dict[str, str] = {
    "display": "edge_detect.sinks.display",
    "mjpeg": "edge_detect.sinks.mjpeg",
    "images": "edge_detect.sinks.files",
    "yolo-labels": "edge_detect.sinks.files",
    "coco": "edge_detect.sinks.files",
    **{s: "edge_detect.sinks.video" for s in VIDEO_SUFFIXES},
    **{s: "edge_detect.sinks.jsonl" for s in JSONL_SUFFIXES},
    "events": "edge_detect.sinks.events",
    "mqtt": "edge_detect.sinks.mqtt",
    "mqtts": "edge_detect.sinks.mqtt",
    "webhook+http": "edge_detect.sinks.webhook",
    "webhook+https": "edge_detect.sinks.webhook",
    "metrics": "edge_detect.sinks.metrics",
    "record": "edge_detect.sinks.recorder",
}
# other spellings accepted for a key
_ALIASES = {"show": "display", "window": "display"}

SinkFactory = Callable[..., "Sink"]
_REGISTRY: Dict[str, SinkFactory] = {}


def per_source_path(path: Path, source_id: str) -> Path:
    """The file of one source when a file sink serves several: ``out.mp4`` -> ``out_<source_id>.mp4``."""
    return path.with_name(f"{path.stem}_{source_id}{path.suffix}")


def register_sink(*keys: str) -> Callable[[SinkFactory], SinkFactory]:
    """Decorator: make ``factory(target, **options)`` open specs of these kinds / schemes / suffixes.

    Args:
        *keys: ``"display"``-style kinds, URI schemes (``"mqtt"`` for ``mqtt://...``) and/or file suffixes
            with their dot (``".jsonl"``), case-insensitive.
    """
    if not keys:
        raise ValueError("register_sink: expected at least one kind, scheme or suffix, got none")

    def deco(factory: SinkFactory) -> SinkFactory:
        for key in keys:
            _REGISTRY[key.lower()] = factory
        return factory

    return deco


def _lookup(key: str) -> Optional[SinkFactory]:
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY and key in SINK_MODULES:
        importlib.import_module(SINK_MODULES[key])
    return _REGISTRY.get(key)


def sink_kinds() -> List[str]:
    """Every key :func:`open_sink` knows (built-in and registered): kinds, schemes and suffixes."""
    return sorted(set(SINK_MODULES) | set(_REGISTRY))


_LEGACY_PREVIEW = re.compile(r"preview:(?://)?((?:[^:/]+:)?\d+/?)")


def open_sink(spec: Union[str, os.PathLike, Sink], **options: Any) -> Sink:
    """Open a sink from a spec; a :class:`Sink` instance is returned as is.

    Args:
        spec: a kind (``"display"``), a URI (``"mjpeg://HOST:PORT"``; ``"preview:PORT"`` also works) or a file
            path whose suffix names the sink (``.mp4``/``.mkv``/``.mov``/``.m4v``/``.avi`` video,
            ``.jsonl``/``.ndjson`` JSON Lines).
        **options: passed to the sink's factory (e.g. ``fps=`` for video, ``quality=`` for the preview).

    Raises:
        SinkError: no sink for this spec, or the sink cannot be opened.
        ConfigError: an option the sink does not take.
    """
    if isinstance(spec, Sink):
        return spec
    target, key = resolve_sink(spec)
    factory = _lookup(key)
    assert factory is not None  # resolve_sink checked it
    check_options(f"sink {_masked(target)!r}", factory, options)
    return factory(target, **options)


def _masked(spec: str) -> str:
    """``spec`` with URL credentials masked (``mqtt://user:pw@host`` -> ``mqtt://***@host``) for messages."""
    from edge_detect.urls import mask_credentials

    return mask_credentials(spec)


def resolve_sink(spec: Union[str, os.PathLike]) -> Tuple[str, str]:
    """``(target, key)``: the spec as the factory receives it and the registry key that opens it.

    Imports the module that registers the key (nothing else is opened).

    Raises:
        SinkError: no sink for this spec.
    """
    s = str(spec)
    legacy = _LEGACY_PREVIEW.fullmatch(s)
    if legacy:
        s = f"mjpeg://{legacy.group(1)}"
    candidates = [s.lower()]
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", s)
    if m:
        candidates.append(m.group(1).lower())
    suffix = Path(s).suffix.lower()
    if suffix and not m:
        candidates.append(suffix)
    for key in candidates:
        if _lookup(key) is not None:
            return s, _ALIASES.get(key, key)
    raise SinkError(f"sink {_masked(s)!r}: expected 'display', a URI with a known scheme or a path with a known suffix "
                    f"(known: {', '.join(sink_kinds())})")
