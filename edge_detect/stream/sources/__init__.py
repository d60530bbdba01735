"""Video sources: files, cameras, network streams, GStreamer pipelines and image folders behind one iterator.

:func:`open_source` turns a path or URI into a :class:`Source`: an iterator of :class:`~edge_detect.types.Frame`
(BGR ``uint8 (H, W, 3)``) fed by a capture thread through a bounded queue.

===================  ===========================================  ==========  ==============================
kind                 examples                                     live        on read failure
===================  ===========================================  ==========  ==============================
``file``             ``video.mp4``, ``file:///data/a.avi``        no          end of stream
``images``           ``frames/``, ``"frames/*.jpg"``, ``a.png``   no          unreadable image: skip, count
``camera``           ``0``, ``/dev/video2`` (V4L2 on Linux)       yes         reconnect (unplug/replug)
``stream``           ``rtsp://``, ``rtmp://``, ``http(s)://``     yes         reconnect with backoff
``gstreamer``        ``"... ! appsink"`` or ``gst:...``           yes         reconnect with backoff
===================  ===========================================  ==========  ==============================

Each kind is a :class:`SourceKind` record (:data:`SOURCE_KINDS`): live or not, reconnecting or not, and how its
default id is formed.

* **Live** sources keep only the newest frame: when the consumer is slower than the source, stale frames are
  dropped and counted (``stats.dropped``), so latency stays bounded. **Files** never drop: the capture
  thread blocks on a full queue (back-pressure), so every decodable frame is delivered.
* Network streams use FFmpeg's open/read timeouts (``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``..._READ_TIMEOUT_MSEC``)
  plus a watchdog that abandons a read stuck longer than the timeout, then reconnect with exponential
  backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``). Loss and return are logged with
  timestamps; ``stats.reconnects`` counts successful reconnections. ``Source.close()`` never waits on a read
  or open that hangs: the capture thread is abandoned and releases its reader when the call returns.
* Frames that fail to decode are skipped and counted in ``stats.corrupt`` (for files: gaps in the
  presentation timestamps; for image folders: unreadable images); never fatal. AVI "drop frame" chunks (empty
  packets: the previous picture repeats) also leave timestamp gaps; they are told apart with a demux-only PyAV
  pass (a slot with no packet at all is empty, one whose packet did not decode is corrupt) and counted in
  ``stats.empty``, not as corruption. The frames keep their container timestamps (``pts_ms``), so a saved video
  shows each picture for as long as the original did.
* Credentials in URLs are masked (:func:`~edge_detect.urls.mask_credentials`) in every log line, ``repr``,
  ``Source.uri`` and default id.
* OpenCV's and FFmpeg's own log lines are kept off stderr around opens (a missing camera or a refused URL gives
  our one error line); ``OPENCV_FFMPEG_LOGLEVEL=24`` in the environment shows FFmpeg's warnings again.
* ``loop=True`` (capture option; ``capture: {loop: true}`` in an app config) plays a file or an image folder over and
  over as one endless stream: frame indices and ``pts_ms`` keep increasing across passes (a test or demo camera);
  with ``realtime=True`` it is read at its own frame rate (``fps`` for pictures).
* Several sources with one id: :func:`unique_source_ids` renames the later ones ``<id>-<n>`` without colliding
  with any other source's id (the pipeline applies it with one warning).

**A new kind of input** (a vendor SDK camera, a test pattern): implement the :class:`Reader` protocol
(``read() -> ReadResult``, ``release()``, optional ``fps`` / ``expected_frames``; :class:`ReaderBase` has the
defaults), and register a factory for its URL scheme that wraps it with :func:`source_from_reader`::

    @register_source("pattern")
    def open_pattern(uri, source_id=None, offline_ok=False, **options):
        kind = SourceKind("pattern", live=False, reconnect=False)
        return source_from_reader(lambda: PatternReader(uri), kind, uri, source_id=source_id,
                                  offline_ok=offline_ok, **options)

Layout: :mod:`.base` (options, counters, kinds, the reader protocol), :mod:`.readers` (OpenCV and image readers),
:mod:`.source` (:class:`Source`: capture thread, queue, reconnection, watchdog), :mod:`.registry` (parsing,
schemes, opening, ids), :mod:`.gstreamer` (GStreamer and Jetson pipeline helpers).
"""
from __future__ import annotations

from edge_detect.paths import IMAGE_SUFFIXES
from edge_detect.stream.sources.base import (
    KINDS,
    READ_STATUSES,
    SOURCE_KINDS,
    CaptureOptions,
    Reader,
    ReaderBase,
    ReadResult,
    SourceKind,
    SourceStats,
    source_kind,
)
from edge_detect.stream.sources.gstreamer import gstreamer_available, jetson_csi_pipeline, jetson_rtsp_pipeline
from edge_detect.stream.sources.readers import ImageReader, OpenCVReader, quiet_libraries
from edge_detect.stream.sources.registry import (
    STREAM_SCHEMES,
    open_images,
    open_source,
    parse_source,
    planned_source_ids,
    register_source,
    rename_duplicate_ids,
    source_from_reader,
    source_schemes,
    unique_source_ids,
)
from edge_detect.stream.sources.source import Source
from edge_detect.urls import mask_credentials

__all__ = [
    "CaptureOptions",
    "Source",
    "SourceStats",
    "SourceKind",
    "SOURCE_KINDS",
    "KINDS",
    "source_kind",
    "Reader",
    "ReaderBase",
    "ReadResult",
    "READ_STATUSES",
    "OpenCVReader",
    "ImageReader",
    "quiet_libraries",
    "open_source",
    "open_images",
    "source_from_reader",
    "register_source",
    "source_schemes",
    "parse_source",
    "unique_source_ids",
    "rename_duplicate_ids",
    "planned_source_ids",
    "mask_credentials",
    "gstreamer_available",
    "jetson_csi_pipeline",
    "jetson_rtsp_pipeline",
    "IMAGE_SUFFIXES",
    "STREAM_SCHEMES",
]
