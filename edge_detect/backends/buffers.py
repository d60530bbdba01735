"""Pure-Python planning of engine I/O buffers: tensor specs, dtypes, byte sizes, dynamic-shape profiles.

Nothing here imports TensorRT or CUDA, so every rule is unit-tested on any machine. The TensorRT backend
describes its engine's I/O tensors as :class:`TensorSpec` (name, shape with ``-1`` for dynamic axes, dtype
string as TensorRT prints it, input or output), checks requested input shapes against the engine's
optimization profile (:class:`ShapeProfile`), sizes one allocation per tensor for the largest shape the
profile allows (:func:`plan_allocations`), and views the used part of a flat host buffer as an array of
the current shape (:func:`view`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_detect.errors import DataError, ModelLoadError

__all__ = [
    "TensorSpec",
    "ShapeProfile",
    "Allocation",
    "to_numpy_dtype",
    "volume",
    "plan_allocations",
    "view",
    "order_outputs",
    "NMS_OUTPUT_ALIASES",
]

Shape = Tuple[int, ...]

# TensorRT DataType names (as str(trt.DataType.X) prints them, with or without prefix) and NumPy names.
_DTYPES: Dict[str, np.dtype] = {
    "float": np.dtype(np.float32),
    "float32": np.dtype(np.float32),
    "half": np.dtype(np.float16),
    "float16": np.dtype(np.float16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}

# Output names accepted for each slot of the "nms" layout, first = the name edge-detect writes.
NMS_OUTPUT_ALIASES: Tuple[Tuple[str, ...], ...] = (
    ("num_dets", "num_detections", "num"),
    ("boxes", "detection_boxes", "det_boxes"),
    ("scores", "detection_scores", "det_scores"),
    ("classes", "detection_classes", "det_classes", "labels"),
)


def to_numpy_dtype(dtype: Union[str, np.dtype, type]) -> np.dtype:
    """NumPy dtype of a TensorRT / NumPy dtype name.

    Accepts ``"FLOAT"``, ``"DataType.HALF"``, ``"kINT32"``, ``"float16"``, ``np.uint8``... (case-insensitive).

    Raises:
        ModelLoadError: the dtype has no NumPy equivalent edge-detect supports (e.g. ``BF16``, ``FP8``).
    """
    if not isinstance(dtype, str):
        return np.dtype(dtype)
    key = dtype.strip().split(".")[-1].lower()
    if key.startswith("k") and key[1:] in _DTYPES:
        key = key[1:]
    if key not in _DTYPES:
        raise ModelLoadError(f"tensor dtype: expected one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[key]


def volume(shape: Sequence[int]) -> int:
    """Number of elements of a concrete shape (1 for a scalar).

    Raises:
        DataError: a dimension is negative (still dynamic).
    """
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise DataError(f"shape: expected concrete dimensions >= 0, got {dims}")
    return int(np.prod(dims, dtype=np.int64)) if dims else 1


@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor.

    Attributes:
        name: tensor name in the engine.
        shape: dimensions, ``-1`` for dynamic axes (as ``engine.get_tensor_shape`` reports them).
        dtype: NumPy dtype (converted from a TensorRT dtype name on creation).
        is_input: input (host -> device) or output (device -> host).
    """

    name: str
    shape: Shape
    dtype: np.dtype
    is_input: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", to_numpy_dtype(self.dtype))

    @property
    def dynamic(self) -> bool:
        """Whether any axis is dynamic (``-1``)."""
        return any(d < 0 for d in self.shape)

    def nbytes(self, shape: Optional[Sequence[int]] = None) -> int:
        """Bytes for ``shape`` (default: the spec's own shape, which must then be static)."""
        return volume(self.shape if shape is None else shape) * self.dtype.itemsize

    def check(self, shape: Sequence[int]) -> Shape:
        """Validate a concrete ``shape`` against this spec: same rank, equal on every static axis.

        Returns:
            the shape as a tuple of ints.

        Raises:
            DataError: rank or a static dimension differs (message shows expected vs actual).
        """
        got = tuple(int(d) for d in shape)
        ok = len(got) == len(self.shape) and all(s < 0 or s == g for s, g in zip(self.shape, got))
        if not ok or any(g < 0 for g in got):
            want = "(" + ", ".join("?" if s < 0 else str(s) for s in self.shape) + ")"
            raise DataError(f"tensor '{self.name}': expected shape {want}, got {got}")
        return got


