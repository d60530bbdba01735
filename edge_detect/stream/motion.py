"""Motion detection and the inference gate: spend the detector only on frames (and regions) where something moves.

Three pure objects, fed one frame at a time by the caller (no threads, no clock of their own: every call takes
the frame's **stream time** ``t`` in seconds, e.g. :func:`~edge_detect.stream.processors._common.media_time`):

* :class:`MotionDetector`: the decoded BGR frame -> :class:`MotionResult` (``motion``, merged motion boxes in
  original-frame pixels, the changed fraction, ``calibrating``). Works on a small copy: resized to ``width``
  pixels wide, grayscale, Gaussian blur, then one background model:

  ==========  =====================================================================================================
  ``diff``    running average of the frame (``cv2.accumulateWeighted``, rate ``alpha``) and the absolute difference
              to it above ``threshold`` grey levels (default). Cheapest; a slow lighting drift is absorbed.
  ``mog2``    OpenCV's Gaussian mixture (``createBackgroundSubtractorMOG2``, no shadows), ``threshold`` = its
              ``varThreshold`` (squared Mahalanobis distance). Copes with multi-modal backgrounds (leaves, water).
  ``knn``     OpenCV's K-nearest-neighbours model (``createBackgroundSubtractorKNN``, no shadows), ``threshold``
              = its ``dist2Threshold``. Likewise, at a higher cost.
  ==========  =====================================================================================================

  Measured on the static scene of ``tools/make_motion_scene.py`` (480x360, 10 fps, 4 walkers in 90 s) and the busy
  sample video, 2 shared CPU cores (``tools/motion_probe.py methods``):

  ==========  ==============  ============  ==========  ==================  ======================================
  method      CPU ms / frame  frame recall  box recall  false motion        swaying region (3 px), no mask / mask
  ==========  ==============  ============  ==========  ==================  ======================================
  ``diff``    0.3             0.997         1.0         2.2 % (ghosts)      99 % / 2.0 % of idle frames fire
  ``mog2``    1.1             0.997         1.0         0 %                 43 % / 0 %
  ``knn``     1.1             0.997         1.0         0 %                 78 % / 0 %
  ==========  ==============  ============  ==========  ==================  ======================================

  (1080p input: 0.5 / 1.0 / 1.3 ms, the bilinear downscale included.) All three saw 100 % of the busy video's frames
  as motion and recalibrated once on a 40 % light jump without firing. **Default: ``diff``**: the same recall for
  a quarter of the CPU, which matters where everything moves (the motion stage is pure overhead on a busy
  camera) and on many-camera boxes; its only extra false motion is the fading ghost for ~0.6 s after a walker
  leaves (a few inference calls). No model copes with swaying leaves unmasked: mask them (``mask``), or use
  ``mog2`` where a moving background cannot be masked (water, a flag).

  The foreground mask is cleared under ``mask`` polygons (areas to ignore: a clock, trees), dilated, and each
  outer contour whose area is at least ``min_area`` gives a box; boxes closer than ``merge_gap_px`` are merged.
  **Calibration**: for ``calibration_s`` after the first frame, and after a **lighting jump** (more than
  ``lighting_frac`` of the unmasked picture changed at once: a light switched, the camera's gain or IR mode
  changed), the model relearns the background quickly and reports ``motion=False, calibrating=True``.

* :class:`MotionGate`: the per-source policy ``detect: {mode: always | motion, fps: N}`` deciding, per frame,
  whether the detector runs (:class:`GateDecision`); it keeps ``inference_calls``, ``motion_frames`` and
  ``skipped_frames``.

* :class:`TrackStillness`: from a tracker's output on inferred frames, how long every track has stayed in place
  (the gate's ``still_s``).

What the pipeline calls, per source (one instance of each per source; ``t`` = stream time of the frame; wired in
by :class:`~edge_detect.stream.gating.SourceGate`):

    result = detector.update(frame.image, t)                       # decode or batcher thread, every frame
    decision = gate.decide(t, result, stillness.active, stillness.still_s(t))
    if decision.infer: ... run the model (or plan_regions(result.boxes, ...) for region inference) ...
    else:              ... hand the frame on with empty detections flagged "not inferred" ...
    # after the processors of an inferred frame:
    stillness.update(t, tracked_detections)
    # summary: gate.summary() -> {"inference_calls", "motion_frames", "skipped_frames", ...}

``update`` / ``decide`` run in one thread (the batcher's) and ``stillness.update`` in the processors' thread:
``TrackStillness`` swaps its state in one assignment, so the reader sees the previous or the new observation,
a few frames late by the pipeline's depth (harmless: ``stationary_s`` is seconds).
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_detect.config import suggest_key
from edge_detect.errors import ConfigError
from edge_detect.stream.geometry import as_polygon
from edge_detect.stream.regions import merge_boxes
from edge_detect.types import Detections

__all__ = ["METHODS", "DEFAULT_THRESHOLDS", "MotionResult", "MotionDetector", "GateDecision", "MotionGate",
           "TrackStillness", "DETECT_MODES"]

LOGGER = logging.getLogger(__name__)

#: background models of :class:`MotionDetector`
METHODS = ("diff", "mog2", "knn")
#: ``threshold`` per method when none is given: grey levels (diff), MOG2 ``varThreshold``, KNN ``dist2Threshold``
DEFAULT_THRESHOLDS = {"diff": 25.0, "mog2": 16.0, "knn": 400.0}
#: ``detect.mode`` values of :class:`MotionGate`
DETECT_MODES = ("always", "motion")


@dataclass(frozen=True)
class MotionResult:
    """Motion in one frame.

    Attributes:
        motion: at least one motion box (always ``False`` while calibrating).
        boxes: float32 ``(N, 4)`` xyxy merged motion boxes in original-frame pixels (empty while calibrating).
        changed: fraction of the unmasked pixels (at the detector's resolution) that differ from the background,
            before dilation, in ``[0, 1]``.
        calibrating: the background is being (re)learned: after the start and after a lighting jump.
    """

    motion: bool
    boxes: np.ndarray
    changed: float
    calibrating: bool = False


def _check(ok: bool, what: str, expected: str, got: Any, hint: str = "") -> None:
    if not ok:
        raise ConfigError(f"motion {what}: expected {expected}, got {got!r}{hint}")


def _known_keys(options: Mapping[str, Any], known: Sequence[str], section: str) -> Dict[str, Any]:
    """``options`` as a dict after checking every key is one of ``known`` (ConfigError naming the closest)."""
    for key in options:
        if key not in known:
            raise ConfigError(f"{section}: unknown key {key!r}{suggest_key(str(key), known)}; expected some of "
                              f"{', '.join(known)}")
    return dict(options)


class MotionDetector:
    """Background-model motion detector for one source (see module doc).

    Args:
        method: ``"diff"`` (running average + difference), ``"mog2"`` or ``"knn"`` (OpenCV).
        width: width in pixels of the copy the model runs on (frames narrower than this are not enlarged).
        blur: Gaussian kernel side in pixels at that width (odd; 0 or 1 = none).
        threshold: foreground threshold, meaning per method (:data:`DEFAULT_THRESHOLDS`).
        alpha: ``diff`` only: background update rate per frame (0..1).
        history: ``mog2`` / ``knn``: frames of history of the OpenCV model.
        min_area: least contour area of a motion blob: ``>= 1``: in original-frame pixels; ``< 1``: as a
            fraction of the frame's area.
        mask: polygons to ignore, each ``[x1, y1, x2, y2, ...]`` or ``[[x, y], ...]`` in original-frame pixels.
        dilate: dilation iterations (3x3) joining a blob's fragments before contours.
        merge_gap_px: motion boxes closer than this (original-frame pixels) are merged.
        calibration_s: seconds of stream time of relearning after the start and after a lighting jump.
        lighting_frac: changed fraction above which a frame is a lighting jump (``> 1`` disables the check).

    Raises:
        ConfigError: an unknown method or a value out of range.
    """

    def __init__(self, method: str = "diff", width: int = 320, blur: int = 5, threshold: Optional[float] = None,
                 alpha: float = 0.05, history: int = 500, min_area: float = 0.0002,
                 mask: Sequence[Sequence[float]] = (), dilate: int = 2, merge_gap_px: float = 8.0,
                 calibration_s: float = 1.0, lighting_frac: float = 0.5) -> None:
        _check(method in METHODS, "method", f"one of {', '.join(METHODS)}", method, suggest_key(str(method), METHODS))
        _check(int(width) >= 16, "width", ">= 16 pixels", width)
        _check(int(blur) >= 0 and (int(blur) <= 1 or int(blur) % 2 == 1), "blur", "0, 1 or an odd number", blur)
        _check(threshold is None or threshold > 0, "threshold", "> 0", threshold)
        _check(0.0 < alpha <= 1.0, "alpha", "a value in (0, 1]", alpha)
        _check(int(history) >= 1, "history", ">= 1 frames", history)
        _check(min_area >= 0, "min_area", ">= 0 (pixels, or < 1: a fraction of the frame)", min_area)
        _check(int(dilate) >= 0, "dilate", ">= 0 iterations", dilate)
        _check(merge_gap_px >= 0, "merge_gap_px", ">= 0 pixels", merge_gap_px)
        _check(calibration_s >= 0, "calibration_s", ">= 0 seconds", calibration_s)
        _check(lighting_frac > 0, "lighting_frac", "> 0 (a fraction; > 1 disables)", lighting_frac)
        self.method, self.width, self.blur = method, int(width), int(blur)
        self.threshold = float(DEFAULT_THRESHOLDS[method] if threshold is None else threshold)
        self.alpha, self.history, self.min_area = float(alpha), int(history), float(min_area)
        self.mask = [as_polygon(p, what="motion_mask") for p in mask]
        self.dilate, self.merge_gap_px = int(dilate), float(merge_gap_px)
        self.calibration_s, self.lighting_frac = float(calibration_s), float(lighting_frac)
        self._geometry: Optional[Tuple[Tuple[int, int], Tuple[int, int], np.ndarray, int]] = None
        self._calibrate_until: Optional[float] = None
        self._relearn = True
        self._bg: Any = None
        self.lighting_jumps = 0

    OPTIONS = ("method", "width", "blur", "threshold", "alpha", "history", "min_area", "mask", "dilate",
               "merge_gap_px", "calibration_s", "lighting_frac")

    @classmethod
    def from_config(cls, options: Mapping[str, Any], section: str = "motion") -> "MotionDetector":
        """Build from a config mapping (the constructor's argument names; unknown keys -> ConfigError)."""
        return cls(**_known_keys(options, cls.OPTIONS, section))

    def reset(self) -> None:
        """Forget the background: the next frame starts a calibration period."""
        self._bg, self._calibrate_until, self._relearn = None, None, True

    # ----------------------------------------------------------------------------------------- geometry

    def _prepare(self, frame_hw: Tuple[int, int]) -> Tuple[Tuple[int, int], np.ndarray, int]:
        """``(small (h, w), keep mask uint8 (h, w), keep pixel count)`` for a frame size (cached)."""
        if self._geometry is None or self._geometry[0] != frame_hw:
            fh, fw = frame_hw
            sw = min(self.width, fw)
            sh = max(1, int(round(fh * sw / fw)))
            keep = np.full((sh, sw), 255, np.uint8)
            for poly in self.mask:
                pts = np.round(poly * (sw / fw, sh / fh)).astype(np.int32)
                cv2.fillPoly(keep, [pts], 0)
            if self._geometry is not None:
                self.reset()  # another frame size: the old background no longer fits
            self._geometry = (frame_hw, (sh, sw), keep, int(np.count_nonzero(keep)))
        return self._geometry[1], self._geometry[2], self._geometry[3]

    def small_gray(self, image: np.ndarray) -> np.ndarray:
        """``image`` (BGR ``uint8 (H, W, 3)`` or grey ``(H, W)``) resized to the model width, grey, blurred:
        ``uint8 (h, w)``."""
        (sh, sw), _, _ = self._prepare((int(image.shape[0]), int(image.shape[1])))
        # bilinear, not INTER_AREA: 4x cheaper at 1080p -> 320 (0.3 vs 1.9 ms) and, after the blur, as good at
        # finding far-away walkers (tools/motion_probe.py)
        small = image if image.shape[1] == sw else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
        gray = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(gray, (self.blur, self.blur), 0) if self.blur > 1 else gray

    # ----------------------------------------------------------------------------------------- models

    def _new_model(self) -> Any:
        if self.method == "mog2":
            return cv2.createBackgroundSubtractorMOG2(history=self.history, varThreshold=self.threshold,
                                                      detectShadows=False)
        if self.method == "knn":
            return cv2.createBackgroundSubtractorKNN(history=self.history, dist2Threshold=self.threshold,
                                                     detectShadows=False)
        return None

    def _foreground(self, gray: np.ndarray, calibrating: bool) -> np.ndarray:
        """uint8 ``(h, w)`` foreground (255) against the background, updating the background."""
        if self.method == "diff":
            if self._bg is None or self._relearn:
                self._bg = gray.astype(np.float32)
                self._relearn = False
                return np.zeros_like(gray)
            diff = cv2.absdiff(gray, cv2.convertScaleAbs(self._bg))
            cv2.accumulateWeighted(gray, self._bg, max(self.alpha, 0.5) if calibrating else self.alpha)
            return cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)[1]
        if self._bg is None:
            self._bg = self._new_model()
        rate = 1.0 if self._relearn else -1.0  # 1: reinitialize from this frame; -1: OpenCV's 1/min(2n, history)
        self._relearn = False
        return self._bg.apply(gray, learningRate=rate)

    # ----------------------------------------------------------------------------------------- per frame

    def update(self, image: np.ndarray, t: float) -> MotionResult:
        """Feed one frame; returns its motion.

        Args:
            image: BGR ``uint8 (H, W, 3)`` (or grey ``(H, W)``), the decoded frame.
            t: the frame's stream time in seconds (non-decreasing).

        Returns:
            :class:`MotionResult` with boxes in ``image``'s pixels.
        """
        frame_hw = (int(image.shape[0]), int(image.shape[1]))
        gray = self.small_gray(image)
        (sh, sw), keep, keep_px = self._prepare(frame_hw)
        if self._calibrate_until is None:
            self._calibrate_until = t + self.calibration_s
        calibrating = t < self._calibrate_until
        fg = self._foreground(gray, calibrating)
        if self.mask:
            fg = cv2.bitwise_and(fg, keep)
        changed = float(np.count_nonzero(fg)) / max(keep_px, 1)
        if not calibrating and changed > self.lighting_frac:
            self.lighting_jumps += 1
            LOGGER.debug("motion: lighting jump at t=%.3f s (%.0f%% of the picture changed): recalibrating",
                         t, 100 * changed)
            self._calibrate_until, self._relearn, calibrating = t + self.calibration_s, True, True
            self._foreground(gray, True)  # relearn from this frame at once
        if calibrating:
            return MotionResult(False, np.zeros((0, 4), np.float32), changed, True)
        boxes = self._boxes(fg, frame_hw, (sh, sw))
        return MotionResult(bool(len(boxes)), boxes, changed, False)

    def _boxes(self, fg: np.ndarray, frame_hw: Tuple[int, int], small_hw: Tuple[int, int]) -> np.ndarray:
        """Merged motion boxes, float32 ``(N, 4)`` xyxy original-frame pixels."""
        if self.dilate:
            fg = cv2.dilate(fg, None, iterations=self.dilate)
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return np.zeros((0, 4), np.float32)
        (fh, fw), (sh, sw) = frame_hw, small_hw
        sx, sy = fw / sw, fh / sh
        min_area = self.min_area * fh * fw if self.min_area < 1 else self.min_area
        boxes = []
        for c in contours:
            if cv2.contourArea(c) * sx * sy < min_area:
                continue
            x, y, w, h = cv2.boundingRect(c)
            boxes.append((x * sx, y * sy, min((x + w) * sx, fw), min((y + h) * sy, fh)))
        if not boxes:
            return np.zeros((0, 4), np.float32)
        return merge_boxes(np.asarray(boxes, np.float32), self.merge_gap_px)


class GateDecision(NamedTuple):
    """Whether the detector runs on a frame and why.

    Reasons when it runs: ``"always"``, ``"motion"``, ``"calibrating"`` (motion unknown), ``"tracks"`` (active
    tracks not yet still for ``stationary_s``), ``"refresh"`` (a periodic look at still tracks); when it does
    not: ``"idle"`` (no motion, no tracks), ``"stationary"`` (every track still for ``stationary_s``),
    ``"rate"`` (this ``1 / fps`` slot already had its inference).
    """

    infer: bool
    reason: str


@dataclass
class MotionGate:
    """Per-source detect policy: ``detect: {mode: always | motion, fps: N, stationary_s, refresh_s}``.

    ``mode="always"`` runs the detector on every frame; ``mode="motion"`` only when the frame has motion
    (:class:`MotionResult`), when motion is unknown (calibrating), or while tracks are active and not all of them
    have been still for ``stationary_s`` (a stationary object is then kept by the tracker without re-detection;
    with ``refresh_s`` it is looked at again once per ``refresh_s``). ``fps`` caps either mode at ``fps`` calls per
    second of stream time: time is cut in slots of ``1 / fps`` s and each slot gets at most one call, the first
    frame of the slot that wants one (``fps: 5`` on a 25 fps clock runs on exactly one frame in five).

    Attributes:
        mode: ``"always"`` or ``"motion"``.
        fps: most inference calls per second of stream time (``None``: no cap).
        stationary_s: seconds every active track must have been still before frames without motion are skipped.
        refresh_s: while skipping with still tracks, run once every this many seconds (0: never).
        infer_calibrating: run while the motion detector calibrates (its answer is unknown then).

    Raises:
        ConfigError: an unknown mode or a value out of range (with the key to fix).
    """

    mode: str = "motion"
    fps: Optional[float] = None
    stationary_s: float = 2.0
    refresh_s: float = 0.0
    infer_calibrating: bool = True
    frames: int = field(default=0, init=False)
    inference_calls: int = field(default=0, init=False)
    motion_frames: int = field(default=0, init=False)
    skipped_frames: int = field(default=0, init=False)
    reasons: Counter = field(default_factory=Counter, init=False)
    _last_slot: Optional[int] = field(default=None, init=False, repr=False)
    _last_infer_t: Optional[float] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in DETECT_MODES:
            raise ConfigError(f"detect.mode: expected one of {', '.join(DETECT_MODES)}, got {self.mode!r}"
                              f"{suggest_key(str(self.mode), DETECT_MODES)}")
        if self.fps is not None and not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise ConfigError(f"detect.fps: expected a number > 0 (or none for every frame), got {self.fps!r}")
        if not self.stationary_s >= 0:
            raise ConfigError(f"detect.stationary_s: expected >= 0 seconds, got {self.stationary_s!r}")
        if not self.refresh_s >= 0:
            raise ConfigError(f"detect.refresh_s: expected >= 0 seconds (0 = never), got {self.refresh_s!r}")

    OPTIONS = ("mode", "fps", "stationary_s", "refresh_s", "infer_calibrating")

    @classmethod
    def from_config(cls, options: Mapping[str, Any], section: str = "detect") -> "MotionGate":
        """Build from a config mapping ``{mode, fps, stationary_s, refresh_s, infer_calibrating}`` (unknown keys ->
        ConfigError naming the closest)."""
        return cls(**_known_keys(options, cls.OPTIONS, section))

    def _wanted(self, t: float, motion: Union[MotionResult, bool, None], active_tracks: int,
                still_s: float) -> Tuple[bool, str]:
        if self.mode == "always":
            return True, "always"
        calibrating = isinstance(motion, MotionResult) and motion.calibrating
        moving = motion.motion if isinstance(motion, MotionResult) else bool(motion)
        if moving:
            return True, "motion"
        if calibrating and self.infer_calibrating:
            return True, "calibrating"
        if active_tracks > 0:
            if still_s < self.stationary_s:
                return True, "tracks"
            if self.refresh_s > 0 and (self._last_infer_t is None or t - self._last_infer_t >= self.refresh_s):
                return True, "refresh"
            return False, "stationary"
        return False, "idle"

    def _slot(self, t: float) -> Optional[int]:
        return None if self.fps is None else int(math.floor(t * float(self.fps) + 1e-6))

    def decide(self, t: float, motion: Union[MotionResult, bool, None] = None, active_tracks: int = 0,
               still_s: float = 0.0) -> GateDecision:
        """Decide for one frame and count it.

        Args:
            t: the frame's stream time in seconds (non-decreasing within the source).
            motion: the frame's :class:`MotionResult` (or a bool; ``None`` = no motion, as in ``mode: always``).
            active_tracks: tracks seen on the source's last inferred frame (:attr:`TrackStillness.active`; 0
                without a tracker). Lost tracks are better left out: without motion nothing would find them.
            still_s: seconds every active track has stayed in place (:meth:`TrackStillness.still_s`).

        Returns:
            :class:`GateDecision` ``(infer, reason)``.
        """
        self.frames += 1
        if isinstance(motion, MotionResult) and motion.motion or motion is True:
            self.motion_frames += 1
        infer, reason = self._wanted(t, motion, active_tracks, still_s)
        slot = self._slot(t)
        if infer and slot is not None and slot == self._last_slot:
            infer, reason = False, "rate"
        if infer:
            self.inference_calls += 1
            self._last_slot, self._last_infer_t = slot, t
        else:
            self.skipped_frames += 1
        self.reasons[reason] += 1
        return GateDecision(infer, reason)

    def summary(self) -> Dict[str, Any]:
        """``{"inference_calls", "motion_frames", "skipped_frames", "frames", "reasons": {reason: frames}}``."""
        return {"inference_calls": self.inference_calls, "motion_frames": self.motion_frames,
                "skipped_frames": self.skipped_frames, "frames": self.frames, "reasons": dict(self.reasons)}


class TrackStillness:
    """How long the tracked objects of one source have stayed in place, from the tracker's output.

    A track is *still* since the stream time its box's centre last moved more than ``move_frac`` of the box's
    larger side (at least ``min_move_px``) away from where it was then (its anchor); a slow walker drifts past
    that within a few seconds and re-anchors, a parked car never does. Feed it the tracker's output of the
    frames the detector ran on (skipped frames carry no new observation).

    Args:
        move_frac: movement that re-anchors a track, as a fraction of its box's larger side.
        min_move_px: least movement in pixels that re-anchors (detector jitter on small boxes).
    """

    def __init__(self, move_frac: float = 0.25, min_move_px: float = 4.0) -> None:
        if not (move_frac >= 0 and min_move_px >= 0):
            raise ConfigError(f"stillness: expected move_frac >= 0 and min_move_px >= 0, got {move_frac}, "
                              f"{min_move_px}")
        self.move_frac, self.min_move_px = float(move_frac), float(min_move_px)
        self._anchors: Dict[int, Tuple[np.ndarray, float]] = {}
        self._boxes = np.zeros((0, 4), np.float32)

    @property
    def active(self) -> int:
        """Tracks in the last update."""
        return len(self._anchors)

    def update(self, t: float, detections: Detections) -> None:
        """Observe the tracked detections of an inferred frame (``track_id >= 1``; others ignored).

        Args:
            t: the frame's stream time in seconds.
            detections: the tracker's output: ``xyxy`` float32 original-frame pixels and ``track_id``.
        """
        if detections.track_id is None:
            self._anchors, self._boxes = {}, np.zeros((0, 4), np.float32)
            return
        anchors: Dict[int, Tuple[np.ndarray, float]] = {}
        boxes = []
        for box, tid in zip(detections.xyxy.astype(np.float64), detections.track_id):
            if tid < 1:
                continue
            boxes.append(box)
            old = self._anchors.get(int(tid))
            if old is not None:
                centre, since = old
                size = max(box[2] - box[0], box[3] - box[1])
                moved = float(np.hypot(*((box[:2] + box[2:]) / 2 - centre)))
                if moved <= max(self.move_frac * size, self.min_move_px):
                    anchors[int(tid)] = old
                    continue
            anchors[int(tid)] = ((box[:2] + box[2:]) / 2, float(t))
        self._boxes = np.asarray(boxes, np.float32).reshape(-1, 4)  # read alone by boxes(): either is whole
        self._anchors = anchors

    def boxes(self) -> np.ndarray:
        """float32 ``(N, 4)`` xyxy original-frame pixels: the tracked boxes of the last update (region inference
        looks there too; safe to call from another thread than :meth:`update`'s)."""
        return self._boxes

    def still_s(self, t: float) -> float:
        """Seconds every known track has been still at time ``t`` (the least over tracks; 0 with none)."""
        return self.snapshot(t)[1]

    def snapshot(self, t: float) -> Tuple[int, float]:
        """``(active, still_s(t))`` from one consistent observation (safe to call from another thread than
        :meth:`update`'s: the state is read once)."""
        anchors = self._anchors
        if not anchors:
            return 0, 0.0
        return len(anchors), max(0.0, float(t) - max(since for _, since in anchors.values()))
