"""The device-resident path of the torch backend: a decoded frame goes to the device once, only final boxes come back.

Per frame (:meth:`DevicePipeline.preprocess`, on the device's preprocess stream):

1. **upload**: the BGR ``uint8 (H, W, 3)`` frame is copied once into a staging buffer (page-locked on CUDA, so the
   host-to-device copy is asynchronous on the stream; on the CPU a plain copy) and from there to the device;
2. **letterbox** on the device, bit-exact with the host's :func:`edge_detect.preprocess.letterbox`: the same
   geometry (:func:`~edge_detect.preprocess.letterbox_shape`, :func:`~edge_detect.preprocess.letterbox_borders`:
   YOLOv5's rounding of the padding), pad value 114, and OpenCV's ``INTER_LINEAR`` arithmetic for ``uint8``
   reproduced with integer tensor ops (11-bit fixed-point weights, horizontal pass into int32, vertical pass
   ``(((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2``). ``F.interpolate(mode="bilinear",
   align_corners=False, antialias=False)`` in float would differ from ``cv2.resize`` by 1 grey level on ~12% of
   the pixels (downscale and upscale alike), and the detections with it;
3. **BGR->RGB, /255** (float32 division, like the host), into row ``i`` of a preallocated batch of the model's
   dtype: a ring of :data:`RING` batches per ``(input shape, rows)``, like the host ring of
   :mod:`edge_detect.stream.pipeline`.

Per batch (:meth:`DevicePipeline.infer`, on the inference stream, after the batch's ``ready`` event):

4. **inference** from the ring batch: one CUDA graph per ``(shape, batch, dtype)``, captured on first use and
   cached (the batch is copied into the graph's static input); when capture is refused the batch runs eagerly and
   the refusal is logged once;
5. **NMS on the device** (:func:`device_nms`), the semantics of :func:`edge_detect.postprocess.non_max_suppression`
   (objectness filter, obj x class score, best class or multi-label, ``classes``, ``max_nms``, class-aware with
   boxes offset by ``class * 7680`` in float32, ``max_det``), so the kept boxes are the host path's;
6. only the kept rows ``(n, 6)`` of the whole batch come back to the host, in one copy, and are mapped to original
   pixels with :meth:`~edge_detect.types.LetterboxInfo.to_original` (the host's code).

What needs CUDA sits behind :class:`CudaOps` (streams, events, page-locked buffers, graph capture); :class:`HostOps`
is the CPU's version of the same small interface, so every step above runs and is tested on the CPU (torch's
CPU device runs the same tensor code) and ``pytest -m gpu`` runs it on CUDA.

Threads: :meth:`~DevicePipeline.preprocess` and :meth:`~DevicePipeline.infer` may run in two threads (the
pipeline's preprocess and inference threads); each of them is called from one thread at a time. A ring batch is
refilled only after its previous contents went through :meth:`~DevicePipeline.infer` or were given back with
:meth:`DeviceBatch.release` (a batch the caller drops must be released). With ``hold=False`` (what the torch
backend's :class:`~edge_detect.backends.base.DeviceBackend` path uses) the ring only rotates: the stream
pipeline's contract (at most 3 batches prepared or inferring at once, dropped batches never released) keeps a
ring of :data:`RING` safe, and the device still waits for the last inference that read a buffer before refilling it.

In the stream :class:`~edge_detect.stream.pipeline.Pipeline` this runs behind the backend seam: a
:class:`~edge_detect.detector.Detector` over a :class:`~edge_detect.training.torch_backend.TorchBackend` whose
device path is on (``cuda[:N]`` by default, or ``device_path=True``) calls
:meth:`TorchBackend.preprocess_device` / :meth:`TorchBackend.infer_device`, which are :meth:`DevicePipeline.preprocess`
/ :meth:`DevicePipeline.infer_rows` of one pipeline per backend.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from edge_detect.backends.gpu_letterbox import resize_coefficients
from edge_detect.config import check_thresholds
from edge_detect.errors import DataError
from edge_detect.metadata import HEADS
from edge_detect.postprocess import MAX_NMS, MAX_WH
from edge_detect.preprocess import LetterboxPlan, plan_letterbox, to_bgr
from edge_detect.types import Detections, LetterboxInfo

__all__ = ["DevicePipeline", "DeviceBatch", "HostOps", "CudaOps", "device_ops", "device_nms", "resize_like_cv2",
           "resize_coefficients", "RING"]

LOGGER = logging.getLogger(__name__)

RING = 4  #: ring batches per (input shape, rows): one filling, one queued, one inferring, one spare
PAD_VALUE = 114  #: letterbox grey, as on the host


# ------------------------------------------------------------------------------------------ device operations
class HostOps:
    """The CPU's side of the device interface: no streams, no events, no graphs; copies are plain copies."""

    graphs = False

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch, self.device = torch, device

    def stream(self) -> Any:
        return None

    def on(self, stream: Any) -> Any:
        """Context manager making ``stream`` current (nothing on the CPU)."""
        return contextlib.nullcontext()

    def record(self, stream: Any) -> Any:
        """An event marking the work enqueued on ``stream`` so far (``None``: CPU work is already done)."""
        return None

    def wait(self, stream: Any, event: Any) -> None:
        """Make ``stream`` wait for ``event`` without blocking the host."""

    def host_wait(self, event: Any) -> None:
        """Block the host until ``event`` completed."""

    def staging(self, shape: Tuple[int, ...]) -> Any:
        """A host ``uint8`` buffer to copy decoded frames into."""
        return self.torch.empty(shape, dtype=self.torch.uint8)

    def to_device(self, staging: Any, device_buf: Optional[Any]) -> Any:
        """The staged frame on the device (on the CPU the staging buffer is already there)."""
        return staging

    def capture(self, fn: Callable[[Any], Any], example: Any) -> Tuple[Any, Callable[[], None], Any]:
        raise NotImplementedError("CUDA graphs need a CUDA device")


