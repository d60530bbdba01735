"""Webhook transport against a loopback HTTP server that fails first; Prometheus metrics scraped and parsed."""
from __future__ import annotations

import time
import urllib.request

import pytest

from conftest import has_module
from fakes_events import Hook, ScriptedDetector, make_result

from edge_detect.errors import ConfigError
from edge_detect.sinks import open_sink
from edge_detect.sinks.base import Sink
from edge_detect.sinks.events import EventsSink, arrange_sinks
from edge_detect.sinks.webhook import WebhookTransport
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.sources import open_source


def _events(n):
    return [make_result(i, 100.0 + i, events=[{"type": "line_cross", "line": "l", "direction": "in", "track_id": i,
                                               "class_name": "person"}]) for i in range(n)]


@pytest.mark.parametrize("timed", [False, pytest.param(True, marks=pytest.mark.perf)])
def test_webhook_write_never_waits_for_the_server(timed):
    """The server hangs on the first request: 6 writes return while it still hangs (no retry has been made yet;
    a write that waited would have seen the 503 and retried). Timed (perf): they return in well under the 8 s."""
    hook = Hook(fail=1, hang_s=8 if timed else 3)
    t = WebhookTransport(hook.url, retries=2, backoff_initial_s=0.05, backoff_max_s=0.1)
    sink = EventsSink([t], update_interval_s=0, stats_interval_s=0)
    sink.start([])
    t0 = time.perf_counter()
    for r in _events(6):
        sink.write(r)
    if timed:
        assert time.perf_counter() - t0 < 4.0
    assert hook.requests <= 1 and hook.bodies == []  # the first request is still hanging
    assert t.flush(30)
    sink.close()
    assert [b["seq"] for b in hook.bodies] == [1, 2, 3, 4, 5, 6]  # the hung request was retried: nothing lost


def test_webhook_retries_with_backoff_and_keeps_order():
    hook = Hook(fail=3)
    t = WebhookTransport(hook.url.replace("http://", "http://bob:s3cret@"), retries=5, backoff_initial_s=0.05,
                         backoff_max_s=0.2)
    sink = EventsSink([t], update_interval_s=0, stats_interval_s=0)
    sink.start([])
    for r in _events(6):
        sink.write(r)
    assert t.flush(20)
    sink.close()
    assert [b["seq"] for b in hook.bodies] == [1, 2, 3, 4, 5, 6]
    assert hook.requests == 9 and t.queue_stats() == {"queued": 0, "sent": 6, "dropped": 0, "failed": 0}
    assert set(hook.auth) == {"Basic Ym9iOnMzY3JldA=="}  # bob:s3cret
    assert "s3cret" not in repr(t)
    hook.shutdown()


def test_webhook_gives_up_after_retries_and_on_4xx():
    hook = Hook(fail=100)
    t = WebhookTransport(hook.url, retries=2, backoff_initial_s=0.01, backoff_max_s=0.01)
    t.start()
    t.send({"seq": 1})
    assert t.flush(10)
    assert hook.requests == 3 and t.queue_stats()["failed"] == 1
    hook.status = 400
    t.send({"seq": 2})
    assert t.flush(10)
    assert hook.requests == 4 and t.queue_stats()["failed"] == 2  # 400: not retried
    t.close()
    hook.shutdown()


def test_webhook_timeout_then_queue_bound():
    hook = Hook(fail=1, hang_s=1.0)
    t = WebhookTransport(hook.url, timeout_s=0.2, retries=3, backoff_initial_s=0.01, queue_size=3)
    t.start()
    for i in range(10):
        t.send({"seq": i + 1})
    assert t.flush(20)
    t.close()
    got = [b["seq"] for b in hook.bodies]
    assert t.queue_stats()["dropped"] == len(range(10)) - len(got) and got == sorted(got) and got[-1] == 10
    assert 3 <= len(got) <= 4  # the one in flight plus the 3 newest
    hook.shutdown()


@pytest.mark.parametrize("url", ["ftp://h/x", "http://", "mqtt://h"])
def test_webhook_bad_url(url):
    with pytest.raises(ConfigError, match="expected http"):
        WebhookTransport(url)


@pytest.mark.skipif(not has_module("prometheus_client"), reason="prometheus-client not installed")
def test_metrics_endpoint_scraped_and_parsed(video):
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(2):  # a private registry per run: two runs in one process do not collide
        metrics = open_sink("metrics://127.0.0.1:0")
        hub = EventsSink([WebhookTransport("http://127.0.0.1:9/never", retries=0, close_timeout_s=0.1)],
                         update_interval_s=0, stats_interval_s=0)
        scraped = {}

        class Scrape(Sink):  # scrape while the run is on (the server stops at close)
            name = "scrape"

            def write(self, result):
                if result.frame.index == 59:
                    with urllib.request.urlopen(metrics.url, timeout=5) as resp:
                        scraped["text"] = resp.read().decode()

        sinks = arrange_sinks([metrics, Scrape(), hub])
        assert sinks[-1] is metrics
        Pipeline([open_source(video)], ScriptedDetector(), sinks, max_frames=60, progress=False).run()
        fams = {f.name: f for f in text_string_to_metric_families(scraped["text"])}

        def value(name, suffix="_total", **labels):
            fam = fams[name]
            hits = [s.value for s in fam.samples if s.name == name + suffix and
                    all(s.labels.get(k) == v for k, v in labels.items())]
            assert len(hits) == 1, (name, labels, fam.samples)
            return hits[0]

        assert value("edge_detect_frames_processed", source="vtest") == 59  # frame 59 is being written
        assert value("edge_detect_frames_read", source="vtest") >= 60
        assert value("edge_detect_frames_dropped", source="vtest") == 0
        assert value("edge_detect_frames_corrupt", source="vtest") == 0
        assert value("edge_detect_source_reconnects", source="vtest") == 0
        assert value("edge_detect_line_crossings", source="vtest", line="door", direction="in") == 3
        assert value("edge_detect_line_crossings", source="vtest", line="door", direction="out") == 2
        assert value("edge_detect_zone_transitions", source="vtest", zone="lobby", transition="enter") == 1
        assert value("edge_detect_zone_occupancy", "", source="vtest", zone="lobby") == 0
        assert value("edge_detect_events", source="vtest", type="line_cross") == 5
        assert value("edge_detect_glass_to_glass_latency_seconds", "_count", source="vtest") == 59
        assert value("edge_detect_stage_latency_seconds", "_count", source="vtest", stage="inference") == 58
        assert value("edge_detect_fps", "", source="vtest") > 0
        assert value("edge_detect_event_queue_depth", "", source="all", transport="webhook") >= 0
        assert value("edge_detect_event_queue_dropped", source="all", transport="webhook") == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(metrics.url, timeout=2)  # closed with the run
