"""Request bodies of the REST API (pydantic models) and their validation, with one clear message per mistake.

Geometry is in source-frame pixels, as in the config (:mod:`edge_detect.stream.processors.lines` /
``zones``): a line is ``[x1, y1, x2, y2]`` or ``{"xyxy": [...], "classes": [...], "anchor": ...}``; a zone is a
polygon ``[x1, y1, x2, y2, x3, y3, ...]`` (flat, or ``[[x, y], ...]`` pairs) or ``{"polygon": [...], ...}``.
Every coordinate must be a finite number with ``|v| <= 1e6``; names are 1-64 characters of ``A-Z a-z 0-9 _ . : -``
starting with a letter, digit or ``_``. Lines and zones are normalized to the config's mapping form
(``{NAME: {"xyxy": [...]}}`` / ``{NAME: {"polygon": [...]}}``) before they reach the app.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Dict, List, Mapping, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from edge_detect.errors import ConfigError

__all__ = ["SourceIn", "SourcePatch", "MAX_COORD", "NAME_RE", "check_name"]

#: largest absolute coordinate accepted, pixels
MAX_COORD = 1e6
#: names of sources, lines and zones
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,63}$")
_MAX_REGIONS = 64
_MAX_POINTS = 256
_MAX_CLASSES = 1000
_NAME_RULE = "1-64 characters of A-Z a-z 0-9 _ . : - starting with a letter, digit or _"


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid", message)


def check_name(name: Any, what: str) -> str:
    """``name`` when it follows :data:`NAME_RE`, else a validation error saying so."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail(f"{what} name: expected {_NAME_RULE}, got {name!r}")
    return name


def _coords(values: Any, what: str) -> List[float]:
    if isinstance(values, (list, tuple)) and values and all(isinstance(p, (list, tuple)) for p in values):
        if any(len(p) != 2 for p in values):
            raise _fail(f"{what}: expected [x, y] pairs, got {values!r}"[:300])
        values = [v for p in values for v in p]
    if not isinstance(values, (list, tuple)):
        raise _fail(f"{what}: expected a list of numbers, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(f"{what}: expected numbers, got {v!r}")
        if not math.isfinite(v) or abs(v) > MAX_COORD:
            raise _fail(f"{what}: expected finite coordinates with |v| <= {MAX_COORD:g}, got {v!r}")
        out.append(float(v))
    return out


def _classes(value: Any, what: str) -> List[Union[int, str]]:
    if not isinstance(value, list) or len(value) > _MAX_CLASSES:
        raise _fail(f"{what}.classes: expected a list of at most {_MAX_CLASSES} class names or ids, got {value!r}")
    for c in value:
        ok_int = isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 100000
        if not ok_int and not (isinstance(c, str) and 0 < len(c) <= 64):
            raise _fail(f"{what}.classes: expected class names (1-64 characters) or ids >= 0, got {c!r}")
    return list(value)


def _region(name: Any, value: Any, kind: str) -> Dict[str, Any]:
    """One line / zone in the config's mapping form, checked (see module doc)."""
    key = "xyxy" if kind == "line" else "polygon"
    what = f"{kind} {check_name(name, kind)!r}"
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {key, "classes", "anchor"})
        if unknown:
            raise _fail(f"{what}: unknown key {unknown[0]!r}; expected {key}, classes, anchor")
        if key not in value:
            raise _fail(f"{what}: expected a {key!r} list, got keys {sorted(value)}")
        out: Dict[str, Any] = {key: _coords(value[key], what)}
        if value.get("classes") is not None:
            out["classes"] = _classes(value["classes"], what)
        if value.get("anchor") is not None:
            out["anchor"] = _anchor(value["anchor"], what)
    else:
        out = {key: _coords(value, what)}
    n = len(out[key])
    if kind == "line" and n != 4:
        raise _fail(f"{what}: expected 4 numbers x1, y1, x2, y2, got {n}")
    if kind == "zone" and (n < 6 or n % 2 or n > 2 * _MAX_POINTS):
        raise _fail(f"{what}: expected 3 to {_MAX_POINTS} x, y points (an even count of 6 or more numbers), "
                    f"got {n} numbers")
    _check_geometry(out[key], kind, what)
    return out