class CudaOps(HostOps):
    """CUDA streams, events, page-locked staging and graph capture (torch's CUDA API); ``pytest -m gpu`` tests it."""

    graphs = True

    def stream(self) -> Any:
        return self.torch.cuda.Stream(device=self.device)

    def on(self, stream: Any) -> Any:
        return self.torch.cuda.stream(stream)

    def record(self, stream: Any) -> Any:
        event = self.torch.cuda.Event()
        event.record(stream)
        return event

    def wait(self, stream: Any, event: Any) -> None:
        if event is not None:
            stream.wait_event(event)

    def host_wait(self, event: Any) -> None:
        if event is not None:
            event.synchronize()

    def staging(self, shape: Tuple[int, ...]) -> Any:
        return self.torch.empty(shape, dtype=self.torch.uint8, pin_memory=True)

    def to_device(self, staging: Any, device_buf: Optional[Any]) -> Any:
        device_buf.copy_(staging, non_blocking=True)  # asynchronous: the source is page-locked
        return device_buf

    def capture(self, fn: Callable[[Any], Any], example: Any) -> Tuple[Any, Callable[[], None], Any]:
        """Capture ``fn(static_input)`` as a CUDA graph: ``(static_input, replay, static_output)``.

        Three eager warm-up calls on a side stream first (cuDNN picks its algorithms, lazy buffers are made), then
        the capture; ``thread_local`` capture so another thread's CUDA calls (the preprocess thread) do not
        invalidate it. Raises RuntimeError when CUDA refuses the capture.
        """
        torch = self.torch
        static_in = example.clone()
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = fn(static_in)
        return static_in, graph.replay, static_out


def device_ops(torch: Any, device: Any) -> HostOps:
    """:class:`CudaOps` for a CUDA device, else :class:`HostOps`."""
    return CudaOps(torch, device) if device.type == "cuda" else HostOps(torch, device)


