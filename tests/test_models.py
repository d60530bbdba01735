"""open_model: the layer above the backends that rebuilds mismatched TensorRT engines (issue 9 layout item)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_detect.backends.engine_meta import sidecar_path
from edge_detect.errors import ConfigError, ModelError, VersionMismatchError
from edge_detect.models import open_model

from trt_doubles import install, make_engine


def test_rebuild_on_mismatch_uses_recorded_onnx_and_options(monkeypatch, tmp_path: Path) -> None:
    install(monkeypatch)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    engine = make_engine(tmp_path / "m.engine", tensorrt="10.0.1", onnx=onnx)
    calls = []

    def fake_build(src, out, **kwargs):
        calls.append((Path(src), Path(out), kwargs))
        return make_engine(Path(out), tensorrt="10.13.0.35", onnx=onnx)  # rebuilt for this machine

    import edge_detect.deploy.tensorrt_build as tb

    monkeypatch.setattr(tb, "build_engine", fake_build)
    with open_model(engine, rebuild_on_mismatch=True) as be:
        (out,) = be.infer(np.ones((1, 3, 64, 64), np.float32))
    assert calls == [(onnx, engine, {"device": 0, "fp16": True, "dla": None, "version_compatible": False,
                                     "hardware_compatible": False})]
    assert out[0, 0, 0] == pytest.approx(1.0)
    assert json.loads(sidecar_path(engine).read_text())["extra"]["engine"]["tensorrt"] == "10.13.0.35"


def test_matching_engine_is_not_rebuilt_and_mismatch_raises_without_the_flag(monkeypatch, tmp_path: Path) -> None:
    install(monkeypatch)
    import edge_detect.deploy.tensorrt_build as tb

    monkeypatch.setattr(tb, "build_engine", lambda *a, **k: pytest.fail("must not rebuild"))
    with open_model(make_engine(tmp_path / "ok.engine", tensorrt="10.13.0"), rebuild_on_mismatch=True) as be:
        assert be.name == "tensorrt"
    with pytest.raises(VersionMismatchError):
        open_model(make_engine(tmp_path / "old.engine", tensorrt="10.0.1"))


def test_rebuild_needs_the_recorded_onnx(monkeypatch, tmp_path: Path) -> None:
    install(monkeypatch)
    engine = make_engine(tmp_path / "m.engine", tensorrt="10.0.1", onnx=tmp_path / "gone.onnx")
    with pytest.raises(ModelError, match="recorded source ONNX .*gone.onnx does not exist"):
        open_model(engine, rebuild_on_mismatch=True)


def test_rebuild_flag_refused_for_other_backends(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        open_model(model, rebuild_on_mismatch=True)
    assert str(info.value) == "rebuild_on_mismatch: expected a TensorRT engine, got m.onnx (backend onnxruntime)"


def test_detector_opens_models_through_open_model(monkeypatch, tmp_path: Path) -> None:
    import edge_detect.detector as detector_mod

    seen = {}

    def fake_open(model, backend=None, **options):
        seen.update(model=model, backend=backend, **options)
        raise ConfigError("stop here")

    monkeypatch.setattr(detector_mod, "open_model", fake_open)
    with pytest.raises(ConfigError, match="stop here"):
        detector_mod.Detector(tmp_path / "m.engine", rebuild_on_mismatch=True, device=1)
    assert seen == {"model": tmp_path / "m.engine", "backend": None, "rebuild_on_mismatch": True, "device": 1}
