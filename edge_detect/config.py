"""Frozen-dataclass configuration loaded from YAML by one loader that rejects unknown keys.

Usage::

    @dataclass(frozen=True)
    class Thresholds:
        conf: float = 0.25
        iou: float = 0.45

    cfg = load_config("configs/app/default.yaml", AppConfig)     # file -> dataclass
    cfg = from_mapping({"conf": 0.3}, Thresholds)                # dict -> dataclass
    cfg = override(cfg, {"conf": 0.5, "iou": None})              # CLI flags (None = not given)

Nested dataclasses, ``Optional[...]``, ``Tuple[...]``/``List[...]`` and basic scalars are supported. An unknown
key raises :class:`~edge_detect.errors.ConfigError` naming the closest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import yaml

from edge_detect.errors import ConfigError

__all__ = ["load_config", "from_mapping", "override", "load_yaml", "parse_imgsz", "check_thresholds",
           "suggest_key"]

T = TypeVar("T")
ImageSize = Union[int, str, Sequence[Union[int, str]]]


def load_yaml(path: Union[str, os.PathLike]) -> Any:
    """Read a YAML file with ``yaml.safe_load``; errors become one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        with p.open("r", encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: {_yaml_error(exc)}") from exc


def _yaml_error(exc: yaml.YAMLError) -> str:
    """``invalid YAML at line L, column C: <problem> (<context>)`` (1-based, where PyYAML knows the place)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    context = getattr(exc, "context", None)
    return f"invalid YAML{place}: {problem}" + (f" ({context})" if context else "")


def load_config(path: Union[str, os.PathLike], cls: Type[T]) -> T:
    """Load a YAML file into the frozen dataclass ``cls`` (unknown keys rejected)."""
    data = load_yaml(path)
    if data is None:
        data = {}
    return from_mapping(data, cls, where=str(path))


def suggest_key(key: str, known: typing.Iterable[str]) -> str:
    """``" (did you mean 'conf'?)"`` for the closest of ``known``, or ``""``: the tail of unknown-key errors."""
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


_suggest = suggest_key


def parse_imgsz(value: ImageSize, name: str = "imgsz") -> Tuple[int, int]:
    """The one parser of image sizes: ``640``, ``"640"``, ``[640]`` -> ``(640, 640)``; ``"384x640"``,
    ``"384,640"``, ``(384, 640)``, ``["384", "640"]`` -> ``(h, w)`` = ``(384, 640)``.

    Only the form is checked here; what a model accepts (multiples of its stride, the 4096 cap) is
    :func:`edge_detect.preprocess.check_imgsz`.

    Args:
        value: one side (a square) or height and width, as an int, a string or a sequence.
        name: the option name used in the error message.

    Raises:
        ConfigError: not one or two positive integers; the message says ``expected 'S' or 'HxW' ...`` and
            the value given.
    """
    if isinstance(value, bool):
        values: list = []
    elif isinstance(value, (int, str)) or hasattr(value, "__index__"):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", str(int(value) if not isinstance(value, str)
                                                                       else value).lower())
        values = [v for v in match.groups() if v is not None] if match else []
    else:
        try:
            values = [v.strip() if isinstance(v, str) else (str(int(v)) if float(v) == int(v) else "?")
                      for v in value]
        except (TypeError, ValueError):
            values = []
    shown = list(value) if isinstance(value, (list, tuple)) else value
    if len(values) not in (1, 2) or not all(v.isdigit() and int(v) > 0 for v in values):
        raise ConfigError(f"{name}: expected 'S' or 'HxW' (one or two positive integers), got {shown!r}")
    h = int(values[0])
    return h, (int(values[1]) if len(values) == 2 else h)


def check_thresholds(conf: Optional[float] = None, iou: Optional[float] = None, max_det: Optional[int] = None,
                     names: Tuple[str, str, str] = ("conf", "iou", "max_det")) -> None:
    """Validate detection thresholds where they enter (config file, API call); ``None`` = not given.

    ``conf`` and ``iou`` must lie in ``[0, 1]``, ``max_det`` be ``>= 1``. ``names`` are the option names the
    message uses (e.g. ``("nms_conf", "nms_iou", "max_det")``).

    Raises:
        ConfigError: ``"<name>: expected a value in [0, 1], got 1.5"`` / ``"max_det: expected >= 1, got 0"``.
    """
    for name, v in ((names[0], conf), (names[1], iou)):
        if v is not None and not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
            raise ConfigError(f"{name}: expected a value in [0, 1], got {v!r}")
    if max_det is not None and not (isinstance(max_det, (int, float)) and int(max_det) >= 1):
        raise ConfigError(f"{names[2]}: expected >= 1, got {max_det!r}")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        wanted = [m.group(1) for m in (re.search(r": expected (.*), got ", e) for e in errors) if m]
        if len(wanted) == len(errors) > 1:  # one line naming every form the key takes
            raise ConfigError(f"{where}: expected {' or '.join(wanted)}, got {value!r}")
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_mapping(value, tp, where=where)
    if origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            elem = args[0] if args else Any
            items = [_convert(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else list(items)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    return value


def from_mapping(data: Mapping[str, Any], cls: Type[T], where: str = "config") -> T:
    """Build the dataclass ``cls`` from a mapping, converting nested values and rejecting unknown keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{_suggest(key, fields)}; "
                              f"known keys: {', '.join(sorted(fields))}")
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def override(cfg: T, changes: Mapping[str, Any]) -> T:
    """Return ``cfg`` with ``changes`` applied; ``None`` values (flags not given) are ignored.

    Dotted keys (``"capture.fps"``) reach into nested dataclasses.
    """
    flat: dict = {}
    nested: dict = {}
    for key, value in changes.items():
        if value is None:
            continue
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    converted = {}
    for key, value in flat.items():
        if key not in names:
            raise ConfigError(f"unknown option '{key}'{_suggest(key, names)}")
        converted[key] = _convert(value, hints[key], key)
    for head, sub in nested.items():
        if head not in names:
            raise ConfigError(f"unknown option '{head}'{_suggest(head, names)}")
        converted[head] = override(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **converted)


def check_options(what: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``options`` holds a keyword ``factory`` does not take.

    Registries (backends, sinks, processors) call this before ``factory(target, **options)`` so that a
    misspelt or misplaced option is an error naming the valid ones instead of being silently dropped.

    Args:
        what: names the thing in the message, e.g. ``"backend 'tensorrt'"``.
        factory: class or function called as ``factory(target, **options)`` or ``factory(**options)``; a first
            parameter without a default is the target and is not an option.
        options: the keyword options to check.

    Raises:
        ConfigError: ``"backend 'tensorrt': unknown option 'threads'; expected one of [...]"``.
    """
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: the call itself reports
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD) \
            and params[0].default is params[0].empty:
        valid = valid[1:]  # the target (path / spec), passed positionally
    unknown = sorted(set(options) - set(valid))
    if unknown:
        close = {u: difflib.get_close_matches(u, valid, n=1, cutoff=0.5) for u in unknown}
        hints = [f"'{m[0]}'" + (f" for '{u}'" if len(unknown) > 1 else "") for u, m in close.items() if m]
        raise ConfigError(f"{what}: unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(u) for u in unknown)}; expected one of {valid}"
                          + (f" (did you mean {', '.join(hints)}?)" if hints else ""))