# ------------------------------------------------------------------------------------------ cv2-exact resize
def resize_like_cv2(src: Any, coeffs: Dict[str, Any]) -> Any:
    """``cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)`` for ``uint8``, with integer tensor ops.

    Args:
        src: ``uint8 (H, W, C)`` tensor (any device).
        coeffs: :func:`~edge_detect.backends.gpu_letterbox.resize_coefficients` as tensors on ``src``'s device
            (the tables the torch-free CUDA kernel of that module uses too).

    Returns:
        ``int32 (h, w, C)`` tensor with values in ``[0, 255]``, equal to OpenCV's result (x86 builds; checked
        against opencv-python 5.1 over random sizes, up and down).
    """
    s = src.to(dtype=coeffs["a0"].dtype)
    horizontal = s.index_select(1, coeffs["x0"]) * coeffs["a0"][:, None] \
        + s.index_select(1, coeffs["x1"]) * coeffs["a1"][:, None]
    top = ((horizontal.index_select(0, coeffs["y0"]) >> 4) * coeffs["b0"][:, None, None]) >> 16
    bottom = ((horizontal.index_select(0, coeffs["y1"]) >> 4) * coeffs["b1"][:, None, None]) >> 16
    return ((top + bottom + 2) >> 2).clamp_(0, 255)


# ------------------------------------------------------------------------------------------ device NMS
def _cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """:func:`edge_detect.boxes.cxcywh_to_xyxy` on a tensor (the same float32 ``w / 2`` arithmetic)."""
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    return torch.stack((b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h), 1)


