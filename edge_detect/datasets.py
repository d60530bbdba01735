"""YOLO-format datasets: the dataset yaml, image listing, image -> label mapping, label parsing and validation.

A dataset yaml::

    path: ../datasets/coco128     # root; relative paths are relative to the yaml's folder
    train: images/train2017       # a folder, a .txt list of image paths, or a list of those
    val: images/val2017
    test:                         # optional
    names: {0: person, 1: bicycle}   # or a list [person, bicycle]

Labels live beside the images with ``images`` replaced by ``labels`` in the path and a ``.txt`` suffix; one
row per object ``class cx cy w h``, normalized to ``[0, 1]`` by the image width/height. A missing label
file means an image without objects. Rows with more than 5 values are polygons ``class x1 y1 x2 y2 ...``
(YOLO segment labels) and are reduced to their bounding box.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect.config import load_yaml
from edge_detect.errors import ConfigError, DataError
from edge_detect.paths import IMAGE_SUFFIXES, PathLike

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "DatasetSpec", "load_dataset", "list_images", "label_path",
           "parse_labels", "load_labels"]

LOGGER = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_TOL = 1e-6  # slack on the [0, 1] range of normalized coordinates (float text rounding)



@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset yaml.

    Attributes:
        yaml_path: the yaml file.
        root: the resolved ``path`` (dataset root).
        names: class names, index = class id.
        splits: ``{"train"|"val"|"test": [absolute folder or list-file paths]}`` for the splits present.
    """

    yaml_path: Path
    root: Path
    names: Tuple[str, ...]
    splits: Mapping[str, Tuple[Path, ...]] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def images(self, split: str = "val") -> List[Path]:
        """Sorted image files of a split.

        Raises:
            DataError: the split is not in the yaml, or one of its folders / list files does not exist.
        """
        if split not in self.splits:
            raise DataError(f"{self.yaml_path}: split '{split}' not defined; expected one of "
                            f"{sorted(self.splits)}")
        return list_images(self.splits[split])


def _names(raw: Any, where: Path) -> Tuple[str, ...]:
    if isinstance(raw, Mapping):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: names: expected integer class ids as keys, got {list(raw)[:5]}") from exc
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: names: expected class ids 0..{len(keys) - 1} without gaps, got {keys}")
        return tuple(str(raw[k] if k in raw else raw[str(k)]) for k in keys)
    if isinstance(raw, (list, tuple)) and raw:
        return tuple(str(n) for n in raw)
    raise DataError(f"{where}: names: expected a non-empty list or {{id: name}} mapping, got {raw!r}")


def load_dataset(path: PathLike) -> DatasetSpec:
    """Read a dataset yaml (see the module doc).

    Args:
        path: the ``.yaml`` file.

    Returns:
        A :class:`DatasetSpec` with absolute split paths (existence is checked when listing images).

    Raises:
        DataError: the file is missing, not a mapping, or has invalid ``names`` / splits.
    """
    yaml_path = Path(path).resolve()
    if not yaml_path.is_file():
        raise DataError(f"dataset yaml not found: {yaml_path}")
    try:
        data = load_yaml(yaml_path)
    except ConfigError as exc:
        raise DataError(str(exc)) from exc
    if not isinstance(data, Mapping):
        raise DataError(f"{yaml_path}: expected a mapping with path/train/val/names, got {type(data).__name__}")
    root = Path(data.get("path") or ".")
    root = (root if root.is_absolute() else yaml_path.parent / root).resolve()
    splits: Dict[str, Tuple[Path, ...]] = {}
    for split in SPLITS:
        value = data.get(split)
        if value in (None, ""):
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, str) for v in items):
            raise DataError(f"{yaml_path}: {split}: expected a path or a list of paths, got {value!r}")
        splits[split] = tuple(p if p.is_absolute() else (root / p) for p in (Path(v) for v in items))
    if not splits:
        raise DataError(f"{yaml_path}: expected at least one of {SPLITS}, got keys {sorted(data)}")
    if "names" not in data:
        raise DataError(f"{yaml_path}: missing 'names' (list of class names or {{id: name}} mapping)")
    return DatasetSpec(yaml_path=yaml_path, root=root, names=_names(data["names"], yaml_path), splits=splits)


