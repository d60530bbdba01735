"""Configuration of the edge app (``edge-detect run``, :class:`~edge_detect.app.App`): one nested, validated,
frozen :class:`AppConfig`, loaded from YAML and overridden by CLI flags.

A config file (see ``configs/app/default.yaml``)::

    model:                          # what detects: a file or a checkpoint name, thresholds, batching, runtime
      path: yolov5n.onnx
      conf: 0.25
      classes: [person, car]        # names or ids
    sources:                        # a plain string, or a mapping with an id, capture options, own lines/zones
      - video.mp4
      - uri: rtsp://user:pw@cam/1
        id: gate
        options: {read_timeout_s: 5}
        lines: {entry: [0, 100, 640, 100]}   # lines / zones of this source only (added to the common ones)
        conf: 0.4                   # per-source thresholds on top of the model's (filter only)
        classes: [person]
        enabled: true               # false: opened but not read (a live one keeps dropping stale frames)
        detect: {mode: motion, fps: 5}            # this source's detect settings (over the section's)
        motion: {mask: [[0, 0, 200, 0, 200, 60, 0, 60]]}   # its motion settings (a tree to ignore)
    capture: {backoff_max_s: 10}    # defaults for every source (edge_detect.stream.sources.CaptureOptions)
    detect:                         # when the detector runs, defaults for every source (README "CPU boxes")
      mode: always                  # always | motion: skip frames without motion and without moving tracks
      fps: null                     # at most N inference calls a second per source (null: every frame)
      stationary_s: 2.0             # tracks still this long are kept without re-detection (mode: motion)
    motion: {method: diff, min_area: 0.0002}   # the motion detector of mode: motion (edge_detect.stream.motion)
    analytics:                      # tracking and counting
      tracker: {enabled: true, name: bytetrack, options: {buffer_s: 2.0}}   # or name: iou / none
      processors: []                # more per-source processors, e.g. [{name: iou, options: {...}}]
      lines: {gate: [320, 0, 320, 360], door: {xyxy: [0, 300, 200, 300], classes: [person]}}
      zones: {bay: {polygon: [0, 200, 300, 200, 300, 360, 0, 360], classes: [car, truck]}}
      line_options: {hysteresis_px: 4, count: crossing}   # crossing (every crossing) | once (per track)
      zone_options: {lost_s: 3}
    outputs:                        # where frames go
      sinks: [out.mp4, {spec: out.jsonl}, {spec: "mjpeg://127.0.0.1:8080", options: {quality: 70}}]
      show: null                    # display window: null = only where a display exists
      summary_json: null
      record:                       # clips around events (README "Recording"; --record DIR)
        dir: clips/
        pre_s: 5                    # seconds before the first event of a clip
        post_s: 5                   # seconds after its last event
        max_clip_s: 120
        on: [line_cross, zone_enter, object_start:person]
        annotate: false             # false: the source's own packets (remuxed, evidence); true: boxes drawn
        retain: {days: 7, max_gb: 20}
    events:                         # events out (README "Events"): MQTT, webhook, snapshots, Prometheus
      mqtt: mqtts://user:pw@broker/site
      mqtt_options: {ca: ca.pem, qos: 1}
      webhook: https://hooks.local/x
      snapshots: snaps/
      metrics_port: 9100
    server:                         # how the service runs: stop conditions, logging, the HTTP endpoint
      max_frames: null
      duration: null
      progress: true
      stats_interval_s: 10
      host: 127.0.0.1               # the dashboard / REST API (edge-detect serve, run --http; README "Dashboard")
      port: null                    # null: run serves no HTTP without --http; serve uses 8080
      api_token: null               # or --api-token / EDGE_DETECT_API_TOKEN (changes need it)
      cors_origins: []              # stream_fps, jpeg_quality, events_capacity, thumbnails, allowed_hosts too

**Flat files** (every key at the top level: ``model: x.onnx``, ``conf``, ``sinks``, ``tracker``, ``lines``,
``max_frames``..., the layout before v3) are still read: converted with one deprecation warning
(:func:`nest_flat`). The pre-v2 ``sinks: {save_video: ...}`` mapping is converted too.

Unknown keys are rejected with the closest known key (:mod:`edge_detect.config`). :func:`build_pipeline` turns an
:class:`AppConfig` into a ready :class:`~edge_detect.stream.pipeline.Pipeline`; :class:`~edge_detect.app.App`
runs it as a service.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from edge_detect.config import check_thresholds, from_mapping, load_yaml, override, parse_imgsz, suggest_key
from edge_detect.errors import ConfigError, SinkError, SourceError
from edge_detect.recording import RecordConfig
from edge_detect.stream.motion import MotionGate
from edge_detect.stream.sources import CaptureOptions
from edge_detect.urls import is_loopback, mask_credentials

__all__ = ["AppConfig", "ModelConfig", "SourceConfig", "SinkConfig", "TrackerConfig", "ProcessorConfig", "DetectConfig",
           "AnalyticsConfig", "OutputsConfig", "EventsConfig", "ServerConfig", "load_app_config", "nest_flat",
           "resolve_classes", "build_pipeline", "build_detector", "build_processors", "add_sinks", "run_sinks",
           "record_dir", "record_sink", "check_run_outputs", "FLAT_KEYS", "DEFAULT_HTTP_PORT"]

LOGGER = logging.getLogger(__name__)

#: the HTTP port ``edge-detect serve`` binds when neither ``--http`` nor ``server.port`` says otherwise
DEFAULT_HTTP_PORT = 8080
#: shortest API token accepted
MIN_TOKEN_CHARS = 16


# ------------------------------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class ModelConfig:
    """What detects.

    Attributes:
        path: ``.onnx`` / ``.xml`` / ``.engine`` / ``.pt`` file or a checkpoint name (``None``: the default model).
        backend: backend name, ``None`` = by file suffix.
        imgsz: ``[size]`` or ``[h, w]`` (stored as ``(h, w)``) for dynamic-shape models (``None``: the model's).
        force_imgsz: allow sides above :data:`~edge_detect.preprocess.MAX_IMGSZ` (4096).
        threads: inference threads for ONNX Runtime / OpenVINO (0 = its default).
        batch: frames per inference call, gathered across the sources (a static-batch model uses its own).
        device: where the model runs: ``cpu`` / ``cuda[:N]`` for .pt, .onnx and .engine models, an OpenVINO device
            name for .xml models (``None`` = the backend's default; :mod:`edge_detect.devices` routes it).
        half: FP16 inference of a .pt model on CUDA. tf32: let FP32 on CUDA use TensorFloat-32 (off: the CPU's
            detections). device_path: the GPU-resident path on/off (``None``: the backend's default).
        precision, hint: OpenVINO options (``None`` = the backend's default).
        rebuild_on_mismatch: TensorRT engines built by another TensorRT/GPU are rebuilt from their ONNX.
        conf, iou, max_det, agnostic: detection thresholds and NMS settings.
        classes: keep only these classes, by name or id (``None`` = all).
    """

    path: Optional[str] = None
    backend: Optional[str] = None
    imgsz: Optional[Tuple[int, ...]] = None
    force_imgsz: bool = False
    threads: int = 0
    batch: int = 1
    rebuild_on_mismatch: bool = False
    device: Optional[str] = None
    half: bool = False
    tf32: bool = False
    device_path: Optional[bool] = None
    precision: Optional[str] = None
    hint: Optional[str] = None
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 1000
    classes: Optional[Tuple[Union[int, str], ...]] = None
    agnostic: bool = False

    def __post_init__(self) -> None:
        check_thresholds(self.conf, self.iou, self.max_det)
        if self.imgsz is not None:
            object.__setattr__(self, "imgsz", parse_imgsz(self.imgsz))
        for ok, name, expected, actual in ((self.threads >= 0, "threads", ">= 0", self.threads),
                                           (self.batch >= 1, "batch", ">= 1", self.batch)):
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {actual!r}")


@dataclass(frozen=True)
class SourceConfig:
    """One input: ``uri`` (anything :func:`~edge_detect.stream.sources.open_source` takes), an optional ``id``,
    ``options`` overriding the global ``capture`` options for this source, ``lines`` / ``zones`` counted on this
    source only (same forms as :attr:`AnalyticsConfig.lines` / ``zones``), per-source ``conf`` / ``classes``
    (filters applied to its detections after the model's own thresholds), ``enabled`` (``False``: opened, not
    read), and ``detect`` / ``motion``: this source's keys of the :class:`DetectConfig` section and of the
    ``motion`` section (over those sections' values)."""

    uri: str
    id: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    lines: Dict[str, Any] = field(default_factory=dict)
    zones: Dict[str, Any] = field(default_factory=dict)
    conf: Optional[float] = None
    classes: Optional[Tuple[Union[int, str], ...]] = None
    enabled: bool = True
    detect: Dict[str, Any] = field(default_factory=dict)
    motion: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.stream.gating import make_gate
        from edge_detect.stream.processors.lines import line_specs
        from edge_detect.stream.processors.zones import zone_specs

        line_specs(self.lines)
        zone_specs(self.zones)
        if self.detect or self.motion:
            _check_detect_keys(self.detect, f"source {self.id or self.uri} detect")
            try:
                make_gate(self.detect, self.motion)
            except ConfigError as exc:
                raise ConfigError(f"source {self.id or self.uri}: {exc}") from exc
        check_thresholds(conf=self.conf, names=(f"source {self.id or self.uri} conf", "iou", "max_det"))


@dataclass(frozen=True)
class DetectConfig:
    """When the detector runs (README "CPU boxes"; :mod:`edge_detect.stream.gating`), for every source; a source's
    own ``detect`` keys override these.

    Attributes:
        mode: ``always`` (every frame) or ``motion``: skip frames with no motion (the ``motion`` section's detector)
            and no moving tracks (``--detect``).
        fps: at most this many inference calls per second of stream time per source; the tracker predicts in
            between (``None``: every frame; ``--detect-fps``).
        stationary_s: with ``mode: motion``, tracks still for this long are kept without re-detection.
        refresh_s: while skipping with still tracks, look again once every this many seconds (0: never).
        infer_calibrating: run the detector while the motion detector (re)learns the background.
        regions: with ``mode: motion``, run the model on crops around the motion and the tracks instead of the
            whole frame (region inference: small far-away objects get more pixels): ``true``, ``false`` or
            settings (:class:`~edge_detect.stream.regions.RegionOptions`; ``--detect-regions``).
    """

    mode: str = "always"
    fps: Optional[float] = None
    stationary_s: float = MotionGate.stationary_s
    refresh_s: float = MotionGate.refresh_s
    infer_calibrating: bool = MotionGate.infer_calibrating
    regions: Union[bool, Dict[str, Any]] = False

    def __post_init__(self) -> None:
        from edge_detect.stream.regions import RegionOptions

        RegionOptions.from_config(self.regions)  # the mode rule is checked per source (gate_for)
        MotionGate.from_config({k: v for k, v in self.options().items() if k != "regions"})

    def options(self) -> Dict[str, Any]:
        """The settings as :func:`~edge_detect.stream.gating.make_gate` takes them (the
        :class:`~edge_detect.stream.motion.MotionGate` options and ``regions``)."""
        return dataclasses.asdict(self)


def _check_detect_keys(options: Mapping[str, Any], where: str) -> None:
    """A source's ``detect`` keys are :class:`DetectConfig` fields (ConfigError naming the closest)."""
    known = [f.name for f in dataclasses.fields(DetectConfig)]
    for key in options:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest_key(str(key), known)}; expected some of "
                              f"{', '.join(known)}")


@dataclass(frozen=True)
class SinkConfig:
    """One output: ``spec`` (anything :func:`~edge_detect.sinks.open_sink` takes: ``out.mp4``, ``out.jsonl``,
    ``mjpeg://HOST:PORT``, ``display``, ``mqtt://``...) and ``options`` for that sink (e.g. ``{fps: 30}``)."""

    spec: str
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.sinks.base import resolve_sink

        try:
            resolve_sink(self.spec)
        except SinkError as exc:
            raise ConfigError(f"sinks: {exc}") from exc


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
    even when lines or zones are configured (an error then); ``options``: its settings. The pre-v2 keys ``iou`` /
    ``max_age`` are read as ``options`` of the ``iou`` tracker. Lines and zones turn tracking on by themselves.
    """

    enabled: bool = False
    name: str = "bytetrack"
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.stream.processors import make_processor, tracker_names

        if self.name == "none":
            if self.options:
                raise ConfigError(f"tracker: expected no options with name 'none', got {sorted(self.options)}")
            return
        if self.name not in tracker_names():
            known = tracker_names() + ["none"]
            raise ConfigError(f"tracker: unknown name {self.name!r}; expected one of {', '.join(known)}"
                              f"{suggest_key(self.name, known)}")
        try:
            make_processor(self.name, **self.options)
        except ConfigError as exc:
            raise ConfigError(f"tracker: {exc}") from exc


@dataclass(frozen=True)
class AnalyticsConfig:
    """Tracking and counting: the tracker, more processors, the lines / zones of every source (source-frame
    pixels; :mod:`edge_detect.stream.processors.lines` / ``.zones``) and the settings of their counters."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    processors: Tuple[ProcessorConfig, ...] = ()
    lines: Dict[str, Any] = field(default_factory=dict)
    zones: Dict[str, Any] = field(default_factory=dict)
    line_options: Dict[str, Any] = field(default_factory=dict)
    zone_options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edge_detect.stream.processors.lines import line_specs
        from edge_detect.stream.processors.zones import zone_specs

        line_specs(self.lines)  # geometry checked when the config is loaded, before anything opens
        zone_specs(self.zones)


@dataclass(frozen=True)
class OutputsConfig:
    """Where frames go: ``sinks`` (:class:`SinkConfig` each), ``show`` (the display window: ``None`` = only where a
    display exists, unless a ``display`` sink is listed), ``summary_json`` (the run summary's file) and ``record``
    (clips around events: :class:`~edge_detect.recording.RecordConfig`, ``None`` = off; the App records every
    source from its own URI, credentials included, also sources added while it runs)."""

    sinks: Tuple[SinkConfig, ...] = ()
    show: Optional[bool] = None
    summary_json: Optional[str] = None
    record: Optional[RecordConfig] = None


@dataclass(frozen=True)
class EventsConfig:
    """Events out (README "Events"), each turned into a sink of the run (:meth:`sinks`).

    Attributes:
        mqtt: ``mqtt(s)://[user:pass@]host[:port][/prefix]``; ``mqtt_options``: ``ca``, ``cert``, ``key``, ``qos``,
            ``queue_size``... (:class:`~edge_detect.sinks.mqtt.MqttTransport`).
        webhook: ``http(s)://host/path``; ``webhook_options``: ``retries``, ``timeout_s``...
        snapshots: folder for JPEG snapshots of event frames; ``snapshot_crop``, ``snapshot_keep``,
            ``snapshot_max_age_s``, ``snapshot_quality``: retention and form.
        update_interval_s, stats_interval_s: ``object_update`` throttle and stats period.
        metrics_port, metrics_host: serve Prometheus metrics at ``http://HOST:PORT/metrics``.
    """

    mqtt: Optional[str] = None
    mqtt_options: Dict[str, Any] = field(default_factory=dict)
    webhook: Optional[str] = None
    webhook_options: Dict[str, Any] = field(default_factory=dict)
    snapshots: Optional[str] = None
    snapshot_crop: bool = False
    snapshot_keep: Optional[int] = 1000
    snapshot_max_age_s: Optional[float] = None
    snapshot_quality: int = 90
    update_interval_s: float = 5.0
    stats_interval_s: float = 5.0
    metrics_port: Optional[int] = None
    metrics_host: Optional[str] = None

    def __post_init__(self) -> None:
        check_events(self, EVENT_NAMES)

    def sinks(self) -> List[SinkConfig]:
        """The sinks these settings ask for (``events`` only when a setting differs from the defaults)."""
        out: List[SinkConfig] = []
        if self.mqtt:
            out.append(SinkConfig(self.mqtt, dict(self.mqtt_options)))
        if self.webhook:
            out.append(SinkConfig(f"webhook+{self.webhook}", dict(self.webhook_options)))
        hub = {k: getattr(self, k) for k in _HUB_OPTIONS if getattr(self, k) != _EVENT_DEFAULTS[k]}
        if hub:
            out.append(SinkConfig("events", hub))
        if self.metrics_port is not None:
            out.append(SinkConfig(f"metrics://{self.metrics_host or '127.0.0.1'}:{self.metrics_port}"))
        return out


_HUB_OPTIONS = ("snapshots", "snapshot_crop", "snapshot_keep", "snapshot_max_age_s", "snapshot_quality",
                "update_interval_s", "stats_interval_s")
_EVENT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EventsConfig)}
#: the names :func:`check_events` uses in messages: config keys (the CLI passes its flags)
EVENT_NAMES = {"mqtt": "events.mqtt", "tls": "events.mqtt_options (ca/cert/key)", "webhook": "events.webhook",
               "snapshots": "events.snapshots", "snapshot_crop": "events.snapshot_crop",
               "metrics_port": "events.metrics_port", "metrics_host": "events.metrics_host"}


def check_events(ev: EventsConfig, names: Mapping[str, str]) -> None:
    """Check event settings; messages name them with ``names`` (config keys, or the CLI's flags).

    Raises:
        ConfigError: a URL of the wrong scheme, TLS files without MQTT, crop without snapshots, a bad port, a
            metrics host without a port (credentials masked).
    """
    tls = any(k in ev.mqtt_options for k in ("ca", "cert", "key"))
    if ev.mqtt and not re.match(r"mqtts?://", ev.mqtt, flags=re.IGNORECASE):
        raise ConfigError(f"{names['mqtt']}: expected mqtt://[user:pass@]host[:port][/prefix] or mqtts://..., got "
                          f"{mask_credentials(ev.mqtt)!r}")
    if tls and not ev.mqtt:
        raise ConfigError(f"{names['tls']}: expected {names['mqtt']} mqtts://... too, got no {names['mqtt']}")
    if ev.webhook and not re.match(r"https?://", ev.webhook, flags=re.IGNORECASE):
        raise ConfigError(f"{names['webhook']}: expected an http:// or https:// URL, got "
                          f"{mask_credentials(ev.webhook)!r}")
    if ev.snapshot_crop and not ev.snapshots:
        raise ConfigError(f"{names['snapshot_crop']}: expected {names['snapshots']} DIR too, got none")
    if ev.metrics_port is not None and not 0 <= ev.metrics_port <= 65535:
        raise ConfigError(f"{names['metrics_port']}: expected a port in 0..65535, got {ev.metrics_port}")
    if ev.metrics_host and ev.metrics_port is None:
        raise ConfigError(f"{names['metrics_host']}: expected {names['metrics_port']} too, got none")


@dataclass(frozen=True)
class ServerConfig:
    """How the service runs, and its HTTP endpoint (the dashboard and REST API of ``edge-detect serve`` /
    ``run --http``, :mod:`edge_detect.server`; the one home of the ``server:`` section's keys).

    Attributes:
        max_frames, duration: stop conditions (``None`` = until the sources end or :meth:`App.stop`).
        progress: progress bar (files) / periodic stats line (live).
        stats_interval_s: period of the stats line.
        host: HTTP bind address (default loopback only).
        port: HTTP port (0 = any free port); ``None``: ``run`` serves no HTTP unless ``--http`` is given, ``serve``
            uses :data:`DEFAULT_HTTP_PORT`.
        api_token: bearer token for the API's changes (``None``: ``--api-token`` or ``EDGE_DETECT_API_TOKEN``, else a
            generated one on a loopback bind; a non-loopback bind without one is refused).
        cors_origins: origins allowed to call the API from other pages (empty = CORS off).
        allowed_hosts: ``Host`` header values served; ``None`` = loopback names on a loopback bind, any otherwise.
        stream_fps: most frames per second of an MJPEG stream and of the page's tiles.
        jpeg_quality: JPEG quality of snapshots and streams, 1..100.
        events_capacity: events kept in memory for ``GET /events`` (oldest dropped first).
        thumbnails: events whose frame thumbnail is kept in memory (oldest dropped first; 0 = none).
    """

    max_frames: Optional[int] = None
    duration: Optional[float] = None
    progress: bool = True
    stats_interval_s: float = 10.0
    host: str = "127.0.0.1"
    port: Optional[int] = None
    api_token: Optional[str] = None
    cors_origins: Tuple[str, ...] = ()
    allowed_hosts: Optional[Tuple[str, ...]] = None
    stream_fps: float = 10.0
    jpeg_quality: int = 80
    events_capacity: int = 2000
    thumbnails: int = 200

    def __post_init__(self) -> None:
        checks = [(self.max_frames is None or self.max_frames >= 1, "max_frames", ">= 1", self.max_frames),
                  (self.duration is None or self.duration > 0, "duration", "> 0 seconds", self.duration),
                  (self.port is None or 0 <= self.port <= 65535, "server.port", "a port in 0..65535", self.port),
                  (0.1 <= float(self.stream_fps) <= 60, "server.stream_fps", "0.1..60", self.stream_fps),
                  (1 <= int(self.jpeg_quality) <= 100, "server.jpeg_quality", "1..100", self.jpeg_quality),
                  (int(self.events_capacity) >= 1, "server.events_capacity", ">= 1", self.events_capacity),
                  (int(self.thumbnails) >= 0, "server.thumbnails", ">= 0", self.thumbnails)]
        for ok, name, expected, actual in checks:
            if not ok:
                raise ConfigError(f"{name}: expected {expected}, got {actual!r}")
        if self.api_token is not None and len(str(self.api_token)) < MIN_TOKEN_CHARS:
            raise ConfigError(f"server.api_token: expected at least {MIN_TOKEN_CHARS} characters, got "
                              f"{len(str(self.api_token))} (generate one: python -c 'import secrets; "
                              f"print(secrets.token_urlsafe(24))')")

    @property
    def loopback(self) -> bool:
        """Whether :attr:`host` is a loopback address (:func:`~edge_detect.urls.is_loopback`)."""
        return is_loopback(self.host)


@dataclass(frozen=True)
class AppConfig:
    """Everything the edge app needs (see module doc): sections ``model``, ``sources``, ``capture``, ``detect``,
    ``motion`` (:class:`~edge_detect.stream.motion.MotionDetector` options: ``method``, ``min_area``, ``mask``...),
    ``analytics``, ``outputs``, ``events``, ``server``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    sources: Tuple[SourceConfig, ...] = ()
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    detect: DetectConfig = field(default_factory=DetectConfig)
    motion: Dict[str, Any] = field(default_factory=dict)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def __post_init__(self) -> None:
        a = self.analytics
        for kind, common, options in (("lines", a.lines, a.line_options), ("zones", a.zones, a.zone_options)):
            if options and "names" in options:
                raise ConfigError(f"{kind[:-1]}_options: unknown option 'names' (the model's class names are used)")
            if common or options or any(getattr(s, kind) for s in self.sources):
                region_processor(kind, self, names=())  # validates geometry and options
        if a.tracker.name == "none" and self.has_analytics:
            raise ConfigError("tracker: expected a tracker for lines/zones (they count track ids), got 'none'")
        if self.motion:
            from edge_detect.stream.motion import MotionDetector

            MotionDetector.from_config(self.motion)
        for s in self.sources:
            self.gate_for(s)  # the combined detect / motion settings of every source are valid
        ids = [s.id for s in self.sources if s.id]
        if len(ids) != len(set(ids)):
            raise ConfigError(f"sources: expected unique ids, got {sorted(i for i in ids if ids.count(i) > 1)[0]!r} "
                              "twice")

    def gate_for(self, source: SourceConfig) -> Any:
        """The :class:`~edge_detect.stream.gating.SourceGate` of ``source`` (the ``detect`` / ``motion`` sections
        under its own keys), or ``None`` when it infers every frame.

        Raises:
            ConfigError: an unknown key or a bad value (naming the source when its own keys are involved).
        """
        from edge_detect.stream.gating import make_gate

        motion = {**self.motion, **source.motion}
        try:
            return make_gate({**self.detect.options(), **source.detect}, motion)
        except ConfigError as exc:
            if source.detect or source.motion:
                raise ConfigError(f"source {source.id or source.uri}: {exc}") from exc
            raise

    @property
    def has_analytics(self) -> bool:
        """Whether any line or zone is configured (common or per source)."""
        a = self.analytics
        return bool(a.lines or a.zones or any(s.lines or s.zones for s in self.sources))

    def to_dict(self) -> Dict[str, Any]:
        """The config as YAML-ready data (lists, dicts, strings, numbers): only what differs from the defaults,
        every source with its ``uri`` and ``id``; credentials NOT masked (this is what ``--save-config`` writes).
        ``load_app_config`` of it gives this config back."""
        out = _non_default(self)
        out["sources"] = [{"uri": s.uri, "id": s.id, **_non_default(s)} for s in self.sources]
        return out

    @classmethod
    def from_flat(cls, **flat: Any) -> "AppConfig":
        """An :class:`AppConfig` from flat keys (``model="m.onnx", conf=0.3, sinks=[...]``; :data:`FLAT_KEYS`)."""
        return from_mapping(_normalize(nest_flat(flat, warn=False)), cls)


def _plain(value: Any) -> Any:
    """Dataclasses, mappings, tuples and lists as plain dicts and lists (YAML-ready)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _non_default(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _non_default(obj: Any) -> Dict[str, Any]:
    """The fields of dataclass ``obj`` that differ from their defaults, as plain data."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = _plain(value)
    return out


# ------------------------------------------------------------------------------------------------- flat layout

#: flat (pre-v3) key -> its place in the nested config
FLAT_KEYS: Dict[str, str] = {
    **{k: f"model.{k}" for k in ("backend", "imgsz", "force_imgsz", "threads", "batch", "rebuild_on_mismatch",
                                 "device", "precision", "hint", "conf", "iou", "max_det", "classes", "agnostic")},
    "model": "model.path", "sources": "sources", "capture": "capture", "detect": "detect", "motion": "motion",
    **{k: f"analytics.{k}" for k in ("tracker", "processors", "lines", "zones", "line_options", "zone_options")},
    **{k: f"outputs.{k}" for k in ("sinks", "show", "summary_json")},
    **{k: f"server.{k}" for k in ("max_frames", "duration", "progress", "stats_interval_s")},
}
_SECTIONS = {f.name for f in dataclasses.fields(AppConfig)}


def _is_flat(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("model"), str) or any(k not in _SECTIONS for k in data)


def nest_flat(data: Mapping[str, Any], where: str = "config", warn: bool = True) -> Dict[str, Any]:
    """The nested form of a flat mapping (:data:`FLAT_KEYS`); logs one deprecation warning when ``warn``.

    Raises:
        ConfigError: a key that is neither flat nor a section (with the closest known key).
    """
    out: Dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key == "source" and "sources" not in data:
            raise ConfigError("unknown key 'source' (did you mean 'sources'?)")
        place = FLAT_KEYS.get(key)
        if place is None:
            known = set(FLAT_KEYS) | _SECTIONS
            raise ConfigError(f"{where}: unknown key '{key}'{suggest_key(key, known)}; known keys: "
                              f"{', '.join(sorted(known))}")
        if key in _SECTIONS - {"sources", "capture", "detect", "motion"} and isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected either sections ({', '.join(sorted(_SECTIONS))}) or the older "
                              f"top-level keys, got both (section '{key}' beside top-level keys)")
        head, _, rest = place.partition(".")
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    if warn and data:
        LOGGER.warning("%s: top-level keys (model: FILE, conf, sinks, tracker...) are deprecated; group them in the "
                       "sections model, sources, capture, detect, motion, analytics, outputs, events, server "
                       "(configs/app/default.yaml shows the layout)", where)
    return out


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
    """``(sink list, show)`` from the pre-v2 ``sinks: {save_video: ...}`` mapping."""
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


def _normalize(data: Mapping[str, Any], where: str = "config") -> Dict[str, Any]:
    """Nested mapping with the short forms expanded: plain strings for sources and sinks, the old sinks
    mapping, a bare int imgsz, the pre-v2 tracker keys, processor names."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    outputs, analytics, model = out.get("outputs") or {}, out.get("analytics") or {}, out.get("model") or {}
    sinks = outputs.get("sinks")
    if isinstance(sinks, Mapping) and "spec" not in sinks:
        outputs["sinks"], show = _legacy_sinks(sinks, where)
        if show is not None and outputs.get("show") is None:
            outputs["show"] = show
    elif sinks is not None:
        outputs["sinks"] = [{"spec": str(s)} if isinstance(s, (str, os.PathLike)) else s
                            for s in ([sinks] if isinstance(sinks, (str, Mapping)) else sinks)]
    _fold_events_spec(out, outputs)
    record = outputs.get("record")
    if isinstance(record, Mapping) and True in record:  # YAML 1.1 reads the key `on:` as true
        outputs["record"] = {("on" if k is True else k): v for k, v in record.items()}
    srcs = out.get("sources")
    if srcs is not None:
        srcs = [srcs] if isinstance(srcs, (str, int, Mapping)) else srcs
        out["sources"] = [{"uri": str(s)} if isinstance(s, (str, int)) else s for s in srcs]
    if isinstance(model, Mapping) and isinstance(model.get("imgsz"), int):
        model["imgsz"] = [model["imgsz"]]
    tracker = analytics.get("tracker")
    if isinstance(tracker, Mapping) and ("iou" in tracker or "max_age" in tracker):  # pre-v2 IoU settings
        tracker = dict(tracker)
        options = dict(tracker.get("options") or {})
        for old, new in (("iou", "iou_threshold"), ("max_age", "max_age")):
            if old in tracker:
                options[new] = tracker.pop(old)
        analytics["tracker"] = {**tracker, "options": options, "name": tracker.get("name", "iou")}
    if isinstance(analytics.get("processors"), (list, tuple)):
        analytics["processors"] = [{"name": p} if isinstance(p, str) else p for p in analytics["processors"]]
    for key, value in (("outputs", outputs), ("analytics", analytics), ("model", model)):
        if value:
            out[key] = value
    return out


def _fold_events_spec(out: Dict[str, Any], outputs: Dict[str, Any]) -> None:
    """Move ``{spec: events, options: {...}}`` entries of ``outputs.sinks`` into the ``events`` section (one home
    for the event hub's settings; the options win over the section's keys)."""
    sinks = outputs.get("sinks") or []
    hub = [s for s in sinks if isinstance(s, Mapping) and str(s.get("spec", "")).lower() == "events"]
    if not hub:
        return
    outputs["sinks"] = [s for s in sinks if s not in hub]
    events = dict(out.get("events") or {})
    for entry in hub:
        events.update(entry.get("options") or {})
    out["events"] = events


# ------------------------------------------------------------------------------------------------- loading

def _nested_overrides(cfg: AppConfig, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Flat or dotted override keys -> nested dotted keys; ``sources`` / ``sinks`` strings -> configs; ``lines`` /
    ``zones`` added to the config's (a same name replaces)."""
    known = set(FLAT_KEYS) | _SECTIONS
    out: Dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head in _SECTIONS:
            place = "model.path" if head == "model" and not rest else key  # "model": the flat key (a path)
        elif head in FLAT_KEYS:
            place = FLAT_KEYS[head] + (f".{rest}" if rest else "")
        else:
            raise ConfigError(f"unknown option '{key}'{suggest_key(key, known)}")
        out[place] = value
    if out.get("sources") is not None:
        out["sources"] = tuple(s if isinstance(s, SourceConfig) else SourceConfig(str(s)) for s in out["sources"])
    if out.get("outputs.sinks") is not None:
        out["outputs.sinks"] = tuple(s if isinstance(s, SinkConfig) else SinkConfig(str(s))
                                     for s in out["outputs.sinks"])
    if isinstance(out.get("model.imgsz"), int):
        out["model.imgsz"] = (out["model.imgsz"],)
    for kind in ("lines", "zones"):  # --line / --zone add to the file's (a same name replaces)
        if out.get(f"analytics.{kind}"):
            out[f"analytics.{kind}"] = {**getattr(cfg.analytics, kind), **dict(out[f"analytics.{kind}"])}
    return out


def load_app_config(path: Optional[Union[str, os.PathLike]] = None,
                    overrides: Optional[Mapping[str, Any]] = None) -> AppConfig:
    """Load an app config file (nested, or flat: converted with a warning) or the defaults, then apply
    ``overrides`` (``None`` values ignored).

    Args:
        path: YAML file, or ``None`` for the built-in defaults.
        overrides: dotted nested keys (``"model.conf"``, ``"capture.read_timeout_s"``) or flat ones (``"conf"``,
            ``"tracker.enabled"``: :data:`FLAT_KEYS`), e.g. from CLI flags; ``sources`` and ``sinks`` may be lists
            of strings (``sinks`` replaces the file's list: see :func:`add_sinks` to add); ``lines`` / ``zones``
            mappings are added to the file's (a line or zone of the same name is replaced).

    Raises:
        ConfigError: unknown key (with a suggestion), wrong type or out-of-range value.
    """
    cfg = AppConfig()
    if path is not None:
        data = load_yaml(path) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        if _is_flat(data):
            data = nest_flat(data, str(path))
        cfg = from_mapping(_normalize(data, str(path)), AppConfig, where=str(path))
    if overrides:
        cfg = override(cfg, _nested_overrides(cfg, {k: v for k, v in overrides.items() if v is not None}))
    return cfg


def _kind(spec: str) -> str:
    """A sink spec's kind: its registry key's module (all video suffixes are one kind)."""
    from edge_detect.sinks.base import SINK_MODULES, resolve_sink

    key = resolve_sink(spec)[1]
    return SINK_MODULES.get(key, key)


def add_sinks(cfg: AppConfig, specs: Sequence[Union[str, SinkConfig]]) -> AppConfig:
    """``cfg`` with ``specs`` added to its sinks; a config sink of the same kind (video suffix, ``.jsonl``,
    ``mjpeg``, ``display``...) is replaced, so ``--save-jsonl b.jsonl`` overrides ``sinks: [a.jsonl]``."""
    new = [s if isinstance(s, SinkConfig) else SinkConfig(str(s)) for s in specs]
    if not new:
        return cfg
    kinds = {_kind(s.spec) for s in new}
    kept = [s for s in cfg.outputs.sinks if _kind(s.spec) not in kinds]
    return dataclasses.replace(cfg, outputs=dataclasses.replace(cfg.outputs, sinks=tuple(kept + new)))


def run_sinks(cfg: AppConfig, display: Optional[bool] = None) -> List[SinkConfig]:
    """Every sink of a run: ``outputs.sinks``, the event sinks (:meth:`EventsConfig.sinks`), and the display
    window per ``outputs.show`` (``None``: only where a display exists; ``display`` overrides the check)."""
    from edge_detect.sinks.display import display_available

    specs = list(cfg.outputs.sinks) + cfg.events.sinks()
    has_display = any(_kind(s.spec) == "display" for s in specs)
    show = cfg.outputs.show
    if show is False:
        specs = [s for s in specs if _kind(s.spec) != "display"]
    elif not has_display and (show or (show is None and (display if display is not None
                                                         else display_available()[0]))):
        specs.append(SinkConfig("display"))
    return specs


def check_run_outputs(cfg: AppConfig, flags: Optional[Mapping[str, str]] = None) -> None:
    """Every output path (file sinks, the snapshot folder, the summary JSON) writable, distinct and not an input
    (a source or the model), before anything is opened. With several sources a file sink writes one file per
    source (``out.mp4`` -> ``out_<id>.mp4``, :func:`~edge_detect.sinks.base.per_source_path`): those files are
    checked, named with the ids the run will give (:func:`~edge_detect.stream.sources.planned_source_ids`). The
    snapshot folder must hold no input (its retention deletes ``DIR/*/*.jpg``).

    Args:
        flags: ``{spec: flag}`` naming the outputs that came from CLI flags in the messages (others: ``sink``).

    Raises:
        SinkError: the first problem, naming the output and the path.
    """
    from edge_detect.paths import check_outputs, check_holds_no_input, input_paths
    from edge_detect.sinks.base import JSONL_SUFFIXES, VIDEO_SUFFIXES, per_source_path, resolve_sink
    from edge_detect.stream.sources import planned_source_ids

    ids = planned_source_ids([(s.uri, s.id) for s in cfg.sources]) if len(cfg.sources) > 1 else []
    outputs: Dict[str, Any] = {}
    dirs: List[str] = []
    for sc in list(cfg.outputs.sinks) + cfg.events.sinks():
        target, key = resolve_sink(sc.spec)
        if key in VIDEO_SUFFIXES + JSONL_SUFFIXES:  # a file sink, chosen by its suffix
            label = (flags or {}).get(sc.spec, "sink")
            label = label if label not in outputs else f"{label} #{len(outputs) + 1}"
            if not ids:
                outputs[label] = target
            for sid in (i for i in ids if i is not None):  # several sources: the files the sink will write
                outputs[f"{label} {target} (its file for source {sid})"] = per_source_path(Path(target), sid)
        if sc.options.get("snapshots"):
            outputs["--snapshots"] = sc.options["snapshots"]
            dirs.append("--snapshots")
    if cfg.outputs.record is not None:
        outputs["--record"] = record_dir(cfg)
        dirs.append("--record")
    outputs["--summary-json"] = cfg.outputs.summary_json
    model = [Path(cfg.model.path)] if cfg.model.path and Path(cfg.model.path).is_file() else []
    inputs = [*input_paths([s.uri for s in cfg.sources]), *model]
    check_outputs(outputs, inputs=inputs, dirs=dirs)
    for flag in dirs:  # snapshots go to DIR/<source>/ and retention deletes DIR/*/*.jpg
        check_holds_no_input(outputs[flag], flag, inputs)


# ------------------------------------------------------------------------------------------------- building

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
    """A :class:`~edge_detect.detector.Detector` from ``cfg.model`` (class names resolved with the model's)."""
    from edge_detect.detector import Detector

    m = cfg.model
    if not m.path:
        raise ConfigError("model: expected a model path (--model or 'model: {path: ...}' in the config), got none")
    opts: Dict[str, Any] = {"threads": m.threads} if m.threads else {}
    if m.rebuild_on_mismatch:
        opts["rebuild_on_mismatch"] = True
    opts.update(_device_options(m))
    opts.update({k: v for k, v in (("precision", m.precision), ("hint", m.hint)) if v is not None})
    det = Detector(m.path, conf=m.conf, iou=m.iou, max_det=m.max_det, agnostic=m.agnostic, backend=m.backend,
                   imgsz=m.imgsz, force_imgsz=m.force_imgsz, **opts)
    try:
        det.classes = resolve_classes(m.classes, det.names)
    except ConfigError:
        det.close()
        raise
    return det


def _device_options(m: ModelConfig) -> Dict[str, Any]:
    """``device`` / ``half`` / ``tf32`` / ``device_path`` as the options of the model's backend
    (:func:`edge_detect.devices.device_options`: TensorRT gets the GPU index, OpenVINO its device name)."""
    from edge_detect.backends.base import backend_for_path
    from edge_detect.devices import device_options

    if m.device is None and not m.half and not m.tf32 and m.device_path is None:
        return {}
    return device_options(m.backend or backend_for_path(m.path), m.device, m.half, m.tf32, m.device_path)


def region_processor(kind: str, cfg: AppConfig, names: Sequence[str],
                     source_ids: Optional[Sequence[str]] = None) -> Any:
    """The ``lines`` / ``zones`` processor of ``cfg`` (``None`` when it has none of that kind); per-source
    geometry is keyed by ``source_ids`` (the opened sources' ids, in config order; default: the configured ids or
    the uris)."""
    from edge_detect.stream.processors import make_processor

    ids = list(source_ids) if source_ids is not None else [s.id or s.uri for s in cfg.sources]
    common = getattr(cfg.analytics, kind)
    per_source = {sid: getattr(s, kind) for sid, s in zip(ids, cfg.sources) if getattr(s, kind)}
    if not common and not per_source:
        return None
    options = dict(cfg.analytics.line_options if kind == "lines" else cfg.analytics.zone_options)
    return make_processor(kind, **{kind: common, f"source_{kind}": per_source or None, "names": tuple(names),
                                   **options})


def _with_names(name: str, options: Mapping[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """``options`` plus ``names`` (the model's class names) when processor ``name`` takes them and none is given."""
    from edge_detect.stream.processors import processor_takes

    out = dict(options)
    if "names" not in out and processor_takes(name, "names"):
        out["names"] = tuple(names)
    return out


def source_filter(cfg: AppConfig, names: Sequence[str], source_ids: Sequence[str]) -> Any:
    """The :class:`~edge_detect.stream.processors.filter.SourceFilter` of the sources with their own ``conf`` /
    ``classes`` (``source_ids``: the opened ids, in config order), or ``None``."""
    from edge_detect.stream.processors import make_processor

    rules = {sid: {"conf": s.conf, "classes": s.classes} for sid, s in zip(source_ids, cfg.sources)
             if s.conf is not None or s.classes is not None}
    return make_processor("filter", sources=rules, names=tuple(names)) if rules else None


def build_processors(cfg: AppConfig, names: Sequence[str], source_ids: Sequence[str]) -> List[Any]:
    """The processor prototypes of a run: the per-source filter (when a source sets ``conf`` / ``classes``), the
    tracker (when enabled, or turned on by lines/zones), the configured processors, then the line and zone
    counters."""
    from edge_detect.stream.processors import make_processor

    a = cfg.analytics
    track = a.tracker.name != "none" and (a.tracker.enabled or cfg.has_analytics)
    if track and not a.tracker.enabled:
        LOGGER.info("lines/zones configured: tracking with '%s'", a.tracker.name)
    procs = [p for p in (source_filter(cfg, names, source_ids),) if p is not None]
    if track:
        procs.append(make_processor(a.tracker.name, **_with_names(a.tracker.name, a.tracker.options, names)))
    procs += [make_processor(p.name, **_with_names(p.name, p.options, names)) for p in a.processors]
    return procs + [p for p in (region_processor(k, cfg, names, source_ids) for k in ("lines", "zones"))
                    if p is not None]


def check_sources(cfg: AppConfig, keep_alive: bool = False) -> None:
    """The cheap checks (at least one source unless ``keep_alive``, no missing file), before a model loads or
    anything opens.

    Raises:
        ConfigError: no source. SourceError: a missing file or an unknown scheme.
    """
    from edge_detect.stream.sources import parse_source
    from edge_detect.stream.sources.registry import _SOURCE_FACTORIES, url_scheme

    if not cfg.sources and not keep_alive:
        raise ConfigError("sources: expected at least one source (--source or 'sources:' in the config), got none")
    for s in cfg.sources:
        if url_scheme(str(s.uri)) not in _SOURCE_FACTORIES:  # a registered scheme's factory checks its own
            parse_source(s.uri)


def open_sources(cfg: AppConfig, keep_alive: bool = False) -> List[Any]:
    """Open every configured source. With several (or ``keep_alive``), a live one that cannot be opened yet starts
    offline and keeps retrying; only when none opens does this fail (the opened ones closed; with ``keep_alive``
    and no source configured there is nothing to open).

    Raises:
        SourceError: a missing file or no source opened.
    """
    from edge_detect.stream.sources import open_source

    check_sources(cfg, keep_alive)
    opened: List[Any] = []
    try:
        for s in cfg.sources:
            opened.append(open_source(s.uri, source_id=s.id, capture=cfg.capture,
                                      offline_ok=keep_alive or len(cfg.sources) > 1, **s.options))
        if opened and all(src.offline for src in opened) and not keep_alive:
            raise SourceError(f"sources: expected at least one that opens, got {len(opened)} offline: "
                              + ", ".join(src.uri for src in opened))
    except BaseException:
        for src in opened:
            src.close()
        raise
    return opened


def record_dir(cfg: AppConfig) -> Optional[str]:
    """The recording folder of ``cfg`` (``None``: not recording).

    Raises:
        ConfigError: a ``record`` section without a folder.
    """
    rec = cfg.outputs.record
    if rec is None:
        return None
    if not rec.dir:
        raise ConfigError("outputs.record.dir: expected the folder clips go to (or --record DIR), got none")
    return rec.dir


def record_sink(cfg: AppConfig, uris: Dict[str, str]) -> Any:
    """The recorder sink of ``cfg.outputs.record`` (``None`` when not recording), recording from ``uris`` (source
    id -> URI with credentials; kept by reference, so URIs added later are recorded too)."""
    if record_dir(cfg) is None:
        return None
    from edge_detect.sinks.recorder import RecorderSink

    return RecorderSink(cfg.outputs.record, uris)


def build_pipeline(cfg: AppConfig, detector: Any = None, stop_event: Any = None, bus: Any = None,
                   keep_alive: bool = False, uris: Optional[Dict[str, str]] = None) -> Any:
    """Open sources and sinks and return a :class:`~edge_detect.stream.pipeline.Pipeline` (not yet run).

    Args:
        cfg: the app config (needs at least one source; a model unless ``detector`` is given).
        detector: use this detector instead of building one from ``cfg.model``.
        stop_event: event that stops the run when set.
        bus: the :class:`~edge_detect.events.EventBus` to publish on (an App's, so counts outlive the pipeline).
        keep_alive: the pipeline runs until stopped, with no source or all ended (a served app; see
            :class:`~edge_detect.stream.pipeline.Pipeline`).
        uris: filled with source id -> configured URI (credentials included) of the opened sources; the recorder
            (``outputs.record``) reads it, so a caller that adds sources later adds their URIs to it.

    The model is loaded first, so a bad model leaves no output file behind.

    Raises:
        ConfigError / SourceError / SinkError / ModelError: with the detector, sources or sinks already opened
        closed again.
    """
    from edge_detect.sinks import open_sink
    from edge_detect.sinks.events import arrange_sinks
    from edge_detect.stream.pipeline import Pipeline

    check_sources(cfg, keep_alive)
    opened: List[Any] = []
    try:
        det = detector if detector is not None else build_detector(cfg)
        if detector is None:
            opened.append(det)
        sources = open_sources(cfg, keep_alive)
        opened += sources
        uris = uris if uris is not None else {}
        sinks = []
        for sc in run_sinks(cfg):
            sinks.append(open_sink(sc.spec, **sc.options))
            opened.append(sinks[-1])
        recorder = record_sink(cfg, uris)
        if recorder is not None:
            sinks.append(recorder)
            opened.append(recorder)
        procs = build_processors(cfg, tuple(det.names), [src.source_id for src in sources])
        s = cfg.server
        pipeline = Pipeline(sources, det, arrange_sinks(sinks), processors=procs, batch=cfg.model.batch,
                            max_frames=s.max_frames, duration=s.duration, progress=s.progress, stop_event=stop_event,
                            stats_interval_s=s.stats_interval_s, bus=bus, keep_alive=keep_alive)
        uris.update({src.source_id: sc.uri for src, sc in zip(sources, cfg.sources)})  # ids final (made unique)
        for src, sc in zip(sources, cfg.sources):
            if not sc.enabled:
                pipeline.batcher.set_enabled(src.source_id, False)
            gate = cfg.gate_for(sc)
            if gate is not None:
                pipeline.set_gate(src.source_id, gate)
        return pipeline
    except BaseException:
        for obj in opened:
            obj.close()
        raise
