#!/usr/bin/env python3
"""Generate a small synthetic YOLO-format dataset: coloured shapes on noise.

Each image is random noise (blurred, so it has texture) with 1 to ``max_objects`` filled shapes of random
colour and size; the class is the shape (``circle``, ``square``, ``triangle`` by default). Labels are YOLO
rows ``class cx cy w h`` normalized to the image; the dataset yaml lists ``path``, ``train``, ``val`` and
``names``. Used by the tests and to smoke-test ``edge-detect train`` end to end::

    python tools/make_shapes_dataset.py /tmp/shapes --train 96 --val 24 --imgsz 160
    edge-detect train --cfg yolov5n --data /tmp/shapes/data.yaml --epochs 30 --imgsz 160 --device cpu

Only OpenCV, NumPy and PyYAML are needed; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml

SHAPES = ("circle", "square", "triangle")

__all__ = ["SHAPES", "make_shapes_dataset", "draw_image", "main"]


def _draw_shape(img: np.ndarray, kind: str, cx: float, cy: float, size: float, color: Tuple[int, int, int]) -> \
        Tuple[float, float, float, float]:
    """Draw one filled shape; return its tight box ``(x1, y1, x2, y2)`` in pixels."""
    r = size / 2
    if kind == "circle":
        cv2.circle(img, (round(cx), round(cy)), round(r), color, thickness=-1, lineType=cv2.LINE_AA)
        return cx - round(r), cy - round(r), cx + round(r), cy + round(r)
    if kind == "square":
        x1, y1, x2, y2 = round(cx - r), round(cy - r), round(cx + r), round(cy + r)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness=-1)
        return x1, y1, x2 + 1, y2 + 1
    if kind == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]]).round().astype(np.int32)
        cv2.fillPoly(img, [pts], color, lineType=cv2.LINE_AA)
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max() + 1), float(pts[:, 1].max() + 1)
    raise ValueError(f"shape: expected one of {SHAPES}, got {kind!r}")


def draw_image(rng: np.random.Generator, imgsz: int, classes: Sequence[str] = SHAPES, max_objects: int = 3,
               min_frac: float = 0.2, max_frac: float = 0.45) -> Tuple[np.ndarray, np.ndarray]:
    """One image and its labels.

    Returns:
        ``(img, labels)``: BGR ``uint8 (imgsz, imgsz, 3)`` and float32 ``(n, 5)`` rows
        ``[class, cx, cy, w, h]`` normalized. Shapes are placed on a coarse grid so they never overlap.
    """
    noise = rng.integers(0, 256, (imgsz // 4, imgsz // 4, 3), dtype=np.uint8)
    img = cv2.resize(noise, (imgsz, imgsz), interpolation=cv2.INTER_LINEAR)
    img = cv2.addWeighted(img, 0.6, np.full_like(img, 100), 0.4, 0)  # darker, lower-contrast background
    cells = rng.permutation(4)[: rng.integers(1, max_objects + 1)]  # 2x2 grid of placement cells
    rows: List[List[float]] = []
    half = imgsz / 2
    for cell in cells:
        size = rng.uniform(min_frac, max_frac) * imgsz
        size = min(size, half - 4)
        ox, oy = (cell % 2) * half, (cell // 2) * half
        cx = ox + rng.uniform(size / 2 + 2, half - size / 2 - 2)
        cy = oy + rng.uniform(size / 2 + 2, half - size / 2 - 2)
        cls = int(rng.integers(0, len(classes)))
        color = tuple(int(c) for c in rng.integers(150, 256, 3))  # bright on the darker noise
        x1, y1, x2, y2 = _draw_shape(img, classes[cls], cx, cy, size, color)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, imgsz), min(y2, imgsz)
        rows.append([cls, (x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz])
    return img, np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def make_shapes_dataset(out: Path, n_train: int = 64, n_val: int = 16, imgsz: int = 128,
                        classes: Sequence[str] = SHAPES, seed: int = 0, max_objects: int = 3) -> Path:
    """Write ``images/{train,val}/*.png``, ``labels/{train,val}/*.txt`` and ``data.yaml`` under ``out``.

    Returns:
        the path of ``data.yaml`` (``path`` absolute, ``train: images/train``, ``val: images/val``).
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or not classes:
        raise ValueError(f"classes: expected a non-empty subset of {SHAPES}, got {list(classes)}")
    out = Path(out).resolve()
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, labels = draw_image(rng, imgsz, classes, max_objects)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(out / "images" / split / f"{stem}.png"), img)
            lines = [f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}" for r in labels]
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    data = {"path": str(out), "train": "images/train", "val": "images/val",
            "names": {i: name for i, name in enumerate(classes)}}
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return yaml_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Generate a synthetic YOLO dataset of coloured shapes on noise.")
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--train", type=int, default=64, help="number of training images (default 64)")
    parser.add_argument("--val", type=int, default=16, help="number of validation images (default 16)")
    parser.add_argument("--imgsz", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--classes", nargs="+", default=list(SHAPES), choices=SHAPES,
                        help="shape classes to draw (default: all three)")
    parser.add_argument("--max-objects", type=int, default=3, help="at most this many shapes per image (1-4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    path = make_shapes_dataset(args.out, args.train, args.val, args.imgsz, args.classes, args.seed,
                               max(1, min(4, args.max_objects)))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
