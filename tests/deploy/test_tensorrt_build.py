"""Engine building: the TensorRT-free planning, the calibrator's batching and cache, and (GPU) real builds."""
from __future__ import annotations

import ctypes
import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_detect.backends import _cuda
from edge_detect.backends.trt_common import log_level, tensorrt_available
from edge_detect.deploy.tensorrt_build import (BuildPlan, CalibrationBatcher, PhaseBars, inspect_onnx, make_calibrator,
                                              plan_build, plan_profile)
from edge_detect.errors import BackendUnavailableError, ConfigError, DataError
from edge_detect.metadata import METADATA_KEY, ModelMetadata

HAS_TRT = tensorrt_available()
gpu = pytest.mark.skipif(not HAS_TRT, reason="needs an NVIDIA GPU with TensorRT and cuda-python "
                                             "(pip install 'edge-detect[tensorrt]'); not installable here")


# ------------------------------------------------------------------------------------------------ plan_build
@pytest.mark.parametrize("version, kwargs, expected", [
    ("10.3.0", dict(), BuildPlan((), False, None, "fp32")),
    ("10.3.0", dict(fp16=True), BuildPlan(("FP16",), False, None, "fp16")),
    ("8.6.1", dict(int8=True, has_qdq=True), BuildPlan(("INT8", "FP16"), False, "explicit", "int8")),
    ("10.3.0", dict(has_qdq=True), BuildPlan(("INT8", "FP16"), False, "explicit", "int8")),  # Q/DQ implies INT8
    ("10.3.0", dict(int8=True, can_calibrate=True), BuildPlan(("INT8", "FP16"), False, "implicit", "int8")),
    ("8.5.2", dict(fp16=True, dla=0), BuildPlan(("FP16", "GPU_FALLBACK"), False, None, "fp16")),
    ("10.3.0", dict(onnx_fp16=True), BuildPlan(("FP16",), False, None, "fp16")),
    ("11.0.0", dict(int8=True, has_qdq=True), BuildPlan((), True, "explicit", "int8")),
    ("11.2.0", dict(fp16=True, onnx_fp16=True), BuildPlan((), True, None, "fp16")),
    ("11.2.0", dict(), BuildPlan((), True, None, "fp32")),
])
def test_plan_build(version, kwargs, expected) -> None:
    assert dataclasses.replace(plan_build(version, **kwargs), notes=()) == expected


@pytest.mark.parametrize("version, kwargs, error, message", [
    ("8.4.3", dict(fp16=True), BackendUnavailableError, "TensorRT 8.4.3 is too old: expected >= 8.5"),
    ("10.3.0", dict(int8=True), ConfigError, "INT8 needs a Q/DQ ONNX"),
    ("10.3.0", dict(dla=1), ConfigError, "dla=1: DLA runs FP16 or INT8 only"),
    ("11.0.0", dict(int8=True, can_calibrate=True), BackendUnavailableError, "has no implicit INT8 calibration"),
    ("11.0.0", dict(fp16=True), BackendUnavailableError, "FP16 needs an FP16 ONNX"),
])
def test_plan_build_refuses(version, kwargs, error, message) -> None:
    with pytest.raises(error) as info:
        plan_build(version, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ ONNX + profile
def _model(path: Path, shape, qdq: bool = False, fp16: bool = False, fmt: str = "float32_nchw_rgb") -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    elem = TensorProto.UINT8 if fmt == "uint8_nhwc_bgr" else (TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT)
    dims = [d if d > 0 else f"d{i}" for i, d in enumerate(shape)]
    nodes, inits = [helper.make_node("Identity", ["images"], ["x"])], []
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]),
                 helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["x"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("images", elem, dims)],
                              [helper.make_tensor_value_info("x", elem, dims)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key=METADATA_KEY, value=ModelMetadata(names=("a",), batch=2, input_format=fmt).to_json())
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("shape, qdq, fp16, fmt", [
    ((1, 3, 640, 640), False, False, "float32_nchw_rgb"),
    ((-1, 3, -1, -1), True, False, "float32_nchw_rgb"),
    ((1, 3, 640, 640), False, True, "float32_nchw_rgb"),
    ((1, 640, 640, 3), False, False, "uint8_nhwc_bgr"),
])
def test_inspect_onnx(tmp_path: Path, shape, qdq, fp16, fmt) -> None:
    info = inspect_onnx(_model(tmp_path / "m.onnx", shape, qdq, fp16, fmt))
    assert info.input.name == "images" and info.input.shape == shape
    assert info.input.dtype == {"uint8_nhwc_bgr": np.uint8}.get(fmt, np.float16 if fp16 else np.float32)
    assert (info.has_qdq, info.fp16, info.dynamic) == (qdq, fp16, -1 in shape)
    assert info.metadata.input_format == fmt and info.outputs == ("x",)


