"""Configuration of ``edge-detect run``: frozen dataclasses loaded from YAML, overridden by CLI flags.

A config file (see ``configs/app/default.yaml``)::

    model: yolov5n.onnx
    conf: 0.25
    classes: [person, car]          # names or ids
    sources:
      - video.mp4                   # a plain string...
      - uri: rtsp://user:pw@cam/1   # ...or a mapping with an id and per-source capture options
        id: gate
        options: {read_timeout_s: 5}
    capture: {backoff_max_s: 10}    # defaults for every source (edge_detect.stream.sources.CaptureOptions)
    sinks: {save_video: out.mp4, save_jsonl: out.jsonl, preview_port: 8080}
    tracker: {enabled: true}

Unknown keys are rejected with the closest known key (:mod:`edge_detect.config`). :func:`build_pipeline`
turns an :class:`AppConfig` into a ready :class:`~edge_detect.stream.pipeline.Pipeline`.
"""
from __future__ import annotations

import difflib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from edge_detect.config import from_mapping, load_yaml, override
from edge_detect.errors import ConfigError
from edge_detect.stream.sources import CaptureOptions

__all__ = ["AppConfig", "SourceConfig", "SinksConfig", "TrackerConfig", "load_app_config", "resolve_classes",
           "build_pipeline", "build_detector"]


@dataclass(frozen=True)
class SourceConfig:
    """One input: ``uri`` (anything :func:`~edge_detect.stream.sources.open_source` takes), an optional ``id``, and
    ``options`` overriding the global ``capture`` options for this source."""

    uri: str
    id: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SinksConfig:
    """Outputs. ``show``: ``None`` = show a window only where a display exists."""

    show: Optional[bool] = None
    save_video: Optional[str] = None
    save_jsonl: Optional[str] = None
    preview_port: Optional[int] = None
    preview_host: str = "127.0.0.1"
    video_fps: Optional[float] = None


@dataclass(frozen=True)
class TrackerConfig:
    """IoU tracker (:class:`~edge_detect.stream.tracking.IoUTracker`) settings."""

    enabled: bool = False
    iou: float = 0.3
    max_age: int = 30


@dataclass(frozen=True)
class AppConfig:
    """Everything ``edge-detect run`` needs (see module doc).

    Attributes:
        model: ``.onnx`` / ``.engine`` / ``.pt`` path.
        backend: backend name, ``None`` = by file suffix.
        imgsz: ``[size]`` or ``[h, w]`` for dynamic-shape models (``None`` = the model's nominal size).
        threads: inference threads for ONNX Runtime (0 = its default).
        rebuild_on_mismatch: TensorRT engines built by another TensorRT/GPU are rebuilt from their ONNX.
        conf, iou, max_det, agnostic: detection thresholds and NMS settings.
        classes: keep only these classes, by name or id (``None`` = all).
        sources, capture, sinks, tracker: see the classes above.
        max_frames, duration: stop conditions (``None`` = until the sources end).
        summary_json: write the run summary there.
        progress: progress bar (files) / periodic stats line (live).
        stats_interval_s: period of the stats line for live sources.
    """

    model: Optional[str] = None
    backend: Optional[str] = None
    imgsz: Optional[Tuple[int, ...]] = None
    threads: int = 0
    rebuild_on_mismatch: bool = False
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 1000
    classes: Optional[Tuple[Union[int, str], ...]] = None
    agnostic: bool = False
    sources: Tuple[SourceConfig, ...] = ()
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    max_frames: Optional[int] = None
    duration: Optional[float] = None
    summary_json: Optional[str] = None
    progress: bool = True
    stats_interval_s: float = 10.0

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.conf <= 1.0, "conf", "a value in [0, 1]", self.conf),
            (0.0 <= self.iou <= 1.0, "iou", "a value in [0, 1]", self.iou),
            (self.max_det >= 1, "max_det", ">= 1", self.max_det),
            (self.imgsz is None or (len(self.imgsz) in (1, 2) and min(self.imgsz) > 0), "imgsz",
             "one or two positive sizes", self.imgsz),
            (self.max_frames is None or self.max_frames >= 1, "max_frames", ">= 1", self.max_frames),
            (self.duration is None or self.duration > 0, "duration", "> 0 seconds", self.duration),
            (self.threads >= 0, "threads", ">= 0", self.threads),
            (0.0 < self.tracker.iou <= 1.0, "tracker.iou", "a value in (0, 1]", self.tracker.iou),
            (self.tracker.max_age >= 0, "tracker.max_age", ">= 0", self.tracker.max_age),
            (self.sinks.preview_port is None or 0 <= self.sinks.preview_port <= 65535, "sinks.preview_port",
             "a port in 0..65535", self.sinks.preview_port),
        ]
        for ok, name, expected, actual in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {actual!r}")


def _normalize(data: Mapping[str, Any]) -> Dict[str, Any]:
    """Accept plain strings for sources and a bare int for imgsz."""
    out = dict(data)
    if "source" in out and "sources" not in out:
        raise ConfigError("unknown key 'source' (did you mean 'sources'?)")
    srcs = out.get("sources")
    if srcs is not None:
        if isinstance(srcs, (str, int)) or isinstance(srcs, Mapping):
            srcs = [srcs]
        out["sources"] = [{"uri": str(s)} if isinstance(s, (str, int)) else s for s in srcs]
    if isinstance(out.get("imgsz"), int):
        out["imgsz"] = [out["imgsz"]]
    return out


