"""Drawing detections, an FPS overlay and the analytics (lines, zones, live counts, track trails) on BGR frames
with OpenCV primitives; used by the sinks (video, display, preview, snapshots), ``Result.annotated`` and, later, the
server. Lives outside ``stream/`` so outputs draw without importing the stream side.

Colours are fixed per class id (a 20-colour palette, cycled), so the same class keeps its colour across
frames and runs; trails are coloured per track id. Line width and font scale follow the frame size unless given.

:func:`draw_analytics` reads only what the processors attach to :class:`~edge_detect.types.Detections`:
``metadata["lines"]`` (``{NAME: {"xyxy", "in", "out"}}``), ``metadata["zones"]`` (``{NAME: {"polygon",
"occupancy", ...}}``) and ``data["trail"]`` (``(N, T, 2)`` points, ``NaN`` padded), all in frame pixels.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.types import Detections

__all__ = ["draw_detections", "draw_fps", "draw_analytics", "class_color", "label_text", "render"]

# 20 distinct colours as hex RGB, converted to BGR below
_PALETTE_HEX = ("e6194b", "3cb44b", "ffe119", "4363d8", "f58231", "911eb4", "46f0f0", "f032e6", "bcf60c",
                "fabebe", "008080", "e6beff", "9a6324", "fffac8", "800000", "aaffc3", "808000", "ffd8b1",
                "000075", "808080")
PALETTE = np.array([[int(h[i:i + 2], 16) for i in (4, 2, 0)] for h in _PALETTE_HEX], dtype=np.uint8)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> Tuple[int, int, int]:
    """BGR colour of a class id (palette cycled)."""
    b, g, r = PALETTE[int(class_id) % len(PALETTE)]
    return int(b), int(g), int(r)


def label_text(class_id: int, score: float, names: Optional[Sequence[str]] = None,
               track_id: Optional[int] = None) -> str:
    """``"name 0.87"`` (``"#12 name 0.87"`` with a track id >= 0); the id when the name is unknown."""
    name = names[class_id] if names is not None and 0 <= class_id < len(names) else str(class_id)
    prefix = f"#{track_id} " if track_id is not None and track_id >= 0 else ""
    return f"{prefix}{name} {score:.2f}"


def _text_color(bgr: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """Black on light colours, white on dark ones (ITU-R BT.601 luma)."""
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def draw_detections(image: np.ndarray, detections: Detections, names: Optional[Sequence[str]] = None,
                    line_width: Optional[int] = None, labels: bool = True, copy: bool = False) -> np.ndarray:
    """Draw boxes and ``"name score"`` labels (with ``#track`` when tracked) on a BGR image.

    Args:
        image: BGR ``uint8 (H, W, 3)``; drawn in place unless ``copy``.
        detections: boxes ``xyxy`` float32 in this image's pixels.
        names: class names (index = class id); ids are shown when missing.
        line_width: box line width in pixels; default ~0.3% of the image diagonal, at least 2.
        labels: draw the label text above each box (inside it at the top edge).
        copy: draw on a copy and leave ``image`` untouched.

    Returns:
        The annotated image (``image`` itself unless ``copy``).
    """
    out = image.copy() if copy else image
    if not len(detections):
        return out
    h, w = out.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 2)
    font_scale, thickness = lw / 3, max(lw - 1, 1)
    boxes = np.round(detections.xyxy).astype(np.int32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    tracks = detections.track_id if detections.track_id is not None else np.full(len(detections), -1)
    for (x1, y1, x2, y2), score, cid, tid in zip(boxes.tolist(), detections.score.tolist(),
                                                 detections.class_id.tolist(), tracks.tolist()):
        color = class_color(cid)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        if labels:
            _draw_label(out, label_text(cid, score, names, tid), (x1, y1), color, font_scale, thickness)
    return out


def _draw_label(img: np.ndarray, text: str, corner: Tuple[int, int], color: Tuple[int, int, int],
                font_scale: float, thickness: int) -> None:
    """Filled label box with text, above ``corner`` (the box's top-left) or just inside it at the top edge."""
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thickness)
    x, y = corner
    outside = y - th - base - 3 >= 0
    top = y - th - base - 3 if outside else y
    x = min(x, max(img.shape[1] - tw - 1, 0))
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 3), color, -1, cv2.LINE_AA)
    cv2.putText(img, text, (x + 1, top + th + 1), _FONT, font_scale, _text_color(color), thickness, cv2.LINE_AA)


