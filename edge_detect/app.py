"""The edge app as a service: :class:`App`, built from an :class:`~edge_detect.app_config.AppConfig`.

The CLI's ``run`` and (later) the HTTP server are two doors to the same calls::

    from edge_detect.app import App
    from edge_detect.app_config import load_app_config, SourceConfig

    app = App(load_app_config("configs/app/default.yaml"))
    app.start()                                   # the pipeline runs in its own thread
    app.add_source(SourceConfig("rtsp://cam/2", id="door", lines={"in": [0, 300, 640, 300]}))
    app.update_source("door", lines={"in": [0, 320, 640, 320]})   # lands between two batches
    app.status()["sources"][0]["state"]          # 'online'
    app.counts()["sources"]["door"]["lines"]     # counts carry on across changes
    summary = app.stop("maintenance").wait()     # RunSummary

Runtime changes (:meth:`App.add_source`, :meth:`App.remove_source`, :meth:`App.update_source`,
:meth:`App.add_sink`, :meth:`App.remove_sink`) are applied by the pipeline's sinks stage between two batches
(:meth:`~edge_detect.stream.pipeline.Pipeline.apply`); the call returns once applied. The App keeps one event bus
(so one :class:`~edge_detect.events.Counts`) for its life: counts carry on across every change. The App's
:attr:`config` follows the changes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import numpy as np

from edge_detect.app_config import (AppConfig, SinkConfig, SourceConfig, build_pipeline, check_sources,
                                    region_processor)
from edge_detect.errors import ConfigError, DuplicateSourceError, SinkError, UnknownSourceError
from edge_detect.events import EventBus, Subscription
from edge_detect.types import Result, Sink

__all__ = ["App", "resolve_model", "write_summary"]

LOGGER = logging.getLogger(__name__)


def resolve_model(cfg: AppConfig, exporter: Optional[Callable[..., Any]] = None) -> AppConfig:
    """``cfg`` with ``model.path`` a file: none -> :data:`~edge_detect.model_cache.DEFAULT_MODEL`; a checkpoint
    name (no suffix, not a file) -> its cached ONNX export at ``model.imgsz`` (exported on first use with the
    function ``exporter()`` returns, e.g. :func:`edge_detect.training.export.export_onnx`: the App stays torch-free,
    the CLI passes the build extra's; :func:`edge_detect.model_cache.ensure_onnx`).

    Raises:
        ConfigError: a checkpoint name with no exporter and no cached export.
    """
    from edge_detect.model_cache import DEFAULT_MODEL, ensure_onnx

    model = cfg.model.path or DEFAULT_MODEL
    if "://" in model or Path(model).suffix or Path(model).exists():  # a model URL (grpc://...) is no file
        return cfg
    if exporter is None:
        def exporter() -> Any:
            raise ConfigError(f"model {model!r}: expected a model file, or an exporter to build it from the "
                              "checkpoint name (App(config, exporter=edge_detect.training.export.export_onnx))")
    onnx = ensure_onnx(model, exporter, imgsz=cfg.model.imgsz, progress=cfg.server.progress)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(onnx)))


def write_summary(path: Union[str, Path], summary: Dict[str, Any]) -> None:
    """Write a run summary as indented JSON (folders created).

    Raises:
        SinkError: the file cannot be written.
    """
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"summary JSON {path}: cannot write ({exc})") from exc
    LOGGER.info("summary written to %s", path)


class _Rates:
    """Frames read / processed per second per source over the last ``window_s`` seconds (for :meth:`App.status`)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._samples: Dict[str, Deque[Tuple[float, int, int]]] = {}
        self._lock = threading.Lock()

    def sample(self, source_id: str, read: int, processed: int) -> None:
        now = time.perf_counter()
        with self._lock:
            q = self._samples.setdefault(source_id, deque())
            q.append((now, read, processed))
            while len(q) > 2 and now - q[0][0] > self.window_s:
                q.popleft()

    def forget(self, source_id: str) -> None:
        with self._lock:
            self._samples.pop(source_id, None)

    def fps(self, source_id: str) -> Tuple[float, float]:
        """``(fps_in, fps_out)``; 0 before two samples."""
        with self._lock:
            q = list(self._samples.get(source_id, ()))
        if len(q) < 2 or q[-1][0] <= q[0][0]:
            return 0.0, 0.0
        dt = q[-1][0] - q[0][0]
        return (q[-1][1] - q[0][1]) / dt, (q[-1][2] - q[0][2]) / dt


class App:
    """The edge app: a pipeline built from ``config``, run as a service (see module doc).

    Args:
        config: the :class:`~edge_detect.app_config.AppConfig`.
        detector: use this detector (a :class:`~edge_detect.detector.DetectorLike`) instead of building one from
            ``config.model`` (the App does not close it).
        exporter: returns the function that exports a checkpoint name's ONNX on first use (:func:`resolve_model`);
            the CLI passes the build extra's.
        keep_alive: a served app (``edge-detect serve``, ``run --http``): the run goes on when every source has
            ended, and may start with none, until :meth:`stop` (sources come and go through :meth:`add_source` /
            :meth:`remove_source`). Without it the run ends when its sources end.

    Attributes:
        config: the configuration, following the runtime changes.
        bus: the App's :class:`~edge_detect.events.EventBus` (and ``bus.counts``), for its whole life.
    """

    def __init__(self, config: AppConfig, detector: Any = None, exporter: Optional[Callable[..., Any]] = None,
                 keep_alive: bool = False) -> None:
        if not isinstance(config, AppConfig):
            raise ConfigError(f"App: expected an AppConfig (edge_detect.app_config.load_app_config), got {config!r}")
        self.config = config
        self._model_given = config.model.path  # config_dict() writes what was given, not the cached export
        self.bus = EventBus()
        self._detector = detector
        self._exporter = exporter
        self.keep_alive = bool(keep_alive)
        self._pipeline: Any = None
        self._thread: Optional[threading.Thread] = None
        self._summary: Any = None
        self._error: Optional[BaseException] = None
        self._done = threading.Event()
        self._latest: Dict[str, Result] = {}
        self._rates = _Rates()
        self._t0 = 0.0
        self._stop_reason: Optional[str] = None  # asked before the pipeline existed
        self._abandoned = False
        self._lock = threading.Lock()
        self._uris: Dict[str, str] = {}  # source id -> configured URI (credentials included): what the recorder reads
        self.bus.subscribe(self._remember, name="app", inline=True)

    # ------------------------------------------------------------------------------------------- life cycle

    def _prepare(self) -> Any:
        """Build the pipeline once (model resolved and loaded, sources and sinks opened: errors surface here)."""
        with self._lock:
            if self._pipeline is None:
                check_sources(self.config, self.keep_alive)  # a missing file: before a model is exported or loaded
                if self._detector is None:
                    self.config = resolve_model(self.config, self._exporter)
                self._pipeline = build_pipeline(self.config, detector=self._detector, bus=self.bus,
                                                keep_alive=self.keep_alive, uris=self._uris)
                self.config = dataclasses.replace(self.config, sources=tuple(  # ids as resolved (unique)
                    dataclasses.replace(sc, id=src.source_id)
                    for sc, src in zip(self.config.sources, self._pipeline.sources)))
                self._t0 = time.perf_counter()
                if self._stop_reason is not None:
                    self._pipeline.stop(self._stop_reason)
                if self._abandoned:
                    self._pipeline.abandon(self._stop_reason or "stop")
            return self._pipeline

    def start(self) -> "App":
        """Open everything (errors raise here), then run the pipeline in its own thread; returns at once."""
        pipeline = self._prepare()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_in_thread, args=(pipeline,), name="edge-app",
                                            daemon=True)
            self._thread.start()
        return self

    def _run_in_thread(self, pipeline: Any) -> None:
        try:
            self._finish(pipeline.run())
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait()
            self._error = exc
            self._close_detector()
            self._done.set()

    def run(self) -> Any:
        """Run on the calling thread until a stop condition (GUI sinks want the main thread); returns the
        :class:`~edge_detect.stream.runstats.RunSummary` (also written to ``outputs.summary_json``)."""
        if self._thread is not None:
            return self.wait()
        pipeline = self._prepare()
        self._thread = threading.current_thread()
        try:
            summary = pipeline.run()
        except BaseException:
            self._close_detector()
            self._done.set()
            raise
        return self._finish(summary)

    def _finish(self, summary: Any) -> Any:
        self._summary = summary
        self._close_detector()
        try:
            if self.config.outputs.summary_json:
                write_summary(self.config.outputs.summary_json, summary.to_dict())
        finally:
            self._done.set()
        return summary

    def _close_detector(self) -> None:
        if self._detector is None and self._pipeline is not None:
            close = getattr(self._pipeline.detector, "close", None)
            if callable(close):
                close()

    def stop(self, reason: str = "stop") -> "App":
        """Ask the run to stop (frames in flight finished, outputs finalized); ``reason`` becomes the summary's
        ``stopped_by``. Returns at once (see :meth:`wait`)."""
        self._stop_reason = self._stop_reason or reason  # no lock: a signal handler may call this mid-_prepare
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.stop(reason)
        return self

    def abandon(self, reason: str = "stop") -> "App":
        """:meth:`stop` without waiting for deliveries: event queues (MQTT, webhook) give up what is left (counted
        ``failed`` in the summary) instead of waiting out their close timeouts; files are still finalized and
        ``outputs.summary_json`` written. Sets flags only: safe in a signal handler (``run``'s second signal)."""
        self._abandoned = True
        self.stop(reason)
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.abandon(self._stop_reason or reason)
        return self

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait for the run to end; its :class:`~edge_detect.stream.runstats.RunSummary` (``None`` on timeout).

        Raises:
            whatever ended the run with an error.
        """
        if not self._done.wait(timeout):
            return None
        if self._error is not None:
            raise self._error
        return self._summary

    @property
    def running(self) -> bool:
        return self._pipeline is not None and self._thread is not None and not self._done.is_set()

    @property
    def summary(self) -> Any:
        """The final RunSummary once the run ended, else ``None``."""
        return self._summary

    def close(self) -> None:
        """Stop and wait (a run never started: close what :meth:`start` would have opened)."""
        if self._thread is not None:
            self.stop("stop")
            self.wait()
        elif self._pipeline is not None:
            self._pipeline.apply(lambda: None)
            for src in self._pipeline.sources:
                src.close()
            self._pipeline.outputs.close_all()
            self._close_detector()

    # ------------------------------------------------------------------------------------------- reading

    def _remember(self, result: Result) -> None:
        """Inline bus subscriber: the latest result per source and the rate samples (no I/O, no waiting)."""
        if result.events_only:
            return
        sid = result.frame.source_id
        src = next((s for s in self._pipeline.sources if s.source_id == sid), None) if self._pipeline else None
        if src is not None:  # not a removed source's last frames in flight
            self._latest[sid] = result
            self._rates.sample(sid, src.stats.read, self._pipeline.stats.processed(sid) + 1)

    def subscribe(self, callback: Optional[Callable[[Result], None]] = None, *, name: str = "subscriber",
                  inline: bool = False, queue_size: int = 256) -> Subscription:
        """Subscribe to the App's bus (every processed :class:`~edge_detect.types.Result` with its typed events;
        :meth:`~edge_detect.events.EventBus.subscribe`)."""
        return self.bus.subscribe(callback, name=name, inline=inline, queue_size=queue_size)

    def counts(self) -> Dict[str, Any]:
        """The counts so far (:meth:`~edge_detect.events.Counts.snapshot`): per source and total, lines, zones,
        events by type."""
        return self.bus.counts.snapshot()

    def config_dict(self) -> Dict[str, Any]:
        """The current config (:meth:`AppConfig.to_dict <edge_detect.app_config.AppConfig.to_dict>`: runtime changes
        included, every source with its resolved id, the model as given; credentials NOT masked: this is what
        ``--save-config`` writes back)."""
        cfg = self.config
        if cfg.model.path != self._model_given:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=self._model_given))
        return cfg.to_dict()

    def latest_frame(self, source_id: str, annotated: bool = True) -> Optional[np.ndarray]:
        """The latest processed frame of ``source_id`` as a BGR ``uint8 (H, W, 3)`` copy (boxes, analytics and the
        FPS overlay drawn unless ``annotated=False``), or ``None`` before its first frame.

        Raises:
            UnknownSourceError: no such source.
        """
        self._source_config(source_id)
        result = self._latest.get(source_id)
        if result is None:
            return None
        return (result.annotated if annotated else result.frame.image).copy()

    def status(self) -> Dict[str, Any]:
        """What runs now, JSON-ready::

            {"running", "uptime_s", "model", "device", "processed", "fps", "stopped_by" (once ended),
             "stages_ms": {stage: mean ms}, "cpu_ms_per_frame": {stage: CPU ms per processed frame},
             "sources": [{"id", "uri" (masked), "state", "fps_in", "fps_out", "read", "processed", "dropped",
             "reconnects", "last_frame_age_s", "enabled", "inference_calls", "skipped_frames", "motion_frames"
             [, "detect"]}, ...]}

        ``inference_calls`` / ``skipped_frames``: processed frames the detector ran on / that a gate kept from it;
        ``motion_frames`` and ``detect`` (mode, fps, decisions by reason) come from the source's gate
        (:mod:`edge_detect.stream.gating`; README "CPU boxes").

        ``sources`` is a list in the order the sources were added (the REST API's ``GET /status`` returns it as is).

        ``state``: ``online``, ``offline`` (never connected yet), ``reconnecting`` (a live source with no frame for
        longer than its read timeout), ``paused`` (disabled), or ``ended`` (read to its end and every frame it read
        processed or dropped: its figures are final).
        """
        p = self._pipeline
        out: Dict[str, Any] = {"running": self.running, "uptime_s": (time.perf_counter() - self._t0) if p else 0.0,
                               "model": self.config.model.path, "device": p.input_device if p else None,
                               "sources": []}
        if p is None:
            return out
        out.update(processed=p.stats.processed(), fps=p.stats.rate.rate,
                   stages_ms={k: v for k, v in p.stats.stage_means().items() if v == v},
                   cpu_ms_per_frame={k: round(v, 3) for k, v in p.cpu_per_frame().items()})
        if self._summary is not None:
            out["stopped_by"] = self._summary.stopped_by
        for src in p.sources:
            out["sources"].append(self._source_status(p, src))
        return out

    def _source_status(self, p: Any, src: Any) -> Dict[str, Any]:
        fig = p.source_figures(src)
        self._rates.sample(src.source_id, fig["read"], fig["processed"])
        fps_in, fps_out = self._rates.fps(src.source_id)
        age = p.stats.last_frame_age_s(src.source_id)
        enabled = next((sc.enabled for sc in self.config.sources if sc.id == src.source_id), True)  # mid-change
        return {"id": src.source_id, "uri": src.uri, "state": self._state(src, age, enabled, fig),
                "fps_in": round(fps_in, 2), "fps_out": round(fps_out, 2), "read": fig["read"],
                "processed": fig["processed"], "dropped": fig["dropped"], "reconnects": fig["reconnects"],
                "last_frame_age_s": None if age is None else round(age, 3), "enabled": enabled,
                **{k: fig[k] for k in ("inference_calls", "skipped_frames", "motion_frames", "detect") if k in fig}}

    def _state(self, src: Any, age: Optional[float], enabled: bool, fig: Dict[str, int]) -> str:
        if src.exhausted and fig["processed"] + fig["dropped"] >= fig["read"]:  # its last frames are through too
            return "ended"
        if not enabled:
            return "paused"
        if src.offline:
            return "offline"
        if src.is_live and age is not None and age > src.opts.read_timeout_s:
            return "reconnecting"
        return "online"

    # ------------------------------------------------------------------------------------------- changes

    def _changeable(self) -> Any:
        """The pipeline, built if needed, for a runtime change.

        Raises:
            ConfigError: the run has ended (a change would reach no batch).
        """
        if self._done.is_set():
            stopped = getattr(self._summary, "stopped_by", None) or "an error"
            raise ConfigError(f"runtime change: expected a running app, got one whose run has ended ({stopped})")
        return self._prepare()

    def _source_config(self, source_id: str) -> SourceConfig:
        """The config of a source (``self.config.sources`` hold the resolved ids once the pipeline is built)."""
        for sc in self.config.sources:
            if sc.id == source_id:
                return sc
        raise UnknownSourceError(f"source {source_id!r}: expected one of {[sc.id for sc in self.config.sources]}")

    def _set_source_config(self, source_id: str, sc: Optional[SourceConfig]) -> None:
        """Replace (``sc``) or drop (``None``) the config of ``source_id``."""
        sources = tuple(sc if c.id == source_id else c for c in self.config.sources
                        if c.id != source_id or sc is not None)
        self.config = dataclasses.replace(self.config, sources=sources)

    def add_source(self, source: Union[SourceConfig, str]) -> str:
        """Open ``source`` and read it from the next batch on, with its own chain (its lines / zones counted
        from then on); returns its id.

        Raises:
            DuplicateSourceError: an id the App already has. SourceError: it cannot be opened. ConfigError: the run
            has ended.
        """
        from edge_detect.stream.sources import open_source

        p = self._changeable()
        sc = source if isinstance(source, SourceConfig) else SourceConfig(str(source))
        if sc.id is not None and sc.id in {s.source_id for s in p.sources}:
            raise DuplicateSourceError(f"source id {sc.id!r}: expected a new id, got one the app already has "
                                       f"({[s.source_id for s in p.sources]})")
        gate = self.config.gate_for(sc)  # checked before anything opens
        src = open_source(sc.uri, source_id=sc.id, capture=self.config.capture, **sc.options)

        def change() -> str:
            sid = p.add_source(src)
            self._uris[sid] = sc.uri  # recorded too (outputs.record), from its own URI
            if gate is not None:
                p.set_gate(sid, gate)
            self.config = dataclasses.replace(self.config, sources=self.config.sources + (
                dataclasses.replace(sc, id=sid),))
            p.update_chain(sid, self._chain_builder(sid, self.config.sources[-1]))
            p.batcher.set_enabled(sid, sc.enabled)
            return sid

        try:
            return p.apply(change)
        except BaseException:
            src.close()
            raise

    def remove_source(self, source_id: str) -> None:
        """Stop reading ``source_id`` and close it (frames in flight still go through; its counts stay).

        Raises:
            UnknownSourceError: no such source.
        """
        p = self._changeable()
        self._source_config(source_id)

        def change() -> None:
            self._set_source_config(source_id, None)
            p.remove_source(source_id)
            self._latest.pop(source_id, None)
            self._rates.forget(source_id)

        p.apply(change)

    def update_source(self, source_id: str, *, lines: Optional[Dict[str, Any]] = None,
                      zones: Optional[Dict[str, Any]] = None, conf: Optional[float] = None,
                      classes: Optional[List[Union[int, str]]] = None, enabled: Optional[bool] = None,
                      detect: Optional[Dict[str, Any]] = None, motion: Optional[Dict[str, Any]] = None) -> SourceConfig:
        """Change a source between two batches: its own ``lines`` / ``zones`` (replacing the previous ones; new
        regions count from the next batch, counts of kept names carry on), its ``conf`` / ``classes`` filters,
        ``enabled`` (pause / resume), its own ``detect`` / ``motion`` keys (replacing the previous ones: a new gate,
        the motion detector relearns the background). ``None`` = unchanged. Returns the source's new config.

        Raises:
            UnknownSourceError: no such source. ConfigError: bad geometry or thresholds.
        """
        p = self._changeable()
        changes = {k: v for k, v in (("lines", lines), ("zones", zones), ("conf", conf),
                                     ("classes", tuple(classes) if classes is not None else None),
                                     ("enabled", enabled), ("detect", detect), ("motion", motion)) if v is not None}
        sc = dataclasses.replace(self._source_config(source_id), **changes)  # validated here
        builder = self._chain_builder(source_id, sc)
        gate = self.config.gate_for(sc) if detect is not None or motion is not None else False

        def change() -> None:
            self._set_source_config(source_id, sc)
            p.update_chain(source_id, builder)
            p.batcher.set_enabled(source_id, sc.enabled)
            if gate is not False:
                p.set_gate(source_id, gate)

        p.apply(change)
        return sc

    def _chain_builder(self, source_id: str, sc: SourceConfig) -> Callable[[List[Any]], List[Any]]:
        """A chain for ``source_id`` per ``sc``: its filter first, the tracker (kept, or made when counting needs
        one), the other processors kept, then fresh line / zone counters for its regions."""
        from edge_detect.app_config import source_filter
        from edge_detect.stream.processors import make_processor
        from edge_detect.stream.processors.filter import SourceFilter
        from edge_detect.stream.processors.region import RegionCounter

        names = self._pipeline.names
        one = dataclasses.replace(self.config, sources=(sc,))
        regions = [r for r in (region_processor(k, one, names, [source_id]) for k in ("lines", "zones")) if r]
        flt = source_filter(one, names, [source_id])
        tracker = self.config.analytics.tracker

        def build(chain: List[Any]) -> List[Any]:
            kept = [proc for proc in chain if not isinstance(proc, (RegionCounter, SourceFilter))]
            if regions and tracker.name != "none" and not any(proc.name == tracker.name for proc in kept):
                from edge_detect.app_config import _with_names

                kept.insert(0, make_processor(tracker.name, **_with_names(tracker.name, tracker.options, names)))
            return ([flt] if flt is not None else []) + kept + regions

        return build

    def add_sink(self, sink: Union[SinkConfig, str, Sink]) -> Sink:
        """Open ``sink`` (a spec, a :class:`SinkConfig` or an opened sink), start it with the run's context and
        write to it from the next frame on; returns the opened sink."""
        from edge_detect.sinks import open_sink

        p = self._prepare()
        if isinstance(sink, Sink):
            opened = sink
        else:
            sc = sink if isinstance(sink, SinkConfig) else SinkConfig(str(sink))
            opened = open_sink(sc.spec, **sc.options)
        p.apply(lambda: p.add_sink(opened))
        return opened

    def remove_sink(self, sink: Union[Sink, str]) -> None:
        """Stop writing to ``sink`` (the object, or its ``name``) and close it (finalized: a video stays playable).

        Raises:
            ConfigError: no such sink.
        """
        p = self._prepare()
        found = sink if isinstance(sink, Sink) else next((s for s in p.sinks if s.name == sink), None)
        if found is None or found not in p.sinks:
            raise ConfigError(f"sink {sink!r}: expected one of {[s.name for s in p.sinks]}")
        p.apply(lambda: p.remove_sink(found))

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
