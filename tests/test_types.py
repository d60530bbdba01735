import numpy as np
import pytest

from edge_detect.types import Detections, LetterboxInfo


def test_detections_converts_dtypes_and_selects():
    d = Detections([[0, 0, 10, 10], [5, 5, 20, 30]], [0.9, 0.5], [0, 2])
    assert d.xyxy.dtype == np.float32 and d.score.dtype == np.float32 and d.class_id.dtype == np.int32
    assert len(d) == 2
    sub = d[d.score > 0.6]
    assert len(sub) == 1 and sub.class_id.tolist() == [0]
    assert len(d[1]) == 1 and d[1].xyxy.tolist() == [[5, 5, 20, 30]]
    assert np.allclose(Detections.from_array(d.to_array()).xyxy, d.xyxy)


def test_detections_records_use_names():
    d = Detections([[0, 0, 10, 10]], [0.87654], [1], track_id=[7])
    rec = d.to_records(["person", "bicycle"])
    assert rec == [{"xyxy": [0.0, 0.0, 10.0, 10.0], "score": 0.87654, "class_id": 1,
                    "class_name": "bicycle", "track_id": 7}]


@pytest.mark.parametrize(
    "xyxy, score, class_id, track_id, message",
    [
        (np.zeros((2, 3)), np.zeros(2), np.zeros(2), None, "Detections.xyxy: expected shape (N, 4)"),
        (np.zeros((2, 4)), np.zeros(3), np.zeros(2), None, "Detections.score: expected shape (2,)"),
        (np.zeros((2, 4)), np.zeros(2), np.zeros(1), None, "Detections.class_id: expected shape (2,)"),
        (np.zeros((2, 4)), np.zeros(2), np.zeros(2), np.zeros(5), "Detections.track_id: expected shape (2,)"),
    ],
)
def test_detections_validation_says_expected_vs_actual(xyxy, score, class_id, track_id, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Detections(xyxy, score, class_id, track_id)


def test_empty_detections():
    d = Detections.empty()
    assert len(d) == 0 and d.to_array().shape == (0, 6) and d.to_records() == []


def test_letterbox_info_maps_back_and_clips():
    info = LetterboxInfo(orig_shape=(720, 1280), input_shape=(640, 640), ratio=0.5, pad=(0.0, 140.0))
    boxes = info.to_original(np.array([[10, 150, 100, 200], [-20, 100, 700, 800]], np.float32))
    assert boxes.tolist() == [[20.0, 20.0, 200.0, 120.0], [0.0, 0.0, 1280.0, 720.0]]
