"""edge_detect.annotate.draw_analytics: lines, zones, counts and trails land where the processors say."""
from __future__ import annotations

import numpy as np

from edge_detect.annotate import _LINE_COLOR, class_color, draw_analytics, render
from edge_detect.types import Detections


def frame_dets(**metadata):
    d = Detections(np.array([[100, 100, 140, 200]], np.float32), np.array([0.9]), np.array([0]), np.array([3]))
    d.metadata.update(metadata)
    return d


def test_nothing_attached_draws_nothing():
    img = np.full((240, 320, 3), 128, np.uint8)
    assert np.array_equal(draw_analytics(img, Detections.empty(), copy=True), img)


def test_line_zone_and_trail_pixels():
    img = np.full((240, 320, 3), 128, np.uint8)
    d = frame_dets(lines={"gate": {"xyxy": [160, 0, 160, 240], "in": 2, "out": 1}},
                   zones={"bay": {"polygon": [[200, 150], [300, 150], [300, 230], [200, 230]], "occupancy": 1}})
    trail = np.full((1, 5, 2), np.nan, np.float32)
    trail[0, 2:] = [[20, 220], [60, 220], [100, 220]]
    d.data["trail"] = trail
    out = draw_analytics(img, d, copy=True)
    assert tuple(int(v) for v in out[200, 160]) == _LINE_COLOR  # the line
    inside = out[190, 250].astype(int)
    assert not np.array_equal(inside, [128, 128, 128]) and inside[0] > inside[2]  # tinted blue-ish
    assert np.array_equal(out[100, 20], [128, 128, 128])  # far from everything: untouched
    assert np.abs(out[220, 40].astype(int) - class_color(3)).max() < 30  # the trail, in the track's colour
    assert np.array_equal(out[220, 10], [128, 128, 128])  # NaN padding: nothing before the first point
    # the arrow crosses the line at mid-height, its head on the line's right (x < 160 for a downward line)
    off_shaft = np.concatenate([out[112:118], out[123:129]])  # rows just above and below the shaft
    amber = np.all(off_shaft == _LINE_COLOR, axis=2)
    assert amber[:, 130:157].sum() > 4 and amber[:, 164:190].sum() == 0


def test_render_draws_analytics_under_boxes():
    img = np.full((240, 320, 3), 128, np.uint8)
    d = frame_dets(lines={"gate": {"xyxy": [0, 120, 320, 120], "in": 0, "out": 0}})
    out = render(img, d, ["person"], None)
    assert tuple(int(v) for v in out[120, 300]) == _LINE_COLOR
    assert not np.array_equal(out[100, 100], [128, 128, 128])  # the box is drawn too


def test_inferred_regions_are_framed_in_grey():
    from edge_detect.annotate import _REGION_COLOR

    img = np.full((240, 320, 3), 0, np.uint8)
    d = Detections.empty()
    d.metadata["regions"] = [[10, 20, 74, 84]]
    out = draw_analytics(img, d, copy=True)
    assert tuple(int(v) for v in out[20, 40]) == _REGION_COLOR and tuple(int(v) for v in out[83, 40]) == _REGION_COLOR
    assert tuple(int(v) for v in out[50, 10]) == _REGION_COLOR and tuple(int(v) for v in out[50, 73]) == _REGION_COLOR
    assert not out[21:83, 11:73].any() and not out[:19].any()  # inside and outside the frame: untouched
