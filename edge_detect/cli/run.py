"""``edge-detect run``: the edge app -- capture, detect, and write to any combination of sinks."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import threading
from pathlib import Path
from typing import Callable, Any, Dict, List, Optional, Tuple

from edge_detect.app import App, write_summary
from edge_detect.app_config import (AppConfig, EventsConfig, SinkConfig, add_sinks, check_events, check_run_outputs,
                                    load_app_config)
from edge_detect.backends.base import backend_names
from edge_detect.cli._types import positive_float, positive_int
from edge_detect.cli.detect import add_device_args, add_openvino_args
from edge_detect.cli.serve import add_http_args, http_settings, serve_app
from edge_detect.errors import ConfigError, SinkError, SourceError
from edge_detect.preprocess import check_imgsz

LOGGER = logging.getLogger(__name__)

_EPILOG = """\
sources (repeat --source for several; each gets its own id, shown in outputs as "source"):
  video.mp4 | frames/ | 'frames/*.jpg'      files are read completely, no frame is ever dropped
  0 | /dev/video2                            V4L2 camera (capture options in --config: fourcc MJPG, width...)
  rtsp://user:pw@cam/1 | http://cam/mjpg     network streams: read timeout, reconnect with backoff
  'nvarguscamerasrc ! ... ! appsink'         GStreamer pipeline (OpenCV built with GStreamer)
Live sources keep only the newest frame (stale frames are dropped and counted). Credentials are masked in logs.

examples:
  edge-detect run --source video.mp4                      # default model yolov5n, exported to ONNX on first use;
                                                          # no display: saved in runs/run/N/ (--no-save: not)
  edge-detect run --model yolov5n.onnx --source video.mp4 --save-video out.mp4 --save-jsonl out.jsonl
  edge-detect run --model yolov5n.onnx --source rtsp://cam/1 --preview-port 8080 --duration 3600
  edge-detect run --model yolov5n-dyn.onnx --source rtsp://cam/1 --source rtsp://cam/2 --source rtsp://cam/3 \\
      --batch 3 --save-jsonl out.jsonl      # one inference call for the three cameras
  edge-detect run --config configs/app/rtsp_jetson.yaml --track --summary-json summary.json
  edge-detect run --model yolov5n.onnx --source v.mp4 --line gate=320,0,320,360 --zone bay=0,200,300,200,300,360,0,360 \\
      --summary-json s.json     # counts in s.json ("lines", "zones"); events in each JSONL line
  edge-detect run --config configs/app/dashboard.yaml --http 127.0.0.1:8080   # + dashboard and REST API
  edge-detect run --model yolov5n.onnx --source rtsp://cam/1 --line gate=320,0,320,360 --detect motion \\
      --detect-fps 5            # CPU boxes: detect only where something moves, at most 5 times a second

stopping and exit codes:
  the run ends when all sources end (with --http: not then, it keeps serving and takes new sources), after
  --max-frames / --duration, on q or Esc in the window, or on Ctrl-C / SIGTERM. Frames in flight are finished
  and every output is finalized (the mp4 holds every frame, the JSONL holds every processed frame,
  --summary-json is written); after a kill or a power cut the mp4 still plays up to its last second. Exit
  code: 0 when the run ended by itself (also when the recorder stopped on a full disk: the run went on,
  sink_errors says so), 130 after SIGINT (Ctrl-C), 143 after SIGTERM, 2 on errors (also: an output failed, no
  frame could be processed, an output that is not writable or is one of the inputs -- checked before the run
  starts). A second signal stops waiting for event deliveries (MQTT, webhook: what is queued is counted
  failed) but still finalizes the files and writes --summary-json, with the same exit code; a third exits at
  once.

