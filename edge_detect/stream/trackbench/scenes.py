"""Scenario families of the tracking benchmark: seeded synthetic scenes with exact ground truth.

Every scene is a :class:`~edge_detect.stream.trackbench.world.World` (640x360, 10 or 15 fps, actors cut from the
shared images on scripted paths) plus one counting line and a detector noise model. :func:`make_scene` builds
scene ``seed`` of a family deterministically; :meth:`Scene.frames` gives, for every frame the camera delivers,
the noisy detections (what a detector would report: the visible boxes with box jitter, missed boxes, score
drops, a flickering false positive, class flicker and duplicate boxes of another class) and the ground truth
(actor index and visible box). :func:`truth_counts` gives the exact line counts from the actors' real paths.

Families (:data:`FAMILIES`):

* ``edge_reentry``: an object leaves through a frame edge and 0.5-3 s later another enters at the same edge
  walking back (the issue's case), or at the opposite edge walking the same way, or a third follows; a quarter
  of the scenes move vertically through the top/bottom edges across a horizontal line;
* ``crossing_paths``: two or three objects in opposite directions pass each other near the line, the nearer one
  hiding the other;
* ``occlusion``: an object crosses the line behind a pillar (hidden up to ~1.5 s, sometimes changing speed
  there), sometimes with a second one passing the pillar the other way;
* ``group``: two to four people walking together (partly hiding each other), sometimes with one walking through
  them the other way;
* ``stop_and_go``: an object stops before or just past the line and walks on, comes up to the line and turns
  back (not a crossing), or crosses, stops and comes back (two crossings);
* ``jitter``: an object stands on the line shaking +-1.5-3 px for 1-2.5 s, then walks on;
* ``fast``: objects moving 0.55-1.3 box widths per frame (vehicles and people);
* ``freeze``: the camera delivers no frame for 2 s while objects move (some cross the line meanwhile);
* ``detector_noise``: heavy detector noise (bursts of misses and low scores, 4 % box jitter, a false positive
  flickering in a corner);
* ``class_flicker``: a vehicle whose class flickers car/truck and which often carries a second, overlapping box
  of the other class (per-class NMS), sometimes a parked one doing the same, sometimes a passer-by.

Lines are drawn so that ``in`` is a move from the line's left to its right as seen in the image (see
:mod:`edge_detect.stream.geometry`); the truth applies the same hysteresis band as the counters
(:data:`HYSTERESIS_PX`) to the actors' real bottom-centre paths.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from edge_detect.stream.geometry import Hysteresis, signed_distance
from edge_detect.stream.trackbench.world import PERSON_SPRITES, VEHICLE_SPRITES, Actor, World
from edge_detect.types import Detections

__all__ = ["FAMILIES", "HYSTERESIS_PX", "Noise", "Scene", "SceneFrame", "make_scene", "truth_counts",
           "observable_counts"]

W, H = 640, 360
HYSTERESIS_PX = 4.0
PERSON, CAR, TRUCK = 0, 2, 7
FULL_FIGURES = (0, 1, 2)  # the narrow, full-height people of bus.jpg: a pillar can hide them


@dataclass(frozen=True)
class Noise:
    """The detector model of a scene.

    Attributes:
        jitter: standard deviation of each box coordinate as a fraction of the box's width (x) or height (y).
        miss: probability that a burst of missed detections of a visible object starts on a frame.
        miss_stay: probability that a miss burst goes on to the next frame.
        low: probability that a burst of low scores (0.12-0.45) starts.
        low_stay: probability that a low-score burst goes on.
        fp: probability that the false positive in a corner shows on a frame (it stays with probability 0.7).
        min_visible: objects less visible than this fraction are not detected.
    """

    jitter: float = 0.015
    miss: float = 0.03
    miss_stay: float = 0.4
    low: float = 0.03
    low_stay: float = 0.5
    fp: float = 0.0
    min_visible: float = 0.4


@dataclass
class SceneFrame:
    """One delivered frame: ``detections`` (xyxy float32, score float32, class int32; fresh per call),
    ground truth ``gt_ids`` int64 ``(G,)`` (actor indices) and ``gt_xyxy`` float64 ``(G, 4)`` (visible boxes)."""

    index: int
    detections: Detections
    gt_ids: np.ndarray
    gt_xyxy: np.ndarray


@dataclass
class Scene:
    """A seeded scene: world, lines ``{name: (x1, y1, x2, y2)}``, detector noise, corner false positive box."""

    family: str
    seed: int
    variant: str
    world: World
    lines: Dict[str, Tuple[float, float, float, float]]
    noise: Noise = Noise()
    fp_box: Optional[Tuple[float, float, float, float]] = None
    _cache: Optional[List[Tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = \
        field(default=None, repr=False)

    @property
    def truth(self) -> Dict[str, Dict[str, int]]:
        return truth_counts(self.world, self.lines)

    def frames(self) -> Iterator[SceneFrame]:
        """The delivered frames in order (deterministic for the scene's seed; computed once)."""
        if self._cache is None:
            self._cache = _detect(self)
        for f, xyxy, score, cls, gt_ids, gt in self._cache:
            yield SceneFrame(f, Detections(xyxy.copy(), score.copy(), cls.copy()), gt_ids, gt)


# ------------------------------------------------------------------------------------------------ detector


def _burst(rng: np.random.Generator, on: bool, start: float, stay: float) -> bool:
    return bool(rng.random() < (stay if on else start))


def _detect(scene: Scene) -> list:
    """Noisy detections and ground truth of every delivered frame (see :class:`Noise`)."""
    world, nz = scene.world, scene.noise
    rng = np.random.default_rng([zlib.crc32(scene.family.encode()), scene.seed, 1])
    h, w = world.size
    missing = [False] * len(world.actors)
    low = [False] * len(world.actors)
    fp_on = False
    out = []
    for f in range(world.frames):
        boxes, scores, classes, gt_ids, gt = [], [], [], [], []
        for i, actor in enumerate(world.actors):
            vis = world.visible_box(actor, f, nz.min_visible)
            if vis is None:
                missing[i] = low[i] = False
                continue
            missing[i] = _burst(rng, missing[i], nz.miss, nz.miss_stay)
            low[i] = _burst(rng, low[i], nz.low, nz.low_stay)
            if f in world.dropped:
                continue
            gt_ids.append(i)
            gt.append(vis)
            if missing[i]:
                continue
            full = actor.box(f)
            visible = (vis[2] - vis[0]) * (vis[3] - vis[1]) / ((full[2] - full[0]) * (full[3] - full[1]))
            bw, bh = vis[2] - vis[0], vis[3] - vis[1]
            box = vis + rng.normal(0, nz.jitter, 4) * [bw, bh, bw, bh]
            s = rng.uniform(0.12, 0.45) if low[i] else rng.uniform(0.55, 0.95) * (1.0 if visible > 0.7 else 0.75)
            boxes.append(box)
            scores.append(s)
            classes.append(actor.flicker.get(f, actor.class_id))
            if f in actor.duplicates:
                boxes.append(box + rng.normal(0, 0.04, 4) * [bw, bh, bw, bh])
                scores.append(min(s * rng.uniform(0.75, 1.1), 0.95))
                classes.append(actor.duplicates[f])
        fp_on = _burst(rng, fp_on, nz.fp, 0.7) if scene.fp_box is not None else False
        if f in world.dropped:
            continue
        if fp_on:
            boxes.append(np.asarray(scene.fp_box) + rng.normal(0, 1.5, 4))
            scores.append(rng.uniform(0.5, 0.8))
            classes.append(PERSON)
        xyxy = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, [w, h, w, h]).astype(np.float32)
        out.append((f, xyxy, np.asarray(scores, np.float32), np.asarray(classes, np.int32),
                    np.asarray(gt_ids, np.int64), np.asarray(gt, np.float64).reshape(-1, 4)))
    return out


