"""TensorRT runtime backend against doubles built from the real API surfaces (see ``tests/trt_doubles.py``).

The TensorRT double is generated from the ``tensorrt-stubs`` package (the TensorRT 10.13 Python API), with
behaviour added where it matters: a plugin registry (an engine with EfficientNMS_TRT only deserializes after
``init_libnvinfer_plugins``), version-compatible engines that need ``engine_host_code_allowed``, DLA engines that
need the runtime's DLA core, an execution context that fails under stream capture for engines that cannot be
captured. The CUDA runtime double is ``cuda.bindings.runtime`` over host memory, with the real module's enums
and every call checked against the real function's signature (``cuda_python="11.8"`` swaps in 11.8's
``cudaGraphInstantiate``). The ``gpu`` tests run the real thing when TensorRT and a GPU are present.
"""
from __future__ import annotations

import gc
import logging
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from edge_detect.backends import _cuda, load_backend, trt_common
from edge_detect.backends import tensorrt as trt_backend
from edge_detect.backends.engine_meta import EngineInfo, read_engine_metadata, sidecar_path, write_engine_metadata
from edge_detect.errors import BackendUnavailableError, ConfigError, DataError, MissingDependencyError, ModelLoadError, \
    VersionMismatchError
from trt_doubles import engine_bytes, expected_raw, install, make_engine

HAS_TRT = trt_common.tensorrt_available()
gpu = pytest.mark.skipif(not HAS_TRT, reason="needs an NVIDIA GPU with TensorRT and cuda-python "
                                             "(pip install 'edge-detect[tensorrt]'); not installable here")


@pytest.fixture
def fakes(monkeypatch):
    return install(monkeypatch)


def host_sizes(fakes) -> list:
    return sorted(b._length_ for b in fakes.rt.host.values())


