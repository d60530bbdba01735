"""The TensorRT / CUDA doubles refuse what the real libraries refuse (tests/trt_doubles.py, cuda_double.py).

These pin the doubles' strictness, so that a test passing against them means something: deferred stream work,
copy sizes and types, devices, deserialization checks, the builder's validation, the ONNX parser's support matrix
and layer names, and the per-release API surfaces.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_detect.backends import _cuda, trt_common
from trt_doubles import engine_bytes, install, make_tensorrt, version_surface

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


@pytest.fixture
def fakes(monkeypatch):
    return install(monkeypatch)


# ------------------------------------------------------------------------------------------------ CUDA
def test_stream_work_runs_at_synchronize_not_at_call(fakes) -> None:
    with _cuda.HostBuffer(8) as src, _cuda.HostBuffer(8) as dst, _cuda.DeviceBuffer(8) as dev, \
            _cuda.Stream() as s:
        src.array[:] = 1
        s.copy_htod(dev, src, 8)
        src.array[:] = 2  # rewritten before the queued copy ran: the copy sees 2, as on a GPU it may
        s.copy_dtoh(dst, dev, 8)
        assert fakes.rt.pending(s.handle) == 2 and dst.array.tolist() == [0] * 8
        s.synchronize()
        assert dst.array.tolist() == [2] * 8 and fakes.rt.executed[-2:] == ["H2D", "D2H"]


def test_event_synchronize_runs_the_stream_up_to_the_event(fakes) -> None:
    rt = fakes.rt
    stream = _cuda.call("cudaStreamCreateWithFlags", rt.cudaStreamNonBlocking)
    event = _cuda.call("cudaEventCreateWithFlags", rt.cudaEventDisableTiming)
    with _cuda.HostBuffer(4) as h, _cuda.DeviceBuffer(4) as d:
        _cuda.call("cudaMemcpyAsync", d.ptr, h.ptr, 4, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
        _cuda.call("cudaEventRecord", event, stream)
        _cuda.call("cudaMemcpyAsync", h.ptr, d.ptr, 4, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
        assert int(rt.cudaEventQuery(event)[0]) == int(rt.cudaError_t.cudaErrorNotReady)
        _cuda.call("cudaEventSynchronize", event)
        assert rt.pending(int(stream)) == 1 and rt.executed[-2:] == ["H2D", "event"]
        _cuda.call("cudaStreamSynchronize", stream)
    _cuda.call("cudaEventDestroy", event)
    _cuda.call("cudaStreamDestroy", stream)


@pytest.mark.parametrize("case, error", [
    ("too_many_bytes", "cudaErrorInvalidValue"),
    ("pageable_async", "cudaErrorInvalidValue"),
    ("freed_stream", "cudaErrorInvalidResourceHandle"),
])
def test_copies_are_checked_against_allocations_and_streams(fakes, case: str, error: str) -> None:
    rt = fakes.rt
    with _cuda.HostBuffer(16) as h, _cuda.DeviceBuffer(16) as d:
        s = _cuda.Stream()
        src, n = h.ptr, 16
        if case == "too_many_bytes":
            n = 17
        elif case == "pageable_async":
            src = np.zeros(16, np.uint8).ctypes.data
        else:
            s.close()
        with pytest.raises(_cuda.CudaError, match=error):
            _cuda.call("cudaMemcpyAsync", d.ptr, src, n, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, s.raw)
        s.close()


def test_argument_types_are_checked_like_cuda_python(fakes) -> None:
    rt = fakes.rt
    with pytest.raises(TypeError):
        rt.cudaMemcpyAsync("0x10", 0, 4, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, 0)
    with pytest.raises(OverflowError):
        rt.cudaMalloc(-1)
    with pytest.raises(TypeError):
        rt.cudaMemcpy(0, 0, 4)  # argument count, against the real signature


# ------------------------------------------------------------------------------------------------ runtime
def _runtime(fakes):
    return fakes.trt.Runtime(trt_common.get_logger(fakes.trt))


@pytest.mark.parametrize("desc, message", [
    (dict(tensorrt="10.3.0"), "expecting library version 10.13.0.35 got 10.3.0, please rebuild"),
    (dict(cc="8.9"), "expecting compute 8.9 got compute 8.6, please rebuild"),
    (dict(tensorrt="10.3.0", version_compatible=True), "engine_host_code_allowed is false"),
])
def test_deserialize_checks_version_and_gpu(fakes, desc, message) -> None:
    assert _runtime(fakes).deserialize_cuda_engine(engine_bytes(**desc)) is None
    assert message in fakes.state.errors[0]


def test_hardware_compatible_engine_is_refused_on_an_integrated_gpu(monkeypatch) -> None:
    orin = {"name": "Orin", "major": 8, "minor": 7, "integrated": True}
    fakes = install(monkeypatch, devices=[orin])
    desc = dict(cc="8.6", hardware_compatible=True)
    assert _runtime(fakes).deserialize_cuda_engine(engine_bytes(**desc)) is None
    desktop = install(monkeypatch, devices=[{"name": "H100", "major": 9, "minor": 0}])
    assert _runtime(desktop).deserialize_cuda_engine(engine_bytes(**desc)) is not None


def test_engine_tensor_types_and_data_dependent_shapes(fakes) -> None:
    trt = fakes.trt
    engine = _runtime(fakes).deserialize_cuda_engine(engine_bytes(
        "nms", outputs={"boxes": {"dtype": "HALF"}, "classes": {"dtype": "INT64"},
                        "scores": {"dtype": "BF16", "data_dependent": True}}))
    assert trt.nptype(engine.get_tensor_dtype("boxes")) == np.float16
    assert trt.nptype(engine.get_tensor_dtype("classes")) == np.int64
    with pytest.raises(TypeError, match="Could not resolve TensorRT datatype"):
        trt.nptype(engine.get_tensor_dtype("scores"))
    ctx = engine.create_execution_context()
    assert ctx.get_tensor_shape("scores") == (1, -1) and ctx.get_tensor_shape("boxes") == (1, 5, 4)


def test_context_creation_can_fail_and_old_releases_share_no_profile(monkeypatch) -> None:
    fakes = install(monkeypatch)
    engine = _runtime(fakes).deserialize_cuda_engine(engine_bytes(max_contexts=1))
    assert engine.create_execution_context() is not None and engine.create_execution_context() is None
    old = install(monkeypatch, version="8.6.1")
    dynamic = _runtime(old).deserialize_cuda_engine(engine_bytes(dynamic=True))
    first, second = dynamic.create_execution_context(), dynamic.create_execution_context()
    assert (first.active_optimization_profile, second.active_optimization_profile) == (0, -1)
    assert not second.set_optimization_profile_async(0, 0)  # profile 0 is taken by the first context


def test_enqueue_checks_addresses_device_and_defers_the_work(monkeypatch) -> None:
    fakes = install(monkeypatch, devices=[{}, {"name": "Second GPU"}])
    engine = _runtime(fakes).deserialize_cuda_engine(engine_bytes())  # on device 0
    ctx = engine.create_execution_context()
    stream = _cuda.Stream()
    assert not ctx.execute_async_v3(stream.handle)  # no addresses bound
    assert "Address is not set for tensor 'images'" in fakes.state.errors[-1]
    small = _cuda.DeviceBuffer(16)
    bufs = {n: _cuda.DeviceBuffer(1 << 16) for n in ("images", "output0")}
    ctx.set_tensor_address("images", small.ptr)
    ctx.set_tensor_address("output0", bufs["output0"].ptr)
    assert not ctx.execute_async_v3(stream.handle) and "needs 49152 bytes" in fakes.state.errors[-1]
    ctx.set_tensor_address("images", bufs["images"].ptr)
    _cuda.set_device(1)
    assert not ctx.execute_async_v3(stream.handle) and "invalid resource handle" in fakes.state.errors[-1]
    _cuda.set_device(0)
    assert ctx.execute_async_v3(stream.handle) and fakes.rt.pending(stream.handle) == 1
    stream.synchronize()
    assert fakes.rt.executed[-1] == "enqueue"
    for owner in (stream, small, *bufs.values()):
        owner.close()


# ------------------------------------------------------------------------------------------------ build side
def _graph(path: Path, nodes, inputs, outputs, inits=(), opset: int = 17) -> Path:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _parse(trt, path: Path, flags: int = 0):
    network = trt.Builder(None).create_network(flags)
    parser = trt.OnnxParser(network, None)
    return network, parser, parser.parse_from_file(str(path))


@pytest.mark.parametrize("version, ok", [("8.6.1", False), ("10.3.0", True)])
def test_parser_applies_the_support_matrix_of_the_release(fakes, tmp_path: Path, version: str, ok: bool) -> None:
    """ReduceSum on INT32: FP32/FP16 only in onnx-tensorrt 8.6, INT32/INT64 too from 10.x."""
    trt = make_tensorrt(version, cudart=fakes.rt)
    i32 = helper.make_tensor_value_info
    path = _graph(tmp_path / "m.onnx", [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
                  [i32("x", TensorProto.INT32, [2, 3])], [i32("y", TensorProto.INT32, [3])],
                  [helper.make_tensor("axes", TensorProto.INT64, [1], [0])])
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    _, parser, parsed = _parse(trt, path, flags)
    assert parsed is ok
    if not ok:
        assert "ReduceSum: input type INT32 is not supported" in str(parser.get_error(0))


def test_parser_names_layers_like_onnx_tensorrt(fakes, tmp_path: Path) -> None:
    trt = fakes.trt
    f = helper.make_tensor_value_info
    nodes = [helper.make_node("Identity", ["x"], ["a"]),  # unnamed: node_of_a
             helper.make_node("Add", ["a", "c"], ["b"], name="add"),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]  # duplicate node name: add_0
    path = _graph(tmp_path / "m.onnx", nodes, [f("x", TensorProto.FLOAT, [2])], [f("y", TensorProto.FLOAT, [2])],
                  [helper.make_tensor("c", TensorProto.FLOAT, [2], [1, 2])])
    network, _, parsed = _parse(trt, path)
    assert parsed
    names = [network.get_layer(i).name for i in range(network.num_layers)]
    assert names == ["node_of_a", "c", "add", "add_0"]  # the constant layer is named after its weights


def test_builder_validates_network_and_config(fakes, tmp_path: Path) -> None:
    trt = fakes.trt
    f = helper.make_tensor_value_info
    path = _graph(tmp_path / "d.onnx", [helper.make_node("Identity", ["x"], ["y"])],
                  [f("x", TensorProto.FLOAT, ["b", 3])], [f("y", TensorProto.FLOAT, ["b", 3])])
    builder = trt.Builder(None)
    strong = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network, _, _ = _parse(trt, path, strong)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    problems = fakes.state.builds[-1].problems
    assert any("not allowed with a strongly typed network" in p for p in problems)
    assert any("no optimization profile has been defined for 'x'" in p for p in problems)
    profile = builder.create_optimization_profile()
    with pytest.raises(RuntimeError, match="Shape provided for min is inconsistent"):
        profile.set_shape("x", (4, 3), (2, 3), (8, 3))
    assert config.add_optimization_profile(builder.create_optimization_profile()) == -1  # an empty profile
    config.default_device_type, config.DLA_core = trt.DeviceType.DLA, 0
    config.clear_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert any("DLA core 0 requested, but the device has 0 DLA cores" in p for p in fakes.state.builds[-1].problems)


def test_timing_cache_double(fakes) -> None:
    config = fakes.trt.Builder(None).create_builder_config()
    assert config.create_timing_cache(b"not a timing cache") is None  # nullptr from the C++ API
    with pytest.raises(RuntimeError):
        config.set_timing_cache(None, ignore_mismatch=False)  # pybind11 refuses None for a reference
    assert config.set_timing_cache(config.create_timing_cache(b"TRT-8.6.1-timing"), ignore_mismatch=False) is False


# ------------------------------------------------------------------------------------------------ API surfaces
@pytest.mark.parametrize("version, absent, present", [
    ("8.5.2", ["HardwareCompatibilityLevel", "IProgressMonitor", "int64"], ["INMSLayer", "IInt8MinMaxCalibrator"]),
    ("8.6.1", ["IProgressMonitor", "int64"], ["HardwareCompatibilityLevel"]),
    ("10.3.0", [], ["IProgressMonitor", "int64", "IInt8EntropyCalibrator2"]),
    ("11.1.0", ["IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"], ["IProgressMonitor"]),
])
def test_generated_module_has_the_release_surface(fakes, version, absent, present) -> None:
    trt = make_tensorrt(version, cudart=fakes.rt)
    assert [n for n in absent if hasattr(trt, n)] == [] and all(hasattr(trt, n) for n in present)
    config = trt.Builder(None).create_builder_config()
    assert hasattr(config, "hardware_compatibility_level") is (version != "8.5.2")
    assert ("FP16" in trt.BuilderFlag.__members__) is (not version.startswith("11"))
    assert version_surface(version).release == {"8.5.2": "8.5", "8.6.1": "8.6", "10.3.0": "10.3",
                                                "11.1.0": "11.1"}[version]


def test_surface_data_matches_the_stubs_release() -> None:
    """The 10.13 entry, read from the same release as the stubs, removes nothing from them."""
    data = json.loads((Path(__file__).parents[1] / "trt_surfaces.json").read_text())["python_api"]["versions"]
    assert all(not c or not c["removed"] or set(c["removed"]) <= {"ERROR", "INFO", "INTERNAL_ERROR", "VERBOSE",
                                                                    "WARNING"}
               for c in data["10.13"]["classes"].values())
    assert set(data) == {"8.5", "8.6", "10.0", "10.3", "10.12", "10.13", "11.0", "11.1"}
