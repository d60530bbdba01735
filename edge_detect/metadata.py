"""Model metadata: what an exported ``.onnx`` / ``.engine`` was built from and how to feed it.

Build and runtime meet only through files. The build side writes a :class:`ModelMetadata` as JSON into the
ONNX ``metadata_props`` (key ``"edge_detect"``) or beside an engine; the runtime reads it back with
``json`` (never ``eval``) and validates it.

Output layouts:

* ``"raw"``: one output, decoded but before NMS; its shape depends on the ``head``:

  - ``head="yolov5"`` (anchor-based YOLOv5): ``(B, N, 5 + nc)`` float: ``cx, cy, w, h`` in input (letterbox)
    pixels, objectness, ``nc`` class probabilities (sigmoid and YOLOv5 Detect decoding applied);
  - ``head="anchor_free"`` (ultralytics YOLOv5u / YOLOv8 / YOLO11 ``Detect``): ``(B, 4 + nc, N)`` float, channels
    first: ``cx, cy, w, h`` in input (letterbox) pixels then ``nc`` class scores (sigmoid applied); no objectness.

* ``"nms"``: four outputs ``num_dets`` int32 ``(B, 1)``, ``boxes`` float ``(B, K, 4)`` xyxy letterbox pixels,
  ``scores`` float ``(B, K)``, ``classes`` int32 ``(B, K)`` (in-graph / in-engine NMS).

Input formats:

* ``"float32_nchw_rgb"``: letterboxed, RGB, ``/255``, NCHW float32 (float16 for ``--half`` models).
* ``"uint8_nhwc_bgr"``: letterboxed BGR uint8 NHWC; conversion and normalization happen inside the graph.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from edge_detect.errors import ModelLoadError

__all__ = ["ModelMetadata", "METADATA_KEY", "OUTPUT_LAYOUTS", "INPUT_FORMATS", "HEADS", "SCHEMA_VERSION",
           "read_onnx_metadata", "write_onnx_metadata"]

METADATA_KEY = "edge_detect"
SCHEMA_VERSION = 1
OUTPUT_LAYOUTS = ("raw", "nms")
INPUT_FORMATS = ("float32_nchw_rgb", "uint8_nhwc_bgr")
PRECISIONS = ("fp32", "fp16", "int8")
HEADS = ("yolov5", "anchor_free")


@dataclass(frozen=True)
class ModelMetadata:
    """Self-description of an exported model.

    Attributes:
        names: class names, index = class id.
        imgsz: ``(h, w)`` input size the model was exported at (for dynamic models: the nominal size).
        stride: the largest stride (32 for YOLOv5 P5 models); dynamic inputs must be multiples of it.
        batch: exported batch size (for dynamic-batch models: the max of the profile, else fixed).
        dynamic: whether height/width (and batch) are dynamic axes.
        output_layout: ``"raw"`` or ``"nms"`` (see module doc).
        head: ``"yolov5"`` (anchor-based, objectness) or ``"anchor_free"`` (ultralytics ``Detect``); sets the
            shape and meaning of the ``"raw"`` output (see module doc).
        input_format: ``"float32_nchw_rgb"`` or ``"uint8_nhwc_bgr"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        source_sha256: sha256 of the checkpoint (for ONNX) or of the ONNX (for engines) it was built from.
        source_path: path of that source file at build time (used by ``--rebuild-on-mismatch``).
        versions: tool versions at build time, e.g. ``{"torch": ..., "onnx": ..., "edge_detect": ...}``.
        nms: NMS settings baked into an ``"nms"`` model (conf, iou, max_det, agnostic), else empty.
        quantization: INT8 details (calibration method, images, excluded layers, measured mAP), else empty.
        extra: anything else (TensorRT version, GPU name and compute capability for engines...).
    """

    names: Tuple[str, ...]
    imgsz: Tuple[int, int] = (640, 640)
    stride: int = 32
    batch: int = 1
    dynamic: bool = False
    output_layout: str = "raw"
    head: str = "yolov5"
    input_format: str = "float32_nchw_rgb"
    precision: str = "fp32"
    source_sha256: str = ""
    source_path: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    nms: Mapping[str, Any] = field(default_factory=dict)
    quantization: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "imgsz", tuple(int(v) for v in self.imgsz))
        if len(self.imgsz) != 2 or min(self.imgsz) <= 0:
            raise ModelLoadError(f"model metadata imgsz: expected (h, w) > 0, got {self.imgsz}")
        if self.output_layout not in OUTPUT_LAYOUTS:
            raise ModelLoadError(
                f"model metadata output_layout: expected one of {OUTPUT_LAYOUTS}, got {self.output_layout!r}")
        if self.head not in HEADS:
            raise ModelLoadError(f"model metadata head: expected one of {HEADS}, got {self.head!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ModelLoadError(
                f"model metadata input_format: expected one of {INPUT_FORMATS}, got {self.input_format!r}")
        if self.precision not in PRECISIONS:
            raise ModelLoadError(
                f"model metadata precision: expected one of {PRECISIONS}, got {self.precision!r}")

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def replace(self, **changes: Any) -> "ModelMetadata":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["names"] = list(self.names)
        d["imgsz"] = list(self.imgsz)
        for k in ("versions", "nms", "quantization", "extra"):
            d[k] = dict(d[k])
        return d

    def to_json(self) -> str:
        """Serialize with ``json`` (sorted keys, stable)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelMetadata":
        """Build from a dict; unknown keys are kept under ``extra`` so newer files still load."""
        if not isinstance(d, Mapping) or "names" not in d:
            raise ModelLoadError("model metadata: expected a JSON object with at least 'names'")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        unknown = {k: v for k, v in d.items() if k not in known}
        if unknown:
            kwargs["extra"] = {**dict(kwargs.get("extra", {})), **unknown}
        names = kwargs["names"]
        if isinstance(names, Mapping):  # ultralytics style {0: "person", ...}
            kwargs["names"] = [names[k] for k in sorted(names, key=lambda x: int(x))]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ModelLoadError(f"model metadata: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        """Parse JSON text written by :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"model metadata is not valid JSON: {exc}") from exc

    @classmethod
    def from_onnx_props(cls, props: Mapping[str, str]) -> Optional["ModelMetadata"]:
        """Read from an ONNX ``metadata_props`` / ORT ``custom_metadata_map``; ``None`` if absent.

        The ``edge_detect`` key (JSON) wins; otherwise the keys ultralytics' exporter writes are read (see the
        module doc): such a model is ``head="anchor_free"``, ``output_layout="raw"``.

        Raises:
            ModelLoadError: unparsable values, or an ultralytics model that is not a plain detection model
                (segment / pose / obb / classify task, or an NMS-free ``end2end`` head).
        """
        if METADATA_KEY in props:
            return cls.from_json(props[METADATA_KEY])
        if "names" in props:
            return cls._from_ultralytics_props(props)
        return None

    @classmethod
    def _from_ultralytics_props(cls, props: Mapping[str, str]) -> "ModelMetadata":
        def literal(key: str, default: Any) -> Any:
            if key not in props:
                return default
            try:
                return ast.literal_eval(props[key])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                raise ModelLoadError(f"ultralytics ONNX metadata {key!r}: expected a Python literal, got "
                                     f"{props[key][:80]!r} ({type(exc).__name__})") from exc

        task = str(props.get("task", "detect"))  # plain strings, not literals
        if task != "detect":
            raise ModelLoadError(f"ultralytics ONNX metadata task: expected 'detect', got {task!r}: edge-detect "
                                 "runs detection models only (not segment, pose, obb or classify)")
        if literal("end2end", False) is True:
            raise ModelLoadError("ultralytics ONNX metadata end2end: expected False, got True: NMS-free (end2end) "
                                 "heads are not supported; export the model with end2end=False")
        args = literal("args", {})
        args = args if isinstance(args, Mapping) else {}
        if args.get("nms"):
            raise ModelLoadError("ultralytics ONNX metadata args.nms: expected False, got True: export the model "
                                 "without ultralytics' NMS (nms=False) and add edge-detect's with --nms")
        names = literal("names", None)
        if not isinstance(names, (Mapping, list, tuple)) or not names:
            raise ModelLoadError(f"ultralytics ONNX metadata names: expected a dict or list of class names, got "
                                 f"{type(names).__name__}")
        imgsz = literal("imgsz", [640, 640])
        imgsz = [imgsz, imgsz] if isinstance(imgsz, int) else imgsz
        try:
            return cls.from_dict({
                "names": names, "imgsz": imgsz, "stride": int(literal("stride", 32)),
                "batch": int(literal("batch", 1)), "dynamic": bool(args.get("dynamic", False)),
                "output_layout": "raw", "head": "anchor_free", "input_format": "float32_nchw_rgb",
                "precision": "fp16" if args.get("half") else "fp32",
                "versions": {"ultralytics": str(props.get("version", ""))},
                "extra": {"exported_by": "ultralytics"}})
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"ultralytics ONNX metadata: {exc}") from exc


def read_onnx_metadata(model: Any) -> Optional[ModelMetadata]:
    """The :class:`ModelMetadata` of an ONNX ``ModelProto`` (its ``metadata_props``), ``None`` when absent.

    Also accepts the ``{key: value}`` mapping ONNX Runtime returns (``get_modelmeta().custom_metadata_map``).
    No ``onnx`` import is needed: the proto is only read.

    Raises:
        ModelLoadError: the metadata is present but invalid.
    """
    props = model if isinstance(model, Mapping) else {p.key: p.value for p in model.metadata_props}
    return ModelMetadata.from_onnx_props(props)


def write_onnx_metadata(model: Any, meta: ModelMetadata, keep_other: bool = True) -> Any:
    """Store ``meta`` as JSON under :data:`METADATA_KEY` in ``model.metadata_props`` (in place); returns ``model``.

    Args:
        model: an ONNX ``ModelProto``.
        meta: the metadata to store (replaces any previous ``edge_detect`` entry).
        keep_other: keep the other keys already there (e.g. a producer's own); ``False`` clears them.
    """
    kept = [(p.key, p.value) for p in model.metadata_props if keep_other and p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
    return model
