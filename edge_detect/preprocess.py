"""YOLOv5-exact letterbox and input normalization.

Letterboxing scales an image by one ratio ``r`` (same on both axes) so it fits the network input, then pads it
with grey (114) to the input size, centred. The arithmetic follows YOLOv5 exactly (``round`` of the scaled size,
``dw/2`` padding split with ``round(d - 0.1)`` / ``round(d + 0.1)``, ``cv2.INTER_LINEAR``), so the letterboxed
image is byte-identical to the reference implementation's. The inverse mapping lives in
:meth:`edge_detect.types.LetterboxInfo.to_original`.

Minimum-rectangle mode (``auto=True``, for models with dynamic height/width) pads only up to the next multiple
of ``stride``: a 1280x720 frame at 640 becomes 640x384 instead of 640x640.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_detect.errors import ConfigError, DataError
from edge_detect.metadata import INPUT_FORMATS
from edge_detect.types import LetterboxInfo

__all__ = ["letterbox", "preprocess", "to_bgr", "letterbox_shape", "letterbox_borders", "check_imgsz", "MAX_IMGSZ",
           "LetterboxPlan", "plan_letterbox"]

Shape = Union[int, Tuple[int, int]]

#: largest network input side accepted without ``force`` (``--force-imgsz``): one 4096x4096 float32 batch is
#: 200 MB, and the activations of a YOLOv5 model at that size already need several GB
MAX_IMGSZ = 4096


def check_imgsz(hw: Sequence[int], stride: int = 32, force: bool = False) -> Tuple[int, int]:
    """Validate a network input size ``(h, w)``: positive multiples of ``stride``, at most :data:`MAX_IMGSZ`.

    Args:
        hw: ``(h, w)`` in pixels.
        stride: the model's largest stride.
        force: allow sides above :data:`MAX_IMGSZ` (``--force-imgsz``).

    Raises:
        ConfigError: "expected ..., got ..." for a size that is not a positive multiple of ``stride`` or,
            unless ``force``, larger than :data:`MAX_IMGSZ`.
    """
    h, w = (int(v) for v in hw)
    if min(h, w) <= 0 or h % stride or w % stride:
        raise ConfigError(f"imgsz: expected positive multiples of the model stride {stride}, got {h}x{w}")
    if not force and max(h, w) > MAX_IMGSZ:
        raise ConfigError(f"imgsz: expected sides of at most {MAX_IMGSZ} px (--force-imgsz to go beyond), "
                          f"got {h}x{w}")
    return h, w


def _hw(shape: Shape) -> Tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        return int(shape), int(shape)
    h, w = shape
    return int(h), int(w)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Validate an input image and convert it to BGR ``uint8 (H, W, 3)``.

    Accepts BGR ``(H, W, 3)``, grayscale ``(H, W)`` or ``(H, W, 1)`` and BGRA ``(H, W, 4)``, all ``uint8``.

    Raises:
        DataError: not an array, not uint8, zero-size, or an unsupported number of channels.
    """
    if img is None:
        raise DataError("image: expected a numpy uint8 array (H, W, 3), got None (cv2.imread returns None for a "
                        "missing or undecodable file)")
    if not isinstance(img, np.ndarray):
        raise DataError(f"image: expected a numpy uint8 array (H, W, 3), got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise DataError(f"image: expected dtype uint8, got {img.dtype} (shape {img.shape})")
    if img.ndim not in (2, 3) or img.size == 0:
        raise DataError(f"image: expected a non-empty (H, W) or (H, W, C) array, got shape {img.shape}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 3:
        return img
    if channels == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    raise DataError(f"image: expected 1, 3 or 4 channels, got {channels} (shape {img.shape})")


def letterbox_shape(orig_hw: Tuple[int, int], new_shape: Shape = (640, 640), auto: bool = False,
                    scaleup: bool = True, stride: int = 32) -> Tuple[float, Tuple[int, int], Tuple[float, float]]:
    """The letterbox geometry without touching pixels.

    Args:
        orig_hw: ``(h, w)`` of the original image.
        new_shape: target ``(h, w)`` (or one int for a square).
        auto: minimum rectangle: pad only to the next multiple of ``stride``.
        scaleup: allow ``r > 1`` (if False, small images are only padded).
        stride: the model's largest stride.

    Returns:
        ``(r, (unpad_w, unpad_h), (dw, dh))``: the scale ratio, the resized size before padding (OpenCV
        ``(w, h)`` order) and the padding on each side (possibly a half pixel).
    """
    h, w = orig_hw
    nh, nw = _hw(new_shape)
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    unpad = (int(round(w * r)), int(round(h * r)))
    dw, dh = nw - unpad[0], nh - unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    return r, unpad, (dw / 2, dh / 2)


def letterbox(img: np.ndarray, new_shape: Shape = (640, 640), color: Tuple[int, int, int] = (114, 114, 114),
              auto: bool = False, scaleup: bool = True, stride: int = 32,
              out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, LetterboxInfo]:
    """Resize and pad ``img`` to ``new_shape`` keeping its aspect ratio (YOLOv5 arithmetic).

    Args:
        img: BGR ``uint8 (H, W, 3)`` (grayscale and BGRA are converted first, see :func:`to_bgr`).
        new_shape: target ``(h, w)`` or an int for a square.
        color: BGR pad value.
        auto: minimum rectangle (pad to a multiple of ``stride`` only).
        scaleup: allow enlarging images smaller than ``new_shape``.
        stride: stride for ``auto``.
        out: optional preallocated BGR ``uint8 (h', w', 3)`` array (a view into a batch buffer is fine, rows may
            be strided): the image is resized straight into it and only the borders are filled, with no
            intermediate image. Its shape must be the letterbox result's.

    Returns:
        ``(letterboxed, info)``: BGR ``uint8 (h', w', 3)`` (``out`` when given) and the :class:`LetterboxInfo` to
        map boxes back.

    Raises:
        DataError: invalid image (see :func:`to_bgr`).
        ValueError: ``out`` has another shape or dtype than the result.
    """
    img = to_bgr(img)
    orig_hw = (int(img.shape[0]), int(img.shape[1]))
    r, unpad, (dw, dh) = letterbox_shape(orig_hw, new_shape, auto, scaleup, stride)
    top, bottom, left, right = letterbox_borders((dw, dh))
    if out is not None:
        _letterbox_into(img, out, unpad, (top, bottom, left, right), color)
    else:
        if (orig_hw[1], orig_hw[0]) != unpad:
            img = cv2.resize(img, unpad, interpolation=cv2.INTER_LINEAR)
        out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    info = LetterboxInfo(orig_shape=orig_hw, input_shape=(int(out.shape[0]), int(out.shape[1])),
                         ratio=float(r), pad=(float(dw), float(dh)))
    return out, info


def letterbox_borders(pad: Tuple[float, float]) -> Tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` border widths in pixels for the padding ``(dw, dh)`` of
    :func:`letterbox_shape` (a possibly fractional half): YOLOv5's ``round(d - 0.1)`` / ``round(d + 0.1)``, so an
    odd total puts the extra pixel at the bottom / right."""
    dw, dh = pad
    return int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)), int(round(dw + 0.1))


def _letterbox_into(img: np.ndarray, out: np.ndarray, unpad: Tuple[int, int], pads: Tuple[int, int, int, int],
                    color: Tuple[int, int, int]) -> None:
    """Resize ``img`` to ``unpad`` (w, h) straight into the middle of ``out`` and paint the borders ``color``."""
    top, bottom, left, right = pads
    want = (unpad[1] + top + bottom, unpad[0] + left + right, 3)
    if out.shape != want or out.dtype != np.uint8:
        raise ValueError(f"letterbox out: expected a uint8 array of shape {want}, got {out.dtype} {out.shape}")
    uw, uh = unpad
    fill = np.asarray(color, dtype=np.uint8)
    if top:
        out[:top] = fill
    if bottom:
        out[top + uh:] = fill
    if left:
        out[top:top + uh, :left] = fill
    if right:
        out[top:top + uh, left + uw:] = fill
    region = out[top:top + uh, left:left + uw]
    if img.shape[:2] == (uh, uw):
        region[...] = img
    else:
        dst = cv2.resize(img, unpad, dst=region, interpolation=cv2.INTER_LINEAR)
        if not np.shares_memory(dst, region):  # OpenCV could not write in place (never for these views)
            region[...] = dst


def _batch_target(images: Sequence[Any], input_hw: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """Smallest stride-multiple ``(h, w)`` holding every image (anything with a ``shape`` ``(H, W, ...)``)
    letterboxed in minimum-rectangle mode."""
    return _common_target([tuple(im.shape[:2]) for im in images], input_hw, stride)


def _common_target(shapes: Sequence[Tuple[int, int]], input_hw: Tuple[int, int], stride: int) -> Tuple[int, int]:
    hs, ws = [], []
    for hw in shapes:
        _, (uw, uh), (dw, dh) = letterbox_shape((int(hw[0]), int(hw[1])), input_hw, True, True, stride)
        hs.append(uh + int(round(2 * dh)))
        ws.append(uw + int(round(2 * dw)))
    return max(hs), max(ws)


@dataclass(frozen=True)
class LetterboxPlan:
    """The letterbox of one image, worked out without its pixels (what a device kernel needs).

    Attributes:
        out_hw: ``(h, w)`` of the letterboxed image (the batch's input size).
        unpad: ``(w, h)`` of the resized image before padding (OpenCV order).
        borders: ``(top, bottom, left, right)`` padding in pixels (:func:`letterbox_borders`).
        info: the :class:`~edge_detect.types.LetterboxInfo` :func:`letterbox` returns for it.
    """

    out_hw: Tuple[int, int]
    unpad: Tuple[int, int]
    borders: Tuple[int, int, int, int]
    info: LetterboxInfo

    @property
    def geometry(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int, int, int]]:
        """``(out_hw, unpad, borders)``, the ``geometry`` argument of
        :class:`edge_detect.backends.gpu_letterbox.GpuLetterbox`."""
        return self.out_hw, self.unpad, self.borders


def plan_letterbox(shapes: Sequence[Tuple[int, int]], input_hw: Shape, stride: int = 32,
                   auto: bool = False) -> List[LetterboxPlan]:
    """The letterbox :func:`preprocess` gives each image of one batch, from the images' ``(h, w)`` alone.

    Args:
        shapes: ``(h, w)`` of each image, in batch order.
        input_hw: network input ``(h, w)`` (or an int for a square).
        stride: model stride (for ``auto``).
        auto: minimum rectangle; with several images, the smallest stride-multiple rectangle holding each of them
            (as :func:`preprocess`).

    Returns:
        One :class:`LetterboxPlan` per image; all have the same ``out_hw``.

    Raises:
        DataError: no images, or images that letterbox to different sizes (cannot share a batch).
    """
    hws = [(int(h), int(w)) for h, w in shapes]
    if not hws:
        raise DataError("letterbox plan: expected at least one image, got none")
    target = _hw(input_hw)
    if auto and len(hws) > 1:
        target, auto = _common_target(hws, target, stride), False
    plans = []
    for hw in hws:
        r, unpad, (dw, dh) = letterbox_shape(hw, target, auto, True, stride)
        borders = letterbox_borders((dw, dh))
        out_hw = (unpad[1] + borders[0] + borders[1], unpad[0] + borders[2] + borders[3])
        plans.append(LetterboxPlan(out_hw, (int(unpad[0]), int(unpad[1])), borders,
                                   LetterboxInfo(orig_shape=hw, input_shape=out_hw, ratio=float(r),
                                                 pad=(float(dw), float(dh)))))
    if len({p.out_hw for p in plans}) > 1:
        raise DataError(f"letterbox plan: images letterbox to different sizes {[p.out_hw for p in plans]}")
    return plans


def preprocess(images: Union[np.ndarray, Sequence[np.ndarray]], input_hw: Shape, stride: int = 32,
               auto: bool = False, fmt: str = "float32_nchw_rgb",
               dtype: Union[type, np.dtype] = np.float32,
               out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[LetterboxInfo]]:
    """Letterbox a list of images and pack them into one network input batch.

    Args:
        images: one BGR ``uint8 (H, W, 3)`` image or a sequence of them (grayscale / BGRA accepted).
        input_hw: network input ``(h, w)`` (or an int for a square).
        stride: model stride (for ``auto``).
        auto: minimum-rectangle letterbox (dynamic-shape models). With several images of different shapes, all
            are letterboxed to the smallest stride-multiple rectangle that holds each of them.
        fmt: ``"float32_nchw_rgb"``: RGB, ``/255``, ``(B, 3, h, w)`` contiguous in ``dtype``;
            ``"uint8_nhwc_bgr"``: BGR uint8 ``(B, h, w, 3)``.
        dtype: float dtype for ``float32_nchw_rgb`` (``np.float32`` or ``np.float16``).
        out: optional preallocated batch, ``(B, h, w, 3)`` uint8 for ``uint8_nhwc_bgr`` or ``(B, 3, h, w)`` of
            ``dtype`` for ``float32_nchw_rgb``, with ``B >= len(images)``: each image is letterboxed straight
            into its row (uint8) or into one reused uint8 staging image and converted into its row in a single
            pass (float), and ``out`` is returned. Rows past the images are left as they are. The target size
            is ``out``'s (``auto`` must give that size).

    Returns:
        ``(batch, infos)``: the batch array and one :class:`LetterboxInfo` per image.

    Raises:
        DataError: an invalid image, or no images.
        ValueError: unknown ``fmt``; ``out`` of the wrong shape or dtype.
    """
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"preprocess fmt: expected one of {INPUT_FORMATS}, got {fmt!r}")
    if isinstance(images, np.ndarray):
        images = [images]
    if len(images) == 0:
        raise DataError("preprocess: expected at least one image, got an empty list")
    images = [to_bgr(im) for im in images]
    target = _hw(input_hw)
    if auto and len(images) > 1:
        target, auto = _batch_target(images, target, stride), False
    if out is not None:
        return _preprocess_into(images, target, stride, auto, fmt, dtype, out)
    boxed, infos = zip(*(letterbox(im, target, auto=auto, stride=stride) for im in images))
    batch = np.stack(boxed)  # (B, h, w, 3) BGR uint8
    if fmt == "uint8_nhwc_bgr":
        return np.ascontiguousarray(batch), list(infos)
    out = np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32)
    out /= 255.0
    if np.dtype(dtype) != np.float32:
        out = out.astype(dtype)
    return out, list(infos)


_STAGING = threading.local()  # one reused uint8 letterbox image per thread and shape, for float outputs


def _staging(hw: Tuple[int, int]) -> np.ndarray:
    cache = getattr(_STAGING, "buffers", None)
    if cache is None:
        cache = _STAGING.buffers = {}
    if hw not in cache:
        cache[hw] = np.empty((hw[0], hw[1], 3), np.uint8)
    return cache[hw]


def _preprocess_into(images: Sequence[np.ndarray], target: Tuple[int, int], stride: int, auto: bool, fmt: str,
                     dtype: Any, out: np.ndarray) -> Tuple[np.ndarray, List[LetterboxInfo]]:
    nhwc = fmt == "uint8_nhwc_bgr"
    want_dtype = np.dtype(np.uint8) if nhwc else np.dtype(dtype)
    hw = (out.shape[1], out.shape[2]) if nhwc else (out.shape[2], out.shape[3]) if out.ndim == 4 else (-1, -1)
    ok = (out.ndim == 4 and out.dtype == want_dtype and out.shape[0] >= len(images)
          and out.shape[3 if nhwc else 1] == 3 and out.flags.c_contiguous)
    if not ok:
        layout = "(B, h, w, 3)" if nhwc else "(B, 3, h, w)"
        raise ValueError(f"preprocess out: expected a C-contiguous {want_dtype} array {layout} with B >= "
                         f"{len(images)}, got {out.dtype} {out.shape}")
    if not auto:
        target = hw
    infos = []
    for i, im in enumerate(images):
        if nhwc:
            _, info = letterbox(im, target, auto=auto, stride=stride, out=out[i])
        else:
            boxed, info = letterbox(im, target, auto=auto, stride=stride, out=_staging(hw))
            # BGR HWC uint8 -> RGB CHW float in one pass, /255 in float32 as in the copying path
            np.divide(boxed.transpose(2, 0, 1)[::-1], np.float32(255.0), out=out[i], dtype=np.float32,
                      casting="unsafe")
        infos.append(info)
    return out, infos
