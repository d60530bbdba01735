"""The torch-free GPU letterbox kernel (for TensorRT / ONNX Runtime CUDA): its tables and its arithmetic, mirrored in
NumPy, give the host letterbox's bytes; the CUDA C compiles to PTX with NVRTC on the CPU; on a GPU it runs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.backends.gpu_letterbox import KERNELS, resize_coefficients
from edge_detect.preprocess import letterbox, letterbox_borders, letterbox_shape, preprocess
from letterbox_double import flat_tables, kernel_in_numpy


@pytest.fixture(scope="module")
def frames(shared: Path) -> list:
    out = [cv2.imread(str(shared / "images" / n)) for n in ("bus.jpg", "zidane.jpg")]
    cap = cv2.VideoCapture(str(shared / "videos" / "vtest.avi"))
    out.append(cap.read()[1])
    cap.release()
    return out


def _geometry(img: np.ndarray, new_shape=(640, 640), auto: bool = False):
    _, (uw, uh), pad = letterbox_shape(img.shape[:2], new_shape, auto)
    top, bottom, left, right = letterbox_borders(pad)
    return (uh + top + bottom, uw + left + right), (uw, uh), (top, bottom, left, right)


@pytest.mark.parametrize("new_shape, auto", [((640, 640), False), ((640, 640), True), ((320, 320), False)])
def test_kernel_arithmetic_gives_the_host_letterbox(frames, new_shape, auto) -> None:
    for img in frames:
        geometry = _geometry(img, new_shape, auto)
        want, _ = letterbox(img, new_shape, auto=auto)
        np.testing.assert_array_equal(kernel_in_numpy(img, flat_tables(img.shape[:2], geometry[1]), geometry), want)


def test_equal_sizes_are_the_identity() -> None:
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    c = resize_coefficients((64, 96), (64, 96))
    assert (c["a0"] == 2048).all() and (c["b1"] == 0).all()
    geometry = ((64, 96), (96, 64), (0, 0, 0, 0))
    np.testing.assert_array_equal(kernel_in_numpy(img, flat_tables((64, 96), (96, 64)), geometry), img)


def test_kernel_compiles_to_ptx_without_a_gpu() -> None:
    pytest.importorskip("cuda.bindings.nvrtc")
    from edge_detect.backends.gpu_letterbox import compile_ptx

    try:
        ptx = compile_ptx().decode()
    except RuntimeError as exc:  # cuda-python without a loadable libnvrtc
        pytest.skip(f"NVRTC unavailable here: {exc}")
    for name in KERNELS.values():
        assert f".entry {name}(" in ptx
    assert "div.rn.f32" in ptx  # IEEE division: v / 255 rounds like NumPy's float32 division


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("fmt", sorted(KERNELS))
def test_kernel_on_the_gpu_equals_the_host_batch(frames, fmt: str) -> None:
    pytest.importorskip("cuda.bindings.driver")
    from edge_detect.backends import _cuda
    from edge_detect.backends.gpu_letterbox import GpuLetterbox

    try:
        _cuda.device_info(0)
    except Exception as exc:  # noqa: BLE001 - no GPU / driver: skip with the reason
        pytest.skip(f"no CUDA device: {exc}")
    want, _ = preprocess(frames, (640, 640), fmt=fmt)
    lb = GpuLetterbox(0)
    with _cuda.Stream() as stream, _cuda.DeviceBuffer(want.nbytes) as dst, _cuda.HostBuffer(want.nbytes) as out:
        srcs = []
        for row, img in enumerate(frames):
            src = _cuda.DeviceBuffer(img.nbytes)
            src.upload(np.ascontiguousarray(img))
            srcs.append(src)
            lb(int(src), img.shape[:2], img.shape[1] * 3, int(dst), row, fmt, _geometry(img), stream.handle)
        stream.copy_dtoh(out, dst, want.nbytes)
        stream.synchronize()
        got = out.array[:want.nbytes].view(want.dtype).reshape(want.shape)
        np.testing.assert_array_equal(got, want)
        for src in srcs:
            src.close()
    lb.close()
