"""The in-process event bus of a run, and :class:`Counts`: the one place where counts are kept.

Flow: the pipeline runs each frame through its source's processors, then publishes the frame's
:class:`~edge_detect.types.Result` (with its typed events, ``result.events``) on the run's :class:`EventBus`, then
writes it to the sinks. Every subscriber of the bus sees every published result, in publishing order:

* **inline** subscribers (``subscribe(cb, inline=True)``) are called on the publishing thread (the pipeline's
  sink stage); they promise not to block (no I/O, no waiting), like :class:`Counts`;
* every other subscriber gets its **own bounded queue** (``queue_size``; when full the oldest result is dropped
  and counted in ``dropped``): with a callback, a thread of its own calls it; without one, the subscriber pulls
  (:meth:`Subscription.get`, e.g. a dashboard's server-sent events). A slow subscriber never slows the pipeline
  nor the other subscribers.

:class:`Counts` is subscribed inline by the bus itself (:attr:`EventBus.counts`): line ``in``/``out``, zone
``entered``/``exited``/occupancy/maximum occupancy, each by class, and events by type, per source. The run
summary, the MQTT stats messages, the Prometheus metrics, the App's ``counts()`` (and later the recorder and the
dashboard) read it; nothing else aggregates events. It outlives pipelines: an :class:`~edge_detect.app.App` keeps
one bus (and so one Counts) across runtime changes, so counts carry on.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence

from edge_detect.types import Event, Result, as_event

__all__ = ["EventBus", "Subscription", "Counts", "merge_counts"]

LOGGER = logging.getLogger(__name__)

Callback = Callable[[Result], None]


class Subscription:
    """One subscriber of an :class:`EventBus` (see module doc).

    Attributes:
        name: for logs and stats.
        inline: called on the publishing thread.
        delivered: results handed to the callback (or taken with :meth:`get`).
        dropped: results dropped because the queue was full (oldest first).
        failed: callback calls that raised (logged; the subscription goes on).
    """

    def __init__(self, bus: "EventBus", callback: Optional[Callback], name: str, inline: bool,
                 queue_size: int) -> None:
        if inline and callback is None:
            raise ValueError("subscribe: expected a callback with inline=True, got none")
        if queue_size < 1:
            raise ValueError(f"subscribe queue_size: expected >= 1, got {queue_size}")
        self._bus, self.callback, self.name, self.inline = bus, callback, name, inline
        self.queue_size = int(queue_size)
        self.delivered = self.dropped = self.failed = 0
        self._queue: Deque[Result] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        if callback is not None and not inline:
            self._thread = threading.Thread(target=self._loop, name=f"bus-{name}", daemon=True)
            self._thread.start()

    def _offer(self, result: Result) -> None:
        """Called by :meth:`EventBus.publish`."""
        if self.inline:
            self._call(result)
            return
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(result)
            self._cond.notify_all()

    def _call(self, result: Result) -> None:
        try:
            self.callback(result)  # type: ignore[misc]
            self.delivered += 1
        except Exception as exc:  # noqa: BLE001 - a subscriber must never stop the run
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                LOGGER.error("bus subscriber %s failed (%d so far): %s", self.name, self.failed, exc)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                result = self._queue.popleft()
            self._call(result)

    def get(self, timeout: Optional[float] = None) -> Optional[Result]:
        """Pull subscribers: the next result, or ``None`` after ``timeout`` seconds (``None``: wait) or once
        closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._closed, timeout):
                return None
            if not self._queue:
                return None
            self.delivered += 1
            return self._queue.popleft()

    def stats(self) -> Dict[str, int]:
        """``{"queued", "delivered", "dropped", "failed"}``."""
        with self._cond:
            return {"queued": len(self._queue), "delivered": self.delivered, "dropped": self.dropped,
                    "failed": self.failed}

    def close(self, timeout: float = 2.0) -> None:
        """Unsubscribe; a callback thread delivers what is queued (up to ``timeout`` seconds), then ends."""
        self._bus.unsubscribe(self)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class EventBus:
    """Publish/subscribe of processed frames (see module doc); :attr:`counts` is subscribed first, inline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: List[Subscription] = []
        self.counts = Counts()
        self.subscribe(self.counts.on_result, name="counts", inline=True)

    def subscribe(self, callback: Optional[Callback] = None, *, name: str = "subscriber", inline: bool = False,
                  queue_size: int = 256) -> Subscription:
        """Add a subscriber.

        Args:
            callback: ``callback(result)`` for each published :class:`~edge_detect.types.Result`; ``None`` for a
                pull subscriber (:meth:`Subscription.get`).
            name: for logs and stats.
            inline: call ``callback`` on the publishing thread (it must not block: no I/O, no waiting).
            queue_size: bound of the subscriber's own queue (not inline); the oldest result is dropped beyond.

        Raises:
            ValueError: ``inline`` without a callback, or ``queue_size < 1``.
        """
        sub = Subscription(self, callback, name, inline, queue_size)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove ``sub`` (no error when it is not subscribed)."""
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscriptions(self) -> List[Subscription]:
        with self._lock:
            return list(self._subs)

    def publish(self, result: Result) -> None:
        """Hand ``result`` to every subscriber: inline ones now, in subscription order, the others by queue."""
        for sub in self.subscriptions:
            sub._offer(result)

    def stats(self) -> Dict[str, Dict[str, int]]:
        """Per subscriber name: :meth:`Subscription.stats`."""
        return {sub.name: sub.stats() for sub in self.subscriptions}

    def close(self) -> None:
        """Close every subscription (callback threads deliver what they hold first)."""
        for sub in self.subscriptions:
            if sub.callback is not self.counts.on_result:
                sub.close()