# ------------------------------------------------------------------------------------------------ truth


def truth_counts(world: World, lines: Dict[str, Tuple[float, float, float, float]],
                 band: float = HYSTERESIS_PX) -> Dict[str, Dict[str, int]]:
    """Exact ``{line: {"in", "out"}}`` from every actor's real bottom-centre path, frame by frame (hidden and
    dropped frames included), with a hysteresis dead band of ``band`` pixels; lines span the frame."""
    paths = []
    for actor in world.actors:
        f0, f1 = actor.keyframes[0][0], actor.keyframes[-1][0]
        paths.append(np.array([actor.position(f) for f in range(f0, min(f1, world.frames - 1) + 1)], np.float64))
    return {name: _crossings(paths, seg, band) for name, seg in lines.items()}


def _crossings(paths: List[np.ndarray], seg: Tuple[float, float, float, float], band: float) -> Dict[str, int]:
    """``{"in", "out"}``: side changes beyond a ``band`` px dead band of each path (float64 ``(K, 2)`` anchor points,
    frame pixels) against the segment."""
    counts = {"in": 0, "out": 0}
    for pts in paths:
        hyst = Hysteresis(band)
        for d in signed_distance(pts.reshape(-1, 2), seg):
            state, changed = hyst.update(float(d))
            if changed:
                counts["in" if state > 0 else "out"] += 1
    return counts


