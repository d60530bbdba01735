"""Calibration data for INT8: images, dataset splits or video frames, preprocessed exactly as at run time.

A calibration *source* is one of

* a folder of images (searched recursively, sorted by path),
* a dataset yaml (YOLOv5 style: ``path``, ``train``, ``val``; the ``train`` split by default), or
* a video file, sampled every k-th frame so that the requested number of frames spans the whole video.

:class:`CalibrationData` selects ``num_images`` items spread evenly over the source (all of them when the source
is smaller), optionally holding out a disjoint subset for sensitivity analysis, and yields batches made by
:func:`edge_detect.preprocess.preprocess` (square letterbox, ``auto=False``) so that the statistics describe the
very tensors the deployed model will see. Only one batch is in memory at a time.

It is used by the ONNX Runtime Q/DQ quantizer (:mod:`edge_detect.deploy.quantize`, through
:meth:`CalibrationData.reader`, an ONNX Runtime ``CalibrationDataReader``) and by TensorRT's implicit INT8
calibrators (which pull :meth:`CalibrationData.batches`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge_detect.paths import IMAGE_SUFFIXES, VIDEO_SUFFIXES, YAML_SUFFIXES, PathLike
from edge_detect.errors import DataError, SourceError

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "CalibrationData",
    "CalibrationReader",
    "spread_indices",
    "split_holdout",
    "list_images",
    "dataset_images",
    "video_frame_count",
]

LOGGER = logging.getLogger(__name__)




def spread_indices(total: int, count: int) -> List[int]:
    """``min(count, total)`` distinct indices in ``[0, total)`` spread evenly, first one 0, sorted.

    ``spread_indices(795, 100)`` is every 7.95th frame rounded down: ``[0, 7, 15, ...]``; when ``count >= total``
    every index is returned.
    """
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(total))
    return [int(i * total / count) for i in range(count)]


def split_holdout(total: int, num_calib: int, num_holdout: int) -> Tuple[List[int], List[int]]:
    """Choose disjoint calibration and hold-out indices in ``[0, total)``, both spread over the whole source.

    The hold-out set is taken first (``num_holdout`` items spread evenly); calibration uses up to ``num_calib`` of
    the remaining items, again spread evenly. When the source has fewer than ``num_calib + num_holdout`` items,
    calibration gets all the remaining ones.

    Returns:
        ``(calib, holdout)`` sorted index lists.

    Raises:
        DataError: fewer than ``num_holdout + 1`` items (nothing would be left to calibrate on).
    """
    if num_holdout < 0 or num_calib <= 0:
        raise DataError(f"calibration counts: expected num_images > 0 and holdout >= 0, "
                        f"got num_images={num_calib}, holdout={num_holdout}")
    if total <= num_holdout:
        raise DataError(f"calibration source: expected more than {num_holdout} images "
                        f"({num_holdout} held out for sensitivity analysis), found {total}")
    if num_holdout == 0:
        return spread_indices(total, num_calib), []
    # offset the hold-out by half a step so that it interleaves with the calibration picks
    step = total / num_holdout
    holdout = sorted({min(total - 1, int(step * (i + 0.5))) for i in range(num_holdout)})
    held = set(holdout)
    rest = [i for i in range(total) if i not in held]
    calib = [rest[j] for j in spread_indices(len(rest), num_calib)]
    return calib, holdout


def list_images(folder: PathLike) -> List[Path]:
    """Image files under ``folder`` (recursive), sorted by path (:func:`edge_detect.datasets.list_images`).

    Raises:
        DataError: the folder does not exist or holds no image.
    """
    from edge_detect.datasets import list_images as _list

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"calibration images: expected a folder, got {root} (not found)")
    files = _list(root)
    if not files:
        raise DataError(f"calibration images: expected image files ({', '.join(IMAGE_SUFFIXES)}) in {root}, found none")
    return files


def dataset_images(data_yaml: PathLike, split: str = "train") -> List[Path]:
    """Image files of one split of a dataset yaml, read with :func:`edge_detect.datasets.load_dataset`.

    Raises:
        DataError: missing split, missing folders, or no images.
    """
    from edge_detect.datasets import load_dataset

    spec = load_dataset(data_yaml)
    files = spec.images(split)
    if not files:
        raise DataError(f"{spec.yaml_path}: split '{split}' lists no images")
    return files


def _open_video(path: Path) -> Any:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"calibration video: cannot open {path} with OpenCV")
    return cap


def video_frame_count(path: PathLike) -> int:
    """Number of frames of a video file: the container's count, or counted by reading when it gives none."""
    import cv2

    cap = _open_video(Path(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            return n
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"calibration image: cannot decode {path} (expected a readable image file)")
    return img


def _read_frames(path: Path, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """Decode the frames at the sorted ``indices`` of a video, skipping the others with ``grab()``."""
    cap = _open_video(path)
    try:
        pos = 0
        for idx in indices:
            while pos < idx and cap.grab():
                pos += 1
            ok, frame = cap.read() if pos == idx else (False, None)
            if not ok or frame is None:  # containers may over-report their frame count
                LOGGER.warning("calibration video %s: frame %d could not be read (video ended at frame %d); "
                               "calibrating on the frames read so far", path, idx, pos)
                return
            pos += 1
            yield frame
    finally:
        cap.release()


@dataclass(frozen=True)
class _Selection:
    kind: str  # "images" | "video"
    path: Path
    items: Tuple[Any, ...]  # image Paths, or frame indices


class CalibrationData:
    """Preprocessed calibration batches from a folder, a dataset yaml or a video.

    Args:
        source: image folder, dataset ``.yaml``, or video file.
        input_hw: ``(h, w)`` network input size (the model's ``imgsz``).
        num_images: how many images/frames to calibrate on (fewer if the source has fewer).
        batch_size: images per batch; the last batch is padded by repeating its last image when
            ``pad_last=True`` (static-batch models), else it is smaller.
        split: dataset split to read from a yaml (``"train"`` by default).
        holdout: number of images set aside (disjoint from the calibration images when the source is large
            enough) for sensitivity analysis, see :meth:`holdout_batches`.
        stride: model stride, passed to the letterbox.
        fmt: input format, ``"float32_nchw_rgb"`` (default) or ``"uint8_nhwc_bgr"``.
        dtype: array dtype for float formats.
        progress: show progress while iterating (a bar, or log lines when stderr is not a terminal).

    Each batch is the ``batch`` array returned by :func:`edge_detect.preprocess.preprocess` for those images:
    float32 ``(B, 3, h, w)`` RGB in ``[0, 1]`` (or uint8 ``(B, h, w, 3)`` BGR), letterboxed to a square with pad
    value 114 and ``auto=False``.

    Raises:
        DataError / SourceError: the source is missing, unreadable or empty.
    """

    def __init__(self, source: PathLike, input_hw: Tuple[int, int] = (640, 640), num_images: int = 500,
                 batch_size: int = 1, split: str = "train", holdout: int = 0, stride: int = 32,
                 fmt: str = "float32_nchw_rgb", dtype: Any = np.float32, pad_last: bool = True,
                 progress: bool = True) -> None:
        if batch_size < 1:
            raise DataError(f"calibration batch_size: expected >= 1, got {batch_size}")
        self.source = Path(source)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.fmt = fmt
        self.dtype = dtype
        self.pad_last = pad_last
        self.progress = progress
        self.kind, total, items = self._scan(split)
        calib, held = split_holdout(total, int(num_images), int(holdout))
        self._calib = _Selection(self.kind, self.source, tuple(items[i] for i in calib) if items else tuple(calib))
        self._holdout = _Selection(self.kind, self.source, tuple(items[i] for i in held) if items else tuple(held))
        if len(calib) < num_images:
            LOGGER.info("calibration: %s has %d usable images, fewer than the %d requested; using all of them",
                        self.source, len(calib), num_images)

    def _scan(self, split: str) -> Tuple[str, int, Optional[List[Path]]]:
        src = self.source
        if not src.exists():
            raise DataError(f"calibration source not found: {src} (expected an image folder, a dataset yaml "
                            f"or a video file)")
        if src.is_dir():
            files = list_images(src)
            return "images", len(files), files
        suffix = src.suffix.lower()
        if suffix in YAML_SUFFIXES:
            files = dataset_images(src, split)
            return "images", len(files), files
        if suffix in VIDEO_SUFFIXES:
            return "video", video_frame_count(src), None
        if suffix in IMAGE_SUFFIXES:
            return "images", 1, [src]
        raise DataError(f"calibration source {src}: expected a folder, a dataset yaml ({', '.join(YAML_SUFFIXES)}) "
                        f"or a video ({', '.join(VIDEO_SUFFIXES)}), got '{suffix}'")

    # ------------------------------------------------------------------ sizes
    @property
    def num_images(self) -> int:
        """Number of calibration images/frames actually used."""
        return len(self._calib.items)

    @property
    def num_holdout(self) -> int:
        """Number of hold-out images/frames."""
        return len(self._holdout.items)

    @property
    def items(self) -> Tuple[Any, ...]:
        """The calibration items: image paths, or 0-based frame indices for a video."""
        return self._calib.items

    @property
    def holdout_items(self) -> Tuple[Any, ...]:
        """The hold-out items: image paths, or frame indices for a video."""
        return self._holdout.items

    def __len__(self) -> int:
        """Number of calibration batches."""
        return -(-self.num_images // self.batch_size)

    def describe(self) -> Dict[str, Any]:
        """JSON-ready summary: source, kind, split, counts, input size (for reports and metadata)."""
        return {"source": str(self.source), "kind": self.kind, "images": self.num_images,
                "holdout": self.num_holdout, "batch_size": self.batch_size, "input_hw": list(self.input_hw)}

    # ------------------------------------------------------------------ iteration
    def _images(self, sel: _Selection) -> Iterator[np.ndarray]:
        if sel.kind == "video":
            yield from _read_frames(sel.path, sel.items)
        else:
            for p in sel.items:
                yield _read_image(p)

    def _preprocess(self, images: List[np.ndarray]) -> np.ndarray:
        from edge_detect.preprocess import preprocess

        batch, _ = preprocess(images, self.input_hw, stride=self.stride, auto=False, fmt=self.fmt, dtype=self.dtype)
        return batch

    def _batches(self, sel: _Selection, desc: str) -> Iterator[np.ndarray]:
        from edge_detect.progress import progress

        pending: List[np.ndarray] = []
        bar = progress(total=len(sel.items), desc=desc, unit="img", disable=not self.progress)
        try:
            for img in self._images(sel):
                pending.append(img)
                bar.update(1)
                if len(pending) == self.batch_size:
                    yield self._preprocess(pending)
                    pending = []
            if pending:
                if self.pad_last:
                    pending += [pending[-1]] * (self.batch_size - len(pending))
                yield self._preprocess(pending)
        finally:
            bar.close()

    def batches(self) -> Iterator[np.ndarray]:
        """Yield the calibration batches (see class doc for layout); restartable: each call starts over."""
        return self._batches(self._calib, "calibration")

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches()

    def holdout_batches(self) -> Iterator[np.ndarray]:
        """Yield the hold-out batches, same layout as :meth:`batches`."""
        return self._batches(self._holdout, "hold-out")

    def reader(self, input_name: str) -> "CalibrationReader":
        """An ONNX Runtime ``CalibrationDataReader`` feeding the calibration batches as ``{input_name: batch}``."""
        return CalibrationReader(self, input_name)


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` protocol over :class:`CalibrationData` (one batch in memory).

    ``get_next()`` returns ``{input_name: batch}`` or ``None`` at the end; ``rewind()`` starts over.
    """

    def __init__(self, data: CalibrationData, input_name: str) -> None:
        self.data = data
        self.input_name = input_name
        self._it: Optional[Iterator[np.ndarray]] = None

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self._it is None:
            self._it = self.data.batches()
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = None

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        self.rewind()
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return len(self.data)
