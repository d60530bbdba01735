"""Event deliveries that fail are visible to whoever runs ``edge-detect run`` (issue 26 item 7): every output's
``sent`` / ``dropped`` / ``failed`` in the summary, in the periodic stats line, and one warning line at the end of a
run that still exits 0."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import requires_ort
from edge_detect.cli import main
from edge_detect.stream.runstats import RunStats, RunSummary, format_deliveries


class _Failing(BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).posts += 1
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


@requires_ort
def test_a_webhook_that_always_fails_exits_0_with_one_warning_and_the_figures(onnx_builder, reference, tmp_path,
                                                                              caplog, monkeypatch):
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    model = onnx_builder(tmp_path / "m.onnx", [raw], metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())
    w = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(12):
        w.write(np.full((48, 64, 3), 10 * i, np.uint8))
    w.release()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "app.yaml").write_text(
        f"model: {{path: {model}}}\nsources: [{tmp_path / 'v.avi'}]\nanalytics: {{tracker: {{enabled: true}}}}\n"
        f"events: {{webhook: 'http://127.0.0.1:{server.server_port}/h', webhook_options: "
        "{retries: 0, backoff_initial_s: 0}}\n")
    monkeypatch.chdir(tmp_path)
    try:
        with caplog.at_level(logging.WARNING):
            rc = main(["-q", "run", "--config", "app.yaml", "--no-show", "--save-jsonl", "o.jsonl",
                       "--summary-json", "s.json"])
    finally:
        server.shutdown()
    assert rc == 0
    events = sum(len(json.loads(line)["events"]) for line in (tmp_path / "o.jsonl").read_text().splitlines())
    assert events >= 3 and _Failing.posts == events  # object_new / object_end of the replayed boxes
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["sinks"]["webhook"] == {"queued": 0, "sent": 0, "dropped": 0, "failed": events}
    assert summary["sinks"]["jsonl"] == {"queued": 0, "sent": 12 + 1, "dropped": 0, "failed": 0}  # + the final line
    ends = [r for r in caplog.records if r.name == "edge_detect.cli.run"]
    assert len(ends) == 1 and ends[0].levelno == logging.WARNING
    assert ends[0].getMessage() == (f"run ended with losses: not delivered: webhook 0 sent, {events} failed (the "
                                    "summary's 'sinks' has every output's counters)")
    gave_up = [r for r in caplog.records if "giving up an event" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(gave_up) == 1  # the first of an outage; the others at debug level


def test_stats_line_and_summary_show_every_outputs_deliveries():
    outputs = {"video": {"queued": 2, "sent": 120, "dropped": 0, "failed": 0},
               "webhook": {"queued": 0, "sent": 3, "dropped": 1, "failed": 26}}
    st = RunStats()
    st.start()
    line = st.stats_line([], outputs)
    assert line.endswith("; outputs: video 120 sent, 2 queued; webhook 3 sent, 1 dropped, 26 failed")
    s = RunSummary(sinks=outputs)
    assert s.undelivered() == {"webhook": outputs["webhook"]}
    assert "  outputs: video 120 sent, 2 queued; webhook 3 sent, 1 dropped, 26 failed" in s.format().splitlines()
    assert RunSummary(sinks={"video": outputs["video"]}).undelivered() == {}
    assert format_deliveries({}) == ""


@pytest.mark.parametrize("corrupt, processed, expected", [
    (0, 5, None),
    (3, 5, "run ended with losses: 3 undecodable frame(s) skipped"),
    (3, 0, None),  # nothing processed: the run fails with its own error line instead
])
def test_end_warning_counts_skipped_frames(corrupt, processed, expected, caplog):
    from edge_detect.cli.run import _warn_losses

    with caplog.at_level(logging.WARNING):
        _warn_losses(RunSummary(corrupt=corrupt, processed=processed))
    got = [r.getMessage() for r in caplog.records]
    assert got == ([] if expected is None else [f"{expected} (the summary's 'sinks' has every output's counters)"])
