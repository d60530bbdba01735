"""A scripted synthetic world with a known answer, for tracker / line / zone tests.

Actors are people cut from the shared sample images (``bus.jpg``: the YOLOv5 reference boxes of its three
people) pasted at scripted positions over a plain background; occluders are drawn on top. The same script
drives two things:

* :func:`render_video`: an mp4 for the real detector (end-to-end tests);
* :class:`FakeDetector`: the ground-truth boxes of what is visible (partly hidden boxes are cut to their
  visible part; boxes less than ``min_visible`` visible are missed), with seeded pixel noise, dropouts, class
  flicker and low-score frames, clipped to the frame, for exact semantic tests without a model.

Coordinates are source-frame pixels; an actor's position is its box's bottom-centre ``(x, y)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.types import Detections, Frame

# YOLOv5n reference boxes of the people in bus.jpg (shared/reference/infer_bus.npz, nms_display_original)
BUS_PEOPLE = ((219, 408, 349, 863), (52, 399, 207, 895), (681, 377, 810, 870))


@dataclass
class Actor:
    """One object: keyframes ``[(frame, x, y_bottom), ...]`` linearly interpolated; absent outside them."""

    name: str
    keyframes: List[Tuple[int, float, float]]
    height: float = 100.0
    crop: int = 0
    class_id: int = 0
    jitter: Dict[int, Tuple[float, float]] = field(default_factory=dict)  # frame -> (dx, dy) added
    flicker: Dict[int, int] = field(default_factory=dict)  # frame -> class id reported instead

    @property
    def aspect(self) -> float:
        x1, y1, x2, y2 = BUS_PEOPLE[self.crop]
        return (x2 - x1) / (y2 - y1)

    def box(self, f: int) -> Optional[np.ndarray]:
        """float64 ``(4,)`` xyxy at frame ``f`` or ``None`` when absent."""
        ks = self.keyframes
        if f < ks[0][0] or f > ks[-1][0]:
            return None
        for (f0, x0, y0), (f1, x1, y1) in zip(ks, ks[1:]):
            if f0 <= f <= f1:
                a = 0.0 if f1 == f0 else (f - f0) / (f1 - f0)
                x, y = x0 + a * (x1 - x0), y0 + a * (y1 - y0)
                break
        else:
            x, y = ks[0][1], ks[0][2]
        dx, dy = self.jitter.get(f, (0.0, 0.0))
        x, y = x + dx, y + dy
        w = self.height * self.aspect
        return np.array([x - w / 2, y - self.height, x + w / 2, y])


@dataclass
class World:
    """Actors, occluders (xyxy rectangles drawn over the actors), frame size and rate."""

    actors: List[Actor]
    frames: int
    size: Tuple[int, int] = (360, 480)  # (h, w)
    fps: float = 10.0
    occluders: List[Tuple[int, int, int, int]] = field(default_factory=list)

    def frame(self, f: int) -> Frame:
        """A :class:`Frame` stub (black image) with the index and timestamps of frame ``f``."""
        return Frame(np.zeros((*self.size, 3), np.uint8), "synthetic", f, f * 1000.0 / self.fps, 0.0,
                     1_700_000_000.0 + f / self.fps)

    def visible_box(self, actor: Actor, f: int, min_visible: float = 0.4) -> Optional[np.ndarray]:
        """The visible part of the actor's box (clipped to the frame, minus occluders spanning its height)."""
        box = actor.box(f)
        if box is None:
            return None
        h, w = self.size
        vis = np.array([max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)])
        if vis[2] <= vis[0] or vis[3] <= vis[1]:
            return None
        full = (box[2] - box[0]) * (box[3] - box[1])
        # horizontal intervals left visible by occluders (occluders are tall pillars over the box's rows)
        intervals = [(vis[0], vis[2])]
        for ox1, oy1, ox2, oy2 in self.occluders:
            if oy1 > vis[1] + 0.5 * (vis[3] - vis[1]) or oy2 < vis[3] - 0.5 * (vis[3] - vis[1]):
                continue  # covers less than half the height: ignored
            nxt = []
            for a, b in intervals:
                if ox2 <= a or ox1 >= b:
                    nxt.append((a, b))
                    continue
                if ox1 > a:
                    nxt.append((a, ox1))
                if ox2 < b:
                    nxt.append((ox2, b))
            intervals = nxt
        if not intervals:
            return None
        a, b = max(intervals, key=lambda ab: ab[1] - ab[0])
        out = np.array([a, vis[1], b, vis[3]])
        if (out[2] - out[0]) * (out[3] - out[1]) < min_visible * full:
            return None
        return out


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
    img = cv2.imread(str(shared / "images" / "bus.jpg"))
    assert img is not None, "bus.jpg unreadable"
    return [img[y1:y2, x1:x2] for x1, y1, x2, y2 in BUS_PEOPLE]


def background(size: Tuple[int, int], seed: int = 0) -> np.ndarray:
    """A plain pavement-like background: vertical grey gradient with mild noise (no object-like texture)."""
    h, w = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(150, 110, h)[:, None, None] * np.ones((1, w, 3))
    img = ramp + rng.normal(0, 4, (h, w, 3))
    img[..., 0] += 8  # slightly blue-grey
    return np.clip(img, 0, 255).astype(np.uint8)


def render_frame(world: World, f: int, crops: List[np.ndarray], bg: np.ndarray) -> np.ndarray:
    img = bg.copy()
    h, w = world.size
    for actor in world.actors:
        box = actor.box(f)
        if box is None:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        crop = cv2.resize(crops[actor.crop], (max(x2 - x1, 1), max(y2 - y1, 1)), interpolation=cv2.INTER_AREA)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        img[cy1:cy2, cx1:cx2] = crop[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    for ox1, oy1, ox2, oy2 in world.occluders:
        img[oy1:oy2, ox1:ox2] = (60, 70, 95)  # a brownish pillar
        img[oy1:oy2, ox1:ox2:6] = (45, 55, 80)  # with vertical grooves
    return img


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