# ------------------------------------------------------------------------------------------------ building blocks


@dataclass
class _Ctx:
    rng: np.random.Generator
    fps: float
    line_x: float
    actors: List[Actor] = field(default_factory=list)

    def person(self, y: float, name: str, sprites: Tuple[int, ...] = PERSON_SPRITES) -> Actor:
        """A person standing at bottom ``y`` (height grows with ``y``: a mild perspective)."""
        height = float(np.clip(0.33 * y + self.rng.uniform(-8, 8), 55, 125))
        a = Actor(name, [], height=height, crop=int(self.rng.choice(sprites)), class_id=PERSON)
        self.actors.append(a)
        return a

    def vehicle(self, name: str) -> Actor:
        a = Actor(name, [], height=float(self.rng.uniform(55, 85)), crop=int(self.rng.choice(VEHICLE_SPRITES)),
                  class_id=CAR)
        self.actors.append(a)
        return a

    def frame(self, t: float) -> int:
        return int(round(t * self.fps))


def _half_w(a: Actor) -> float:
    return a.height * a.aspect / 2


def _out_x(a: Actor, direction: int) -> float:
    """Bottom-centre x at which the actor's box is just outside the frame on the side ``direction`` points to."""
    return W + _half_w(a) + 1 if direction > 0 else -_half_w(a) - 1


def _walk(ctx: _Ctx, a: Actor, waypoints: List[Tuple[float, float, float]]) -> None:
    """Keyframes from ``[(t seconds, x, y), ...]``; times before 0 are cut at frame 0 (the actor is already in
    the scene)."""
    keys: List[Tuple[int, float, float]] = []
    for (t0, x0, y0), (t1, x1, y1) in zip(waypoints, waypoints[1:]):
        if t1 <= 0:
            continue
        if t0 < 0:
            a0 = -t0 / (t1 - t0)
            t0, x0, y0 = 0.0, x0 + a0 * (x1 - x0), y0 + a0 * (y1 - y0)
        for t, x, y in ((t0, x0, y0), (t1, x1, y1)):
            f = ctx.frame(t)
            if keys and f <= keys[-1][0]:
                if f == keys[-1][0]:
                    keys[-1] = (f, x, y)
                continue
            keys.append((f, float(x), float(y)))
    if len(keys) == 1:
        keys.append((keys[0][0] + 1, keys[0][1], keys[0][2]))
    a.keyframes = keys


def _cross(ctx: _Ctx, a: Actor, y: float, direction: int, speed: float, t_at: float, x_at: float,
           dy: float = 0.0) -> None:
    """Walk straight across the frame at ``speed`` px/s in ``direction`` (+1 = right), being at ``x_at`` at time
    ``t_at``; ``dy`` px of vertical drift over the whole crossing."""
    xs, xe = _out_x(a, -direction), _out_x(a, direction)
    ts, te = t_at - abs(x_at - xs) / speed, t_at + abs(xe - x_at) / speed
    _walk(ctx, a, [(ts, xs, y - dy / 2), (te, xe, y + dy / 2)])


def _lane(ctx: _Ctx, lo: float = 170.0, hi: float = 355.0) -> float:
    return float(ctx.rng.uniform(lo, hi))