default model: without --model (or with a name such as yolov5n) the checkpoint is looked up offline in
$EDGE_DETECT_WEIGHTS, the repository's weights/, ../shared/weights and the user cache, and exported to ONNX once
into ~/.cache/edge-detect/models/<sha256>/ ($EDGE_DETECT_CACHE moves it); the export needs the build extra.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``run`` and its flags (every flag overrides the same key of --config)."""
    p = subparsers.add_parser(
        "run", help="run detection on cameras, files and streams (the edge app)",
        description="Capture from one or more sources, detect objects with overlapped pipeline stages and "
                    "write to a window, an annotated video, JSON Lines and/or an MJPEG preview.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, metavar="APP.yaml",
                   help="app config file (see configs/app/default.yaml); flags below override it")
    _model_args(p.add_argument_group("model"))
    _detect_args(p.add_argument_group("when to detect (CPU boxes; README 'CPU boxes')"))
    _source_args(p)
    _output_args(p.add_argument_group("outputs"))
    _event_args(p.add_argument_group("events and metrics (event JSON schema: README 'Events')"))
    add_http_args(p.add_argument_group("dashboard and REST API (README 'Dashboard and REST API')"),
                  "serve the dashboard and the REST API of this run on HOST:PORT (e.g. 127.0.0.1:8080; default: "
                  "the config's server.port, else none); the run then goes on when its sources end, until Ctrl-C")
    _record_args(p.add_argument_group("recording (README 'Recording'; more in the config's outputs.record)"))
    r = p.add_argument_group("stopping")
    r.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N processed frames")
    r.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after this many seconds")
    r.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar / periodic stats line")
    return p


def _model_args(m: Any) -> None:
    m.add_argument("--model", default=None, metavar="PATH|NAME",
                   help="model file (.onnx, .xml, .engine, .pt), a checkpoint name such as yolov5n, exported to ONNX "
                        "once into the user cache (default: yolov5n), or a Triton server's model: "
                        "grpc://HOST:8001/NAME (http://HOST:8000/NAME)")
    m.add_argument("--backend", choices=backend_names(), default=None,
                   help="inference backend (default: from the model file suffix)")
    m.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="N",
                   help="input size, one value or H W, at most 4096; dynamic-shape models and checkpoint names "
                        "only (default: the model's; 640 for a name)")
    m.add_argument("--force-imgsz", action="store_true", help="allow --imgsz sides above 4096")
    m.add_argument("--threads", type=int, default=None, metavar="N",
                   help="ONNX Runtime / OpenVINO inference threads (default: the runtime's choice)")
    m.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help="frames per inference call, gathered across the sources with a bounded wait (one frame "
                        "interval of the fastest source); a static-batch model uses its own batch (default: 1)")
    add_device_args(m)
    add_openvino_args(m, device=False)
    m.add_argument("--rebuild-on-mismatch", action="store_true", default=None,
                   help="TensorRT engines: rebuild from the recorded ONNX when built by another TensorRT/GPU")
    m.add_argument("--conf", type=float, default=None, metavar="T", help="confidence threshold (default: 0.25)")
    m.add_argument("--iou", type=float, default=None, metavar="T", help="NMS IoU threshold (default: 0.45)")
    m.add_argument("--max-det", type=int, default=None, metavar="N", help="most detections per frame (default: 1000)")
    m.add_argument("--classes", nargs="+", default=None, metavar="NAME|ID",
                   help="keep only these classes, by name or id, e.g. --classes person car or --classes 0 2")
    m.add_argument("--agnostic", action="store_true", default=None, help="class-agnostic NMS")
    m.add_argument("--track", action="store_true", default=None,
                   help="assign track ids with the config's tracker (default: bytetrack; added to JSONL detections "
                        "as track_id)")
    m.add_argument("--tracker", default=None, metavar="NAME",
                   help="track with this processor (implies --track): bytetrack (default: Kalman motion, two-stage "
                        "association, stable ids through ~1 s occlusions), iou (greedy IoU, no motion), or none")


def _detect_args(d: Any) -> None:
    d.add_argument("--detect", choices=("always", "motion"), default=None,
                   help="always: the detector runs on every frame (default); motion: only on frames with motion or "
                        "moving tracks (the tracker predicts in between; settings: 'detect' and 'motion' in --config)")
    d.add_argument("--detect-fps", type=positive_float, default=None, metavar="N",
                   help="run the detector at most N times a second per source (the tracker predicts in between; "
                        "the video and JSONL still get every frame)")
    d.add_argument("--detect-regions", action="store_true", default=None,
                   help="with --detect motion: run the model on crops around the motion instead of the whole frame "
                        "(small far-away objects get more pixels; settings: detect.regions in --config)")


def _source_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("counting (source-frame pixels; turns tracking on)")
    a.add_argument("--line", action="append", default=None, metavar="NAME=x1,y1,x2,y2",
                   help="count tracks crossing the segment (repeatable): 'in' = from the left of (x1,y1)->(x2,y2) "
                        "to its right as seen in the image (y down), 'out' = the reverse; anchor: box bottom-centre")
    a.add_argument("--zone", action="append", default=None, metavar="NAME=x1,y1,x2,y2,x3,y3[,...]",
                   help="polygon zone (repeatable): which tracks are inside, entries/exits, occupancy, dwell time")
    s = p.add_argument_group("sources")
    s.add_argument("--source", action="append", default=None, metavar="URI",
                   help="input (repeatable): video file, image folder/glob, camera index, /dev/videoN, "
                        "rtsp/rtmp/http(s) URL or GStreamer pipeline")


def _output_args(o: Any) -> None:
    o.add_argument("--save-video", default=None, metavar="PATH.mp4",
                   help="annotated video (H.264 yuv420p; one file per source when several), crash-safe: a fragment "
                        "every second, so a kill or power cut loses at most the last second (.mp4 fragmented, .mkv "
                        "in clusters)")
    o.add_argument("--video-segments", type=float, default=None, metavar="SECONDS",
                   help="with --save-video: a new file every SECONDS, PATH_00000.mp4, PATH_00001.mp4... (each "
                        "crash-safe, closed ones complete)")
    o.add_argument("--save-jsonl", default=None, metavar="PATH.jsonl",
                   help="one JSON line per processed frame: source, frame, pts_ms, wall_time, detections "
                        "(one file per source when several: PATH_<source>.jsonl)")
    o.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                   help="display window with boxes and FPS, q/Esc quits (default: only where a display exists)")
    o.add_argument("--preview-port", type=int, default=None, metavar="PORT",
                   help="serve an MJPEG-over-HTTP preview on this port (open http://HOST:PORT/ in a browser)")
    o.add_argument("--preview-host", default=None, metavar="ADDR",
                   help="preview bind address (default: 127.0.0.1; 0.0.0.0 exposes it to the network)")
    o.add_argument("--sink", action="append", default=None, metavar="SPEC",
                   help="any sink by spec (repeatable): a path by suffix (.mp4 .mkv .jsonl ...), a URI by scheme "
                        "(mjpeg://HOST:PORT ...) or 'display'; added to the config's sinks")
    o.add_argument("--summary-json", default=None, metavar="PATH",
                   help="write the final summary (counts, fps, stage timings, latency) as JSON")
    o.add_argument("--no-save", action="store_true",
                   help="a run with no output and no window writes nothing (default: it saves out.mp4, out.jsonl "
                        "and summary.json in a new numbered folder runs/run/N/ and prints where)")


def _event_args(e: Any) -> None:
    e.add_argument("--mqtt", default=None, metavar="URI",
                   help="publish events and stats to an MQTT broker: mqtt://[user:pass@]host[:port][/prefix] or "
                        "mqtts://... (prefix default edge_detect; topics {prefix}/{source}/events, "
                        "{prefix}/{source}/stats, {prefix}/availability)")
    e.add_argument("--mqtt-ca", default=None, metavar="PEM", help="mqtts: CA bundle that signed the broker")
    e.add_argument("--mqtt-cert", default=None, metavar="PEM", help="mqtts: client certificate (mutual TLS)")
    e.add_argument("--mqtt-key", default=None, metavar="PEM", help="mqtts: client private key (mutual TLS)")
    e.add_argument("--webhook", default=None, metavar="URL",
                   help="POST every event as JSON to this http(s) URL (retries with backoff, bounded queue)")
    e.add_argument("--snapshots", default=None, metavar="DIR",
                   help="write a JPEG of each event's frame (boxes drawn) before the event is sent; the event "
                        "carries its path (retention in the config: snapshot_keep, snapshot_max_age_s)")
    e.add_argument("--snapshot-crop", action="store_true", default=None,
                   help="with --snapshots: also a JPEG of the event's object box")
    e.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics")
    e.add_argument("--metrics-host", default=None, metavar="ADDR",
                   help="metrics bind address (default: 127.0.0.1; 0.0.0.0 exposes it to the network)")


def _record_args(r: Any) -> None:
    r.add_argument("--record", default=None, metavar="DIR",
                   help="record a clip around each event (default: line_cross, zone_enter) into "
                        "DIR/{source}/{YYYY-MM-DD}/{HHMMSS}-{event_id}.mp4 with a .jpg thumbnail; H.264/H.265 sources "
                        "are copied without re-encoding; a clip_saved event carries the path")
    r.add_argument("--record-pre", type=float, default=None, metavar="SECONDS",
                   help="seconds recorded before the first event of a clip (default: 5, at most 60)")
    r.add_argument("--record-post", type=float, default=None, metavar="SECONDS",
                   help="seconds recorded after the last event of a clip (default: 5)")


def _record_flags(args: argparse.Namespace, cfg: AppConfig) -> AppConfig:
    """``cfg`` with ``outputs.record`` changed by --record / --record-pre / --record-post."""
    given = {k: v for k, v in (("dir", args.record), ("pre_s", args.record_pre), ("post_s", args.record_post))
             if v is not None}
    if not given:
        return cfg
    if cfg.outputs.record is None and "dir" not in given:
        raise ConfigError("--record-pre/--record-post: expected --record DIR too (or outputs.record in the config), "
                          "got none")
    from edge_detect.recording import RecordConfig

    record = dataclasses.replace(cfg.outputs.record or RecordConfig(), **given)
    return dataclasses.replace(cfg, outputs=dataclasses.replace(cfg.outputs, record=record))


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The flags as config overrides (nested keys; ``None`` = not given)."""
    return {
        "model.path": args.model, "model.backend": args.backend, "model.imgsz": args.imgsz,
        "model.threads": args.threads, "model.batch": args.batch, "model.force_imgsz": args.force_imgsz or None,
        "model.rebuild_on_mismatch": args.rebuild_on_mismatch, "model.device": args.device,
        "model.half": args.half or None, "model.tf32": args.tf32 or None, "model.device_path": args.device_path,
        "model.precision": args.precision, "model.hint": args.hint, "model.conf": args.conf, "model.iou": args.iou,
        "model.max_det": args.max_det, "model.classes": args.classes, "model.agnostic": args.agnostic,
        "analytics.tracker.enabled": True if args.tracker and args.tracker != "none" else args.track,
        "analytics.tracker.name": args.tracker, "sources": args.source, "outputs.show": args.show,
        "detect.mode": args.detect, "detect.fps": args.detect_fps,
        "detect.regions": args.detect_regions,
        "analytics.lines": _named(args.line, "--line"), "analytics.zones": _named(args.zone, "--zone"),
        "outputs.summary_json": args.summary_json, "server.max_frames": args.max_frames,
        "server.duration": args.duration, "server.progress": args.progress,
    }


