"""argparse ``type=`` validators shared by the subcommands; errors say expected vs actual."""
from __future__ import annotations

import argparse
from typing import Callable, Optional, Sequence, Tuple, TypeVar

from edge_detect.config import parse_imgsz

__all__ = ["positive_int", "non_negative_int", "unit_float", "positive_float", "imgsz_option"]

T = TypeVar("T", int, float)


def _checked(convert: Callable[[str], T], ok: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = expected.replace(" ", "_")
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
unit_float = _checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
positive_float = _checked(float, lambda v: v > 0.0, "a positive number")


def imgsz_option(values: Optional[Sequence[str]], flag: str = "--imgsz") -> Optional[Tuple[int, int]]:
    """``--imgsz`` given as ``S``, ``H W`` or ``HxW`` (``nargs="+"``) -> ``(h, w)``; ``None`` when not given.

    Raises:
        ConfigError: see :func:`edge_detect.config.parse_imgsz`.
    """
    if values is None:
        return None
    return parse_imgsz(values[0] if len(values) == 1 else list(values), name=flag)
