"""MQTT transport of events (paho-mqtt 2.x), with a bounded queue that survives broker outages.

``--mqtt mqtt://[user:pass@]host[:port][/prefix]`` (``mqtts://`` for TLS, port 8883 by default, with
``ca``/``cert``/``key`` options). Credentials are masked (``***``) in every log line, ``repr`` and error.

Topics (``prefix`` defaults to ``edge_detect``)::

    {prefix}/{source_id}/events   every enveloped event (JSON, QoS 1 by default, not retained)
    {prefix}/{source_id}/stats    per-source stats every few seconds (JSON, QoS 0, not retained)
    {prefix}/availability         "online" / "offline", retained; "offline" is also the broker's last will,
                                  so a box that dies without saying goodbye reads "offline"

``/``, ``+`` and ``#`` in a source id become ``_`` in topics.

Delivery and ordering -- who owns what:

* **This module owns the bound and the order.** :meth:`MqttTransport.send` puts the event in the bounded queue of
  its :class:`~edge_detect.sinks.threaded.QueueWorker` (``queue_size`` events, policy ``drop_oldest``: full, the
  oldest is dropped and counted in ``dropped``); it never blocks.
* The worker thread hands events to paho only while connected, and at most ``max_inflight`` unacknowledged at a
  time (``Client.max_inflight_messages_set``); paho's own queue (``max_queued_messages_set``: that number plus
  room for the availability messages) therefore never holds more than those few. An event leaves our queue
  when handed to paho.
* When the connection drops, the events paho holds unacknowledged are re-sent by paho itself right after the
  next CONNACK (QoS 1, DUP flag). Until all of them are acknowledged the sender hands over nothing new, so
  every event reaches the broker in ``seq`` order. paho reconnects with exponential backoff
  (``reconnect_delay_set(backoff_min_s, backoff_max_s)``).
* QoS 1 is at-least-once: an event whose PUBACK was lost in the outage arrives twice; deduplicate on ``id``.

Stats messages are not queued (a stale one is useless): they are published only while connected.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from edge_detect._optional import require
from edge_detect.errors import ConfigError, SinkError
from edge_detect.sinks.base import StreamInfo, register_sink
from edge_detect.sinks.events import EventsSink, EventTransport
from edge_detect.sinks.threaded import QueueWorker
from edge_detect.urls import mask_credentials

__all__ = ["MqttTarget", "parse_mqtt_url", "MqttTransport", "topic_segment", "DEFAULT_PREFIX"]

LOGGER = logging.getLogger(__name__)

DEFAULT_PREFIX = "edge_detect"
_BAD_TOPIC = re.compile(r"[/+#\x00]")


def topic_segment(name: str) -> str:
    """``name`` usable as one MQTT topic level (``/``, ``+``, ``#`` and NUL -> ``_``; empty -> ``_``)."""
    return _BAD_TOPIC.sub("_", str(name)) or "_"


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``mqtt(s)://`` URL. ``password`` is never shown by ``repr``; use :attr:`masked` in logs."""

    host: str
    port: int
    prefix: str = DEFAULT_PREFIX
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = None

    def __repr__(self) -> str:
        return f"MqttTarget({self.masked!r})"

    @property
    def masked(self) -> str:
        """The URL with the credentials replaced by ``***``."""
        auth = "***@" if self.username is not None else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}/{self.prefix}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse ``mqtt://[user[:pass]@]host[:port][/prefix]`` or ``mqtts://...``.

    Defaults: port 1883 (``mqtts``: 8883), prefix :data:`DEFAULT_PREFIX`. The prefix may have several levels
    (``mqtt://h/site/cam``); it must not contain ``+`` or ``#``. User and password are percent-decoded.

    Raises:
        ConfigError: another scheme, no host, a bad port or a wildcard in the prefix (credentials masked).
    """
    shown = mask_credentials(url)
    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"MQTT URL {shown}: expected mqtt://[user:pass@]host[:port][/prefix], got a bad "
                          f"port ({mask_credentials(str(exc))})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"MQTT URL {shown}: expected the scheme mqtt:// or mqtts://, got '{parts.scheme}'")
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {shown}: expected a host (mqtt://host[:port][/prefix]), got none")
    prefix = parts.path.strip("/") or DEFAULT_PREFIX
    if "+" in prefix or "#" in str(url) or "?" in str(url) or "//" in prefix:
        raise ConfigError(f"MQTT URL {shown}: expected a topic prefix without wildcards or empty levels, "
                          f"got '{prefix}'")
    tls = parts.scheme == "mqtts"
    return MqttTarget(host=parts.hostname, port=port or (8883 if tls else 1883), prefix=prefix, tls=tls,
                      username=unquote(parts.username) if parts.username is not None else None,
                      password=unquote(parts.password) if parts.password is not None else None)


class MqttTransport(QueueWorker, EventTransport):
    """Publish events and stats to an MQTT broker (see module doc for topics, delivery and ordering).

    Args:
        url: ``mqtt://[user:pass@]host[:port][/prefix]`` or ``mqtts://...``.
        ca, cert, key: TLS files for ``mqtts`` (CA bundle; client certificate and key for mutual TLS).
        qos: QoS of events (0, 1 or 2; default 1). Availability uses QoS 1, stats QoS 0.
        queue_size: events kept while the broker is unreachable (oldest dropped beyond).
        max_inflight: events handed to paho and not yet acknowledged, at most.
        keepalive: MQTT keepalive in seconds (the broker publishes the last will after 1.5x this of silence
            when the TCP connection is not closed by the OS).
        backoff_min_s, backoff_max_s: reconnect backoff (paho doubles the wait up to the max; paho takes whole
            seconds, so values are rounded, at least 1).
        close_timeout_s: on close, wait this long for the queue to drain before giving up (counted as
            ``failed``).
        client_id: MQTT client id (default ``edge-detect-<hostname>-<pid>-<random>``).

    Raises:
        ConfigError: bad URL / QoS / sizes. MissingDependencyError: paho-mqtt not installed.
    """

    name = "mqtt"

    def __init__(self, url: str, ca: Optional[str] = None, cert: Optional[str] = None, key: Optional[str] = None,
                 qos: int = 1, queue_size: int = 1000, max_inflight: int = 20, keepalive: int = 30,
                 backoff_min_s: float = 1.0, backoff_max_s: float = 30.0, close_timeout_s: float = 5.0,
                 client_id: Optional[str] = None) -> None:
        self.target = parse_mqtt_url(url)
        if qos not in (0, 1, 2):
            raise ConfigError(f"MQTT qos: expected 0, 1 or 2, got {qos!r}")
        if queue_size < 1 or max_inflight < 1:
            raise ConfigError(f"MQTT queue_size / max_inflight: expected >= 1, got {queue_size} / {max_inflight}")
        if (cert is None) != (key is None):
            raise ConfigError("MQTT TLS: expected both a client certificate and its key, got only one")
        if not self.target.tls and (ca or cert):
            raise ConfigError(f"MQTT {self.target.masked}: TLS files given for a plain mqtt:// URL; use mqtts://")
        for what, path in (("CA", ca), ("certificate", cert), ("key", key)):
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"MQTT TLS {what}: expected a file, got {path!r} (not found)")
        mqtt = require("paho.mqtt.client", "events", package="paho-mqtt")
        QueueWorker.__init__(self, queue_size, "drop_oldest", close_timeout_s=close_timeout_s)
        self._mqtt = mqtt
        self.qos, self.max_inflight = int(qos), int(max_inflight)
        self.prefix = self.target.prefix
        self.availability_topic = f"{self.prefix}/availability"
        self._outstanding: Dict[int, Tuple[str, bytes]] = {}
        self._early: Dict[int, float] = {}
        self._control: Dict[int, float] = {}
        self._resend_first = False
        self._connected = False
        self._connections = 0
        self._started = False
        self.reconnects = 0
        self._last_drop_log = 0.0

        # unique per transport: two clients with one id make the broker drop the older connection
        cid = client_id or f"edge-detect-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311,
                                  clean_session=True)
        if self.target.username is not None:
            self.client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            try:
                self.client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
            except (OSError, ValueError) as exc:
                raise SinkError(f"MQTT {self.target.masked}: TLS setup failed ({exc})") from exc
        self.client.max_inflight_messages_set(self.max_inflight)
        # room for the availability messages beside the events in flight, which never exceed max_inflight
        self.client.max_queued_messages_set(self.max_inflight + 8)
        self.client.reconnect_delay_set(max(1, int(round(backoff_min_s))), max(1, int(round(backoff_max_s))))
        self.client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.keepalive = int(keepalive)

    @property
    def worker_name(self) -> str:  # type: ignore[override]
        return f"MQTT {self.target.masked}"

    def __repr__(self) -> str:
        return f"MqttTransport({self.target.masked!r})"

    # ------------------------------------------------------------------------------------------- paho callbacks

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            LOGGER.warning("MQTT %s: connection refused: %s", self.target.masked, reason_code)
            return
        info = self._publish(self.availability_topic, b"online", qos=1, retain=True)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            LOGGER.warning("MQTT %s: could not publish availability 'online': %s", self.target.masked,
                           self._mqtt.error_string(info.rc))
        with self._cond:
            self._connected = True
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
            self._cond.notify_all()
        LOGGER.info("MQTT connected to %s%s", self.target.masked,
                    f" (reconnect {self.reconnects}, {len(self._queue)} events queued)" if self.reconnects else "")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            if self._outstanding:
                self._resend_first = True  # paho re-sends these after CONNACK; nothing new before they are acked
        if was and not self._closing:
            LOGGER.warning("MQTT %s: disconnected (%s); queueing events, reconnecting with backoff",
                           self.target.masked, reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cond:
            if self._outstanding.pop(mid, None) is not None:
                self.sent += 1
            elif self._control.pop(mid, None) is None:
                self._early[mid] = time.monotonic()  # acked before publish() returned the mid to its caller
            if not self._outstanding:
                self._resend_first = False
            self._cond.notify_all()

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                 item: Optional[Tuple[str, bytes]] = None) -> Any:
        """``client.publish`` and match its mid with ``on_publish``: ``item`` (an event) becomes outstanding
        until acknowledged; other messages (availability, stats) are only matched so their acks are ignored.

        Never called with our lock held: paho calls ``on_publish`` with its own lock held.
        """
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        mqtt = self._mqtt
        with self._cond:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                return info
            now = time.monotonic()
            if self._early.pop(info.mid, None) is not None:  # already acknowledged
                if item is not None:
                    self.sent += 1
            elif item is not None:
                self._outstanding[info.mid] = item  # NO_CONN: paho keeps it and sends it after reconnecting
            else:
                self._control[info.mid] = now
            for book in (self._early, self._control):  # forget matches that never came (lost QoS 0, offline)
                for mid in [m for m, t in book.items() if now - t > 300.0]:
                    del book[mid]
        return info

    # ------------------------------------------------------------------------------------------- sending

    def start(self, streams: Sequence[StreamInfo] = ()) -> None:
        """Connect in the background (a broker down at start is retried like an outage) and start sending."""
        if self._started:
            return
        self._started = True
        try:
            self.client.connect_async(self.target.host, self.target.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:
            raise SinkError(f"MQTT {self.target.masked}: cannot connect ({mask_credentials(str(exc))})") from exc
        self.client.loop_start()
        self.start_worker()
        LOGGER.info("MQTT events to %s (QoS %d, queue %d)", self.target.masked, self.qos, self.queue_size)

    def events_topic(self, source_id: str) -> str:
        return f"{self.prefix}/{topic_segment(source_id)}/events"

    def stats_topic(self, source_id: str) -> str:
        return f"{self.prefix}/{topic_segment(source_id)}/stats"

    def send(self, event: Dict[str, Any]) -> None:
        """Queue ``event`` for ``{prefix}/{event["source"]}/events``; never blocks (drops the oldest when full)."""
        self.put((self.events_topic(str(event.get("source", "0"))),
                  json.dumps(event, separators=(",", ":")).encode("utf-8")))

    def on_drop(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log > 10.0:
            self._last_drop_log = now
            LOGGER.warning("MQTT %s: event queue full (%d): dropping the oldest (%d dropped so far)",
                           self.target.masked, self.queue_size, self.dropped)

    def send_stats(self, source_id: str, stats: Dict[str, Any]) -> None:
        """Publish a stats message now if connected (QoS 0, not queued)."""
        if self._connected and not self._closing:
            self._publish(self.stats_topic(source_id), json.dumps(stats, separators=(",", ":")).encode(), qos=0)

    def queue_stats(self) -> Dict[str, int]:
        stats = super().queue_stats()
        stats["reconnects"] = self.reconnects
        return stats

    def ready(self) -> bool:
        """Hand over only while connected, after paho re-sent what it held, below ``max_inflight``."""
        return self._connected and not self._resend_first and len(self._outstanding) < self.max_inflight

    def in_flight(self) -> int:
        return len(self._outstanding)

    def handle(self, item: Tuple[str, bytes]) -> Optional[bool]:
        """Publish one event (QoS > 0: counted ``sent`` on its acknowledgement, in ``on_publish``)."""
        mqtt = self._mqtt
        topic, payload = item
        info = self._publish(topic, payload, self.qos, item=item if self.qos else None)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho's queue is full (should not happen): retry later
            self.requeue_front(item)
            self._abort.wait(0.05)
            return None
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            LOGGER.error("MQTT %s: publish failed: %s", self.target.masked, mqtt.error_string(info.rc))
            return False
        return True if self.qos == 0 else None

    def close(self) -> None:
        """Flush for up to ``close_timeout_s``, publish ``offline`` (retained), disconnect."""
        if not self._started:
            return
        left = self.close_worker(join_s=2.0)
        with self._cond:
            unacked = len(self._outstanding)
            self.failed += unacked
            left += unacked
        if left:
            LOGGER.warning("MQTT %s: %d events not delivered within %.1f s at close", self.target.masked, left,
                           self.close_timeout_s)
        if self._connected:
            info = self._publish(self.availability_topic, b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError) as exc:  # not connected any more / queue full
                LOGGER.debug("MQTT offline message: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        LOGGER.info("MQTT %s closed: %d events sent, %d dropped, %d failed, %d reconnects", self.target.masked,
                    self.sent, self.dropped, self.failed, self.reconnects)


@register_sink("mqtt", "mqtts")
def _open_mqtt(target: str, ca: Optional[str] = None, cert: Optional[str] = None, key: Optional[str] = None,
               qos: int = 1, queue_size: int = 1000, max_inflight: int = 20, keepalive: int = 30,
               backoff_min_s: float = 1.0, backoff_max_s: float = 30.0, close_timeout_s: float = 5.0,
               client_id: Optional[str] = None) -> EventsSink:
    """``mqtt://[user:pass@]host[:port][/prefix]`` / ``mqtts://...``: events and stats to a broker (options:
    :class:`MqttTransport`; snapshots and periods: the ``events`` sink)."""
    return EventsSink([MqttTransport(target, ca=ca, cert=cert, key=key, qos=qos, queue_size=queue_size,
                                     max_inflight=max_inflight, keepalive=keepalive, backoff_min_s=backoff_min_s,
                                     backoff_max_s=backoff_max_s, close_timeout_s=close_timeout_s,
                                     client_id=client_id)])
