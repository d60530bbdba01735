"""Test helpers of the recording tests: a processor that emits ``line_cross`` events at scripted stream times (or
when a trigger file appears), and an H.264 test video with a keyframe every second."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edge_detect.stream.processors.base import register_processor
from edge_detect.types import Detections, Frame, LineCross


@register_processor("scripted_events")
class ScriptedEvents:
    """Appends a ``line_cross`` (line ``gate``, class ``person``) at the first frame whose presentation time
    (``pts_ms``) reaches each of ``times`` (seconds), and at the first frame after ``trigger`` (a file path)
    appears (the file is then removed)."""

    name = "scripted_events"

    def __init__(self, times: Sequence[float] = (), trigger: Optional[str] = None) -> None:
        self.times = sorted(float(t) for t in times)
        self.trigger = trigger
        self._pending = list(self.times)
        self._n = 0

    def _event(self) -> LineCross:
        self._n += 1
        return LineCross("gate", "in", self._n, "person")

    def update(self, detections: Detections, frame: Frame) -> Detections:
        events = detections.metadata.setdefault("events", [])
        t = (frame.pts_ms or 0.0) / 1000.0
        while self._pending and t + 1e-6 >= self._pending[0]:
            self._pending.pop(0)
            events.append(self._event())
        if self.trigger and os.path.exists(self.trigger):
            os.remove(self.trigger)
            events.append(self._event())
        return detections

    def clone(self) -> "ScriptedEvents":
        return ScriptedEvents(self.times, self.trigger)

    def summary(self) -> Dict[str, Any]:
        return {}


def make_h264(path: Path, seconds: float, fps: int = 10, size=(320, 240), gop: Optional[int] = None) -> Path:
    """An H.264 mp4 of ``seconds`` at ``fps`` whose frames all differ (a moving bar and a frame counter), a keyframe
    every ``gop`` frames (default: one second), no B-frames."""
    import av
    import cv2

    w, h = size
    gop = gop or fps
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": "ultrafast", "bf": "0"}
        for i in range(int(round(seconds * fps))):
            img = np.full((h, w, 3), 60, np.uint8)
            x = (i * 4) % w
            img[:, x:x + 12] = (40, 200, 255)
            cv2.putText(img, str(i), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts, f.time_base = i, Fraction(1, fps)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


def packets(path: Path) -> List[tuple]:
    """``(time s, bytes, keyframe)`` of every video packet of ``path``, in decode order."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        t0 = st.start_time or 0
        return [(float((p.pts - t0) * p.time_base), bytes(p), p.is_keyframe) for p in c.demux(st)
                if p.dts is not None]


def decoded_frames(path: Path) -> int:
    """Frames ``path`` decodes to with PyAV (raises when it does not decode)."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))
