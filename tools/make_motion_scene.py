#!/usr/bin/env python3
"""Make the motion-gating test scenes of issue 25 from the shared sample video, with their truth in JSON.

    python tools/make_motion_scene.py static OUT.mp4 [--duration 90] [--fps 10] [--period 20] [--light-jump T]
    python tools/make_motion_scene.py far OUT.mp4 --model yolov5n.onnx [--frames 300] [--scale 0.75]

``static``: a mostly static scene. The background is frozen (the per-pixel median of the sample video, which
has no one standing still), a little sensor noise is added to every frame, and a walker (a person cut out of the
sample video by its difference to that background, pasted with a soft mask) crosses the picture every
``--period`` seconds, alternately left to right and right to left, across a vertical counting line in the
middle. ``--light-jump T`` makes the picture 40 % brighter from ``T`` seconds on (a light switched on). The JSON
says, per walker, its frames, its box per frame (xyxy pixels), its direction and the frame where its
bottom-centre crosses the line.

``far``: small far-away people: every frame of the sample video scaled by ``--scale`` into the top-left corner of
a 1920x1080 canvas (the rest: the frozen background enlarged). The truth boxes are the model's detections
(persons, ``--truth-conf``) on the original-size frames, scaled and shifted the same way (``--model``; without
it only the video is written).

Outputs go wherever you say (a temp or runs/ folder), never into the repository or shared/. H.264 with PyAV
when installed, else MPEG-4 part 2 with OpenCV.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGE_DETECT_DATA", REPO.parent / "shared"))


class _Writer:
    """H.264 via PyAV when available, else OpenCV mp4v."""

    def __init__(self, path: Path, fps: float, size: Tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.w, self.h = size
        try:
            import av
        except ImportError:
            av = None
        if av is not None:
            from fractions import Fraction

            self.container = av.open(str(path), "w")
            self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            self.stream.width, self.stream.height, self.stream.pix_fmt = self.w, self.h, "yuv420p"
            self.stream.options = {"crf": "20", "preset": "veryfast"}
            self._av, self.cv = av, None
        else:
            self._av = None
            self.cv = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (self.w, self.h))

    def write(self, img: np.ndarray) -> None:
        if self._av is not None:
            for packet in self.stream.encode(self._av.VideoFrame.from_ndarray(img, format="bgr24")):
                self.container.mux(packet)
        else:
            self.cv.write(img)

    def close(self) -> None:
        if self._av is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        else:
            self.cv.release()


def read_frames(path: Path, limit: Optional[int] = None) -> Tuple[List[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames: List[np.ndarray] = []
    while limit is None or len(frames) < limit:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames, fps


def frozen_background(frames: List[np.ndarray], step: int = 8) -> np.ndarray:
    """Per-pixel median of every ``step``-th frame: the scene without its passers-by (BGR uint8)."""
    return np.median(np.stack(frames[::step]), axis=0).astype(np.uint8)


def cut_people(frames: List[np.ndarray], background: np.ndarray, count: int = 4,
               every: int = 25) -> List[Tuple[np.ndarray, np.ndarray]]:
    """People cut out of the video: ``[(BGR crop (h, w, 3), alpha float32 (h, w) in [0, 1])]``, tallest first.

    A person is a blob of the difference to ``background`` 40..80 px tall, 12..35 px wide, at least half full,
    away from the borders; one per frame looked at, from different frames.
    """
    found = []
    for i in range(0, len(frames), every):
        diff = cv2.absdiff(frames[i], background).max(axis=2)
        mask = cv2.morphologyEx((diff > 35).astype(np.uint8) * 255, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
        for k in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[k])
            if 40 <= h <= 80 and 12 <= w <= 35 and area > 0.5 * w * h and 4 < x < frames[i].shape[1] - w - 4:
                found.append((h, i, x, y, w, labels[y:y + h, x:x + w] == k))
    found.sort(key=lambda f: (-f[0], f[1]))
    sprites, used = [], set()
    for h, i, x, y, w, blob in found:
        if i in used:
            continue
        used.add(i)
        alpha = cv2.GaussianBlur(cv2.dilate(blob.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32),
                                 (3, 3), 0)
        sprites.append((frames[i][y:y + h, x:x + w].copy(), np.clip(alpha, 0, 1)))
        if len(sprites) == count:
            break
    if not sprites:
        raise SystemExit("no person found in the source video to cut out")
    return sprites


def paste(canvas: np.ndarray, sprite: Tuple[np.ndarray, np.ndarray], x: int, y: int) -> Optional[List[int]]:
    """Alpha-paste ``sprite`` with its top-left at ``(x, y)`` (cut at the borders); its visible box or None."""
    img, alpha = sprite
    h, w = alpha.shape
    fh, fw = canvas.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x2 <= x1 or y2 <= y1:
        return None
    a = alpha[y1 - y:y2 - y, x1 - x:x2 - x, None]
    region = canvas[y1:y2, x1:x2].astype(np.float32)
    canvas[y1:y2, x1:x2] = (a * img[y1 - y:y2 - y, x1 - x:x2 - x] + (1 - a) * region).round().astype(np.uint8)
    return [x1, y1, x2, y2]


def walker_plan(n_frames: int, fps: float, frame_w: int, first_s: float, period_s: float, speed: float,
                y_bottom: Tuple[float, float], sprite_sizes: List[Tuple[int, int]]) -> List[Dict[str, Any]]:
    """Walkers: start frame, direction, path; each crosses the whole width at ``speed`` px/s."""
    plan, k, t0 = [], 0, first_s
    while True:
        sh, sw = sprite_sizes[k % len(sprite_sizes)]
        duration = (frame_w + sw) / speed
        start, end = int(round(t0 * fps)), int(round((t0 + duration) * fps))
        if end >= n_frames:
            break
        plan.append({"id": k + 1, "sprite": k % len(sprite_sizes), "first_frame": start, "last_frame": end,
                     "direction": "left_to_right" if k % 2 == 0 else "right_to_left",
                     "y_bottom": float(y_bottom[k % 2]), "size_hw": [sh, sw]})
        k, t0 = k + 1, t0 + period_s
    return plan


def _walker_x(w: Dict[str, Any], f: int, fps: float, speed: float, frame_w: int) -> float:
    """Left edge of walker ``w`` at frame ``f``."""
    dist = (f - w["first_frame"]) / fps * speed
    sw = w["size_hw"][1]
    return -sw + dist if w["direction"] == "left_to_right" else frame_w - dist


def sway(img: np.ndarray, bg: np.ndarray, box: List[int], t: float, rng: np.random.Generator) -> None:
    """Make the background inside ``box`` (x1, y1, x2, y2) sway like leaves in the wind: shifted sideways by up to
    3 px (a 1.3 s period, with jitter), in place."""
    x1, y1, x2, y2 = box
    dx = 3.0 * np.sin(2 * np.pi * t / 1.3) + rng.normal(0.0, 0.5)
    m = np.float32([[1, 0, dx], [0, 1, 0.0]])
    patch = cv2.warpAffine(bg[y1:y2, x1:x2], m, (x2 - x1, y2 - y1), borderMode=cv2.BORDER_REFLECT)
    img[y1:y2, x1:x2] = patch


def make_static(args: argparse.Namespace) -> int:
    frames, src_fps = read_frames(args.source)
    bg = frozen_background(frames)
    sprites = cut_people(frames, bg, count=3)
    if args.sprite_scale != 1.0:
        sprites = [(cv2.resize(im, None, fx=args.sprite_scale, fy=args.sprite_scale),
                    cv2.resize(a, None, fx=args.sprite_scale, fy=args.sprite_scale)) for im, a in sprites]
    fh, fw = bg.shape[:2]
    fps, n = float(args.fps), int(round(args.duration * args.fps))
    line = [fw / 2, 100.0, fw / 2, float(fh)]
    plan = walker_plan(n, fps, fw, args.first, args.period, args.speed, (230.0, 200.0),
                       [im.shape[:2] for im, _ in sprites])
    rng = np.random.default_rng(args.seed)
    writer = _Writer(args.output, fps, (fw, fh))
    for w in plan:
        w["boxes"], w["cross_frame"] = {}, None
    for f in range(n):
        img = bg.copy()
        for w in plan:
            if not w["first_frame"] <= f <= w["last_frame"]:
                continue
            x = _walker_x(w, f, fps, args.speed, fw)
            sh = w["size_hw"][0]
            box = paste(img, sprites[w["sprite"]], int(round(x)), int(round(w["y_bottom"] - sh)))
            if box is not None:
                w["boxes"][f] = box
                cx = x + w["size_hw"][1] / 2
                crossed = cx >= line[0] if w["direction"] == "left_to_right" else cx <= line[0]
                if crossed and w["cross_frame"] is None:
                    w["cross_frame"] = f
        if args.sway is not None:
            sway(img, bg, args.sway, f / fps, rng)
        if args.light_jump is not None and f >= args.light_jump * fps:
            img = cv2.convertScaleAbs(img, alpha=1.4, beta=0)
        noise = rng.normal(0.0, args.noise, img.shape)
        writer.write(np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8))
    writer.close()
    truth = {"scene": "static", "video": str(args.output), "fps": fps, "frames": n, "size_wh": [fw, fh],
             "source": str(args.source), "line": {"name": "middle", "xyxy": line,
                                                  "in": "right_to_left", "out": "left_to_right"},
             "light_jumps_s": [] if args.light_jump is None else [args.light_jump], "sway_xyxy": args.sway,
             "walkers": [{k: v for k, v in w.items() if k not in ("sprite",)} | {
                 "cross_t": None if w["cross_frame"] is None else w["cross_frame"] / fps,
                 "boxes": {str(f): b for f, b in w["boxes"].items()}} for w in plan]}
    truth_path = args.truth or args.output.with_suffix(".json")
    truth_path.write_text(json.dumps(truth, indent=1))
    print(f"{args.output}: {n} frames {fw}x{fh} at {fps:g} fps, {len(plan)} walkers; truth {truth_path}")
    return 0


def make_far(args: argparse.Namespace) -> int:
    frames, src_fps = read_frames(args.source, args.frames)
    bg = frozen_background(read_frames(args.source)[0])
    cw, ch = (int(v) for v in args.size.lower().split("x"))
    canvas = cv2.resize(bg, (cw, ch), interpolation=cv2.INTER_LINEAR)
    fh, fw = frames[0].shape[:2]
    iw, ih = int(round(fw * args.scale)), int(round(fh * args.scale))
    x0, y0 = args.offset
    detector = None
    if args.model is not None:
        sys.path.insert(0, str(REPO))
        from edge_detect.detector import Detector

        detector = Detector(str(args.model), conf=args.truth_conf, imgsz=args.imgsz, auto=False, classes=[0])
    fps = float(args.fps or src_fps)
    writer = _Writer(args.output, fps, (cw, ch))
    boxes: Dict[str, List[List[float]]] = {}
    for f, img in enumerate(frames):
        out = canvas.copy()
        out[y0:y0 + ih, x0:x0 + iw] = cv2.resize(img, (iw, ih), interpolation=cv2.INTER_AREA)
        writer.write(out)
        if detector is not None:
            det = detector(img)
            b = det.xyxy.astype(np.float64) * (iw / fw, ih / fh, iw / fw, ih / fh) + (x0, y0, x0, y0)
            boxes[str(f)] = [[round(float(v), 2) for v in row] for row in b]
    writer.close()
    truth = {"scene": "far", "video": str(args.output), "fps": fps, "frames": len(frames), "size_wh": [cw, ch],
             "source": str(args.source), "inset_xyxy": [x0, y0, x0 + iw, y0 + ih], "scale": args.scale,
             "truth_from": None if detector is None else {"model": str(args.model), "conf": args.truth_conf,
                                                         "imgsz": args.imgsz, "classes": [0]},
             "boxes": boxes}
    truth_path = args.truth or args.output.with_suffix(".json")
    truth_path.write_text(json.dumps(truth))
    n_boxes = sum(len(b) for b in boxes.values())
    print(f"{args.output}: {len(frames)} frames {cw}x{ch} at {fps:g} fps, inset {iw}x{ih} at ({x0}, {y0}); "
          f"{n_boxes} truth boxes; truth {truth_path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="scene", required=True)
    s = sub.add_parser("static", help="frozen background, a walker every --period seconds")
    s.add_argument("output", type=Path)
    s.add_argument("--source", type=Path, default=DATA / "videos" / "vtest.avi")
    s.add_argument("--truth", type=Path, default=None, help="truth JSON (default: OUTPUT with .json)")
    s.add_argument("--duration", type=float, default=90.0, help="seconds (default 90)")
    s.add_argument("--fps", type=float, default=10.0, help="frame rate (default 10)")
    s.add_argument("--first", type=float, default=5.0, help="first walker starts at (s, default 5)")
    s.add_argument("--period", type=float, default=20.0, help="a walker every (s, default 20)")
    s.add_argument("--speed", type=float, default=60.0, help="walking speed in px/s (default 60)")
    s.add_argument("--sprite-scale", type=float, default=1.2, help="walker size vs the source (default 1.2)")
    s.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma in grey levels (default 2)")
    s.add_argument("--light-jump", type=float, default=None, help="40%% brighter from this second on")
    s.add_argument("--sway", type=int, nargs=4, default=None, metavar=("X1", "Y1", "X2", "Y2"),
                   help="a region of the background that sways like leaves (e.g. 0 0 200 60: the building)")
    s.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("far", help="the sample video small in a corner of a 1080p canvas")
    f.add_argument("output", type=Path)
    f.add_argument("--source", type=Path, default=DATA / "videos" / "vtest.avi")
    f.add_argument("--truth", type=Path, default=None, help="truth JSON (default: OUTPUT with .json)")
    f.add_argument("--model", type=Path, default=None, help="model for the truth boxes (on original frames)")
    f.add_argument("--imgsz", type=int, default=640, help="model size for the truth (default 640)")
    f.add_argument("--truth-conf", type=float, default=0.4, help="score threshold of truth boxes (default 0.4)")
    f.add_argument("--frames", type=int, default=300, help="frames of the source (default 300; 0 = all)")
    f.add_argument("--fps", type=float, default=None, help="frame rate (default: the source's)")
    f.add_argument("--size", default="1920x1080", help="canvas WxH (default 1920x1080)")
    f.add_argument("--scale", type=float, default=0.75, help="scale of the source in the canvas (default 0.75)")
    f.add_argument("--offset", type=int, nargs=2, default=(40, 40), metavar=("X", "Y"),
                   help="top-left of the inset (default 40 40)")
    args = p.parse_args(argv)
    if args.scene == "far" and args.frames == 0:
        args.frames = None
    return make_static(args) if args.scene == "static" else make_far(args)


if __name__ == "__main__":
    sys.exit(main())
