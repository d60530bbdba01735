"""Where things are on disk: shipped resources, file-type suffixes, run folders, the user cache, and checks on
output paths before any work starts.

Resources: the repository's top-level ``configs/`` and ``weights/manifest.yaml`` are the editable sources. A
built wheel carries a copy of them under ``edge_detect/_resources/`` (copied by ``setup.py`` at build time);
:func:`resource_path` looks in the package first and in the repository second, so an editable install or a
source checkout reads the repository's files and an installed wheel its own copy.

Outputs: :func:`check_outputs` is called by ``run`` and ``detect`` before a model is loaded or a frame is read,
so a bad output path costs nothing and loses nothing (exit code 2, one line naming the flag and the path): never
overwrite an input, never find out at the end that an output cannot be written.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from edge_detect.errors import ConfigError, SinkError

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "YAML_SUFFIXES", "PACKAGE_RESOURCES", "REPO_ROOT", "ENV_CACHE",
           "resource_path", "is_image", "next_run_dir", "user_cache_dir", "check_outputs", "check_writable",
           "input_paths", "check_holds_no_input"]

PathLike = Union[str, "os.PathLike[str]"]

#: Image files OpenCV decodes (lower case; compare with ``Path.suffix.lower()``). Used by datasets, folder
#: sources, ``detect`` and calibration alike.
IMAGE_SUFFIXES = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm")
#: Video files (calibration sources; ``detect`` points them to ``run``).
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif",
                  ".3gp", ".mjpeg", ".mjpg", ".h264", ".h265")
YAML_SUFFIXES = (".yaml", ".yml")

PACKAGE_RESOURCES = Path(__file__).resolve().parent / "_resources"
REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_CACHE = "EDGE_DETECT_CACHE"


def resource_path(*parts: str, must_exist: bool = True) -> Path:
    """A shipped resource, e.g. ``resource_path("configs", "models")`` or ``("weights", "manifest.yaml")``.

    Looks in ``edge_detect/_resources/`` (an installed wheel) first, then in the repository root (a source
    checkout or editable install, where those files are edited).

    Args:
        must_exist: when ``False``, a resource found nowhere gives the repository path (the caller reports it
            when it reads the file) instead of an error.

    Raises:
        ConfigError: found in neither place (the message names both), unless ``must_exist`` is ``False``.
    """
    for root in (PACKAGE_RESOURCES, REPO_ROOT):
        path = root.joinpath(*parts)
        if path.exists():
            return path
    if not must_exist:
        return REPO_ROOT.joinpath(*parts)
    raise ConfigError(f"resource {'/'.join(parts)}: expected it in {PACKAGE_RESOURCES} or {REPO_ROOT}, found "
                      "neither (a broken installation: reinstall edge-detect)")


def is_image(path: PathLike) -> bool:
    """Whether ``path`` has an image suffix (:data:`IMAGE_SUFFIXES`, case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def next_run_dir(project: PathLike, name: str = "exp", exist_ok: bool = False) -> Path:
    """``project/name`` if free (or ``exist_ok``), else the first free of ``name2``, ``name3``...; with ``name=""``
    the first free of ``project/1``, ``project/2``... (``run``'s default outputs). Not created."""
    if not name:
        n = 1
        while (Path(project) / str(n)).exists():
            n += 1
        return Path(project) / str(n)
    base = Path(project) / name
    if exist_ok or not base.exists():
        return base
    n = 2
    while (Path(project) / f"{name}{n}").exists():
        n += 1
    return Path(project) / f"{name}{n}"


def user_cache_dir() -> Path:
    """edge-detect's per-user cache: ``$EDGE_DETECT_CACHE``, else ``$XDG_CACHE_HOME/edge-detect``, else
    ``~/.cache/edge-detect`` (checkpoints in ``weights/``, exported models in ``models/<sha256>/``); not created."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "edge-detect"


def _resolve(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: PathLike, what: str, is_dir: bool = False) -> None:
    """Raise unless ``path`` (a file, or a folder with ``is_dir``) can be created or replaced.

    The nearest existing folder above ``path`` is probed by creating and removing a temporary file there
    (``os.access`` says yes to root on read-only places), so missing parent folders are fine as long as they
    can be created.

    Raises:
        SinkError: "<what> <path>: expected a writable location, got ..." (a file in the way, an existing
            folder where a file goes or the reverse, or a folder that refuses new files).
    """
    p = _resolve(path)
    if p.exists():
        if is_dir and not p.is_dir():
            raise SinkError(f"{what} {path}: expected a folder, got an existing file")
        if not is_dir and p.is_dir():
            raise SinkError(f"{what} {path}: expected a file path, got an existing folder")
    base = p if (is_dir and p.is_dir()) else _nearest_existing(p.parent if not is_dir else p)
    if not base.is_dir():
        raise SinkError(f"{what} {path}: expected a writable location, got {base} which is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edge-detect-probe-", dir=base)
    except OSError as exc:
        raise SinkError(f"{what} {path}: expected a writable location, got {base} which is not writable "
                        f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    if p.is_file() and not os.access(p, os.W_OK):
        raise SinkError(f"{what} {path}: expected a writable file, got a read-only one")


def input_paths(sources: Iterable[PathLike]) -> List[Path]:
    """The local files and folders among ``sources`` (URLs, camera indexes and globs without matches are
    skipped), resolved."""
    out: List[Path] = []
    for s in sources:
        text = str(s)
        if "://" in text and not text.startswith("file://"):
            continue
        p = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
        if p.exists():
            out.append(p.resolve())
    return out


def check_outputs(outputs: Mapping[str, Optional[PathLike]], inputs: Sequence[PathLike] = (),
                  dirs: Sequence[str] = (), inside_inputs_ok: bool = True) -> None:
    """Validate every output path before a run: writable, distinct, and never an input.

    Args:
        outputs: ``{flag: path}``, e.g. ``{"--save-video": "out.mp4"}``; ``None`` paths are ignored.
        inputs: input files and folders (see :func:`input_paths`).
        dirs: the flags in ``outputs`` that name a folder rather than a file.
        inside_inputs_ok: ``False`` also refuses an output folder (a flag in ``dirs``) inside or equal to an
            input folder, or equal to the folder of an input file (``detect`` writes images named like its
            inputs, and a recursive input folder would read them back).

    Raises:
        SinkError: the first problem, naming the flag and the path; nothing has been written.
    """
    resolved_inputs = [_resolve(i) for i in inputs]
    seen: List[Tuple[str, Path]] = []
    for flag, path in outputs.items():
        if path is None or str(path) == "":
            continue
        p = _resolve(path)
        for inp in resolved_inputs:
            if p == inp:
                raise SinkError(f"{flag} {path}: expected an output that is not an input, got the input "
                                f"{inp} itself (it would be overwritten)")
        for inp in resolved_inputs:
            if flag not in dirs or inside_inputs_ok:
                break
            if inp.is_dir() and (p == inp or inp in p.parents):
                raise SinkError(f"{flag} {path}: expected an output outside the input folder {inp} (its images "
                                "would be overwritten or read back as inputs)")
            if inp.is_file() and p == inp.parent:
                raise SinkError(f"{flag} {path}: expected an output folder other than the folder of the input "
                                f"{inp} (annotated images keep their names and would overwrite it)")
        for other_flag, other in seen:
            if p == other:
                raise SinkError(f"{flag} {path}: expected a path of its own, got the same file as {other_flag}")
        seen.append((flag, p))
        check_writable(path, flag, is_dir=flag in dirs)


def check_holds_no_input(folder: PathLike, flag: str, inputs: Sequence[PathLike]) -> None:
    """Raise unless no input lies inside (or is) the output folder ``folder`` (an output whose files are written
    and deleted by pattern, such as snapshots with retention).

    Raises:
        SinkError: naming the flag, the folder and the input.
    """
    p = _resolve(folder)
    for inp in inputs:
        i = _resolve(inp)
        if i == p or p in i.parents:
            raise SinkError(f"{flag} {folder}: expected a folder that holds no input, got the input {i} inside it "
                            "(its files would be overwritten or deleted)")