def _distinct_lanes(ctx: _Ctx, n: int, gap: float = 45.0) -> List[float]:
    for _ in range(100):
        ys = sorted(ctx.rng.uniform(170, 355, n))
        if all(b - a >= gap for a, b in zip(ys, ys[1:])):
            return [float(y) for y in ctx.rng.permutation(ys)]
    return [170.0 + i * (185.0 / max(n - 1, 1)) for i in range(n)]


def _end_frame(ctx: _Ctx, tail: int = 3) -> int:
    return max(a.keyframes[-1][0] for a in ctx.actors) + tail


def _vline(ctx: _Ctx) -> Dict[str, Tuple[float, float, float, float]]:
    return {"gate": (ctx.line_x, 0.0, ctx.line_x, float(H))}


# ------------------------------------------------------------------------------------------------ families


def _edge_reentry(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    if rng.random() < 0.25:
        return _edge_reentry_vertical(ctx)
    variant = str(rng.choice(["opposite", "same", "third"], p=[0.5, 0.3, 0.2]))
    d = int(rng.choice([-1, 1]))
    y = _lane(ctx)
    a = ctx.person(y, "a")
    _cross(ctx, a, y, d, rng.uniform(50, 130), 0.0, _out_x(a, -d))
    t_exit = a.keyframes[-1][0] / ctx.fps
    prev, direction = a, d
    for name in ("b", "c")[: 1 if variant != "third" else 2]:
        gap = rng.uniform(0.5, 3.0)
        y = float(np.clip(prev.keyframes[-1][2] + rng.uniform(-60, 60), 170, 355))
        b = ctx.person(y, name)
        new_dir = -direction if variant in ("opposite", "third") else direction
        _cross(ctx, b, y, new_dir, rng.uniform(50, 130), t_exit + gap, _out_x(b, -new_dir))
        t_exit, prev, direction = b.keyframes[-1][0] / ctx.fps, b, new_dir
    return variant, World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps), _vline(ctx)


def _edge_reentry_vertical(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    line_y = float(rng.uniform(0.4 * H, 0.65 * H))
    d = int(rng.choice([-1, 1]))  # +1 = down
    x = float(rng.uniform(120, W - 120))
    a = ctx.person(250.0, "a")
    a.height = float(rng.uniform(60, 90))
    top_out, bottom_out = -1.0, H + a.height + 1.0

    def span(direction: int) -> Tuple[float, float]:
        return (top_out, bottom_out) if direction > 0 else (bottom_out, top_out)

    speed = rng.uniform(40, 90)
    y0, y1 = span(d)
    t1 = abs(y1 - y0) / speed
    _walk(ctx, a, [(0.0, x, y0), (t1, x, y1)])
    gap = rng.uniform(0.5, 3.0)
    variant = str(rng.choice(["vertical_opposite", "vertical_same"]))
    b = ctx.person(250.0, "b")
    b.height = a.height * rng.uniform(0.9, 1.1)
    nd = -d if variant == "vertical_opposite" else d
    y0, y1 = span(nd)
    xb = float(np.clip(x + rng.uniform(-60, 60), 60, W - 60))
    speed = rng.uniform(40, 90)
    _walk(ctx, b, [(t1 + gap, xb, y0), (t1 + gap + abs(y1 - y0) / speed, xb, y1)])
    lines = {"gate": (float(W), line_y, 0.0, line_y)}  # drawn right to left: "in" = moving down
    return variant, World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps), lines


def _crossing_paths(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    n = 3 if rng.random() < 0.3 else 2
    t_meet, x_meet = rng.uniform(3.0, 5.0), ctx.line_x + rng.uniform(-100, 100)
    y0 = _lane(ctx, 200, 330)
    for i in range(n):
        y = float(np.clip(y0 + (rng.uniform(-45, 45) if i else 0.0), 170, 355))
        a = ctx.person(y, "abc"[i])
        d = 1 if i % 2 == 0 else -1
        _cross(ctx, a, y, d, rng.uniform(50, 120), t_meet + (rng.uniform(-1.5, 1.5) if i == 2 else 0.0), x_meet,
               dy=rng.uniform(-20, 20))
    world = World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps, mutual_occlusion=True)
    return f"{n}_objects", world, _vline(ctx)


