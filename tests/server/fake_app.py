"""A small in-process stand-in for ``edge_detect.app.App`` implementing the server's ``AppLike`` protocol.

Each source is a thread rendering 320x240 synthetic frames at ~15 fps: a bar sliding along the top (the picture is
live) and one "walker" (track 1, a person-sized box). The walker idles, bouncing up and down at x = 40, until a
test scripts it with :meth:`FakeApp.walk`; it then walks straight to the given x and idles there. A simple
counter turns the walker's bottom-centre anchor into ``line_cross`` events (same sides as the real LineCounter:
``in`` = from the left of the directed line to its right as seen in the image) and ``zone_enter`` / ``zone_exit``;
counts are kept in one place (``counts()``) in the shape of ``edge_detect.events.Counts.snapshot()``. The
annotated frame shows the box, its track id, the lines and zones.

It implements exactly the methods of ``edge_detect.server.app_protocol.AppLike`` with ``App``'s signatures
(checked by ``test_server_real_app.py``), plus the test hook :meth:`FakeApp.walk`; it serves the tests of the
server's own behaviour (validation, security, streams, the feed, the event store), where a model would only cost
time. What depends on the App (runtime changes, errors, counting, churn) is tested on the real ``App``.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Union

import cv2
import numpy as np

from edge_detect.app_config import AppConfig, ModelConfig, SourceConfig
from edge_detect.errors import DuplicateSourceError, UnknownSourceError
from edge_detect.stream.processors.lines import line_specs
from edge_detect.stream.processors.zones import zone_specs
from edge_detect.urls import mask_credentials

W, H, FPS = 320, 240, 15.0
IDLE_X = 40.0


class FakeEvent:
    def __init__(self, **fields: Any) -> None:
        self._d = fields

    @property
    def type(self) -> str:
        return self._d["type"]

    def to_dict(self) -> Dict[str, Any]:
        return dict(self._d)


class _Subscription:
    """Own bounded queue + thread per subscriber, like the real bus (drops the oldest when full)."""

    def __init__(self, app: "FakeApp", callback: Callable[[Any], None], queue_size: int) -> None:
        self.app, self.callback, self.q = app, callback, queue.Queue(maxsize=queue_size)
        self.thread = threading.Thread(target=self._loop, name="fake-bus", daemon=True)
        self.thread.start()

    def offer(self, result: Any) -> None:
        while True:
            try:
                self.q.put_nowait(result)
                return
            except queue.Full:
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    pass

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            self.callback(item)

    def close(self, timeout: float = 2.0) -> None:
        with self.app._lock:
            if self in self.app._subs:
                self.app._subs.remove(self)
        self.offer(None)
        self.thread.join(timeout)


class _Source:
    def __init__(self, app: "FakeApp", cfg: Dict[str, Any]) -> None:
        self.app, self.cfg = app, cfg
        self.id = cfg["id"]
        self.x, self.y, self.dy = IDLE_X, 120.0, 4.0
        self.path: List[float] = []
        self.last_side: Dict[str, tuple] = {}  # line name -> (sign, anchor) of the last sighting off the line
        self.inside: Dict[str, float] = {}
        self.read = 0
        self.frame_raw: Optional[np.ndarray] = None
        self.frame_ann: Optional[np.ndarray] = None
        self.last_time = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"fake-src-{self.id}", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0 / FPS):
            with self.app._lock:
                result = self._step()
            self.app._publish(result)

    def _move(self) -> None:
        if self.path:
            self.x = self.path.pop(0)
        else:
            self.y += self.dy
            if not 60 <= self.y <= 180:
                self.dy = -self.dy

    def _step(self) -> Any:
        self._move()
        anchor = (float(self.x), float(self.y) + 20)
        events = self.app._count(self, anchor) if self.cfg.get("enabled", True) else []
        img = np.full((H, W, 3), 40, np.uint8)
        bar = (self.read * 7) % W
        cv2.rectangle(img, (bar, 4), (bar + 40, 16), (0, 180, 255), -1)
        cv2.putText(img, f"{self.id} #{self.read}", (8, H - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        self.frame_raw = img.copy()
        self.frame_ann = self.app._draw(self, img)
        now = time.time()
        frame = SimpleNamespace(image=self.frame_raw, source_id=self.id, index=self.read, wall_time=now)
        self.read += 1
        self.last_time = now
        return SimpleNamespace(frame=frame, annotated=self.frame_ann,
                               events=[FakeEvent(frame=frame.index, wall_time=now, **e) for e in events])


def _side(line: List[float], p: tuple) -> float:
    x1, y1, x2, y2 = line
    return (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1)  # > 0: right of the line as seen in the image


def _segments_cross(line: List[float], p0: tuple, p1: tuple) -> bool:
    a = (line[0], line[1])
    b = (line[2], line[3])
    d0, d1 = _side(line, p0), _side(line, p1)
    e0 = _side([p0[0], p0[1], p1[0], p1[1]], a)
    e1 = _side([p0[0], p0[1], p1[0], p1[1]], b)
    return d0 * d1 < 0 and e0 * e1 <= 0


class FakeApp:
    """See module doc. ``FakeApp([{"uri": "fake://a", "id": "a"}, ...])``."""

    def __init__(self, sources: List[Dict[str, Any]]) -> None:
        self._lock = threading.RLock()
        self._subs: List[_Subscription] = []
        self._sources: Dict[str, _Source] = {}
        self._counts: Dict[str, Dict[str, Any]] = {}
        self._started = time.time()
        self._stopped = threading.Event()
        self.running = False
        for cfg in sources:
            self._add(dict(cfg))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeApp":
        self.running = True
        for src in list(self._sources.values()):
            if not src.thread.is_alive():
                src.thread.start()
        return self

    def stop(self, reason: str = "stop") -> "FakeApp":
        self.running = False
        for sid in list(self._sources):
            self._stop_source(sid)
        self._stopped.set()
        return self

    def wait(self, timeout: Optional[float] = None) -> Any:
        return SimpleNamespace(stopped_by="stop") if self._stopped.wait(timeout) else None

    # ------------------------------------------------------------------ reads
    def status(self) -> Dict[str, Any]:
        with self._lock:
            now = time.time()
            rows = [{"id": s.id, "uri": mask_credentials(s.cfg["uri"]),
                     "state": "online" if s.cfg.get("enabled", True) else "paused",
                     "fps_in": FPS, "fps_out": FPS, "read": s.read, "processed": s.read, "dropped": 0,
                     "reconnects": 0, "last_frame_age_s": round(now - s.last_time, 3) if s.read else None,
                     "enabled": s.cfg.get("enabled", True)}
                    for s in self._sources.values()]
        return {"running": self.running, "uptime_s": round(time.time() - self._started, 1), "model": "fake.onnx",
                "device": "cpu", "processed": sum(r["processed"] for r in rows), "fps": FPS * len(rows),
                "stages_ms": {"preprocess": 0.4, "inference": 3.1, "postprocess": 0.2}, "sources": rows}

    def counts(self) -> Dict[str, Any]:
        with self._lock:
            per = {sid: _copy(c) for sid, c in self._counts.items()}
        total: Dict[str, Any] = {"lines": {}, "zones": {}, "events": {}}
        for c in per.values():
            for name, v in c["lines"].items():
                t = total["lines"].setdefault(name, {"in": 0, "out": 0, "by_class": {}})
                t["in"] += v["in"]
                t["out"] += v["out"]
            for name, v in c["zones"].items():
                t = total["zones"].setdefault(name, {k: 0 for k in ("entered", "exited", "occupancy",
                                                                     "max_occupancy")})
                for k in ("entered", "exited", "occupancy", "max_occupancy"):
                    t[k] += v[k]
            for k, n in c["events"].items():
                total["events"][k] = total["events"].get(k, 0) + n
        return {"sources": per, "total": total}

    def config_dict(self) -> Dict[str, Any]:
        with self._lock:
            sources = tuple(_source_config(s.cfg) for s in self._sources.values())
        return AppConfig(model=ModelConfig(path="fake.onnx"), sources=sources).to_dict()

    def subscribe(self, callback: Optional[Callable[[Any], None]] = None, *, name: str = "subscriber",
                  inline: bool = False, queue_size: int = 256) -> _Subscription:
        assert callback is not None and not inline, "the fake delivers to a callback on its own thread only"
        sub = _Subscription(self, callback, queue_size)
        with self._lock:
            self._subs.append(sub)
        return sub

    def latest_frame(self, source_id: str, annotated: bool = True) -> Optional[np.ndarray]:
        with self._lock:
            src = self._get(source_id)
            img = src.frame_ann if annotated else src.frame_raw
            return None if img is None else img.copy()

    # ------------------------------------------------------------------ runtime operations
    def add_source(self, source: Union[SourceConfig, str]) -> str:
        sc = source if isinstance(source, SourceConfig) else SourceConfig(str(source))
        cfg = {"uri": str(sc.uri), "id": sc.id, "lines": dict(sc.lines), "zones": dict(sc.zones)}
        if sc.options:
            cfg["options"] = dict(sc.options)
        with self._lock:
            src = self._add(cfg)
        if self.running:
            src.thread.start()
        return src.id

    def remove_source(self, source_id: str) -> None:
        with self._lock:
            self._get(source_id)
        self._stop_source(source_id)

    def update_source(self, source_id: str, *, lines: Optional[Dict[str, Any]] = None,
                      zones: Optional[Dict[str, Any]] = None, conf: Optional[float] = None,
                      classes: Optional[List[Union[int, str]]] = None, enabled: Optional[bool] = None,
                      detect: Optional[Dict[str, Any]] = None,
                      motion: Optional[Dict[str, Any]] = None) -> SourceConfig:
        with self._lock:
            src = self._get(source_id)
            if lines is not None:
                line_specs(lines)
                src.cfg["lines"] = dict(lines)
                src.last_side.clear()
            if zones is not None:
                zone_specs(zones)
                src.cfg["zones"] = dict(zones)
            for key, value in (("conf", conf), ("classes", classes), ("enabled", enabled), ("detect", detect),
                               ("motion", motion)):
                if value is not None:
                    src.cfg[key] = value
            self._declare(src)
            return _source_config(src.cfg)

    # ------------------------------------------------------------------ test hooks
    def walk(self, source_id: str, to_x: float, seconds: float = 1.0) -> None:
        """Script the walker of ``source_id``: walk straight to ``to_x`` in ``seconds``, then idle there."""
        with self._lock:
            src = self._get(source_id)
            n = max(2, int(seconds * FPS))
            src.path = list(np.linspace(src.x, to_x, n)[1:])

    # ------------------------------------------------------------------ internals
    def _get(self, source_id: str) -> _Source:
        src = self._sources.get(source_id)
        if src is None:
            raise UnknownSourceError(f"source {source_id!r}: expected one of {sorted(self._sources)}, got no "
                                     f"such source")
        return src

    def _add(self, cfg: Dict[str, Any]) -> _Source:
        line_specs(cfg.get("lines") or {})
        zone_specs(cfg.get("zones") or {})
        sid = cfg.get("id") or re.sub(r"[^A-Za-z0-9_]", "_", cfg["uri"].rstrip("/").rsplit("/", 1)[-1])[:32]
        if sid in self._sources:
            raise DuplicateSourceError(f"source id {sid!r}: expected a new id, got one in use "
                                       f"(ids: {sorted(self._sources)})")
        cfg["id"] = sid
        cfg.setdefault("lines", {})
        cfg.setdefault("zones", {})
        src = self._sources[sid] = _Source(self, cfg)
        self._declare(src)
        return src

    def _stop_source(self, source_id: str) -> None:
        with self._lock:
            src = self._sources.pop(source_id, None)
        if src is not None:
            src.stop.set()
            if src.thread.is_alive():
                src.thread.join(5)

    def _declare(self, src: _Source) -> None:
        c = self._counts.setdefault(src.id, {"lines": {}, "zones": {}, "events": {}})
        for spec in line_specs(src.cfg.get("lines") or {}):
            c["lines"].setdefault(spec.name, {"in": 0, "out": 0, "by_class": {}})
        for spec in zone_specs(src.cfg.get("zones") or {}):
            c["zones"].setdefault(spec.name, {"entered": 0, "exited": 0, "occupancy": 0, "max_occupancy": 0,
                                              "by_class": {}})

    def _count(self, src: _Source, anchor: tuple) -> List[Dict[str, Any]]:
        c, events = self._counts[src.id], []
        for spec in line_specs(src.cfg.get("lines") or {}):
            seg = [float(v) for v in spec.xyxy]
            side = float(np.sign(_side(seg, anchor)))
            if side == 0:
                continue
            prev = src.last_side.get(spec.name)
            src.last_side[spec.name] = (side, anchor)
            if prev is not None and prev[0] != side and _segments_cross(seg, prev[1], anchor):
                direction = "in" if side > 0 else "out"
                c["lines"][spec.name][direction] += 1
                events.append({"type": "line_cross", "line": spec.name, "direction": direction, "track_id": 1,
                               "class_name": "person"})
        for spec in zone_specs(src.cfg.get("zones") or {}):
            poly = np.asarray(spec.polygon, np.float32).reshape(-1, 2)
            inside = cv2.pointPolygonTest(poly, (float(anchor[0]), float(anchor[1])), False) >= 0
            z = c["zones"][spec.name]
            if inside and spec.name not in src.inside:
                src.inside[spec.name] = time.time()
                z["entered"] += 1
                events.append({"type": "zone_enter", "zone": spec.name, "track_id": 1, "class_name": "person"})
            elif not inside and spec.name in src.inside:
                dwell = time.time() - src.inside.pop(spec.name)
                z["exited"] += 1
                events.append({"type": "zone_exit", "zone": spec.name, "track_id": 1, "class_name": "person",
                               "dwell_s": round(dwell, 3)})
            z["occupancy"] = z["entered"] - z["exited"]
            z["max_occupancy"] = max(z["max_occupancy"], z["occupancy"])
        for e in events:
            c["events"][e["type"]] = c["events"].get(e["type"], 0) + 1
        return events

    def _draw(self, src: _Source, img: np.ndarray) -> np.ndarray:
        x, y = int(src.x), int(src.y)
        cv2.rectangle(img, (x - 10, y - 20), (x + 10, y + 20), (0, 255, 0), 2)
        cv2.putText(img, "#1 person", (x - 10, y - 24), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0), 1)
        for spec in line_specs(src.cfg.get("lines") or {}):
            p = [int(v) for v in spec.xyxy]
            cv2.line(img, (p[0], p[1]), (p[2], p[3]), (255, 0, 255), 2)
        for spec in zone_specs(src.cfg.get("zones") or {}):
            poly = np.asarray(spec.polygon, np.int32).reshape(-1, 2)
            cv2.polylines(img, [poly], True, (255, 255, 0), 2)
        return img

    def _publish(self, result: Any) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(result)


def _source_config(cfg: Dict[str, Any]) -> SourceConfig:
    classes = cfg.get("classes")
    return SourceConfig(**{**cfg, "classes": tuple(classes) if classes is not None else None})


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj
