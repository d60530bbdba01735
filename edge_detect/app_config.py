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
        lines: {entry: [0, 100, 640, 100]}  # lines / zones of this source only (added to the common ones)
    capture: {backoff_max_s: 10}    # defaults for every source (edge_detect.stream.sources.CaptureOptions)
    sinks:                          # one list of sink specs (edge_detect.sinks.open_sink)
      - out.mp4                     # a plain spec: path by suffix, URI by scheme, or "display"...
      - spec: out.jsonl             # ...or a mapping with options for the sink
      - {spec: "mjpeg://127.0.0.1:8080", options: {quality: 70}}
    show: null                      # display window: null = only where a display exists
    tracker: {enabled: true, name: bytetrack, options: {buffer_s: 2.0}}   # or name: iou / none
    processors: []                  # more per-source processors, e.g. [{name: lines, options: {...}}]
    lines:                          # counting lines of every source, source-frame pixels (x1, y1, x2, y2)
      gate: [320, 0, 320, 360]      # "in" = from the left of (x1,y1)->(x2,y2) to its right, as seen in the image
      door: {xyxy: [0, 300, 200, 300], classes: [person], anchor: bottom_center}
    zones:                          # polygons (x1, y1, x2, y2, x3, y3, ...)
      bay: {polygon: [0, 200, 300, 200, 300, 360, 0, 360], classes: [car, truck]}
    line_options: {hysteresis_px: 4, recount: false}     # edge_detect.stream.processors.lines.LineCounter
    zone_options: {lost_s: 3}                            # edge_detect.stream.processors.zones.ZoneCounter

The pre-v2 mapping form ``sinks: {save_video: ..., save_jsonl: ..., preview_port: ..., preview_host: ...,
show: ..., video_fps: ...}`` is still read (converted to the list, with a warning).

Unknown keys are rejected with the closest known key (:mod:`edge_detect.config`). :func:`build_pipeline`
turns an :class:`AppConfig` into a ready :class:`~edge_detect.stream.pipeline.Pipeline`.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from edge_detect.config import check_thresholds, from_mapping, load_yaml, override, parse_imgsz
from edge_detect.errors import ConfigError, SourceError
from edge_detect.stream.sources import CaptureOptions

__all__ = ["AppConfig", "SourceConfig", "SinkConfig", "TrackerConfig", "ProcessorConfig", "load_app_config", "resolve_classes",
           "build_pipeline", "build_detector", "add_sinks"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceConfig:
    """One input: ``uri`` (anything :func:`~edge_detect.stream.sources.open_source` takes), an optional ``id``,
    ``options`` overriding the global ``capture`` options for this source, and ``lines`` / ``zones`` counted on
    this source only (same forms as :attr:`AppConfig.lines` / :attr:`AppConfig.zones`)."""

    uri: str
    id: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    lines: Dict[str, Any] = field(default_factory=dict)
    zones: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.stream.processors.lines import line_specs
        from edge_detect.stream.processors.zones import zone_specs

        line_specs(self.lines)
        zone_specs(self.zones)


@dataclass(frozen=True)
class SinkConfig:
    """One output: ``spec`` (anything :func:`~edge_detect.sinks.open_sink` takes: ``out.mp4``, ``out.jsonl``,
    ``mjpeg://HOST:PORT``, ``display``...) and ``options`` for that sink (e.g. ``{fps: 30}`` for a video)."""

    spec: str
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.errors import SinkError
        from edge_detect.sinks.base import resolve_sink

        try:
            resolve_sink(self.spec)
        except SinkError as exc:
            raise ConfigError(f"sinks: {exc}") from exc


@dataclass(frozen=True)
class _LegacySinks:
    """The pre-v2 ``sinks:`` mapping, converted by :func:`_legacy_sinks`."""

    show: Optional[bool] = None
    save_video: Optional[str] = None
    save_jsonl: Optional[str] = None
    preview_port: Optional[int] = None
    preview_host: str = "127.0.0.1"
    video_fps: Optional[float] = None


def _legacy_sinks(data: Mapping[str, Any], where: str) -> Tuple[List[Dict[str, Any]], Optional[bool]]:
    """``(sink list, show)`` from the old ``sinks: {save_video: ...}`` mapping."""
    old = from_mapping(data, _LegacySinks, where=f"{where}.sinks")
    if old.preview_port is not None and not 0 <= old.preview_port <= 65535:
        raise ConfigError(f"sinks.preview_port: expected a port in 0..65535, got {old.preview_port}")
    out: List[Dict[str, Any]] = []
    if old.save_video:
        out.append({"spec": old.save_video, "options": {"fps": old.video_fps} if old.video_fps else {}})
    if old.save_jsonl:
        out.append({"spec": old.save_jsonl})
    if old.preview_port is not None:
        out.append({"spec": f"mjpeg://{old.preview_host}:{old.preview_port}"})
    LOGGER.warning("%s: 'sinks:' as a mapping is deprecated; write a list of specs instead, e.g. sinks: %s",
                   where, [d["spec"] for d in out] or ["out.mp4", "out.jsonl", "mjpeg://127.0.0.1:8080"])
    return out, old.show


@dataclass(frozen=True)
class ProcessorConfig:
    """One per-source processor (:func:`~edge_detect.stream.processors.make_processor`): ``name`` and its
    ``options``. Checked when the config is loaded (unknown name or option: :class:`ConfigError`)."""

    name: str
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.stream.processors import make_processor

        make_processor(self.name, **self.options)


@dataclass(frozen=True)
class TrackerConfig:
    """The tracker, the first processor of each source's chain when ``enabled`` (``--track`` / ``--tracker``).

    ``name``: a registered processor (``"bytetrack"``, the default, or ``"iou"``...), or ``"none"`` for no tracker
    even when lines or zones are configured (an error then); ``options``: its settings (``bytetrack``:
    :class:`~edge_detect.stream.processors.bytetrack.ByteTrack`; ``iou``: ``iou_threshold``, ``max_age``,
    ``class_aware``). The pre-v2 keys ``iou`` / ``max_age`` are read as ``options`` of the ``iou`` tracker.
    Lines and zones turn tracking on by themselves.
    """

    enabled: bool = False
    name: str = "bytetrack"
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.stream.processors import make_processor

        if self.name == "none":
            if self.options:
                raise ConfigError(f"tracker: expected no options with name 'none', got {sorted(self.options)}")
            return
        try:
            make_processor(self.name, **self.options)
        except ConfigError as exc:
            raise ConfigError(f"tracker: {exc}") from exc


@dataclass(frozen=True)
class AppConfig:
    """Everything ``edge-detect run`` needs (see module doc).

    Attributes:
        model: ``.onnx`` / ``.engine`` / ``.pt`` path.
        backend: backend name, ``None`` = by file suffix.
        imgsz: ``[size]`` or ``[h, w]`` (stored as ``(h, w)``) for dynamic-shape models (``None`` = the model's
            nominal size).
        force_imgsz: allow ``imgsz`` sides above :data:`~edge_detect.preprocess.MAX_IMGSZ` (4096).
        threads: inference threads for ONNX Runtime / OpenVINO (0 = its default).
        batch: frames per inference call, gathered across the sources (a static-batch model uses its own).
        device, precision, hint: OpenVINO backend options (``None`` = the backend's default: CPU, fp32 or int8
            for a quantized model, latency).
        rebuild_on_mismatch: TensorRT engines built by another TensorRT/GPU are rebuilt from their ONNX.
        conf, iou, max_det, agnostic: detection thresholds and NMS settings.
        classes: keep only these classes, by name or id (``None`` = all).
        sources, capture, tracker: see the classes above.
        processors: more per-source processors after the tracker (line / zone counters...), in order.
        lines: counting lines of every source, ``{NAME: [x1, y1, x2, y2]}`` or ``{NAME: {"xyxy": [...],
            "classes": [...], "anchor": ...}}``, source-frame pixels (:mod:`edge_detect.stream.processors.lines`).
        zones: polygons of every source, ``{NAME: [x1, y1, x2, y2, x3, y3, ...]}`` or ``{NAME: {"polygon": [...],
            "classes": [...], "anchor": ...}}`` (:mod:`edge_detect.stream.processors.zones`).
        line_options, zone_options: settings of the line / zone processors (``anchor``, ``hysteresis_px``,
            ``recount``, ``classes``...).
        sinks: the outputs, :class:`SinkConfig` each.
        show: the display window: ``None`` = only where a display exists (unless a ``display`` sink is listed).
        max_frames, duration: stop conditions (``None`` = until the sources end).
        summary_json: write the run summary there.
        progress: progress bar (files) / periodic stats line (live).
        stats_interval_s: period of the stats line for live sources.
    """

    model: Optional[str] = None
    backend: Optional[str] = None
    imgsz: Optional[Tuple[int, ...]] = None
    force_imgsz: bool = False
    threads: int = 0
    batch: int = 1
    rebuild_on_mismatch: bool = False
    device: Optional[str] = None
    precision: Optional[str] = None
    hint: Optional[str] = None
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 1000
    classes: Optional[Tuple[Union[int, str], ...]] = None
    agnostic: bool = False
    sources: Tuple[SourceConfig, ...] = ()
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    sinks: Tuple[SinkConfig, ...] = ()
    show: Optional[bool] = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    processors: Tuple[ProcessorConfig, ...] = ()
    lines: Dict[str, Any] = field(default_factory=dict)
    zones: Dict[str, Any] = field(default_factory=dict)
    line_options: Dict[str, Any] = field(default_factory=dict)
    zone_options: Dict[str, Any] = field(default_factory=dict)
    max_frames: Optional[int] = None
    duration: Optional[float] = None
    summary_json: Optional[str] = None
    progress: bool = True
    stats_interval_s: float = 10.0

    def __post_init__(self) -> None:
        check_thresholds(self.conf, self.iou, self.max_det)
        if self.imgsz is not None:
            object.__setattr__(self, "imgsz", parse_imgsz(self.imgsz))
        checks = [
            (self.max_frames is None or self.max_frames >= 1, "max_frames", ">= 1", self.max_frames),
            (self.duration is None or self.duration > 0, "duration", "> 0 seconds", self.duration),
            (self.threads >= 0, "threads", ">= 0", self.threads),
            (self.batch >= 1, "batch", ">= 1", self.batch),
        ]
        for ok, name, expected, actual in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {actual!r}")
        for kind, common, options in (("lines", self.lines, self.line_options),
                                      ("zones", self.zones, self.zone_options)):
            if options and "names" in options:
                raise ConfigError(f"{kind[:-1]}_options: unknown option 'names' (the model's class names are used)")
            if common or options or any(getattr(s, kind) for s in self.sources):
                _analytics_processor(kind, self, names=())  # validates geometry and options
        if self.tracker.name == "none" and self.has_analytics:
            raise ConfigError("tracker: expected a tracker for lines/zones (they count track ids), got 'none'")

    @property
    def has_analytics(self) -> bool:
        """Whether any line or zone is configured (common or per source)."""
        return bool(self.lines or self.zones or any(s.lines or s.zones for s in self.sources))


def _analytics_processor(kind: str, cfg: "AppConfig", names: Sequence[str],
                         source_ids: Optional[Sequence[str]] = None) -> Any:
    """The ``lines`` / ``zones`` processor of ``cfg`` (``None`` when it has none of that kind); per-source
    geometry is keyed by ``source_ids`` (the opened sources' ids, in config order; default: the configured ids or
    the uris)."""
    from edge_detect.stream.processors import make_processor

    ids = list(source_ids) if source_ids is not None else [s.id or s.uri for s in cfg.sources]
    common = cfg.lines if kind == "lines" else cfg.zones
    per_source = {sid: getattr(s, kind) for sid, s in zip(ids, cfg.sources) if getattr(s, kind)}
    if not common and not per_source:
        return None
    options = dict(cfg.line_options if kind == "lines" else cfg.zone_options)
    return make_processor(kind, **{kind: common, f"source_{kind}": per_source or None, "names": tuple(names),
                                   **options})


def _with_names(name: str, options: Mapping[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """``options`` plus ``names`` (the model's class names) when processor ``name`` takes them and none is given."""
    from edge_detect.stream.processors import processor_takes

    out = dict(options)
    if "names" not in out and processor_takes(name, "names"):
        out["names"] = tuple(names)
    return out


def _sink_items(sinks: Any) -> List[Any]:
    if isinstance(sinks, (str, Mapping)):
        sinks = [sinks]
    return [{"spec": str(s)} if isinstance(s, (str, os.PathLike)) else s for s in sinks]


def _normalize(data: Mapping[str, Any], where: str = "config") -> Dict[str, Any]:
    """Accept plain strings for sources and sinks, the old sinks mapping, and a bare int for imgsz."""
    out = dict(data)
    sinks = out.get("sinks")
    if isinstance(sinks, Mapping) and "spec" not in sinks:
        out["sinks"], show = _legacy_sinks(sinks, where)
        if show is not None and out.get("show") is None:
            out["show"] = show
    elif sinks is not None:
        out["sinks"] = _sink_items(sinks)
    if "source" in out and "sources" not in out:
        raise ConfigError("unknown key 'source' (did you mean 'sources'?)")
    srcs = out.get("sources")
    if srcs is not None:
        if isinstance(srcs, (str, int)) or isinstance(srcs, Mapping):
            srcs = [srcs]
        out["sources"] = [{"uri": str(s)} if isinstance(s, (str, int)) else s for s in srcs]
    if isinstance(out.get("imgsz"), int):
        out["imgsz"] = [out["imgsz"]]
    tracker = out.get("tracker")
    if isinstance(tracker, Mapping) and ("iou" in tracker or "max_age" in tracker):  # pre-v2 IoU settings
        tracker = dict(tracker)
        options = dict(tracker.get("options") or {})
        if "iou" in tracker:
            options["iou_threshold"] = tracker.pop("iou")
        if "max_age" in tracker:
            options["max_age"] = tracker.pop("max_age")
        tracker["options"] = options
        tracker.setdefault("name", "iou")
        out["tracker"] = tracker
    if isinstance(out.get("processors"), (list, tuple)):
        out["processors"] = [{"name": p} if isinstance(p, str) else p for p in out["processors"]]
    return out


def load_app_config(path: Optional[Union[str, os.PathLike]] = None,
                    overrides: Optional[Mapping[str, Any]] = None) -> AppConfig:
    """Load an app config file (or the defaults) and apply ``overrides`` (``None`` values ignored).

    Args:
        path: YAML file, or ``None`` for the built-in defaults.
        overrides: flat or dotted keys (``"capture.read_timeout_s"``), e.g. from CLI flags; ``sources`` and
            ``sinks`` may be lists of strings (``sinks`` replaces the file's list: see :func:`add_sinks` to add);
            ``lines`` / ``zones`` mappings are added to the file's (a line or zone of the same name is replaced).

    Raises:
        ConfigError: unknown key (with a suggestion), wrong type or out-of-range value.
    """
    cfg = AppConfig()
    if path is not None:
        data = load_yaml(path) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        cfg = from_mapping(_normalize(data, str(path)), AppConfig, where=str(path))
    if overrides:
        ov = dict(overrides)
        if ov.get("sources") is not None:
            ov["sources"] = tuple(s if isinstance(s, SourceConfig) else SourceConfig(str(s))
                                  for s in ov["sources"])
        if ov.get("sinks") is not None:
            ov["sinks"] = tuple(s if isinstance(s, SinkConfig) else SinkConfig(str(s)) for s in ov["sinks"])
        if isinstance(ov.get("imgsz"), int):
            ov["imgsz"] = (ov["imgsz"],)
        for kind in ("lines", "zones"):  # --line / --zone add to the file's (a same name replaces)
            if ov.get(kind):
                ov[kind] = {**getattr(cfg, kind), **dict(ov[kind])}
        cfg = override(cfg, ov)
    return cfg


def add_sinks(cfg: AppConfig, specs: Sequence[Union[str, SinkConfig]]) -> AppConfig:
    """``cfg`` with ``specs`` added to its sinks; a config sink of the same kind (registry key: video suffix,
    ``.jsonl``, ``mjpeg``, ``display``...) is replaced, so ``--save-jsonl b.jsonl`` overrides ``sinks: [a.jsonl]``.
    """
    from edge_detect.sinks.base import resolve_sink

    new = [s if isinstance(s, SinkConfig) else SinkConfig(str(s)) for s in specs]
    if not new:
        return cfg
    kinds = {_kind(resolve_sink(s.spec)[1]) for s in new}
    kept = [s for s in cfg.sinks if _kind(resolve_sink(s.spec)[1]) not in kinds]
    return dataclasses.replace(cfg, sinks=tuple(kept + new))


def _resolve_key(spec: str) -> str:
    from edge_detect.sinks.base import resolve_sink

    return resolve_sink(spec)[1]


def _kind(key: str) -> str:
    """Registry key -> sink kind (all video suffixes are one kind)."""
    from edge_detect.sinks.base import SINK_MODULES

    return SINK_MODULES.get(key, key)


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
    opts.update({k: v for k, v in (("device", cfg.device), ("precision", cfg.precision), ("hint", cfg.hint))
                 if v is not None})
    det = Detector(cfg.model, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, agnostic=cfg.agnostic,
                   backend=cfg.backend, imgsz=cfg.imgsz, force_imgsz=cfg.force_imgsz, **opts)
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

    The model is loaded first, so a bad model leaves no output file behind. With several sources, a live one
    (camera, stream) that cannot be opened yet does not stop the others: it starts offline and keeps retrying
    with the capture backoff; only when none can be opened does the run fail.

    Raises:
        ConfigError / SourceError / SinkError / ModelError: with the detector, sources or sinks already opened
        closed again.
    """
    from edge_detect.sinks import open_sink
    from edge_detect.sinks.display import display_available
    from edge_detect.sinks.events import arrange_sinks
    from edge_detect.stream.pipeline import Pipeline
    from edge_detect.stream.sources import open_source
    from edge_detect.stream.processors import make_processor

    if not cfg.sources:
        raise ConfigError("sources: expected at least one source (--source or 'sources:' in the config), got none")
    from edge_detect.stream.sources import parse_source

    for s in cfg.sources:  # cheap checks first (a missing file), before the model loads
        parse_source(s.uri)
    opened: List[Any] = []
    try:
        det = detector if detector is not None else build_detector(cfg)
        if detector is None:
            opened.append(det)
        sources = []
        several = len(cfg.sources) > 1
        for s in cfg.sources:
            src = open_source(s.uri, source_id=s.id, capture=cfg.capture, offline_ok=several, **s.options)
            opened.append(src)
            sources.append(src)
        if sources and all(src.offline for src in sources):
            raise SourceError(f"sources: expected at least one that opens, got {len(sources)} offline: "
                              + ", ".join(src.uri for src in sources))
        specs = list(cfg.sinks)
        has_display = any(_kind(_resolve_key(s.spec)) == "display" for s in specs)
        if cfg.show is False:
            specs = [s for s in specs if _kind(_resolve_key(s.spec)) != "display"]
        elif not has_display and (cfg.show or (cfg.show is None and display_available()[0])):
            specs.append(SinkConfig("display"))
        sinks = []
        for sc in specs:
            sinks.append(open_sink(sc.spec, **sc.options))
            opened.append(sinks[-1])
        sinks = arrange_sinks(sinks)
        names = tuple(getattr(det, "names", ()) or ())
        track = cfg.tracker.name != "none" and (cfg.tracker.enabled or cfg.has_analytics)
        if track and not cfg.tracker.enabled:
            LOGGER.info("lines/zones configured: tracking with '%s'", cfg.tracker.name)
        procs = [make_processor(cfg.tracker.name, **_with_names(cfg.tracker.name, cfg.tracker.options, names))] \
            if track else []
        procs += [make_processor(p.name, **_with_names(p.name, p.options, names)) for p in cfg.processors]
        ids = [src.source_id for src in sources]
        procs += [p for p in (_analytics_processor(k, cfg, names, ids) for k in ("lines", "zones")) if p is not None]
        return Pipeline(sources, det, sinks, processors=procs, batch=cfg.batch, max_frames=cfg.max_frames,
                        duration=cfg.duration, progress=cfg.progress, stop_event=stop_event,
                        stats_interval_s=cfg.stats_interval_s)
    except BaseException:
        for obj in opened:
            obj.close()
        raise
