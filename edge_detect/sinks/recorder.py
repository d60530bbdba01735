"""The recorder sink: clips with pre- and post-roll around events (:mod:`edge_detect.recording`), off the
pipeline's thread.

``write`` only queues the processed frame (a reference, no copy); the recorder's own thread keeps the packet rings,
plans and writes the clips, makes the thumbnails, publishes ``clip_saved`` and runs retention. A recorder that
falls behind drops the oldest queued frames (counted in ``dropped``): detection never waits for it. A recorder that
cannot write (disk full, folder not writable) stops with one log line; its error goes to the run summary's
``sink_errors`` and the run and the other outputs go on.

Spec: ``record://DIR`` (or the kind ``record`` with ``dir=``); options are the fields of
:class:`~edge_detect.recording.RecordConfig` (``pre_s``, ``post_s``, ``max_clip_s``, ``on``, ``annotate``,
``retain: {days, max_gb}``) plus ``uris`` (source id -> the URI to record from; the run's sources by default:
files are remuxed from themselves; network streams need their unmasked URI here, which the App passes).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from edge_detect.errors import SinkError
from edge_detect.recording import RecordConfig, RecordedStream, Recorder, RetainConfig
from edge_detect.sinks.base import register_sink
from edge_detect.sinks.threaded import ThreadedSink
from edge_detect.types import Result, RunContext

__all__ = ["RecorderSink"]

LOGGER = logging.getLogger(__name__)

_FILE_KINDS = ("file",)
_LIVE_KINDS = ("stream", "camera", "gstreamer")


class RecorderSink(ThreadedSink):
    """Event clips per source (see module doc).

    Args:
        config: what and how to record.
        uris: source id -> URI to record from (default: each source's own URI as the run knows it).

    Attributes:
        recorder: the :class:`~edge_detect.recording.Recorder` (after :meth:`start`).
        error: why recording stopped, or ``None``.
    """

    name = "recorder"
    default_policy = "drop_oldest"
    default_queue_size = 512

    def __init__(self, config: RecordConfig, uris: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        self.config = config
        self.uris = dict(uris or {})
        self.recorder: Optional[Recorder] = None
        self._reported = False

    def open(self, context: RunContext) -> None:
        streams = [RecordedStream(s.source_id, self.uris.get(s.source_id, s.uri), s.kind in _FILE_KINDS,
                                  bool(s.live) or s.kind in _LIVE_KINDS) for s in context]
        emit = getattr(context, "emit", None)
        self.recorder = Recorder(self.config, streams, publish=emit if callable(emit) else (lambda event: None))
        try:
            self.recorder.start()
        except OSError as exc:
            raise SinkError(f"recorder: cannot create {self.config.dir} ({exc.strerror or exc})") from exc

    def handle(self, item: Result) -> Optional[bool]:
        assert self.recorder is not None
        self.recorder.handle(item)
        return self.recorder.error is None

    def finalize(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    @property
    def error(self) -> Optional[str]:
        return None if self.recorder is None else self.recorder.error

    def counters(self) -> Dict[str, Dict[str, int]]:
        stats = dict(self.queue_stats())
        if self.recorder is not None:
            stats.update(clips=self.recorder.clips_saved, deleted=self.recorder.deleted)
        return {self.name: stats}


def record_config(dir: Union[str, os.PathLike], **options: Any) -> RecordConfig:
    """A :class:`RecordConfig` from plain options (``retain`` as a mapping; ``on`` as a list or one string)."""
    retain = options.pop("retain", None)
    on = options.pop("on", None)
    if isinstance(on, str):
        on = (on,)
    kwargs: Dict[str, Any] = dict(options)
    if on is not None:
        kwargs["on"] = tuple(str(x) for x in on)
    if retain is not None:
        kwargs["retain"] = retain if isinstance(retain, RetainConfig) else RetainConfig(**dict(retain))
    try:
        return RecordConfig(dir=str(dir), **kwargs)
    except (TypeError, ValueError) as exc:
        raise SinkError(f"record: {exc}") from exc


@register_sink("record")
def _open_recorder(target: str, dir: Optional[str] = None, uris: Optional[Mapping[str, str]] = None,
                   pre_s: float = 5.0, post_s: float = 5.0, max_clip_s: float = 120.0,
                   on: Union[str, Sequence[str], None] = None, annotate: bool = False,
                   retain: Optional[Mapping[str, Any]] = None) -> RecorderSink:
    """``record://DIR`` or ``record`` with ``dir=``."""
    folder = dir or (target.split("://", 1)[1] if "://" in target else None)
    if not folder:
        raise SinkError("record: expected record://DIR or dir=DIR, got no folder")
    opts: Dict[str, Any] = dict(pre_s=pre_s, post_s=post_s, max_clip_s=max_clip_s, annotate=annotate)
    if on is not None:
        opts["on"] = on
    if retain is not None:
        opts["retain"] = retain
    return RecorderSink(record_config(folder, **opts), uris)