def load_app_config(path: Optional[Union[str, os.PathLike]] = None,
                    overrides: Optional[Mapping[str, Any]] = None) -> AppConfig:
    """Load an app config file (or the defaults) and apply ``overrides`` (``None`` values ignored).

    Args:
        path: YAML file, or ``None`` for the built-in defaults.
        overrides: flat or dotted keys (``"sinks.save_video"``), e.g. from CLI flags; ``sources`` may be a
            list of strings.

    Raises:
        ConfigError: unknown key (with a suggestion), wrong type or out-of-range value.
    """
    cfg = AppConfig()
    if path is not None:
        data = load_yaml(path) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        cfg = from_mapping(_normalize(data), AppConfig, where=str(path))
    if overrides:
        ov = dict(overrides)
        if ov.get("sources") is not None:
            ov["sources"] = tuple(s if isinstance(s, SourceConfig) else SourceConfig(str(s))
                                  for s in ov["sources"])
        if isinstance(ov.get("imgsz"), int):
            ov["imgsz"] = (ov["imgsz"],)
        cfg = override(cfg, ov)
    return cfg


def resolve_classes(classes: Optional[Sequence[Union[int, str]]], names: Sequence[str]) -> Optional[List[int]]:
    """Class filter as ids: ints and digit strings are ids, other strings are looked up in ``names``.

    Raises:
        ConfigError: an unknown name (with the closest match) or an id outside ``[0, len(names))``.
    """
    if classes is None:
        return None
    ids: List[int] = []
    for c in classes:
        if isinstance(c, int) or (isinstance(c, str) and c.strip().isdigit()):
            cid = int(c)
            if names and not 0 <= cid < len(names):
                raise ConfigError(f"classes: expected ids in [0, {len(names) - 1}], got {cid}")
            ids.append(cid)
            continue
        if c not in names:
            match = difflib.get_close_matches(str(c), list(names), n=1, cutoff=0.6)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ConfigError(f"classes: unknown class name '{c}'{hint}; the model has {len(names)} classes")
        ids.append(list(names).index(c))
    return ids


def build_detector(cfg: AppConfig) -> Any:
    """A :class:`~edge_detect.detector.Detector` from the config (class names resolved with the model's)."""
    from edge_detect.detector import Detector

    if not cfg.model:
        raise ConfigError("model: expected a model path (--model or 'model:' in the config), got none")
    opts: Dict[str, Any] = {"threads": cfg.threads} if cfg.threads else {}
    if cfg.rebuild_on_mismatch:
        opts["rebuild_on_mismatch"] = True
    imgsz = None if cfg.imgsz is None else (cfg.imgsz[0] if len(cfg.imgsz) == 1 else tuple(cfg.imgsz))
    det = Detector(cfg.model, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, agnostic=cfg.agnostic,
                   backend=cfg.backend, imgsz=imgsz, **opts)
    try:
        ids = resolve_classes(cfg.classes, det.names)
    except ConfigError:
        det.close()
        raise
    det.classes = ids
    return det


def build_pipeline(cfg: AppConfig, detector: Any = None, stop_event: Optional[threading.Event] = None) -> Any:
    """Open sources and sinks and return a :class:`~edge_detect.stream.pipeline.Pipeline` (not yet run).

    Args:
        cfg: the app config (needs at least one source; a model unless ``detector`` is given).
        detector: use this detector instead of building one from ``cfg.model``.
        stop_event: event that stops the run when set (signal handlers).

    Raises:
        ConfigError / SourceError / SinkError / ModelError: with sources or sinks already opened closed again.
    """
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.sinks import DisplaySink, JsonlSink, MjpegPreviewSink, VideoSink, display_available
    from edge_detect.stream.sources import open_source
    from edge_detect.stream.tracking import IoUTracker

    if not cfg.sources:
        raise ConfigError("sources: expected at least one source (--source or 'sources:' in the config), got none")
    opened: List[Any] = []
    try:
        sources = []
        for s in cfg.sources:
            src = open_source(s.uri, source_id=s.id, capture=cfg.capture, **s.options)
            opened.append(src)
            sources.append(src)
        sinks = []
        sc = cfg.sinks
        if sc.save_video:
            sinks.append(VideoSink(sc.save_video, fps=sc.video_fps))
            opened.append(sinks[-1])
        if sc.save_jsonl:
            sinks.append(JsonlSink(sc.save_jsonl))
            opened.append(sinks[-1])
        if sc.preview_port is not None:
            sinks.append(MjpegPreviewSink(sc.preview_port, sc.preview_host))
            opened.append(sinks[-1])
        if sc.show or (sc.show is None and display_available()[0]):
            sinks.append(DisplaySink())
        det = detector if detector is not None else build_detector(cfg)
        tracker = IoUTracker(cfg.tracker.iou, cfg.tracker.max_age) if cfg.tracker.enabled else None
        return Pipeline(sources, det, sinks, tracker=tracker, max_frames=cfg.max_frames, duration=cfg.duration,
                        progress=cfg.progress, stop_event=stop_event, stats_interval_s=cfg.stats_interval_s)
    except BaseException:
        for obj in opened:
            obj.close()
        raise
