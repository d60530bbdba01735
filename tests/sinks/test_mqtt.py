"""MQTT events against a real mosquitto: types and counts, seq without gaps, snapshots before events,
availability and last will, a broker outage that loses nothing, the queue bound."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest

from conftest import Mosquitto, free_port, has_module
from fakes_events import ScriptedDetector, Subscriber, expected_counts, make_result

pytestmark = pytest.mark.skipif(not has_module("paho"), reason="paho-mqtt not installed (pip install -e '.[events]')")

from edge_detect.errors import ConfigError  # noqa: E402
from edge_detect.sinks import Sink  # noqa: E402
from edge_detect.sinks.events import EventsSink, validate_event  # noqa: E402
from edge_detect.sinks.mqtt import MqttTransport, parse_mqtt_url, topic_segment  # noqa: E402
from edge_detect.sinks.snapshots import SnapshotWriter  # noqa: E402
from edge_detect.stream.pipeline import Pipeline  # noqa: E402
from edge_detect.stream.sources import open_source  # noqa: E402


@pytest.mark.parametrize("url, host, port, prefix, tls, user, password", [
    ("mqtt://broker", "broker", 1883, "edge_detect", False, None, None),
    ("mqtt://broker:1884/site/cam", "broker", 1884, "site/cam", False, None, None),
    ("mqtts://u:p%40ss@10.0.0.2/x/", "10.0.0.2", 8883, "x", True, "u", "p@ss"),
    ("mqtt://user@h:1", "h", 1, "edge_detect", False, "user", None),
])
def test_parse_mqtt_url(url, host, port, prefix, tls, user, password):
    t = parse_mqtt_url(url)
    assert (t.host, t.port, t.prefix, t.tls, t.username, t.password) == (host, port, prefix, tls, user, password)
    assert "p@ss" not in repr(t) and "p%40ss" not in t.masked


@pytest.mark.parametrize("url, message", [
    ("http://h", "expected the scheme mqtt:// or mqtts://, got 'http'"),
    ("mqtt://", "expected a host"),
    ("mqtt://u:secret@h:notaport", "bad port"),
    ("mqtt://u:secret@h/a/#", "without wildcards"),
    ("mqtt://h/a//b", "without wildcards or empty levels"),
])
def test_parse_mqtt_url_errors_mask_credentials(url, message):
    with pytest.raises(ConfigError) as info:
        parse_mqtt_url(url)
    assert message in str(info.value) and "secret" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"qos": 3}, "expected 0, 1 or 2, got 3"),
    ({"queue_size": 0}, "expected >= 1"),
    ({"cert": "c.pem"}, "both a client certificate and its key"),
    ({"ca": "ca.pem"}, "use mqtts://"),
])
def test_transport_option_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MqttTransport("mqtt://u:secret@127.0.0.1:1", **kwargs)


def test_topic_segment():
    assert topic_segment("cam/1+#") == "cam_1__" and topic_segment("") == "_"


class Recorder(Sink):
    """Records when each frame reached the sinks (to measure the processing rate around an outage)."""

    name = "recorder"

    def __init__(self):
        self.times = []

    def write(self, result):
        self.times.append(time.perf_counter())


def _run(video, sinks, frames, infer_ms=0.0):
    return Pipeline([open_source(video)], ScriptedDetector(infer_ms), sinks, max_frames=frames, progress=False)


def test_events_types_counts_seq_snapshots_and_availability(mosquitto, video, tmp_path):
    sub = Subscriber(mosquitto.port)
    snaps = SnapshotWriter(tmp_path / "snaps")
    sink = EventsSink([MqttTransport(mosquitto.url, backoff_min_s=1)], snapshots=snaps, update_interval_s=0.05,
                      stats_interval_s=0.5)
    try:
        summary = _run(video, [sink], 60, infer_ms=5).run()
        assert summary.processed == 60
        counts = expected_counts(60)
        n_scripted = sum(counts.values())
        assert sub.wait_for(lambda: len(sub.on("/events")) >= sink.events_total and
                            "offline" in sub.on("/availability"))
        events = sub.on("vtest/events")
        assert len(events) == sink.events_total
        got = {}
        for ev in events:
            got[ev["type"]] = got.get(ev["type"], 0) + 1
            validate_event(ev)
        updates = got.pop("object_update", 0)
        assert got == counts == {"object_new": 1, "line_cross": 5, "zone_enter": 1, "zone_exit": 1, "object_end": 1}
        assert updates >= 1 and len(events) == n_scripted + updates
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # in order, no gap
        assert len({e["id"] for e in events}) == len(events)
        crossings = [e for e in events if e["type"] == "line_cross"]
        assert [e["frame"] for e in crossings] == [10, 20, 30, 40, 50]
        assert [e["direction"] for e in crossings] == ["in", "out", "in", "out", "in"]
        with sub.lock:
            arrived = [m for m in sub.messages if m[0].endswith("/events")]
        assert all(m[3] is True for m in arrived)  # the snapshot file existed when the event arrived
        assert all(e["snapshot"].startswith(str(tmp_path / "snaps" / "vtest")) for e in events)
        assert sub.on("/availability")[0] == "online" and sub.on("/availability")[-1] == "offline"
        stats = sub.on("vtest/stats")
        assert stats and stats[-1]["processed"] == 60 and stats[-1]["lines"] == {"door": {"in": 3, "out": 2}}
        assert stats[-1]["zones"] == {"lobby": {"enter": 1, "exit": 1}} and stats[-1]["queue"]["mqtt"]["dropped"] == 0
    finally:
        sub.close()


def test_availability_is_retained(mosquitto):
    t = MqttTransport(mosquitto.url + "/box1")
    t.start()
    late = None
    try:
        assert t.flush(10)
        time.sleep(0.3)
        late = Subscriber(mosquitto.port, "box1/availability")  # subscribes after the fact: retained message
        assert late.wait_for(lambda: late.on("availability") == ["online"], 10)
    finally:
        t.close()
        if late is not None:
            late.close()


def persistent_session(broker: Mosquitto, client_id: str, topic: str = "edge_detect/#") -> None:
    """Create a persistent QoS 1 subscription for ``client_id`` and stop the broker (session saved to disk)."""
    broker.start()
    sub = Subscriber(broker.port, topic, client_id=client_id, clean_session=False)
    sub.close()
    broker.stop()


def test_queue_bound_drops_oldest_then_delivers_in_order_when_broker_appears(mosquitto_bin, tmp_path):
    broker = Mosquitto(tmp_path / "b", persistence=True)
    persistent_session(broker, "bound-sub")  # the broker is down from here until the events are queued
    t = MqttTransport(broker.url, queue_size=5, backoff_min_s=1, backoff_max_s=1)
    sink = EventsSink([t], update_interval_s=0, stats_interval_s=0)
    sink.start([])
    sub = None
    try:
        t0 = time.perf_counter()
        for i in range(20):
            sink.write(make_result(i, 1000.0 + i, events=[{"type": "line_cross", "line": "l", "direction": "in",
                                                           "track_id": i, "class_name": "person"}]))
        # never waits for the absent broker: waiting would cost >= 1 s (backoff_min_s) per event, 20 s in all;
        # the bound is 2x below that, so a busy machine cannot fail it
        assert time.perf_counter() - t0 < 10.0
        assert t.queue_stats() == {"queued": 5, "sent": 0, "dropped": 15, "failed": 0, "reconnects": 0}
        broker.start()
        assert t.flush(20)
        sub = Subscriber(broker.port, "edge_detect/#", client_id="bound-sub", clean_session=False)
        assert sub.wait_for(lambda: len(sub.on("/events")) == 5, 20)
        assert [e["seq"] for e in sub.on("/events")] == [16, 17, 18, 19, 20]
        assert t.queue_stats() == {"queued": 0, "sent": 5, "dropped": 15, "failed": 0, "reconnects": 0}
    finally:
        sink.close()
        if sub is not None:
            sub.close()
        broker.stop()


def _outage_run(video, broker, sub, tmp_path, outage_s):
    """Run 795 frames at <= 100 FPS; stop the broker for ``outage_s`` once 150 frames are done.

    Returns (events the sink built, recorder, t_down, t_up, summary)."""
    rec = Recorder()
    sink = EventsSink([MqttTransport(broker.url, backoff_min_s=1, backoff_max_s=2, close_timeout_s=15)],
                      snapshots=SnapshotWriter(tmp_path / "snaps"), update_interval_s=0.2, stats_interval_s=1)
    pipe = _run(video, [sink, rec], 795, infer_ms=10)
    out = {}
    runner = threading.Thread(target=lambda: out.setdefault("summary", pipe.run()))
    runner.start()
    t_down = t_up = None
    try:
        deadline = time.time() + 60
        while len(rec.times) < 150:
            assert time.time() < deadline and runner.is_alive()
            time.sleep(0.01)
        if outage_s:
            broker.stop()
            t_down = time.perf_counter()
            time.sleep(outage_s)
            broker.start()
            t_up = time.perf_counter()
    finally:
        runner.join(120)
    return sink, rec, t_down, t_up, out.get("summary")


def test_broker_outage_loses_no_event_and_never_blocks_detection(mosquitto_bin, video, tmp_path):
    broker = Mosquitto(tmp_path / "b", persistence=True)
    persistent_session(broker, "outage-sub")
    broker.start()
    sub = Subscriber(broker.port, "edge_detect/+/events", client_id="outage-sub", clean_session=False)
    try:
        sink, rec, t_down, t_up, summary = _outage_run(video, broker, sub, tmp_path, 5.0)
        assert summary is not None and summary.processed == 795
        total = sink.builder.seq("vtest")
        assert total > 80  # a crossing every 10 frames, plus object updates
        assert sub.wait_for(lambda: len({e["id"] for e in sub.on("/events")}) >= total, 30)
        first = {}
        for e in sub.on("/events"):  # QoS 1 may redeliver: keep first arrivals
            first.setdefault(e["id"], e)
        seqs = [e["seq"] for e in first.values()]
        assert seqs == list(range(1, total + 1))  # every event, in order, after the reconnect
        assert sink.transports[0].queue_stats()["dropped"] == 0 and sink.transports[0].reconnects >= 1
        # detection went on during the outage: the frame rate in the outage window is not far below the rate
        # before it (a publish that waited for the broker would stall the loop for seconds)
        start = rec.times[0]
        before = sum(1 for t in rec.times if t < t_down) / (t_down - start)
        during = sum(1 for t in rec.times if t_down <= t < t_up) / (t_up - t_down)
        assert during >= 0.5 * before, (before, during)
    finally:
        sub.close()
        broker.stop()


@pytest.mark.perf
def test_outage_rate_within_10_percent_of_a_run_without_outage(mosquitto_bin, video, tmp_path):
    broker = Mosquitto(tmp_path / "b", persistence=True).start()
    try:
        rates = []
        for outage in (0.0, 5.0):
            _, rec, _, _, summary = _outage_run(video, broker, None, tmp_path / str(outage), outage)
            rates.append(summary.fps)
        assert rates[1] >= 0.9 * rates[0], rates
    finally:
        broker.stop()


def _certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found: cannot make test certificates")

    def sh(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
       "-subj", "/CN=edge-detect test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
           f"/CN={name}")
        sh("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
           f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


def test_mqtts_with_ca_and_client_certificate(mosquitto_bin, tmp_path):
    d = _certs(tmp_path)
    broker = Mosquitto(tmp_path / "b")
    tls_port = free_port()
    with broker.conf.open("a") as f:  # plain listener for the test's subscriber, TLS + client certs for the app
        f.write(f"listener {tls_port} 127.0.0.1\ncafile {d / 'ca.pem'}\ncertfile {d / 'server.pem'}\n"
                f"keyfile {d / 'server.key'}\nrequire_certificate true\n")
    broker.start()
    sub = Subscriber(broker.port, "tls/#")
    try:
        t = MqttTransport(f"mqtts://127.0.0.1:{tls_port}/tls", ca=str(d / "ca.pem"), cert=str(d / "client.pem"),
                          key=str(d / "client.key"))
        sink = EventsSink([t], update_interval_s=0, stats_interval_s=0)
        sink.start([])
        sink.write(make_result(0, 5.0, events=[{"type": "zone_enter", "zone": "z", "track_id": 1,
                                                "class_name": "person"}]))
        assert t.flush(10)
        sink.close()
        assert sub.wait_for(lambda: sub.on("availability")[-1:] == ["offline"], 10)
        assert [e["type"] for e in sub.on("cam/events")] == ["zone_enter"]
        # without the client certificate the broker refuses: nothing is sent, the event stays queued
        bad = MqttTransport(f"mqtts://127.0.0.1:{tls_port}/tls", ca=str(d / "ca.pem"), close_timeout_s=0.5)
        bad.start()
        bad.send({"source": "cam", "seq": 1})
        assert not bad.flush(2) and bad.queue_stats()["sent"] == 0
        bad.close()
        assert bad.queue_stats()["failed"] == 1
    finally:
        sub.close()
        broker.stop()


def test_online_again_after_broker_restart(mosquitto):
    t = MqttTransport(mosquitto.url, backoff_min_s=1, backoff_max_s=1, max_inflight=1)
    t.start()
    sub = None
    try:
        for i in range(3):  # paho holds the one event in flight when the broker goes: its queue must still
            t.send({"source": "cam", "seq": i + 1})  # take the availability message after the reconnect
        assert t.flush(10)
        mosquitto.stop()  # without persistence: the retained "online" is gone with it
        t.send({"source": "cam", "seq": 4})
        mosquitto.start()
        assert t.flush(20) and t.reconnects == 1
        sub = Subscriber(mosquitto.port, "edge_detect/availability")
        assert sub.wait_for(lambda: sub.on("availability") == ["online"], 10)
    finally:
        t.close()
        if sub is not None:
            sub.close()
