"""The torch-free ``.pt`` reader: same arrays as the torch loader, and nothing in a hostile file runs."""
from __future__ import annotations

import builtins
import collections
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_torch

from edge_detect.deploy.pt_reader import read_checkpoint
from edge_detect.errors import ModelError, ModelLoadError, UnsafeCheckpointError


class _Evil:
    """Unpickling this calls ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_zip(path: Path, obj, storages=None) -> Path:
    """A ``torch.save``-style zip (``archive/data.pkl`` + raw storages) written without torch."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


_EVIL = [
    (lambda m: _Evil(os.system, f"touch {m}"), "system"),
    (lambda m: _Evil(subprocess.call, ["touch", str(m)]), ".call'"),
    (lambda m: _Evil(builtins.exec, f"open({str(m)!r}, 'w').close()"), "builtins.exec"),
    (lambda m: {"model": _Evil(builtins.eval, f"open({str(m)!r}, 'w')")}, "builtins.eval"),
]


@pytest.mark.parametrize("writer", ["zip", pytest.param("torch.save", marks=requires_torch)])
@pytest.mark.parametrize("make, global_name", _EVIL)
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path: Path, make, global_name: str, writer: str):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        import torch

        torch.save(make(marker), path)
    else:
        _torch_zip(path, make(marker))
    with pytest.raises(UnsafeCheckpointError) as exc:
        read_checkpoint(path)
    assert global_name in str(exc.value) and "allow-list" in str(exc.value) and str(path) in str(exc.value)
    assert not marker.exists()


@requires_torch
def test_legacy_format_is_refused_without_unpickling(tmp_path: Path):
    import torch

    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save(_Evil(os.system, f"touch {marker}"), path, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelLoadError, match="legacy PyTorch serialization"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj, storages, why", [
    ({"epoch": 3}, None, "expected keys 'model'/'ema'"),
    ([1, 2], None, "expected a dict, got list"),
    ({"model": {"a": 1}}, None, "expected a pickled YOLOv5 model under 'ema' or 'model', got dict"),
    ({"format": "edge_detect.yolov5", "format_version": 99}, None, "format_version: expected 1, got 99"),
])
def test_not_a_yolov5_checkpoint(tmp_path: Path, obj, storages, why: str):
    with pytest.raises(ModelLoadError, match="is not a YOLOv5 checkpoint") as exc:
        read_checkpoint(_torch_zip(tmp_path / "x.pt", obj, storages))
    assert why in str(exc.value)


def _tensor_pickle(size, stride, offset, numel: int) -> bytes:
    """``{"model": ..., "t": _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}`` by hand."""
    import io

    def glob(module: str, name: str) -> bytes:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    out = io.BytesIO()
    out.write(b"\x80\x02}q\x00X\x01\x00\x00\x00tq\x01")  # PROTO 2, EMPTY_DICT, key "t"
    out.write(glob("torch._utils", "_rebuild_tensor_v2"))
    out.write(b"(")  # MARK: args
    out.write(b"(X\x07\x00\x00\x00storage" + glob("torch", "FloatStorage") + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
              + b"J" + int(numel).to_bytes(4, "little", signed=True) + b"tQ")  # tuple -> BINPERSID
    out.write(b"J" + int(offset).to_bytes(4, "little", signed=True))
    out.write(b"(" + b"".join(b"J" + int(s).to_bytes(4, "little", signed=True) for s in size) + b"t")
    out.write(b"(" + b"".join(b"J" + int(s).to_bytes(4, "little", signed=True) for s in stride) + b"t")
    out.write(b"\x89" + glob("collections", "OrderedDict") + b")R")  # False, OrderedDict()
    out.write(b"tR")  # args tuple, REDUCE
    out.write(b"s.")  # SETITEM, STOP
    return out.getvalue()


