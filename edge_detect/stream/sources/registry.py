"""From a source string to a :class:`~edge_detect.stream.sources.source.Source`: parsing, the URL-scheme registry
for plugins, opening, and collision-free source ids."""
from __future__ import annotations

import glob as _glob
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from edge_detect.config import from_mapping, override
from edge_detect.errors import ConfigError, SourceError
from edge_detect.paths import IMAGE_SUFFIXES
from edge_detect.stream.sources.base import CaptureOptions, Reader, SourceKind, source_kind
from edge_detect.stream.sources.gstreamer import gstreamer_available
from edge_detect.stream.sources.readers import ImageReader, OpenCVReader
from edge_detect.stream.sources.source import Source
from edge_detect.urls import mask_credentials, url_scheme

__all__ = ["STREAM_SCHEMES", "register_source", "source_schemes", "parse_source", "open_source", "open_images",
           "source_from_reader", "unique_source_ids", "rename_duplicate_ids", "planned_source_ids"]

LOGGER = logging.getLogger(__name__)

#: URL schemes OpenCV/FFmpeg opens as ``stream`` sources (they cannot be taken over by :func:`register_source`).
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")

# URL scheme -> factory(uri, source_id=None, offline_ok=False, **options) -> Source, for sources that are not
# files, cameras, OpenCV/FFmpeg streams or GStreamer pipelines (which open_source handles itself).
_SOURCE_FACTORIES: Dict[str, Callable[..., Source]] = {}


def register_source(scheme: str) -> Callable[[Callable[..., Source]], Callable[..., Source]]:
    """Decorator: open URIs ``<scheme>://...`` with the decorated factory.

    The factory is called as ``factory(uri, source_id=..., offline_ok=..., **options)`` and returns a
    :class:`Source`, usually built with :func:`source_from_reader` around the plugin's
    :class:`~edge_detect.stream.sources.base.Reader`. The built-in stream schemes (:data:`STREAM_SCHEMES`) and
    ``file`` cannot be taken over.

    Raises:
        ConfigError: ``scheme`` is not a valid URL scheme, or is built in.
    """
    key = str(scheme).lower()
    if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", key):
        raise ConfigError(f"register_source: expected a URL scheme such as 'myproto', got {scheme!r}")
    if key in STREAM_SCHEMES or key == "file":
        raise ConfigError(f"register_source: '{key}' is a built-in source scheme")

    def deco(factory: Callable[..., Source]) -> Callable[..., Source]:
        _SOURCE_FACTORIES[key] = factory
        return factory

    return deco


def source_schemes() -> List[str]:
    """Every URL scheme :func:`open_source` accepts: the built-in stream schemes, ``file`` and registered ones."""
    return [*STREAM_SCHEMES, "file", *sorted(_SOURCE_FACTORIES)]


def _image_files(s: str, p: Path) -> Optional[List[Path]]:
    """The images of a folder or a glob (sorted), or ``None`` when ``s`` is neither."""
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise SourceError(f"source folder {p}: expected images ({', '.join(IMAGE_SUFFIXES)}), found none")
        return files
    if any(c in s for c in "*?["):
        files = sorted(Path(f) for f in _glob.glob(str(p), recursive=True) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"source glob {s!r}: expected matching images, found none")
        return files
    return None


def parse_source(uri: Union[str, int, "os.PathLike[str]"]) -> Tuple[str, Any]:
    """Classify a source string into ``(kind, target)``; see the package doc's table for the kinds.

    ``target`` is: a path (file), a list of image paths (images), an int index or ``/dev/videoN`` path
    (camera), the URL (stream) or the pipeline string (gstreamer); a URL of a :func:`register_source` scheme is
    ``(scheme, URL)`` (its factory opens it).

    Raises:
        SourceError: nothing matches (missing file, empty folder, unknown URL scheme).
    """
    if isinstance(uri, int):
        return "camera", uri
    s = str(uri).strip()
    if not s:
        raise SourceError("source: expected a path, camera index, URL or GStreamer pipeline, got ''")
    if s.startswith("gst:"):
        return "gstreamer", s[4:].strip()
    scheme = url_scheme(s)
    if scheme == "file":
        s = s[len("file://"):]
    elif scheme in STREAM_SCHEMES:
        return "stream", s
    elif scheme in _SOURCE_FACTORIES:
        return scheme, s
    elif scheme is not None and "!" not in s:
        raise SourceError(f"source {mask_credentials(s)}: unknown URL scheme '{scheme}'; expected one of "
                          f"{', '.join(source_schemes())}")
    if "!" in s and not Path(s).exists():
        return "gstreamer", s
    if s.isdigit():
        return "camera", int(s)
    if re.fullmatch(r"/dev/video\d+", s):
        return "camera", s
    p = Path(s).expanduser()
    images = _image_files(s, p)
    if images is not None:
        return "images", images
    if p.is_file():
        return ("images", [p]) if p.suffix.lower() in IMAGE_SUFFIXES else ("file", p)
    raise SourceError(f"source not found: {mask_credentials(s)} (expected a video file, image folder or glob, "
                      "camera index, /dev/videoN, rtsp/rtmp/http(s) URL or GStreamer pipeline)")