def _from_list_file(path: Path) -> List[Path]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else (path.parent / p))
    return out


def list_images(sources: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    """Image files under folders, in ``.txt`` list files, matched by globs, or given directly.

    Args:
        sources: one or several of: a folder (searched recursively), a ``.txt`` file listing image paths
            (relative ones are relative to the list file's folder), a glob pattern, an image file.

    Returns:
        Sorted, de-duplicated image paths (suffix in :data:`IMAGE_SUFFIXES`, case-insensitive).

    Raises:
        DataError: a source does not exist (naming it).
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    found: List[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found += [f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        elif p.is_file() and p.suffix.lower() == ".txt":
            found += [f for f in _from_list_file(p) if f.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            found.append(p)
        elif glob.has_magic(str(p)):
            found += [Path(f) for f in glob.glob(str(p), recursive=True)
                      if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", str(item)):  # Path() would turn "//" into "/"
            from edge_detect.urls import mask_credentials

            raise DataError(f"image source {mask_credentials(str(item))}: expected a local image file, folder or "
                            "glob, got a URL (streams and cameras are read by `edge-detect run --source URL`)")
        else:
            raise DataError(f"image source not found: {item}")
    return sorted(set(found))


def label_path(image: PathLike) -> Path:
    """The label file of an image: last ``images`` folder in the path -> ``labels``, suffix -> ``.txt``."""
    parts = list(Path(image).parts)
    idx = max((i for i, part in enumerate(parts[:-1]) if part == "images"), default=None)
    if idx is None:
        return Path(image).with_suffix(".txt")
    parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse_row(values: List[str], nc: Optional[int], where: str) -> List[float]:
    try:
        nums = [float(v) for v in values]
    except ValueError as exc:
        raise DataError(f"{where}: expected numbers 'class cx cy w h', got {' '.join(values)!r}") from exc
    if len(nums) < 5 or (len(nums) > 5 and (len(nums) - 1) % 2):
        raise DataError(f"{where}: expected 5 values 'class cx cy w h' (or class + polygon x y pairs), "
                        f"got {len(nums)}")
    cls = nums[0]
    if cls != int(cls) or cls < 0 or (nc is not None and cls >= nc):
        limit = f"0..{nc - 1}" if nc is not None else ">= 0"
        raise DataError(f"{where}: class: expected an integer in {limit}, got {values[0]}")
    coords = np.asarray(nums[1:])
    if coords.min() < -_TOL or coords.max() > 1 + _TOL:
        raise DataError(f"{where}: coordinates: expected normalized values in [0, 1], got {values[1:]}")
    if len(nums) > 5:  # polygon -> box
        xs, ys = coords[0::2], coords[1::2]
        return [cls, (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(), ys.max() - ys.min()]
    return nums


def parse_labels(path: PathLike, nc: Optional[int] = None) -> np.ndarray:
    """Read and validate one YOLO label file.

    Args:
        path: the ``.txt`` label file; a missing file means no objects.
        nc: number of classes; class ids must be in ``[0, nc)`` (unchecked upper bound if ``None``).

    Returns:
        float32 ``(n, 5)`` rows ``[class, cx, cy, w, h]``, box centre and size normalized by the image size.

    Raises:
        DataError: a row is malformed, a class is out of range or a coordinate is outside ``[0, 1]``; the
            message names the file and the 1-based line.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        values = line.split()
        if values:
            rows.append(_parse_row(values, nc, f"{path}:{lineno}"))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def load_labels(images: Sequence[PathLike], nc: Optional[int] = None) -> List[np.ndarray]:
    """:func:`parse_labels` of :func:`label_path` for each image (same order)."""
    return [parse_labels(label_path(im), nc) for im in images]
