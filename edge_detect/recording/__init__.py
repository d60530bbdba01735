"""Event recording: clips with pre- and post-roll around events, crash-safe mp4 writing, retention.

* :mod:`~edge_detect.recording.clips`: when to record (pure planner).
* :mod:`~edge_detect.recording.packets`: encoded packets per source (remuxed or encoded) and the clip writer.
* :mod:`~edge_detect.recording.retention`: clip naming and what to delete (pure planner).
* :mod:`~edge_detect.recording.recorder`: the per-run recorder the recorder sink drives from its own thread.
* :mod:`~edge_detect.recording.index`: the clips on disk as ``clip_saved`` events (the dashboard's list).
"""
from edge_detect.recording.clips import Clip, ClipPlanner
from edge_detect.recording.index import ClipIndex
from edge_detect.recording.recorder import RecordConfig, RecordedStream, Recorder, RetainConfig

__all__ = ["Clip", "ClipIndex", "ClipPlanner", "RecordConfig", "RecordedStream", "Recorder", "RetainConfig"]
