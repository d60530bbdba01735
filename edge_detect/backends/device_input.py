"""The torch-free device input of the TensorRT and ONNX Runtime CUDA backends: frames -> letterboxed input batches in
device memory, with the NVRTC letterbox kernel (:mod:`edge_detect.backends.gpu_letterbox`), cuda-python and nothing
else (no torch, no CuPy).

What needs CUDA sits behind this one small interface, :class:`DeviceInput`:

* :meth:`DeviceInput.prepare` (the pipeline's preprocess thread): per frame, a host BGR ``uint8 (H, W, 3)`` array is
  copied into a page-locked staging buffer (a ring of 2 per frame size, so the host never overwrites a frame whose
  copy has not run yet) and from there, asynchronously on the input stream, to a device frame buffer; a frame that
  is already on the device (anything with the ``__cuda_array_interface__``: a decoder's surface, a CuPy array, a
  torch CUDA tensor) is read in place. The kernel letterboxes it into its row of the next batch of a ring of
  :data:`RING` device batches per ``(shape, dtype)``, in the backend's input format (``float32_nchw_rgb`` or
  ``uint8_nhwc_bgr``), the host letterbox's bytes. An event marks the end of the batch's work; nothing waits on the
  host.
* :meth:`DeviceInput.consume` (the inference thread): the backend's stream waits for that event (or the host does,
  for ONNX Runtime, whose stream is its own), optionally copies the batch into the engine's bound input
  (device to device), and records when the batch's buffer may be written again; the next :meth:`prepare` into that
  buffer waits for it on the device.

The ring rotates, as the :class:`~edge_detect.backends.base.DeviceBackend` contract allows (at most 3 batches
prepared or inferring at once; a batch the pipeline drops is never given back).

The kernel launcher is :class:`~edge_detect.backends.gpu_letterbox.GpuLetterbox` (``launcher=`` takes anything
with the same ``__call__(src_ptr, src_hw, pitch, dst_ptr, row, fmt, geometry, stream)`` and ``close()``: the tests'
double runs the kernel's arithmetic in NumPy on the CUDA double's memory, ``pytest -m gpu`` runs the kernel).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edge_detect.backends import _cuda
from edge_detect.backends.base import DeviceBatch
from edge_detect.backends.gpu_letterbox import KERNELS
from edge_detect.errors import ConfigError, DataError
from edge_detect.preprocess import plan_letterbox, to_bgr

__all__ = ["DeviceInput", "CudaBatch", "RING", "device_frame"]

LOGGER = logging.getLogger(__name__)

RING = 4  #: device batches per (shape, dtype): one filling, one queued, one inferring, one spare


@dataclass
class _Slot:
    buffer: _cuda.DeviceBuffer
    ready: _cuda.Event
    free: Optional[_cuda.Event] = None  # recorded by the consumer once it no longer reads the buffer
    freed: bool = False  # ``free`` was recorded (else the slot is new or its batch was dropped)


@dataclass
class CudaBatch:
    """A letterboxed batch in device memory (``DeviceBatch.data`` of the TensorRT / ONNX Runtime device paths).

    Attributes:
        ptr: device address of the C-contiguous batch.
        shape: ``(B, 3, h, w)`` (``float32_nchw_rgb``) or ``(B, h, w, 3)`` (``uint8_nhwc_bgr``); rows past the
            images (padding of a static batch) hold whatever the buffer held.
        dtype: ``float32`` or ``uint8``.
        images: real images in it (its first rows).
    """

    ptr: int
    shape: Tuple[int, ...]
    dtype: np.dtype
    images: int
    _slot: _Slot = field(repr=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def device_frame(frame: Any) -> Optional[Tuple[int, Tuple[int, int], int]]:
    """``(device pointer, (h, w), row pitch in bytes)`` of a BGR ``uint8 (H, W, 3)`` frame in device memory
    (``__cuda_array_interface__``), or ``None`` for a host array.

    Raises:
        DataError: a device frame of another dtype or layout (pixels must be packed ``3`` bytes, rows may be
            padded).
    """
    cai = getattr(frame, "__cuda_array_interface__", None)
    if cai is None:
        return None
    shape, typestr, strides = tuple(cai["shape"]), str(cai["typestr"]), cai.get("strides")
    pitch = None
    if len(shape) == 3 and shape[2] == 3 and typestr.endswith("u1"):
        pitch = shape[1] * 3 if strides is None else int(strides[0]) if tuple(strides[1:]) == (3, 1) else None
    if pitch is None or min(shape[:2]) <= 0:
        raise DataError(f"device frame: expected a BGR uint8 (H, W, 3) array with packed pixels, got typestr "
                        f"{typestr!r}, shape {shape}, strides {strides}")
    return int(cai["data"][0]), (int(shape[0]), int(shape[1])), pitch


class DeviceInput:
    """Letterboxed input batches in device memory for one backend (see the module doc).

    Args:
        device: CUDA device index.
        fmt: the backend's input format (``float32_nchw_rgb`` or ``uint8_nhwc_bgr``).
        dtype: the input dtype (``float32`` for ``float32_nchw_rgb``, ``uint8`` for ``uint8_nhwc_bgr``).
        launcher: the kernel launcher (default: :class:`~edge_detect.backends.gpu_letterbox.GpuLetterbox` on
            ``device``).
        ring: device batches per ``(shape, dtype)``.

    Raises:
        ConfigError: a format / dtype the kernel does not write (e.g. a float16 input: export it with float32
            inputs, or use the host path). MissingDependencyError / BackendUnavailableError / RuntimeError: no
            cuda-python, no driver, or NVRTC failed (from the launcher).
    """

    def __init__(self, device: int, fmt: str, dtype: Any, launcher: Any = None, ring: int = RING) -> None:
        want = {"float32_nchw_rgb": np.dtype(np.float32), "uint8_nhwc_bgr": np.dtype(np.uint8)}
        if fmt not in KERNELS or np.dtype(dtype) != want[fmt]:
            raise ConfigError(f"device path: expected a float32_nchw_rgb float32 or uint8_nhwc_bgr uint8 input, got "
                              f"{fmt} {np.dtype(dtype)} (export the model with a float32 or uint8 input, or use the "
                              f"host path: device_path=False)")
        self.device, self.fmt, self.dtype = int(device), fmt, np.dtype(dtype)
        self.ring_size = max(2, int(ring))
        _cuda.set_device(self.device)
        if launcher is None:
            from edge_detect.backends.gpu_letterbox import GpuLetterbox

            launcher = GpuLetterbox(self.device)
        self.launcher = launcher
        self.stream = _cuda.Stream()
        self._rings: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
        self._frames: Dict[Tuple[int, int], Dict[str, Any]] = {}

    # ------------------------------------------------------------------------------------------ preprocess
    def prepare(self, images: Sequence[Any], input_hw: Tuple[int, int], stride: int, auto: bool,
                rows: Optional[int] = None) -> DeviceBatch:
        """Queue the upload and letterbox of ``images`` into the next ring batch; returns at once.

        Args:
            images: host BGR ``uint8 (H, W, 3)`` arrays (grayscale / BGRA converted on the host first) and/or
                device frames (:func:`device_frame`), valid until this call returns (a device frame: until the
                batch's letterbox ran; the input stream reads it).
            input_hw, stride, auto: as :meth:`~edge_detect.backends.base.DeviceBackend.preprocess_device`.
            rows: batch rows (a static batch larger than the images; default: one per image).

        Returns:
            A :class:`~edge_detect.backends.base.DeviceBatch` whose ``data`` is a :class:`CudaBatch`.

        Raises:
            DataError: no images, an invalid one, or more images than ``rows``.
        """
        if not images:
            raise DataError("device preprocess: expected at least one image, got an empty list")
        on_device = [device_frame(f) for f in images]  # (pointer, (h, w), pitch) or None for a host frame
        frames = [f if d is not None else to_bgr(f) for f, d in zip(images, on_device)]
        hws = [d[1] if d is not None else tuple(f.shape[:2]) for f, d in zip(frames, on_device)]
        plans = plan_letterbox(hws, input_hw, stride, auto)
        n = len(frames) if rows is None else int(rows)
        if n < len(frames):
            raise DataError(f"device preprocess: expected at most {n} images per batch, got {len(frames)}")
        h, w = plans[0].out_hw
        shape = (n, 3, h, w) if self.fmt == "float32_nchw_rgb" else (n, h, w, 3)
        _cuda.set_device(self.device)  # per thread: this runs on the preprocess thread
        slot = self._acquire(shape)
        if slot.free is not None and slot.freed:
            self.stream.wait(slot.free)  # the last consumer of this buffer has read it
        for row, (frame, where, plan) in enumerate(zip(frames, on_device, plans)):
            ptr, hw, pitch = where or self._upload(frame)
            self.launcher(ptr, hw, pitch, slot.buffer.ptr, row, self.fmt, plan.geometry, self.stream.handle)
        slot.ready.record(self.stream)
        slot.freed = False
        data = CudaBatch(slot.buffer.ptr, shape, self.dtype, len(frames), slot)
        return DeviceBatch(data=data, device=f"cuda:{self.device}", infos=[p.info for p in plans])

    def _acquire(self, shape: Tuple[int, ...]) -> _Slot:
        """The next ring batch for ``shape`` (buffers allocated on first use)."""
        ring = self._rings.get(shape)
        if ring is None:
            nbytes = int(np.prod(shape)) * self.dtype.itemsize
            ring = self._rings[shape] = {"next": 0, "slots": [_Slot(_cuda.DeviceBuffer(nbytes), _cuda.Event())
                                                              for _ in range(self.ring_size)]}
        slot = ring["slots"][ring["next"]]
        ring["next"] = (ring["next"] + 1) % len(ring["slots"])
        return slot

    def _upload(self, image: np.ndarray) -> Tuple[int, Tuple[int, int], int]:
        """``image`` copied into page-locked staging, then asynchronously to its device frame buffer; returns that
        buffer's ``(pointer, (h, w), pitch)``."""
        hw = (int(image.shape[0]), int(image.shape[1]))
        st = self._frames.get(hw)
        if st is None:
            nbytes = hw[0] * hw[1] * 3
            st = self._frames[hw] = {"host": [_cuda.HostBuffer(nbytes) for _ in range(2)],
                                     "copied": [_cuda.Event() for _ in range(2)], "used": [False, False],
                                     "device": _cuda.DeviceBuffer(nbytes), "next": 0}
        k = st["next"]
        st["next"] = 1 - k
        if st["used"][k]:
            st["copied"][k].synchronize()  # the host buffer's previous copy has run
        host = st["host"][k]
        np.copyto(host.array.reshape(hw[0], hw[1], 3), image)
        self.stream.copy_htod(st["device"], host, host.nbytes)  # the kernel that reads it follows on this stream
        st["copied"][k].record(self.stream)
        st["used"][k] = True
        return st["device"].ptr, hw, hw[1] * 3

    # ------------------------------------------------------------------------------------------ consume
    def consume(self, data: CudaBatch, stream: Optional[_cuda.Stream] = None, dst: Any = None) -> None:
        """Hand the batch to its inference.

        Args:
            data: a batch from :meth:`prepare`.
            stream: the inference's stream: it waits for the batch's letterbox on the device, the optional copy
                runs on it and the buffer is free once the stream passed it. ``None``: the host waits for the
                letterbox (a runtime with its own stream, such as ONNX Runtime) and the buffer is free when the
                caller's (synchronous) inference returned.
            dst: the engine's bound input (a :class:`~edge_detect.backends._cuda.DeviceBuffer` or
                :class:`~edge_detect.backends._cuda.ManagedBuffer` of at least :attr:`CudaBatch.nbytes`): the batch
                is copied there, device to device, on ``stream``.
        """
        slot = data._slot
        if stream is None:
            slot.ready.synchronize()
            slot.free, slot.freed = None, False
            return
        stream.wait(slot.ready)
        if dst is not None:
            stream.copy_dtod(dst, slot.buffer, data.nbytes)
        if slot.free is None:
            slot.free = _cuda.Event()
        slot.free.record(stream)
        slot.freed = True

    def close(self) -> None:
        """Free the buffers, events, stream and the launcher (idempotent)."""
        for ring in self._rings.values():
            for slot in ring["slots"]:
                for owner in (slot.buffer, slot.ready, slot.free):
                    if owner is not None:
                        owner.close()
        for st in self._frames.values():
            for owner in (*st["host"], *st["copied"], st["device"]):
                owner.close()
        self._rings.clear()
        self._frames.clear()
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None
        self.stream.close()
