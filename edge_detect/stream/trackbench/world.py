"""A scripted synthetic world with an exact answer: actors cut from the shared sample images, moving on keyframes.

Actors are sprites (:data:`SPRITES`: the people of ``bus.jpg`` and ``zidane.jpg`` and the bus of ``bus.jpg``, at
the YOLOv5 reference boxes of those images) pasted at scripted positions over a plain background; occluders
(pillars) are drawn on top. The script gives, for every frame:

* :meth:`Actor.box`: where the actor really is (its full box, also when hidden or off the frame);
* :meth:`World.visible_box`: what a perfect detector would report (the box clipped to the frame, cut to its
  largest visible part left by pillars and, with ``mutual_occlusion``, by actors nearer the camera; ``None``
  when less than ``min_visible`` of it shows);
* :func:`render_frame`: the BGR image (for appearance cues and end-to-end tests with a real detector).

Coordinates are source-frame pixels (``x`` right, ``y`` down); an actor's position is its box's bottom-centre
``(x, y)``; boxes are xyxy float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.types import Frame

__all__ = ["Sprite", "SPRITES", "BUS_PEOPLE", "PERSON_SPRITES", "VEHICLE_SPRITES", "Actor", "World", "load_crops",
           "background", "render_frame"]


@dataclass(frozen=True)
class Sprite:
    """A cut-out: ``image`` (file name under ``<data>/images``), its ``box`` xyxy in that image's pixels."""

    image: str
    box: Tuple[int, int, int, int]

    @property
    def aspect(self) -> float:
        """Width over height."""
        x1, y1, x2, y2 = self.box
        return (x2 - x1) / (y2 - y1)


# YOLOv5n reference boxes of the people in bus.jpg (shared/reference/infer_bus.npz, nms_display_original)
BUS_PEOPLE = ((219, 408, 349, 863), (52, 399, 207, 895), (681, 377, 810, 870))
#: indices 0-2: the people of bus.jpg (the order of :data:`BUS_PEOPLE`), 3-4: the people of zidane.jpg, 5: the bus
#: (infer_zidane.npz / infer_bus.npz reference boxes).
SPRITES: Tuple[Sprite, ...] = tuple(Sprite("bus.jpg", b) for b in BUS_PEOPLE) + (
    Sprite("zidane.jpg", (742, 40, 1154, 716)), Sprite("zidane.jpg", (136, 181, 739, 720)),
    Sprite("bus.jpg", (49, 237, 810, 772)))
PERSON_SPRITES = (0, 1, 2, 3, 4)
VEHICLE_SPRITES = (5,)


@dataclass
class Actor:
    """One object: keyframes ``[(frame, x, y_bottom), ...]`` linearly interpolated; absent outside them.

    Attributes:
        height: box height in pixels (the width follows the sprite's aspect).
        crop: index into :data:`SPRITES`.
        class_id: the class a detector reports.
        jitter: ``{frame: (dx, dy)}`` added to the position (the object itself shakes).
        flicker: ``{frame: class id}`` reported instead of ``class_id``.
        duplicates: ``{frame: class id}``: frames on which a detector also reports a second, overlapping box of
            that class (per-class NMS keeps both a ``car`` and a ``truck`` box on one vehicle).
    """

    name: str
    keyframes: List[Tuple[int, float, float]]
    height: float = 100.0
    crop: int = 0
    class_id: int = 0
    jitter: Dict[int, Tuple[float, float]] = field(default_factory=dict)
    flicker: Dict[int, int] = field(default_factory=dict)
    duplicates: Dict[int, int] = field(default_factory=dict)

    @property
    def aspect(self) -> float:
        return SPRITES[self.crop].aspect

    def position(self, f: int) -> Optional[Tuple[float, float]]:
        """Bottom-centre ``(x, y)`` at frame ``f`` (jitter included) or ``None`` when absent."""
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
        return x + dx, y + dy

    def box(self, f: int) -> Optional[np.ndarray]:
        """float64 ``(4,)`` xyxy at frame ``f`` or ``None`` when absent."""
        p = self.position(f)
        if p is None:
            return None
        x, y = p
        w = self.height * self.aspect
        return np.array([x - w / 2, y - self.height, x + w / 2, y])


def _uncovered(intervals: List[Tuple[float, float]], x1: float, x2: float) -> List[Tuple[float, float]]:
    """``intervals`` minus ``[x1, x2]``."""
    out = []
    for a, b in intervals:
        if x2 <= a or x1 >= b:
            out.append((a, b))
            continue
        if x1 > a:
            out.append((a, x1))
        if x2 < b:
            out.append((x2, b))
    return out


