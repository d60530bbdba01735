"""Tracking-benchmark scenes through the real pipeline, without a model: a source and a detector over a
:class:`~edge_detect.stream.trackbench.scenes.Scene`.

* :func:`register_scene_source` registers the source scheme ``trackscene://FAMILY/SEED`` (``?fps=N``: the camera
  rate, :func:`~edge_detect.stream.trackbench.scenes.make_scene`): a file-like (never dropping) source delivering
  the scene's frames in order with their indices and timestamps (a freeze's frames are skipped, as the scene's
  camera never delivers them). Each picture is black with the frame index written into its first pixel.
* :class:`SceneDetector`: a :class:`~edge_detect.detector.DetectorLike` that reads that index back and returns the
  scene's noisy detections of the frame (``xyxy`` source-frame pixels): what the benchmark's trackers are fed,
  now through the batcher, the gate hook, the processors and the sinks.

So gating (a detect rate, :mod:`edge_detect.stream.gating`) can be checked against the scenes' exact counts.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlparse

import numpy as np

from edge_detect.errors import SourceError
from edge_detect.stream.trackbench.scenes import Scene, make_scene
from edge_detect.types import Detections

__all__ = ["SCHEME", "scene_uri", "parse_scene_uri", "register_scene_source", "SceneDetector", "COCO_NAMES"]

SCHEME = "trackscene"
#: class names up to the ones the scenes use (person 0, car 2, truck 7)
COCO_NAMES = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck")
_SCENES: Dict[Tuple[str, int, Optional[float]], Scene] = {}
_LOCK = threading.Lock()


def scene_uri(family: str, seed: int, fps: Optional[float] = None) -> str:
    """``trackscene://FAMILY/SEED[?fps=N]``."""
    return f"{SCHEME}://{family}/{int(seed)}" + (f"?fps={fps:g}" if fps else "")


def parse_scene_uri(uri: str) -> Tuple[str, int, Optional[float]]:
    """``(family, seed, fps)`` of a :func:`scene_uri`.

    Raises:
        SourceError: not of that form (one line).
    """
    u = urlparse(str(uri))
    try:
        fps = parse_qs(u.query).get("fps")
        return u.netloc, int(u.path.strip("/")), float(fps[0]) if fps else None
    except (ValueError, TypeError):
        raise SourceError(f"trackscene source: expected {SCHEME}://FAMILY/SEED[?fps=N], got {uri!r}") from None


def scene_of(uri: str) -> Scene:
    """The (cached) scene of a :func:`scene_uri`."""
    key = parse_scene_uri(uri)
    with _LOCK:
        if key not in _SCENES:
            try:
                _SCENES[key] = make_scene(key[0], key[1], fps=key[2])
            except KeyError as exc:
                raise SourceError(f"trackscene source: {exc.args[0]}") from None
        return _SCENES[key]


class _SceneReader:
    """Reads a scene's delivered frames (black, index in the first pixel), with ``pts = index / fps``."""

    def __init__(self, scene: Scene) -> None:
        self.world = scene.world
        self.fps: Optional[float] = float(self.world.fps)
        self._frames = self.world.delivered()
        self.expected_frames: Optional[int] = len(self._frames)
        self._k = 0
        self._last = -1

    def read(self) -> Any:
        from edge_detect.stream.sources import ReadResult

        if self._k >= len(self._frames):
            return ReadResult("end")
        f = self._frames[self._k]
        self._k += 1
        h, w = self.world.size
        img = np.zeros((h, w, 3), np.uint8)
        img[0, 0] = (f & 255, (f >> 8) & 255, (f >> 16) & 255)
        skipped, self._last = f - self._last - 1, f
        return ReadResult("ok", img, f * 1000.0 / self.fps, skipped=skipped)

    def release(self) -> None:
        """Nothing to free."""


def register_scene_source() -> None:
    """Register the ``trackscene://`` source scheme (idempotent)."""
    from edge_detect.stream.sources import SourceKind, register_source, source_from_reader
    from edge_detect.stream.sources.registry import _SOURCE_FACTORIES

    if SCHEME in _SOURCE_FACTORIES:
        return
    kind = SourceKind(SCHEME, live=False, reconnect=False,
                      default_id=lambda target: "{}{}".format(*parse_scene_uri(target)[:2]))

    @register_source(SCHEME)
    def _open(uri: str, source_id: Optional[str] = None, offline_ok: bool = False, **options: Any) -> Any:
        scene = scene_of(uri)
        return source_from_reader(lambda: _SceneReader(scene), kind, uri, source_id=source_id,
                                  offline_ok=offline_ok, **options)


class SceneDetector:
    """A :class:`~edge_detect.detector.DetectorLike` over one scene (module doc); counts the frames it ran on.

    Args:
        scene: the scene whose frames the source delivers.
    """

    names = COCO_NAMES

    def __init__(self, scene: Scene) -> None:
        self._dets = {sf.index: (sf.detections.xyxy, sf.detections.score, sf.detections.class_id)
                      for sf in scene.frames()}
        self.frames = 0

    def preprocess(self, images: Any, out: Any = None) -> Tuple[np.ndarray, list]:
        self.frames += len(images)
        idx = [int(im[0, 0, 0]) | int(im[0, 0, 1]) << 8 | int(im[0, 0, 2]) << 16 for im in images]
        return np.zeros((len(images), 1), np.float32), idx

    def infer(self, batch: Any) -> Any:
        return [batch]

    def postprocess(self, outputs: Any, infos: list) -> list:
        out = []
        for f in infos:  # fresh objects: the processors write into a frame's detections (events, metadata)
            d = self._dets.get(f)
            out.append(Detections.empty() if d is None else Detections(d[0].copy(), d[1].copy(), d[2].copy()))
        return out