def test_plan_profile(tmp_path: Path) -> None:
    static = inspect_onnx(_model(tmp_path / "s.onnx", (1, 3, 640, 640)))
    dynamic = inspect_onnx(_model(tmp_path / "d.onnx", (-1, 3, -1, -1)))
    u8 = inspect_onnx(_model(tmp_path / "u.onnx", (-1, -1, -1, 3), fmt="uint8_nhwc_bgr"))
    assert plan_profile(static) is None
    nominal = plan_profile(dynamic)  # metadata batch 2, imgsz 640
    assert (nominal.min, nominal.max) == ((2, 3, 640, 640), (2, 3, 640, 640))
    assert plan_profile(u8).max == (2, 640, 640, 3)
    p = plan_profile(dynamic, {"min": (1, 3, 320, 320), "opt": (4, 3, 640, 640), "max": (8, 3, 640, 640)})
    assert (p.min, p.opt, p.max) == ((1, 3, 320, 320), (4, 3, 640, 640), (8, 3, 640, 640))
    auto = plan_profile(dynamic, True)  # the CLI's --dynamic: batch 1..2 (metadata), sides 320..640
    assert (auto.min, auto.opt, auto.max) == ((1, 3, 320, 320), (2, 3, 640, 640), (2, 3, 640, 640))
    assert plan_profile(u8, True).min == (1, 320, 320, 3)


def test_temporary_source_onnx_is_kept_beside_the_engine(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from edge_detect.deploy.tensorrt_build import _persistent_source

    tmpdir, outdir = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    outdir.mkdir()
    src = tmpdir / "nms.onnx"
    src.write_bytes(b"onnx")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmpdir))
    kept = _persistent_source(src, outdir / "m.engine")
    assert kept == (outdir / "m.engine.onnx").resolve() and kept.read_bytes() == b"onnx"
    assert _persistent_source(src, tmpdir / "m.engine") == src.resolve()  # engine in tmp too: no copy


@pytest.mark.parametrize("which, dynamic, message", [
    ("static", [(1, 3, 640, 640)] * 3, "has a static input (1, 3, 640, 640); export it with --dynamic"),
    ("dynamic", [(1, 4, 640, 640)] * 3, "tensor 'images': expected shape (?, 3, ?, ?), got (1, 4, 640, 640)"),
    ("dynamic", [(1, 3, 320, 320), (1, 3, 640, 640), (1, 3, 650, 640)], "multiples of the stride 32"),
    ("dynamic", [(2, 3, 640, 640), (1, 3, 640, 640), (4, 3, 640, 640)], "expected 0 < min <= opt <= max"),
])
def test_plan_profile_refuses(tmp_path: Path, which, dynamic, message) -> None:
    info = inspect_onnx(_model(tmp_path / "m.onnx", (1, 3, 640, 640) if which == "static" else (-1, 3, -1, -1)))
    with pytest.raises(ConfigError) as exc:
        plan_profile(info, dynamic)
    assert message in str(exc.value)


# ------------------------------------------------------------------------------------------------ calibrator core
class CountingSource:
    """Zero-argument callable returning an iterator of (2, 3, 8, 8) batches; counts what was read."""

    def __init__(self, n: int = 3, shape=(2, 3, 8, 8), dtype=np.float32) -> None:
        self.n, self.shape, self.dtype, self.read, self.starts = n, shape, dtype, 0, 0

    def __call__(self):
        self.starts += 1
        for i in range(self.n):
            self.read += 1
            yield np.full(self.shape, i, dtype=self.dtype)


def test_batcher_serves_batches_then_none(tmp_path: Path) -> None:
    src = CountingSource(3, dtype=np.float64)
    b = CalibrationBatcher(src, tmp_path / "c.cache", (2, 3, 8, 8), total=3, progress=False)
    assert src.starts == 0 and b.batch_size == 2  # lazy: nothing read on construction
    got = [b.next_batch() for _ in range(4)]
    assert [g[0, 0, 0, 0] for g in got[:3]] == [0, 1, 2] and got[3] is None
    assert all(g.dtype == np.float32 and g.flags.c_contiguous for g in got[:3])
    assert b.batches_served == 3 and src.read == 3
    b.reset()
    assert b.next_batch()[0, 0, 0, 0] == 0 and src.starts == 2


def test_calibration_cache_is_written_then_reused_without_reading_images(tmp_path: Path) -> None:
    cache = tmp_path / "sub" / "yolov5n.engine.calib"
    first_src = CountingSource(3)
    first = CalibrationBatcher(first_src, cache, (2, 3, 8, 8), progress=False)
    assert first.read_cache() is None and not first.cache_hit
    while first.next_batch() is not None:
        pass
    first.write_cache(b"TRT-8601-EntropyCalibration2\nimages: 3c010a14\n")
    assert cache.read_bytes().startswith(b"TRT-8601") and first_src.read == 3

    second_src = CountingSource(3)
    second = CalibrationBatcher(second_src, cache, (2, 3, 8, 8), progress=False)
    assert second.read_cache() == cache.read_bytes() and second.cache_hit
    assert second_src.starts == 0 and second.batches_served == 0  # TensorRT calls no get_batch on a hit

    forced = CalibrationBatcher(second_src, cache, (2, 3, 8, 8), overwrite_cache=True, progress=False)
    assert forced.read_cache() is None


