"""Official YOLOv5 checkpoints: the manifest, offline resolution of a name to a file, and verified download.

The manifest (``weights/manifest.yaml`` in the repository, shipped inside the wheel; see
:func:`edge_detect.paths.resource_path`) maps a model name (``"yolov5s"``) to its release URL, sha256 and size.
:func:`resolve_weights` never touches the network; :func:`fetch` downloads with ``urllib`` and checks the
sha256. This module never imports torch.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from edge_detect.config import load_yaml
from edge_detect.errors import ConfigError, ModelError
from edge_detect.paths import ENV_CACHE, REPO_ROOT, PathLike, resource_path, user_cache_dir

__all__ = ["MANIFEST_PATH", "WEIGHTS_DIR", "ENV_WEIGHTS", "ENV_CACHE", "WeightsEntry", "load_manifest",
           "resolve_weights", "fetch", "sha256_file", "default_weights_dir", "user_cache_dir", "search_dirs"]

LOGGER = logging.getLogger(__name__)

#: the repository's ``weights/`` folder (a source checkout; absent in an installed wheel)
WEIGHTS_DIR = REPO_ROOT / "weights"
#: the manifest: the wheel's copy when installed, else the repository's
MANIFEST_PATH = resource_path("weights", "manifest.yaml", must_exist=False)
ENV_WEIGHTS = "EDGE_DETECT_WEIGHTS"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsEntry:
    """One manifest row: ``url`` to fetch, ``sha256`` (lower-case hex, or ``None`` when not verified)."""

    name: str
    url: str
    sha256: Optional[str] = None
    size: Optional[int] = None
    release: str = ""
    params: Optional[float] = None
    config: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.pt"


def sha256_file(path: PathLike) -> str:
    """Lower-case hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(name: str, row: Any, where: str) -> WeightsEntry:
    if not isinstance(row, Mapping) or not row.get("url"):
        raise ConfigError(f"{where}: model '{name}': expected a mapping with at least 'url', got {row!r}")
    sha = row.get("sha256")
    if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha).lower())):
        raise ConfigError(f"{where}: model '{name}': sha256 must be 64 hex digits or null, got {sha!r}")
    return WeightsEntry(name=name, url=str(row["url"]), sha256=str(sha).lower() if sha else None,
                        size=int(row["size"]) if row.get("size") is not None else None,
                        release=str(row.get("release", "")),
                        params=float(row["params"]) if row.get("params") is not None else None,
                        config=str(row.get("config", "")))


def load_manifest(path: Optional[PathLike] = None) -> Dict[str, WeightsEntry]:
    """Read the manifest (default ``weights/manifest.yaml``): ``{name: WeightsEntry}`` in file order.

    Raises:
        ConfigError: missing file or malformed entries.
    """
    path = Path(path) if path is not None else MANIFEST_PATH
    data = load_yaml(path)
    models = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(models, Mapping):
        raise ConfigError(f"{path}: expected a top-level 'models' mapping")
    return {str(name): _entry(str(name), row, str(path)) for name, row in models.items()}


def default_weights_dir() -> Path:
    """Where ``fetch`` downloads: ``$EDGE_DETECT_WEIGHTS`` if set, else the repository's ``weights/`` folder
    in a source checkout, else the user cache's ``weights/``."""
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        return Path(env)
    return WEIGHTS_DIR if WEIGHTS_DIR.is_dir() else user_cache_dir() / "weights"


def search_dirs() -> List[Path]:
    """Folders searched for ``<name>.pt``, in order: ``$EDGE_DETECT_WEIGHTS``, the repository's ``weights/``,
    ``../shared/weights`` beside the repository and beside the current folder, the user cache's ``weights/``."""
    dirs = []
    if os.environ.get(ENV_WEIGHTS):
        dirs.append(Path(os.environ[ENV_WEIGHTS]).expanduser())
    dirs += [WEIGHTS_DIR, WEIGHTS_DIR.parent.parent / "shared" / "weights",
             Path.cwd().parent / "shared" / "weights", user_cache_dir() / "weights"]
    out: List[Path] = []
    for d in dirs:  # the same folder once, however it is reached
        if all(d.resolve() != o.resolve() for o in out):
            out.append(d)
    return out


