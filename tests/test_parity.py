"""match_detections: the yardstick of the GPU parity tests (CUDA vs CPU, device vs host path), checked here."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.bench.parity import match_detections, match_image
from edge_detect.types import Detections

REF = np.array([[10, 10, 110, 210, 0.90, 0],
                [300, 40, 400, 140, 0.50, 2],
                [300, 40, 400, 140, 0.30, 5]], np.float32)


def test_identical_runs_match_fully() -> None:
    m = match_image(REF, REF.copy())
    assert (m.reference, m.candidate, m.matched, m.missing, m.extra, m.fraction) == (3, 3, 3, 0, 0, 1.0)


def test_small_moves_within_tolerance_still_match() -> None:
    cand = REF.copy()
    cand[:, :4] += 0.5  # IoU of a 100 px box moved by 0.5 px: ~0.99
    cand[:, 4] += 0.009
    assert match_image(REF, cand).matched == 3


@pytest.mark.parametrize("column, delta, why", [
    (slice(0, 4, 2), 4.0, "box moved by 4 px: IoU ~0.92 < 0.95"),
    (4, 0.02, "score off by 0.02 > 0.01"),
    (5, 1.0, "another class"),
])
def test_a_changed_box_is_one_missing_and_one_extra(column, delta, why: str) -> None:
    cand = REF.copy()
    cand[0, column] += delta
    m = match_image(REF, cand)
    assert (m.matched, m.missing, m.extra) == (2, 1, 1), why
    assert m.fraction == pytest.approx(2 / 3)


def test_matching_is_one_to_one() -> None:
    cand = np.concatenate([REF[:1], REF[:1] + np.float32([0.2, 0, 0.2, 0, 0, 0])])  # two boxes on one
    m = match_image(REF[:1], cand)
    assert (m.matched, m.extra, m.missing) == (1, 1, 0)


def test_empty_images_and_the_report_totals() -> None:
    dets = Detections.from_array(REF)
    report = match_detections([dets, np.zeros((0, 6)), REF], [dets, Detections.empty(), REF[:2]])
    assert [(m.matched, m.missing, m.extra) for m in report.per_image] == [(3, 0, 0), (0, 0, 0), (2, 1, 0)]
    assert report.per_image[1].fraction == 1.0
    assert (report.reference, report.candidate, report.matched, report.extra) == (6, 5, 5, 0)
    assert report.fraction == pytest.approx(5 / 6)
    assert report.to_dict()["imperfect_images"] == [2]
    one = match_detections(REF, REF[1:])  # a single image may be passed as it is
    assert len(one.per_image) == 1 and one.missing == 1


def test_runs_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same number of images in both runs, got 2 and 1"):
        match_detections([REF, REF], [REF])
    with pytest.raises(ValueError, match=r"expected Detections or an \(n, 6\) array"):
        match_image(REF[:, :4], REF)
