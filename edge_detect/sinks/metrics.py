"""Prometheus metrics of a run (prometheus-client), served over HTTP: ``--metrics-port N [--metrics-host H]``.

Each :class:`MetricsSink` has its own ``CollectorRegistry`` (not the process-global one), so two runs in one
process do not collide. Served at ``http://HOST:PORT/metrics`` (``127.0.0.1`` unless ``host`` says otherwise).

Metrics (every one labelled by ``source``):

=========================================================  ===========  ===========================================
name                                                       type         what
=========================================================  ===========  ===========================================
``edge_detect_frames_read_total``                          counter      frames decoded by the source (1)
``edge_detect_frames_processed_total``                     counter      frames through every stage
``edge_detect_frames_dropped_total``                       counter      stale live frames discarded (1)
``edge_detect_frames_corrupt_total``                       counter      frames that failed to decode (1)
``edge_detect_source_reconnects_total``                    counter      reconnections of the source (1)
``edge_detect_stage_latency_seconds{stage}``               histogram    decode, preprocess, inference, postprocess,
                                                                        sinks (and any other stage the pipeline
                                                                        times)
``edge_detect_glass_to_glass_latency_seconds``             histogram    capture -> every other output written (2)
``edge_detect_fps``                                        gauge        processed frames/s over the last 5 s
``edge_detect_events_total{type}``                         counter      events by type
``edge_detect_line_crossings_total{line,direction}``       counter      ``line_cross`` events
``edge_detect_zone_transitions_total{zone,transition}``    counter      ``zone_enter`` / ``zone_exit`` events
``edge_detect_zone_occupancy{zone}``                       gauge        enters - exits
``edge_detect_event_queue_depth{transport}``               gauge        events waiting in a transport's queue (3)
``edge_detect_event_queue_dropped_total{transport}``       counter      events dropped because the queue was full
``edge_detect_events_sent_total{transport}``               counter      events delivered by the transport
``edge_detect_events_failed_total{transport}``             counter      events given up (retries exhausted, close)
=========================================================  ===========  ===========================================

(1) read from the pipeline's sources at scrape time (:meth:`MetricsSink.attach`). (2) the metrics sink is the
last sink of the run, so the time it receives a frame is when every other output has it. (3) transports of the
run's :class:`~edge_detect.sinks.events.EventsSink` (``mqtt``, ``webhook``); the queue is shared by the
sources, so these carry ``source="all"``.

Per-stage latencies of a frame are complete only after every sink returned, so a frame's stage histograms are
observed when the next frame of its source arrives (and at close).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Iterator, Sequence

from edge_detect._optional import require
from edge_detect.errors import SinkError
from edge_detect.sinks.base import Sink, StreamInfo, register_sink
from edge_detect.sinks.events import frame_events
from edge_detect.stats import RateMeter

__all__ = ["MetricsSink", "LATENCY_BUCKETS_S"]

LOGGER = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class MetricsSink(Sink):
    """Serve Prometheus metrics of the run on ``host:port`` (see module doc).

    Args:
        port: TCP port (0 = any free port; read :attr:`port` afterwards).
        host: bind address (default loopback).

    Raises:
        SinkError: the address cannot be bound. MissingDependencyError: prometheus-client missing.
    """

    name = "metrics"
    runs_last = True  # glass-to-glass = when this sink gets the frame (see module doc)

    def __init__(self, port: int = 9100, host: str = "127.0.0.1") -> None:
        prom = require("prometheus_client", "events", package="prometheus-client")
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self._processed = prom.Counter("edge_detect_frames_processed", "Frames through every stage",
                                       ["source"], registry=r)
        self._stage = prom.Histogram("edge_detect_stage_latency_seconds", "Per-stage time of a frame",
                                     ["source", "stage"], buckets=LATENCY_BUCKETS_S, registry=r)
        self._g2g = prom.Histogram("edge_detect_glass_to_glass_latency_seconds",
                                   "Capture to every other output written", ["source"],
                                   buckets=LATENCY_BUCKETS_S, registry=r)
        self._fps = prom.Gauge("edge_detect_fps", "Processed frames per second over the last 5 s", ["source"],
                               registry=r)
        self._events = prom.Counter("edge_detect_events", "Events by type", ["source", "type"], registry=r)
        self._lines = prom.Counter("edge_detect_line_crossings", "Line crossings",
                                   ["source", "line", "direction"], registry=r)
        self._zones = prom.Counter("edge_detect_zone_transitions", "Zone enters and exits",
                                   ["source", "zone", "transition"], registry=r)
        self._occupancy = prom.Gauge("edge_detect_zone_occupancy", "Objects in a zone (enters - exits)",
                                     ["source", "zone"], registry=r)
        self._core = require("prometheus_client.core", "events", package="prometheus-client")
        self._pipeline: Any = None
        self._rates: Dict[str, RateMeter] = {}
        self._pending: Dict[str, Any] = {}  # source -> frame whose stage timings are not observed yet
        self._lock = threading.Lock()
        r.register(_RunCollector(self))
        try:
            self._server, self._thread = prom.start_http_server(int(port), addr=host, registry=r)
        except OSError as exc:
            raise SinkError(f"metrics server: cannot listen on {host}:{port} ({exc})") from exc
        self.host, self.port = host, int(self._server.server_address[1])
        LOGGER.info("Prometheus metrics on %s", self.url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def attach(self, pipeline: Any) -> None:
        """Export the sources' capture counters and the event transports' queues of ``pipeline``."""
        self._pipeline = pipeline

    def start(self, streams: Sequence[StreamInfo]) -> None:
        for s in streams:
            self._processed.labels(s.source_id)
            self._fps.labels(s.source_id).set(0.0)

    def _observe_stages(self, frame: Any) -> None:
        for stage, ms in list(frame.timings.items()):
            self._stage.labels(frame.source_id, stage).observe(float(ms) / 1e3)

    def write(self, result: Any) -> None:
        now = time.perf_counter()
        frame = result.frame
        sid = str(frame.source_id)
        for ev in frame_events(result):
            etype = str(ev.get("type"))
            self._events.labels(sid, etype).inc()
            if etype == "line_cross":
                self._lines.labels(sid, str(ev.get("line")), str(ev.get("direction"))).inc()
            elif etype in ("zone_enter", "zone_exit"):
                zone = str(ev.get("zone"))
                self._zones.labels(sid, zone, etype[5:]).inc()
                self._occupancy.labels(sid, zone).inc(1 if etype == "zone_enter" else -1)
        if getattr(result, "final", False):
            return
        self._processed.labels(sid).inc()
        if frame.capture_time:
            self._g2g.labels(sid).observe(max(0.0, now - frame.capture_time))
        with self._lock:
            rate = self._rates.setdefault(sid, RateMeter(5.0))
            previous = self._pending.get(sid)
            self._pending[sid] = frame
        rate.tick(now)
        self._fps.labels(sid).set(rate.rate)
        if previous is not None:
            self._observe_stages(previous)

    def collect_run(self) -> Iterator[Any]:
        """Metric families read at scrape time from the pipeline's sources and the event transports."""
        core = self._core
        fams = {key: core.CounterMetricFamily(f"edge_detect_{name}", doc, labels=["source"])
                for key, name, doc in (("read", "frames_read", "Frames decoded by the source"),
                                       ("dropped", "frames_dropped", "Stale live frames discarded"),
                                       ("corrupt", "frames_corrupt", "Frames that failed to decode"),
                                       ("reconnects", "source_reconnects", "Reconnections of the source"))}
        for src in getattr(self._pipeline, "sources", ()) or ():
            for key, fam in fams.items():
                fam.add_metric([str(src.source_id)], float(getattr(src.stats, key)))
        yield from fams.values()
        depth = core.GaugeMetricFamily("edge_detect_event_queue_depth", "Events waiting in a transport queue",
                                       labels=["source", "transport"])
        counters = {key: core.CounterMetricFamily(f"edge_detect_{name}", doc, labels=["source", "transport"])
                    for key, name, doc in (("dropped", "event_queue_dropped", "Events dropped, queue full"),
                                           ("sent", "events_sent", "Events delivered"),
                                           ("failed", "events_failed", "Events given up"))}
        for sink in getattr(self._pipeline, "sinks", ()) or ():
            stats_of = getattr(sink, "queue_stats", None)
            if stats_of is None:
                continue
            for transport, st in stats_of().items():
                depth.add_metric(["all", transport], float(st.get("queued", 0)))
                for key, fam in counters.items():
                    fam.add_metric(["all", transport], float(st.get(key, 0)))
        yield depth
        yield from counters.values()

    def close(self) -> None:
        """Observe the last frames' stages, stop serving and release the port."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for frame in pending:
            self._observe_stages(frame)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)


class _RunCollector:
    """Adapter registering :meth:`MetricsSink.collect_run` with the registry."""

    def __init__(self, sink: MetricsSink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[Any]:
        return self._sink.collect_run()

    def describe(self) -> list:
        return []


@register_sink("metrics")
def _open_metrics(target: str) -> MetricsSink:
    """``metrics://HOST:PORT`` or ``metrics://PORT`` (host ``127.0.0.1``)."""
    import re

    m = re.fullmatch(r"metrics://(?:([^:/]+|\[[0-9a-fA-F:]+\]):)?(\d+)/?", target, flags=re.IGNORECASE)
    if m is None or int(m.group(2)) > 65535:
        raise SinkError(f"metrics sink {target!r}: expected 'metrics://HOST:PORT' or 'metrics://PORT' "
                        "with a port in 0..65535")
    return MetricsSink(int(m.group(2)), (m.group(1) or "127.0.0.1").strip("[]"))
