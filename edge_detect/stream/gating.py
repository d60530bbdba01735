"""Motion gating and a detect rate per source, wired into the pipeline: :class:`SourceGate`.

The pure parts live in :mod:`edge_detect.stream.motion` (:class:`~edge_detect.stream.motion.MotionDetector`,
:class:`~edge_detect.stream.motion.MotionGate`, :class:`~edge_detect.stream.motion.TrackStillness`); this module
puts one of each per source behind the pipeline's gate hook (:mod:`edge_detect.stream.batcher`)::

    "preprocess" thread, every frame of the source (before letterboxing):
        t = stream time of the frame (media_time: pts, else capture wall time)
        motion = MotionDetector.update(frame.image, t)           # mode: motion only (low resolution, ~0.3 ms)
        active, still_s = TrackStillness.snapshot(t)             # what the tracker said a few frames ago
        infer = MotionGate.decide(t, motion, active, still_s)    # -> the frame goes to the backend, or not
    sinks-stage thread, after the source's processors, every frame the detector ran on:
        TrackStillness.update(t, tracked detections)             # observe(frame, detections)

**Thread-safe hand-off.** The gate runs on the preprocess thread and reads the tracks' state; the processors run
on the sinks-stage thread and write it. :class:`~edge_detect.stream.motion.TrackStillness` builds its new state
aside and swaps it in one assignment, and the gate reads it once per frame (``snapshot``), so it always sees a
whole observation: the previous or the new one. The gate therefore sees the tracks of a frame a few frames late
(the pipeline's depth: the hand-overs between the threads, ~2-4 frames); harmless, since ``stationary_s`` is
seconds and a moving object makes motion by itself. The gate's own counters are guarded by a lock (read by
``figures()`` from the App's status and the metrics).

Gated frames (``infer`` false) skip letterboxing and the backend and reach the processors with empty detections
and ``metadata["inferred"] = False``: the tracker predicts and returns the predicted boxes of its tracked objects
(:mod:`edge_detect.stream.processors.bytetrack`), line and zone counters take them as presence only, and every
sink still gets the frame (the JSONL line says ``"inferred": false``).

Settings (``detect`` and ``motion`` in the app config, defaults and per source; :func:`make_gate`):

* ``detect: {mode: always | motion, fps: N, stationary_s, refresh_s, infer_calibrating}``
  (:class:`~edge_detect.stream.motion.MotionGate`); ``mode: always`` without ``fps`` installs no gate at all;
* ``motion: {method: diff | mog2 | knn, min_area, mask: [polygons], threshold, width, calibration_s, ...}``
  (:class:`~edge_detect.stream.motion.MotionDetector`), used with ``mode: motion``.
* ``detect: {regions: true | {max_zoom, max_regions, pad, ...}}`` (:class:`~edge_detect.stream.regions.RegionOptions`,
  ``mode: motion`` only): **region inference**. A frame inferred for its motion or its moving tracks is inferred
  on crops around the motion boxes and the tracks' last boxes (:func:`~edge_detect.stream.regions.plan_regions`,
  the model's aspect ratio) instead of whole: the gate returns the list of
  :class:`~edge_detect.stream.regions.Region` s, the batcher letterboxes each crop as a row of the batch, and the
  pipeline maps the crops' boxes back to the frame (:func:`~edge_detect.stream.regions.regions_to_frame`).
  Frames inferred for another reason (calibrating, a refresh without boxes), and plans that fall back to the whole
  frame (too many or too large regions), are inferred whole. It needs the model's input size, which the batcher
  gives the gate (:meth:`SourceGate.use_model_hw`); a detector that does not tell it, or one on the device path,
  infers whole frames.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edge_detect.errors import ConfigError
from edge_detect.stream.motion import MotionDetector, MotionGate, TrackStillness
from edge_detect.stream.processors._common import media_time
from edge_detect.stream.regions import Region, RegionOptions
from edge_detect.types import Detections, Frame

__all__ = ["SourceGate", "make_gate", "detect_options", "DETECT_DEFAULTS"]

LOGGER = logging.getLogger(__name__)

#: ``detect`` settings when none are given: every frame inferred (no gate installed)
DETECT_DEFAULTS: Dict[str, Any] = {"mode": "always", "fps": None}

_REGION_REASONS = ("motion", "tracks", "refresh")  # gate reasons whose frame has boxes to cut regions around


def detect_options(*layers: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """:data:`DETECT_DEFAULTS` updated by each of ``layers`` in turn (``None`` values of a layer are ignored)."""
    out = dict(DETECT_DEFAULTS)
    for layer in layers:
        out.update({k: v for k, v in (layer or {}).items() if v is not None or k == "fps"})
    return out


class SourceGate:
    """The gate of one source (see module doc): its callable is the pipeline's gate hook, :meth:`observe` its
    feedback hook, :meth:`figures` its part of the source's figures.

    Args:
        detect: :class:`~edge_detect.stream.motion.MotionGate` options (``mode``, ``fps``, ``stationary_s``,
            ``refresh_s``, ``infer_calibrating``).
        motion: :class:`~edge_detect.stream.motion.MotionDetector` options (used with ``mode: motion``).

    Raises:
        ConfigError: an unknown key (with the closest known one) or a value out of range.
    """

    def __init__(self, detect: Mapping[str, Any], motion: Optional[Mapping[str, Any]] = None) -> None:
        opts = detect_options(detect)
        self.regions = _region_options(opts)
        self.gate = MotionGate.from_config(opts)
        self.motion = MotionDetector.from_config(motion or {}) if self.gate.mode == "motion" else None
        if self.motion is None and motion:
            MotionDetector.from_config(motion)  # checked all the same: a typo should not wait for mode: motion
        self.stillness = TrackStillness()
        self.model_hw: Optional[Tuple[int, int]] = None
        self._region_counts = {"frames": 0, "crops": 0, "whole_frames": 0}
        self._lock = threading.Lock()

    def use_model_hw(self, model_hw: Optional[Tuple[int, int]]) -> None:
        """The model's input ``(h, w)`` regions are planned for (the batcher's call; ``None``: whole frames)."""
        self.model_hw = None if model_hw is None else (int(model_hw[0]), int(model_hw[1]))

    def __call__(self, frame: Frame) -> Union[bool, List[Region]]:
        """Whether the detector runs on ``frame`` (preprocess thread; BGR ``uint8 (H, W, 3)`` image): ``False``,
        ``True`` (the whole frame) or, with region inference, the regions to run it on (module doc)."""
        t = media_time(frame)
        result = self.motion.update(frame.image, t) if self.motion is not None else None
        active, still_s = self.stillness.snapshot(t)
        with self._lock:
            decision = self.gate.decide(t, result, active, still_s)
        if not decision.infer or self.regions is None or self.model_hw is None:
            return decision.infer
        regions: List[Region] = []
        if decision.reason in _REGION_REASONS:
            boxes = np.concatenate([result.boxes if result is not None else np.zeros((0, 4), np.float32),
                                    self.stillness.boxes()]).reshape(-1, 4)
            regions = self.regions.plan(boxes, frame.image.shape[:2], self.model_hw)
        whole = not regions or regions[0].hw == tuple(frame.image.shape[:2])
        with self._lock:
            self._region_counts["whole_frames" if whole else "frames"] += 1
            self._region_counts["crops"] += 0 if whole else len(regions)
        return True if whole else regions

    def inferred_whole(self, frame: Frame, regions: List[Region]) -> None:
        """The batcher's word that ``frame``, asked in ``regions``, was inferred whole (its crops did not fit a
        static batch): the figures say so."""
        with self._lock:
            self._region_counts["frames"] -= 1
            self._region_counts["crops"] -= len(regions)
            self._region_counts["whole_frames"] += 1

    def observe(self, frame: Frame, detections: Detections) -> None:
        """The source's processed detections of ``frame`` (sinks-stage thread, after the processors): the tracks
        of a frame the detector ran on update the stillness the gate reads."""
        if not frame.skip_inference:
            self.stillness.update(media_time(frame), detections)

    def figures(self) -> Dict[str, Any]:
        """``{"motion_frames": n, "detect": {"mode", "fps", "reasons": {reason: frames}, "lighting_jumps",
        "regions": {"frames", "crops", "whole_frames"}}}`` (the gate's decisions so far; ``reasons``:
        :class:`~edge_detect.stream.motion.GateDecision`; ``regions`` with region inference: inferred frames cut
        into ``crops`` regions, and those inferred whole)."""
        with self._lock:
            g = self.gate
            detect = {"mode": g.mode, "fps": g.fps, "reasons": dict(g.reasons)}
            if self.regions is not None:
                detect["regions"] = dict(self._region_counts)
            motion_frames = g.motion_frames
        if self.motion is not None:
            detect["method"] = self.motion.method
            detect["lighting_jumps"] = self.motion.lighting_jumps
        return {"motion_frames": motion_frames, "detect": detect}


def make_gate(detect: Optional[Mapping[str, Any]], motion: Optional[Mapping[str, Any]] = None
              ) -> Optional[SourceGate]:
    """The :class:`SourceGate` for these settings, or ``None`` when every frame is inferred anyway
    (``mode: always`` without ``fps``; the ``motion`` options are still checked).

    Raises:
        ConfigError: as :class:`SourceGate`.
    """
    opts = detect_options(detect)
    if opts["mode"] == "always" and opts.get("fps") is None:
        _region_options(opts)
        MotionGate.from_config(opts)
        if motion:
            MotionDetector.from_config(motion)
        return None
    return SourceGate(opts, motion)


def _region_options(opts: Dict[str, Any]) -> Optional[RegionOptions]:
    """Pop and check ``regions`` from the detect options (``mode: motion`` only).

    Raises:
        ConfigError: bad region settings, or regions asked with another mode.
    """
    regions = RegionOptions.from_config(opts.pop("regions", None))
    if regions is not None and opts.get("mode") != "motion":
        raise ConfigError(f"detect.regions: expected mode: motion (regions are cut around motion), got mode: "
                          f"{opts.get('mode')}")
    return regions
