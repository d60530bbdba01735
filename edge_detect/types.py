"""The data types that flow through every stage: :class:`Detections`, :class:`Frame`, :class:`LetterboxInfo`,
:class:`Result`.

Conventions, everywhere in edge-detect:

* Boxes are ``xyxy`` = ``(x1, y1, x2, y2)`` with ``0 <= x1 <= x2`` and ``0 <= y1 <= y2``, float32, in
  **original-frame pixels** (the frame as captured, before letterboxing), unless a name says ``letterbox``.
* Images are BGR ``uint8`` arrays of shape ``(H, W, 3)`` (OpenCV order).
* ``class_id`` indexes the model's class names (COCO: 0..79).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Detections", "Frame", "LetterboxInfo", "Result"]


def _check(cond: bool, what: str, expected: str, actual: Any) -> None:
    if not cond:
        raise ValueError(f"{what}: expected {expected}, got {actual}")


@dataclass(eq=False)
class Detections:
    """Detections of one image, the single type passed from postprocess to tracker to sinks.

    Attributes:
        xyxy: float32 ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in original-frame pixels.
        score: float32 ``(N,)`` confidence, ``objectness * class probability`` for YOLOv5.
        class_id: int32 ``(N,)`` class index.
        track_id: optional int64 ``(N,)`` track identity assigned by a tracker (-1 = unassigned).
        data: extra per-box fields, each an array whose first axis has length ``N`` (processors attach their
            results here, e.g. ``data["anchor_xy"]``); indexing a :class:`Detections` indexes these too.
        metadata: per-frame fields that are not per box (e.g. ``metadata["events"]``, a list of event dicts
            produced by line/zone processors); shared, not indexed.

    Arrays are converted to the dtypes above on creation; shapes are validated and a mismatch raises
    ``ValueError`` saying expected vs actual.
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    track_id: Optional[np.ndarray] = None
    data: Dict[str, np.ndarray] = field(default_factory=dict)
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4) if np.size(self.xyxy) == 0 \
            else np.asarray(self.xyxy, dtype=np.float32)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        _check(self.xyxy.ndim == 2 and self.xyxy.shape[1] == 4, "Detections.xyxy", "shape (N, 4)",
               self.xyxy.shape)
        n = self.xyxy.shape[0]
        _check(self.score.shape == (n,), "Detections.score", f"shape ({n},)", self.score.shape)
        _check(self.class_id.shape == (n,), "Detections.class_id", f"shape ({n},)", self.class_id.shape)
        if self.track_id is not None:
            self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            _check(self.track_id.shape == (n,), "Detections.track_id", f"shape ({n},)", self.track_id.shape)
        for key, value in list(self.data.items()):
            value = np.asarray(value)
            _check(value.ndim >= 1 and value.shape[0] == n, f"Detections.data[{key!r}]", f"first axis {n}",
                   value.shape)
            self.data[key] = value

    @classmethod
    def empty(cls) -> "Detections":
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def from_array(cls, rows: np.ndarray) -> "Detections":
        """Build from YOLOv5-style rows ``(N, 6)`` = ``[x1, y1, x2, y2, score, class]``."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        return cls(rows[:, :4], rows[:, 4], rows[:, 5].round().astype(np.int32))

    def to_array(self) -> np.ndarray:
        """float32 ``(N, 6)`` rows ``[x1, y1, x2, y2, score, class]``."""
        return np.concatenate(
            [self.xyxy, self.score[:, None], self.class_id[:, None].astype(np.float32)], axis=1
        ) if len(self) else np.zeros((0, 6), np.float32)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> "Detections":
        """Select with an int, slice, boolean mask or index array; always returns ``Detections``."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index],
            self.score[index],
            self.class_id[index],
            None if self.track_id is None else self.track_id[index],
            {k: v[index] for k, v in self.data.items()},
            self.metadata,
        )

    def __iter__(self) -> Iterator["Detections"]:
        for i in range(len(self)):
            yield self[i]

    def to_records(self, names: Optional[Sequence[str]] = None, ndigits: int = 2) -> list:
        """JSON-ready list of ``{"xyxy", "score", "class_id", "class_name"[, "track_id"]}`` dicts."""
        out = []
        for i in range(len(self)):
            cid = int(self.class_id[i])
            rec = {
                "xyxy": [round(float(v), ndigits) for v in self.xyxy[i]],
                "score": round(float(self.score[i]), 5),
                "class_id": cid,
                "class_name": names[cid] if names is not None and 0 <= cid < len(names) else str(cid),
            }
            if self.track_id is not None:
                rec["track_id"] = int(self.track_id[i])
            out.append(rec)
        return out


