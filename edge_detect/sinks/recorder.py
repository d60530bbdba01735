"""The recorder sink: clips with pre- and post-roll around events (:mod:`edge_detect.recording`), off the
pipeline's thread.

``write`` only queues the processed frame (a reference, no copy); the recorder's own thread keeps the packet rings,
plans and writes the clips, makes the thumbnails, emits ``clip_saved`` into the run and runs retention. A recorder
that falls behind drops the oldest queued frames (counted in ``dropped``): detection never waits for it. A
recorder that cannot write (disk full, folder not writable) stops with one log line; its error
(:attr:`~edge_detect.types.Sink.error`) goes to the run summary's ``sink_errors`` / ``degraded`` and the run and
the other outputs go on (exit code 0).

``clip_saved`` (:class:`~edge_detect.types.ClipSaved`) goes out through :meth:`~edge_detect.types.RunContext.emit`:
the pipeline delivers it between two frames to the bus and every sink (a JSONL line, MQTT / webhook, the
dashboard's event list). Its CPU (the worker thread and the live sources' demux threads) is the ``record`` entry of
the summary's ``cpu_ms_per_frame``.

Spec: ``record://DIR`` (or the kind ``record`` with ``dir=``); options are the fields of
:class:`~edge_detect.recording.RecordConfig` (``pre_s``, ``post_s``, ``max_clip_s``, ``on``, ``annotate``,
``retain: {days, max_gb}``) plus ``uris`` (source id -> the URI to record from; the run's sources by default:
files are remuxed from themselves; network streams need their unmasked URI here, which the App passes). ``uris``
is read when a source's first frame arrives, so a source added while the run goes on is recorded too: the App
adds its URI to the same mapping.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from edge_detect.errors import SinkError
from edge_detect.recording import RecordConfig, RecordedStream, Recorder, RetainConfig
from edge_detect.sinks.base import register_sink
from edge_detect.sinks.threaded import ThreadedSink
from edge_detect.types import ClipSaved, Result, RunContext, StreamInfo

__all__ = ["RecorderSink"]

LOGGER = logging.getLogger(__name__)

_FILE_KINDS = ("file",)
_LIVE_KINDS = ("stream", "camera", "gstreamer")


class RecorderSink(ThreadedSink):
    """Event clips per source (see module doc).

    Args:
        config: what and how to record.
        uris: source id -> URI to record from (default: each source's own URI as the run knows it); kept by
            reference and read at each source's first frame.

    Attributes:
        recorder: the :class:`~edge_detect.recording.Recorder` (after :meth:`start`).
        error: why recording stopped, or ``None``.
    """

    name = "recorder"
    emits = True
    default_policy = "drop_oldest"
    default_queue_size = 512

    def __init__(self, config: RecordConfig, uris: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        self.config = config
        self.uris: Mapping[str, str] = uris if uris is not None else {}
        self.recorder: Optional[Recorder] = None
        self._new: Dict[str, RecordedStream] = {}  # sources first seen by prepare(), handed to the worker
        self._cpu_s = 0.0

    def _describe(self, info: StreamInfo) -> RecordedStream:
        return RecordedStream(info.source_id, self.uris.get(info.source_id, info.uri), info.kind in _FILE_KINDS,
                              bool(info.live) or info.kind in _LIVE_KINDS)

    def open(self, context: RunContext) -> None:
        self.recorder = Recorder(self.config, [self._describe(s) for s in context], publish=self._publish)
        try:
            self.recorder.start()
        except OSError as exc:
            raise SinkError(f"recorder: cannot create {self.config.dir} ({exc.strerror or exc})") from exc

    def _publish(self, event: ClipSaved, source_id: str) -> None:
        self.context.emit(event, source_id)

    def prepare(self, result: Result) -> Optional[Result]:
        """The result itself (a reference); a source not seen before is described now (on the caller's thread,
        where the run's sources can be looked up)."""
        if result.events_only:
            return None
        sid = result.frame.source_id
        assert self.recorder is not None
        if sid not in self.recorder.streams and sid not in self._new:
            info = self.context.stream(sid) or StreamInfo(sid)
            self._new[sid] = self._describe(info)
        return result

    def handle(self, item: Result) -> Optional[bool]:
        assert self.recorder is not None
        c0 = time.thread_time()
        try:
            new = self._new.get(item.frame.source_id)
            if new is not None and new.source_id not in self.recorder.streams:
                self.recorder.add_stream(new)
            self.recorder.handle(item)
        finally:
            self._cpu_s += time.thread_time() - c0
        return self.recorder.error is None

    def finalize(self) -> None:
        if self.recorder is not None:
            c0 = time.thread_time()
            self.recorder.close()
            self._cpu_s += time.thread_time() - c0

    @property  # type: ignore[override]
    def error(self) -> Optional[str]:
        """Why recording stopped (the run goes on), or ``None``."""
        return None if self.recorder is None else self.recorder.error

    def thread_cpu_ms(self) -> Dict[str, float]:
        """``{"record": ms}``: the recorder's thread plus the live sources' demux threads."""
        reader = self.recorder.reader_cpu_s() if self.recorder is not None else 0.0
        return {"record": (self._cpu_s + reader) * 1e3}

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