def _named(values: Optional[List[str]], flag: str) -> Optional[Dict[str, List[float]]]:
    """``--line`` / ``--zone`` values -> ``{name: [numbers]}`` (ConfigError: one line, on the first bad value)."""
    from edge_detect.stream.processors._common import parse_named_numbers

    if not values:
        return None
    out: Dict[str, List[float]] = {}
    for text in values:
        name, nums = parse_named_numbers(text, flag, count=4) if flag == "--line" else \
            parse_named_numbers(text, flag, min_count=6)
        if name in out:
            raise ConfigError(f"{flag}: expected unique names, got {name!r} twice")
        out[name] = nums
    return out


def _sink_flags(args: argparse.Namespace, cfg: AppConfig) -> List[SinkConfig]:
    """Sink specs from --save-video / --save-jsonl / --preview-port / --preview-host / --sink."""
    specs: List[SinkConfig] = []
    if args.save_video:
        specs.append(SinkConfig(args.save_video, {"segment_s": args.video_segments} if args.video_segments else {}))
    elif args.video_segments:
        raise ConfigError("--video-segments: expected --save-video PATH too, got none")
    if args.save_jsonl:
        specs.append(SinkConfig(args.save_jsonl))
    if args.preview_port is not None:
        if not 0 <= args.preview_port <= 65535:
            raise ConfigError(f"--preview-port: expected a port in 0..65535, got {args.preview_port}")
        specs.append(SinkConfig(f"mjpeg://{args.preview_host or '127.0.0.1'}:{args.preview_port}"))
    elif args.preview_host:  # a new address for the config's preview
        ports = [re.search(r":(\d+)/?$", s.spec) for s in cfg.outputs.sinks if s.spec.lower().startswith("mjpeg://")]
        if not ports or ports[0] is None:
            raise ConfigError("--preview-host: expected --preview-port or a mjpeg:// sink in the config, got none")
        specs.append(SinkConfig(f"mjpeg://{args.preview_host}:{ports[0].group(1)}"))
    return specs + [SinkConfig(s) for s in args.sink or ()]


