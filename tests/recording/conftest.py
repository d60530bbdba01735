"""Fixtures of the recording tests: a replay model (the same boxes on every frame, fast) and an H.264 test video
with a keyframe every second."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detect.metadata import ModelMetadata

NAMES = ["person"] + [f"n{i}" for i in range(1, 80)]


@pytest.fixture(scope="session")
def replay(onnx_builder, reference, tmp_path_factory):
    """Static 640 ONNX model returning the reference bus prediction for any frame."""
    raw = np.load(reference / "infer_bus.npz")["raw"]
    return onnx_builder(tmp_path_factory.mktemp("replay") / "replay.onnx", [raw],
                        metadata=ModelMetadata(names=NAMES).to_dict())


@pytest.fixture(scope="session")
def h264_video(tmp_path_factory):
    """20 s of 320x240 H.264 at 10 fps, a keyframe every second (10 frames), no B-frames."""
    pytest.importorskip("av")
    from recording.scripted import make_h264

    return make_h264(tmp_path_factory.mktemp("h264") / "gate.mp4", 20.0)