def test_cache_only_calibration(tmp_path: Path) -> None:
    cache = tmp_path / "c.calib"
    cache.write_bytes(b"")
    b = CalibrationBatcher(None, cache, (1, 3, 8, 8), progress=False)
    assert b.read_cache() is None  # empty file = no cache
    with pytest.raises(DataError, match="no calibration cache found and no calibration data given"):
        b.next_batch()


@pytest.mark.parametrize("src, input_shape, dtype, message", [
    (CountingSource(1, shape=(1, 3, 8, 8)), (2, 3, 8, 8), np.float32,
     "calibration batch 0: expected shape (2, 3, 8, 8), got (1, 3, 8, 8)"),
    (CountingSource(1, shape=(2, 8, 8, 3)), (2, 8, 8, 3), np.uint8,
     "calibration batch 0: expected uint8 (uint8-input model), got float32"),
])
def test_batcher_rejects_bad_batches(src, input_shape, dtype, message) -> None:
    b = CalibrationBatcher(src, None, input_shape, dtype=dtype, progress=False)
    with pytest.raises(DataError) as info:
        b.next_batch()
    assert str(info.value) == message


def test_batcher_with_calibration_data(coco128: Path) -> None:
    """E1's CalibrationData.batches plugs in as the source (4 images, batch 2 -> 2 batches)."""
    calibration = pytest.importorskip("edge_detect.deploy.calibration")
    data = calibration.CalibrationData(coco128 / "images" / "train2017", input_hw=(64, 64), num_images=4,
                                       batch_size=2, progress=False)
    b = CalibrationBatcher(data.batches, None, (2, 3, 64, 64), total=len(data), progress=False)
    batches = []
    while (x := b.next_batch()) is not None:
        batches.append(x)
    assert len(batches) == 2 and batches[0].shape == (2, 3, 64, 64)
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0 and np.isclose(batches[0], 114 / 255).any()