_EVENT_FLAGS = {"mqtt": "--mqtt", "tls": "--mqtt-ca/--mqtt-cert/--mqtt-key", "webhook": "--webhook",
                "snapshots": "--snapshots", "snapshot_crop": "--snapshot-crop", "metrics_port": "--metrics-port",
                "metrics_host": "--metrics-host"}


def _event_flags(args: argparse.Namespace, cfg: AppConfig) -> AppConfig:
    """``cfg`` with the events section changed by --mqtt(-ca/-cert/-key) / --webhook / --snapshots(-crop) /
    --metrics-port/-host (checked with the flags' names in the messages)."""
    ev = cfg.events
    tls = {k: v for k, v in (("ca", args.mqtt_ca), ("cert", args.mqtt_cert), ("key", args.mqtt_key)) if v}
    given = {k: v for k, v in (("mqtt", args.mqtt), ("webhook", args.webhook), ("snapshots", args.snapshots),
                                ("snapshot_crop", args.snapshot_crop), ("metrics_port", args.metrics_port),
                                ("metrics_host", args.metrics_host)) if v is not None}
    if tls:
        given["mqtt_options"] = {**ev.mqtt_options, **tls}
    if not given:
        return cfg
    from types import SimpleNamespace

    flags_only = SimpleNamespace(**{**{f.name: f.default for f in dataclasses.fields(EventsConfig)},
                                    "mqtt_options": {}, **given})
    check_events(flags_only, _EVENT_FLAGS)
    return dataclasses.replace(cfg, events=dataclasses.replace(ev, **given))