def _capture_options(options: Dict[str, Any]) -> CaptureOptions:
    """``capture=CaptureOptions(...)`` overridden by individual fields, or the fields alone."""
    base = options.pop("capture", None)
    if base is not None:
        return override(base, options)
    return from_mapping(options, CaptureOptions, where="capture options")


def source_from_reader(reader_factory: Callable[[], Reader], kind: Union[str, SourceKind], target: Any = None,
                       source_id: Optional[str] = None, offline_ok: bool = False, uri: Optional[str] = None,
                       **options: Any) -> Source:
    """A :class:`Source` around readers made by ``reader_factory``: the way a :func:`register_source` plugin
    builds its source from the public API.

    Args:
        reader_factory: ``() -> Reader``, called now and again for each reconnection; raises
            :class:`~edge_detect.errors.SourceError` when the input cannot be opened.
        kind: a :class:`SourceKind` (live? reconnect? default id) or a built-in kind's name.
        target: what the source reads, passed to the kind's ``default_id`` and ``describe`` (e.g. the URI).
        source_id: id stamped on every frame (default: ``kind.default_id(target)``); credentials are masked.
        offline_ok: a reconnecting source that cannot be opened now starts offline (``Source.offline``) and
            connects in the background instead of raising.
        uri: the text shown for the source (default: ``kind.describe(target)``).
        **options: :class:`CaptureOptions` fields, or ``capture=CaptureOptions(...)`` plus overriding fields.

    Raises:
        SourceError: the first open failed (and the source may not start offline), or an invalid option.
        ConfigError: an unknown option name.
    """
    opts = _capture_options(dict(options))
    k = source_kind(kind)
    sid = _source_id(k, target, source_id)
    try:
        src = Source(k, target, sid, opts, reader_factory, uri=uri)
    except SourceError as exc:
        reconnects = opts.reconnect if opts.reconnect is not None else k.reconnect
        if not (offline_ok and reconnects):
            raise
        src = Source(k, target, sid, opts, reader_factory, start_offline=True, uri=uri)
        LOGGER.warning("%s source %s is offline (%s); starting without it and retrying in the background", k.name,
                       src.uri, mask_credentials(str(exc)))
        return src
    LOGGER.info("opened %s source %r as %r (live=%s, fps=%s, frames=%s)", k.name, src.uri, sid, src.is_live,
                src.fps, src.expected_frames)
    return src


def open_source(uri: Union[str, int, "os.PathLike[str]"], source_id: Optional[str] = None, offline_ok: bool = False,
                **options: Any) -> Source:
    """Open a video source; see the package doc for kinds, live behaviour and reconnection.

    Args:
        uri: path, glob, camera index, ``/dev/videoN``, URL or GStreamer pipeline.
        source_id: id stamped on every frame (default: file stem, ``cam0``, stream host, ``gst``...).
        offline_ok: a live, reconnecting source (camera, stream, GStreamer) that cannot be opened now is
            returned offline (``Source.offline``) instead of raising; its capture thread keeps trying to connect
            with the reconnection backoff (used when one of several sources is down at start).
        **options: :class:`CaptureOptions` fields (unknown names are rejected with a suggestion), or
            ``capture=CaptureOptions(...)`` plus individual fields overriding it.

    Returns:
        A :class:`Source` (not yet started: iteration or ``start()`` starts the capture thread).

    Raises:
        SourceError: not found, cannot be opened, GStreamer missing, or an invalid option.
        ConfigError: an unknown option name.
    """
    scheme = url_scheme(uri)
    if scheme in _SOURCE_FACTORIES:
        return _SOURCE_FACTORIES[scheme](uri, source_id=source_id, offline_ok=offline_ok, **options)
    opts = _capture_options(options)
    kind, target = parse_source(uri)
    if kind == "gstreamer" and not gstreamer_available():
        raise SourceError("GStreamer pipeline given but this OpenCV build has no GStreamer "
                          "(cv2.getBuildInformation(): 'GStreamer: NO'); on Jetson use the system OpenCV "
                          "built with GStreamer")
    if kind == "images":
        factory: Callable[[], Reader] = lambda: ImageReader(target)  # noqa: E731
    else:
        name = source_kind(kind).describe(target)
        factory = lambda: OpenCVReader(target, kind, opts, name)  # noqa: E731
    return source_from_reader(factory, kind, target, source_id=source_id, offline_ok=offline_ok, capture=opts)