def _occlusion(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    pw = rng.uniform(50, 110)
    px = ctx.line_x + rng.uniform(-30, 30)
    pillar = (int(px - pw / 2), int(rng.uniform(0, 100)), int(px + pw / 2), H)
    ys = _distinct_lanes(ctx, 2)
    a = ctx.person(ys[0], "a", FULL_FIGURES)
    hidden_span = pw + 2 * _half_w(a) * 0.6
    speed = max(rng.uniform(40, 100), hidden_span / 1.5)
    d = int(rng.choice([-1, 1]))
    variant = "plain"
    if rng.random() < 0.5:
        variant = "speed_change"
        # walk at `speed` up to the pillar, at another speed behind it, then at `speed` again
        x_in, x_out = px - d * (pw / 2 + _half_w(a)), px + d * (pw / 2 + _half_w(a))
        hidden_speed = speed * rng.uniform(0.7, 1.4)
        t_in = rng.uniform(2.5, 4.0)
        t_out = t_in + abs(x_out - x_in) / hidden_speed
        xs, xe = _out_x(a, -d), _out_x(a, d)
        _walk(ctx, a, [(t_in - abs(x_in - xs) / speed, xs, ys[0]), (t_in, x_in, ys[0]), (t_out, x_out, ys[0]),
                       (t_out + abs(xe - x_out) / speed, xe, ys[0])])
    else:
        _cross(ctx, a, ys[0], d, speed, rng.uniform(3.0, 5.0), px)
    if rng.random() < 0.6:
        variant += "+second"
        b = ctx.person(ys[1], "b", FULL_FIGURES)
        sb = max(rng.uniform(40, 100), (pw + 2 * _half_w(b) * 0.6) / 1.5)
        _cross(ctx, b, ys[1], -d, sb, rng.uniform(2.0, 7.0), px)
    world = World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps, occluders=[pillar], mutual_occlusion=True)
    return variant, world, _vline(ctx)


def _group(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    k = int(rng.choice([2, 3, 4], p=[0.45, 0.35, 0.2]))
    d, speed = int(rng.choice([-1, 1])), rng.uniform(45, 100)
    y0, t_at = _lane(ctx, 200, 330), rng.uniform(3.0, 5.0)
    offset, prev = 0.0, None
    for i in range(k):
        y = float(np.clip(y0 + rng.uniform(-30, 30), 170, 355))
        a = ctx.person(y, f"g{i}")
        if prev is not None:  # side by side, overlapping by at most a quarter of their widths
            offset += rng.uniform(0.75, 1.1) * (_half_w(prev) + _half_w(a))
        _cross(ctx, a, y, d, speed * rng.uniform(0.985, 1.015), t_at, ctx.line_x - d * offset)
        prev = a
    variant = f"{k}_people"
    if rng.random() < 0.4:
        variant += "+counterflow"
        y = float(np.clip(y0 + rng.uniform(-50, 50), 170, 355))
        b = ctx.person(y, "x")
        _cross(ctx, b, y, -d, rng.uniform(50, 110), t_at + rng.uniform(-1.0, 1.0), ctx.line_x)
    world = World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps, mutual_occlusion=True)
    return variant, world, _vline(ctx)


def _stop_and_go(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    variant = str(rng.choice(["stop_before", "stop_past", "turn_back", "cross_and_return"],
                             p=[0.25, 0.25, 0.35, 0.15]))
    ys = _distinct_lanes(ctx, 2)
    a = ctx.person(ys[0], "a")
    d, speed, y = int(rng.choice([-1, 1])), rng.uniform(45, 100), ys[0]
    xs, xe, lx = _out_x(a, -d), _out_x(a, d), ctx.line_x
    stop = {"stop_before": lx - d * rng.uniform(8, 40), "stop_past": lx + d * rng.uniform(8, 30),
            "turn_back": lx - d * rng.uniform(0.0, 2.5), "cross_and_return": lx + d * rng.uniform(30, 80)}[variant]
    t1 = abs(stop - xs) / speed
    t2 = t1 + rng.uniform(0.5, 3.0)
    if variant in ("turn_back", "cross_and_return"):
        end = xs
    else:
        end = xe
    _walk(ctx, a, [(0.0, xs, y), (t1, stop, y), (t2, stop, y), (t2 + abs(end - stop) / speed, end, y)])
    if rng.random() < 0.4:
        variant += "+passerby"
        b = ctx.person(ys[1], "b")
        _cross(ctx, b, ys[1], int(rng.choice([-1, 1])), rng.uniform(50, 110), rng.uniform(2.0, 6.0), lx)
    return variant, World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps), _vline(ctx)


