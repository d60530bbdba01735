"""Checkpoint loading: the restricted unpickler refuses foreign globals, official and own formats load."""
from __future__ import annotations

import builtins
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_torch

pytestmark = requires_torch

torch = pytest.importorskip("torch")
torch.set_num_threads(2)

from edge_detect.training import checkpoint as ckpt_mod  # noqa: E402
from edge_detect.training.checkpoint import load_checkpoint, load_model, restricted_pickle, save_checkpoint  # noqa: E402
from edge_detect.training.model import YOLOv5  # noqa: E402
from edge_detect.errors import ModelError, ModelLoadError, UnsafeCheckpointError  # noqa: E402


class _Evil:
    """Unpickling this calls ``func(*args)``."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("make, global_name", [
    (lambda m: _Evil(os.system, f"touch {m}"), "system"),
    (lambda m: _Evil(subprocess.call, ["touch", str(m)]), ".call'"),  # pickled as commands.call (py2 name)
    (lambda m: _Evil(builtins.exec, f"open({str(m)!r}, 'w').close()"), "builtins.exec"),
    (lambda m: {"model": _Evil(builtins.eval, f"open({str(m)!r}, 'w')")}, "builtins.eval"),
])
def test_malicious_checkpoint_is_refused(tmp_path: Path, make, global_name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(make(marker), path)  # torch's zip format, pickle inside
    assert zipfile.is_zipfile(path)
    with pytest.raises(UnsafeCheckpointError) as exc:
        load_model(path)
    assert global_name in str(exc.value) and "allow-list" in str(exc.value)
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(_Evil(os.system, f"touch {marker}"), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, why", [
    (b"", "is not a YOLOv5 checkpoint"),
    (b"not a checkpoint at all\n" * 10, "is not a YOLOv5 checkpoint"),
    (bytes(range(256)) * 4, "is not a YOLOv5 checkpoint"),
])
def test_garbage_file(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=why) as exc:
        load_model(path)
    assert not isinstance(exc.value, UnsafeCheckpointError)


@pytest.mark.parametrize("obj, why", [
    ({"epoch": 3}, "expected keys 'model'/'ema'"),
    (torch.zeros(3), "expected a dict, got Tensor"),
    ({"model": {"a": torch.zeros(1)}}, "expected a pickled YOLOv5 model under 'ema' or 'model', got dict"),
    ({"format": ckpt_mod.FORMAT, "format_version": 99}, "format_version: expected 1, got 99"),
    ({"format": ckpt_mod.FORMAT, "format_version": 1, "cfg": "yolov5n"}, "lacks 'cfg' or 'state_dict'"),
])
def test_not_a_yolov5_checkpoint(tmp_path: Path, obj, why: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(ModelLoadError, match="is not a YOLOv5 checkpoint") as exc:
        load_checkpoint(path)
    assert why in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="checkpoint not found") as exc:
        load_model(tmp_path / "nope.pt")
    assert type(exc.value) is ModelError


def test_official_checkpoint_info(weights_pt: Path) -> None:
    info = load_checkpoint(weights_pt)
    assert info["format"] == "yolov5"
    assert info["nc"] == 80 and len(info["names"]) == 80 and info["names"][:3] == ["person", "bicycle", "car"]
    assert info["stride"] == [8.0, 16.0, 32.0]
    assert info["anchors"].shape == (3, 3, 2) and info["anchors"].dtype == torch.float32
    assert info["anchors"][2, 2].tolist() == pytest.approx([373 / 32, 326 / 32], abs=1e-2)
    assert info["cfg"]["width_multiple"] == 0.25 and info["cfg"]["depth_multiple"] == 0.33
    assert len(info["state_dict"]) == 349
    assert {v.dtype for v in info["state_dict"].values()} == {torch.float32, torch.int64}  # fp16 -> fp32
    assert info["date"].startswith("2022-02-08")


def test_official_model(weights_pt: Path) -> None:
    model, names = load_model(weights_pt, fuse=False)
    assert not model.training and not model.fused
    assert model.num_params() == 1_872_157
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert names == model.names and len(names) == 80


@pytest.fixture()
def official_pickle_module(monkeypatch):
    """Make the shim classes picklable under their original YOLOv5 names (models.yolo.Model ...)."""
    for mod_name in ("models", "models.yolo", "models.common"):
        monkeypatch.setitem(sys.modules, mod_name, types.ModuleType(mod_name))
    for (mod_name, cls_name), cls in ckpt_mod._SHIMS.items():
        monkeypatch.setattr(cls, "__module__", mod_name)
        monkeypatch.setattr(sys.modules[mod_name], cls_name, cls, raising=False)


def test_ema_key_is_preferred(weights_pt: Path, reference: Path, tmp_path: Path, official_pickle_module) -> None:
    ckpt = torch.load(weights_pt, map_location="cpu", pickle_module=restricted_pickle, weights_only=False)
    ckpt["ema"], ckpt["model"] = ckpt["model"], None
    ckpt["best_fitness"] = np.float64(0.5)  # training runs store numpy scalars: allowed
    path = tmp_path / "ema.pt"
    torch.save(ckpt, path)
    model, _ = load_model(path)
    assert load_checkpoint(path)["format"] == "yolov5"
    ref = np.load(reference / "infer_bus.npz")
    x = torch.from_numpy(np.ascontiguousarray(ref["letterboxed_bgr"][..., ::-1].transpose(2, 0, 1)))[None] / 255.0
    with torch.inference_mode():
        pred = model(x.float()).numpy()
    assert np.abs(pred[..., 4:] - ref["raw"][..., 4:]).max() <= 1e-3


def test_official_checkpoint_with_wrong_weights(weights_pt: Path, tmp_path: Path, official_pickle_module) -> None:
    ckpt = torch.load(weights_pt, map_location="cpu", pickle_module=restricted_pickle, weights_only=False)
    ckpt["model"].yaml = dict(ckpt["model"].yaml, width_multiple=0.5)  # claims yolov5s widths
    path = tmp_path / "mismatch.pt"
    torch.save(ckpt, path)
    with pytest.raises(ModelLoadError, match="do not fit the model"):
        load_model(path)


def test_own_format_round_trip(weights_pt: Path, tmp_path: Path) -> None:
    model, names = load_model(weights_pt, fuse=False)
    path = save_checkpoint(tmp_path / "sub" / "own.pt", model, names, epoch=7, metrics={"map50": 0.5})
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert raw["format"] == ckpt_mod.FORMAT and raw["epoch"] == 7
    info = load_checkpoint(path)
    assert info["format"] == ckpt_mod.FORMAT and info["extra"]["metrics"] == {"map50": 0.5}
    assert info["names"] == names and info["stride"] == [8.0, 16.0, 32.0]
    loaded, loaded_names = load_model(path)
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        assert torch.allclose(model.fuse()(x), loaded(x), atol=1e-5)
    assert loaded_names == names


def test_own_format_fused_and_half(tmp_path: Path) -> None:
    model = YOLOv5("yolov5n", nc=2, names=["a", "b"]).fuse()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    path = save_checkpoint(tmp_path / "half.pt", model.half())
    info = load_checkpoint(path)
    assert info["fused"] and {v.dtype for v in info["state_dict"].values()} <= {torch.float32, torch.int64}
    loaded, names = load_model(path, fuse=False)
    assert names == ["a", "b"] and loaded.fused
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=0.1)  # fp16 weights, pixel boxes


def test_own_format_missing_key(tmp_path: Path) -> None:
    model = YOLOv5("yolov5n", nc=2)
    path = save_checkpoint(tmp_path / "own.pt", model)
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["model.0.conv.weight"]
    raw["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(raw, path)
    with pytest.raises(ModelLoadError, match=r"1 missing \(e.g. \['model.0.conv.weight'\]\), 1 unexpected"):
        load_model(path)


def test_save_checkpoint_names_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="expected 2 names, got 3"):
        save_checkpoint(tmp_path / "x.pt", YOLOv5("yolov5n", nc=2), ["a", "b", "c"])


@pytest.mark.parametrize("content, shown", [
    (b"hello, this is a text file\n", "got bytes b'hell'"),  # was KeyError: 101 from the weights_only attempt
    (b"e", "got bytes b'e'"),  # was IndexError: pop from empty list
    (b"", "got an empty file"),
    (b"PK\x03\x04 truncated zip", "got bytes b'PK\\x03\\x04'"),
])
def test_non_checkpoint_file_is_a_model_load_error(tmp_path: Path, content: bytes, shown: str) -> None:
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    for load in (load_checkpoint, load_model):
        with pytest.raises(ModelLoadError) as exc:
            load(path)
        assert str(exc.value) == (f"{path} is not a YOLOv5 checkpoint: expected a PyTorch checkpoint (a zip "
                                  f"archive or a pickle), {shown}")
