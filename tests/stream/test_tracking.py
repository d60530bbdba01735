"""edge_detect.stream.processors.iou: greedy IoU tracker."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.stream.processors.iou import IoUTracker
from edge_detect.types import Detections


def dets(boxes, classes=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    cls = np.zeros(len(boxes), np.int32) if classes is None else np.asarray(classes)
    return Detections(boxes, np.full(len(boxes), 0.9, np.float32), cls)


def test_ids_follow_moving_objects_and_new_objects_get_new_ids():
    tr = IoUTracker(iou_threshold=0.3, max_age=2)
    out = tr.update(dets([[0, 0, 10, 10], [100, 100, 120, 120]]))
    assert out.track_id.tolist() == [1, 2]
    # both move a little; listed in the other order; a third object appears
    out = tr.update(dets([[102, 101, 122, 121], [1, 1, 11, 11], [50, 50, 60, 60]]))
    assert out.track_id.tolist() == [2, 1, 3]
    np.testing.assert_array_equal(out.xyxy[0], [102, 101, 122, 121])
    assert tr.active_tracks == 3


def test_greedy_prefers_highest_iou():
    tr = IoUTracker(iou_threshold=0.1)
    tr.update(dets([[0, 0, 10, 10]]))
    out = tr.update(dets([[4, 0, 14, 10], [1, 0, 11, 10]]))  # the second overlaps more
    assert out.track_id.tolist() == [2, 1]


def test_class_aware_matching():
    tr = IoUTracker()
    tr.update(dets([[0, 0, 10, 10]], [0]))
    assert tr.update(dets([[0, 0, 10, 10]], [2])).track_id.tolist() == [2]
    agnostic = IoUTracker(class_aware=False)
    agnostic.update(dets([[0, 0, 10, 10]], [0]))
    assert agnostic.update(dets([[0, 0, 10, 10]], [2])).track_id.tolist() == [1]


def test_max_age_forgets_tracks():
    tr = IoUTracker(max_age=2)
    tr.update(dets([[0, 0, 10, 10]]))
    for _ in range(2):
        assert len(tr.update(Detections.empty())) == 0
    assert tr.update(dets([[0, 0, 10, 10]])).track_id.tolist() == [1]  # missed 2 frames: still known
    for _ in range(3):
        tr.update(Detections.empty())
    assert tr.active_tracks == 0
    assert tr.update(dets([[0, 0, 10, 10]])).track_id.tolist() == [2]


def test_clone_and_reset_start_fresh():
    tr = IoUTracker(iou_threshold=0.5, max_age=7)
    tr.update(dets([[0, 0, 10, 10]]))
    c = tr.clone()
    assert (c.iou_threshold, c.max_age, c.active_tracks) == (0.5, 7, 0)
    assert c.update(dets([[0, 0, 10, 10]])).track_id.tolist() == [1]
    tr.reset()
    assert tr.update(dets([[50, 50, 60, 60]])).track_id.tolist() == [1]


@pytest.mark.parametrize("kwargs, match", [
    ({"iou_threshold": 0.0}, r"iou_threshold: expected a value in \(0, 1\], got 0.0"),
    ({"iou_threshold": 1.5}, r"iou_threshold: expected a value in \(0, 1\], got 1.5"),
    ({"max_age": -1}, r"max_age: expected >= 0, got -1"),
])
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IoUTracker(**kwargs)
