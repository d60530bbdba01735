"""Progress for long loops: a tqdm bar on a terminal, periodic plain log lines when stderr is not one.

With stderr redirected to a file or a pipe (CI logs, ``2> run.log``, systemd), tqdm's carriage-return updates pile
up into one enormous line. :func:`progress` returns a tqdm bar when stderr is a terminal and otherwise a
:class:`LogProgress` with the same small interface, which logs (logger ``edge_detect.progress``, level INFO) one
line every ``interval_s`` seconds and one at the end::

    INFO edge_detect.progress: evaluate val: 64/128 img (50%), 12.3 img/s, 5 s left
    INFO edge_detect.progress: evaluate val: 128/128 img in 10.4 s (12.3 img/s)

Usage, as with tqdm::

    for img in progress(images, total=len(images), desc="evaluate val", unit="img", disable=not show):
        ...
    with progress(total=n_steps, desc="export", unit="step") as bar:
        bar.set_postfix_str("simplify")
        bar.update()

``leave=False`` loops (nested, short) print their final line only if they printed a periodic one. ``-q`` (log
level WARNING) silences the log lines, as it hides the bars. ``$EDGE_DETECT_PROGRESS_S`` sets the interval.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional

__all__ = ["progress", "LogProgress", "INTERVAL_S", "ENV_INTERVAL", "stderr_is_terminal"]

LOGGER = logging.getLogger("edge_detect.progress")
INTERVAL_S = 10.0
ENV_INTERVAL = "EDGE_DETECT_PROGRESS_S"  # seconds between log lines, overriding interval_s


def _interval(default: float) -> float:
    value = os.environ.get(ENV_INTERVAL, "")
    try:
        return max(0.0, float(value)) if value else float(default)
    except ValueError:
        return float(default)


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` is an interactive terminal (where tqdm's bar redraws in place)."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class LogProgress:
    """tqdm's ``update`` / ``set_postfix_str`` / ``close`` / iteration interface as periodic log lines.

    Attributes:
        n: units done so far. total: expected units (``None`` = unknown). desc, unit: as in tqdm.
    """

    def __init__(self, iterable: Optional[Iterable[Any]] = None, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", leave: bool = True, interval_s: float = INTERVAL_S,
                 logger: logging.Logger = LOGGER) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.leave, self.interval_s, self.logger = leave, float(interval_s), logger
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._lines = 0
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress: nothing to iterate (created with total= only)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _head(self) -> str:
        scale, unit = (1e-6, "MB") if self.unit == "B" else (1, self.unit)
        done = f"{self.n * scale:.4g}" + ("" if self.total is None else f"/{self.total * scale:.4g}")
        return f"{self.desc + ': ' if self.desc else ''}{done} {unit}"

    def _tail(self) -> str:
        return f", {self.postfix}" if self.postfix else ""

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units; log a line when ``interval_s`` has passed since the last one."""
        self.n += n
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = now - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [self._head()]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{_fmt_s((self.total - self.n) / rate)} left")
        self.logger.info("%s%s", ", ".join(parts), self._tail())
        self._lines += 1

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw (tqdm API)."""

    def close(self) -> None:
        """Log the final line once (for ``leave=False``, only if a periodic line was logged)."""
        if self._closed:
            return
        self._closed = True
        if not self.n or (not self.leave and not self._lines):
            return
        elapsed = time.monotonic() - self._start
        rate = f" ({self.n / elapsed:.3g} {self.unit}/s)" if elapsed > 0 and math.isfinite(self.n / elapsed) else ""
        self.logger.info("%s in %s%s%s", self._head(), _fmt_s(elapsed), rate, self._tail())


def progress(iterable: Optional[Iterable[Any]] = None, total: Optional[float] = None, desc: str = "",
             unit: str = "it", disable: bool = False, leave: bool = True, interval_s: float = INTERVAL_S,
             **tqdm_kwargs: Any) -> Any:
    """A tqdm bar when stderr is a terminal, else a :class:`LogProgress`; a disabled tqdm when ``disable``.

    Args:
        iterable: what to iterate (optional: use ``update`` with ``total`` instead).
        total: expected number of units (``len(iterable)`` when it has one).
        desc, unit, leave: as in tqdm.
        disable: no output at all (a pass-through).
        interval_s: seconds between log lines when stderr is not a terminal (``$EDGE_DETECT_PROGRESS_S`` overrides).
        **tqdm_kwargs: passed to tqdm on a terminal (``dynamic_ncols``, ``position``, ``unit_scale``...).
    """
    from tqdm import tqdm

    if disable or stderr_is_terminal():
        return tqdm(iterable, total=total, desc=desc or None, unit=unit, disable=disable, leave=leave,
                    **tqdm_kwargs)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, leave=leave, interval_s=_interval(interval_s))
