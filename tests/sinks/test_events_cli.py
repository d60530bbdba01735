"""``edge-detect run`` with --mqtt / --snapshots / --webhook / --metrics-port: flags, config keys, masked
credentials, and the last will when the app is SIGKILLed."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, has_module
from fakes_events import Hook, Subscriber

pytestmark = [pytest.mark.skipif(not has_module("paho"), reason="paho-mqtt not installed (pip install -e '.[events]')"),
              pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime not installed")]

from edge_detect.app_config import load_app_config  # noqa: E402
from edge_detect.cli import main  # noqa: E402
from edge_detect.metadata import ModelMetadata  # noqa: E402

NAMES = ["person"] + [f"n{i}" for i in range(1, 80)]


@pytest.fixture(scope="module")
def replay(onnx_builder, reference, tmp_path_factory):
    """Static 640 model returning the reference bus prediction for any frame (same boxes every frame)."""
    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("ev") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=NAMES).to_dict())


def test_cli_run_publishes_events_snapshots_and_masks_credentials(mosquitto, replay, video, tmp_path, capsys,
                                                                   caplog):
    caplog.set_level(logging.INFO)
    cfg = tmp_path / "app.yaml"
    cfg.write_text("sinks:\n  - {spec: events, options: {update_interval_s: 0.05, snapshot_keep: 3}}\n")
    sub = Subscriber(mosquitto.port, "site/#")
    hook = Hook(fail=2)
    url = f"mqtt://user:hunter2@127.0.0.1:{mosquitto.port}/site"
    try:
        rc = main(["run", "--config", str(cfg), "--model", str(replay), "--source", str(video), "--track",
                   "--max-frames", "40", "--no-show", "--no-progress", "--threads", "1", "--mqtt", url,
                   "--snapshots", str(tmp_path / "snaps"), "--summary-json", str(tmp_path / "s.json"),
                   "--webhook", hook.url.replace("http://", "http://bob:hunter2@")])
        assert rc == 0
        assert sub.wait_for(lambda: sub.on("availability")[-1:] == ["offline"], 15)
        events = sub.on("vtest/events")
        types = [e["type"] for e in events]  # --track: ByteTrack lifecycle events plus our object_update
        assert set(types) == {"object_new", "object_update", "object_end"}
        assert types.count("object_new") == types.count("object_end")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert sorted(p.name for p in (tmp_path / "snaps" / "vtest").iterdir()) == \
            sorted({os.path.basename(e["snapshot"]) for e in events})[-3:]  # retention: 3 frames kept
        assert sub.on("vtest/stats")[-1]["processed"] == 40
        assert hook.bodies == events  # the same events (ids, seqs), delivered after 2 failed POSTs
    finally:
        sub.close()
        hook.shutdown()
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text + (tmp_path / "s.json").read_text()
    assert "mqtt://***@127.0.0.1" in caplog.text and "hunter2" not in text


def test_an_event_has_one_id_in_jsonl_on_mqtt_and_in_its_clip(mosquitto, replay, video, tmp_path):
    """Ids are assigned once, by the pipeline: the JSONL line, the MQTT envelope and the recorder's clip_saved
    (which reaches both as an event of its own) name the same event alike."""
    import json

    cfg = tmp_path / "app.yaml"
    cfg.write_text("outputs:\n  record: {on: ['object_start:person'], pre_s: 1, post_s: 1}\n")
    sub = Subscriber(mosquitto.port, "edge_detect/#")
    try:
        rc = main(["--quiet", "run", "--config", str(cfg), "--model", str(replay), "--source", str(video), "--track",
                   "--max-frames", "40", "--no-show", "--no-progress", "--threads", "1", "--mqtt", mosquitto.url,
                   "--save-jsonl", str(tmp_path / "out.jsonl"), "--record", str(tmp_path / "clips")])
        assert rc == 0
        lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        jsonl = [e for x in lines for e in x["events"]]
        assert sub.wait_for(lambda: sub.on("availability")[-1:] == ["offline"], 15)
    finally:
        sub.close()
    mqtt = [e for e in sub.on("vtest/events") if e["type"] != "object_update"]  # object_update: MQTT's own
    assert [(e["type"], e["id"]) for e in mqtt] == [(e["type"], e["id"]) for e in jsonl]
    assert len({e["id"] for e in jsonl}) == len(jsonl)  # unique
    clips = [e for e in mqtt if e["type"] == "clip_saved"]
    people = [e["id"] for e in jsonl if e["type"] == "object_new" and e["class_name"] == "person"]
    assert clips and all(set(c["events"]) <= set(people) for c in clips) and clips[0]["trigger"] == people[0]
    assert all(os.path.isfile(c["path"]) for c in clips)
    from edge_detect.sinks.events import validate_event

    for e in mqtt:
        validate_event(e)


@pytest.mark.parametrize("argv, message", [
    (["--mqtt", "http://h"], "--mqtt: expected mqtt://"),
    (["--mqtt", "mqtt://u:secret@h:99999"], "bad port"),
    (["--mqtt-ca", "ca.pem"], "expected --mqtt mqtts://... too"),
    (["--mqtt", "mqtt://h", "--mqtt-ca", "nope.pem"], "TLS files given for a plain mqtt:// URL"),
    (["--mqtt", "mqtts://h", "--mqtt-ca", "nope.pem"], "expected a file, got 'nope.pem'"),
    (["--webhook", "ftp://u:secret@h/x"], "--webhook: expected an http:// or https:// URL"),
    (["--snapshot-crop"], "expected --snapshots DIR too"),
    (["--metrics-port", "70000"], "expected a port in 0..65535, got 70000"),
    (["--metrics-host", "0.0.0.0"], "--metrics-host: expected --metrics-port too"),
])
def test_event_flag_errors_are_one_line(argv, message, replay, video, capsys):
    rc = main(["--quiet", "run", "--model", str(replay), "--source", str(video), "--no-show", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert "secret" not in err


def test_config_keys_for_event_sinks(tmp_path):
    cfg = tmp_path / "app.yaml"
    cfg.write_text("sinks:\n"
                   "  - {spec: 'mqtts://b.local/site', options: {ca: ca.pem, qos: 0, queue_size: 50}}\n"
                   "  - 'webhook+https://hooks.local/x'\n"
                   "  - {spec: events, options: {snapshots: snaps, snapshot_max_age_s: 3600}}\n"
                   "  - 'metrics://0.0.0.0:9100'\n")
    c = load_app_config(cfg)
    assert [s.spec for s in c.outputs.sinks] == ["mqtts://b.local/site", "webhook+https://hooks.local/x",
                                                 "metrics://0.0.0.0:9100"]
    assert c.outputs.sinks[0].options == {"ca": "ca.pem", "qos": 0, "queue_size": 50}
    assert (c.events.snapshots, c.events.snapshot_max_age_s) == ("snaps", 3600)  # the hub's settings: one home


def test_sigkill_flips_availability_to_offline_through_last_will(mosquitto, replay, video, tmp_path):
    sub = Subscriber(mosquitto.port, "edge_detect/availability")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "edge_detect", "--quiet", "run", "--model", str(replay), "--source", str(video),
           "--no-show", "--threads", "1", "--mqtt", mosquitto.url]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert sub.wait_for(lambda: "online" in sub.on("availability"), 60), proc.stderr.read1().decode()[-2000:]
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert sub.wait_for(lambda: sub.on("availability")[-1:] == ["offline"], 20)
        assert sub.on("availability") == ["online", "offline"]
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    late = Subscriber(mosquitto.port, "edge_detect/availability")  # retained: a newcomer reads offline
    try:
        assert late.wait_for(lambda: late.on("availability") == ["offline"], 10)
    finally:
        late.close()


def test_help_documents_event_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--mqtt URI", "--mqtt-ca", "--mqtt-cert", "--mqtt-key", "--webhook URL", "--snapshots DIR",
                 "--snapshot-crop", "--metrics-port PORT", "--metrics-host ADDR", "{prefix}/availability"):
        assert flag in out, flag


@pytest.mark.parametrize("spec, options, message", [
    ("mqtt://u:secret@127.0.0.1:1", {"qos_level": 1}, "unknown option"),
    ("mqttx://u:secret@127.0.0.1:1", {}, "expected 'display', a URI with a known scheme"),
    ("webhook+http://u:secret@127.0.0.1:1/x", {"retry": 1}, "unknown option"),
])
def test_sink_spec_errors_mask_credentials(spec, options, message):
    from edge_detect.errors import EdgeDetectError
    from edge_detect.sinks import open_sink

    with pytest.raises(EdgeDetectError) as info:
        open_sink(spec, **options)
    assert message in str(info.value) and "secret" not in str(info.value) and "***@127.0.0.1" in str(info.value)
