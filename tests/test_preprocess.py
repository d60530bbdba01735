"""Letterbox parity with the reference implementation, input formats, image conversions and bad inputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_detect.errors import ConfigError, DataError
from edge_detect.preprocess import MAX_IMGSZ, check_imgsz, letterbox, letterbox_shape, preprocess, to_bgr


@pytest.fixture(scope="module")
def bus(shared):
    return cv2.imread(str(shared / "images" / "bus.jpg"))


@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_letterbox_is_byte_identical_to_reference(shared, reference, name):
    img = cv2.imread(str(shared / "images" / f"{name}.jpg"))
    ref = np.load(reference / f"infer_{name}.npz")["letterboxed_bgr"]
    meta = json.loads((reference / "reference.json").read_text())["images"][f"{name}.jpg"]
    out, info = letterbox(img, 640)
    assert out.dtype == np.uint8 and out.shape == (640, 640, 3)
    assert np.array_equal(out, ref), f"{np.count_nonzero(out != ref)} bytes differ"
    assert info.orig_shape == tuple(meta["orig_shape"][:2])
    assert info.ratio == pytest.approx(meta["ratio"], abs=1e-12)
    assert info.pad == tuple(meta["pad"])
    assert info.input_shape == (640, 640)


@pytest.mark.parametrize("orig_hw, new, auto, scaleup, out_hw, ratio, pad", [
    ((720, 1280), 640, True, True, (384, 640), 0.5, (0.0, 12.0)),      # minimum rectangle
    ((720, 1280), 640, False, True, (640, 640), 0.5, (0.0, 140.0)),
    ((1080, 810), 640, True, True, (640, 480), 640 / 1080, (0.0, 0.0)),
    ((100, 200), 640, False, False, (640, 640), 1.0, (220.0, 270.0)),  # no upscale: padded only
    ((100, 200), 640, False, True, (640, 640), 3.2, (0.0, 160.0)),
    ((101, 203), (320, 480), False, True, (320, 480), 480 / 203, (0.0, 40.5)),  # odd padding split
    ((500, 375), 320, True, True, (320, 256), 0.64, (8.0, 0.0)),
])
def test_letterbox_geometry(orig_hw, new, auto, scaleup, out_hw, ratio, pad):
    img = np.full((*orig_hw, 3), 7, np.uint8)
    out, info = letterbox(img, new, auto=auto, scaleup=scaleup)
    assert out.shape[:2] == out_hw
    assert info.input_shape == out_hw
    assert info.ratio == pytest.approx(ratio)
    assert info.pad == pytest.approx(pad)
    # pad value 114 in the corner when there is padding, image value inside
    if max(pad) >= 1:
        assert out[0, 0].tolist() == [114, 114, 114]
    assert out[out_hw[0] // 2, out_hw[1] // 2].tolist() == [7, 7, 7]


def test_odd_padding_is_split_like_yolov5():
    # dh = 40.5 -> top round(40.4) = 40, bottom round(40.6) = 41
    out, _ = letterbox(np.zeros((101, 203, 3), np.uint8), (320, 480))
    rows = np.flatnonzero((out == 114).all(axis=(1, 2)))
    assert rows[rows < 160].size == 40 and rows[rows >= 160].size == 41


def test_letterbox_shape_matches_letterbox():
    r, unpad, (dw, dh) = letterbox_shape((720, 1280), 640, auto=True)
    assert (r, unpad, dw, dh) == (0.5, (640, 360), 0.0, 12.0)


def test_preprocess_float32_nchw_rgb(bus):
    batch, infos = preprocess(bus, 640)
    boxed, _ = letterbox(bus, 640)
    assert batch.shape == (1, 3, 640, 640) and batch.dtype == np.float32
    assert batch.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(batch[0].transpose(1, 2, 0), boxed[..., ::-1].astype(np.float32) / 255)
    assert float(batch.max()) <= 1.0 and float(batch.min()) >= 0.0
    assert len(infos) == 1 and infos[0].pad == (80.0, 0.0)


def test_preprocess_float16_and_uint8(bus):
    half, _ = preprocess([bus, bus], 320, dtype=np.float16)
    assert half.shape == (2, 3, 320, 320) and half.dtype == np.float16
    u8, infos = preprocess([bus, bus], 320, fmt="uint8_nhwc_bgr")
    boxed, _ = letterbox(bus, 320)
    assert u8.shape == (2, 320, 320, 3) and u8.dtype == np.uint8
    np.testing.assert_array_equal(u8[1], boxed)
    np.testing.assert_allclose(half[0].astype(np.float32), u8[0][..., ::-1].transpose(2, 0, 1) / 255, atol=1e-3)
    assert len(infos) == 2


def test_preprocess_auto_batch_uses_common_rectangle():
    wide = np.zeros((720, 1280, 3), np.uint8)   # alone: 384x640
    tall = np.zeros((1080, 810, 3), np.uint8)   # alone: 640x480
    batch, infos = preprocess([wide, tall], 640, auto=True)
    assert batch.shape == (2, 3, 640, 640)
    single, info = preprocess(wide, 640, auto=True)
    assert single.shape == (1, 3, 384, 640) and info[0].pad == (0.0, 12.0)
    assert [i.ratio for i in infos] == pytest.approx([0.5, 640 / 1080])


@pytest.mark.parametrize("make", [
    lambda g: g,                                         # (H, W)
    lambda g: g[..., None],                              # (H, W, 1)
    lambda g: cv2.cvtColor(g, cv2.COLOR_GRAY2BGRA),      # (H, W, 4)
], ids=["gray2d", "gray3d", "bgra"])
def test_grayscale_and_bgra_are_converted(make):
    gray = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    out, info = letterbox(make(gray), 64)
    expected, _ = letterbox(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 64)
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, expected)
    assert to_bgr(make(gray)).shape == (48, 64, 3)


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 10, 3), np.uint8), "non-empty"),
    (np.zeros((10, 0), np.uint8), "non-empty"),
    (np.zeros((10, 10, 3), np.float32), "expected dtype uint8, got float32"),
    (np.zeros((10, 10, 3), np.uint16), "expected dtype uint8, got uint16"),
    (np.zeros((10, 10, 2), np.uint8), "expected 1, 3 or 4 channels, got 2"),
    (np.zeros(10, np.uint8), "got shape (10,)"),
    ([[1, 2], [3, 4]], "got list"),
])
def test_invalid_images_raise_data_error(image, message):
    with pytest.raises(DataError, match=None) as err:
        preprocess([image], 64)
    assert message in str(err.value)


def test_empty_list_and_bad_format():
    with pytest.raises(DataError, match="at least one image"):
        preprocess([], 640)
    with pytest.raises(ValueError, match="fmt"):
        preprocess(np.zeros((8, 8, 3), np.uint8), 64, fmt="nchw")


@pytest.mark.parametrize("hw, stride, force, message", [
    ((100000, 100000), 32, False, "imgsz: expected sides of at most 4096 px (--force-imgsz to go beyond), got "
                                  "100000x100000"),
    ((640, 4128), 32, False, "got 640x4128"),
    ((641, 640), 32, False, "imgsz: expected positive multiples of the model stride 32, got 641x640"),
    ((0, 640), 32, True, "got 0x640"),
])
def test_check_imgsz_errors(hw, stride, force, message):
    with pytest.raises(ConfigError) as err:
        check_imgsz(hw, stride, force)
    assert message in str(err.value)


def test_check_imgsz_cap_and_force():
    assert MAX_IMGSZ == 4096
    assert check_imgsz((4096, 384)) == (4096, 384)
    assert check_imgsz((8192, 8192), force=True) == (8192, 8192)


# --- letterbox / preprocess straight into preallocated buffers ------------------------------------------------

@pytest.mark.parametrize("shape, target, auto", [((720, 1280), (640, 640), False), ((720, 1280), (640, 640), True),
                                                 ((480, 360), (640, 640), False), ((640, 640), (640, 640), False)])
def test_letterbox_into_buffer_is_byte_identical(shape, target, auto):
    from edge_detect.preprocess import letterbox

    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    want, info = letterbox(img, target, auto=auto)
    out = np.full((2, *want.shape), 7, np.uint8)  # a row of a batch, dirty from a previous frame
    got, info2 = letterbox(img, target, auto=auto, out=out[1])
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(out[1], want)
    assert info2 == info
    assert (out[0] == 7).all()  # the other row untouched


@pytest.mark.parametrize("fmt, dtype", [("uint8_nhwc_bgr", np.uint8), ("float32_nchw_rgb", np.float32),
                                        ("float32_nchw_rgb", np.float16)])
def test_preprocess_into_matches_copying_path(fmt, dtype):
    from edge_detect.preprocess import preprocess

    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(2)]
    want, infos = preprocess(imgs, (384, 640), fmt=fmt, dtype=np.float32 if dtype == np.uint8 else dtype)
    out = np.zeros(want.shape, want.dtype)
    got, infos2 = preprocess(imgs, (384, 640), fmt=fmt, dtype=np.float32 if dtype == np.uint8 else dtype, out=out)
    assert got is out and infos2 == infos
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt, shape, dtype", [
    ("uint8_nhwc_bgr", (1, 640, 640, 3), np.float32),   # wrong dtype
    ("uint8_nhwc_bgr", (1, 384, 640, 3), np.uint8),     # wrong size for a square letterbox... of 640x640
    ("float32_nchw_rgb", (1, 640, 640, 3), np.float32),  # NHWC given for NCHW
    ("uint8_nhwc_bgr", (0, 640, 640, 3), np.uint8),     # no row for the image
])
def test_preprocess_into_rejects_bad_buffers(fmt, shape, dtype):
    from edge_detect.preprocess import preprocess

    img = np.zeros((720, 1280, 3), np.uint8)
    out = np.zeros(shape, dtype)
    if shape == (1, 384, 640, 3):  # a 384x640 buffer while auto letterbox of a 4:3 frame needs 480x640
        img = np.zeros((480, 640, 3), np.uint8)
        with pytest.raises(ValueError, match=r"expected a uint8 array of shape \(480, 640, 3\)"):
            preprocess([img], (640, 640), auto=True, fmt=fmt, out=out)
        return
    with pytest.raises(ValueError, match="preprocess out: expected"):
        preprocess([img], (640, 640), fmt=fmt, out=out)
