"""A double of the GPU letterbox kernel launcher (:class:`edge_detect.backends.gpu_letterbox.GpuLetterbox`): the
kernel's arithmetic in NumPy (:func:`kernel_in_numpy`, the same flat tables and integer operations as the CUDA C),
launched on a stream of the CUDA runtime double (:class:`cuda_double.FakeCudart`), so it runs when that stream
runs (deferred, in order with the copies) and reads and writes the double's device memory. Launching with a source
or destination outside a live device allocation fails as an illegal address would."""
from __future__ import annotations

import ctypes
from typing import Any, List, Tuple

import numpy as np

from edge_detect.backends.gpu_letterbox import _TABLES, KERNELS, resize_coefficients

__all__ = ["kernel_in_numpy", "flat_tables", "NumpyLetterbox"]


def flat_tables(src_hw, unpad) -> np.ndarray:
    """The kernel's int32 table block for ``src_hw -> unpad`` (``(w, h)``): x0, x1, a0, a1, y0, y1, b0, b1."""
    c = resize_coefficients(src_hw, (unpad[1], unpad[0]))
    return np.concatenate([c[k].astype(np.int32) for k in _TABLES])


def kernel_in_numpy(src: np.ndarray, tables: np.ndarray, geometry) -> np.ndarray:
    """What ``letterbox_pixel`` computes for every output pixel: BGR ``uint8 (out_h, out_w, 3)``."""
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


def _view(ptr: int, nbytes: int) -> np.ndarray:
    return np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), dtype=np.uint8)


class NumpyLetterbox:
    """``GpuLetterbox``'s call signature over :class:`cuda_double.FakeCudart` (see the module doc)."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.launches: List[Tuple[int, str]] = []  # (row, fmt) per launch
        self.closed = False

    def _check(self, ptr: int, nbytes: int, what: str) -> None:
        alloc = self.rt.find(ptr, nbytes)
        if alloc is None or alloc.kind not in ("device", "managed"):
            self.rt.problems.append(f"letterbox kernel: {what} ({nbytes} bytes at {ptr:#x}) outside device memory")
            from edge_detect.backends._cuda import CudaError

            raise CudaError("cuLaunchKernel(letterbox) failed: CUDA_ERROR_ILLEGAL_ADDRESS")

    def __call__(self, src_ptr: int, src_hw, pitch: int, dst_ptr: int, row: int, fmt: str, geometry,
                 stream: int = 0) -> None:
        assert fmt in KERNELS and not self.closed
        (out_h, out_w), unpad, _ = geometry
        h, w = (int(v) for v in src_hw)
        self._check(src_ptr, pitch * (h - 1) + w * 3, "source frame")
        row_bytes = out_h * out_w * 3 * (4 if fmt == "float32_nchw_rgb" else 1)
        self._check(dst_ptr + row * row_bytes, row_bytes, f"batch row {row}")
        tables = flat_tables((h, w), unpad)

        def work() -> None:
            raw = _view(src_ptr, pitch * (h - 1) + w * 3)
            src = np.lib.stride_tricks.as_strided(raw, (h, w, 3), (pitch, 3, 1))
            bgr = kernel_in_numpy(np.array(src), tables, geometry)
            out = _view(dst_ptr + row * row_bytes, row_bytes)
            if fmt == "float32_nchw_rgb":
                out.view(np.float32)[:] = (bgr[..., ::-1].transpose(2, 0, 1).astype(np.float32)
                                           / np.float32(255.0)).ravel()
            else:
                out[:] = bgr.ravel()

        error = self.rt.launch(stream, work, "letterbox")
        if error is not None:
            from edge_detect.backends._cuda import CudaError

            raise CudaError(f"cuLaunchKernel(letterbox) failed: {error}")
        self.launches.append((row, fmt))

    def close(self) -> None:
        self.closed = True
