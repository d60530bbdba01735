"""Helpers shared by the analytics processors (ByteTrack, lines, zones): stream time, class names, filters."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set, Union

import numpy as np

from edge_detect.config import suggest_key
from edge_detect.errors import ConfigError
from edge_detect.stream.geometry import ANCHORS
from edge_detect.types import Frame

__all__ = ["media_time", "class_name", "resolve_class_filter", "class_allowed", "parse_named_numbers", "check_scale"]


def media_time(frame: Frame, fps: Optional[float] = None) -> float:
    """Seconds on the stream's own clock, used for track buffers and dwell times.

    ``frame.index / fps`` when ``fps`` is given; else the presentation timestamp (``pts_ms / 1000``, files);
    else ``frame.wall_time`` (live sources, image folders: capture time).
    """
    if fps:
        return frame.index / float(fps)
    if frame.pts_ms is not None:
        return float(frame.pts_ms) / 1000.0
    return float(frame.wall_time)


def class_name(class_id: int, names: Sequence[str]) -> str:
    """``names[class_id]``, or the id as a string when unknown."""
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


def resolve_class_filter(classes: Optional[Sequence[Union[int, str]]], names: Sequence[str],
                         what: str) -> Optional[Set[Union[int, str]]]:
    """A class filter (names or ids) as a set of ids, ``None`` = every class.

    Without ``names`` (a processor built before the model is known, e.g. while a config file is checked) class
    names are kept as strings and compared with the class names given later.

    Raises:
        ConfigError: a name that is not in ``names`` (when names are known) or an id out of range.
    """
    if classes is None:
        return None
    if isinstance(classes, (str, int)):
        classes = [classes]
    ids: Set[Union[int, str]] = set()
    for c in classes:
        if isinstance(c, int) or (isinstance(c, str) and c.strip().lstrip("-").isdigit()):
            cid = int(c)
            if cid < 0 or (names and cid >= len(names)):
                raise ConfigError(f"{what} classes: expected ids in [0, {max(len(names) - 1, 0)}], got {cid}")
            ids.add(cid)
        elif names and c in names:
            ids.add(list(names).index(c))
        elif not names and isinstance(c, str) and c:
            ids.add(c)
        else:
            hint = suggest_key(str(c), names) if names else ""
            raise ConfigError(f"{what} classes: expected a class name of the model or an id, got {c!r}{hint}")
    return ids


def class_allowed(class_id: int, allowed: Optional[Set[Union[int, str]]], names: Sequence[str]) -> bool:
    """Whether ``class_id`` passes a filter from :func:`resolve_class_filter`."""
    return allowed is None or class_id in allowed or class_name(class_id, names) in allowed


def _is_name(name: str) -> bool:
    """A region name: Unicode letters and digits (``gäte``, ``门``), ``_``, ``-`` and ``.``; names go into event JSON
    and metric labels only (MQTT topics and snapshot files are named after sources, made safe there)."""
    return bool(name) and all(ch.isalnum() or ch in "_-." for ch in name)


def parse_named_numbers(text: str, what: str, count: Optional[int] = None, min_count: int = 0) -> tuple:
    """Parse ``NAME=v1,v2,...`` (CLI ``--line`` / ``--zone``) into ``(name, [floats])``.

    Args:
        text: the flag value.
        what: ``"--line"`` or ``"--zone"`` for messages.
        count: exact number of values required, or ``None``.
        min_count: least number of values (with ``count=None``).

    Raises:
        ConfigError: one line saying what was expected and what was given.
    """
    form = "NAME=x1,y1,x2,y2" if count == 4 else "NAME=x1,y1,x2,y2,x3,y3[,...]"
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"{what}: expected {form}, got {text!r}")
    name, _, values = text.partition("=")
    name = name.strip()
    if not _is_name(name):
        raise ConfigError(f"{what}: expected a name of letters, digits, '_', '-' or '.' before '=', got {name!r}")
    parts = [p.strip() for p in values.split(",")]
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{what} {name}: expected numbers separated by commas, got {values!r}") from None
    if any(n != n or n in (float("inf"), float("-inf")) for n in nums):
        raise ConfigError(f"{what} {name}: expected finite numbers, got {values!r}")
    if count is not None and len(nums) != count:
        raise ConfigError(f"{what} {name}: expected {count} numbers ({form}), got {len(nums)}")
    if len(nums) < min_count or len(nums) % 2:
        raise ConfigError(f"{what} {name}: expected an even number of at least {min_count} numbers ({form}), "
                          f"got {len(nums)}")
    return name, nums


def region_specs(entries: Union[Mapping[str, Any], Sequence[Any]], *, kind: str, spec_type: type, points_key: str,
                 form: str, parse: Callable[[str], tuple], check: Callable[[tuple, str], Any]) -> List[Any]:
    """Normalize line or zone definitions into ``spec_type(name, points, classes, anchor, ...)`` objects.

    Accepts ``{name: [numbers]}``, ``{name: {points_key|"points": [...], "classes": [...], "anchor": ...,
    "meters_per_px": ...}}`` (the keys are the fields of ``spec_type``), ``spec_type`` objects and ``"NAME=..."``
    strings (parsed by ``parse`` into ``(name, numbers)``).

    Args:
        kind: ``"line"`` or ``"zone"``, for messages.
        points_key: the mapping key of the points (``"xyxy"`` or ``"polygon"``).
        form: the expected string form, for messages (``NAME=x1,y1,x2,y2``).
        check: validates the points (raises ConfigError), called as ``check(points, f"{kind} {name}")``.

    Raises:
        ConfigError: bad geometry, unknown keys, an unknown anchor, a scale that is not a number > 0 or duplicate
            names.
    """
    items: List[Any] = []
    for entry in list(entries.items()) if isinstance(entries, Mapping) else list(entries):
        if isinstance(entry, spec_type):
            spec = entry
        elif isinstance(entry, str):
            name, nums = parse(entry)
            spec = spec_type(name, tuple(nums))
        elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
            spec = _spec_from_value(entry[0], entry[1], kind, spec_type, points_key)
        else:
            raise ConfigError(f"{kind}s: expected {form} or a mapping of names to points, got {entry!r}")
        name, points, anchor = spec.name, getattr(spec, points_key), spec.anchor
        check(points, f"{kind} {name}")
        if anchor is not None and anchor not in ANCHORS:
            raise ConfigError(f"{kind} {name} anchor: expected one of {', '.join(ANCHORS)}, got {anchor!r}")
        check_scale(getattr(spec, "meters_per_px", None), f"{kind} {name} meters_per_px")
        if any(s.name == name for s in items):
            raise ConfigError(f"{kind}s: expected unique names, got {name!r} twice")
        items.append(spec)
    return items


def _flat(points: Any) -> tuple:
    return tuple(np.asarray(points, dtype=object).reshape(-1).tolist())


def check_scale(value: Any, what: str) -> Optional[float]:
    """A ground scale in metres per pixel: ``None``, or a finite number > 0 (as float).

    Raises:
        ConfigError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{what}: expected a number > 0 (metres per pixel) or null, got {value!r}")
    return float(value)


def _spec_from_value(name: str, value: Any, kind: str, spec_type: type, points_key: str) -> Any:
    if not isinstance(value, Mapping):
        return spec_type(name, _flat(value))
    more = [f.name for f in fields(spec_type) if f.name not in ("name", points_key, "classes", "anchor")]
    unknown = set(value) - {points_key, "points", "classes", "anchor", *more}
    if unknown:
        raise ConfigError(f"{kind} {name}: unknown key {sorted(unknown)[0]!r}; expected {points_key} (or points), "
                          f"{', '.join(['classes', 'anchor', *more])}")
    pts = value.get(points_key, value.get("points"))
    if pts is None:
        example = "[x1, y1, x2, y2]" if points_key == "xyxy" else "[x1, y1, x2, y2, x3, y3, ...]"
        raise ConfigError(f"{kind} {name}: expected '{points_key}: {example}', got no points")
    cls = value.get("classes")
    return spec_type(name, _flat(pts), tuple(cls) if cls is not None else None, value.get("anchor"),
                     **{k: value[k] for k in more if k in value})
