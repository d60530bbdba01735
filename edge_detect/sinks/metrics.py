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
``edge_detect_inference_calls_total``                      counter      frames the detector ran on (1, 4)
``edge_detect_frames_skipped_total``                       counter      frames a gate kept from the detector (1, 4)
``edge_detect_motion_frames_total``                        counter      frames with motion (``detect: motion``) (1)
``edge_detect_region_frames_total``                        counter      frames inferred in regions, not whole
                                                                        (``detect: {regions: ...}``; 1, 4)
``edge_detect_region_crops_total``                         counter      the crops those frames were cut into (1, 4)
``edge_detect_cpu_ms_per_frame{stage}``                    gauge        CPU ms per processed frame per stage, run
                                                                        so far (``source="all"``; 1)
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

(1) read at scrape time from the run context's stats (:meth:`~edge_detect.types.RunContext.stats`); events,
line crossings, zone transitions and occupancy likewise from the run's :class:`~edge_detect.events.Counts` (the
one place counts are kept). (2) the metrics sink is put last among the run's sinks
(:func:`~edge_detect.sinks.events.arrange_sinks`), so the time it receives a frame is when every other output has
it. (4) :mod:`edge_detect.stream.gating` (README "CPU boxes"); with a gate the stage histogram has a
``motion`` stage too. (3) every output that queues (the event transports ``mqtt``, ``webhook``; the threaded sinks); the queue is
shared by the sources, so these carry ``source="all"``.

Per-stage latencies of a frame are complete only after every sink returned, so a frame's stage histograms are
observed when the next frame of its source arrives (and at close).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Iterator, Sequence, Union

from edge_detect._optional import require
from edge_detect.errors import SinkError
from edge_detect.sinks.base import Sink, StreamInfo, register_sink
from edge_detect.stats import RateMeter
from edge_detect.types import Result, RunContext

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
        self._core = require("prometheus_client.core", "events", package="prometheus-client")
        self.context = RunContext.of(None)
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

    def start(self, context: Union[RunContext, Sequence[StreamInfo]]) -> None:
        self.context = RunContext.of(context)
        for s in self.context:
            self._processed.labels(s.source_id)
            self._fps.labels(s.source_id).set(0.0)

    def _observe_stages(self, frame: Any) -> None:
        for stage, ms in list(frame.timings.items()):
            self._stage.labels(frame.source_id, stage).observe(float(ms) / 1e3)

    def write(self, result: Result) -> None:
        if self.context.standalone:  # no pipeline publishes: count here what the bus would have
            self.context.counts.on_result(result)
        now = time.perf_counter()
        frame = result.frame
        sid = str(frame.source_id)
        if result.events_only:
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
        """Metric families read at scrape time from the run context: source counters, counts, output queues."""
        stats = self.context.stats()
        yield from self._source_families(stats.get("sources", {}))
        yield from self._cpu_family(stats.get("cpu_ms_per_frame") or {})
        yield from self._count_families(self.context.counts.snapshot()["sources"])
        yield from self._queue_families(stats.get("sinks", {}))

    def _source_families(self, sources: Dict[str, Dict[str, Any]]) -> Iterator[Any]:
        core = self._core
        fams = {key: core.CounterMetricFamily(f"edge_detect_{name}", doc, labels=["source"])
                for key, name, doc in (("read", "frames_read", "Frames decoded by the source"),
                                       ("dropped", "frames_dropped", "Stale live frames discarded"),
                                       ("corrupt", "frames_corrupt", "Frames that failed to decode"),
                                       ("reconnects", "source_reconnects", "Reconnections of the source"),
                                       ("inference_calls", "inference_calls", "Frames the detector ran on"),
                                       ("skipped_frames", "frames_skipped", "Frames a gate kept from the detector"),
                                       ("motion_frames", "motion_frames", "Frames with motion (detect: motion)"))}
        regions = {key: core.CounterMetricFamily(f"edge_detect_region_{key}", doc, labels=["source"])
                   for key, doc in (("frames", "Frames inferred in regions (region inference)"),
                                    ("crops", "Crops the frames inferred in regions were cut into"))}
        for sid, src in sources.items():
            for key, fam in fams.items():
                fam.add_metric([str(sid)], float(src.get(key, 0) or 0))
            cut = (src.get("detect") or {}).get("regions") or {}  # sources with region inference only
            for key in cut.keys() & regions.keys():
                regions[key].add_metric([str(sid)], float(cut[key]))
        yield from fams.values()
        yield from regions.values()

    def _cpu_family(self, cpu: Dict[str, float]) -> Iterator[Any]:
        fam = self._core.GaugeMetricFamily("edge_detect_cpu_ms_per_frame", "CPU ms per processed frame per stage",
                                           labels=["source", "stage"])
        for stage, ms in cpu.items():
            fam.add_metric(["all", stage], float(ms))
        yield fam

    def _count_families(self, counted: Dict[str, Dict[str, Any]]) -> Iterator[Any]:
        core = self._core
        events = core.CounterMetricFamily("edge_detect_events", "Events by type", labels=["source", "type"])
        lines = core.CounterMetricFamily("edge_detect_line_crossings", "Line crossings",
                                         labels=["source", "line", "direction"])
        zones = core.CounterMetricFamily("edge_detect_zone_transitions", "Zone enters and exits",
                                         labels=["source", "zone", "transition"])
        occupancy = core.GaugeMetricFamily("edge_detect_zone_occupancy", "Objects in a zone (enters - exits)",
                                           labels=["source", "zone"])
        for sid, c in counted.items():
            for etype, n in c["events"].items():
                events.add_metric([sid, etype], float(n))
            for name, line in c["lines"].items():
                for direction in ("in", "out"):
                    lines.add_metric([sid, name, direction], float(line[direction]))
            for name, zone in c["zones"].items():
                zones.add_metric([sid, name, "enter"], float(zone["entered"]))
                zones.add_metric([sid, name, "exit"], float(zone["exited"]))
                occupancy.add_metric([sid, name], float(zone["occupancy"]))
        yield from (events, lines, zones, occupancy)

    def _queue_families(self, outputs: Dict[str, Dict[str, int]]) -> Iterator[Any]:
        core = self._core
        depth = core.GaugeMetricFamily("edge_detect_event_queue_depth", "Items waiting in an output's queue",
                                       labels=["source", "transport"])
        counters = {key: core.CounterMetricFamily(f"edge_detect_{name}", doc, labels=["source", "transport"])
                    for key, name, doc in (("dropped", "event_queue_dropped", "Items dropped, queue full"),
                                           ("sent", "events_sent", "Items delivered"),
                                           ("failed", "events_failed", "Items given up"))}
        for output, st in outputs.items():
            depth.add_metric(["all", output], float(st.get("queued", 0)))
            for key, fam in counters.items():
                fam.add_metric(["all", output], float(st.get(key, 0)))
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