class FakeCudaForCalibrator:
    """cudaMalloc/cudaMemcpy/cudaFree over host memory, enough for the calibrator wrapper."""

    class cudaError_t:  # noqa: N801 - mirrors cuda-python
        cudaSuccess = 0

    class cudaMemcpyKind:  # noqa: N801
        cudaMemcpyHostToDevice = 1

    def __init__(self) -> None:
        self.mem = {}

    def cudaMalloc(self, n):  # noqa: N802
        buf = ctypes.create_string_buffer(n)
        self.mem[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaMemcpy(self, dst, src, n, kind):  # noqa: N802
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaFree(self, ptr):  # noqa: N802
        del self.mem[ptr]
        return (0,)


def test_calibrator_wrapper_delegates_to_batcher(tmp_path: Path, monkeypatch) -> None:
    fake = FakeCudaForCalibrator()
    monkeypatch.setattr(_cuda, "_RT", fake)

    class Base:
        def __init__(self) -> None:
            self.base_init = True

    trt = SimpleNamespace(__version__="10.3.0", IInt8EntropyCalibrator2=Base, IInt8MinMaxCalibrator=Base)
    src = CountingSource(2)
    cal = make_calibrator(trt, CalibrationBatcher(src, tmp_path / "c", (2, 3, 8, 8), progress=False), "minmax")
    assert cal.base_init and cal.get_batch_size() == 2 and cal.read_calibration_cache() is None
    (ptr,) = cal.get_batch(["images"])
    on_device = np.ctypeslib.as_array((ctypes.c_float * (2 * 3 * 8 * 8)).from_address(ptr))
    assert (on_device == 0).all()
    cal.get_batch(["images"])
    assert (on_device == 1).all() and cal.get_batch(["images"]) is None
    cal.write_calibration_cache(memoryview(b"cache!"))
    assert (tmp_path / "c").read_bytes() == b"cache!"
    cal.close()
    assert fake.mem == {}
    with pytest.raises(ConfigError, match="expected one of \\['entropy', 'minmax'\\], got 'percentile'"):
        make_calibrator(trt, CalibrationBatcher(src, None, (2, 3, 8, 8)), "percentile")


# ------------------------------------------------------------------------------------------------ logging/progress
@pytest.mark.parametrize("severity, level", [
    ("INTERNAL_ERROR", logging.CRITICAL), ("Severity.ERROR", logging.ERROR), ("WARNING", logging.WARNING),
    (SimpleNamespace(name="INFO"), logging.INFO), ("VERBOSE", logging.DEBUG), ("odd", logging.INFO),
])
def test_log_level(severity, level) -> None:
    assert log_level(severity) == level


def test_phase_bars_log_lines_when_stderr_is_not_a_terminal(caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge_detect.progress")
    bars = PhaseBars(enabled=True)  # pytest's stderr is not a terminal
    bars.start("Building engine", None, 3)
    assert bars.step("Building engine", 2) and bars.bars["Building engine"].n == 3
    bars.finish("Building engine")
    assert "Building engine: 3/3" in caplog.text and "\r" not in caplog.text


def test_phase_bars_nesting_and_cancel(monkeypatch) -> None:
    monkeypatch.setattr("edge_detect.progress.stderr_is_terminal", lambda: True)  # tqdm bars, nested
    bars = PhaseBars(enabled=True)
    bars.start("Building engine", None, 3)
    bars.start("Tactic selection", "Building engine", 10)
    assert bars.bars["Tactic selection"].pos in (1, -1)  # nested one level down
    assert bars.step("Tactic selection", 4) and bars.bars["Tactic selection"].n == 5
    bars.cancelled = True
    assert not bars.step("Building engine", 0)  # step_complete returning False cancels the build
    bars.finish("Tactic selection")
    bars.finish("Building engine")
    assert bars.bars == {} and bars.parents == {}
    quiet = PhaseBars(enabled=False)
    quiet.start("x", None, 1)
    assert quiet.step("x", 0) and quiet.bars == {}


# ------------------------------------------------------------------------------------------------ GPU
@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8-implicit", "int8-qdq"])
def test_build_engine_on_gpu(yolov5n_onnx: Path, coco128: Path, tmp_path: Path, precision: str) -> None:
    from edge_detect.deploy.tensorrt_build import build_engine
    from edge_detect.backends.engine_meta import engine_info, read_engine_metadata

    onnx = yolov5n_onnx
    kwargs = {"fp16": True} if precision == "fp16" else {"int8": True}
    if precision == "int8-implicit":
        kwargs.update(calib=coco128 / "images" / "train2017", calib_images=16)
    if precision == "int8-qdq":
        quantize = pytest.importorskip("edge_detect.deploy.quantize")
        onnx = quantize.quantize_int8(yolov5n_onnx, tmp_path / "q.onnx", coco128 / "images" / "train2017",
                                      num_images=16, sensitivity=False)
    out = build_engine(onnx, tmp_path / "m.engine", workspace_gb=2, timing_cache=tmp_path / "t.cache",
                       progress=False, **kwargs)
    meta = read_engine_metadata(out)
    info = engine_info(meta)
    assert out.stat().st_size > 1_000_000 and (tmp_path / "t.cache").stat().st_size > 0
    assert meta.precision == ("fp16" if precision == "fp16" else "int8") and len(meta.names) == 80
    assert info.input_shape == (1, 3, 640, 640) and info.gpu and info.compute_capability
    if precision == "int8-implicit":
        assert meta.quantization["calibration"] == "implicit" and meta.quantization["batches"] == 16
        assert (tmp_path / "m.engine.calib").stat().st_size > 0
        again = build_engine(yolov5n_onnx, tmp_path / "m2.engine", int8=True, progress=False,
                             calibration_cache=tmp_path / "m.engine.calib")  # cache only, no images
        assert read_engine_metadata(again).quantization["cache_hit"] is True


# ------------------------------------------------------------------------------------------------ fake-TensorRT builds
# build_engine against the TensorRT double generated from tensorrt-stubs (tests/trt_doubles.py): its ONNX parser
# turns each ONNX node into a layer named after it and refuses plugin ops until init_libnvinfer_plugins ran; its
# builder runs INT8 calibrators the way TensorRT's Python wrapper does (exceptions printed and swallowed).
def _identity_raw(path: Path, nc: int = 80, n: int = 25200) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"], name="model/identity")], "raw",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, n, 5 + nc])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, n, 5 + nc])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key=METADATA_KEY, value=ModelMetadata(names=tuple(f"c{i}" for i in range(nc))).to_json())
    onnx.save(model, str(path))
    return path


def _nms_model(tmp_path: Path, plugin: str, **kwargs) -> Path:
    pytest.importorskip("onnx_graphsurgeon")
    from edge_detect.deploy.graph import add_nms

    return add_nms(_identity_raw(tmp_path / "raw.onnx"), tmp_path / f"{plugin}.onnx", plugin=plugin, **kwargs)


@pytest.fixture
def fake_trt(monkeypatch):
    from trt_doubles import install

    return install(monkeypatch)


def test_calibrator_errors_are_reraised_and_the_partial_cache_deleted(fake_trt, tmp_path: Path) -> None:
    """A data error in the 2nd batch: TensorRT's wrapper would swallow it (partial calibration + cache); the build
    re-raises it instead and leaves no cache (before: the build 'succeeded' after 1 batch and wrote the cache)."""
    from edge_detect.deploy.tensorrt_build import build_engine

    model = _model(tmp_path / "m.onnx", (1, 3, 8, 8))

    def batches():
        yield np.zeros((1, 3, 8, 8), np.float32)
        raise DataError("calibration image 7: cannot decode broken.jpg")

    cache = tmp_path / "m.engine.calib"
    with pytest.raises(DataError, match="cannot decode broken.jpg"):
        build_engine(model, tmp_path / "m.engine", int8=True, calibrator=batches, progress=False)
    assert not cache.exists() and not (tmp_path / "m.engine").exists()
    assert fake_trt.state.printed == []  # nothing reached TensorRT's swallowing wrapper
    assert fake_trt.state.builds[0].calibration_batches == 1


def test_plain_calibrator_errors_swallowed_by_the_double(fake_trt, tmp_path: Path, monkeypatch) -> None:
    """Without the stored-exception wrapper (a plain calibrator), the double swallows the error and writes a
    cache: the failure mode the fix prevents."""
    trt = fake_trt.trt

    class Plain(trt.IInt8EntropyCalibrator2):
        def get_batch(self, names):
            raise DataError("boom")

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            self.cache = bytes(cache)

    builder = trt.Builder(None)
    network = builder.create_network(0)
    assert trt.OnnxParser(network, None).parse_from_file(str(_model(tmp_path / "m.onnx", (1, 3, 8, 8))))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    config.int8_calibrator = cal = Plain()
    assert builder.build_serialized_network(network, config) is not None
    assert fake_trt.state.printed == ["DataError: boom"] and cal.cache.startswith(b"TRT-10.13")


def test_calibrator_wrapper_stores_the_first_error(tmp_path: Path, fake_trt) -> None:
    src = CountingSource(2)
    cal = make_calibrator(fake_trt.trt, CalibrationBatcher(src, tmp_path / "c", (2, 3, 8, 8), progress=False))
    cal.batcher.next_batch = lambda: (_ for _ in ()).throw(OSError("disk gone"))
    assert cal.get_batch(["images"]) is None and isinstance(cal.error, OSError)
    cal.write_calibration_cache(memoryview(b"partial"))
    assert not (tmp_path / "c").exists() and cal.read_calibration_cache() is None


@pytest.mark.parametrize("version, agnostic, ok", [("8.5.2", True, False), ("8.5.2", False, True),
                                                   ("8.6.1", True, True)])
def test_agnostic_efficient_nms_refused_below_tensorrt_86(monkeypatch, tmp_path: Path, version, agnostic, ok) -> None:
    """TensorRT 8.5's EfficientNMS has no class_agnostic field and the parser drops it: refuse, don't ignore."""
    from trt_doubles import install
    from edge_detect.deploy.tensorrt_build import build_engine

    fakes = install(monkeypatch, version=version)
    model = _nms_model(tmp_path, "efficient", agnostic=agnostic)
    if ok:
        build_engine(model, tmp_path / "m.engine", progress=False)
        assert fakes.state.plugins_registered  # the parser needs the plugin creators (defect 1, build side)
        return
    with pytest.raises(ConfigError) as info:
        build_engine(model, tmp_path / "m.engine", progress=False)
    assert str(info.value).startswith("efficient.onnx: class-agnostic EfficientNMS_TRT needs TensorRT >= 8.6, "
                                      "got 8.5.2") and fakes.state.builds == []


def _fp16_overflowing_tensors(model: Path, raw: np.ndarray) -> set:
    """Names of the float tensors of the NMS graph whose values exceed FP16's range on ``raw`` (ONNX Runtime)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    m = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
    floats = [v for v in m.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    del m.graph.output[:]
    m.graph.output.extend(floats)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(None, {"images": raw})
    return {v.name for v, x in zip(floats, values) if x.size and np.abs(x).max() > 65504}


@pytest.mark.parametrize("plugin", ["onnx", "inms"])
def test_fp16_build_keeps_the_nms_section_fp32(fake_trt, tmp_path: Path, reference: Path, plugin) -> None:
    """On bus.jpg the class offsets reach > 65,504 (FP16 max): every layer producing such a tensor is pinned to
    FP32, with PREFER_PRECISION_CONSTRAINTS (before: nothing pinned, the offsets overflow to inf)."""
    from edge_detect.deploy.tensorrt_build import build_engine

    model = _nms_model(tmp_path, plugin, conf=0.25, iou=0.45, max_det=100)
    raw = np.load(reference / "infer_bus.npz")["raw"].astype(np.float32)
    overflow = _fp16_overflowing_tensors(model, raw)
    assert overflow  # the hazard is real on this image
    build_engine(model, tmp_path / "m.engine", fp16=True, progress=False)
    build = fake_trt.state.builds[-1]
    assert {"FP16", "PREFER_PRECISION_CONSTRAINTS"} <= build.flags
    trt = fake_trt.trt
    producers = {layer.name for layer in build.network._d_layers
                 if any(layer.get_output(j).name in overflow for j in range(layer.num_outputs))}
    assert producers and producers <= set(build.pinned)
    assert all(prec == trt.float32 and set(types.values()) <= {trt.float32} for prec, types in build.pinned.values())
    assert "model/identity" not in build.pinned  # the model itself keeps FP16
    assert build.precisions["model/identity"] == "HALF"


def test_fp32_build_pins_nothing(fake_trt, tmp_path: Path) -> None:
    from edge_detect.deploy.tensorrt_build import build_engine

    build_engine(_nms_model(tmp_path, "onnx"), tmp_path / "m.engine", progress=False)
    assert fake_trt.state.builds[-1].pinned == {} and "PREFER_PRECISION_CONSTRAINTS" not in fake_trt.state.builds[-1].flags


def test_timing_cache_from_another_version_is_replaced(fake_trt, tmp_path: Path, caplog) -> None:
    """set_timing_cache's result is checked: a cache TensorRT refuses is replaced by a fresh one (before: the
    refusal was ignored and saving the cache failed)."""
    from edge_detect.deploy.tensorrt_build import build_engine

    tc = tmp_path / "t.cache"
    tc.write_bytes(b"TRT-8.6.1-timing")
    build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", timing_cache=tc, progress=False)
    assert tc.read_bytes().startswith(b"TRT-10.13.0.35") and "made by another TensorRT version or GPU" in caplog.text


def test_one_logger_shared_by_builder_and_runtime(fake_trt, tmp_path: Path) -> None:
    from edge_detect.backends import trt_common
    from edge_detect.deploy.tensorrt_build import build_engine

    build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", progress=False)
    logger = trt_common.get_logger(fake_trt.trt)
    assert fake_trt.state.plugin_logger is logger
    assert fake_trt.state.builds[-1].network is not None
    assert trt_common.init_plugins(fake_trt.trt) is logger  # registration happens once, same logger


@pytest.mark.parametrize("version, cc, top_k, error", [
    ("10.3.0", "8.6", 3840, None),
    ("8.5.2", "8.7", 3840, None),  # INMSLayer is in TensorRT 8.5 (NvInfer.h, onnx-tensorrt 8.5-GA)
    ("10.3.0", "8.6", 3841, "nms top_k: expected <= 3840 (TensorRT's TopK layer takes K <= 3840"),
    ("8.6.2", "5.3", 3840, "expected <= 2000 (TensorRT's TopK layer takes K <= 3840, its NMS layer keeps 2000 "
                           "candidates on compute capability 5.3), got 3840"),
    ("8.6.2", "6.2", 2000, None),
])
def test_inms_candidate_limits(tmp_path: Path, version, cc, top_k, error) -> None:
    from edge_detect.deploy.tensorrt_build import check_nms_support

    info = inspect_onnx(_nms_model(tmp_path, "onnx", max_det=100, top_k=top_k))
    assert (info.nms_op, info.nms_max_det, info.nms_top_k) == ("NonMaxSuppression", 100, top_k)
    if error is None:
        check_nms_support(version, info, cc)
        return
    with pytest.raises(ConfigError) as exc:
        check_nms_support(version, info, cc)
    assert error in str(exc.value)


def test_version_compatible_needs_86() -> None:
    with pytest.raises(BackendUnavailableError, match="version-compatible engines: expected TensorRT >= 8.6, "
                                                      "got 8.5.2"):
        plan_build("8.5.2", fp16=True, version_compatible=True)
    assert plan_build("8.6.1", fp16=True, version_compatible=True).flags == ("FP16",)


def test_setup_cfg_pins_a_tested_combination() -> None:
    """tensorrt 8.6-10.x (11 drops implicit INT8/weak typing) with cuda-python 12.x or 13.x, one rule in tensorrt and
    dev (13 needs a CUDA 13 driver; torch >= 2.14 requires 13); the API surfaces the doubles are built from are
    installed for the tests."""
    import configparser

    from conftest import REPO

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = {k: [ln.strip() for ln in v.strip().splitlines() if ln.strip()]
              for k, v in cfg["options.extras_require"].items()}
    assert extras["tensorrt"] == ["tensorrt>=8.6,<11", "cuda-python>=12,<14"]
    assert "cuda-python>=12,<14" in extras["dev"]
    # tensorrt-stubs requires tensorrt, whose libraries only download from pypi.nvidia.com: not an extra, but
    # installed with --no-deps by CI (and the README's install lines)
    assert not any(req.startswith("tensorrt") for req in extras["dev"])
    assert 'pip install --no-deps "tensorrt-stubs>=10.13"' in (REPO / ".ci" / "run").read_text()
    assert 'pip install --no-deps "tensorrt-stubs>=10.13"' in (REPO / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ issue 20 findings
def _nms_layer(build):
    return next(layer for layer in build.network._d_layers if layer.type.name == "NMS")


@pytest.mark.parametrize("plugin", ["onnx", "inms"])
def test_finding1_fp16_build_runs_the_nms_layer_itself_in_fp32(fake_trt, tmp_path: Path, plugin: str) -> None:
    """The NMS layer outputs int32 indices but consumes the class-offset boxes (up to ~607k, past FP16's 65,504):
    it is pinned to FP32 too (before: only layers with a float output were, so the NMS layer ran in FP16)."""
    from edge_detect.deploy.tensorrt_build import build_engine

    build_engine(_nms_model(tmp_path, plugin, conf=0.25, iou=0.45, max_det=100), tmp_path / "m.engine", fp16=True,
                 progress=False)
    build = fake_trt.state.builds[-1]
    nms = _nms_layer(build)
    assert nms.name.startswith("nms/NonMaxSuppression") and nms.get_output(0).dtype == fake_trt.trt.int32
    assert build.precisions[nms.name] == "FLOAT" and nms.precision_is_set
    assert not nms.output_type_is_set(0)  # int32 indices: no float output type forced


def test_finding3_unreadable_timing_cache_falls_back_to_a_new_one(fake_trt, tmp_path: Path, caplog) -> None:
    """create_timing_cache returns None for bytes TensorRT cannot read; set_timing_cache(None) would raise
    (pybind11). The cache is replaced by a new one, as Polygraphy / trtexec do (before: the build crashed)."""
    from edge_detect.deploy.tensorrt_build import build_engine

    tc = tmp_path / "t.cache"
    tc.write_bytes(b"\x00\x01 truncated by a full disk")
    build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", timing_cache=tc, progress=False)
    assert tc.read_bytes().startswith(b"TRT-10.13.0.35") and "is not a timing cache TensorRT can read" in caplog.text


def test_finding4_max_det_is_not_limited_by_the_nms_layer(tmp_path: Path, caplog) -> None:
    """The 5000 limit of TensorRT's NMS layer is on candidates, not on max_det: a max_det above it is fine
    (before: refused); a graph without the pre-NMS top-K gets a warning instead of silent drops."""
    from edge_detect.deploy.tensorrt_build import check_nms_support

    info = inspect_onnx(_nms_model(tmp_path, "inms", conf=0.001, max_det=6000))
    check_nms_support("10.3.0", info, "8.6")
    assert (info.nms_max_det, info.nms_top_k) == (6000, 3840)
    (tmp_path / "old").mkdir()
    old = inspect_onnx(_nms_model(tmp_path / "old", "inms", conf=0.001, max_det=300, top_k=None))
    with caplog.at_level(logging.WARNING):
        check_nms_support("10.3.0", old, "8.6")
    assert "considers only the 5000 best candidate boxes per image" in caplog.text


@pytest.mark.parametrize("version", ["8.5.2", "8.6.1", "10.3.0", "10.13.0"])
def test_finding4_nms_graph_parses_with_each_release_support_matrix(monkeypatch, tmp_path: Path, version) -> None:
    """TopK / GatherElements / Tile / CumSum / ScatterND / Range on data-dependent shapes: within the onnx-tensorrt
    support matrix of every supported release (INMSLayer exists from 8.5)."""
    from trt_doubles import install
    from edge_detect.deploy.tensorrt_build import build_engine

    fakes = install(monkeypatch, version=version)
    build_engine(_nms_model(tmp_path, "inms", conf=0.001, max_det=300), tmp_path / "m.engine", progress=False)
    build = fakes.state.builds[-1]
    assert build.problems == [] and {"TopK", "NonMaxSuppression"} <= {layer._d_op for layer in build.network._d_layers}


@pytest.mark.parametrize("version, gpu, message", [
    ("8.5.2", {}, "hardware-compatible engines: expected TensorRT >= 8.6, got 8.5.2"),
    ("10.3.0", {"name": "Orin", "major": 8, "minor": 7, "integrated": True},
     "hardware-compatible engines: not supported on JetPack (integrated GPU)"),
    ("10.3.0", {"name": "T4", "major": 7, "minor": 5}, "expected an Ampere or later GPU to build on"),
])
def test_finding5_hardware_compatible_builds_refused_where_tensorrt_cannot(monkeypatch, tmp_path: Path, version,
                                                                            gpu, message) -> None:
    """TensorRT 8.5 has no hardware_compatibility_level (before: AttributeError), JetPack does not support
    hardware compatibility and AMPERE_PLUS needs an Ampere+ GPU to build (before: a failed build)."""
    from trt_doubles import install
    from edge_detect.deploy.tensorrt_build import build_engine

    fakes = install(monkeypatch, version=version, devices=[gpu])
    with pytest.raises(BackendUnavailableError) as info:
        build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", fp16=True,
                     hardware_compatible=True, progress=False)
    assert message in str(info.value) and fakes.state.builds == []


def test_finding5_hardware_compatible_build_on_ampere_records_it(monkeypatch, tmp_path: Path) -> None:
    from trt_doubles import install
    from edge_detect.backends.engine_meta import engine_info, read_engine_metadata
    from edge_detect.deploy.tensorrt_build import build_engine

    fakes = install(monkeypatch, version="10.3.0")
    out = build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", hardware_compatible=True,
                       progress=False)
    assert fakes.state.builds[-1].config.hardware_compatibility_level.name == "AMPERE_PLUS"
    assert engine_info(read_engine_metadata(out)).hardware_compatible is True


@pytest.mark.parametrize("version, kwargs, expected", [
    ("10.12.0", dict(onnx_fp16=True), BuildPlan((), True, None, "fp16")),      # FP16 ONNX: strongly typed
    ("10.12.0", dict(has_qdq=True), BuildPlan((), True, "explicit", "int8")),  # Q/DQ ONNX: strongly typed
    ("10.11.0", dict(onnx_fp16=True), BuildPlan(("FP16",), False, None, "fp16")),
    ("10.12.0", dict(fp16=True), BuildPlan(("FP16",), False, None, "fp16")),  # FP32 ONNX: weak, deprecated
])
def test_finding6_strong_typing_from_10_12(version, kwargs, expected) -> None:
    plan = plan_build(version, **kwargs)
    fields = ("flags", "strongly_typed", "calibration", "precision")
    assert [getattr(plan, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert bool(plan.notes) is (kwargs == {"fp16": True})
    if plan.notes:
        assert "deprecated since TensorRT 10.12" in plan.notes[0] and "--half" in plan.notes[0]


@pytest.mark.parametrize("version, ok", [("10.3.0", True), ("11.0.0", False), ("11.4.0", False), ("11.4.1", True)])
def test_finding6_dla_refused_on_tensorrt_11_0_to_11_4_0(version: str, ok: bool) -> None:
    kwargs = dict(fp16=True, onnx_fp16=True, dla=0)
    if ok:
        assert plan_build(version, **kwargs).flags[-1] == "GPU_FALLBACK"
        return
    with pytest.raises(BackendUnavailableError, match=f"dla=0: TensorRT {version} has no DLA support on JetPack"):
        plan_build(version, **kwargs)


def test_finding6_strongly_typed_flag_not_set_on_11(monkeypatch, tmp_path: Path) -> None:
    """TensorRT 11 networks are always strongly typed and the flag is deprecated (before: set, and warned)."""
    from trt_doubles import install
    from edge_detect.deploy.tensorrt_build import build_engine

    fakes = install(monkeypatch, version="11.1.0")
    build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8), fp16=True), tmp_path / "m.engine", fp16=True,
                 progress=False)
    build = fakes.state.builds[-1]
    assert build.network.flags == 0 and build.network._d_strongly_typed and build.flags == set()
    assert not [w for w in fakes.state.warnings if "deprecated" in w]


def test_finding6_default_nms_plugin_per_release(monkeypatch, tmp_path: Path, caplog) -> None:
    """EfficientNMS_TRT is deprecated from 10.12 with no replacement planned: inms is the default there (and of
    add_nms); an EfficientNMS graph built on 10.12+ warns."""
    from trt_doubles import install
    from edge_detect.deploy.tensorrt_build import build_engine, default_nms_plugin, engine_nms_plugin

    assert [default_nms_plugin(v) for v in ("8.5.2", "10.11.0", "10.12.0", "11.1.0", None)] == \
        ["efficient", "efficient", "inms", "inms", "efficient"]
    install(monkeypatch, version="10.12.0")
    assert engine_nms_plugin() == "inms"
    with caplog.at_level(logging.WARNING):
        build_engine(_nms_model(tmp_path, "efficient"), tmp_path / "m.engine", progress=False)
    assert "EfficientNMS_TRT is deprecated since TensorRT 10.12" in caplog.text


def test_finding7_calibration_method_is_recorded_for_rebuilds(fake_trt, tmp_path: Path) -> None:
    """A rebuilt engine must use the calibrator it was built with (before: not recorded, rebuilds used entropy)."""
    from edge_detect.backends.engine_meta import plan_rebuild, read_engine_metadata
    from edge_detect.deploy.tensorrt_build import build_engine

    out = build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", int8=True,
                       calibrator=CountingSource(2, shape=(1, 3, 8, 8)), calibration_method="minmax", progress=False)
    meta = read_engine_metadata(out)
    assert meta.quantization["method"] == "minmax"
    assert plan_rebuild(out, meta).options["calibration_method"] == "minmax"


def test_finding7_refused_optimization_profile_is_an_error(fake_trt, tmp_path: Path, monkeypatch) -> None:
    """add_optimization_profile returns -1 for a profile TensorRT refuses (before: ignored, the build failed
    later with a generic message)."""
    from edge_detect.deploy.tensorrt_build import build_engine

    monkeypatch.setattr(fake_trt.trt.IBuilderConfig, "add_optimization_profile", lambda self, profile: -1)
    with pytest.raises(ConfigError, match="dynamic shapes: TensorRT refused the optimization profile of 'images'"):
        build_engine(_model(tmp_path / "m.onnx", (-1, 3, -1, -1)), tmp_path / "m.engine", dynamic=True,
                     progress=False)
    assert fake_trt.state.builds == []


def test_dla_core_the_device_lacks_is_a_config_error(fake_trt, tmp_path: Path) -> None:
    from edge_detect.deploy.tensorrt_build import build_engine

    with pytest.raises(ConfigError, match=r"dla=0: expected a DLA core of this device \(it has 0"):
        build_engine(_model(tmp_path / "m.onnx", (1, 3, 8, 8)), tmp_path / "m.engine", fp16=True, dla=0,
                     progress=False)
