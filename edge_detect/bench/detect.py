"""Bench of detect modes (README "CPU boxes"): one source through the app's pipeline once per detect setting
(``always``, ``motion``, ``always@5``, ``motion+regions``: a mode, an optional detect rate and optional region
inference), with the same loaded detector, in one run, so the ratios between the settings are measured on the
same machine state.

Each run is :func:`~edge_detect.app_config.build_pipeline` on an app config (``app_config`` file or the defaults;
its ``detect`` section replaced by the setting, tracking on, ``lines`` added), so gating, tracking and counting are
exactly ``edge-detect run``'s. Per setting (``detect`` list of a bench result)::

    {"spec": "motion@5", "mode": "motion", "fps": 5.0, "regions": {"frames", "crops", "whole_frames"} (with
     "+regions", else None), "frames", "inference_calls", "skipped_frames",
     "motion_frames", "reasons": {reason: frames}, "cpu_ms_per_frame": {stage: ms, "total": ms} (median over
     repeats), "cpu_total_runs": [ms per frame of each repeat], "fps", "lines": {name: {"in", "out"}},
     "tracks": confirmed tracks, "e2e": the e2e section of the (first) run,
     "vs_first": {"inference_calls", "cpu": ratios to the first setting, "lines_equal": bool,
                  "tracks_found": "n/m" (of the first setting's confirmed tracks, one with IoU >= 0.5 on a frame
                  both ran the detector on), "tracks_found_frac", "same_output_frames": fraction of frames whose
                  output boxes and ids equal the first setting's}}

CPU is process CPU time per processed frame (:mod:`edge_detect.stream.runstats`): it counts the inference
runtime's worker threads; give ``threads`` (``--threads 1``) so that idle spinning workers do not inflate the
``always`` run.
"""
from __future__ import annotations

import logging
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.paths import PathLike

__all__ = ["parse_detect_spec", "benchmark_detect", "run_detect_setting", "tracks_found", "Recorder"]

LOGGER = logging.getLogger(__name__)


def parse_detect_spec(text: str) -> Tuple[str, Optional[float], bool]:
    """``"always"`` / ``"motion"`` with an optional ``@FPS`` and, for ``motion``, an optional ``+regions`` (region
    inference with its default settings): ``"motion@5+regions"`` -> ``("motion", 5.0, True)``.

    Raises:
        ConfigError: another mode, a rate that is not a number > 0, or another suffix (one line).
    """
    from edge_detect.config import suggest_key
    from edge_detect.stream.motion import DETECT_MODES

    head, plus, suffix = str(text).partition("+")
    if plus and suffix != "regions":
        raise ConfigError(f"bench --detect {text}: expected '+regions' after the mode, got '+{suffix}'"
                          f"{suggest_key(suffix, ['regions'])}")
    mode, _, rate = head.partition("@")
    if mode not in DETECT_MODES:
        raise ConfigError(f"bench --detect: expected always|motion[@FPS][+regions], got {text!r}"
                          f"{suggest_key(mode, DETECT_MODES)}")
    if plus and mode != "motion":
        raise ConfigError(f"bench --detect {text}: expected motion before '+regions' (regions are cut around "
                          f"motion), got {mode}")
    try:
        fps = float(rate) if rate else None
    except ValueError:
        fps = -1.0
    if fps is not None and not fps > 0:
        raise ConfigError(f"bench --detect {text}: expected a rate > 0 after '@', got {rate!r}")
    return mode, fps, bool(plus)