def _jitter(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    y = _lane(ctx)
    a = ctx.person(y, "a")
    d, speed, lx = int(rng.choice([-1, 1])), rng.uniform(45, 100), ctx.line_x
    xs, xe = _out_x(a, -d), _out_x(a, d)
    here = lx + rng.uniform(-0.5, 0.5)
    t1 = abs(here - xs) / speed
    t2 = t1 + rng.uniform(1.0, 2.5)
    _walk(ctx, a, [(0.0, xs, y), (t1, here, y), (t2, here, y), (t2 + abs(xe - here) / speed, xe, y)])
    amp = rng.uniform(1.5, 3.0)
    a.jitter = {f: (float(rng.choice([-amp, amp])), 0.0) for f in range(ctx.frame(t1) + 1, ctx.frame(t2))}
    return "on_line", World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps), _vline(ctx)


def _fast(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    n = int(rng.choice([1, 2]))
    ys = _distinct_lanes(ctx, n, gap=70)
    kinds = []
    for i, y in enumerate(ys):
        is_car = rng.random() < 0.6
        a = ctx.vehicle(f"v{i}") if is_car else ctx.person(y, f"p{i}")
        kinds.append("vehicle" if is_car else "person")
        widths = rng.uniform(0.55, 0.9) if is_car else rng.uniform(0.55, 1.3)
        speed = widths * 2 * _half_w(a) * ctx.fps
        _cross(ctx, a, y, int(rng.choice([-1, 1])), speed, rng.uniform(1.0, 4.0), ctx.line_x)
    return "+".join(kinds), World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps), _vline(ctx)


def _freeze(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    n = int(rng.choice([2, 3]))
    ys = _distinct_lanes(ctx, n)
    t_cross = rng.uniform(3.0, 5.0)
    for i, y in enumerate(ys):
        a = ctx.person(y, "abc"[i])
        _cross(ctx, a, y, int(rng.choice([-1, 1])), rng.uniform(40, 90), t_cross + rng.uniform(-2.5, 2.5),
               ctx.line_x)
    start = ctx.frame(t_cross - rng.uniform(0.2, 1.8))
    dropped = frozenset(range(start, start + ctx.frame(2.0)))
    world = World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps, dropped=dropped)
    return f"{n}_objects", world, _vline(ctx)


def _detector_noise(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    n = int(rng.choice([2, 3]))
    ys = _distinct_lanes(ctx, n)
    for i, y in enumerate(ys):
        a = ctx.person(y, "abc"[i])
        _cross(ctx, a, y, int(rng.choice([-1, 1])), rng.uniform(40, 100), rng.uniform(2.5, 6.0), ctx.line_x)
    return f"{n}_objects", World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps), _vline(ctx)


def _bursts(rng: np.random.Generator, frames: range, rate: float, other: int) -> Dict[int, int]:
    out, on = {}, False
    for f in frames:
        on = _burst(rng, on, rate, 0.6)
        if on:
            out[f] = other
    return out