@pytest.mark.parametrize("size, stride, offset, ok", [
    ((2, 3), (3, 1), 0, True),
    ((3, 2), (1, 3), 0, True),          # a transposed view of the same storage
    ((2, 3), (3, 1), 1, False),         # runs one element past the end
    ((4, 4), (4, 1), 0, False),         # more elements than the storage holds
    ((1000000,), (0,), 0, False),       # an expanded tensor (a memory bomb)
    ((2,), (-1,), 1, False),            # negative strides
])
def test_tensor_layout_is_checked_against_its_storage(tmp_path: Path, size, stride, offset, ok):
    storage = np.arange(6, dtype="<f4")
    path = tmp_path / "t.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _tensor_pickle(size, stride, offset, 6))
        z.writestr("archive/data/0", storage.tobytes())
    if ok:
        with pytest.raises(ModelLoadError, match="expected keys 'model'/'ema'"):  # the tensor itself was read
            read_checkpoint(path)
        from edge_detect.deploy import pt_reader

        got = pt_reader._unpickle(path)["t"]
        want = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * 4 for s in stride])
        np.testing.assert_array_equal(got, want)
    else:
        with pytest.raises(ModelLoadError, match="tensor layout"):
            read_checkpoint(path)


@pytest.mark.parametrize("content, shown", [(b"", "an empty file"), (b"GIF89a....", "bytes b'GIF8'")])
def test_garbage_file_is_a_one_line_load_error(tmp_path: Path, content: bytes, shown: str):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"expected a PyTorch checkpoint \\(a zip archive\\), got {shown}"):
        read_checkpoint(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ModelError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pt")


@requires_torch
def test_same_arrays_as_the_torch_loader(weights_pt: Path, tmp_path: Path):
    """Official yolov5n (fp16 storages) and an edge-detect checkpoint (fused, fp16): every array equal."""
    from edge_detect.training.checkpoint import load_checkpoint, load_model, save_checkpoint

    model, names = load_model(weights_pt)  # fused
    own = save_checkpoint(tmp_path / "own.pt", model.half(), names)
    for path in (weights_pt, own):
        got, want = read_checkpoint(path), load_checkpoint(path)
        assert list(got["state_dict"]) == list(want["state_dict"])
        for k, v in want["state_dict"].items():
            assert got["state_dict"][k].dtype == v.numpy().dtype and np.array_equal(got["state_dict"][k], v.numpy()), k
        for key in ("format", "cfg", "names", "nc", "stride", "fused"):
            assert got[key] == want[key], key
        np.testing.assert_array_equal(got["anchors"], want["anchors"].numpy())


def test_official_checkpoint_without_torch(weights_pt: Path):
    info = read_checkpoint(weights_pt)
    assert info["format"] == "yolov5" and info["nc"] == 80 and info["names"][:2] == ["person", "bicycle"]
    assert info["stride"] == [8.0, 16.0, 32.0] and info["anchors"].shape == (3, 3, 2)
    assert info["anchors"][0, 0].tolist() == [1.25, 1.625]  # 10x13 px at stride 8, in grid units
    assert len(info["state_dict"]) == 349 and info["state_dict"]["model.0.conv.weight"].dtype == np.float32
    assert isinstance(info["state_dict"], collections.OrderedDict)


def test_ultralytics_checkpoint_is_refused_by_family(tmp_path: Path):
    # {"model": ultralytics.nn.tasks.DetectionModel()} as protocol-2 opcodes (the package is not needed)
    data = b"\x80\x02}X\x05\x00\x00\x00modelcultralytics.nn.tasks\nDetectionModel\n)\x81s."
    path = tmp_path / "u.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
    with pytest.raises(ModelLoadError, match="ultralytics checkpoint .*needs PyTorch and ultralytics"):
        read_checkpoint(path)


def test_reader_does_not_import_torch(weights_pt: Path):
    import sys

    from conftest import REPO

    code = ("import sys; sys.modules['torch'] = None; from edge_detect.deploy.pt_reader import read_checkpoint; "
            f"print(read_checkpoint({str(weights_pt)!r})['nc'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stdout.strip() == "80", proc.stderr[-2000:]
