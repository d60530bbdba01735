"""A scripted synthetic world with a known answer, for tracker / line / zone tests.

The world itself (actors cut from the shared sample images on keyframes, occluders, rendering) lives in
:mod:`edge_detect.stream.trackbench.world`, shared with the tracking benchmark; this module adds what the tests
use on top of it:

* :func:`render_video`: an mp4 for the real detector (end-to-end tests);
* :class:`FakeDetector`: the ground-truth boxes of what is visible (partly hidden boxes are cut to their
  visible part; boxes less than ``min_visible`` visible are missed), with seeded pixel noise, dropouts, class
  flicker, duplicate boxes of another class and low-score frames, clipped to the frame, for exact semantic
  tests without a model;
* :func:`gate_scene`: the end-to-end scene.

Coordinates are source-frame pixels; an actor's position is its box's bottom-centre ``(x, y)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.stream.trackbench.world import (BUS_PEOPLE, Actor, World, background, load_crops,  # noqa: F401
                                                 render_frame)
from edge_detect.types import Detections


class FakeDetector:
    """Ground-truth detector over a :class:`World` (see module doc); deterministic for a seed.

    Args:
        world: the world.
        noise_px: standard deviation of the Gaussian noise on each box coordinate.
        dropout: probability of missing a visible box on a frame.
        low_score_frames: ``{actor name: {frames}}`` reported with score 0.3 (below ByteTrack's high threshold).
        false_positives: ``{frame: xyxy}`` one-frame spurious boxes (score 0.9).
    """

    def __init__(self, world: World, noise_px: float = 1.0, dropout: float = 0.0, seed: int = 0,
                 low_score_frames: Optional[Dict[str, Sequence[int]]] = None,
                 false_positives: Optional[Dict[int, Sequence[float]]] = None, min_visible: float = 0.4) -> None:
        self.world, self.noise_px, self.dropout = world, noise_px, dropout
        self.rng = np.random.default_rng(seed)
        self.low = {k: set(v) for k, v in (low_score_frames or {}).items()}
        self.fp = dict(false_positives or {})
        self.min_visible = min_visible

    def __call__(self, f: int) -> Detections:
        boxes, scores, classes = [], [], []
        for actor in self.world.actors:
            box = self.world.visible_box(actor, f, self.min_visible)
            if box is None or (self.dropout and self.rng.random() < self.dropout):
                continue
            if self.noise_px:
                box = box + self.rng.normal(0, self.noise_px, 4)
            h, w = self.world.size  # clipped to the frame like the real postprocess
            boxes.append(np.clip(box, 0, [w, h, w, h]))
            scores.append(0.3 if f in self.low.get(actor.name, ()) else 0.85)
            classes.append(actor.flicker.get(f, actor.class_id))
            if f in actor.duplicates:  # per-class NMS kept a second box of another class (no random draw)
                bw, bh = box[2] - box[0], box[3] - box[1]
                boxes.append(np.clip(box + [0.03 * bw, -0.02 * bh, 0.03 * bw, 0.0], 0, [w, h, w, h]))
                scores.append(0.8)
                classes.append(actor.duplicates[f])
        if f in self.fp:
            boxes.append(np.asarray(self.fp[f], np.float64))
            scores.append(0.9)
            classes.append(0)
        return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(classes))


def run_processors(world: World, detector, processors: Sequence) -> List[Detections]:
    """Feed every frame of ``world`` through ``detector`` then ``processors`` in order; the per-frame outputs."""
    out = []
    for f in range(world.frames):
        frame = world.frame(f)
        dets = detector(f)
        for p in processors:
            dets = p.update(dets, frame)
        out.append(dets)
    return out


def events_of(outputs: Sequence[Detections], kind: str) -> List[dict]:
    return [e for d in outputs for e in d.metadata.get("events", []) if e["type"] == kind]


# ------------------------------------------------------------------------------------------------ rendering


def _crops(shared: Path) -> List[np.ndarray]:
    return load_crops(shared)


def render_video(world: World, path: Path, shared: Path) -> Path:
    """Write ``world`` as an mp4 (mp4v) at its fps; returns the path."""
    crops, bg = _crops(shared), background(world.size)
    h, w = world.size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), world.fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for f in range(world.frames):
        writer.write(render_frame(world, f, crops, bg))
    writer.release()
    return path


# ------------------------------------------------------------------------------------------------ scenes

GATE = (240.0, 0.0, 240.0, 360.0)  # drawn top to bottom: "in" = moving right to left across the picture
PILLAR = (190, 255, 290, 360)  # hides the bottom lane around the gate
LANES = (125.0, 245.0, 360.0)  # bottom y of the top, middle and bottom lanes (people are 110 px tall)


def gate_scene() -> Tuple[World, Dict[str, int]]:
    """The end-to-end scene: three lanes (:data:`LANES`), a pillar over the gate in the bottom lane, 10 fps,
    16 s. Expected counts on :data:`GATE`: ``in`` 2, ``out`` 2.

    * frames 0-44: simultaneous crossings at frame 22: ``a`` left->right in the top lane (out), ``c``
      right->left in the middle lane (in);
    * frames 45-95: ``b`` walks right->left in the bottom lane behind the pillar, hidden about 1 s while it
      crosses (in); meanwhile ``d`` walks towards the gate in the top lane, stops just short of it and walks
      back (none);
    * frames 110-160: ``e`` walks left->right in the middle lane, stops on the gate and jitters +-3 px for
      15 frames, then walks on (out).
    """
    top, mid, bot = LANES
    rng = np.random.default_rng(7)
    jit = {f: (float(rng.choice([-3.0, 3.0])), 0.0) for f in range(128, 143)}
    actors = [
        Actor("a", [(0, 20, top), (44, 460, top)], height=110, crop=0),
        Actor("c", [(0, 460, mid), (44, 20, mid)], height=110, crop=1),
        Actor("b", [(45, 460, bot), (95, 20, bot)], height=110, crop=1),
        Actor("d", [(48, 30, top), (70, 236, top), (72, 236, top), (96, 30, top)], height=110, crop=0),
        Actor("e", [(110, 20, mid), (128, 240, mid), (142, 240, mid), (160, 460, mid)], height=110, crop=0,
              jitter=jit),
    ]
    return World(actors, 162, occluders=[PILLAR]), {"in": 2, "out": 2}