def _class_flicker(ctx: _Ctx) -> Tuple[str, World, dict]:
    rng = ctx.rng
    ys = _distinct_lanes(ctx, 3, gap=40)
    v = ctx.vehicle("car")
    _cross(ctx, v, ys[0], int(rng.choice([-1, 1])), rng.uniform(60, 160), rng.uniform(2.5, 5.0), ctx.line_x)
    variant = "moving"
    if rng.random() < 0.5:
        variant += "+parked"
        p = ctx.vehicle("parked")
        side = int(rng.choice([-1, 1]))
        x = float(np.clip(ctx.line_x + side * rng.uniform(130, 220), 70, W - 70))
        p.keyframes = [(0, x, ys[1]), (v.keyframes[-1][0], x, ys[1])]
    if rng.random() < 0.5:
        variant += "+person"
        b = ctx.person(ys[2], "person")
        _cross(ctx, b, ys[2], int(rng.choice([-1, 1])), rng.uniform(50, 110), rng.uniform(2.0, 6.0), ctx.line_x)
    for a in ctx.actors:
        if a.class_id != CAR:
            continue
        frames = range(a.keyframes[0][0], a.keyframes[-1][0] + 1)
        a.flicker = _bursts(rng, frames, rng.uniform(0.15, 0.35), TRUCK)
        dup = _bursts(rng, frames, rng.uniform(0.15, 0.4), TRUCK)
        a.duplicates = {f: (CAR if a.flicker.get(f) == TRUCK else TRUCK) for f in dup}
    world = World(ctx.actors, _end_frame(ctx), (H, W), ctx.fps, mutual_occlusion=True)
    return variant, world, _vline(ctx)


_Builder = Callable[[_Ctx], Tuple[str, World, dict]]
FAMILIES: Dict[str, Tuple[_Builder, Noise]] = {
    "edge_reentry": (_edge_reentry, Noise()),
    "crossing_paths": (_crossing_paths, Noise()),
    "occlusion": (_occlusion, Noise()),
    "group": (_group, Noise()),
    "stop_and_go": (_stop_and_go, Noise()),
    "jitter": (_jitter, Noise()),
    "fast": (_fast, Noise()),
    "freeze": (_freeze, Noise()),
    "detector_noise": (_detector_noise, Noise(jitter=0.04, miss=0.1, miss_stay=0.5, low=0.1, low_stay=0.6, fp=0.3)),
    "class_flicker": (_class_flicker, Noise()),
}


def observable_counts(world: World, lines: Dict[str, Tuple[float, float, float, float]],
                      band: float = HYSTERESIS_PX, min_visible: float = 0.4) -> Dict[str, Dict[str, int]]:
    """What a perfect detector and tracker could count: :func:`truth_counts` on the bottom-centres of the actors'
    visible boxes on the delivered frames only."""
    paths = []
    for actor in world.actors:
        boxes = [world.visible_box(actor, f, min_visible) for f in world.delivered()]
        paths.append(np.array([((b[0] + b[2]) / 2, b[3]) for b in boxes if b is not None], np.float64))
    return {name: _crossings(paths, seg, band) for name, seg in lines.items()}


def make_scene(family: str, seed: int, fps: Optional[float] = None) -> Scene:
    """Scene ``seed`` of ``family`` (deterministic).

    ``fps``: the camera's frame rate instead of the drawn 10 or 15 (the same scene in seconds: paths, speeds in
    pixels per second and freezes keep their times; ``fast`` objects keep their speed in box widths per frame).

    A drawn scene whose truth a perfect detector and tracker could not count (an object hidden by another the
    whole way across the line: :func:`observable_counts` differs from :func:`truth_counts`) is drawn again from
    the next random numbers of the same seed.

    Raises:
        KeyError: an unknown family (the message lists the known ones).
    """
    if family not in FAMILIES:
        raise KeyError(f"scene family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    build, noise = FAMILIES[family]
    rng = np.random.default_rng([zlib.crc32(family.encode()), int(seed)])
    while True:
        drawn = float(rng.choice([10.0, 15.0]))
        ctx = _Ctx(rng, float(fps or drawn), float(rng.uniform(240, 400)))
        variant, world, lines = build(ctx)
        if observable_counts(world, lines, min_visible=noise.min_visible) == truth_counts(world, lines):
            break
    fp_box = None
    if noise.fp:
        x = float(rng.uniform(4, 40)) if ctx.line_x > W / 2 else float(rng.uniform(W - 80, W - 45))
        fp_box = (x, 4.0, x + float(rng.uniform(25, 40)), 4.0 + float(rng.uniform(50, 90)))
    return Scene(family, int(seed), variant, world, lines, noise, fp_box)