@dataclass
class World:
    """Actors, occluders (xyxy rectangles drawn over the actors), frame size and rate.

    Attributes:
        size: ``(h, w)`` pixels.
        mutual_occlusion: actors nearer the camera (larger bottom ``y``) hide those behind them, in the visible
            boxes and in the rendering.
        dropped: frames the camera never delivers (a freeze): they have no :class:`Frame`, no detections, no
            ground truth; the frames after them keep their index and timestamps.
    """

    actors: List[Actor]
    frames: int
    size: Tuple[int, int] = (360, 480)  # (h, w)
    fps: float = 10.0
    occluders: List[Tuple[int, int, int, int]] = field(default_factory=list)
    mutual_occlusion: bool = False
    dropped: FrozenSet[int] = frozenset()

    def frame(self, f: int, image: Optional[np.ndarray] = None) -> Frame:
        """A :class:`Frame` with the index and timestamps of frame ``f`` (``image`` or a black one)."""
        img = np.zeros((*self.size, 3), np.uint8) if image is None else image
        return Frame(img, "synthetic", f, f * 1000.0 / self.fps, 0.0, 1_700_000_000.0 + f / self.fps)

    def _blockers(self, actor: Actor, f: int) -> List[np.ndarray]:
        """Boxes drawn over ``actor`` at frame ``f``: occluders, then nearer actors (``mutual_occlusion``)."""
        out = [np.asarray(o, np.float64) for o in self.occluders]
        if self.mutual_occlusion:
            me = actor.box(f)
            rank = self.actors.index(actor)
            for i, other in enumerate(self.actors):
                ob = other.box(f) if other is not actor else None
                if ob is not None and (ob[3], i) > (me[3], rank):
                    out.append(ob)
        return out

    def visible_box(self, actor: Actor, f: int, min_visible: float = 0.4) -> Optional[np.ndarray]:
        """The visible part of the actor's box: clipped to the frame, minus what covers at least half its height
        (pillars, and nearer actors with ``mutual_occlusion``); ``None`` when less than ``min_visible`` of the
        full box shows."""
        box = actor.box(f)
        if box is None:
            return None
        h, w = self.size
        vis = np.array([max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)])
        if vis[2] <= vis[0] or vis[3] <= vis[1]:
            return None
        full = (box[2] - box[0]) * (box[3] - box[1])
        intervals = [(vis[0], vis[2])]
        half = 0.5 * (vis[3] - vis[1])
        for ox1, oy1, ox2, oy2 in self._blockers(actor, f):
            if oy1 > vis[1] + half or oy2 < vis[3] - half:
                continue  # covers less than half the height: ignored
            intervals = _uncovered(intervals, ox1, ox2)
        if not intervals:
            return None
        a, b = max(intervals, key=lambda ab: ab[1] - ab[0])
        out = np.array([a, vis[1], b, vis[3]])
        if (out[2] - out[0]) * (out[3] - out[1]) < min_visible * full:
            return None
        return out

    def delivered(self) -> List[int]:
        """The frames the camera delivers, in order."""
        return [f for f in range(self.frames) if f not in self.dropped]


# ------------------------------------------------------------------------------------------------ rendering


def load_crops(data: Path) -> List[np.ndarray]:
    """The BGR cut-outs of :data:`SPRITES` from ``<data>/images``.

    Raises:
        FileNotFoundError: an image is missing or unreadable (set ``EDGE_DETECT_DATA`` to the shared folder).
    """
    images: Dict[str, np.ndarray] = {}
    crops = []
    for sp in SPRITES:
        if sp.image not in images:
            img = cv2.imread(str(Path(data) / "images" / sp.image))
            if img is None:
                raise FileNotFoundError(f"sprite image: expected {Path(data) / 'images' / sp.image}, got nothing "
                                        "readable (set EDGE_DETECT_DATA to the shared folder)")
            images[sp.image] = img
        x1, y1, x2, y2 = sp.box
        crops.append(images[sp.image][y1:y2, x1:x2])
    return crops


def background(size: Tuple[int, int], seed: int = 0) -> np.ndarray:
    """A plain pavement-like background: vertical grey gradient with mild noise (no object-like texture)."""
    h, w = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(150, 110, h)[:, None, None] * np.ones((1, w, 3))
    img = ramp + rng.normal(0, 4, (h, w, 3))
    img[..., 0] += 8  # slightly blue-grey
    return np.clip(img, 0, 255).astype(np.uint8)


def render_frame(world: World, f: int, crops: Sequence[np.ndarray], bg: np.ndarray) -> np.ndarray:
    """BGR uint8 ``(h, w, 3)`` image of frame ``f``: ``bg`` with the actors pasted (nearest last with
    ``mutual_occlusion``), then the occluders."""
    img = bg.copy()
    h, w = world.size
    actors = list(world.actors)
    if world.mutual_occlusion:
        order = {id(a): i for i, a in enumerate(actors)}
        actors.sort(key=lambda a: (a.box(f)[3] if a.box(f) is not None else 0.0, order[id(a)]))
    for actor in actors:
        box = actor.box(f)
        if box is None:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        crop = cv2.resize(crops[actor.crop], (max(x2 - x1, 1), max(y2 - y1, 1)), interpolation=cv2.INTER_AREA)
        img[cy1:cy2, cx1:cx2] = crop[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    for ox1, oy1, ox2, oy2 in world.occluders:
        img[oy1:oy2, ox1:ox2] = (60, 70, 95)  # a brownish pillar
        img[oy1:oy2, ox1:ox2:6] = (45, 55, 80)  # with vertical grooves
    return img
