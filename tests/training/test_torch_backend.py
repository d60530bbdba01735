"""Torch backend: registry, input spec, metadata and parity with the official outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import requires_torch

pytestmark = requires_torch

from edge_detect.backends import load_backend  # noqa: E402
from edge_detect.errors import BackendUnavailableError, DataError  # noqa: E402

SHA = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"


@pytest.fixture(scope="module")
def backend(weights_pt: Path):
    with load_backend(weights_pt, threads=2) as b:  # chosen by the .pt suffix
        yield b


def test_protocol(backend) -> None:
    from edge_detect.backends.base import Backend

    assert isinstance(backend, Backend) and backend.name == "torch"
    spec = backend.input_spec
    assert (spec.name, spec.shape, spec.dtype, spec.format) == ("images", (-1, 3, -1, -1), np.float32,
                                                                "float32_nchw_rgb")
    assert spec.dynamic and spec.hw == (-1, -1)


def test_metadata(backend, weights_pt: Path) -> None:
    meta = backend.metadata
    assert meta.nc == 80 and meta.names[0] == "person" and meta.stride == 32
    assert (meta.output_layout, meta.precision, meta.dynamic) == ("raw", "fp32", True)
    assert meta.source_sha256 == SHA and Path(meta.source_path) == weights_pt.resolve()


@pytest.mark.parametrize("image", ["bus", "zidane"])
def test_parity(backend, reference: Path, image: str) -> None:
    ref = np.load(reference / f"infer_{image}.npz")
    x = (np.ascontiguousarray(ref["letterboxed_bgr"][..., ::-1].transpose(2, 0, 1))[None] / 255.0)
    outputs = backend.infer(x.astype(np.float32))
    assert len(outputs) == 1 and outputs[0].dtype == np.float32 and outputs[0].shape == (1, 25200, 85)
    pred, raw = outputs[0], ref["raw"]
    assert np.abs(pred[..., :4] - raw[..., :4]).max() <= 1e-2
    assert np.abs(pred[..., 4:] - raw[..., 4:]).max() <= 1e-3


def test_dynamic_batch_and_size(backend) -> None:
    out = backend.infer(np.zeros((3, 3, 128, 96), np.float32))
    assert out[0].shape == (3, 3 * (16 * 12 + 8 * 6 + 4 * 3), 85) == (3, 756, 85)


@pytest.mark.parametrize("shape, message", [
    ((3, 64, 64), "expected an ndarray (B, 3, H, W), got (3, 64, 64)"),
    ((1, 4, 64, 64), "expected an ndarray (B, 3, H, W), got (1, 4, 64, 64)"),
    ((1, 3, 64, 100), "expected H and W multiples of 32, got 64x100"),
])
def test_bad_input(backend, shape, message: str) -> None:
    with pytest.raises(DataError) as exc:
        backend.infer(np.zeros(shape, np.float32))
    assert message in str(exc.value)


@pytest.mark.parametrize("options, message", [
    ({"device": "cuda:0"}, "CUDA is not available"),
    ({"device": "banana"}, "invalid device 'banana'"),
    ({"half": True}, "half precision needs a CUDA device"),
])
def test_unavailable_device(weights_pt: Path, options, message: str) -> None:
    import torch

    if torch.cuda.is_available() and options.get("device") == "cuda:0":
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendUnavailableError) as exc:
        load_backend(weights_pt, backend="torch", **options)
    assert message in str(exc.value)


def test_unsafe_checkpoint_refused(tmp_path: Path) -> None:
    import os

    import torch

    from edge_detect.errors import UnsafeCheckpointError

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_backend(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("half, box_tol, prob_tol", [(False, 5e-2, 2e-3), (True, 4.0, 2e-2)])
def test_cuda_parity(weights_pt: Path, reference: Path, half: bool, box_tol: float, prob_tol: float) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ref = np.load(reference / "infer_bus.npz")
    x = (np.ascontiguousarray(ref["letterboxed_bgr"][..., ::-1].transpose(2, 0, 1))[None] / 255.0)
    with load_backend(weights_pt, device="cuda:0", half=half) as b:
        assert b.metadata.precision == ("fp16" if half else "fp32")
        pred = b.infer(x.astype(np.float32))[0]
    assert pred.dtype == np.float32 and pred.shape == (1, 25200, 85)
    assert np.abs(pred[..., :4] - ref["raw"][..., :4]).max() <= box_tol
    assert np.abs(pred[..., 4:] - ref["raw"][..., 4:]).max() <= prob_tol
