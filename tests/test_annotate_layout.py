"""Overlays that stay readable on a small, crowded frame (issue 26 item 13): text scaled to the frame, the counts in
a panel no box or label covers, labels inside the frame and apart from each other."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.annotate import _label_size, counts_panel, label_layout, label_text, render, style
from edge_detect.types import Detections

NAMES = ["person", "bicycle", "car", "motorcycle"]


def crowded(h: int = 360, w: int = 480) -> Detections:
    """18 tracked boxes at 480x360: a row of overlapping people, boxes on every edge and in the corners."""
    boxes = [[20 + 24 * i, 120 + 20 * (i % 3), 60 + 24 * i, 210 + 20 * (i % 3)] for i in range(14)]
    boxes += [[440, 0, 480, 60], [0, 300, 50, 360], [200, 2, 260, 50], [400, 250, 479, 359]]
    b = np.array(boxes, np.float32)
    d = Detections(b, np.full(len(b), 0.87), np.arange(len(b)) % 4, np.arange(1, len(b) + 1))
    d.metadata["lines"] = {"gate": {"xyxy": [240, 0, 240, 360], "in": 12, "out": 3},
                           "door": {"xyxy": [0, 300, 480, 300], "in": 4, "out": 0}}
    d.metadata["zones"] = {"bay": {"polygon": [[300, 200], [470, 200], [470, 350], [300, 350]], "occupancy": 2}}
    return d


def _layout(d: Detections, shape=(360, 480)):
    st = style(shape)
    boxes = np.round(d.xyxy).astype(np.int32)
    texts = [label_text(c, s, NAMES, t) for c, s, t in zip(d.class_id.tolist(), d.score.tolist(),
                                                            d.track_id.tolist())]
    return boxes, [_label_size(t, st) for t in texts]


def _overlapping_pairs(rects) -> int:
    return sum(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
               for i, a in enumerate(rects) for b in rects[i + 1:])


def test_counts_panel_is_never_covered_by_boxes_or_labels():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)
    d = crowded()
    panel, texts = counts_panel(d, img.shape)
    assert texts == ["gate  in 12  out 3", "door  in 4  out 0", "bay  2 inside"]
    x1, y1, x2, y2 = panel
    assert (x2, y1) == (480, 0) and x2 - x1 < 480 // 2 and y2 - y1 < 360 // 4  # top-right, small at 480x360
    boxes = np.round(d.xyxy).astype(int)
    assert any(b[0] < x2 and x1 < b[2] and b[1] < y2 for b in boxes)  # a box does reach under the panel
    full = render(img, d, NAMES, 24.7)
    no_boxes = Detections.empty()
    no_boxes.metadata.update(d.metadata)
    bare = render(img, no_boxes, NAMES, 24.7)
    assert np.array_equal(full[y1:y2, x1:x2], bare[y1:y2, x1:x2])  # the panel's pixels: the same with or without
    assert not np.array_equal(full[y1:y2, x1:x2], img[y1:y2, x1:x2])


def test_labels_stay_inside_the_frame_apart_and_off_the_panel():
    d = crowded()
    boxes, sizes = _layout(d)
    panel = counts_panel(d, (360, 480))[0]
    rects = label_layout(boxes, sizes, (360, 480), avoid=[panel])
    assert all(0 <= r[0] < r[2] <= 480 and 0 <= r[1] < r[3] <= 360 for r in rects)
    assert _overlapping_pairs(rects + [panel]) == 0
    naive = [(b[0], b[1] - s[1], b[0] + s[0], b[1]) for b, s in zip(boxes.tolist(), sizes)]  # all above the boxes
    assert _overlapping_pairs(naive) >= 5 and any(r[1] < 0 or r[2] > 480 for r in naive)


@pytest.mark.parametrize("box, where", [
    ((200, 0, 280, 90), "inside at the top"),  # no room above: inside the box
    ((420, 100, 479, 200), "moved left"),  # would leave at the right edge
    ((10, 20, 90, 359), "above"),
])
def test_label_goes_inside_the_box_when_it_would_leave_the_frame(box, where):
    (rect,) = label_layout(np.array([box]), [(110, 14)], (360, 480))
    x1, y1, x2, y2 = rect
    assert 0 <= x1 and x2 <= 480 and 0 <= y1 and y2 <= 360
    if where == "inside at the top":
        assert (y1, x1) == (box[1], box[0])
    elif where == "moved left":
        assert x2 == 480 and y2 == box[1]
    else:
        assert (x1, y2) == (box[0], box[1])


def test_text_scales_with_the_frame():
    small, hd = style((360, 480)), style((1080, 1920))
    assert small.font_scale < hd.font_scale and small.thickness <= hd.thickness
    assert 2 * _label_size("#12 person 0.87", small)[1] <= _label_size("#12 person 0.87", hd)[1]
    assert _label_size("#12 person 0.87", small)[1] <= 18
    assert _label_size("#12 person 0.87", small)[0] <= 480 // 4  # four labels fit across a 480 px frame
