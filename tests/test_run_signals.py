"""What signals do to ``edge-detect run`` (issue 26 item 6), with a real process: the first SIGTERM stops the run
gracefully, the second stops waiting for event deliveries and still finalizes the files and the summary; exit 143."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, count_frames, requires_ort

pytestmark = requires_ort


@pytest.fixture(scope="module")
def replay(onnx_builder, reference, tmp_path_factory) -> Path:
    from edge_detect.metadata import ModelMetadata

    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("signals") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=[f"c{i}" for i in range(80)]).to_dict())


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_second_sigterm_exits_143_and_still_writes_every_output(replay, video, tmp_path):
    """A webhook that accepts connections and never answers: the first SIGTERM's graceful close would wait out the
    webhook's 120 s close timeout; the second gives up the deliveries (counted failed) and the run ends with 143,
    a playable mp4 and a JSONL of every processed frame, and the summary."""
    hang = socket.socket()  # accepts (backlog) and never answers: each POST waits for its 60 s timeout
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    port = hang.getsockname()[1]
    (tmp_path / "app.yaml").write_text(
        f"model: {{path: {replay}}}\n"
        f"sources: [{{uri: {video}, options: {{realtime: true}}}}]\n"  # paced: still running when signalled
        "analytics: {tracker: {enabled: true}}\n"  # tracks -> object_new events for the webhook
        f"events: {{webhook: 'http://127.0.0.1:{port}/hook', webhook_options: "
        "{close_timeout_s: 120, timeout_s: 60, retries: 0}}\n")
    cmd = [sys.executable, "-m", "edge_detect", "-q", "run", "--config", "app.yaml", "--no-show",
           "--save-video", "o.mp4", "--save-jsonl", "o.jsonl", "--summary-json", "s.json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    err: list = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        jsonl = tmp_path / "o.jsonl"
        _wait_for(lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 15, proc, "15 JSONL lines")
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: any("SIGTERM received: finishing" in line for line in err), proc, "the first warning")
        time.sleep(0.5)  # now waiting for the webhook's deliveries
        assert proc.poll() is None, "".join(err)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)  # hang guard: without the second signal this takes the webhook's 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
        hang.close()
    reader.join(5)
    assert rc == 143, "".join(err)
    assert any("SIGTERM received again: not waiting for event deliveries" in line for line in err), "".join(err)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["sink_errors"] == []
    hook = summary["sinks"]["webhook"]
    assert hook["sent"] == 0 and hook["failed"] >= 1  # given up, counted
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    frames = [d for d in lines if not d.get("final")]
    assert 15 <= summary["processed"] == len(frames) < 795
    assert count_frames(tmp_path / "o.mp4") == summary["processed"]  # finalized: playable, every frame