@dataclass(frozen=True)
class LetterboxInfo:
    """How an original frame was mapped into the network input (to undo it on the boxes).

    Attributes:
        orig_shape: ``(h, w)`` of the original frame in pixels.
        input_shape: ``(h, w)`` of the letterboxed image (the network input size).
        ratio: scale factor applied to the original frame (same on both axes).
        pad: ``(left, top)`` padding in letterbox pixels, as fractional halves (YOLOv5's ``dw, dh``).
    """

    orig_shape: Tuple[int, int]
    input_shape: Tuple[int, int]
    ratio: float
    pad: Tuple[float, float]

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` boxes from letterbox pixels to original pixels, clipped to the frame.

        Args:
            xyxy: float ``(N, 4)`` boxes in letterbox pixels.

        Returns:
            float32 ``(N, 4)`` boxes in original-frame pixels, clipped to ``[0, w] x [0, h]``.
        """
        from edge_detect.boxes import scale_boxes

        return scale_boxes(np.asarray(xyxy, dtype=np.float32).reshape(-1, 4), self.ratio, self.pad,
                           clip_hw=self.orig_shape)


@dataclass(eq=False)
class Frame:
    """One captured frame plus where and when it came from.

    Attributes:
        image: BGR uint8 ``(H, W, 3)``.
        source_id: the id of the source that produced it (``"0"``, ``"cam1"``, a file stem...).
        index: 0-based index of the frame within its source (counting every frame read, decoded or not).
        pts_ms: presentation timestamp in milliseconds when the container gives one, else ``None``.
        capture_time: ``time.perf_counter()`` when the frame left the decoder (start of glass-to-glass).
        wall_time: Unix time in seconds at capture.
        timings: per-stage durations in milliseconds, filled by the pipeline as the frame travels.
        path: the image file the frame was read from (image sources), else ``None``.
    """

    image: np.ndarray
    source_id: str = "0"
    index: int = 0
    pts_ms: Optional[float] = None
    capture_time: float = 0.0
    wall_time: float = 0.0
    timings: dict = field(default_factory=dict)
    path: Optional[str] = None

    @property
    def shape(self) -> Tuple[int, int]:
        """``(h, w)`` of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(eq=False)
class Result:
    """One processed frame handed to every sink.

    Attributes:
        frame: the captured :class:`Frame` (BGR ``uint8 (H, W, 3)``, ids, timestamps, stage timings).
        detections: :class:`Detections` in original-frame pixels (``track_id`` set when tracking; events of the
            frame in ``detections.metadata["events"]``).
        names: class names, index = class id.
        fps: current processing rate of the run (frames/s) for overlays.
        final: ``True`` for the end-of-source result the pipeline emits when processors return final events
            (``finish``): ``frame`` is the source's last frame again, ``detections`` are empty and carry those
            events. Image sinks (video, display, preview) skip it; JSONL writes it.

    The JSON line of :meth:`record`::

        {"source": "vtest", "frame": 12, "pts_ms": 1200.0, "wall_time": 1718000000.123,
         "detections": [{"xyxy": [x1, y1, x2, y2], "score": 0.87, "class_id": 0, "class_name": "person"}],
         "events": []}

    ``xyxy`` is in original-frame pixels; ``wall_time`` is Unix seconds at capture; ``track_id`` is added to a
    detection when a tracker runs; ``events`` is always present (a list of event dicts, possibly empty). The
    end-of-source line (:attr:`final`) repeats the source's last frame number with no detections, only the events
    returned by the processors' ``finish()`` (e.g. ``object_end`` of the tracks still open), and ``"final": true``.
    """

    frame: Frame
    detections: Detections
    names: Sequence[str] = ()
    fps: float = 0.0
    final: bool = False
    _annotated: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def events(self) -> List[Dict[str, Any]]:
        """The frame's events (``detections.metadata["events"]``; empty list when none)."""
        return list(self.detections.metadata.get("events", ()))

    @property
    def annotated(self) -> np.ndarray:
        """The frame with boxes, labels, scores and the FPS overlay drawn (a copy; computed once, shared)."""
        if self._annotated is None:
            from edge_detect.stream.annotate import render

            self._annotated = render(self.frame.image, self.detections, self.names, self.fps)
        return self._annotated

    def record(self) -> Dict[str, Any]:
        """The JSON-ready line of this frame (see class doc)."""
        return {
            "source": self.frame.source_id,
            "frame": int(self.frame.index),
            "pts_ms": None if self.frame.pts_ms is None else round(float(self.frame.pts_ms), 3),
            "wall_time": round(float(self.frame.wall_time), 6),
            "detections": self.detections.to_records(self.names),
            "events": self.events,
            **({"final": True} if self.final else {}),
        }
