"""GPU letterbox without torch, for the TensorRT and ONNX Runtime CUDA backends: one CUDA kernel (compiled at run
time with NVRTC through cuda-python, which the TensorRT backend already needs) that turns a BGR ``uint8`` frame in
device memory into one row of the model's input batch, bit-exact with the host's
:func:`edge_detect.preprocess.letterbox` + normalisation.

The arithmetic is OpenCV's ``INTER_LINEAR`` for ``uint8`` (:func:`resize_coefficients`: per output column the two
source columns and 11-bit weights, per output row the two source rows and weights; horizontal pass in int32,
vertical pass ``(((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2``), pad value 114 and the YOLOv5 border
rounding, then either ``float32 NCHW RGB / 255`` (IEEE division, as NumPy's) or ``uint8 NHWC BGR``. The torch device
path (:mod:`edge_detect.training.device_pipeline`) runs the same arithmetic with tensor ops and is checked against
``cv2.resize`` on the CPU; this kernel is compiled to PTX on the CPU by the tests and run by ``pytest -m gpu``.

Why a kernel (and not CuPy or a Resize node in the ONNX graph): see DEVELOPERS notes of issue 19 in the report;
in short, no new dependency, bit-exact detections with the host path, one kernel for TensorRT and ONNX Runtime (IO
binding), frame sizes free at run time (no engine per camera resolution), and its launch can sit in the same CUDA
graph as the engine.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edge_detect._optional import require

__all__ = ["resize_coefficients", "KERNEL_SOURCE", "KERNELS", "compile_ptx", "GpuLetterbox"]

LOGGER = logging.getLogger(__name__)

COEF_SCALE = 2048  #: OpenCV's INTER_RESIZE_COEF_SCALE (11-bit fixed-point bilinear weights)
_TABLES = ("x0", "x1", "a0", "a1", "y0", "y1", "b0", "b1")


def _axis(src: int, dst: int, clip_weight: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``(i0, i1)`` and fixed-point weights ``(w0, w1)`` of one axis, as OpenCV computes them.

    ``f = float32((d + 0.5) * src / dst - 0.5)``; ``i0 = floor(f)``; weights ``rint((1 - frac) * 2048)`` and
    ``rint(frac * 2048)`` in float32. Columns (``clip_weight``) outside the image take the edge pixel with weight
    2048; rows keep their fraction and only the indices are clamped (OpenCV's vertical pass).
    """
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    i0 = np.floor(f)
    frac = (f - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    if clip_weight:
        low, high = i0 < 0, i0 >= src - 1
        frac[low | high] = 0
        i0[low], i0[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - frac) * np.float32(COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(COEF_SCALE)).astype(np.int32)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def resize_coefficients(src_hw: Tuple[int, int], dst_hw: Tuple[int, int]) -> Dict[str, np.ndarray]:
    """The gather indices and weights of OpenCV's ``INTER_LINEAR`` ``uint8`` resize ``src_hw -> dst_hw``.

    Args:
        src_hw, dst_hw: ``(h, w)`` of the source image and of the resized image.

    Returns:
        ``{"x0", "x1", "y0", "y1"}`` int64 source indices (columns ``(w',)``, rows ``(h',)``) and
        ``{"a0", "a1", "b0", "b1"}`` int32 weights (each pair sums to 2048). Equal source and destination sizes give
        the identity (weights 2048 / 0).
    """
    x0, x1, a0, a1 = _axis(int(src_hw[1]), int(dst_hw[1]), clip_weight=True)
    y0, y1, b0, b1 = _axis(int(src_hw[0]), int(dst_hw[0]), clip_weight=False)
    return {"x0": x0, "x1": x1, "a0": a0, "a1": a1, "y0": y0, "y1": y1, "b0": b0, "b1": b1}


KERNEL_SOURCE = r"""
// One thread per output pixel of one batch row. tables: x0, x1, a0, a1 (uw ints each), y0, y1, b0, b1 (uh each).
__device__ __forceinline__ void letterbox_pixel(
        const unsigned char* src, int pitch, const int* tables, int uh, int uw, int top, int left,
        int ox, int oy, int* bgr) {
    bgr[0] = 114; bgr[1] = 114; bgr[2] = 114;
    int rx = ox - left, ry = oy - top;
    if (rx < 0 || rx >= uw || ry < 0 || ry >= uh) return;
    const int *x0 = tables, *x1 = tables + uw, *a0 = tables + 2 * uw, *a1 = tables + 3 * uw;
    const int *y0 = tables + 4 * uw, *y1 = y0 + uh, *b0 = y0 + 2 * uh, *b1 = y0 + 3 * uh;
    const unsigned char* r0 = src + (long long)y0[ry] * pitch;
    const unsigned char* r1 = src + (long long)y1[ry] * pitch;
    int xa = 3 * x0[rx], xb = 3 * x1[rx], wa = a0[rx], wb = a1[rx], ba = b0[ry], bb = b1[ry];
    for (int c = 0; c < 3; ++c) {
        int h0 = r0[xa + c] * wa + r0[xb + c] * wb;
        int h1 = r1[xa + c] * wa + r1[xb + c] * wb;
        int v = (((ba * (h0 >> 4)) >> 16) + ((bb * (h1 >> 4)) >> 16) + 2) >> 2;
        bgr[c] = v < 0 ? 0 : (v > 255 ? 255 : v);
    }
}

extern "C" __global__ void letterbox_f32_nchw_rgb(
        const unsigned char* src, int pitch, const int* tables, int uh, int uw, int top, int left,
        float* dst, int row, int out_h, int out_w) {
    int ox = blockIdx.x * blockDim.x + threadIdx.x, oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    int bgr[3];
    letterbox_pixel(src, pitch, tables, uh, uw, top, left, ox, oy, bgr);
    long long plane = (long long)out_h * out_w, at = (long long)row * 3 * plane + (long long)oy * out_w + ox;
    dst[at] = (float)bgr[2] / 255.0f;  // IEEE division (NVRTC's default -prec-div=true), like NumPy's
    dst[at + plane] = (float)bgr[1] / 255.0f;
    dst[at + 2 * plane] = (float)bgr[0] / 255.0f;
}

extern "C" __global__ void letterbox_u8_nhwc_bgr(
        const unsigned char* src, int pitch, const int* tables, int uh, int uw, int top, int left,
        unsigned char* dst, int row, int out_h, int out_w) {
    int ox = blockIdx.x * blockDim.x + threadIdx.x, oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    int bgr[3];
    letterbox_pixel(src, pitch, tables, uh, uw, top, left, ox, oy, bgr);
    long long at = (((long long)row * out_h + oy) * out_w + ox) * 3;
    dst[at] = (unsigned char)bgr[0];
    dst[at + 1] = (unsigned char)bgr[1];
    dst[at + 2] = (unsigned char)bgr[2];
}
"""

#: input format -> kernel name
KERNELS = {"float32_nchw_rgb": "letterbox_f32_nchw_rgb", "uint8_nhwc_bgr": "letterbox_u8_nhwc_bgr"}


def _nvrtc_check(nvrtc: Any, result: Any, prog: Any = None) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = ""
        if prog is not None:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            buf = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, buf)
            log = buf.decode(errors="replace").strip().replace("\n", " | ")
        raise RuntimeError(f"NVRTC: {err.name}{': ' + log if log else ''}")
    return rest[0] if len(rest) == 1 else rest