# ------------------------------------------------------------------------------------------------ behaviour
def test_raw_static_engine(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine")
    with load_backend(engine) as be:  # picked by suffix
        assert isinstance(be, trt_backend.TensorRTBackend) and be.name == "tensorrt"
        assert be.input_spec.shape == (1, 3, 64, 64) and be.input_spec.dtype == np.float32
        assert be.metadata.names == tuple("abcdef") and be.metadata.precision == "fp16"
        # one host + one device buffer per tensor, sized for the max shape (input 1x3x64x64 float32 = 49152 B)
        assert host_sizes(fakes) == [1536, 49152]
        x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
        (out,) = be.infer(x)
        np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        (out2,) = be.infer(x * 0)
        assert not np.shares_memory(out, out2) and out2[0, 0, 0] == 0  # results are copies
        assert fakes.rt.copies == ["H2D", "D2H"] * 2
    assert fakes.rt.host == {} and fakes.rt.device == {} and fakes.rt.streams == {}  # everything freed
    be.close()  # idempotent


def test_dynamic_engine_sets_shapes_and_checks_profile(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine", dynamic=True)) as be:
        ctx = fakes.state.deserialized[0]._d_contexts[0]
        assert be.input_spec.shape == (-1, 3, -1, -1) and be.profile.max == (4, 3, 64, 64)
        # buffers sized for the profile max: input 4x3x64x64 float32, output 4x64x6 float32
        assert host_sizes(fakes) == [6144, 196608]
        sets = ctx._d_shape_sets
        for shape in [(2, 3, 32, 64), (2, 3, 32, 64), (4, 3, 64, 64)]:
            x = np.random.default_rng(1).random(shape, dtype=np.float32)
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        assert ctx._d_shape_sets - sets == 2  # only when the shape changes
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
        assert host_sizes(fakes) == [1536, 12288]
        frame = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        (out,) = be.infer(frame)
        np.testing.assert_allclose(out, expected_raw(frame, True), rtol=1e-5)
        with pytest.raises(DataError, match="expected uint8 NHWC BGR .* got float32"):
            be.infer(frame.astype(np.float32))


def test_cuda_graph_captures_once_and_replays_new_inputs(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine"), cuda_graph=True) as be:
        ctx = fakes.state.deserialized[0]._d_contexts[0]
        for seed in range(3):
            x = np.random.default_rng(seed).random((1, 3, 64, 64), dtype=np.float32)
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        assert ctx._d_runs == 2  # one plain run + one captured enqueue; then replays
        assert fakes.rt.graph_launches == 3 and be.uses_cuda_graph
    assert fakes.rt.graphs == {} and fakes.rt.execs == {}  # graph and exec destroyed


def test_cuda_graph_is_skipped_for_dynamic_engines(fakes, tmp_path: Path, caplog) -> None:
    with load_backend(make_engine(tmp_path / "m.engine", dynamic=True), cuda_graph=True) as be:
        be.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert fakes.rt.graph_launches == 0 and "accepts several input shapes" in caplog.text


def test_cuda_graph_allowed_for_a_profile_with_min_equal_max(fakes, tmp_path: Path) -> None:
    """Minor: dynamic axes but one shape in the profile (min = opt = max): the shape cannot change."""
    fixed = [(2, 3, 64, 64)] * 3
    with load_backend(make_engine(tmp_path / "m.engine", dynamic=True, profile=fixed), cuda_graph=True) as be:
        assert be.input_spec.shape == (-1, 3, -1, -1) and be.uses_cuda_graph
        x = np.random.default_rng(4).random((2, 3, 64, 64), dtype=np.float32)
        for _ in range(2):
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
    assert fakes.rt.graph_launches == 2


def test_version_mismatch_fails_before_deserializing(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine", tensorrt="8.6.1", gpu="Orin", cc="8.7")
    with pytest.raises(VersionMismatchError) as info:
        load_backend(engine)
    assert str(info.value) == ("m.engine was built for TensorRT 8.6.1 vs 10.13.0.35 here; GPU Orin (compute 8.7) "
                               "vs Fake GPU (compute 8.6) here: rebuild it (edge-detect export --format engine) or "
                               "load it with --rebuild-on-mismatch")
    assert fakes.state.deserialized == [] and fakes.rt.device == {}


def test_backend_does_not_rebuild(fakes, tmp_path: Path) -> None:
    """Rebuilding is edge_detect.models.open_model's job (tests/test_models.py): the backend takes no such option."""
    engine = make_engine(tmp_path / "m.engine", tensorrt="10.0.1")
    with pytest.raises(ConfigError, match="backend 'tensorrt': unknown option 'rebuild_on_mismatch'"):
        load_backend(engine, rebuild_on_mismatch=True)
    with pytest.raises(VersionMismatchError):
        load_backend(engine)


def test_missing_sidecar_and_bad_metadata(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine")
    sidecar_path(engine).unlink()
    with pytest.raises(ModelLoadError, match="engine metadata not found: expected .*m.engine.json"):
        load_backend(engine)
    engine = make_engine(tmp_path / "n.engine")
    meta = read_engine_metadata(engine)
    bad = meta.replace(input_format="uint8_nhwc_bgr")  # float engine described as uint8
    write_engine_metadata(engine, bad, EngineInfo("10.13.0", "Fake GPU", "8.6", "images", (1, 3, 64, 64)))
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
        s.synchronize()  # the copy reads h when the stream runs it: rewriting h before this would race
        h.array[:] = 0
        s.copy_dtoh(h, d, 16)
        assert h.array.tolist() == [0] * 16  # queued, not done: the host still sees stale data
        s.synchronize()
        assert h.array.tolist() == list(range(16))
        d.upload(np.full(4, 7, np.int32))
        with pytest.raises(_cuda.CudaError, match="upload: expected at most 16 bytes, got 20"):
            d.upload(np.zeros(5, np.int32))
    assert h.closed and d.closed and s.closed and fakes.rt.host == {} and fakes.rt.device == {}
    with pytest.raises(_cuda.CudaError, match="host buffer used after close"):
        h.array
    assert _cuda.device_info(0) == ("Fake GPU", "8.6")
    assert trt_backend.runtime_info(0) == trt_backend.RuntimeInfo("10.13.0.35", "Fake GPU", "8.6")


def test_without_tensorrt_the_error_names_the_extra(monkeypatch, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed at all
    with pytest.raises(MissingDependencyError, match=r"pip install 'edge-detect\[tensorrt\]'"):
        load_backend(engine)


def test_stubs_only_tensorrt_is_reported_missing(monkeypatch, tmp_path: Path) -> None:
    """tensorrt-stubs (dev extra) installs an empty 'tensorrt' namespace package that imports fine."""
    import types

    empty = types.ModuleType("tensorrt")
    empty.__path__ = []  # a namespace package: no Runtime, no __version__
    monkeypatch.setitem(sys.modules, "tensorrt", empty)
    with pytest.raises(MissingDependencyError, match="found only an empty 'tensorrt' namespace package"):
        load_backend(make_engine(tmp_path / "m.engine"))
    assert trt_common.tensorrt_available() is False


# ------------------------------------------------------------------------------------------------ issue 10 defects
def test_plugins_registered_before_deserializing(fakes, tmp_path: Path, caplog) -> None:
    """An engine with EfficientNMS_TRT loads in a fresh process: init_libnvinfer_plugins runs first, with the
    process-lifetime logger (before the fix: "IPluginCreator not found", deserialize returned None)."""
    engine = make_engine(tmp_path / "m.engine", layout="nms", plugins=["EfficientNMS_TRT"])
    assert fakes.state.plugins_registered is False
    with load_backend(engine) as be:
        num, *_ = be.infer(np.zeros((1, 3, 64, 64), np.float32))
    assert num.tolist() == [[1]] and fakes.state.plugins_registered
    assert fakes.state.plugin_logger is trt_common.get_logger(fakes.trt)  # the one logger, kept alive
    assert "IPluginCreator not found" not in caplog.text


def test_double_refuses_plugin_engines_without_registration(fakes) -> None:
    """The double behaves like TensorRT: no registration, no plugin engine (what the old backend hit)."""
    runtime = fakes.trt.Runtime(trt_common.get_logger(fakes.trt))
    assert runtime.deserialize_cuda_engine(engine_bytes("nms", plugins=["EfficientNMS_TRT"])) is None


def test_version_compatible_engine_allows_host_code(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine", tensorrt="10.3.0", version_compatible=True)  # older build: ok
    with load_backend(engine) as be:
        assert be._runtime.engine_host_code_allowed is True
        (out,) = be.infer(np.ones((1, 3, 64, 64), np.float32))
    assert out[0, 0, 0] == pytest.approx(1.0)
    with load_backend(make_engine(tmp_path / "n.engine")) as be:  # plain engines keep TensorRT's default
        assert be._runtime.engine_host_code_allowed is False


def test_cuda_graph_instantiated_with_flags_on_cuda_python_11(monkeypatch, tmp_path: Path) -> None:
    """cuda-python 11.8's cudaGraphInstantiate takes (graph, logBuffer, bufferSize): graphs are instantiated with
    cudaGraphInstantiateWithFlags(graph, 0), the same in 11.8, 12.x and 13.x (before: TypeError, graph leaked)."""
    fakes = install(monkeypatch, cuda_python="11.8")
    with pytest.raises(TypeError):
        fakes.rt.cudaGraphInstantiate(1, 0)  # the double has 11.8's signature
    with load_backend(make_engine(tmp_path / "m.engine"), cuda_graph=True) as be:
        x = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)
        for _ in range(2):
            (out,) = be.infer(x)
        np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        assert be.uses_cuda_graph and fakes.rt.graph_launches == 2
    assert "cudaGraphInstantiateWithFlags" in fakes.rt.calls and "cudaGraphInstantiate" not in fakes.rt.calls
    assert fakes.rt.graphs == {} and fakes.rt.execs == {}


def test_cuda_graph_capture_failure_falls_back_to_plain_enqueue(fakes, tmp_path: Path, caplog) -> None:
    """execute_async_v3 returns False under capture: capture ended, graph destroyed, CUDA error cleared, one
    warning, plain enqueue from then on (before: an exception on every infer())."""
    engine = make_engine(tmp_path / "m.engine", capturable=False)
    with caplog.at_level(logging.WARNING), load_backend(engine, cuda_graph=True) as be:
        for seed in range(3):
            x = np.random.default_rng(seed).random((1, 3, 64, 64), dtype=np.float32)
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        assert be.uses_cuda_graph is False
    warnings = [r for r in caplog.records if "cannot be captured" in r.getMessage()]
    assert len(warnings) == 1 and "the enqueue reported failure" in warnings[0].getMessage()
    assert fakes.rt.capture == {} and fakes.rt.graphs == {} and fakes.rt.graph_launches == 0
    assert int(fakes.rt.last_error) == 0 and fakes.rt.calls.count("cudaStreamBeginCapture") == 1
    assert fakes.rt.calls.count("cudaGetLastError") == 1


def test_capture_that_cannot_begin_or_raises_leaves_the_stream_usable(fakes) -> None:
    with _cuda.Stream() as s:
        fakes.rt.capture[s.handle] = {"work": [], "invalid": False}  # already capturing: cudaErrorIllegalState
        with pytest.raises(_cuda.GraphCaptureError, match="cudaStreamBeginCapture: cudaErrorIllegalState"):
            _cuda.CudaGraph(s, lambda st: True)
        del fakes.rt.capture[s.handle]
        assert int(fakes.rt.last_error) == 0

        def boom(stream):
            raise ValueError("bug in enqueue")

        with pytest.raises(ValueError, match="bug in enqueue"):  # propagates unchanged, after ending the capture
            _cuda.CudaGraph(s, boom)
        assert fakes.rt.capture == {} and fakes.rt.graphs == {} and int(fakes.rt.last_error) == 0
        s.synchronize()  # not capturing any more


# ------------------------------------------------------------------------------------------------ issue 10 minor
def test_dla_engine_sets_the_runtime_dla_core(monkeypatch, tmp_path: Path) -> None:
    install(monkeypatch, dla_cores=2)  # Orin AGX: 2 DLA cores
    with load_backend(make_engine(tmp_path / "m.engine", dla=1)) as be:
        assert be._runtime.DLA_core == 1
        be.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_stream_is_non_blocking(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine")):
        assert list(fakes.rt.streams.values()) == [int(fakes.rt.cudaStreamNonBlocking)] == [1]


def test_set_device_in_the_thread_that_calls_infer(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "m.engine"), device=0) as be:
        results = {}

        def worker() -> None:
            results["out"] = be.infer(np.zeros((1, 3, 64, 64), np.float32))[0]
            results["ident"] = threading.get_ident()

        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert fakes.rt.device_now[results["ident"]] == 0 and results["out"].shape == (1, 64, 6)
    assert fakes.rt.device_now[threading.get_ident()] == 0


def test_close_releases_the_runtime(fakes, tmp_path: Path) -> None:
    be = load_backend(make_engine(tmp_path / "m.engine"))
    runtime, engine = weakref.ref(be._runtime), weakref.ref(be._engine)
    fakes.state.deserialized.clear()
    be.close()
    gc.collect()
    assert runtime() is None and engine() is None


@pytest.mark.parametrize("how, message", [
    ("missing", "cudaSetDevice: expected an NVIDIA driver (libcuda.so.1), got Failed to dlopen libcuda.so.1"),
    ("old", "cudaSetDevice(0) failed: cudaErrorInsufficientDriver (35): CUDA driver version is insufficient for "
            "CUDA runtime version (the NVIDIA driver is older than this cuda-python's CUDA: cuda-python 13 needs a "
            "CUDA 13 driver; pip install 'cuda-python<13' for a CUDA 12 driver)"),
])
def test_driver_problems_are_backend_unavailable(fakes, tmp_path: Path, how: str, message: str) -> None:
    engine = make_engine(tmp_path / "m.engine")
    if how == "missing":
        fakes.rt.missing_driver = True  # cuda-bindings: RuntimeError: Failed to dlopen libcuda.so.1
    else:
        fakes.rt.cudaSetDevice = lambda device: (fakes.rt.cudaError_t.cudaErrorInsufficientDriver,)
        fakes.rt._signatures.pop("cudaSetDevice")
    with pytest.raises(BackendUnavailableError) as info:
        load_backend(engine)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_one_logger_for_the_process(fakes, tmp_path: Path) -> None:
    with load_backend(make_engine(tmp_path / "a.engine")) as a, load_backend(make_engine(tmp_path / "b.engine")) as b:
        assert a._runtime.logger is b._runtime.logger is trt_common.get_logger(fakes.trt)


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


@gpu
@pytest.mark.gpu
def test_nms_engine_loads_in_a_fresh_process(yolov5n_onnx: Path, reference: Path, tmp_path: Path) -> None:
    """Defect 1 on a device: build in this process, load and run in a NEW one (plugins registered at load)."""
    import os
    import subprocess

    from conftest import REPO
    from edge_detect.deploy.graph import add_nms, add_uint8_input
    from edge_detect.deploy.tensorrt_build import build_engine

    src = add_nms(add_uint8_input(yolov5n_onnx, tmp_path / "u8.onnx"), tmp_path / "nms.onnx", plugin="efficient",
                  conf=0.25, iou=0.45, max_det=100)
    engine = build_engine(src, tmp_path / "m.engine", progress=False)
    script = ("import sys, numpy as np\nfrom edge_detect.models import open_model\n"
              "ref = np.load(sys.argv[2])\n"
              "with open_model(sys.argv[1]) as be:\n"
              "    print(int(be.infer(ref['letterboxed_bgr'][None])[0][0, 0]))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script, str(engine), str(reference / "infer_bus.npz")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) == len(np.load(reference / "infer_bus.npz")["nms_display_letterbox"])


# ------------------------------------------------------------------------------------------------ issue 20 findings
def test_finding7_device_is_set_on_every_call(monkeypatch, tmp_path: Path) -> None:
    """Two engines on two GPUs driven by one thread: each call makes its engine's device current (before: cached
    per backend and thread, so the third call ran engine A while device 1 was current and failed)."""
    fakes = install(monkeypatch, devices=[{}, {"name": "Fake GPU 2"}])
    with load_backend(make_engine(tmp_path / "a.engine"), device=0) as a, \
            load_backend(make_engine(tmp_path / "b.engine"), device=1) as b:
        x = np.random.default_rng(6).random((1, 3, 64, 64), dtype=np.float32)
        for be in (a, b, a, b):
            (out,) = be.infer(x)
            np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
    assert [e._d_device for e in fakes.state.deserialized] == [0, 1]


def test_finding7_several_requests_overlap(fakes, tmp_path: Path) -> None:
    """streams=2: two execution contexts on two streams, two batches in flight (trtexec --infStreams); results
    are read after each handle's wait() (before: one context, every call synchronous)."""
    with load_backend(make_engine(tmp_path / "m.engine"), streams=2) as be:
        assert be.num_requests == 2 and len(fakes.state.deserialized[0]._d_contexts) == 2
        xs = [np.random.default_rng(i).random((1, 3, 64, 64), dtype=np.float32) for i in range(2)]
        first, second = be.infer_async(xs[0]), be.infer_async(xs[1])
        streams = [h._request.stream.handle for h in (first, second)]
        assert streams[0] != streams[1] and all(fakes.rt.pending(s) == 3 for s in streams)  # H2D, enqueue, D2H
        for x, handle in ((xs[1], second), (xs[0], first)):  # in any order
            with handle as (out,):
                np.testing.assert_allclose(out, expected_raw(x, False), rtol=1e-6)
        (out,) = be.infer(xs[1])  # the released requests are reused
        np.testing.assert_allclose(out, expected_raw(xs[1], False), rtol=1e-6)


def test_finding7_jetson_uses_unified_memory_without_copies(monkeypatch, tmp_path: Path) -> None:
    """On an integrated GPU the I/O tensors live in managed memory attached to the request's stream: no pinned
    host buffers, no cudaMemcpyAsync (before: a pinned + a device copy of every tensor, copied both ways)."""
    orin = {"name": "Orin", "major": 8, "minor": 7, "integrated": True, "concurrent_managed_access": False}
    fakes = install(monkeypatch, devices=[orin])
    engine = make_engine(tmp_path / "m.engine", gpu="Orin", cc="8.7", nhwc=True)
    with load_backend(engine) as be:
        frame = np.random.default_rng(7).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
        (out,) = be.infer(frame)
        np.testing.assert_allclose(out, expected_raw(frame, True), rtol=1e-5)
        assert fakes.rt.copies == [] and fakes.rt.host == {} and fakes.rt.device == {}
        assert be.unified_memory and len(fakes.rt.managed) == 2
        stream = be._requests[0].stream.handle
        assert {a.stream for a in fakes.rt.allocs.values()} == {stream}  # attached to the request's stream
    assert "cudaMemcpyAsync" not in fakes.rt.calls and fakes.rt.managed == {}


def test_finding5_hardware_compatible_engine_is_a_mismatch_on_jetson(monkeypatch, tmp_path: Path) -> None:
    """An AMPERE_PLUS engine is refused by the version/GPU check on Orin, so --rebuild-on-mismatch fires
    (before: accepted, then TensorRT failed to deserialize it)."""
    install(monkeypatch, devices=[{"name": "Orin", "major": 8, "minor": 7, "integrated": True}])
    engine = make_engine(tmp_path / "m.engine", tensorrt="10.13.0", cc="8.6", hardware_compatible=True)
    with pytest.raises(VersionMismatchError, match="hardware-compatible engine, not supported on JetPack"):
        load_backend(engine)


@pytest.mark.parametrize("outputs, message", [
    ({"scores": {"dtype": "BF16"}}, "tensor 'scores' is BF16, which has no NumPy type"),
    ({"boxes": {"data_dependent": True}}, "have data-dependent shapes"),
])
def test_outputs_edge_detect_cannot_hold_are_refused_at_load(fakes, tmp_path: Path, outputs, message) -> None:
    engine = make_engine(tmp_path / "m.engine", layout="nms", outputs=outputs)
    with pytest.raises(ModelLoadError, match=message):
        load_backend(engine)
    assert fakes.rt.allocs == {}


def test_half_and_int64_outputs_come_back_as_such(fakes, tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "m.engine", layout="nms", outputs={"boxes": {"dtype": "HALF"},
                                                                       "classes": {"dtype": "INT64"}})
    with load_backend(engine) as be:
        x = np.random.default_rng(8).random((1, 3, 64, 64), dtype=np.float32)
        num, boxes, scores, classes = be.infer(x)
    assert boxes.dtype == np.float16 and classes.dtype == np.int64 and classes[0].tolist() == [0, 2, 4, 6, 8]
    np.testing.assert_allclose(boxes, expected_raw(x, False)[:, :5, :4].astype(np.float16))


def test_failed_context_creation_frees_the_first_request(fakes, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="could not create execution context 2 of 2"):
        load_backend(make_engine(tmp_path / "m.engine", max_contexts=1), streams=2)
    assert fakes.rt.allocs == {} and fakes.rt.streams == {}


def test_tensorrt_8_dynamic_engine_needs_a_profile_per_stream(monkeypatch, tmp_path: Path) -> None:
    install(monkeypatch, version="8.6.1")
    engine = make_engine(tmp_path / "m.engine", tensorrt="8.6.1", dynamic=True)
    with pytest.raises(ConfigError, match="streams=2: TensorRT 8.6.1 gives each concurrent execution context"):
        load_backend(engine, streams=2)
    with load_backend(engine, streams=1) as be:
        (out,) = be.infer(np.zeros((2, 3, 32, 32), np.float32))
    assert out.shape == (2, 16, 6)