class Recorder:
    """Inline bus subscriber keeping each processed frame's output: ``{frame index: (inferred, xyxy float32
    (N, 4), track ids int64 (N,))}`` (one source)."""

    def __init__(self) -> None:
        self.frames: Dict[int, Tuple[bool, np.ndarray, np.ndarray]] = {}

    def __call__(self, result: Any) -> None:
        if result.final:
            return
        d = result.detections
        ids = d.track_id if d.track_id is not None else np.full(len(d), -1, np.int64)
        self.frames[int(result.frame.index)] = (not result.frame.skip_inference, d.xyxy.copy(), ids.copy())

    def tracks(self, inferred_only: bool = False) -> Dict[int, Dict[int, np.ndarray]]:
        """``{track id: {frame: xyxy}}`` (frames the detector ran on only, with ``inferred_only``)."""
        out: Dict[int, Dict[int, np.ndarray]] = {}
        for f, (inferred, xyxy, ids) in self.frames.items():
            if inferred_only and not inferred:
                continue
            for box, tid in zip(xyxy, ids.tolist()):
                if tid >= 1:
                    out.setdefault(tid, {})[f] = box
        return out


def tracks_found(ref: Recorder, other: Recorder, iou: float = 0.5) -> Tuple[int, int]:
    """``(found, total)``: how many of ``ref``'s tracks have, on some frame both runs ran the detector on, a track
    of ``other`` at IoU >= ``iou``."""
    from edge_detect.boxes import box_iou

    found, ref_tracks = 0, ref.tracks(inferred_only=True)
    for frames in ref_tracks.values():
        for f, box in frames.items():
            seen = other.frames.get(f)
            if seen is None or not seen[0] or not len(seen[1]):
                continue
            if float(box_iou(box[None], seen[1][seen[2] >= 1]).max(initial=0.0)) >= iou:
                found += 1
                break
    return found, len(ref_tracks)


def _same_output(a: Recorder, b: Recorder, tol_px: float = 0.5) -> float:
    """Fraction of ``a``'s frames where ``b`` output the same boxes (within ``tol_px``) with the same ids."""
    if not a.frames:
        return float("nan")
    same = 0
    for f, (_, xa, ia) in a.frames.items():
        got = b.frames.get(f)
        if got is None or len(got[1]) != len(xa):
            continue
        same += bool(np.array_equal(ia, got[2]) and (not len(xa) or np.abs(xa - got[1]).max() <= tol_px))
    return same / len(a.frames)


def _run_once(detector: Any, cfg: Any) -> Tuple[Any, Recorder]:
    from edge_detect.app_config import build_pipeline

    pipeline = build_pipeline(cfg, detector=detector)
    rec = Recorder()
    pipeline.bus.subscribe(rec, name="bench-detect", inline=True)
    return pipeline.run(), rec


def _config(source: str, spec: Tuple[str, Optional[float], bool], app_config: Optional[PathLike],
            lines: Optional[Mapping[str, Sequence[float]]], max_frames: Optional[int], sinks: Sequence[str],
            batch: int, progress: bool, track: bool = True) -> Any:
    from edge_detect.app_config import load_app_config

    cfg = load_app_config(app_config, {
        "sources": [str(source)], "outputs.sinks": list(sinks), "outputs.show": False, "server.progress": progress,
        "server.max_frames": max_frames, "model.batch": batch, "analytics.tracker.enabled": track or None,
        "analytics.lines": dict(lines) if lines else None, "detect.mode": spec[0]})
    import dataclasses

    regions = (cfg.detect.regions or True) if spec[2] else False  # the config's region settings, if any
    return dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, fps=spec[1], regions=regions))


def run_detect_setting(detector: Any, source: str, spec: str, *, app_config: Optional[PathLike] = None,
                       lines: Optional[Mapping[str, Sequence[float]]] = None, max_frames: Optional[int] = None,
                       sinks: Sequence[str] = (), batch: int = 1, progress: bool = True,
                       track: bool = True) -> Tuple[Any, Recorder]:
    """One run of :func:`benchmark_detect` (one setting, one round): its
    :class:`~edge_detect.stream.pipeline.RunSummary` and the :class:`Recorder` of every processed frame's output
    (``track=False``: the detector's own boxes, no tracker unless ``app_config`` or ``lines`` turn it on).

    Raises:
        ConfigError: a bad spec or config.
    """
    cfg = _config(source, parse_detect_spec(spec), app_config, lines, max_frames, sinks, batch, progress, track)
    return _run_once(detector, cfg)


