"""Events out of a run: the event envelope, ``object_update`` throttling, and the sink that fans events out.

Processors (line/zone counters, the tracker) return typed events (:class:`~edge_detect.types.Event`:
``line_cross``, ``zone_enter``, ``zone_exit``, ``object_new``, ``object_end``...) in ``detections.metadata["events"]``.
:class:`EventBuilder` turns them into **enveloped events**, the JSON documented in README and validated by the
JSON Schema shipped in the package (:func:`load_schema`, ``edge_detect/schemas/events.schema.json``)::

    {"schema": 1, "id": "3f0c...", "seq": 17, "type": "line_cross", "source": "gate", "frame": 412,
     "wall_time": 1718000000.123, "line": "door", "direction": "in", "track_id": 7, "class_name": "person",
     "snapshot": "snaps/gate/gate-00000412.jpg"}

* ``schema``: :data:`SCHEMA_VERSION`; ``id``: uuid4 hex, unique (deduplicate QoS 1 redeliveries with it), the
  one the pipeline gave the event when it published it: the same in the JSONL line, on MQTT, on the webhook, in
  the dashboard and in a ``clip_saved`` event's ``events``;
  ``seq``: per source, 1, 2, 3... over every event of the source in this run (a gap means a lost event);
  ``frame`` / ``wall_time``: the frame the event belongs to (Unix seconds at capture).
* ``object_update`` is produced here from tracked detections (``track_id >= 0``): at most one every
  ``update_interval_s`` seconds (frame wall time) per track, the first one ``update_interval_s`` after the track
  was first seen. Its fields: ``track_id``, ``class_name``, ``score``, ``xyxy`` (original-frame pixels),
  ``first_seen``.

:class:`EventsSink` is the one sink behind ``--mqtt``, ``--webhook`` and ``--snapshots``: per processed frame it
builds the events once (so MQTT and the webhook carry the same ``id``/``seq``), writes the snapshot JPEG
**before** handing the events to the transports (:class:`EventTransport`: MQTT, webhook; ``object_end`` also
gets ``last_snapshot``, the latest snapshot that showed the object), and every ``stats_interval_s`` seconds hands
each transport a per-source stats dict (:meth:`EventsSink.stats`; counts from the run's
:class:`~edge_detect.events.Counts`). Transports queue and send in their own threads
(:class:`~edge_detect.sinks.threaded.QueueWorker`), snapshots are written on the hub's own thread: ``write`` never
waits for the disk or the network. :func:`arrange_sinks` (called by whoever opens the run's sinks:
:func:`~edge_detect.app_config.build_pipeline`, the App) merges the ``mqtt://``, ``webhook+http(s)://`` and
``events`` sinks into one :class:`EventsSink` and puts the metrics sink last.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from importlib import resources
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from edge_detect.errors import SinkError
from edge_detect.sinks.base import Sink, StreamInfo, register_sink
from edge_detect.sinks.threaded import QueueWorker, ThreadedSink
from edge_detect.stats import RateMeter, nan_to_none, percentiles
from edge_detect.types import Result, RunContext

__all__ = ["SCHEMA_VERSION", "EVENT_TYPES", "EventBuilder", "EventTransport", "EventsSink", "load_schema",
           "validate_event", "frame_events", "arrange_sinks"]

LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EVENT_TYPES = ("line_cross", "zone_enter", "zone_exit", "dwell", "object_new", "object_update", "object_end",
               "clip_saved")
_ENVELOPE = ("schema", "id", "seq", "type", "source", "frame", "wall_time")


def load_schema() -> Dict[str, Any]:
    """The JSON Schema of an enveloped event (package data ``edge_detect/schemas/events.schema.json``)."""
    text = resources.files("edge_detect").joinpath("schemas", "events.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_event(event: Dict[str, Any]) -> None:
    """Validate one enveloped event against :func:`load_schema` (needs ``jsonschema``).

    Raises:
        jsonschema.ValidationError: the event does not match the schema.
        MissingDependencyError: jsonschema is not installed.
    """
    from edge_detect._optional import require

    jsonschema = require("jsonschema", "dev")
    jsonschema.validate(event, load_schema())


def frame_events(result: Result) -> List[Dict[str, Any]]:
    """The processor events of a :class:`~edge_detect.types.Result` as dicts (:meth:`~edge_detect.types.Event.
    to_dict`)."""
    return [e.to_dict() for e in result.events]


def _jsonable(value: Any) -> Any:
    """NumPy scalars/arrays and tuples -> plain JSON types (floats rounded to 6 digits, NaN -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return nan_to_none(round(value, 6))
    return value


class EventBuilder:
    """Envelope processor events and derive throttled ``object_update`` events (see module doc).

    Args:
        update_interval_s: least time between two ``object_update`` of one track (frame wall time);
            ``0`` disables ``object_update``.
        forget_after_s: a track not seen for this long is forgotten (bounds memory when the tracker emits no
            ``object_end``); default ``max(30, 6 * update_interval_s)``.

    Not thread-safe: call :meth:`build` from one thread (the sinks thread).
    """

    def __init__(self, update_interval_s: float = 5.0, forget_after_s: Optional[float] = None) -> None:
        if update_interval_s < 0:
            raise ValueError(f"update_interval_s: expected >= 0, got {update_interval_s}")
        self.update_interval_s = float(update_interval_s)
        self.forget_after_s = float(forget_after_s) if forget_after_s is not None else \
            max(30.0, 6 * self.update_interval_s)
        self._seq: Dict[str, int] = {}
        # (source, track_id) -> [first_seen, last_update, last_seen]
        self._tracks: Dict[Tuple[str, int], List[float]] = {}
        self._last_prune = 0.0

    def seq(self, source_id: str) -> int:
        """The ``seq`` of the last event of ``source_id`` (0 before any)."""
        return self._seq.get(source_id, 0)

    def envelope(self, event: Dict[str, Any], source_id: str, frame: int, wall_time: float) -> Dict[str, Any]:
        """``event`` with ``schema``, ``id`` (the event's own, assigned by the pipeline when it published it; a
        new uuid4 hex only for an event without one, such as ``object_update``), ``seq``, ``source`` (and
        ``frame``/``wall_time`` when missing) in front; values made JSON-ready. Increments the source's ``seq``."""
        seq = self._seq.get(source_id, 0) + 1
        self._seq[source_id] = seq
        body = {k: _jsonable(v) for k, v in event.items() if k not in ("schema", "id", "seq", "source")}
        out: Dict[str, Any] = {"schema": SCHEMA_VERSION, "id": str(event.get("id") or uuid.uuid4().hex), "seq": seq,
                               "type": str(body.pop("type", "unknown")), "source": str(source_id),
                               "frame": int(body.pop("frame", frame)),
                               "wall_time": round(float(body.pop("wall_time", wall_time)), 6)}
        out.update(body)
        return out

    def build(self, result: Any) -> List[Dict[str, Any]]:
        """Enveloped events of one processed frame: the processors' events, then ``object_update`` events.

        Args:
            result: a :class:`~edge_detect.types.Result` (``frame.source_id``, ``frame.index``,
                ``frame.wall_time``, ``detections`` with optional ``track_id``, ``names``).
        """
        frame, dets = result.frame, result.detections
        sid, index, wall = str(frame.source_id), int(frame.index), float(frame.wall_time)
        out = [self.envelope(ev, sid, index, wall) for ev in frame_events(result)]
        for ev in out:
            if ev["type"] == "object_new" and "track_id" in ev:
                self._tracks[(sid, int(ev["track_id"]))] = [wall, wall, wall]
            elif ev["type"] == "object_end" and "track_id" in ev:
                self._tracks.pop((sid, int(ev["track_id"])), None)
        if dets.track_id is not None and self.update_interval_s > 0:
            names = result.names
            for i in range(len(dets)):
                tid = int(dets.track_id[i])
                if tid < 0:
                    continue
                state = self._tracks.get((sid, tid))
                if state is None:
                    self._tracks[(sid, tid)] = [wall, wall, wall]
                    continue
                state[2] = wall
                if wall - state[1] >= self.update_interval_s:
                    state[1] = wall
                    cid = int(dets.class_id[i])
                    out.append(self.envelope({
                        "type": "object_update", "track_id": tid,
                        "class_name": names[cid] if 0 <= cid < len(names) else str(cid),
                        "score": round(float(dets.score[i]), 5),
                        "xyxy": [round(float(v), 2) for v in dets.xyxy[i]], "first_seen": round(state[0], 6),
                    }, sid, index, wall))
        if wall - self._last_prune > self.forget_after_s / 4:
            self._last_prune = wall
            for key in [k for k, st in self._tracks.items() if k[0] == sid and wall - st[2] > self.forget_after_s]:
                del self._tracks[key]
        return out


class EventTransport:
    """Where enveloped events go (MQTT, webhook). Implementations queue and send in their own thread.

    ``send`` must return at once (bounded queue: when full, drop the oldest and count it).
    """

    name = "transport"

    def start(self, streams: Sequence[StreamInfo]) -> None:
        """Called once before the first event."""

    def send(self, event: Dict[str, Any]) -> None:
        raise NotImplementedError

    def send_stats(self, source_id: str, stats: Dict[str, Any]) -> None:
        """Periodic per-source stats (see :meth:`EventsSink.stats`); default: ignored."""

    def queue_stats(self) -> Dict[str, int]:
        """``{"queued", "sent", "dropped", "failed"}`` counts of events (``queued`` = waiting now)."""
        return {"queued": 0, "sent": 0, "dropped": 0, "failed": 0}

    def close(self) -> None:
        """Deliver what can be delivered within the transport's close timeout, then release."""

    def abandon(self) -> None:
        """Stop waiting for deliveries at close (signal-safe: a flag; queue-based transports get
        :meth:`~edge_detect.sinks.threaded.QueueWorker.abandon`)."""


class _SourceStats:
    """Per-source running measurements for the stats messages (guarded by the sink's lock); counts come from the
    run's :class:`~edge_detect.events.Counts`."""

    def __init__(self) -> None:
        self.processed = 0
        self.rate = RateMeter(5.0)
        self.latency_ms: Deque[float] = deque(maxlen=512)
        self.updates = 0  # object_update events built here (the processors' events are counted by Counts)


class EventsSink(ThreadedSink):
    """Build events once per frame, write snapshots, hand events and stats to the transports.

    ``write`` builds the frame's events on the caller's thread (one ``id``/``seq`` for every transport). Without
    snapshots it hands them to the transports (each only queues); with snapshots the frame and its events go to
    this sink's own thread (:class:`~edge_detect.sinks.threaded.ThreadedSink`, ``drop_oldest``, counted as
    ``snapshots`` in the run summary), which writes the JPEG and then hands the events on, so an event never
    leaves before its snapshot exists.

    Args:
        transports: :class:`EventTransport` objects (MQTT, webhook); may be empty (snapshots only).
        snapshots: a :class:`~edge_detect.sinks.snapshots.SnapshotWriter` or ``None``.
        update_interval_s: ``object_update`` throttle (see :class:`EventBuilder`).
        stats_interval_s: period of :meth:`EventTransport.send_stats` (``0`` = never).

    The stats messages read the counts from the run's :class:`~edge_detect.events.Counts` and the sources'
    read / dropped / corrupt / reconnects from the :class:`~edge_detect.types.RunContext` it is started with.
    """

    name = "events"
    default_policy = "drop_oldest"
    default_queue_size = 64

    def __init__(self, transports: Sequence[EventTransport] = (), snapshots: Any = None,
                 update_interval_s: float = 5.0, stats_interval_s: float = 5.0, primary: bool = False) -> None:
        if stats_interval_s < 0:
            raise ValueError(f"stats_interval_s: expected >= 0, got {stats_interval_s}")
        super().__init__(close_timeout_s=30.0)
        self.transports = list(transports)
        self.snapshots = snapshots
        self.builder = EventBuilder(update_interval_s)
        self.stats_interval_s = float(stats_interval_s)
        self.events_total = 0
        self.snapshot_errors = 0
        self._track_snaps: Dict[Tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self._sources: Dict[str, _SourceStats] = {}
        self._stop = threading.Event()
        self._stats_thread: Optional[threading.Thread] = None
        self.primary = primary

    def absorb(self, other: "EventsSink") -> None:
        """Take over ``other``'s transports (and snapshots when this sink has none): one builder, so every
        transport carries the same ``id``/``seq``. ``other`` must not be used afterwards."""
        self.transports.extend(other.transports)
        other.transports = []
        if self.snapshots is None:
            self.snapshots, other.snapshots = other.snapshots, None
        elif other.snapshots is not None:
            raise ValueError("events: expected one snapshots folder per run, got two")

    def open(self, context: RunContext) -> None:
        with self._lock:
            for s in context:
                self._sources.setdefault(s.source_id, _SourceStats())
        for t in self.transports:
            t.start(context)
        if self.stats_interval_s > 0 and any(type(t).send_stats is not EventTransport.send_stats
                                             for t in self.transports):
            self._stats_thread = threading.Thread(target=self._stats_loop, name="events-stats", daemon=True)
            self._stats_thread.start()

    def write(self, result: Result) -> None:
        if self.context.standalone:  # no pipeline publishes: count here what the bus would have
            self.context.counts.on_result(result)
        events = self.builder.build(result)
        now = time.perf_counter()
        sid = str(result.frame.source_id)
        with self._lock:
            st = self._sources.setdefault(sid, _SourceStats())
            if not result.events_only:
                st.processed += 1
                st.rate.tick(now)
                if result.frame.capture_time:
                    st.latency_ms.append((now - result.frame.capture_time) * 1e3)
            st.updates += sum(1 for ev in events if ev["type"] == "object_update")
        if not events:
            return
        self.events_total += len(events)
        if self.snapshots is None:
            self._send(events)
            return
        self.raise_if_failed()
        self.start_worker()
        self.put((result, events))

    def handle(self, item: Tuple[Result, List[Dict[str, Any]]]) -> bool:
        """On the sink's thread: the snapshot first (its path goes into the events), then the transports."""
        result, events = item
        try:
            path = self.snapshots.write(result, events)  # sets ev["snapshot"] (and "snapshot_crop")
        except SinkError as exc:  # a full disk must not stop the events: they go out without a snapshot
            self.snapshot_errors += 1
            if self.snapshot_errors == 1 or self.snapshot_errors % 100 == 0:
                LOGGER.error("events: snapshot failed (%d so far), events sent without it: %s",
                             self.snapshot_errors, exc)
        else:
            self._remember_snapshot(str(result.frame.source_id), result.detections, str(path), events)
        self._send(events)
        return True

    def _send(self, events: List[Dict[str, Any]]) -> None:
        for ev in events:
            for t in self.transports:
                t.send(ev)

    def _remember_snapshot(self, sid: str, dets: Any, path: str, events: List[Dict[str, Any]]) -> None:
        """Keep, per track, the latest snapshot that shows it; ``object_end`` gets it as ``last_snapshot`` (the
        track is usually gone from the frame it ends on)."""
        if dets.track_id is not None:
            for tid in dets.track_id.tolist():
                if tid >= 0:
                    self._track_snaps.pop((sid, tid), None)
                    self._track_snaps[(sid, tid)] = path
        for ev in events:
            if ev["type"] == "object_end" and "track_id" in ev:
                last = self._track_snaps.pop((sid, int(ev["track_id"])), None)
                if last is not None and os.path.isfile(last):  # (unless retention deleted it)
                    ev["last_snapshot"] = last
        while len(self._track_snaps) > 10000:  # tracks that never got an object_end (e.g. the IoU tracker)
            del self._track_snaps[next(iter(self._track_snaps))]

    def stats(self, source_id: str) -> Dict[str, Any]:
        """The stats message of a source (``{prefix}/{source_id}/stats`` on MQTT)::

            {"source", "wall_time", "processed", "fps", "latency_ms": {"p50", "p95"}, "read", "dropped",
             "corrupt", "reconnects", "events": {type: n}, "lines": {name: {"in", "out"}},
             "zones": {name: {"enter", "exit"}}, "queue": {transport: {"queued", "sent", "dropped", "failed"}}}

        ``fps`` over the last 5 s; latency (capture -> this sink) over the last 512 frames; counts since the
        start of the run (:class:`~edge_detect.events.Counts`); ``read``/``dropped``/``corrupt``/``reconnects`` from
        the run context's stats, ``None`` when the sink runs outside a pipeline.
        """
        with self._lock:
            st = self._sources.setdefault(source_id, _SourceStats())
            p = percentiles(st.latency_ms, (50, 95))
            out: Dict[str, Any] = {
                "source": source_id, "wall_time": round(time.time(), 3), "processed": st.processed,
                "fps": round(st.rate.rate, 2), "latency_ms": {"p50": round(p[50], 1), "p95": round(p[95], 1)},
                "read": None, "dropped": None, "corrupt": None, "reconnects": None,
            }
            updates = st.updates
        counted = self.context.counts.source(source_id)
        events = dict(counted["events"])
        if updates:
            events["object_update"] = updates
        out.update(events=events,
                   lines={k: {"in": v["in"], "out": v["out"]} for k, v in counted["lines"].items()},
                   zones={k: {"enter": v["entered"], "exit": v["exited"]} for k, v in counted["zones"].items()})
        src = self.context.stats().get("sources", {}).get(source_id)
        if src is not None:
            out.update({k: src.get(k) for k in ("read", "dropped", "corrupt", "reconnects")})
        out["queue"] = self.transport_stats()
        return _jsonable(out)

    def _publish_stats(self) -> None:
        with self._lock:
            ids = list(self._sources)
        for sid in ids:
            stats = self.stats(sid)
            for t in self.transports:
                t.send_stats(sid, stats)

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.stats_interval_s):
            try:
                self._publish_stats()
            except Exception as exc:  # noqa: BLE001 - a stats hiccup must not kill the thread
                LOGGER.warning("events: stats message failed: %s", exc)

    def abandon(self) -> None:
        """Stop waiting for deliveries: the snapshot queue and every transport (:meth:`QueueWorker.abandon`)."""
        QueueWorker.abandon(self)
        for t in self.transports:
            t.abandon()

    def transport_stats(self) -> Dict[str, Dict[str, int]]:
        """Per transport name: ``{"queued", "sent", "dropped", "failed"}``."""
        return {t.name: t.queue_stats() for t in self.transports}

    def counters(self) -> Dict[str, Dict[str, int]]:
        """The transports' queue counters, and the snapshot queue's (``snapshots``) when there are snapshots (for
        the run summary and the metrics)."""
        out = {name: {k: st.get(k, 0) for k in ("queued", "sent", "dropped", "failed")}
               for name, st in self.transport_stats().items()}
        if self.snapshots is not None:
            out["snapshots"] = QueueWorker.queue_stats(self)
        return out

    def finalize(self) -> None:
        """(After the snapshot queue drained) stop the stats thread, send a last stats message, close every
        transport (each flushes its queue)."""
        self._stop.set()
        if self._stats_thread is not None:
            self._stats_thread.join(2.0)
            try:
                self._publish_stats()
            except Exception as exc:  # noqa: BLE001 - still close the transports
                LOGGER.warning("events: last stats message failed: %s", exc)
        errors = []
        for t in self.transports:
            try:
                t.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then report
                errors.append(f"{t.name}: {exc}")
        if self.snapshots is not None:
            self.snapshots.close()
        if errors:
            LOGGER.error("events: closing transports failed: %s", "; ".join(errors))


def arrange_sinks(sinks: Sequence[Sink]) -> List[Sink]:
    """The sinks of a run as the pipeline should call them: every :class:`EventsSink` merged into one (at the
    place of the first; the ``events`` spec's settings win, see :func:`_open_events`), and sinks that ask to run
    last (``runs_last = True``: the metrics sink, which measures glass-to-glass latency) moved to the end."""
    hubs = [s for s in sinks if isinstance(s, EventsSink)]
    out: List[Sink] = list(sinks)
    if len(hubs) > 1:
        main = next((h for h in hubs if h.primary), hubs[0])
        for h in hubs:
            if h is not main:
                main.absorb(h)
        first = out.index(hubs[0])
        out = [s for s in out if not isinstance(s, EventsSink)]
        out.insert(first, main)
    return [s for s in out if not getattr(s, "runs_last", False)] + \
        [s for s in out if getattr(s, "runs_last", False)]


@register_sink("events")
def _open_events(target: str, snapshots: Optional[str] = None, snapshot_crop: bool = False,
                 snapshot_keep: Optional[int] = 1000, snapshot_max_age_s: Optional[float] = None,
                 snapshot_quality: int = 90, update_interval_s: float = 5.0,
                 stats_interval_s: float = 5.0) -> EventsSink:
    """``events``: the event settings of the run (snapshots, ``object_update`` and stats periods); merged with
    the ``mqtt://`` / ``webhook+http(s)://`` sinks of the run by :func:`arrange_sinks`."""
    from edge_detect.errors import ConfigError
    from edge_detect.sinks.snapshots import SnapshotWriter

    try:
        writer = None if snapshots is None else SnapshotWriter(snapshots, crop=snapshot_crop, keep=snapshot_keep,
                                                               max_age_s=snapshot_max_age_s,
                                                               quality=snapshot_quality)
        return EventsSink([], writer, update_interval_s=update_interval_s, stats_interval_s=stats_interval_s,
                          primary=True)
    except ValueError as exc:
        raise ConfigError(f"sink 'events': {exc}") from exc
