"""Buffer planning for engine I/O: dtypes, byte sizes, shape checks, optimization profiles, output order."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.backends.buffers import (ShapeProfile, TensorSpec, order_outputs, plan_allocations,
                                          to_numpy_dtype, view, volume)
from edge_detect.errors import DataError, ModelLoadError


@pytest.mark.parametrize("name, expected", [
    ("FLOAT", np.float32), ("DataType.FLOAT", np.float32), ("HALF", np.float16), ("kHALF", np.float16),
    ("INT32", np.int32), ("DataType.INT64", np.int64), ("UINT8", np.uint8), ("int8", np.int8),
    ("BOOL", np.bool_), ("float16", np.float16), (np.uint8, np.uint8),
])
def test_dtype_names(name, expected) -> None:
    assert to_numpy_dtype(name) == np.dtype(expected)


@pytest.mark.parametrize("name", ["BF16", "DataType.FP8", "INT4", "complex"])
def test_unsupported_dtype_names(name) -> None:
    with pytest.raises(ModelLoadError, match=f"got {name!r}"):
        to_numpy_dtype(name)


def test_volume_and_nbytes() -> None:
    assert volume((1, 3, 640, 640)) == 1228800 and volume(()) == 1
    spec = TensorSpec("images", (1, 3, 640, 640), "FLOAT", True)
    assert spec.nbytes() == 4915200  # float32 1x3x640x640
    assert TensorSpec("images", (1, 640, 640, 3), "UINT8", True).nbytes() == 1228800  # 4x fewer bytes
    assert TensorSpec("output0", (1, 25200, 85), "HALF", False).nbytes() == 4284000
    with pytest.raises(DataError, match=r"expected concrete dimensions >= 0, got \(-1, 3, 640, 640\)"):
        TensorSpec("images", (-1, 3, 640, 640), "FLOAT", True).nbytes()


@pytest.mark.parametrize("spec_shape, shape, ok", [
    ((1, 3, 640, 640), (1, 3, 640, 640), True),
    ((-1, 3, -1, -1), (4, 3, 320, 480), True),
    ((1, 3, 640, 640), (2, 3, 640, 640), False),   # static batch differs
    ((-1, 3, -1, -1), (1, 640, 640, 3), False),    # NHWC fed to NCHW
    ((-1, 3, -1, -1), (1, 3, 640), False),         # rank
])
def test_spec_check(spec_shape, shape, ok) -> None:
    spec = TensorSpec("images", spec_shape, "FLOAT", True)
    if ok:
        assert spec.check(shape) == shape
    else:
        with pytest.raises(DataError, match=r"tensor 'images': expected shape .*, got "):
            spec.check(shape)


def test_profile_contains_and_check() -> None:
    p = ShapeProfile.parse({"min": (1, 3, 320, 320), "opt": (1, 3, 640, 640), "max": (8, 3, 640, 640)})
    assert p.contains((4, 3, 480, 640)) and not p.contains((9, 3, 640, 640)) and not p.contains((1, 3, 160, 320))
    assert p == ShapeProfile.parse([(1, 3, 320, 320), (1, 3, 640, 640), (8, 3, 640, 640)])
    with pytest.raises(DataError) as info:
        p.check("images", (16, 3, 640, 640))
    assert str(info.value) == ("input 'images': shape (16, 3, 640, 640) is outside the engine's optimization "
                               "profile (min (1, 3, 320, 320), max (8, 3, 640, 640))")
    assert p.to_dict() == {"min": [1, 3, 320, 320], "opt": [1, 3, 640, 640], "max": [8, 3, 640, 640]}
    assert ShapeProfile.static((1, 3, 64, 64)).contains((1, 3, 64, 64))


@pytest.mark.parametrize("value, message", [
    ({"min": (1, 3, 640, 640), "max": (1, 3, 640, 640)}, "missing ['opt']"),
    ([(1, 3, 640, 640), (1, 3, 640, 640)], "expected (min, opt, max), got 2 shapes"),
    ([(1, 3, 640), (1, 3, 640, 640), (1, 3, 640, 640)], "expected min/opt/max of one rank"),
    ([(2, 3, 640, 640), (1, 3, 640, 640), (4, 3, 640, 640)], "expected 0 < min <= opt <= max"),
    ([(0, 3, 640, 640), (1, 3, 640, 640), (4, 3, 640, 640)], "expected 0 < min <= opt <= max"),
])
def test_bad_profiles(value, message) -> None:
    with pytest.raises(DataError) as info:
        ShapeProfile.parse(value)
    assert message in str(info.value)


def test_profile_fits_spec() -> None:
    spec = TensorSpec("images", (-1, 3, -1, -1), "FLOAT", True)
    ShapeProfile.static((1, 3, 640, 640)).fits(spec)
    with pytest.raises(DataError, match="expected shape"):
        ShapeProfile.static((1, 4, 640, 640)).fits(spec)


def test_plan_allocations_for_dynamic_engine() -> None:
    specs = [TensorSpec("images", (-1, 3, -1, -1), "FLOAT", True),
             TensorSpec("output0", (-1, -1, 85), "FLOAT", False),
             TensorSpec("num_dets", (4, 1), "INT32", False),
             TensorSpec("empty", (0, 4), "FLOAT", False)]
    plan = plan_allocations(specs, {"images": (4, 3, 640, 640), "output0": (4, 25200, 85)})
    assert list(plan) == ["images", "output0", "num_dets", "empty"]
    assert plan["images"].nbytes == 4 * 3 * 640 * 640 * 4 == 19660800
    assert plan["output0"].nbytes == 4 * 25200 * 85 * 4 and plan["output0"].max_shape == (4, 25200, 85)
    assert plan["num_dets"].nbytes == 16 and not plan["num_dets"].is_input
    assert plan["empty"].nbytes == 1  # every tensor gets an address
    with pytest.raises(DataError, match=r"tensor 'output0': dynamic shape \(-1, -1, 85\) needs a max shape"):
        plan_allocations(specs, {"images": (4, 3, 640, 640)})
    with pytest.raises(DataError, match=r"tensor 'output0': expected shape \(\?, \?, 85\), got \(4, 25200, 84\)"):
        plan_allocations(specs, {"images": (4, 3, 640, 640), "output0": (4, 25200, 84)})


def test_view_shares_memory_and_checks_size() -> None:
    buf = np.zeros(4 * 2 * 3 + 7, np.uint8)
    v = view(buf, "FLOAT", (2, 3))
    v[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.shares_memory(v, buf) and v.dtype == np.float32
    np.testing.assert_array_equal(buf[:24].view(np.float32), np.arange(6, dtype=np.float32))
    assert view(buf, "INT32", (7, 1)).shape == (7, 1)  # 28 of 31 bytes
    with pytest.raises(DataError, match=r"expected >= 32 bytes .* got 31 bytes"):
        view(buf, "INT32", (8, 1))
    with pytest.raises(DataError, match="1-D uint8"):
        view(np.zeros(8, np.float32), "FLOAT", (2,))


@pytest.mark.parametrize("names, expected", [
    (["classes", "boxes", "num_dets", "scores"], ["num_dets", "boxes", "scores", "classes"]),
    (["detection_scores", "num_detections", "detection_classes", "detection_boxes"],
     ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]),
])
def test_order_nms_outputs(names, expected) -> None:
    assert order_outputs(names, "nms") == expected


@pytest.mark.parametrize("names, layout, message", [
    (["a", "b"], "raw", "raw output layout: expected 1 output, got 2"),
    (["num_dets", "boxes", "scores"], "nms", "expected one output named classes / detection_classes"),
    (["output0"], "yolo", "expected 'raw' or 'nms', got 'yolo'"),
])
def test_order_outputs_errors(names, layout, message) -> None:
    with pytest.raises(ModelLoadError) as info:
        order_outputs(names, layout)
    assert message in str(info.value)
    assert order_outputs(["output0"], "raw") == ["output0"]