def benchmark_detect(detector: Any, source: str, specs: Sequence[str], *, app_config: Optional[PathLike] = None,
                     lines: Optional[Mapping[str, Sequence[float]]] = None, max_frames: Optional[int] = None,
                     sinks: Sequence[str] = (), repeat: int = 1, batch: int = 1, progress: bool = True,
                     inference_fps: Optional[float] = None) -> List[Dict[str, Any]]:
    """Run ``source`` once per detect setting (``repeat`` rounds, settings interleaved) and compare each with the
    first (module doc).

    Args:
        detector: the loaded :class:`~edge_detect.detector.DetectorLike` every run shares.
        specs: detect settings, ``MODE[@FPS][+regions]`` (:func:`parse_detect_spec`); the first is the
            reference.
        app_config: app config file for the ``motion`` section, tracker options, lines... (its sources are
            replaced by ``source``; ``None``: the defaults).
        lines: counting lines ``{name: [x1, y1, x2, y2]}`` added to the config's.
        repeat: rounds; the CPU figures are the median over rounds, the counts those of the first round.
        inference_fps: inference-only FPS of the detector, for each run's ``e2e.ratio_to_inference``.

    Raises:
        ConfigError: a bad spec, ``repeat < 1``, no spec.
    """
    from edge_detect.bench.measure import e2e_result

    if not specs:
        raise ConfigError("bench --detect: expected at least one setting, got none")
    if repeat < 1:
        raise ConfigError(f"bench --repeat: expected >= 1, got {repeat}")
    parsed = [parse_detect_spec(s) for s in specs]
    runs: List[List[Tuple[Any, Recorder]]] = [[] for _ in specs]
    for r in range(repeat):
        for k, spec in enumerate(parsed):
            cfg = _config(source, spec, app_config, lines, max_frames, sinks, batch, progress)
            runs[k].append(_run_once(detector, cfg))
            LOGGER.info("bench detect %s (round %d): %s", specs[k], r + 1, runs[k][-1][0].format().splitlines()[0])
    out = []
    for spec, (mode, fps, regions), rounds in zip(specs, parsed, runs):
        summary, rec = rounds[0]
        d = summary.to_dict()
        cpu_runs = [s.cpu_ms_per_frame for s, _ in rounds]
        cpu = {k: statistics.median(c.get(k, 0.0) for c in cpu_runs) for k in cpu_runs[0]}
        detect = next(iter(summary.sources.values()), {}).get("detect", {})
        out.append({"spec": spec, "mode": mode, "fps": fps, "regions": detect.get("regions") if regions else None,
                    "frames": summary.processed,
                    "inference_calls": summary.inference_calls, "skipped_frames": summary.skipped_frames,
                    "motion_frames": summary.motion_frames,
                    "reasons": detect.get("reasons", {}),
                    "cpu_ms_per_frame": cpu, "cpu_total_runs": [c.get("total") for c in cpu_runs],
                    "fps_run": summary.fps,
                    "lines": {n: {"in": c["in"], "out": c["out"]} for n, c in (d.get("lines") or {}).items()},
                    "tracks": (d.get("tracker") or {}).get("tracks", 0),
                    "e2e": e2e_result(d, inference_fps), "_rec": rec})
    _compare(out)
    for entry in out:
        entry.pop("_rec")
    return out


def _compare(out: List[Dict[str, Any]]) -> None:
    """Each entry's ``vs_first`` (module doc)."""
    ref = out[0]
    for entry in out:
        found, total = tracks_found(ref["_rec"], entry["_rec"])
        cpu0 = ref["cpu_ms_per_frame"].get("total") or float("nan")
        entry["vs_first"] = {
            "inference_calls": entry["inference_calls"] / max(ref["inference_calls"], 1),
            "cpu": (entry["cpu_ms_per_frame"].get("total") or float("nan")) / cpu0,
            "lines_equal": entry["lines"] == ref["lines"], "tracks_found": f"{found}/{total}",
            "tracks_found_frac": found / total if total else float("nan"),
            "same_output_frames": _same_output(ref["_rec"], entry["_rec"])}