def _get_entry(name: str, manifest: Mapping[str, WeightsEntry]) -> WeightsEntry:
    if name not in manifest:
        close = difflib.get_close_matches(name, list(manifest), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ModelError(f"unknown weights '{name}'{hint}: expected one of {sorted(manifest)}")
    return manifest[name]


def resolve_weights(name_or_path: PathLike, manifest: Optional[Mapping[str, WeightsEntry]] = None) -> Path:
    """A checkpoint file for an explicit path or a model name, without network access.

    Order: ``name_or_path`` if it is an existing file; else ``<name>.pt`` (or the given file name) in each
    folder of :func:`search_dirs` (``$EDGE_DETECT_WEIGHTS``, the repository's ``weights/``,
    ``../shared/weights``, the user cache).

    Raises:
        ModelError: nothing found; the message says where it looked and how to fetch a known name.
    """
    given = Path(name_or_path)
    if given.is_file():
        return given
    name = given.stem if given.suffix.lower() in (".pt", ".pth") else given.name
    candidates = [d / f for d in search_dirs() for f in dict.fromkeys([given.name, f"{name}.pt"])]
    for cand in candidates:
        if cand.is_file():
            return cand
    looked = ", ".join(str(d) for d in search_dirs())
    try:
        manifest = manifest if manifest is not None else load_manifest()
    except ConfigError:
        manifest = {}
    if name in manifest:
        raise ModelError(f"weights '{name_or_path}' not found (looked for a file, then in {looked}); "
                         f"download them with: edge-detect weights fetch {name}")
    raise ModelError(f"weights '{name_or_path}': expected an existing file or a model name from the manifest "
                     f"{sorted(manifest)}; nothing found (looked in {looked})")


def _download(url: str, part: Path, total: Optional[int], progress: bool, desc: str) -> str:
    """Stream ``url`` into ``part``; returns the sha256 of what was written."""
    from edge_detect.progress import progress as progress_bar

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            total = int(length) if length else total
            with progress_bar(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise ModelError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc
    return h.hexdigest()


def fetch(name: str, dest_dir: Optional[PathLike] = None, verify: bool = True, progress: bool = True,
          manifest: Optional[Mapping[str, WeightsEntry]] = None, force: bool = False) -> Path:
    """Download the checkpoint ``name`` from the manifest into ``dest_dir`` and check its sha256.

    Args:
        name: a manifest name, e.g. ``"yolov5s"``.
        dest_dir: target folder (default :func:`default_weights_dir`); created if needed.
        verify: compare the sha256 with the manifest. When the manifest has no hash, the computed one is
            logged with a warning (the file is kept, but it is not verified).
        progress: a progress bar (log lines when stderr is not a terminal).
        manifest: a loaded manifest (default: :func:`load_manifest`).
        force: download again even if a matching file is already there.

    Returns:
        path of ``<dest_dir>/<name>.pt``.

    Raises:
        ModelError: unknown name, download failure, or sha256 mismatch (the partial file is removed).
    """
    entry = _get_entry(name, manifest if manifest is not None else load_manifest())
    dest_dir = Path(dest_dir) if dest_dir is not None else default_weights_dir()
    dest = dest_dir / entry.filename
    if dest.is_file() and not force:
        if not (verify and entry.sha256) or sha256_file(dest) == entry.sha256:
            LOGGER.info("%s already present: %s", name, dest)
            return dest
        LOGGER.warning("%s exists but its sha256 does not match the manifest; downloading again", dest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    LOGGER.info("downloading %s from %s", name, entry.url)
    digest = _download(entry.url, part, entry.size, progress, entry.filename)
    if verify and entry.sha256 and digest != entry.sha256:
        part.unlink(missing_ok=True)
        raise ModelError(f"sha256 mismatch for {name} from {entry.url}: expected {entry.sha256}, got {digest}; "
                         "the download was discarded")
    if not entry.sha256:
        LOGGER.warning("%s: the manifest has no sha256, so the download is NOT verified; computed sha256 %s "
                       "(record it in %s once you trust the file)", name, digest, MANIFEST_PATH)
    elif not verify:
        LOGGER.warning("%s: sha256 verification skipped (computed %s)", name, digest)
    shutil.move(str(part), str(dest))
    return dest
