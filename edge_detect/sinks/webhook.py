"""Webhook transport of events: each enveloped event POSTed as JSON (stdlib ``urllib``), off the capture loop.

``--webhook URL`` (``http://`` or ``https://``; ``user:pass@`` in the URL becomes HTTP basic auth and is
masked in logs). One request per event, ``Content-Type: application/json``, body = the event (the same JSON
as on MQTT, see :mod:`edge_detect.sinks.events`), in ``seq`` order.

* :meth:`WebhookTransport.send` puts the event in the bounded queue of its
  :class:`~edge_detect.sinks.threaded.QueueWorker` (``queue_size`` waiting events, policy ``drop_oldest``: full,
  the oldest waiting one is dropped and counted) and returns at once; the worker thread takes one event at a
  time out of the queue and POSTs it.
* A 2xx answer delivers the event. A connection error, a timeout, 408, 429 or 5xx is retried with
  exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``) up to ``retries`` times; the
  event is then given up (``failed``). Other 4xx answers are not retried (``failed``). The event at the head
  of the queue is retried before the next one is sent, so order is kept.
"""
from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from edge_detect.errors import ConfigError
from edge_detect.sinks.base import StreamInfo, register_sink
from edge_detect.sinks.events import EventsSink, EventTransport
from edge_detect.sinks.threaded import QueueWorker
from edge_detect.urls import mask_credentials

__all__ = ["WebhookTransport"]

LOGGER = logging.getLogger(__name__)
_RETRY_STATUS = (408, 429)


class WebhookTransport(QueueWorker, EventTransport):
    """POST events to ``url`` from a background thread (see module doc).

    Args:
        url: ``http(s)://[user:pass@]host[:port]/path``.
        timeout_s: per-request timeout.
        retries: retries of one event after its first failure (so ``retries + 1`` attempts at most).
        backoff_initial_s, backoff_max_s: wait before the first retry, doubled per retry up to the max.
        queue_size: events waiting at most (oldest dropped beyond).
        close_timeout_s: on close, time allowed to deliver what is queued.
        headers: extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``; values are never logged).

    Raises:
        ConfigError: not an http(s) URL, or bad sizes / times.
    """

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0, retries: int = 5, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, queue_size: int = 1000, close_timeout_s: float = 5.0,
                 headers: Optional[Dict[str, str]] = None) -> None:
        self.masked = mask_credentials(url)
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhook URL {self.masked}: expected http(s)://host[:port]/path, got scheme "
                              f"'{parts.scheme}'{'' if parts.hostname else ' and no host'}")
        if timeout_s <= 0 or retries < 0 or queue_size < 1 or backoff_initial_s < 0 or backoff_max_s < 0:
            raise ConfigError(f"webhook {self.masked}: expected timeout_s > 0, retries >= 0, queue_size >= 1 and "
                              f"backoffs >= 0, got {timeout_s}, {retries}, {queue_size}, "
                              f"{backoff_initial_s}/{backoff_max_s}")
        self.headers = {"Content-Type": "application/json", "User-Agent": "edge-detect", **(headers or {})}
        if parts.username is not None:
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
            parts = parts._replace(netloc=netloc)
        self._url = urlunsplit(parts)
        QueueWorker.__init__(self, queue_size, "drop_oldest", close_timeout_s=close_timeout_s)
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.backoff_initial_s, self.backoff_max_s = float(backoff_initial_s), float(backoff_max_s)
        self.attempts = 0
        self._started = False
        self._failing = False  # an outage: its first failures are logged at warning/error level, the rest at debug
        self._given_up = 0

    @property
    def worker_name(self) -> str:  # type: ignore[override]
        return f"webhook {self.masked}"

    def __repr__(self) -> str:
        return f"WebhookTransport({self.masked!r})"

    def start(self, streams: Sequence[StreamInfo] = ()) -> None:
        if not self._started:
            self._started = True
            self.start_worker()
            LOGGER.info("webhook events to %s", self.masked)

    def send(self, event: Dict[str, Any]) -> None:
        """Queue one event; never blocks (drops the oldest when full)."""
        self.put(json.dumps(event, separators=(",", ":")).encode("utf-8"))

    def _post(self, body: bytes) -> Optional[str]:
        """One POST; ``None`` when delivered, else the reason; raises ``_Permanent`` for non-retryable answers."""
        req = urllib.request.Request(self._url, data=body, headers=self.headers, method="POST")
        self.attempts += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
                return None
        except urllib.error.HTTPError as exc:
            if exc.code in _RETRY_STATUS or exc.code >= 500:
                return f"HTTP {exc.code}"
            raise _Permanent(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timeout (socket.timeout is OSError)
            return mask_credentials(str(getattr(exc, "reason", exc)))

    def handle(self, body: bytes) -> bool:
        """POST one event, retrying with backoff (see module doc); ``True`` when delivered."""
        delay = self.backoff_initial_s
        for attempt in range(self.retries + 1):
            try:
                reason = self._post(body)
            except _Permanent as exc:
                LOGGER.error("webhook %s: event rejected (%s), not retried", self.masked, exc)
                return False
            if reason is None:
                self._failing = False
                return True
            if attempt == self.retries or self._abort.is_set():
                self._given_up += 1
                level = logging.ERROR if self._given_up == 1 or self._given_up % 100 == 0 else logging.DEBUG
                LOGGER.log(level, "webhook %s: giving up an event after %d attempts (%s; %d given up so far)",
                           self.masked, attempt + 1, reason, self._given_up)
                self._failing = True
                return False
            LOGGER.log(logging.DEBUG if self._failing else logging.WARNING, "webhook %s: %s; retry %d/%d in %.1f s",
                       self.masked, reason, attempt + 1, self.retries, delay)
            if self._abort.wait(delay):
                return False
            delay = min(max(delay * 2, 0.05), self.backoff_max_s)
        return False

    def close(self) -> None:
        """Deliver for up to ``close_timeout_s``, then stop (undelivered events counted as ``failed``)."""
        if not self._started:
            return
        left = self.close_worker(join_s=self.timeout_s + 1.0)
        if left:
            LOGGER.warning("webhook %s: %d events not delivered within %.1f s at close", self.masked, left,
                           self.close_timeout_s)
        LOGGER.info("webhook %s closed: %d events sent, %d dropped, %d failed", self.masked, self.sent,
                    self.dropped, self.failed)


class _Permanent(Exception):
    """A non-retryable HTTP answer (4xx other than 408 / 429)."""


@register_sink("webhook+http", "webhook+https")
def _open_webhook(target: str, timeout_s: float = 5.0, retries: int = 5, backoff_initial_s: float = 0.5,
                  backoff_max_s: float = 30.0, queue_size: int = 1000, close_timeout_s: float = 5.0,
                  headers: Optional[Dict[str, str]] = None) -> EventsSink:
    """``webhook+http(s)://host/path``: events POSTed to ``http(s)://host/path`` (options:
    :class:`WebhookTransport`)."""
    url = target.split("+", 1)[1] if target.lower().startswith("webhook+") else target
    return EventsSink([WebhookTransport(url, timeout_s=timeout_s, retries=retries,
                                        backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s,
                                        queue_size=queue_size, close_timeout_s=close_timeout_s, headers=headers)])
