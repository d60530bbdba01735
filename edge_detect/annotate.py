"""Drawing detections, an FPS overlay and the analytics (lines, zones, live counts, track trails) on BGR frames
with OpenCV primitives; used by the sinks (video, display, preview, snapshots), ``Result.annotated`` and, later, the
server. Lives outside ``stream/`` so outputs draw without importing the stream side.

Colours are fixed per class id (a 20-colour palette, cycled), so the same class keeps its colour across
frames and runs; trails are coloured per track id. Line width, font scale and thickness follow the frame size
(:func:`style`), so a 480x360 frame gets small labels and a 1080p one large ones.

Layout (:func:`render`, what ``Result.annotated`` shows): zones, lines and trails first, then the boxes, then
their labels, then the **counts panel** (line ``in``/``out`` and zone occupancy, an opaque panel in the top-right
corner: drawn after the boxes, so no box or label covers it) and the FPS overlay (top-left). Labels are placed by
a pure planner (:func:`label_layout`): above the box, else inside it at the top, else inside at the bottom, else
below it -- the first place that stays inside the frame and covers neither another label nor the panel.

:func:`draw_analytics` reads only what the processors attach to :class:`~edge_detect.types.Detections`:
``metadata["lines"]`` (``{NAME: {"xyxy", "in", "out"}}``), ``metadata["zones"]`` (``{NAME: {"polygon",
"occupancy", ...}}``), ``data["trail"]`` (``(N, T, 2)`` points, ``NaN`` padded) and ``metadata["regions"]`` (the
crops region inference ran the model on, ``[[x1, y1, x2, y2], ...]``: thin grey frames), all in frame pixels.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_detect.types import Detections

__all__ = ["draw_detections", "draw_fps", "draw_analytics", "draw_counts", "counts_panel", "label_layout", "style",
           "Style", "class_color", "label_text", "render"]

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


class Style(NamedTuple):
    """Line width (px), font scale and text thickness (px) for one frame size."""

    line_width: int
    font_scale: float
    thickness: int


def style(shape_hw: Tuple[int, ...], line_width: Optional[int] = None) -> Style:
    """The drawing style of a frame of ``(h, w)`` pixels: lines ~0.3 % of the mean side (at least 2 px); text
    scaled to the shorter side (``min(h, w) / 900``, at least 0.35: about 9 px high at 360 px, 27 px at 1080 px),
    1 px thick below 1000 px, 2 px above; ``line_width`` overrides the lines only."""
    h, w = shape_hw[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 2)
    font_scale = max(min(h, w) / 900, 0.35)
    return Style(int(lw), font_scale, 1 if min(h, w) < 1000 else 2)


Rect = Tuple[int, int, int, int]


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_size(text: str, st: Style) -> Tuple[int, int]:
    """``(width, height)`` of a label's filled box, pixels."""
    (tw, th), base = cv2.getTextSize(text, _FONT, st.font_scale, st.thickness)
    return tw + 2, th + base + 3


def label_layout(boxes: np.ndarray, sizes: Sequence[Tuple[int, int]], shape_hw: Tuple[int, ...],
                 avoid: Sequence[Rect] = ()) -> List[Rect]:
    """Where each box's label goes (a pure planner): for box ``i`` (``boxes`` int ``(N, 4)`` xyxy, clipped to the
    frame) a label of ``sizes[i]`` = ``(w, h)`` pixels, left-aligned with the box (moved left at the right edge):
    above the box, else inside it at the top, else inside at the bottom, else below it -- the first place inside
    the frame that overlaps no label placed before and no rect of ``avoid`` (e.g. the counts panel); when none is
    free, the first place inside the frame.

    Returns:
        ``[(x1, y1, x2, y2)]`` per box, inside ``[0, w] x [0, h]`` (a label wider or taller than the frame is
        cut to it).
    """
    h, w = shape_hw[:2]
    taken: List[Rect] = list(avoid)
    out: List[Rect] = []
    for (x1, y1, x2, y2), (lw_, lh) in zip(np.asarray(boxes).tolist(), sizes):
        lw_, lh = min(lw_, w), min(lh, h)
        x = int(min(max(x1, 0), w - lw_))
        tops = (y1 - lh, y1, y2 - lh, y2)  # above, inside top, inside bottom, below
        places = [(x, int(t), x + lw_, int(t) + lh) for t in tops if 0 <= t and t + lh <= h]
        if not places:  # a box taller than the frame: pinned to the frame's top
            places = [(x, 0, x + lw_, lh)]
        rect = next((r for r in places if not any(_overlaps(r, o) for o in taken)), places[0])
        taken.append(rect)
        out.append(rect)
    return out


