"""The torch-free GPU letterbox kernel (for TensorRT / ONNX Runtime CUDA): its tables and its arithmetic, mirrored in
NumPy, give the host letterbox's bytes; the CUDA C compiles to PTX with NVRTC on the CPU; on a GPU it runs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_detect.backends.gpu_letterbox import _TABLES, KERNELS, resize_coefficients
from edge_detect.preprocess import letterbox, letterbox_borders, letterbox_shape, preprocess


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


def _kernel_in_numpy(src: np.ndarray, tables: np.ndarray, geometry) -> np.ndarray:
    """What ``letterbox_pixel`` computes for every output pixel (same flat table layout, same integer ops)."""
    (out_h, out_w), (uw, uh), (top, _, left, _) = geometry
    x0, x1, a0, a1 = (tables[k * uw:(k + 1) * uw].astype(np.int64) for k in range(4))
    y0, y1, b0, b1 = (tables[4 * uw + k * uh: 4 * uw + (k + 1) * uh].astype(np.int64) for k in range(4))
    s = src.astype(np.int64)
    h0 = s[y0][:, x0] * a0[None, :, None] + s[y0][:, x1] * a1[None, :, None]
    h1 = s[y1][:, x0] * a0[None, :, None] + s[y1][:, x1] * a1[None, :, None]
    v = (((b0[:, None, None] * (h0 >> 4)) >> 16) + ((b1[:, None, None] * (h1 >> 4)) >> 16) + 2) >> 2
    out = np.full((out_h, out_w, 3), 114, np.uint8)
    out[top:top + uh, left:left + uw] = np.clip(v, 0, 255)
    return out


def _flat(src_hw, unpad) -> np.ndarray:
    c = resize_coefficients(src_hw, (unpad[1], unpad[0]))
    return np.concatenate([c[k].astype(np.int32) for k in _TABLES])


@pytest.mark.parametrize("new_shape, auto", [((640, 640), False), ((640, 640), True), ((320, 320), False)])
def test_kernel_arithmetic_gives_the_host_letterbox(frames, new_shape, auto) -> None:
    for img in frames:
        geometry = _geometry(img, new_shape, auto)
        want, _ = letterbox(img, new_shape, auto=auto)
        np.testing.assert_array_equal(_kernel_in_numpy(img, _flat(img.shape[:2], geometry[1]), geometry), want)


def test_equal_sizes_are_the_identity() -> None:
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    c = resize_coefficients((64, 96), (64, 96))
    assert (c["a0"] == 2048).all() and (c["b1"] == 0).all()
    geometry = ((64, 96), (96, 64), (0, 0, 0, 0))
    np.testing.assert_array_equal(_kernel_in_numpy(img, _flat((64, 96), (96, 64)), geometry), img)


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