#: where a run with no output and no window saves (``--no-save``: nowhere): numbered folders runs/run/1, 2...
DEFAULT_RUNS = Path("runs") / "run"


def _default_outputs(cfg: AppConfig, args: argparse.Namespace,
                     serving: bool = False) -> "tuple[AppConfig, Optional[Path]]":
    """``(cfg, None)``, or, for a run that would write nothing and show nothing (no sink, no event output, no
    recording, no window: no display or ``--no-show``, no dashboard: not ``serving``) without ``--no-save``:
    ``cfg`` with ``out.mp4`` and ``out.jsonl`` in the next free ``runs/run/N/`` and that folder (the summary goes
    there too, written by :func:`main`). The folder is created by the first frame written, like every file
    output."""
    from edge_detect.app_config import run_sinks
    from edge_detect.paths import next_run_dir

    if args.no_save or serving or run_sinks(cfg) or cfg.outputs.record is not None:
        return cfg, None
    run_dir = next_run_dir(DEFAULT_RUNS, "")
    return add_sinks(cfg, [SinkConfig(str(run_dir / "out.mp4")), SinkConfig(str(run_dir / "out.jsonl"))]), run_dir


def default_exporter() -> Callable[..., Any]:
    """The ONNX exporter of the default model: the torch-free one (:mod:`edge_detect.deploy.onnx_yolov5`; bit-identical
    to the torch export), so ``run`` with a checkpoint name needs no PyTorch."""
    from edge_detect.deploy.onnx_yolov5 import export_onnx_torch_free

    return export_onnx_torch_free


def _http(args: argparse.Namespace, cfg: AppConfig) -> Optional[Tuple[Any, bool]]:
    """``(ServerSettings, generated token)`` when the run serves HTTP (``--http`` or ``server.port``), else
    ``None``.

    Raises:
        ConfigError: ``--api-token`` without anything to serve, a bad ``--http``, or a non-loopback bind without a
            token.
    """
    if not args.http and cfg.server.port is None:
        if args.api_token:
            raise ConfigError("--api-token: expected --http HOST:PORT (or server.port in the config) too, got none")
        return None
    return http_settings(cfg.server, args.http, args.api_token)


