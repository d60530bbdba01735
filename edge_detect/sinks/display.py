"""Display sink: one window per source with the annotated frame; q / Esc stops the run; off when headless."""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import List, Tuple

import cv2

from edge_detect.sinks.base import Result, Sink, register_sink

__all__ = ["DisplaySink", "display_available"]

LOGGER = logging.getLogger(__name__)


def display_available() -> Tuple[bool, str]:
    """``(True, "")`` when a window can be shown, else ``(False, reason)``.

    Checks that OpenCV has a GUI backend (``cv2.getBuildInformation()``; headless wheels have none) and, on
    Linux, that ``DISPLAY`` or ``WAYLAND_DISPLAY`` is set.
    """
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui.group(1).upper() == "NONE":
        return False, "this OpenCV build has no GUI support (opencv-python-headless?)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY / WAYLAND_DISPLAY not set)"
    return True, ""


class DisplaySink(Sink):
    """One window per source with the annotated frame; ``q`` or Esc sets ``stop_requested``.

    On a headless machine it logs the reason once and does nothing.
    """

    name = "display"

    def __init__(self, window: str = "edge-detect") -> None:
        self.window = window
        self.enabled, reason = display_available()
        if not self.enabled:
            LOGGER.warning("display disabled: %s; use --save-video or --preview-port to see the output", reason)
        self._windows: List[str] = []

    def write(self, result: Result) -> None:
        if not self.enabled or result.events_only:
            return
        title = f"{self.window} [{result.frame.source_id}]"
        if title not in self._windows:
            self._windows.append(title)
        cv2.imshow(title, result.annotated)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            LOGGER.info("display: quit key pressed")
            self.stop_requested = True

    def close(self) -> None:
        if self.enabled and self._windows:
            try:
                cv2.destroyAllWindows()
            except cv2.error as exc:  # window already gone
                LOGGER.debug("destroyAllWindows: %s", exc)



@register_sink("display")
def _open_display(target: str, window: str = "edge-detect") -> DisplaySink:
    return DisplaySink(window=window)
