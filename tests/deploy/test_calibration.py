"""Calibration readers: folder / dataset yaml / video sampling, counts, shapes, identical to runtime preprocess."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.deploy.calibration import (CalibrationData, dataset_images, list_images, spread_indices,
                                           split_holdout, video_frame_count)
from edge_detect.errors import DataError
from edge_detect.preprocess import preprocess


@pytest.mark.parametrize("total,count,expected", [
    (10, 3, [0, 3, 6]),
    (795, 4, [0, 198, 397, 596]),
    (5, 8, [0, 1, 2, 3, 4]),
    (5, 5, [0, 1, 2, 3, 4]),
    (0, 3, []),
    (7, 0, []),
])
def test_spread_indices(total, count, expected):
    assert spread_indices(total, count) == expected


@pytest.mark.parametrize("total,calib,holdout", [(128, 500, 8), (128, 64, 8), (795, 100, 10), (20, 10, 0)])
def test_split_holdout_is_disjoint_and_counted(total, calib, holdout):
    c, h = split_holdout(total, calib, holdout)
    assert len(h) == holdout
    assert len(c) == min(calib, total - holdout)
    assert not set(c) & set(h)
    assert c == sorted(c) and h == sorted(h)
    assert all(0 <= i < total for i in c + h)
    if holdout:  # the hold-out spans the source instead of bunching at one end
        assert h[0] < total / holdout and h[-1] >= total - total / holdout


@pytest.mark.parametrize("total,calib,holdout", [(8, 10, 8), (3, 10, 5), (10, 0, 2), (10, 5, -1)])
def test_split_holdout_errors(total, calib, holdout):
    with pytest.raises(DataError, match="expected"):
        split_holdout(total, calib, holdout)


def test_folder_batches_identical_to_runtime_preprocess(coco128):
    folder = coco128 / "images" / "train2017"
    data = CalibrationData(folder, (640, 640), num_images=3, progress=False)
    files = list_images(folder)
    assert len(files) == 128
    assert data.kind == "images" and data.num_images == 3 and len(data) == 3
    assert list(data.items) == [files[0], files[42], files[85]]  # spread over the folder
    batches = list(data.batches())
    assert [b.shape for b in batches] == [(1, 3, 640, 640)] * 3
    assert all(b.dtype == np.float32 for b in batches)
    for path, batch in zip(data.items, batches):
        expected, _ = preprocess([cv2.imread(str(path))], (640, 640), stride=32, auto=False)
        np.testing.assert_array_equal(batch, expected)
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0
    # restartable: a second pass yields the same data
    np.testing.assert_array_equal(next(iter(data)), batches[0])


def test_yaml_train_split_default_and_val(coco128_yaml, coco128):
    train = dataset_images(coco128_yaml)
    val = dataset_images(coco128_yaml, "val")
    assert len(train) == 128 and len(val) == 128
    assert all(p.parent == coco128 / "images" / "train2017" for p in train)
    assert all(p.parent == coco128 / "images" / "val2017" for p in val)
    data = CalibrationData(coco128_yaml, (320, 320), num_images=500, holdout=8, progress=False)
    assert data.num_images == 120 and data.num_holdout == 8  # fewer than requested: all the rest
    assert not set(data.items) & set(data.holdout_items)
    assert set(data.items) | set(data.holdout_items) == set(train)
    assert data.describe() == {"source": str(coco128_yaml), "kind": "images", "images": 120, "holdout": 8,
                               "batch_size": 1, "input_hw": [320, 320]}


def test_yaml_txt_list_split(tmp_path, coco128):
    files = sorted((coco128 / "images" / "val2017").iterdir())[:5]
    (tmp_path / "list.txt").write_text("\n".join(str(f) for f in files) + "\n")
    (tmp_path / "d.yaml").write_text(f"path: {tmp_path}\ntrain: list.txt\nnames: {{0: a}}\n")
    assert dataset_images(tmp_path / "d.yaml") == files


def test_video_every_kth_frame(video):
    n = video_frame_count(video)
    assert n == 795
    data = CalibrationData(video, (320, 320), num_images=4, holdout=2, progress=False)
    assert data.kind == "video" and data.num_images == 4 and data.num_holdout == 2
    assert list(data.holdout_items) == [198, 596]
    assert list(data.items) == [0, 199, 397, 595]
    cap = cv2.VideoCapture(str(video))
    frames = []
    for _ in range(max(data.items) + 1):
        ok, f = cap.read()
        assert ok
        frames.append(f)
    cap.release()
    batches = list(data.batches())
    assert len(batches) == 4
    for idx, batch in zip(data.items, batches):
        expected, _ = preprocess([frames[idx]], (320, 320), auto=False)
        np.testing.assert_array_equal(batch, expected)
    steps = np.diff(data.items)
    assert steps.min() >= 150  # spread over the whole video, not the first frames


def test_video_sampling_spacing(video):
    data = CalibrationData(video, (320, 320), num_images=100, progress=False)
    assert list(data.items) == spread_indices(795, 100)
    assert set(np.diff(data.items)) == {7, 8}  # every 7.95th frame


def test_batch_size_padding_and_uint8_format(coco128):
    folder = coco128 / "images" / "val2017"
    padded = CalibrationData(folder, (256, 256), num_images=5, batch_size=2, progress=False)
    shapes = [b.shape for b in padded.batches()]
    assert len(padded) == 3 and shapes == [(2, 3, 256, 256)] * 3
    last = list(padded.batches())[-1]
    np.testing.assert_array_equal(last[0], last[1])  # padded by repeating the last image
    ragged = CalibrationData(folder, (256, 256), num_images=5, batch_size=2, pad_last=False,
                             fmt="uint8_nhwc_bgr", progress=False)
    batches = list(ragged.batches())
    assert [b.shape for b in batches] == [(2, 256, 256, 3), (2, 256, 256, 3), (1, 256, 256, 3)]
    assert batches[0].dtype == np.uint8


def test_ort_reader_protocol(coco128):
    data = CalibrationData(coco128 / "images" / "val2017", (256, 256), num_images=2, progress=False)
    reader = data.reader("images")
    assert len(reader) == 2
    first = reader.get_next()
    assert list(first) == ["images"] and first["images"].shape == (1, 3, 256, 256)
    assert reader.get_next() is not None and reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["images"], first["images"])
    assert len(list(iter(reader))) == 2


def _bad_sources(tmp: Path, coco128: Path) -> dict:
    (tmp / "empty").mkdir()
    (tmp / "notes.txt").write_text("x")
    (tmp / "nosplit.yaml").write_text("path: .\nval: images\nnames: [a]\n")
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "a.jpg").write_bytes(b"not a jpeg")
    return {"missing": tmp / "nope", "empty": tmp / "empty", "suffix": tmp / "notes.txt",
            "nosplit": tmp / "nosplit.yaml", "corrupt": tmp / "corrupt"}


@pytest.mark.parametrize("case,kwargs,match", [
    ("missing", {}, "not found"),
    ("empty", {}, "found none"),
    ("suffix", {}, "expected a folder, a dataset yaml"),
    ("nosplit", {}, "split 'train' not defined"),
    ("corrupt", {}, "cannot decode"),
    ("empty", {"batch_size": 0}, "batch_size: expected >= 1, got 0"),
])
def test_bad_sources(tmp_path, coco128, case, kwargs, match):
    src = _bad_sources(tmp_path, coco128)[case]
    with pytest.raises(DataError, match=match):
        data = CalibrationData(src, (64, 64), progress=False, **kwargs)
        list(data.batches())


def test_holdout_larger_than_source(coco128):
    with pytest.raises(DataError, match="expected more than 200 images"):
        CalibrationData(coco128 / "images" / "val2017", (64, 64), holdout=200, progress=False)