class _ReportedAtTheEnd(logging.Filter):
    """Keeps the log records of output failures (``extra`` :data:`~edge_detect.stream.outputs.IN_SUMMARY`) off
    stderr while ``run`` runs: the summary's ``sink_errors`` holds them and :func:`main` reports the first as its
    one error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "in_summary", False)

    def __enter__(self) -> "_ReportedAtTheEnd":
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)


class _SignalStop:
    """SIGINT / SIGTERM while ``run`` runs (handlers installed on the main thread only), the one place that says
    what each signal does; the exit code is ``128 + the first signal's number`` (130, 143) whatever follows:

    1. the first stops the run (:meth:`App.stop`, its name becomes ``stopped_by``): frames in flight finished,
       every output finalized and delivered within its close timeout, ``--summary-json`` written;
    2. the second stops waiting for deliveries (:meth:`App.abandon`): MQTT / webhook queues give up what is left
       (counted ``failed``), files are still finalized and the summary written;
    3. the third exits at once (``os._exit``): nothing more is written.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.signum: Optional[int] = None
        self.count = 0
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            self.app.stop(name)  # -> summary stopped_by
            LOGGER.warning("%s received: finishing frames in flight and finalizing outputs (again: stop waiting for "
                           "event deliveries)", name)
        elif self.count == 2:
            self.app.abandon(signal.Signals(self.signum).name)
            LOGGER.warning("%s received again: not waiting for event deliveries; finalizing files and the summary "
                           "(again: exit at once)", name)
        else:
            os._exit(128 + self.signum)

    def __enter__(self) -> "_SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _warn_losses(summary: Any) -> None:
    """One warning line at the end of a run that lost something without failing: event deliveries that were
    dropped or failed (a webhook that always fails still exits 0) and undecodable frames skipped."""
    from edge_detect.stream.runstats import format_deliveries

    lost = summary.undelivered()
    parts = [f"not delivered: {format_deliveries(lost)}"] if lost else []
    if summary.corrupt and summary.processed:
        parts.append(f"{summary.corrupt} undecodable frame(s) skipped")
    if parts:
        LOGGER.warning("run ended with losses: %s (the summary's 'sinks' has every output's counters)",
                       "; ".join(parts))


def main(args: argparse.Namespace) -> int:
    """Run the app (flags -> config -> :class:`~edge_detect.app.App`); returns 0, or 128 + signal number when
    stopped by SIGINT / SIGTERM."""
    cfg = load_app_config(args.config, _overrides(args))
    cfg = _record_flags(args, _event_flags(args, add_sinks(cfg, _sink_flags(args, cfg))))
    if not cfg.sources:
        raise ConfigError("sources: expected at least one source (--source or 'sources:' in the config), got none")
    if cfg.model.imgsz is not None:
        check_imgsz((cfg.model.imgsz[0], cfg.model.imgsz[-1]), stride=1, force=cfg.model.force_imgsz)
    http = _http(args, cfg)  # bind and token checked before anything heavy starts
    cfg, run_dir = _default_outputs(cfg, args, serving=http is not None)
    flags = {v: k for k, v in (("--save-video", args.save_video), ("--save-jsonl", args.save_jsonl)) if v}
    if run_dir is not None:
        flags.update({s.spec: "default output" for s in cfg.outputs.sinks})
    check_run_outputs(cfg, flags)
    app = App(cfg, exporter=default_exporter, keep_alive=http is not None)
    with _SignalStop(app) as stop, _ReportedAtTheEnd():
        summary = app.run() if http is None else serve_app(app, http[0], generated_token=http[1])
    failed = [e for e in summary.sink_errors if e not in summary.degraded]  # degraded sinks let the run go on
    if failed:  # the other outputs were finalized; the summary (if asked) is written
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        raise SinkError(f"output failed: {failed[0]}{more}")
    _warn_losses(summary)
    if summary.processed == 0 and summary.stopped_by == "end":
        bad = f", {summary.corrupt} undecodable" if summary.corrupt else ""
        raise SourceError(f"no frame processed: expected decodable frames from {len(cfg.sources)} source(s), "
                          f"got {summary.frames_read} read{bad}")
    if run_dir is not None and run_dir.is_dir():  # (nothing written, no folder: a run stopped before a frame)
        write_summary(run_dir / "summary.json", summary.to_dict())
        print(f"results saved to {run_dir}: {', '.join(sorted(p.name for p in run_dir.iterdir()))}")
    return 128 + stop.signum if stop.signum is not None else 0
