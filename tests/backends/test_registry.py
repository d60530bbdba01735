"""Backend registry: choice by suffix or URL scheme, unknown options rejected, names for the CLI."""
from __future__ import annotations

import pytest

from edge_detect.backends import base
from edge_detect.errors import ConfigError, ModelError


class RemoteBackend:
    """A stand-in for a remote inference server backend (e.g. Triton), loaded from a URL."""

    name = "remote"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url, timeout_s


@pytest.fixture
def remote(monkeypatch):
    monkeypatch.setitem(base.BACKEND_MODULES, "remote", (__name__, ("remote://",)))
    monkeypatch.setitem(base._REGISTRY, "remote", RemoteBackend)  # as register_backend("remote") does; undone after
    assert base.register_backend("remote")(RemoteBackend) is RemoteBackend
    return RemoteBackend


def test_url_scheme_picks_the_backend_and_skips_file_checks(remote):
    b = base.load_backend("remote://10.0.0.5:8001/yolov5n", timeout_s=1.5)
    assert isinstance(b, remote) and (b.url, b.timeout_s) == ("remote://10.0.0.5:8001/yolov5n", 1.5)
    assert base.backend_for_path("REMOTE://x/y") == "remote"
    assert "remote" in base.backend_names()


@pytest.mark.parametrize("model, kwargs, error, match", [
    ("ftp://host/m.onnx", {}, ModelError, r"no backend for the URL scheme 'ftp://'; expected a model file or one "
                                          r"of \['grpc://', 'http://', 'remote://', 'triton://'\]"),
    ("remote://h/m", {"threads": 2}, ConfigError, r"backend 'remote': unknown option 'threads'; expected one of "
                                                  r"\['timeout_s'\]"),
    ("missing.onnx", {}, ModelError, r"model file not found: missing.onnx"),
    ("model.xyz", {}, ModelError, None),
])
def test_bad_models(remote, tmp_path, monkeypatch, model, kwargs, error, match):
    monkeypatch.chdir(tmp_path)
    if model == "model.xyz":
        (tmp_path / model).write_bytes(b"x")
        match = r"unknown model file type '\.xyz'; expected one of \['\.engine', '\.onnx'"
    with pytest.raises(error, match=match):
        base.load_backend(model, **kwargs)


def test_unknown_option_names_the_backends_that_take_it(remote, tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not opened: the options are checked first")
    with pytest.raises(ConfigError, match=r"^backend 'onnxruntime': unknown option 'timeout_s'; expected one of "
                                          r"\[.*\]; 'remote', 'triton' take it: choose it with --backend / backend=$"):
        base.load_backend(model, timeout_s=1.0)


@pytest.mark.parametrize("shape, dtype, error", [
    ((1, 3, 64, 96), "float32", None),
    ((1, 3, 64, 96), "float64", None),  # cast to the input's dtype
    ((1, 3, 32, 96), "float32", None),  # a dynamic axis takes any size
    ((2, 3, 64, 96), "float32", r"m.onnx input 'images': expected shape \(1, 3, -1, 96\) \(-1 = any\), "
                                r"got \(2, 3, 64, 96\)"),
    ((3, 64, 96), "float32", r"expected shape \(1, 3, -1, 96\) \(-1 = any\), got \(3, 64, 96\)"),
])
def test_input_spec_conform(shape, dtype, error):
    import numpy as np

    spec = base.InputSpec("images", (1, 3, -1, 96), np.dtype(np.float32))
    batch = np.zeros(shape, dtype)
    if error:
        with pytest.raises(ValueError, match=error):
            spec.conform(batch, "m.onnx")
        return
    out = spec.conform(batch, "m.onnx")
    assert out.dtype == np.float32 and out.shape == shape
    assert (out is batch) is (dtype == "float32")  # no copy when nothing changes