def compile_ptx(arch: Optional[str] = None) -> bytes:
    """:data:`KERNEL_SOURCE` compiled to PTX with NVRTC (no GPU needed; cuda-python and libnvrtc are).

    Args:
        arch: ``--gpu-architecture`` (a virtual ``compute_XY``); default: the oldest this NVRTC supports (the
            driver JIT-compiles PTX forward for the GPU at hand: compute_75 with CUDA 13, compute_50 with CUDA 12).

    Raises:
        MissingDependencyError: cuda-python is not installed. RuntimeError: NVRTC failed (its log in one line).
    """
    nvrtc = require("cuda.bindings.nvrtc", "tensorrt", package="cuda-python")
    if arch is None:
        archs = _nvrtc_check(nvrtc, nvrtc.nvrtcGetSupportedArchs())
        arch = f"compute_{min(int(a) for a in archs)}"
    prog = _nvrtc_check(nvrtc, nvrtc.nvrtcCreateProgram(KERNEL_SOURCE.encode(), b"letterbox.cu", 0, [], []))
    try:
        opts = [b"--std=c++14", f"--gpu-architecture={arch}".encode()]
        _nvrtc_check(nvrtc, nvrtc.nvrtcCompileProgram(prog, len(opts), opts), prog)
        size = _nvrtc_check(nvrtc, nvrtc.nvrtcGetPTXSize(prog))
        ptx = b" " * size
        _nvrtc_check(nvrtc, nvrtc.nvrtcGetPTX(prog, ptx))
        return ptx
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