@dataclass(frozen=True)
class ShapeProfile:
    """An optimization profile of one input: the min / opt / max shapes an engine accepts.

    All three have the same rank and ``min <= opt <= max`` element-wise (checked on creation).
    """

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for k in ("min", "opt", "max"):
            object.__setattr__(self, k, tuple(int(d) for d in getattr(self, k)))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise DataError(
                f"shape profile: expected min/opt/max of one rank, got {self.min}, {self.opt}, {self.max}")
        if any(d <= 0 for d in self.min) or not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise DataError(
                f"shape profile: expected 0 < min <= opt <= max on every axis, got min {self.min}, "
                f"opt {self.opt}, max {self.max}")

    @classmethod
    def static(cls, shape: Sequence[int]) -> "ShapeProfile":
        """The profile of a static shape (min = opt = max)."""
        return cls(tuple(shape), tuple(shape), tuple(shape))

    @classmethod
    def parse(cls, value: Union["ShapeProfile", Mapping[str, Sequence[int]], Sequence[Sequence[int]]]
              ) -> "ShapeProfile":
        """From a profile, a ``{"min": ..., "opt": ..., "max": ...}`` mapping or a ``(min, opt, max)`` triple."""
        if isinstance(value, ShapeProfile):
            return value
        if isinstance(value, Mapping):
            missing = {"min", "opt", "max"} - set(value)
            if missing:
                raise DataError(f"shape profile: expected keys min, opt, max; missing {sorted(missing)}")
            return cls(value["min"], value["opt"], value["max"])
        items = list(value)
        if len(items) != 3:
            raise DataError(f"shape profile: expected (min, opt, max), got {len(items)} shapes")
        return cls(*items)

    def contains(self, shape: Sequence[int]) -> bool:
        """Whether a concrete ``shape`` lies within ``[min, max]`` on every axis."""
        got = tuple(int(d) for d in shape)
        return len(got) == len(self.min) and all(a <= g <= c for a, g, c in zip(self.min, got, self.max))

    def check(self, name: str, shape: Sequence[int]) -> Shape:
        """Return ``shape`` as a tuple, or raise :class:`DataError` naming the allowed range."""
        got = tuple(int(d) for d in shape)
        if not self.contains(got):
            raise DataError(
                f"input '{name}': shape {got} is outside the engine's optimization profile "
                f"(min {self.min}, max {self.max})")
        return got

    def fits(self, spec: TensorSpec) -> None:
        """Check the profile against a tensor spec: same rank, static axes equal to the spec's."""
        for shape in (self.min, self.opt, self.max):
            spec.check(shape)

    def to_dict(self) -> Dict[str, List[int]]:
        """JSON-ready ``{"min": [...], "opt": [...], "max": [...]}``."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class Allocation:
    """How many bytes to allocate for one tensor, and the largest shape it will hold."""

    name: str
    dtype: np.dtype
    max_shape: Shape
    nbytes: int
    is_input: bool


def plan_allocations(specs: Iterable[TensorSpec], max_shapes: Mapping[str, Sequence[int]]
                     ) -> Dict[str, Allocation]:
    """One allocation per tensor, sized for its largest shape.

    Args:
        specs: the engine's I/O tensors.
        max_shapes: the largest concrete shape of each dynamic tensor (inputs: the profile max; outputs:
            what the engine reports once the inputs are set to their max). Static tensors may be omitted.

    Returns:
        ``{name: Allocation}`` in the order of ``specs``. A tensor of 0 elements still gets 1 byte, so every
        tensor has a valid device address.

    Raises:
        DataError: a dynamic tensor has no max shape, or a given shape contradicts the spec.
    """
    plan: Dict[str, Allocation] = {}
    for spec in specs:
        if spec.name in max_shapes:
            shape = spec.check(max_shapes[spec.name])
        elif spec.dynamic:
            raise DataError(f"tensor '{spec.name}': dynamic shape {spec.shape} needs a max shape to allocate")
        else:
            shape = spec.shape
        plan[spec.name] = Allocation(spec.name, spec.dtype, shape, max(spec.nbytes(shape), 1), spec.is_input)
    return plan


def view(buffer: np.ndarray, dtype: Union[str, np.dtype], shape: Sequence[int]) -> np.ndarray:
    """The first ``volume(shape)`` elements of a flat byte buffer, as an array of ``dtype`` and ``shape``.

    Args:
        buffer: 1-D ``uint8`` array (e.g. a pinned host allocation), at least as large as needed.
        dtype: element type of the view.
        shape: concrete shape of the view.

    Returns:
        a view (no copy) sharing memory with ``buffer``.

    Raises:
        DataError: the buffer is too small for ``shape``.
    """
    dt = to_numpy_dtype(dtype)
    need = volume(shape) * dt.itemsize
    if buffer.ndim != 1 or buffer.dtype != np.uint8 or buffer.nbytes < need:
        raise DataError(f"host buffer: expected >= {need} bytes (1-D uint8), got {buffer.nbytes} bytes "
                        f"{buffer.dtype} ndim {buffer.ndim}")
    return buffer[:need].view(dt).reshape(tuple(int(d) for d in shape))


def order_outputs(names: Sequence[str], layout: str) -> List[str]:
    """Output tensor names in the order of an output layout.

    Args:
        names: the engine's output tensor names, in engine order.
        layout: ``"raw"`` (one output) or ``"nms"`` (``num_dets, boxes, scores, classes``, matched by the
            names in :data:`NMS_OUTPUT_ALIASES`).

    Raises:
        ModelLoadError: the outputs do not fit the layout.
    """
    names = list(names)
    if layout == "raw":
        if len(names) != 1:
            raise ModelLoadError(f"raw output layout: expected 1 output, got {len(names)}: {names}")
        return names
    if layout != "nms":
        raise ModelLoadError(f"output layout: expected 'raw' or 'nms', got {layout!r}")
    ordered = []
    for aliases in NMS_OUTPUT_ALIASES:
        match = [n for n in names if n.lower() in aliases]
        if len(match) != 1:
            raise ModelLoadError(
                f"nms output layout: expected one output named {' / '.join(aliases)}, got outputs {names}")
        ordered.append(match[0])
    return ordered