def draw_fps(image: np.ndarray, fps: float, extra_text: Optional[str] = None, copy: bool = False) -> np.ndarray:
    """Draw ``"FPS 29.8"`` (and ``extra_text`` on the next line) in the top-left corner on a dark panel.

    Args:
        image: BGR ``uint8 (H, W, 3)``; drawn in place unless ``copy``.
        fps: frames per second to show (one decimal).
        extra_text: optional second line (e.g. ``"inference 12.3 ms"``).
        copy: draw on a copy.

    Returns:
        The annotated image.
    """
    out = image.copy() if copy else image
    h, w = out.shape[:2]
    scale = max(min(h, w) / 720, 0.4)
    thickness = max(int(round(scale * 2)), 1)
    lines = [f"FPS {fps:.1f}"] + ([extra_text] if extra_text else [])
    sizes = [cv2.getTextSize(t, _FONT, scale, thickness) for t in lines]
    line_h = max(th + base for (_, th), base in sizes) + 6
    panel_w = max(tw for (tw, _), _ in sizes) + 12
    x2, y2 = min(panel_w, w), min(line_h * len(lines) + 6, h)
    out[:y2, :x2] = (out[:y2, :x2].astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken 60%
    for i, text in enumerate(lines):
        y = 6 + line_h * i + sizes[i][0][1]
        cv2.putText(out, text, (6, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def render(image: np.ndarray, detections: Detections, names: Sequence[str], fps: Optional[float]) -> np.ndarray:
    """A copy of ``image`` (BGR ``uint8 (H, W, 3)``) with ``detections`` (xyxy, original-frame pixels) and the FPS
    overlay drawn (no overlay when ``fps`` is ``None``); what :attr:`edge_detect.types.Result.annotated` shows."""
    out = draw_analytics(image, detections, copy=True)
    out = draw_detections(out, detections, names)
    return draw_fps(out, fps) if fps is not None else out


_LINE_COLOR = (0, 215, 255)  # amber (BGR)
_ZONE_COLOR = (255, 160, 0)  # azure (BGR)


def draw_analytics(image: np.ndarray, detections: Detections, copy: bool = False) -> np.ndarray:
    """Draw zones (tinted polygons with their occupancy), counting lines (with an arrow towards their ``in``
    side and live ``in``/``out`` counts) and track trails, from what the processors attached to ``detections``
    (see module doc); nothing is drawn when they attached nothing.

    Args:
        image: BGR ``uint8 (H, W, 3)``; drawn in place unless ``copy``.
        detections: the frame's detections (``metadata["lines"]``, ``metadata["zones"]``, ``data["trail"]``).
        copy: draw on a copy.

    Returns:
        The annotated image.
    """
    out = image.copy() if copy else image
    zones = detections.metadata.get("zones") or {}
    lines = detections.metadata.get("lines") or {}
    trails = detections.data.get("trail")
    if not zones and not lines and trails is None:
        return out
    h, w = out.shape[:2]
    lw = max(round((h + w) / 2 * 0.003), 2)
    font_scale, thickness = lw / 3, max(lw - 1, 1)
    if zones:
        tint = out.copy()
        for z in zones.values():
            pts = np.round(np.asarray(z["polygon"], np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(tint, [pts], _ZONE_COLOR, cv2.LINE_AA)
        cv2.addWeighted(tint, 0.2, out, 0.8, 0, dst=out)
        for name, z in zones.items():
            pts = np.round(np.asarray(z["polygon"], np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [pts], True, _ZONE_COLOR, lw, cv2.LINE_AA)
            corner = tuple(int(v) for v in pts[:, 0].min(axis=0))
            _draw_label(out, f"{name}: {z.get('occupancy', 0)}", (corner[0], corner[1]), _ZONE_COLOR, font_scale,
                        thickness)
    for name, ln in lines.items():
        x1, y1, x2, y2 = (float(v) for v in ln["xyxy"])
        cv2.line(out, (round(x1), round(y1)), (round(x2), round(y2)), _LINE_COLOR, lw, cv2.LINE_AA)
        length = max(float(np.hypot(x2 - x1, y2 - y1)), 1e-6)
        nx, ny = -(y2 - y1) / length, (x2 - x1) / length  # unit normal towards the line's right = its "in" side
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        arrow = 6 * lw
        cv2.arrowedLine(out, (round(mx - nx * arrow), round(my - ny * arrow)),
                        (round(mx + nx * arrow), round(my + ny * arrow)), _LINE_COLOR, lw, cv2.LINE_AA,
                        tipLength=0.4)
        lx = int(min(max(min(x1, x2), 0), w - 1))
        ly = int(min(max(min(y1, y2) + 4 * lw + 12, 0), h - 1))
        _draw_label(out, f"{name} in {ln.get('in', 0)} out {ln.get('out', 0)}", (lx, ly), _LINE_COLOR,
                    font_scale, thickness)
    if trails is not None and detections.track_id is not None:
        for trail, tid in zip(np.asarray(trails, np.float64), detections.track_id.tolist()):
            pts = trail[~np.isnan(trail).any(axis=1)]
            if len(pts) >= 2 and tid >= 1:
                cv2.polylines(out, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, class_color(tid),
                              max(lw - 1, 1), cv2.LINE_AA)
    return out