def draw_detections(image: np.ndarray, detections: Detections, names: Optional[Sequence[str]] = None,
                    line_width: Optional[int] = None, labels: bool = True, copy: bool = False,
                    avoid: Sequence[Rect] = ()) -> np.ndarray:
    """Draw boxes, then ``"name score"`` labels (with ``#track`` when tracked) on a BGR image.

    Args:
        image: BGR ``uint8 (H, W, 3)``; drawn in place unless ``copy``.
        detections: boxes ``xyxy`` float32 in this image's pixels.
        names: class names (index = class id); ids are shown when missing.
        line_width: box line width in pixels; default :func:`style`'s.
        labels: draw the labels, placed by :func:`label_layout` (inside the frame, apart where there is room).
        copy: draw on a copy and leave ``image`` untouched.
        avoid: rects ``(x1, y1, x2, y2)`` labels keep off (the counts panel).

    Returns:
        The annotated image (``image`` itself unless ``copy``).
    """
    out = image.copy() if copy else image
    if not len(detections):
        return out
    h, w = out.shape[:2]
    st = style((h, w), line_width)
    boxes = np.round(detections.xyxy).astype(np.int32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    tracks = detections.track_id if detections.track_id is not None else np.full(len(detections), -1)
    classes = detections.class_id.tolist()
    for (x1, y1, x2, y2), cid in zip(boxes.tolist(), classes):
        cv2.rectangle(out, (x1, y1), (x2, y2), class_color(cid), st.line_width, cv2.LINE_AA)
    if labels:
        texts = [label_text(c, s, names, t) for c, s, t in zip(classes, detections.score.tolist(), tracks.tolist())]
        rects = label_layout(boxes, [_label_size(t, st) for t in texts], (h, w), avoid)
        for text, rect, cid in zip(texts, rects, classes):
            _draw_label(out, text, rect, class_color(cid), st)
    return out


def _draw_label(img: np.ndarray, text: str, rect: Rect, color: Tuple[int, int, int], st: Style) -> None:
    """Filled label box ``rect`` (from :func:`label_layout`) with ``text`` in it."""
    x1, y1, x2, y2 = rect
    (_, th), _ = cv2.getTextSize(text, _FONT, st.font_scale, st.thickness)
    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, -1, cv2.LINE_AA)
    cv2.putText(img, text, (x1 + 1, y1 + th + 1), _FONT, st.font_scale, _text_color(color), st.thickness,
                cv2.LINE_AA)


def _tag(img: np.ndarray, text: str, corner: Tuple[int, int], color: Tuple[int, int, int], st: Style) -> None:
    """A small label just above ``corner`` (inside the frame): a line's or zone's name."""
    lw_, lh = _label_size(text, st)
    h, w = img.shape[:2]
    x = int(min(max(corner[0], 0), max(w - lw_, 0)))
    y = int(min(max(corner[1] - lh, 0), max(h - lh, 0)))
    _draw_label(img, text, (x, y, x + lw_, y + lh), color, st)


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
    """A copy of ``image`` (BGR ``uint8 (H, W, 3)``) with ``detections`` (xyxy, original-frame pixels), the analytics,
    the counts panel and the FPS overlay drawn (no overlay when ``fps`` is ``None``), in the module doc's order;
    what :attr:`edge_detect.types.Result.annotated` shows."""
    out = draw_analytics(image, detections, copy=True, counts=False)
    panel = counts_panel(detections, out.shape)
    out = draw_detections(out, detections, names, avoid=[panel[0]] if panel else ())
    draw_counts(out, detections, panel)
    return draw_fps(out, fps) if fps is not None else out


_PANEL_BG = (32, 32, 32)


def _count_lines(detections: Detections) -> List[str]:
    """The counts panel's text: ``"gate  in 3  out 1"`` per line, ``"bay  2 inside"`` per zone."""
    lines: Dict[str, dict] = detections.metadata.get("lines") or {}
    zones: Dict[str, dict] = detections.metadata.get("zones") or {}
    return ([f"{name}  in {ln.get('in', 0)}  out {ln.get('out', 0)}" for name, ln in lines.items()]
            + [f"{name}  {z.get('occupancy', 0)} inside" for name, z in zones.items()])


