"""Test helpers for the events sinks: a detector that emits scripted events, an MQTT subscriber that records."""
from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

import numpy as np

from edge_detect.sinks import Result
from edge_detect.types import Detections, Frame

NAMES = ("person", "car")


def scripted_events(index: int) -> List[Dict[str, Any]]:
    """The processor events of frame ``index``: a line crossing every 10th frame (in, out, in...), a zone
    enter at 25 and exit at 45, object_new of track 1 at 5 and its object_end at 55."""
    out: List[Dict[str, Any]] = []
    if index == 5:
        out.append({"type": "object_new", "track_id": 1, "class_name": "person", "score": 0.9,
                    "xyxy": [10.0, 20.0, 110.0, 220.0]})
    if index and index % 10 == 0:
        out.append({"type": "line_cross", "line": "door", "direction": "in" if index % 20 else "out",
                    "track_id": 1, "class_name": "person"})
    if index == 25:
        out.append({"type": "zone_enter", "zone": "lobby", "track_id": 1, "class_name": "person"})
    if index == 45:
        out.append({"type": "zone_exit", "zone": "lobby", "track_id": 1, "class_name": "person", "dwell_s": 2.0})
    if index == 55:
        out.append({"type": "object_end", "track_id": 1, "class_name": "person", "first_seen": 1.0,
                    "last_seen": 2.0, "first_frame": 5, "last_frame": 55, "best_score": 0.9})
    return out


def expected_counts(frames: int) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for i in range(frames):
        for ev in scripted_events(i):
            counts[ev["type"]] = counts.get(ev["type"], 0) + 1
    return counts


class ScriptedDetector:
    """Detector stand-in: one tracked person per frame (track 1) plus :func:`scripted_events`.

    Frames of one file source reach ``postprocess`` in order, so a counter gives the frame index.
    ``infer_ms`` sleeps like a backend (releasing the GIL).
    """

    names = NAMES

    def __init__(self, infer_ms: float = 0.0) -> None:
        self.infer_ms, self.count = infer_ms, 0

    def preprocess(self, images):
        return np.zeros((len(images), 3, 8, 8), np.float32), [im.shape[:2] for im in images]

    def infer(self, batch):
        if self.infer_ms:
            time.sleep(self.infer_ms / 1e3)
        return [batch]

    def postprocess(self, outputs, infos):
        out = []
        for _ in infos:
            i = self.count
            self.count += 1
            x = 10.0 + i
            det = Detections(np.array([[x, 20, x + 100, 220]], np.float32), np.array([0.9]), np.array([0]),
                             track_id=np.array([1]))
            det.metadata["events"] = scripted_events(i)
            out.append(det)
        return out


def make_result(index: int, wall_time: float, source: str = "cam", events=None, track_ids=(1,)) -> Result:
    """A hand-made Result: a 64x96 gray frame with one box per track id."""
    n = len(track_ids)
    dets = Detections(np.tile(np.array([[8, 8, 40, 56]], np.float32), (n, 1)), np.full(n, 0.8),
                      np.zeros(n), track_id=np.array(track_ids) if track_ids is not None else None)
    if events:
        dets.metadata["events"] = list(events)
    frame = Frame(np.full((64, 96, 3), 127, np.uint8), source_id=source, index=index, capture_time=time.perf_counter(),
                  wall_time=wall_time)
    return Result(frame, dets, NAMES, 10.0)


class Subscriber:
    """paho subscriber to ``topic`` recording ``(topic, payload-or-json, arrival time, snapshot existed)``.

    ``client_id`` + ``clean_session=False`` keep a persistent session (the broker queues QoS 1 messages while
    we are disconnected, also across a restart with persistence on).
    """

    def __init__(self, port: int, topic: str = "edge_detect/#", client_id: Optional[str] = None,
                 clean_session: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.messages: List[tuple] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=clean_session)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg):
        payload = msg.payload.decode()
        try:
            data = json.loads(payload)
        except ValueError:
            data = payload
        snap = None
        if isinstance(data, dict) and "snapshot" in data:
            snap = os.path.isfile(data["snapshot"]) and os.path.getsize(data["snapshot"]) > 0
        with self.lock:
            self.messages.append((msg.topic, data, time.time(), snap, msg.retain))

    def on(self, suffix: str) -> List[Any]:
        with self.lock:
            return [m[1] for m in self.messages if m[0].endswith(suffix)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Hook(ThreadingHTTPServer):
    """Loopback server: answers ``fail`` first requests with 503 (or hangs ``hang_s``), then 204; records bodies."""

    daemon_threads = True

    def __init__(self, fail: int = 0, status: int = 503, hang_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fail, self.status, self.hang_s = fail, status, hang_s
        self.bodies, self.requests, self.auth = [], 0, []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with srv.lock:
            srv.requests += 1
            n = srv.requests
            srv.auth.append(self.headers.get("Authorization"))
        if n <= srv.fail:
            if srv.hang_s:
                time.sleep(srv.hang_s)
            self.send_response(srv.status)
            self.end_headers()
            return
        with srv.lock:
            srv.bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()
