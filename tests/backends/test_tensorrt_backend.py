"""TensorRT runtime backend.

Without a GPU the backend runs against two small stand-ins installed with monkeypatch: a CUDA runtime whose
"device" memory is host memory (so copies, streams, CUDA graphs and frees are observable), and a TensorRT
whose "engine" is a JSON description computing known outputs from the input it finds at the bound address.
They exercise everything the backend itself does: metadata and mismatch checks before deserializing,
buffer sizing for the profile max, address binding, set_input_shape on shape changes, async copies,
CUDA-graph capture/replay, output ordering for both layouts, uint8 input, and freeing every allocation.
The ``gpu`` tests run the real thing when TensorRT and a GPU are present.
"""
from __future__ import annotations

import ctypes
import enum
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import numpy as np
import pytest

from edge_detect.backends import _cuda, load_backend
from edge_detect.backends import tensorrt as trt_backend
from edge_detect.backends.engine_meta import EngineInfo, read_engine_metadata, sidecar_path, write_engine_metadata
from edge_detect.errors import DataError, ModelLoadError, VersionMismatchError
from edge_detect.metadata import ModelMetadata

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("cuda") is not None
gpu = pytest.mark.skipif(not HAS_TRT, reason="needs an NVIDIA GPU with TensorRT and cuda-python "
                                             "(pip install 'edge-detect[tensorrt]'); not installable here")


# ------------------------------------------------------------------------------------------------ fake CUDA
class FakeCudart:
    """cuda-python's runtime API surface used by _cuda.py, over host memory."""

    class cudaError_t(enum.IntEnum):  # noqa: N801
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, device_limit: int = 1 << 30) -> None:
        self.device: Dict[int, Any] = {}
        self.host: Dict[int, Any] = {}
        self.device_limit = device_limit
        self.copies: List[str] = []
        self.capturing: List[Any] = []
        self.is_capturing = False
        self.graph_launches = 0
        self.streams = 0

    def _alloc(self, table, n):
        buf = ctypes.create_string_buffer(max(int(n), 1))
        table[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def cudaGetErrorString(self, err):  # noqa: N802
        return self.cudaError_t.cudaSuccess, b"out of memory" if err == 2 else b"no error"

    def cudaMalloc(self, n):  # noqa: N802
        if n > self.device_limit:
            return self.cudaError_t.cudaErrorMemoryAllocation, 0
        return self.cudaError_t.cudaSuccess, self._alloc(self.device, n)

    def cudaMallocHost(self, n):  # noqa: N802
        return self.cudaError_t.cudaSuccess, self._alloc(self.host, n)

    def cudaFree(self, p):  # noqa: N802
        del self.device[p]
        return (self.cudaError_t.cudaSuccess,)

    def cudaFreeHost(self, p):  # noqa: N802
        del self.host[p]
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):  # noqa: N802
        assert dst in self.device or dst in self.host
        self.copies.append("H2D" if kind == 1 else "D2H")
        ctypes.memmove(dst, src, n)
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpy(self, dst, src, n, kind):  # noqa: N802
        ctypes.memmove(dst, src, n)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):  # noqa: N802
        self.streams += 1
        return self.cudaError_t.cudaSuccess, 1000 + self.streams

    def cudaStreamSynchronize(self, s):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, s):  # noqa: N802
        self.streams -= 1
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamBeginCapture(self, s, mode):  # noqa: N802
        self.is_capturing, self.capturing = True, []
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, s):  # noqa: N802
        self.is_capturing = False
        return self.cudaError_t.cudaSuccess, list(self.capturing)

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        return self.cudaError_t.cudaSuccess, ("exec", graph)

    def cudaGraphLaunch(self, graph_exec, s):  # noqa: N802
        self.graph_launches += 1
        for work in graph_exec[1]:
            work()
        return (self.cudaError_t.cudaSuccess,)

    def cudaGraphExecDestroy(self, e):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaGraphDestroy(self, g):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(self, d):  # noqa: N802
        return self.cudaError_t.cudaSuccess, SimpleNamespace(name=b"Fake GPU\x00\x00\x00", major=8, minor=6)

    def cudaSetDevice(self, d):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)


