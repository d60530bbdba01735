"""edge_detect.stream.geometry: side of a directed line (image y axis down), extent, polygons, hysteresis."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.errors import ConfigError
from edge_detect.stream.geometry import Hysteresis, anchor_points, as_polygon, as_segment, point_in_polygon, \
    polygon_signed_distance, segment_intersection_t, side_of_line, signed_distance

# (line x1,y1,x2,y2, point, expected side): +1 = right of the directed line as seen in the image (y down)
SIDE_TABLE = [
    ((0, 180, 640, 180), (320, 300), 1),    # line to the right: below is its right
    ((0, 180, 640, 180), (320, 10), -1),    # above is its left
    ((640, 180, 0, 180), (320, 10), 1),     # line to the left: above is its right
    ((640, 180, 0, 180), (320, 300), -1),
    ((320, 0, 320, 360), (100, 50), 1),     # line downwards: the picture's left half is its right
    ((320, 0, 320, 360), (500, 50), -1),
    ((320, 360, 320, 0), (500, 50), 1),     # line upwards: the picture's right half is its right
    ((320, 360, 320, 0), (100, 50), -1),
    ((0, 0, 100, 100), (100, 0), -1),       # diagonal down-right: the upper-right corner is its left
    ((0, 0, 100, 100), (0, 100), 1),
    ((0, 0, 100, 100), (50, 50), 0),        # on the line
    ((0, 0, 100, 100), (500, 500), 0),      # on its extension
]


@pytest.mark.parametrize("line, point, side", SIDE_TABLE)
def test_side_of_directed_line(line, point, side):
    assert side_of_line(np.array([point]), line).tolist() == [side]


def test_signed_distance_is_in_pixels():
    d = signed_distance(np.array([[10, 7], [10, -3], [55, 0]]), (0, 0, 100, 0))
    np.testing.assert_allclose(d, [7, -3, 0])
    d = signed_distance(np.array([[3, 4]]), (0, 0, 30, 40))  # on the line
    np.testing.assert_allclose(d, [0], atol=1e-12)
    np.testing.assert_allclose(signed_distance(np.array([[0, 5]]), (0, 0, 30, 40)), [3.0])


# (path p0 -> p1, line, expected t along the segment or None)
INTERSECT_TABLE = [
    ((50, -10), (50, 10), (0, 0, 100, 0), 0.5),     # crosses the middle
    ((150, -10), (150, 10), (0, 0, 100, 0), 1.5),   # crosses the extension beyond B
    ((-20, -10), (-20, 10), (0, 0, 100, 0), -0.2),  # beyond A
    ((10, -10), (30, 10), (0, 0, 100, 0), 0.2),     # diagonal path
    ((10, -10), (30, -1), (0, 0, 100, 0), None),    # stays on one side
    ((10, 0), (30, 0), (0, 0, 100, 0), None),       # runs along the line
    ((25, 0), (25, 10), (0, 0, 100, 0), 0.25),      # starts on the line
]


@pytest.mark.parametrize("p0, p1, line, t", INTERSECT_TABLE)
def test_segment_intersection_t(p0, p1, line, t):
    got = segment_intersection_t(p0, p1, line)
    assert (got is None) if t is None else got == pytest.approx(t)


SQUARE = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], np.float64)
L_SHAPE = np.array([[0, 0], [100, 0], [100, 40], [40, 40], [40, 100], [0, 100]], np.float64)  # concave

POLY_TABLE = [
    (SQUARE, (50, 50), True, 50.0),
    (SQUARE, (10, 50), True, 10.0),
    (SQUARE, (-5, 50), False, -5.0),
    (SQUARE, (150, 150), False, -50 * np.sqrt(2)),
    (L_SHAPE, (20, 80), True, 20.0),
    (L_SHAPE, (80, 80), False, -40.0),  # in the notch of the L
    (L_SHAPE, (70, 20), True, 20.0),
    (SQUARE[::-1], (50, 50), True, 50.0),  # orientation does not matter
]


@pytest.mark.parametrize("poly, point, inside, dist", POLY_TABLE)
def test_polygon_containment_and_distance(poly, point, inside, dist):
    assert point_in_polygon(np.array([point]), poly).tolist() == [inside]
    assert polygon_signed_distance(np.array([point]), poly)[0] == pytest.approx(dist)


def test_anchor_points():
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    assert anchor_points(boxes).tolist() == [[20, 60]]
    assert anchor_points(boxes, "center").tolist() == [[20, 40]]
    assert anchor_points(boxes, "top_left").tolist() == [[10, 20]]
    assert anchor_points(np.zeros((0, 4)), "center").shape == (0, 2)
    with pytest.raises(ConfigError, match="anchor: expected one of bottom_center.*got 'feet'"):
        anchor_points(boxes, "feet")


# values fed to a hysteresis of band 2 -> states after each value, number of changes
HYST_TABLE = [
    ([-5, -1, 1, -1, 1, 5], [-1, -1, -1, -1, -1, 1], 1),         # jitter inside the band, then a real crossing
    ([-5, -1, 1.5, -3], [-1, -1, -1, -1], 0),                    # touch and go back
    ([1, -1, 0, 3, -3, 3], [None, None, None, 1, -1, 1], 2),     # first state only once out of the band
    ([-3, 2, -2], [-1, -1, -1], 0),                              # exactly on the band's edge: no change
    ([-5, 5, -5, 5], [-1, 1, -1, 1], 3),
]


@pytest.mark.parametrize("values, states, changes", HYST_TABLE)
def test_hysteresis(values, states, changes):
    h = Hysteresis(2.0)
    out = [h.update(v) for v in values]
    assert [s for s, _ in out] == states
    assert sum(c for _, c in out) == changes


@pytest.mark.parametrize("line, match", [
    ((0, 0, 0, 0), "line: expected two distinct endpoints, got a zero-length line at \\(0, 0\\)"),
    ((0, 0, 1), "line: expected 4 finite numbers x1,y1,x2,y2, got \\[0.0, 0.0, 1.0\\]"),
    ((0, 0, 1, float("nan")), "line: expected 4 finite numbers"),
    (("a", 0, 1, 2), "line: expected 4 numbers x1,y1,x2,y2, got"),
    ((0, 0, 1e308, 5), r"line: expected 4 finite numbers x1,y1,x2,y2 with \|v\| <= 1000000 px, got \[0.0, 0.0, 1e\+308"),
    ((0, -1000001, 5, 5), r"with \|v\| <= 1000000 px"),
])
def test_bad_segments(line, match):
    with pytest.raises(ConfigError, match=match):
        as_segment(line)


@pytest.mark.parametrize("poly, match", [
    ((0, 0, 10, 0, 10), "zone: expected an even number of values \\(x,y pairs\\), got 5"),
    ((0, 0, 10, 0), "zone: expected at least 3 points, got 2"),
    ((0, 0, 10, 10, 20, 20), "zone: expected a polygon with a non-zero area, got collinear points"),
    ((0, 0, 10, 0, float("inf"), 5), "zone: expected finite numbers"),
    ((0, 0, 2e6, 0, 0, 5), r"zone: expected finite numbers with \|v\| <= 1000000 px, got \[0.0, 0.0, 2000000.0"),
])
def test_bad_polygons(poly, match):
    with pytest.raises(ConfigError, match=match):
        as_polygon(poly)


def test_largest_coordinates_are_accepted_and_compute_without_warnings():
    import warnings

    from edge_detect.stream.geometry import MAX_COORD

    seg = as_segment((-MAX_COORD, -MAX_COORD, MAX_COORD, MAX_COORD))
    poly = as_polygon((-MAX_COORD, -MAX_COORD, MAX_COORD, -MAX_COORD, 0, MAX_COORD))
    pts = np.array([[0.0, 10.0], [MAX_COORD, -MAX_COORD]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(signed_distance(pts, seg)).all() and np.isfinite(polygon_signed_distance(pts, poly)).all()


def test_hysteresis_rejects_negative_band():
    with pytest.raises(ConfigError, match="hysteresis band: expected >= 0 pixels, got -1"):
        Hysteresis(-1)


@pytest.mark.parametrize("values, states, changes, pending", [
    ([-5, 3, -3, 3, 1, 3, 4], [-1, -1, -1, -1, -1, -1, 1], 1, False),  # only two in a row beyond the band flip it
    ([-5, 5, -5, 5, -5], [-1, -1, -1, -1, -1], 0, False),  # alternating excursions never do
    ([-5, 5], [-1, -1], 0, True),  # one value on the other side: pending
])
def test_hysteresis_with_confirmation(values, states, changes, pending):
    h = Hysteresis(2.0, confirm=2)
    out = [h.update(v) for v in values]
    assert [s for s, _ in out] == states
    assert sum(c for _, c in out) == changes
    assert h.pending == pending
    assert h.flush() == ((1, True) if pending else (states[-1], False))
    assert not h.pending


def test_hysteresis_rejects_zero_confirmation():
    with pytest.raises(ConfigError, match="hysteresis confirm: expected >= 1 values, got 0"):
        Hysteresis(2.0, confirm=0)