def _candidates(pred: torch.Tensor, head: str, conf: float, classes: Optional[Sequence[int]],
                multi_label: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[x1, y1, x2, y2, score, cls]`` (float32) of the whole batch that pass the thresholds, and the image
    index of each; per image in the order of the host's ``postprocess._candidates``."""
    if head == "yolov5":
        image, anchor = (pred[..., 4] > conf).nonzero(as_tuple=True)
        x = pred[image, anchor]
        scores, boxes = x[:, 5:] * x[:, 4:5], x[:, :4]
    else:  # anchor_free (B, 4 + nc, N)
        t = pred.transpose(1, 2)
        image, anchor = (t[..., 4:].amax(-1) > conf).nonzero(as_tuple=True)
        x = t[image, anchor]
        scores, boxes = x[:, 4:], x[:, :4]
    xyxy = _cxcywh_to_xyxy(boxes)
    if multi_label:
        i, j = (scores > conf).nonzero(as_tuple=True)
        rows, image = torch.cat((xyxy[i], scores[i, j, None], j[:, None].to(xyxy.dtype)), 1), image[i]
    else:
        score, j = scores.max(1, keepdim=True)
        rows = torch.cat((xyxy, score, j.to(xyxy.dtype)), 1)
        keep = score[:, 0] > conf
        rows, image = rows[keep], image[keep]
    if classes is not None:
        keep = torch.isin(rows[:, 5], torch.as_tensor(list(classes), dtype=rows.dtype, device=rows.device))
        rows, image = rows[keep], image[keep]
    return rows, image


def device_nms(pred: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
               classes: Optional[Sequence[int]] = None, agnostic: bool = False, multi_label: bool = False,
               max_det: int = 300, max_nms: int = MAX_NMS, max_wh: int = MAX_WH,
               head: str = "yolov5") -> List[torch.Tensor]:
    """:func:`edge_detect.postprocess.non_max_suppression` on the device, with ``torchvision.ops.nms``.

    Same semantics and arithmetic (see that function): candidates, scores and the class offsets in float32, the
    offset ``class * max_wh`` added to the boxes before a plain greedy NMS (``torchvision.ops.batched_nms`` would
    offset by ``max coordinate + 1`` instead, which changes the float32 rounding of the offset boxes and so, now
    and then, which of two borderline boxes is kept), one NMS per image.

    Args:
        pred: float ``(B, N, 5 + nc)`` (``head="yolov5"``) or ``(B, 4 + nc, N)`` (``"anchor_free"``) raw
            predictions in letterbox pixels, on any device (cast to float32 here).
        conf_thres, iou_thres, classes, agnostic, multi_label, max_det, max_nms, max_wh, head: as in
            :func:`~edge_detect.postprocess.non_max_suppression`.

    Returns:
        One float32 ``(n, 6)`` tensor per image on ``pred``'s device, rows ``[x1, y1, x2, y2, score, cls]`` in
        letterbox pixels, by descending score.

    Raises:
        ValueError: unknown ``head`` or a ``pred`` shape that does not fit it; ConfigError: bad thresholds.
    """
    from torchvision.ops import nms

    if head not in HEADS:
        raise ValueError(f"head: expected one of {HEADS}, got {head!r}")
    if pred.ndim != 3 or (pred.shape[2] < 6 if head == "yolov5" else pred.shape[1] < 5):
        layout = "(B, N, 5+nc)" if head == "yolov5" else "(B, 4+nc, N)"
        raise ValueError(f"device_nms pred: expected shape {layout} for head '{head}', got {tuple(pred.shape)}")
    check_thresholds(conf_thres, iou_thres, max_det, names=("conf_thres", "iou_thres", "max_det"))
    rows, image = _candidates(pred.float(), head, conf_thres, classes, multi_label)
    counts = torch.bincount(image, minlength=pred.shape[0]).tolist()
    out = []
    for part in rows.split(counts):
        if len(part) > max_nms:
            part = part[torch.sort(part[:, 4], descending=True, stable=True).indices[:max_nms]]
        offset = part[:, 5:6] * float(0 if agnostic else max_wh)
        out.append(part[nms(part[:, :4] + offset, part[:, 4], float(iou_thres))[:max_det]])
    return out


def download(rows: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """Per-image device rows -> NumPy, in one device-to-host copy of all of them."""
    if not rows:
        return []
    host = torch.cat(list(rows)).cpu().numpy()
    return np.split(host, np.cumsum([len(r) for r in rows])[:-1])


# ------------------------------------------------------------------------------------------ ring and graphs
@dataclass
class _Slot:
    """One preallocated batch of the ring; ``filled`` / ``done`` count its uses (refill only when equal)."""

    tensor: torch.Tensor
    filled: int = 0
    done: int = 0
    free: Any = None  # device event: the last inference that read it has finished reading


@dataclass
class DeviceBatch:
    """A letterboxed batch on the device, made by :meth:`DevicePipeline.preprocess`.

    Attributes:
        tensor: ``(B, 3, h, w)`` RGB in ``[0, 1]``, the model's dtype, on the device (a ring buffer: valid until
            it went through :meth:`DevicePipeline.infer` or :meth:`release`).
        infos: one :class:`~edge_detect.types.LetterboxInfo` per frame.
        ready: device event recorded after the preprocessing kernels (``None`` on the CPU).
    """

    tensor: torch.Tensor
    infos: List[LetterboxInfo]
    ready: Any = None
    _slot: Optional[_Slot] = field(default=None, repr=False)
    _owner: Any = field(default=None, repr=False)

    def release(self) -> None:
        """Give the ring buffer back without inferring it (a batch the pipeline drops)."""
        if self._owner is not None:
            self._owner._done(self, None)


class _GraphRunner:
    """``forward(x)`` through one CUDA graph per ``(shape, dtype)`` of ``x``, captured on first use; eager when the
    ops cannot capture (CPU) or a capture was refused (logged once)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], ops: HostOps, enabled: bool) -> None:
        self.forward, self.ops = forward, ops
        self.enabled = bool(enabled) and ops.graphs
        self.graphs: Dict[Tuple[Any, ...], Tuple[Any, Callable[[], None], Any]] = {}
        self.refused: Dict[Tuple[Any, ...], str] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model output of ``x``; with a graph it is the graph's static output (valid until the next call)."""
        key = (tuple(x.shape), x.dtype)
        if not self.enabled or key in self.refused:
            return self.forward(x)
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self.graphs[key] = self.ops.capture(self.forward, x)
            except RuntimeError as exc:
                if not self.refused:
                    LOGGER.warning("CUDA graph capture refused for input %s %s (%s); running eagerly (logged once)",
                                   list(key[0]), key[1], str(exc).strip().splitlines()[0] if str(exc) else "")
                self.refused[key] = str(exc)
                return self.forward(x)
        static_in, replay, static_out = entry
        static_in.copy_(x)
        replay()
        return static_out


# ------------------------------------------------------------------------------------------ the pipeline
class DevicePipeline:
    """Frames in, final detections out, with everything between on the backend's device (see the module doc).

    Args:
        backend: a loaded :class:`~edge_detect.training.torch_backend.TorchBackend` (its model, device, dtype,
            TF32 setting, stride and head are used).
        input_hw: network input ``(h, w)``, multiples of the stride.
        auto: minimum-rectangle letterbox (dynamic models), as :func:`edge_detect.preprocess.preprocess`.
        conf, iou, classes, agnostic, multi_label, max_det: NMS settings, as for
            :class:`~edge_detect.detector.Detector`.
        graphs: capture CUDA graphs (CUDA only; ``False`` runs eagerly).
        ring: preallocated batches per ``(input shape, rows)``.
        hold: refill a ring batch only once it was inferred or released (``False``: rotate; see the module doc).

    Example (what the stream pipeline calls once the device seam exists)::

        dp = DevicePipeline.from_detector(detector)      # a Detector over a torch backend
        batch = dp.preprocess(frames)                    # preprocess thread: BGR uint8 frames -> DeviceBatch
        dets = dp.infer(batch)                           # inference thread: -> list[Detections], original px
    """

    def __init__(self, backend: Any, input_hw: Tuple[int, int] = (640, 640), *, auto: bool = False,
                 conf: float = 0.25, iou: float = 0.45, classes: Optional[Sequence[int]] = None,
                 agnostic: bool = False, multi_label: bool = False, max_det: int = 1000, graphs: bool = True,
                 ring: int = RING, hold: bool = True) -> None:
        check_thresholds(conf, iou, max_det)
        self.backend = backend
        self.device, self.dtype = backend.device, backend.dtype
        self.stride, self.head = int(backend.metadata.stride), backend.metadata.head
        self.input_hw, self.auto = (int(input_hw[0]), int(input_hw[1])), bool(auto)
        self.nms = dict(conf_thres=float(conf), iou_thres=float(iou), agnostic=bool(agnostic),
                        classes=None if classes is None else [int(c) for c in classes],
                        multi_label=bool(multi_label), max_det=int(max_det), head=self.head)
        self.ops = device_ops(torch, self.device)
        self.ring_size = max(2, int(ring))
        self.hold = bool(hold)
        self._pre_stream, self._inf_stream = self.ops.stream(), self.ops.stream()
        self._rings: Dict[Tuple[Any, ...], Dict[str, Any]] = {}
        self._staging: Dict[Tuple[int, ...], Dict[str, Any]] = {}
        self._coeffs: Dict[Tuple[Any, ...], Dict[str, torch.Tensor]] = {}
        self._cond = threading.Condition()
        self._pad = float(np.float32(PAD_VALUE) / np.float32(255.0))  # the host's float32 114 / 255
        self.runner = _GraphRunner(self._forward, self.ops, graphs)

    @classmethod
    def from_detector(cls, detector: Any, **options: Any) -> "DevicePipeline":
        """A device path with a :class:`~edge_detect.detector.Detector`'s input size, letterbox mode and NMS
        settings (its backend must be the torch backend); ``options``: ``graphs``, ``ring``."""
        return cls(detector.backend, detector.input_hw, auto=detector.dynamic_hw and detector.auto,
                   conf=detector.conf, iou=detector.iou, classes=detector.classes, agnostic=detector.agnostic,
                   multi_label=detector.multi_label, max_det=detector.max_det, **options)

    # --- preprocess -----------------------------------------------------------------------------------------
    def preprocess(self, frames: Union[np.ndarray, Any, Sequence[Any]], input_hw: Optional[Tuple[int, int]] = None,
                   auto: Optional[bool] = None) -> DeviceBatch:
        """Upload and letterbox frames into the next ring batch; returns without waiting for the device.

        Args:
            frames: BGR ``uint8 (H, W, 3)`` NumPy frames (grayscale / BGRA converted on the host first) and/or
                ``uint8 (H, W, 3)`` BGR torch tensors (a frame already on the device: not uploaded again; on another
                device: copied there), or one of them.
            input_hw, auto: this call's network input size and letterbox mode (default: the pipeline's).

        Raises:
            DataError: no frames, an invalid frame (see :func:`edge_detect.preprocess.to_bgr`), or frames that
                letterbox to different sizes.
        """
        single = isinstance(frames, np.ndarray) or isinstance(frames, torch.Tensor)
        images = [self._frame(f) for f in ([frames] if single else frames)]
        if not images:
            raise DataError("device preprocess: expected at least one frame, got an empty list")
        plans = plan_letterbox([im.shape[:2] for im in images], self.input_hw if input_hw is None else input_hw,
                               self.stride, self.auto if auto is None else bool(auto))
        slot = self._acquire((plans[0].out_hw, len(images)))
        with self.ops.on(self._pre_stream):
            self.ops.wait(self._pre_stream, slot.free)
            for i, (im, plan) in enumerate(zip(images, plans)):
                src = im if isinstance(im, torch.Tensor) else self._upload(im)
                self._letterbox(src, plan, slot.tensor[i])
            ready = self.ops.record(self._pre_stream)
        return DeviceBatch(slot.tensor, [p.info for p in plans], ready, slot, self)

    def _frame(self, frame: Any) -> Any:
        """A host frame as BGR ``uint8`` (:func:`to_bgr`), or a torch frame checked and on :attr:`device`."""
        if not isinstance(frame, torch.Tensor):
            return to_bgr(frame)
        if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.numel() == 0:
            raise DataError(f"device preprocess: expected a uint8 (H, W, 3) BGR tensor, got {frame.dtype} "
                            f"{tuple(frame.shape)}")
        return frame if frame.device == self.device else frame.to(self.device, non_blocking=True)

    def _acquire(self, key: Tuple[Any, ...]) -> _Slot:
        """The next ring batch for ``key``, once its previous contents were inferred or released."""
        ring = self._rings.get(key)
        if ring is None:
            (h, w), rows = key
            ring = self._rings[key] = {"next": 0, "slots": [
                _Slot(torch.empty((rows, 3, h, w), dtype=self.dtype, device=self.device))
                for _ in range(self.ring_size)]}
        slot = ring["slots"][ring["next"]]
        ring["next"] = (ring["next"] + 1) % len(ring["slots"])
        with self._cond:
            if self.hold:
                self._cond.wait_for(lambda: slot.done == slot.filled)
            else:  # rotate: a batch dropped without release() must not block its buffer for ever
                slot.done = slot.filled
            slot.filled += 1
        return slot

    def _done(self, batch: DeviceBatch, free_event: Any) -> None:
        slot, batch._slot = batch._slot, None
        if slot is None:
            return
        with self._cond:
            slot.free = free_event
            slot.done += 1
            self._cond.notify_all()

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        """``image`` copied into a staging buffer (page-locked on CUDA; a ring, so the copy from the previous use
        has finished) and from there, asynchronously on the preprocess stream, to the device."""
        key = tuple(image.shape)
        st = self._staging.get(key)
        if st is None:
            st = self._staging[key] = {
                "host": [self.ops.staging(key) for _ in range(2)], "events": [None, None], "next": 0,
                "device": torch.empty(key, dtype=torch.uint8, device=self.device) if self.ops.graphs else None}
        k = st["next"]
        st["next"] = 1 - k
        self.ops.host_wait(st["events"][k])
        st["host"][k].numpy()[...] = image
        on_device = self.ops.to_device(st["host"][k], st["device"])
        st["events"][k] = self.ops.record(self._pre_stream)
        return on_device

    def _letterbox(self, src: torch.Tensor, plan: LetterboxPlan, out: torch.Tensor) -> None:
        """Letterbox ``src`` (``uint8 (H, W, 3)`` BGR on the device) into ``out`` (``(3, h, w)``) as ``plan`` says
        (:func:`edge_detect.preprocess.plan_letterbox`), RGB / 255."""
        top, _, left, _ = plan.borders
        uw, uh = plan.unpad
        out.fill_(self._pad)
        if (src.shape[1], src.shape[0]) != (uw, uh):
            key = (tuple(src.shape[:2]), (uh, uw))
            coeffs = self._coeffs.get(key)
            if coeffs is None:
                coeffs = self._coeffs[key] = {k: torch.from_numpy(v).to(self.device)
                                              for k, v in resize_coefficients(key[0], key[1]).items()}
            src = resize_like_cv2(src, coeffs)
        rgb = src.permute(2, 0, 1).flip(0).to(torch.float32).div_(255.0)  # float32 v / 255, as on the host
        out[:, top:top + uh, left:left + uw].copy_(rgb)

    # --- inference and NMS ----------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.backend.model(x)
        return pred[0] if isinstance(pred, (list, tuple)) else pred

    def infer_rows(self, batch: DeviceBatch, nms: Optional[Dict[str, Any]] = None) -> List[np.ndarray]:
        """Inference (graph replay or eager) and NMS of a :class:`DeviceBatch` on the device; only the kept rows
        come back, in one copy.

        Args:
            batch: from :meth:`preprocess` (consumed: its ring buffer is the pipeline's again afterwards).
            nms: this call's NMS settings (the keywords of :func:`device_nms` but ``head``; default: the
                pipeline's).

        Returns:
            One float32 ``(n, 6)`` array per frame, ``[x1, y1, x2, y2, score, class]`` in letterbox pixels, by
            descending score (what the host's NMS keeps).
        """
        if batch._slot is None:
            raise DataError("device infer: this batch was already inferred or released (its ring buffer is reused)")
        settings = self.nms if nms is None else {**nms, "head": self.head}
        with self.ops.on(self._inf_stream), torch.inference_mode():
            self.ops.wait(self._inf_stream, batch.ready)
            self.backend.apply_numerics()
            try:
                pred = self.runner(batch.tensor[:len(batch.infos)])
            finally:
                self._done(batch, self.ops.record(self._inf_stream))
            return download(device_nms(pred, **settings))

    def infer(self, batch: DeviceBatch) -> List[Detections]:
        """:meth:`infer_rows` with the pipeline's NMS settings, mapped to original-frame pixels.

        Returns:
            One :class:`~edge_detect.types.Detections` per frame, float32 ``xyxy`` in original-frame pixels
            (clipped), by descending score: the detections of the host path.
        """
        return [Detections(info.to_original(r[:, :4]), r[:, 4], r[:, 5].astype(np.int32))
                for r, info in zip(self.infer_rows(batch), batch.infos)]

    def __call__(self, frames: Union[np.ndarray, Sequence[np.ndarray]]) -> List[Detections]:
        """:meth:`preprocess` then :meth:`infer`."""
        return self.infer(self.preprocess(frames))

    @property
    def captured(self) -> List[Tuple[Any, ...]]:
        """The ``(shape, dtype)`` keys that run as CUDA graphs."""
        return list(self.runner.graphs)