def counts_panel(detections: Detections, shape_hw: Tuple[int, ...]) -> Optional[Tuple[Rect, List[str]]]:
    """The counts panel of a frame: its rect ``(x1, y1, x2, y2)`` in the top-right corner and its text lines, or
    ``None`` without lines and zones (a pure planner; :func:`draw_counts` draws it)."""
    texts = _count_lines(detections)
    if not texts:
        return None
    h, w = shape_hw[:2]
    st = style((h, w))
    sizes = [_label_size(t, st) for t in texts]
    pw, ph = min(max(s[0] for s in sizes) + 8, w), min(sum(s[1] for s in sizes) + 6, h)
    return (w - pw, 0, w, ph), texts


def draw_counts(image: np.ndarray, detections: Detections,
                panel: Optional[Tuple[Rect, List[str]]] = None) -> np.ndarray:
    """Draw the counts panel (:func:`counts_panel`: line ``in``/``out``, zone occupancy) on ``image`` in place: an
    opaque dark panel, each line's text in its kind's colour. Nothing without lines and zones."""
    panel = panel or counts_panel(detections, image.shape)
    if panel is None:
        return image
    (x1, y1, x2, y2), texts = panel
    st = style(image.shape)
    image[y1:y2, x1:x2] = _PANEL_BG
    n_lines = len(detections.metadata.get("lines") or {})
    y = y1 + 3
    for i, text in enumerate(texts):
        (_, th), base = cv2.getTextSize(text, _FONT, st.font_scale, st.thickness)
        cv2.putText(image, text, (x1 + 4, y + th + 1), _FONT, st.font_scale,
                    _LINE_COLOR if i < n_lines else _ZONE_COLOR, st.thickness, cv2.LINE_AA)
        y += th + base + 3
    return image


_LINE_COLOR = (0, 215, 255)  # amber (BGR)
_ZONE_COLOR = (255, 160, 0)  # azure (BGR)
_REGION_COLOR = (170, 170, 170)  # grey


def draw_analytics(image: np.ndarray, detections: Detections, copy: bool = False, counts: bool = True) -> np.ndarray:
    """Draw the inferred regions, zones (tinted polygons with their name), counting lines (with an arrow towards their
    ``in`` side and their name), track trails and, with ``counts``, the counts panel (:func:`draw_counts`), from what the
    processors attached to ``detections`` (see module doc); nothing is drawn when they attached nothing.

    Args:
        image: BGR ``uint8 (H, W, 3)``; drawn in place unless ``copy``.
        detections: the frame's detections (``metadata["lines"]``, ``metadata["zones"]``, ``data["trail"]``,
            ``metadata["regions"]``).
        copy: draw on a copy.
        counts: draw the counts panel too (:func:`render` draws it after the boxes instead).

    Returns:
        The annotated image.
    """
    out = image.copy() if copy else image
    zones = detections.metadata.get("zones") or {}
    lines = detections.metadata.get("lines") or {}
    trails = detections.data.get("trail")
    regions = detections.metadata.get("regions") or ()
    if not zones and not lines and trails is None and not regions:
        return out
    h, w = out.shape[:2]
    st = style((h, w))
    lw = st.line_width
    for x1, y1, x2, y2 in regions:  # where the model looked (region inference)
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), _REGION_COLOR, max(lw // 2, 1))
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
            _tag(out, name, (corner[0], corner[1] + _label_size(name, st)[1]), _ZONE_COLOR, st)
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
        start = (x1, y1) if (y1, x1) <= (y2, x2) else (x2, y2)  # the upper end: the name just below it
        _tag(out, name, (round(start[0]) + lw, round(start[1]) + 2 * _label_size(name, st)[1]), _LINE_COLOR, st)
    if trails is not None and detections.track_id is not None:
        for trail, tid in zip(np.asarray(trails, np.float64), detections.track_id.tolist()):
            pts = trail[~np.isnan(trail).any(axis=1)]
            if len(pts) >= 2 and tid >= 1:
                cv2.polylines(out, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, class_color(tid),
                              max(lw - 1, 1), cv2.LINE_AA)
    return draw_counts(out, detections) if counts else out