class GpuLetterbox:
    """Launches the letterbox kernel on a CUDA stream: a BGR ``uint8`` frame in device memory -> one row of a device
    input batch (``float32_nchw_rgb`` or ``uint8_nhwc_bgr``), the host letterbox's bytes.

    Args:
        device: CUDA device index (its primary context, the one the CUDA runtime and TensorRT use).

    The per-shape tables (:func:`resize_coefficients`, int32) are uploaded once per ``(frame size, resized size)``
    and kept. Use: ``lb(src_ptr, (h, w), pitch, dst_ptr, row, fmt, geometry, stream_handle)`` with ``geometry`` =
    ``(out_hw, (uw, uh), (top, bottom, left, right))`` from :func:`edge_detect.preprocess.letterbox_shape` and
    :func:`~edge_detect.preprocess.letterbox_borders`.
    """

    def __init__(self, device: int = 0) -> None:
        from edge_detect.backends import _cuda

        self._cuda = _cuda
        self._drv = require("cuda.bindings.driver", "tensorrt", package="cuda-python")
        _cuda.set_device(device)
        _cuda.call("cudaFree", 0)  # makes the runtime's primary context current for the driver calls below
        self._check(self._drv.cuInit(0), "cuInit")
        self._module = self._check(self._drv.cuModuleLoadData(compile_ptx()), "cuModuleLoadData")
        self._kernels = {fmt: self._check(self._drv.cuModuleGetFunction(self._module, name.encode()),
                                          f"cuModuleGetFunction({name})") for fmt, name in KERNELS.items()}
        self._tables: Dict[Tuple[Any, ...], Any] = {}

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result
        if err != self._drv.CUresult.CUDA_SUCCESS:
            raise self._cuda.CudaError(f"{what} failed: {err.name}")
        return rest[0] if rest else None

    def tables(self, src_hw: Tuple[int, int], unpad_wh: Tuple[int, int]) -> Any:
        """The device tables for ``src_hw -> unpad`` (``(w, h)``, OpenCV order), uploaded on first use."""
        key = (tuple(int(v) for v in src_hw), tuple(int(v) for v in unpad_wh))
        if key not in self._tables:
            c = resize_coefficients(key[0], (key[1][1], key[1][0]))
            flat = np.concatenate([c[k].astype(np.int32) for k in _TABLES])
            buf = self._cuda.DeviceBuffer(flat.nbytes)
            buf.upload(flat)
            self._tables[key] = buf
        return self._tables[key]

    def __call__(self, src_ptr: int, src_hw: Tuple[int, int], pitch: int, dst_ptr: int, row: int, fmt: str,
                 geometry: Tuple[Any, Any, Any], stream: int = 0) -> None:
        """Queue the letterbox of one frame into row ``row`` of the batch at ``dst_ptr`` on ``stream``."""
        (out_h, out_w), (uw, uh), (top, _, left, _) = geometry
        tables = self.tables(src_hw, (uw, uh))
        values = [(src_ptr, np.uint64), (pitch, np.int32), (int(tables), np.uint64), (uh, np.int32), (uw, np.int32),
                  (top, np.int32), (left, np.int32), (dst_ptr, np.uint64), (row, np.int32), (out_h, np.int32),
                  (out_w, np.int32)]
        args = [np.array([int(v)], dtype=t) for v, t in values]
        params = np.array([a.ctypes.data for a in args], dtype=np.uint64)
        grid = ((out_w + 31) // 32, (out_h + 7) // 8, 1)
        self._check(self._drv.cuLaunchKernel(self._kernels[fmt], *grid, 32, 8, 1, 0, self._drv.CUstream(int(stream)),
                                             params.ctypes.data, 0), "cuLaunchKernel(letterbox)")

    def close(self) -> None:
        """Free the tables and unload the module."""
        for buf in self._tables.values():
            buf.close()
        self._tables.clear()
        if self._module is not None:
            self._drv.cuModuleUnload(self._module)
            self._module = None
