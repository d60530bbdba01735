"""When to record: the pure clip planner of the event recorder (no I/O, no threads).

Times are seconds on one source's stream clock (the container timestamps of a file, wall-clock time of a live
source). An event opens a clip from ``pre_s`` before it to ``post_s`` after it; an event that arrives while a clip
is open extends that clip to ``post_s`` after the new event, so events that overlap share one clip. No clip is
longer than ``max_clip_s``: an event that would extend a clip past that cap closes it at the cap and opens the
next clip (which starts where the previous one ended, never earlier, so two clips never hold the same second).

The recorder aligns a clip's first frame to the keyframe at or before :attr:`Clip.start` when it writes it; the
planner only deals in times.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

__all__ = ["Clip", "ClipPlanner"]


@dataclass
class Clip:
    """One planned clip of one source.

    Attributes:
        start: first second to record (event time - ``pre_s``, or the end of the previous clip).
        end: last second to record (last event + ``post_s``, capped at ``start + max_clip_s``).
        event_ids: ids of the events the clip covers, the first one names the clip.
        first_event_t: time of the first event (for the clip's name and the thumbnail).
    """

    start: float
    end: float
    event_ids: List[str] = field(default_factory=list)
    first_event_t: float = 0.0

    @property
    def event_id(self) -> str:
        """The id of the event that opened the clip."""
        return self.event_ids[0]

    @property
    def duration(self) -> float:
        """Planned length in seconds."""
        return self.end - self.start


class ClipPlanner:
    """Turn a source's events into clips (see module doc).

    Args:
        pre_s: seconds recorded before an event (>= 0).
        post_s: seconds recorded after the last event of a clip (>= 0).
        max_clip_s: the longest clip in seconds (> pre_s + post_s would be sensible; > 0 required).

    Use: :meth:`on_event` for every event that should be recorded, :meth:`advance` with the stream time of
    every processed frame (returns the clips that are complete), :meth:`flush` at the end of the stream.
    """

    def __init__(self, pre_s: float = 5.0, post_s: float = 5.0, max_clip_s: float = 120.0) -> None:
        if pre_s < 0 or post_s < 0:
            raise ValueError(f"record: expected pre_s >= 0 and post_s >= 0, got pre_s={pre_s}, post_s={post_s}")
        if max_clip_s <= 0:
            raise ValueError(f"record.max_clip_s: expected > 0, got {max_clip_s}")
        self.pre_s, self.post_s, self.max_clip_s = float(pre_s), float(post_s), float(max_clip_s)
        self.current: Optional[Clip] = None
        self._last_end: Optional[float] = None
        self._done: List[Clip] = []

    def on_event(self, t: float, event_id: str) -> Clip:
        """Record an event at stream time ``t``; returns the clip that covers it (opened or extended)."""
        clip = self.current
        if clip is not None and t <= clip.end and t + self.post_s <= clip.start + self.max_clip_s:
            clip.end = max(clip.end, t + self.post_s)
            clip.event_ids.append(event_id)
            return clip
        if clip is not None:  # past its end, or it would grow past the cap: it ends (at the cap at most)
            clip.end = min(clip.end, clip.start + self.max_clip_s, max(t, clip.start))
            self._close()
        start = t - self.pre_s
        if self._last_end is not None:
            start = max(start, self._last_end)
        end = max(min(t + self.post_s, start + self.max_clip_s), start)
        self.current = Clip(start=start, end=end, event_ids=[event_id], first_event_t=t)
        return self.current

    def advance(self, now: float) -> List[Clip]:
        """The stream has reached ``now``: returns the clips that ended at or before it (oldest first)."""
        if self.current is not None and now >= self.current.end:
            self._close()
        return self._take()

    def flush(self, now: Optional[float] = None) -> List[Clip]:
        """End of stream (at ``now`` when known): the open clip ends there; returns every clip not yet returned."""
        if self.current is not None:
            if now is not None:
                self.current.end = min(self.current.end, max(now, self.current.start))
            self._close()
        return self._take()

    def closed(self) -> List[Clip]:
        """The clips closed by :meth:`on_event` (an event past a clip's end or cap) not yet returned."""
        return self._take()

    def _close(self) -> None:
        assert self.current is not None
        self._last_end = self.current.end
        self._done.append(self.current)
        self.current = None

    def _take(self) -> List[Clip]:
        done, self._done = self._done, []
        return done