def _zero_line() -> Dict[str, Any]:
    return {"in": 0, "out": 0, "by_class": {}}


def _zero_zone() -> Dict[str, Any]:
    return {"entered": 0, "exited": 0, "occupancy": 0, "max_occupancy": 0, "by_class": {}}


class _SourceCounts:
    def __init__(self) -> None:
        self.lines: Optional[Dict[str, Dict[str, Any]]] = None  # None: no line declared or seen on this source
        self.zones: Optional[Dict[str, Dict[str, Any]]] = None
        self.events: Dict[str, int] = {}


class Counts:
    """Counts of a run, per source, from the typed events (see module doc). Thread-safe.

    Per source:

    * ``lines``: ``{NAME: {"in", "out", "by_class": {CLASS: {"in", "out"}}}}`` from ``line_cross`` events;
    * ``zones``: ``{NAME: {"entered", "exited", "occupancy", "max_occupancy", "by_class": {CLASS: {"entered",
      "exited"}}}}`` from ``zone_enter`` / ``zone_exit``; ``occupancy = entered - exited``, its maximum taken after
      each frame's events;
    * ``events``: ``{TYPE: n}`` over every event.

    Lines and zones that a processor declares (:meth:`declare`) are listed with zero counts until they count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: Dict[str, _SourceCounts] = {}

    def _src(self, source_id: str) -> _SourceCounts:
        src = self._sources.get(source_id)
        if src is None:
            src = self._sources[source_id] = _SourceCounts()
        return src

    def declare(self, source_id: str, lines: Optional[Sequence[str]] = None,
                zones: Optional[Sequence[str]] = None) -> None:
        """Make ``source_id``'s lines / zones known (listed with zero counts; ``None``: this kind not counted
        there). Counts of names already known are kept."""
        with self._lock:
            src = self._src(str(source_id))
            if lines is not None:
                src.lines = src.lines if src.lines is not None else {}
                for name in lines:
                    src.lines.setdefault(str(name), _zero_line())
            if zones is not None:
                src.zones = src.zones if src.zones is not None else {}
                for name in zones:
                    src.zones.setdefault(str(name), _zero_zone())

    def on_result(self, result: Result) -> None:
        """Bus callback (inline): :meth:`add` the result's events."""
        self.add(result.frame.source_id, result.events)

    def add(self, source_id: str, events: Iterable[Any]) -> None:
        """Count ``events`` (typed, or dicts) of one frame of ``source_id``."""
        with self._lock:
            src = self._src(str(source_id))
            touched = set()
            for ev in (as_event(e) for e in events):
                src.events[ev.type] = src.events.get(ev.type, 0) + 1
                if ev.type == "line_cross":
                    self._add_line(src, ev)
                elif ev.type in ("zone_enter", "zone_exit"):
                    touched.add(self._add_zone(src, ev))
            for name in touched:
                z = src.zones[name]  # type: ignore[index]
                z["max_occupancy"] = max(z["max_occupancy"], z["occupancy"])

    @staticmethod
    def _add_line(src: _SourceCounts, ev: Event) -> None:
        src.lines = src.lines if src.lines is not None else {}
        line = src.lines.setdefault(str(ev["line"]), _zero_line())
        direction = str(ev["direction"])
        line[direction] = line.get(direction, 0) + 1
        per = line["by_class"].setdefault(str(ev.get("class_name")), {"in": 0, "out": 0})
        per[direction] = per.get(direction, 0) + 1

    @staticmethod
    def _add_zone(src: _SourceCounts, ev: Event) -> str:
        src.zones = src.zones if src.zones is not None else {}
        name = str(ev["zone"])
        zone = src.zones.setdefault(name, _zero_zone())
        key = "entered" if ev.type == "zone_enter" else "exited"
        zone[key] += 1
        zone["occupancy"] = zone["entered"] - zone["exited"]
        per = zone["by_class"].setdefault(str(ev.get("class_name")), {"entered": 0, "exited": 0})
        per[key] += 1
        return name

    def source_ids(self) -> List[str]:
        with self._lock:
            return list(self._sources)

    def source(self, source_id: str) -> Dict[str, Any]:
        """``{"lines", "zones", "events"}`` of one source, with ``by_class`` (copies; empty when unknown)."""
        with self._lock:
            src = self._sources.get(str(source_id))
            if src is None:
                return {"lines": {}, "zones": {}, "events": {}}
            return {"lines": _copy(src.lines or {}), "zones": _copy(src.zones or {}), "events": dict(src.events)}

    def snapshot(self) -> Dict[str, Any]:
        """``{"sources": {id: source(id)}, "total": counts of all sources merged (numbers added)}``."""
        per = {sid: self.source(sid) for sid in self.source_ids()}
        return {"sources": per, "total": merge_counts(list(per.values()))}

    def summary(self, source_id: Optional[str] = None) -> Dict[str, Any]:
        """The run summary's view: ``{"lines": {NAME: {"in", "out", "by_class"}}, "zones": {NAME: {"entered",
        "exited", "occupancy", "max_occupancy"}}}`` of one source, or of all (numbers added); a kind appears where
        it was declared or counted."""
        if source_id is None:
            return merge_counts([self.summary(sid) for sid in self.source_ids()])
        with self._lock:
            src = self._sources.get(str(source_id))
            out: Dict[str, Any] = {}
            if src is not None and src.lines is not None:
                out["lines"] = {k: {"in": v["in"], "out": v["out"],
                                    "by_class": {c: dict(n) for c, n in sorted(v["by_class"].items())}}
                                for k, v in src.lines.items()}
            if src is not None and src.zones is not None:
                out["zones"] = {k: {f: v[f] for f in ("entered", "exited", "occupancy", "max_occupancy")}
                                for k, v in src.zones.items()}
            return out


def _copy(obj: Any) -> Any:
    return {k: _copy(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def merge_counts(parts: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Merge count dicts: numbers are added, dicts merged recursively, other values: the last one wins."""
    out: Dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge_counts([out[key], value])
            elif _is_number(value) and _is_number(out.get(key)):
                out[key] = out[key] + value
            else:
                out[key] = merge_counts([value]) if isinstance(value, Mapping) else value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
