"""One counting place: the run summary, the MQTT stats message and the Prometheus metrics of one run agree."""
from __future__ import annotations

import urllib.request

import pytest

from conftest import has_module
from fakes_events import ScriptedDetector, Subscriber

from edge_detect.sinks import open_sink
from edge_detect.sinks.base import Sink
from edge_detect.sinks.events import EventsSink, arrange_sinks
from edge_detect.sinks.mqtt import MqttTransport
from edge_detect.stream.pipeline import Pipeline
from edge_detect.stream.sources import open_source

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install -e '.[events]')")


@pytest.mark.skipif(not has_module("prometheus_client"), reason="prometheus-client not installed")
def test_summary_mqtt_and_metrics_agree_on_counts(mosquitto, video):
    from prometheus_client.parser import text_string_to_metric_families

    sub = Subscriber(mosquitto.port)
    metrics = open_sink("metrics://127.0.0.1:0")
    hub = EventsSink([MqttTransport(mosquitto.url)], update_interval_s=0, stats_interval_s=60)
    scraped = {}

    class ScrapeAtClose(Sink):  # the metrics server stops with the run: scrape when every frame was counted
        name = "scrape"

        def close(self):
            with urllib.request.urlopen(metrics.url, timeout=5) as resp:
                scraped["text"] = resp.read().decode()

        def write(self, result):
            pass

    summary = Pipeline([open_source(video)], ScriptedDetector(), arrange_sinks([ScrapeAtClose(), hub, metrics]),
                       max_frames=60, progress=False).run().to_dict()
    try:
        assert sub.wait_for(lambda: sub.on("vtest/stats"))  # the last stats message is sent at close
        stats = sub.on("vtest/stats")[-1]
    finally:
        sub.close()
    fams = {f.name: f for f in text_string_to_metric_families(scraped["text"])}

    def metric(name, suffix="_total", **labels):
        return {tuple(s.labels[k] for k in labels): s.value for s in fams[name].samples
                if s.name == name + suffix and all(s.labels.get(k, v) == v or v is None for k, v in labels.items())}

    # the scripted run: crossings of "door" at frames 10..50 (in, out, in, out, in); "lobby" entered at 25, left at 45
    assert summary["lines"] == {"door": {"in": 3, "out": 2, "by_class": {"person": {"in": 3, "out": 2}}}}
    assert stats["lines"] == {"door": {"in": 3, "out": 2}}
    assert metric("edge_detect_line_crossings", line="door", direction=None) == {("door", "in"): 3, ("door", "out"): 2}
    assert summary["zones"] == {"lobby": {"entered": 1, "exited": 1, "occupancy": 0, "max_occupancy": 1}}
    assert stats["zones"] == {"lobby": {"enter": 1, "exit": 1}}
    assert metric("edge_detect_zone_transitions", transition=None) == {("enter",): 1, ("exit",): 1}
    assert metric("edge_detect_zone_occupancy", "", zone="lobby") == {("lobby",): 0}
    assert {k[0]: v for k, v in metric("edge_detect_events", type=None).items()} == \
        {k: v for k, v in stats["events"].items()} == {"object_new": 1, "line_cross": 5, "zone_enter": 1,
                                                       "zone_exit": 1, "object_end": 1}
    assert summary["sinks"]["mqtt"]["sent"] == 9 and summary["sinks"]["mqtt"]["dropped"] == 0