def open_images(paths: Sequence[Union[str, "os.PathLike[str]"]], source_id: Optional[str] = None,
                **options: Any) -> Source:
    """A source over an explicit list of image files, read in the given order (``edge-detect detect``).

    Each frame's ``index`` is the file's position in ``paths`` and ``path`` the file; an undecodable file is
    skipped with a warning and counted in ``stats.corrupt``. Never live, never drops a frame.

    Args:
        paths: image files (any suffix OpenCV reads).
        source_id: id stamped on every frame (default: the first file's folder name).
        **options: :class:`CaptureOptions` fields (``queue_size``...).

    Raises:
        SourceError: ``paths`` is empty.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise SourceError("images: expected at least one image file, got none")
    return source_from_reader(lambda: ImageReader(files), "images", files, source_id=source_id, **options)


# ------------------------------------------------------------------------------------------------- ids

def _source_id(kind: SourceKind, target: Any, source_id: Optional[str]) -> str:
    """The id a source gets: ``source_id`` (credentials masked: ids never carry secrets), else the kind's default."""
    return mask_credentials(source_id) if source_id else kind.default_id(target)


def planned_source_ids(sources: Sequence[Tuple[Union[str, int, "os.PathLike[str]"], Optional[str]]]
                       ) -> List[Optional[str]]:
    """The ids that ``(uri, id)`` pairs will have once opened together (:func:`open_source`'s default ids, made
    unique by :func:`unique_source_ids` as a run does), without opening anything: what per-source output names
    (``out_<id>.mp4``) are predicted with. ``None`` for a source of a plugin scheme without an explicit id (its
    default id is known only once opened).

    Raises:
        SourceError: a source that cannot be parsed (missing file, unknown scheme).
    """
    ids: List[Optional[str]] = []
    for uri, sid in sources:
        if sid:
            ids.append(mask_credentials(sid))
        elif url_scheme(str(uri)) in _SOURCE_FACTORIES:
            ids.append(None)
        else:
            kind, target = parse_source(uri)
            ids.append(_source_id(source_kind(kind), target, None))
    known = unique_source_ids([i for i in ids if i is not None])
    return [None if i is None else known.pop(0) for i in ids]


def unique_source_ids(ids: Sequence[str], taken: Sequence[str] = ()) -> List[str]:
    """``ids`` made unique: the first holder of an id keeps it; each later duplicate gets ``<id>-<n>`` with the
    smallest ``n >= 1`` that no id in the list (given or assigned) uses, so a rename never collides with another
    source's own id. Ids in ``taken`` (sources already running, or retired in this run) count as earlier holders.

    >>> unique_source_ids(["v", "v", "v-1"])
    ['v', 'v-2', 'v-1']
    >>> unique_source_ids(["cam-1", "cam", "cam"])
    ['cam-1', 'cam', 'cam-2']
    """
    reserved = set(taken)
    taken = set(ids) | reserved
    seen: set = set(reserved)
    out: List[str] = []
    for sid in ids:
        if sid not in seen:
            seen.add(sid)
            out.append(sid)
            continue
        n = 1
        while f"{sid}-{n}" in taken:
            n += 1
        new = f"{sid}-{n}"
        taken.add(new)
        out.append(new)
    return out


def rename_duplicate_ids(sources: Sequence[Source], taken: Sequence[str] = ()) -> Dict[int, Tuple[str, str]]:
    """Rename the sources whose id an earlier source (or an id in ``taken``) holds (:func:`unique_source_ids`),
    with one warning naming every rename; returns ``{position: (old id, new id)}`` (empty when the ids were
    unique).

    Raises:
        SourceError: a source to rename has already started.
    """
    old = [src.source_id for src in sources]
    renames = {i: (a, b) for i, (a, b) in enumerate(zip(old, unique_source_ids(old, taken))) if a != b}
    for i, (_, new) in renames.items():
        sources[i].rename(new)
    if renames:
        LOGGER.warning("source ids: duplicate ids renamed: %s", ", ".join(
            f"{a!r} -> {b!r} (source {i + 1}, {sources[i].uri})" for i, (a, b) in renames.items()))
    return renames