def _anchor(value: Any, what: str) -> str:
    from edge_detect.stream.geometry import ANCHORS

    if value not in ANCHORS:
        raise _fail(f"{what}.anchor: expected one of {', '.join(ANCHORS)}, got {value!r}")
    return str(value)


def _check_geometry(values: List[float], kind: str, what: str) -> None:
    """Zero-length lines and zero-area zones (the counters' own checks)."""
    from edge_detect.stream.geometry import as_polygon, as_segment

    try:
        (as_segment if kind == "line" else as_polygon)(values, what)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc


def _regions(value: Any, kind: str) -> Dict[str, Dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise _fail(f"{kind}s: expected a mapping {{NAME: geometry}}, got {type(value).__name__}")
    if len(value) > _MAX_REGIONS:
        raise _fail(f"{kind}s: expected at most {_MAX_REGIONS}, got {len(value)}")
    return {str(name): _region(name, geom, kind) for name, geom in value.items()}


_NUM = {"type": "number", "minimum": -MAX_COORD, "maximum": MAX_COORD}
_OBJ = {"classes": {"type": "array", "items": {"type": ["string", "integer"]}}, "anchor": {"type": "string"}}
Lines = Annotated[Dict[str, Any], BeforeValidator(lambda v: _regions(v, "line")), WithJsonSchema({
    "type": "object", "description": "NAME -> [x1, y1, x2, y2] or {xyxy, classes, anchor}, source-frame pixels",
    "additionalProperties": {"oneOf": [
        {"type": "array", "items": _NUM, "minItems": 4, "maxItems": 4},
        {"type": "object", "required": ["xyxy"], "properties": {
            "xyxy": {"type": "array", "items": _NUM, "minItems": 4, "maxItems": 4}, **_OBJ}}]}})]
Zones = Annotated[Dict[str, Any], BeforeValidator(lambda v: _regions(v, "zone")), WithJsonSchema({
    "type": "object", "description": "NAME -> [x1, y1, x2, y2, x3, y3, ...] or {polygon, classes, anchor}",
    "additionalProperties": {"oneOf": [
        {"type": "array", "items": _NUM, "minItems": 6},
        {"type": "object", "required": ["polygon"], "properties": {
            "polygon": {"type": "array", "items": _NUM, "minItems": 6}, **_OBJ}}]}})]
Classes = Annotated[List[Union[int, str]], BeforeValidator(lambda v: _classes(v, "source"))]


class SourceIn(BaseModel):
    """Body of ``POST /api/v1/sources``: a new source."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=4096, description="anything `--source` takes: file, rtsp://, ...")
    id: Optional[str] = Field(None, description=f"source id ({_NAME_RULE}); default: from the URI")
    lines: Lines = Field(default_factory=dict)
    zones: Zones = Field(default_factory=dict)
    options: Dict[str, Any] = Field(default_factory=dict, description="capture options of this source")

    @model_validator(mode="after")
    def _check(self) -> "SourceIn":
        if self.id is not None:
            check_name(self.id, "source")
        if any(ord(c) < 32 for c in self.uri):
            raise _fail("uri: expected no control characters (newline, tab...)")
        return self


class SourcePatch(BaseModel):
    """Body of ``PATCH /api/v1/sources/{id}``: what to change (the rest stays); ``lines`` / ``zones`` replace the
    source's own set (send ``{}`` to remove them all)."""

    model_config = ConfigDict(extra="forbid")

    lines: Optional[Lines] = None
    zones: Optional[Zones] = None
    conf: Optional[float] = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="confidence threshold")
    classes: Optional[Classes] = None
    enabled: Optional[bool] = None
    detect: Optional[Dict[str, Any]] = Field(None, description="the source's own detect keys (mode, fps, "
                                             "stationary_s, regions: README 'CPU boxes'), replacing the previous "
                                             "ones")
    motion: Optional[Dict[str, Any]] = Field(None, description="the source's own motion keys (min_area, mask, "
                                             "method...), replacing the previous ones")

    @model_validator(mode="after")
    def _check(self) -> "SourcePatch":
        if not self.model_fields_set:
            raise _fail("expected at least one of lines, zones, conf, classes, enabled, detect, motion; "
                        "got an empty body")
        return self

    def changes(self) -> Dict[str, Any]:
        """The fields given in the body (keyword arguments of ``App.update_source``)."""
        return {k: getattr(self, k) for k in self.model_fields_set}