# ------------------------------------------------------------------------------------------------ fake TensorRT
def _array_at(ptr: int, dtype, shape) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = (ctypes.c_uint8 * (n * dt.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dt).reshape(shape)


def expected_raw(x: np.ndarray, nhwc: bool) -> np.ndarray:
    """What the fake "raw" engine computes: (B, N, 6) with N = H*W/64, value = image mean + n + 10 j."""
    if nhwc:
        x = x[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    b, _, h, w = x.shape
    n = h * w // 64
    mean = x.reshape(b, -1).mean(1).astype(np.float32)
    return (mean[:, None, None] + np.arange(n, dtype=np.float32)[None, :, None]
            + 10 * np.arange(6, dtype=np.float32)[None, None, :]).astype(np.float32)


class FakeContext:
    def __init__(self, engine: "FakeEngine") -> None:
        self.engine, self.shapes, self.addresses, self.runs, self.shape_sets = engine, {}, {}, 0, 0
        spec = engine.desc["input"]
        self.shapes[spec["name"]] = tuple(spec["shape"])

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if not all(a <= s <= c for a, s, c in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        self.shape_sets += 1
        return True

    def _in_shape(self):
        return self.shapes[self.engine.desc["input"]["name"]]

    def get_tensor_shape(self, name):
        desc = self.engine.desc
        if name == desc["input"]["name"]:
            return self._in_shape()
        s = self._in_shape()
        b, h, w = (s[0], s[1], s[2]) if desc["nhwc"] else (s[0], s[2], s[3])
        k = desc.get("k", 5)
        return {"output0": (b, h * w // 64, 6), "num_dets": (b, 1), "boxes": (b, k, 4), "scores": (b, k),
                "classes": (b, k)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def _compute(self):
        desc, name = self.engine.desc, self.engine.desc["input"]["name"]
        x = _array_at(self.addresses[name], desc["input"]["dtype"], self._in_shape())
        raw = expected_raw(x, desc["nhwc"])
        if desc["layout"] == "raw":
            _array_at(self.addresses["output0"], np.float32, raw.shape)[...] = raw
            return
        b, k = raw.shape[0], desc.get("k", 5)
        _array_at(self.addresses["num_dets"], np.int32, (b, 1))[...] = np.arange(b)[:, None] + 1
        _array_at(self.addresses["boxes"], np.float32, (b, k, 4))[...] = raw[:, :k, :4]
        _array_at(self.addresses["scores"], np.float32, (b, k))[...] = raw[:, :k, 4]
        _array_at(self.addresses["classes"], np.int32, (b, k))[...] = np.arange(k)[None] * 2

    def execute_async_v3(self, stream):
        self.runs += 1
        rt = _cuda.runtime()
        if rt.is_capturing:
            rt.capturing.append(self._compute)
        else:
            self._compute()
        return True


class FakeEngine:
    def __init__(self, desc: dict) -> None:
        self.desc = desc
        inp = desc["input"]
        outs = ["output0"] if desc["layout"] == "raw" else ["classes", "boxes", "num_dets", "scores"]
        self.names = [inp["name"], *outs]
        self.contexts: List[FakeContext] = []

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if name == self.desc["input"]["name"] else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        if name == self.desc["input"]["name"]:
            return self.desc["input"]["dtype"]
        return "int32" if name in ("num_dets", "classes") else "float32"

    def get_tensor_shape(self, name):
        if name == self.desc["input"]["name"]:
            return tuple(self.desc["input"]["shape"])
        return (-1,) * (3 if name in ("output0", "boxes") else 2)

    def get_tensor_profile_shape(self, name, profile):
        return [tuple(s) for s in self.desc["input"]["profile"]]

    def create_execution_context(self):
        self.contexts.append(FakeContext(self))
        return self.contexts[-1]


class FakeTrt:
    __version__ = "10.3.0"

    class TensorIOMode(enum.Enum):
        INPUT = 0
        OUTPUT = 1

    class ILogger:
        def __init__(self) -> None:
            pass

    def __init__(self) -> None:
        self.deserialized: List[FakeEngine] = []

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype).type

    def Runtime(self, logger):  # noqa: N802
        fake = self

        class _Runtime:
            def deserialize_cuda_engine(self, data):
                engine = FakeEngine(json.loads(data))
                fake.deserialized.append(engine)
                return engine

        return _Runtime()


@pytest.fixture
def fakes(monkeypatch):
    rt, trt = FakeCudart(), FakeTrt()
    monkeypatch.setattr(_cuda, "_RT", rt)
    monkeypatch.setattr(trt_backend, "_trt", lambda: trt)
    monkeypatch.setattr(trt_backend._Logger, "instance", object())
    return SimpleNamespace(rt=rt, trt=trt)


def make_engine(path: Path, layout: str = "raw", nhwc: bool = False, dynamic: bool = False, k: int = 5,
                tensorrt: str = "10.3.0", gpu: str = "Fake GPU", cc: str = "8.6", onnx: Path = None) -> Path:
    hw = (64, 64)
    if nhwc:
        shape = (-1, -1, -1, 3) if dynamic else (1, *hw, 3)
        profile = [(1, 32, 32, 3), (1, 64, 64, 3), (4, 64, 64, 3)] if dynamic else [shape] * 3
    else:
        shape = (-1, 3, -1, -1) if dynamic else (1, 3, *hw)
        profile = [(1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 64, 64)] if dynamic else [shape] * 3
    desc = {"input": {"name": "images", "shape": shape, "dtype": "uint8" if nhwc else "float32",
                      "profile": profile}, "layout": layout, "nhwc": nhwc, "k": k}
    path.write_text(json.dumps(desc))
    meta = ModelMetadata(names=tuple("abcdef"), imgsz=hw, output_layout=layout, dynamic=dynamic,
                         input_format="uint8_nhwc_bgr" if nhwc else "float32_nchw_rgb", precision="fp16",
                         source_path=str(onnx or ""))
    write_engine_metadata(path, meta, EngineInfo(tensorrt, gpu, cc, "images", shape,
                                                 "uint8" if nhwc else "float32", build={"fp16": True}))
    return path


# ------------------------------------------------------------------------------------------------ tests
def test_raw_static_engine(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine")
    with load_backend(engine) as be:  # picked by suffix
        assert isinstance(be, trt_backend.TensorRTBackend) and be.name == "tensorrt"
        assert be.input_spec.shape == (1, 3, 64, 64) and be.input_spec.dtype == np.float32
        assert be.metadata.names == tuple("abcdef") and be.metadata.precision == "fp16"
        # one host + one device buffer per tensor, sized for the max shape (input 1x3x64x64 float32 = 49152 B)
        assert sorted(b._length_ for b in fakes.rt.host.values()) == [1536, 49152]
        x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
        (out,) = be.infer(x)
        np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        (out2,) = be.infer(x * 0)
        assert not np.shares_memory(out, out2) and out2[0, 0, 0] == 0  # results are copies
        assert fakes.rt.copies == ["H2D", "D2H"] * 2
    assert fakes.rt.host == {} and fakes.rt.device == {} and fakes.rt.streams == 0  # everything freed
    be.close()  # idempotent


def test_dynamic_engine_sets_shapes_and_checks_profile(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine", dynamic=True)) as be:
        ctx = fakes.trt.deserialized[0].contexts[0]
        assert be.input_spec.shape == (-1, 3, -1, -1) and be.profile.max == (4, 3, 64, 64)
        # buffers sized for the profile max: input 4x3x64x64 float32, output 4x64x6 float32
        assert sorted(b._length_ for b in fakes.rt.host.values()) == [6144, 196608]
        sets = ctx.shape_sets
        for shape in [(2, 3, 32, 64), (2, 3, 32, 64), (4, 3, 64, 64)]:
            x = np.random.default_rng(1).random(shape, dtype=np.float32)
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        assert ctx.shape_sets - sets == 2  # only when the shape changes
        with pytest.raises(DataError) as info:
            be.infer(np.zeros((8, 3, 64, 64), np.float32))
        assert str(info.value) == ("input 'images': shape (8, 3, 64, 64) is outside the engine's optimization "
                                   "profile (min (1, 3, 32, 32), max (4, 3, 64, 64))")
        with pytest.raises(DataError, match=r"expected shape \(\?, 3, \?, \?\), got \(1, 64, 64, 3\)"):
            be.infer(np.zeros((1, 64, 64, 3), np.float32))


def test_nms_engine_outputs_in_layout_order(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine", layout="nms", dynamic=True, k=7)) as be:
        x = np.random.default_rng(2).random((2, 3, 64, 64), dtype=np.float32)
        num, boxes, scores, classes = be.infer(x)
    raw = expected_raw(x, False)
    assert num.dtype == np.int32 and num.tolist() == [[1], [2]]
    assert boxes.shape == (2, 7, 4) and scores.shape == (2, 7) and classes.dtype == np.int32
    np.testing.assert_allclose(boxes, raw[:, :7, :4], rtol=1e-6)
    np.testing.assert_allclose(scores, raw[:, :7, 4], rtol=1e-6)
    assert classes[1].tolist() == [0, 2, 4, 6, 8, 10, 12]


def test_uint8_engine_takes_bgr_frames_unchanged(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine", nhwc=True)) as be:
        assert be.input_spec.format == "uint8_nhwc_bgr" and be.input_spec.nhwc and be.input_spec.hw == (64, 64)
        # the uint8 input buffer is 4x smaller than a float32 one (12288 vs 49152 bytes)
        assert sorted(b._length_ for b in fakes.rt.host.values()) == [1536, 12288]
        frame = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        (out,) = be.infer(frame)
        np.testing.assert_allclose(out, expected_raw(frame, True), rtol=1e-5)
        with pytest.raises(DataError, match="expected uint8 NHWC BGR .* got float32"):
            be.infer(frame.astype(np.float32))


def test_cuda_graph_captures_once_and_replays_new_inputs(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine"), cuda_graph=True) as be:
        ctx = fakes.trt.deserialized[0].contexts[0]
        for seed in range(3):
            x = np.random.default_rng(seed).random((1, 3, 64, 64), dtype=np.float32)
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        assert ctx.runs == 2  # one plain run + one captured enqueue; then replays
        assert fakes.rt.graph_launches == 3


def test_cuda_graph_is_skipped_for_dynamic_engines(fakes, tmp_path: Path, caplog) -> None:
    with load_backend(make_engine(tmp_path / "m.engine", dynamic=True), cuda_graph=True) as be:
        be.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert fakes.rt.graph_launches == 0 and "dynamic shapes; running without CUDA graph" in caplog.text


def test_version_mismatch_fails_before_deserializing(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine", tensorrt="8.6.1", gpu="Orin", cc="8.7")
    with pytest.raises(VersionMismatchError) as info:
        load_backend(engine)
    assert str(info.value) == ("m.engine was built for TensorRT 8.6.1 vs 10.3.0 here; GPU Orin (compute 8.7) vs "
                               "Fake GPU (compute 8.6) here: rebuild it (edge-detect export --format engine) or "
                               "load it with --rebuild-on-mismatch")
    assert fakes.trt.deserialized == [] and fakes.rt.device == {}


def test_rebuild_on_mismatch_uses_recorded_onnx_and_options(fakes, tmp_path: Path, monkeypatch) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    engine = make_engine(tmp_path / "m.engine", tensorrt="10.0.1", onnx=onnx)
    calls = []

    def fake_build(src, out, **kwargs):
        calls.append((Path(src), Path(out), kwargs))
        return make_engine(Path(out), onnx=onnx)  # rebuilt for this machine

    import edge_detect.deploy.tensorrt_build as tb

    monkeypatch.setattr(tb, "build_engine", fake_build)
    with load_backend(engine, rebuild_on_mismatch=True) as be:
        (out,) = be.infer(np.ones((1, 3, 64, 64), np.float32))
    assert calls == [(onnx, engine, {"device": 0, "fp16": True, "version_compatible": False,
                                     "hardware_compatible": False})]
    assert out[0, 0, 0] == pytest.approx(1.0)
    assert json.loads(sidecar_path(engine).read_text())["extra"]["engine"]["tensorrt"] == "10.3.0"


def test_missing_sidecar_and_bad_metadata(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine")
    sidecar_path(engine).unlink()
    with pytest.raises(ModelLoadError, match="engine metadata not found: expected .*m.engine.json"):
        load_backend(engine)
    engine = make_engine(tmp_path / "n.engine")
    meta = read_engine_metadata(engine)
    bad = meta.replace(input_format="uint8_nhwc_bgr")  # float engine described as uint8
    write_engine_metadata(engine, bad, EngineInfo("10.3.0", "Fake GPU", "8.6", "images", (1, 3, 64, 64)))
    with pytest.raises(ModelLoadError, match="metadata says input uint8_nhwc_bgr, but the engine input is float32"):
        load_backend(engine)
    assert fakes.rt.host == {} and fakes.rt.device == {}  # a failed load frees what it allocated


def test_cuda_errors_are_one_line(fakes, tmp_path: Path) -> None:
    fakes.rt.device_limit = 10_000
    with pytest.raises(_cuda.CudaError) as info:
        load_backend(make_engine(tmp_path / "m.engine"))
    assert str(info.value) == "cudaMalloc(49152) failed: cudaErrorMemoryAllocation (2): out of memory"
    assert fakes.rt.host == {} and fakes.rt.device == {}


def test_cuda_owners(fakes) -> None:
    with _cuda.HostBuffer(16) as h, _cuda.DeviceBuffer(16) as d, _cuda.Stream() as s:
        h.array[:] = np.arange(16, dtype=np.uint8)
        s.copy_htod(d, h, 16)
        h.array[:] = 0
        s.copy_dtoh(h, d, 16)
        s.synchronize()
        assert h.array.tolist() == list(range(16))
        d.upload(np.full(4, 7, np.int32))
        with pytest.raises(_cuda.CudaError, match="upload: expected at most 16 bytes, got 20"):
            d.upload(np.zeros(5, np.int32))
    assert h.closed and d.closed and s.closed and fakes.rt.host == {} and fakes.rt.device == {}
    with pytest.raises(_cuda.CudaError, match="host buffer used after close"):
        h.array
    assert _cuda.device_info(0) == ("Fake GPU", "8.6")
    assert trt_backend.runtime_info(0) == trt_backend.RuntimeInfo("10.3.0", "Fake GPU", "8.6")


def test_without_tensorrt_the_error_names_the_extra(monkeypatch, tmp_path: Path) -> None:
    if HAS_TRT:
        pytest.skip("TensorRT is installed here")
    engine = make_engine(tmp_path / "m.engine")
    from edge_detect.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"pip install 'edge-detect\[tensorrt\]'"):
        load_backend(engine)


# ------------------------------------------------------------------------------------------------ GPU
@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["raw", "nms"])
def test_engine_parity_with_onnxruntime(yolov5n_onnx: Path, reference: Path, tmp_path: Path, layout: str) -> None:
    """FP32 engine vs ONNX Runtime on bus.jpg: raw outputs within 1e-2; in-engine NMS == NumPy NMS."""
    from edge_detect.deploy.graph import add_nms, add_uint8_input
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.postprocess import non_max_suppression

    ref = np.load(reference / "infer_bus.npz")
    bgr = ref["letterboxed_bgr"]
    src = add_uint8_input(yolov5n_onnx, tmp_path / "u8.onnx")
    if layout == "nms":
        src = add_nms(src, tmp_path / "nms.onnx", plugin="efficient", conf=0.25, iou=0.45, max_det=100)
    engine = build_engine(src, tmp_path / "m.engine", progress=False)
    with load_backend(engine) as be:
        outs = be.infer(bgr[None])
    if layout == "raw":
        np.testing.assert_allclose(outs[0], ref["raw"], atol=1e-2, rtol=1e-3)
    else:
        want = non_max_suppression(ref["raw"], 0.25, 0.45)[0]
        n = int(outs[0][0, 0])
        assert n == len(want)
        np.testing.assert_allclose(outs[1][0, :n], want[:, :4], atol=0.5)
        np.testing.assert_allclose(outs[2][0, :n], want[:, 4], atol=1e-2)
        np.testing.assert_array_equal(outs[3][0, :n], want[:, 5])
