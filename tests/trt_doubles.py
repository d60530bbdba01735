"""Test doubles for TensorRT and the CUDA runtime, built from the real API surfaces.

* :func:`stub_surface` parses the ``tensorrt-stubs`` package (type stubs of the TensorRT 10.13 Python API) with
  :mod:`ast`: every class with its members (methods, properties, attributes, enum members and their values),
  nested classes, and the module-level names of ``tensorrt``.
* :func:`make_tensorrt` generates a ``tensorrt`` module from that surface: enums become :class:`enum.IntEnum`
  with the stub's values; every other class gets exactly the stub's members (unknown attributes raise
  ``AttributeError`` like pybind11 objects, read-only properties cannot be set, unmodelled methods raise
  ``NotImplementedError``). Behaviour is added only where the tests need it, mirroring the real library:
  a plugin registry (``deserialize_cuda_engine`` and the ONNX parser fail on a plugin layer unless
  ``init_libnvinfer_plugins`` ran), ``engine_host_code_allowed`` for version-compatible engines, the DLA
  core, an execution context whose ``execute_async_v3`` fails under stream capture for engines that
  cannot be captured, a builder that runs INT8 calibrators the way TensorRT's Python wrapper does
  (exceptions raised in ``get_batch`` / the cache callbacks are printed and treated as "no more data"), and a
  timing cache that refuses caches from another version.
* :class:`FakeCudart` is ``cuda.bindings.runtime`` over host memory: its enums are the real module's, and every
  function checks its arguments against the real function's signature (``inspect.signature(...).bind``), so
  a call with the wrong argument count raises ``TypeError`` as the real one does. ``cuda_python="11.8"``
  swaps in cuda-python 11.8's ``cudaGraphInstantiate(graph, logBuffer, bufferSize)``.

The doubles skip (``pytest.skip``) with the reason when ``tensorrt-stubs`` or cuda-python are not installed
(both are in the ``dev`` extra).
"""
from __future__ import annotations

import ast
import ctypes
import enum
import functools
import importlib.metadata
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import pytest

# ------------------------------------------------------------------------------------------------ stub surface


@dataclass
class StubClass:
    name: str
    bases: List[str]
    methods: Set[str] = field(default_factory=set)
    readonly: Set[str] = field(default_factory=set)  # @property without setter
    writable: Set[str] = field(default_factory=set)  # annotated attributes / properties with a setter
    enum_members: Dict[str, int] = field(default_factory=dict)
    constants: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # e.g. ILogger.INFO -> (Severity, INFO)
    nested: Dict[str, "StubClass"] = field(default_factory=dict)
    returns: Dict[str, str] = field(default_factory=dict)  # method/property -> annotated class name

    @property
    def is_enum(self) -> bool:
        return bool(self.enum_members)


@dataclass
class StubSurface:
    classes: Dict[str, StubClass]
    module_names: Set[str]  # names ``tensorrt`` exposes (classes, functions, dtypes, __version__...)
    version: str

    def returns(self, cls: str, member: str) -> Optional[str]:
        """The class a method returns / an attribute holds, by the stub annotation (inherited ones included)."""
        todo = [cls]
        while todo:
            c = self.classes.get(todo.pop())
            if c is None:
                continue
            if member in c.returns:
                return c.returns[member]
            todo.extend(c.bases)
        return None

    def members(self, cls: str) -> Set[str]:
        """Every member name of ``cls``, inherited ones included."""
        out: Set[str] = set()
        todo = [cls]
        while todo:
            c = self.classes.get(todo.pop())
            if c is None:
                continue
            out |= c.methods | c.readonly | c.writable | set(c.enum_members) | set(c.nested) | set(c.constants)
            todo.extend(c.bases)
        return out


def _stub_files() -> Tuple[Path, Path]:
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs): the TensorRT API surface "
                    "cannot be checked")
    return (Path(dist.locate_file("tensorrt_bindings/tensorrt.pyi")), Path(dist.locate_file("tensorrt/__init__.pyi")))


_VALUE = re.compile(r"<(\w+)\.(\w+): (-?\d+)>")


def _parse_class(node: ast.ClassDef, source: str) -> StubClass:
    cls = StubClass(node.name, [ast.unparse(b).split(".")[-1] for b in node.bases])
    lines = source.splitlines()
    for item in node.body:
        if isinstance(item, ast.ClassDef):
            cls.nested[item.name] = _parse_class(item, source)
        elif isinstance(item, ast.FunctionDef):
            decos = [ast.unparse(d) for d in item.decorator_list]
            if item.returns is not None and item.name not in cls.returns:
                cls.returns[item.name] = ast.unparse(item.returns).strip("'\"").split(".")[-1]
            if "property" in decos:
                cls.readonly.add(item.name)
            elif any(d.endswith(".setter") for d in decos):
                cls.readonly.discard(item.name)
                cls.writable.add(item.name)
            else:
                cls.methods.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            name, ann = item.target.id, ast.unparse(item.annotation)
            if name == "__members__":
                continue
            line = lines[item.lineno - 1]
            m = _VALUE.search(line)
            if ann.startswith("typing.ClassVar") and m and m.group(2) == name and m.group(1) == node.name:
                cls.enum_members[name] = int(m.group(3))
            elif ann.startswith("typing.ClassVar") and m:
                cls.constants[name] = (m.group(1), m.group(2))
            else:
                cls.writable.add(name)
                cls.returns[name] = ann.split(".")[-1]
    return cls


def _parse_tolerant(source: str) -> Tuple[ast.Module, str]:
    """``ast.parse`` the stubs; a ``def`` line the stub generator got wrong (e.g. 10.13's ``add_scale_nd`` has a
    non-default parameter after defaulted ones) keeps its name with its parameters replaced by ``*args``."""
    lines = source.splitlines()
    for _ in range(50):
        try:
            return ast.parse("\n".join(lines)), "\n".join(lines)
        except SyntaxError as exc:
            i = (exc.lineno or 1) - 1
            m = re.match(r"(\s*)def (\w+)\(.*\)( -> .*)?:\s*$", lines[i])
            if not m:
                raise
            lines[i] = f"{m.group(1)}def {m.group(2)}(self, *args, **kwargs):"
    raise SyntaxError("tensorrt stubs: too many unparsable lines")


@functools.lru_cache(maxsize=1)
def stub_surface() -> StubSurface:
    """The TensorRT Python API as ``tensorrt-stubs`` describes it (skips when the stubs are missing)."""
    bindings, package = _stub_files()
    tree, source = _parse_tolerant(bindings.read_text())
    classes = {n.name: _parse_class(n, source) for n in tree.body if isinstance(n, ast.ClassDef)}
    names: Set[str] = set()
    version = ""
    for text in (source, package.read_text(), (package.parent.parent / "tensorrt_bindings/__init__.pyi").read_text()
                 if (package.parent.parent / "tensorrt_bindings/__init__.pyi").is_file() else ""):
        for n in _parse_tolerant(text)[0].body:
            if isinstance(n, (ast.ClassDef, ast.FunctionDef)):
                names.add(n.name)
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                names.add(n.target.id)
                if n.target.id == "__version__" and isinstance(n.value, ast.Constant):
                    version = str(n.value.value)
            elif isinstance(n, ast.ImportFrom):
                names.update(a.asname or a.name for a in n.names)
    return StubSurface(classes, names, version)


# ------------------------------------------------------------------------------------------------ generated module
class _StubObject:
    """Base of generated non-enum classes: only the stub's members exist."""

    _stub_name = "?"
    _stub_members: frozenset = frozenset()
    _stub_readonly: frozenset = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        generated = getattr(cls, "_generated", False) or getattr(cls, "_double", False)
        if generated and not name.startswith("_d_"):
            if name not in cls._stub_members:
                raise AttributeError(f"'tensorrt.{cls._stub_name}' object has no attribute '{name}' (not in the "
                                     "TensorRT stubs)")
            if name in cls._stub_readonly:
                raise AttributeError(f"can't set read-only property tensorrt.{cls._stub_name}.{name}")
        object.__setattr__(self, name, value)


def _unmodelled(cls_name: str, name: str, lib: str = "TensorRT") -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{cls_name}.{name}: exists in {lib} but is not modelled by the double")

    method.__name__ = name
    return method


def _make_enum(stub: StubClass) -> type:
    return enum.IntEnum(stub.name, stub.enum_members)


def _make_class(stub: StubClass, surface: StubSurface, built: Dict[str, type]) -> type:
    ns: Dict[str, Any] = {"_stub_name": stub.name, "_generated": True,
                          "_stub_members": frozenset(surface.members(stub.name)),
                          "_stub_readonly": frozenset(stub.readonly)}
    for m in stub.methods:
        if m.startswith("__"):
            continue
        ns[m] = _unmodelled(f"tensorrt.{stub.name}", m)
    for name, nested in stub.nested.items():
        ns[name] = _make_enum(nested) if nested.is_enum else _make_class(nested, surface, built)
    for name, (owner, member) in stub.constants.items():  # class-level constants (e.g. ILogger.INFO)
        if owner in ns and isinstance(ns[owner], enum.EnumMeta):
            ns[name] = ns[owner][member]
    return type(stub.name, (_StubObject,), ns)


def generate_tensorrt(version: Optional[str] = None) -> ModuleType:
    """A ``tensorrt`` module with every stub class (no behaviour), ``__version__`` = ``version``."""
    surface = stub_surface()
    mod = ModuleType("tensorrt")
    built: Dict[str, type] = {}
    for name, stub in surface.classes.items():
        built[name] = _make_enum(stub) if stub.is_enum else _make_class(stub, surface, built)
        setattr(mod, name, built[name])
    mod.__version__ = version or surface.version
    dt = built["DataType"]
    for alias, member in (("float32", "FLOAT"), ("float16", "HALF"), ("int8", "INT8"), ("int32", "INT32"),
                          ("int64", "INT64"), ("uint8", "UINT8"), ("bool", "BOOL"), ("bfloat16", "BF16")):
        setattr(mod, alias, dt[member])
    return mod


# ------------------------------------------------------------------------------------------------ behaviour
NP_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
         "UINT8": np.uint8, "BOOL": np.bool_}
PLUGIN_OPS = {"EfficientNMS_TRT"}


def _array_at(ptr: int, dtype: Any, shape: Tuple[int, ...]) -> np.ndarray:
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


def make_tensorrt(version: str = "10.13.0.35", cudart: Optional["FakeCudart"] = None) -> ModuleType:
    """The generated ``tensorrt`` module with the behaviour the tests need (see the module doc).

    Engines are JSON descriptions (:func:`engine_bytes`): input name/shape/dtype/profile, output layout,
    ``plugins`` (plugin layer types), ``version_compatible``, ``dla_core``, ``capturable``.
    """
    trt = generate_tensorrt(version)
    state = SimpleNamespace(plugins_registered=False, plugin_logger=None, deserialized=[], builds=[],
                            printed=[], cudart=cudart)
    trt._d_state = state

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        state.plugins_registered, state.plugin_logger = True, logger
        return True

    trt.init_libnvinfer_plugins = init_libnvinfer_plugins

    def nptype(dtype: Any) -> type:
        return NP_OF[trt.DataType(int(dtype)).name]

    trt.nptype = nptype

    def _log(logger: Any, severity: str, msg: str) -> None:
        logger.log(trt.ILogger.Severity[severity], msg)

    class Runtime(trt.Runtime):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, logger: Any) -> None:
            self._d_logger = logger
            self.DLA_core = -1
            self.engine_host_code_allowed = False

        @property
        def logger(self) -> Any:
            return self._d_logger

        def deserialize_cuda_engine(self, data: Any) -> Any:
            desc = json.loads(bytes(data))
            missing = [p for p in desc.get("plugins", []) if not state.plugins_registered]
            if missing:
                _log(self._d_logger, "ERROR", f"getPluginCreator could not find plugin: {missing[0]} version: 1")
                _log(self._d_logger, "ERROR", "IPluginCreator not found; deserialization failed")
                return None
            if desc.get("version_compatible") and not self.engine_host_code_allowed:
                _log(self._d_logger, "ERROR", "Cannot deserialize engine with lean runtime: "
                                              "engine_host_code_allowed is false")
                return None
            if desc.get("dla_core") is not None and self.DLA_core != desc["dla_core"]:
                _log(self._d_logger, "ERROR", f"engine built for DLA core {desc['dla_core']}, runtime DLA core "
                                              f"{self.DLA_core}")
                return None
            engine = ICudaEngine(desc)
            state.deserialized.append(engine)
            return engine

    Runtime.__name__ = "Runtime"

    class ICudaEngine(trt.ICudaEngine):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, desc: dict) -> None:
            self._d_desc = desc
            inp = desc["input"]
            outs = ["output0"] if desc["layout"] == "raw" else ["classes", "boxes", "num_dets", "scores"]
            self._d_names = [inp["name"], *outs]
            self._d_contexts: List[Any] = []

        @property
        def num_io_tensors(self) -> int:
            return len(self._d_names)

        def get_tensor_name(self, index: int) -> str:
            return self._d_names[index]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if name == self._d_desc["input"]["name"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            if name == self._d_desc["input"]["name"]:
                return trt.DataType.UINT8 if self._d_desc["input"]["dtype"] == "uint8" else trt.DataType.FLOAT
            return trt.DataType.INT32 if name in ("num_dets", "classes") else trt.DataType.FLOAT

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name == self._d_desc["input"]["name"]:
                return tuple(self._d_desc["input"]["shape"])
            return (-1,) * (3 if name in ("output0", "boxes") else 2)

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Tuple[int, ...]]:
            return [tuple(s) for s in self._d_desc["input"]["profile"]]

        def create_execution_context(self, *args: Any) -> Any:
            ctx = IExecutionContext(self)
            self._d_contexts.append(ctx)
            return ctx

    class IExecutionContext(trt.IExecutionContext):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, engine: Any) -> None:
            self._d_engine, self._d_shapes, self._d_addresses = engine, {}, {}
            self._d_runs = self._d_shape_sets = 0
            spec = engine._d_desc["input"]
            self._d_shapes[spec["name"]] = tuple(spec["shape"])

        def set_input_shape(self, name: str, shape: Any) -> bool:
            lo, _, hi = self._d_engine.get_tensor_profile_shape(name, 0)
            if not all(a <= s <= c for a, s, c in zip(lo, shape, hi)):
                return False
            self._d_shapes[name] = tuple(shape)
            self._d_shape_sets += 1
            return True

        def _in_shape(self) -> Tuple[int, ...]:
            return self._d_shapes[self._d_engine._d_desc["input"]["name"]]

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            desc = self._d_engine._d_desc
            if name == desc["input"]["name"]:
                return self._in_shape()
            s = self._in_shape()
            b, h, w = (s[0], s[1], s[2]) if desc["nhwc"] else (s[0], s[2], s[3])
            k = desc.get("k", 5)
            return {"output0": (b, h * w // 64, 6), "num_dets": (b, 1), "boxes": (b, k, 4), "scores": (b, k),
                    "classes": (b, k)}[name]

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self._d_addresses[name] = memory
            return True

        def _compute(self) -> None:
            desc, name = self._d_engine._d_desc, self._d_engine._d_desc["input"]["name"]
            x = _array_at(self._d_addresses[name], desc["input"]["dtype"], self._in_shape())
            raw = expected_raw(x, desc["nhwc"])
            if desc["layout"] == "raw":
                _array_at(self._d_addresses["output0"], np.float32, raw.shape)[...] = raw
                return
            b, k = raw.shape[0], desc.get("k", 5)
            _array_at(self._d_addresses["num_dets"], np.int32, (b, 1))[...] = np.arange(b)[:, None] + 1
            _array_at(self._d_addresses["boxes"], np.float32, (b, k, 4))[...] = raw[:, :k, :4]
            _array_at(self._d_addresses["scores"], np.float32, (b, k))[...] = raw[:, :k, 4]
            _array_at(self._d_addresses["classes"], np.int32, (b, k))[...] = np.arange(k)[None] * 2

        def execute_async_v3(self, stream_handle: int) -> bool:
            self._d_runs += 1
            rt = state.cudart
            if rt is not None and rt.capturing(stream_handle):
                if not self._d_engine._d_desc.get("capturable", True):
                    rt.invalidate_capture(stream_handle)  # e.g. a plugin doing a synchronous call
                    return False
                rt.captured(stream_handle, self._compute)
            else:
                self._compute()
            return True

    # ---------------------------------------------------------------------------- builder side
    class ITensor(trt.ITensor):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, name: str, dtype: Any) -> None:
            self.name, self.dtype = name, dtype

    class ILayer(trt.ILayer):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, name: str, op: str, inputs: List[Any], outputs: List[Any]) -> None:
            self._d_op, self._d_inputs, self._d_outputs, self._d_output_types = op, inputs, outputs, {}
            self.name = name
            self.precision = trt.float32

        @property
        def num_inputs(self) -> int:
            return len(self._d_inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._d_outputs)

        def get_input(self, index: int) -> Any:
            return self._d_inputs[index]

        def get_output(self, index: int) -> Any:
            return self._d_outputs[index]

        def set_output_type(self, index: int, dtype: Any) -> None:
            self._d_output_types[index] = dtype

    class INetworkDefinition(trt.INetworkDefinition):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, flags: int) -> None:
            self._d_flags, self._d_layers = flags, []

        @property
        def num_layers(self) -> int:
            return len(self._d_layers)

        def get_layer(self, index: int) -> Any:
            return self._d_layers[index]

    class OnnxParser(trt.OnnxParser):  # type: ignore[misc, valid-type]
        """Turns each ONNX node into one layer named after the node (initializers: constant layers named
        after them), with tensor dtypes from ONNX shape inference; plugin ops need registered plugins."""

        _double = True

        def __init__(self, network: Any, logger: Any) -> None:
            self._d_network, self._d_logger, self._d_errors = network, logger, []

        @property
        def num_errors(self) -> int:
            return len(self._d_errors)

        def get_error(self, index: int) -> Any:
            return self._d_errors[index]

        def parse_from_file(self, model: str) -> bool:
            import onnx

            m = onnx.shape_inference.infer_shapes(onnx.load(model))
            types = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.value_info, *m.graph.input,
                                                                  *m.graph.output]}
            for init in m.graph.initializer:
                types[init.name] = init.data_type
            to_trt = {onnx.TensorProto.FLOAT: trt.float32, onnx.TensorProto.FLOAT16: trt.float16,
                      onnx.TensorProto.INT64: trt.int64, onnx.TensorProto.INT32: trt.int32,
                      onnx.TensorProto.BOOL: trt.bool, onnx.TensorProto.UINT8: trt.uint8,
                      onnx.TensorProto.INT8: trt.int8}
            tensors: Dict[str, Any] = {}

            def tensor(name: str) -> Any:
                if name not in tensors:
                    tensors[name] = ITensor(name, to_trt.get(types.get(name, 1), trt.float32))
                return tensors[name]

            net = self._d_network
            for init in m.graph.initializer:
                net._d_layers.append(ILayer(init.name, "Constant", [], [tensor(init.name)]))
            for node in m.graph.node:
                if node.op_type in PLUGIN_OPS and not state.plugins_registered:
                    self._d_errors.append(f"No importer registered for op: {node.op_type}. Attempting to import as "
                                          "plugin. ... Plugin not found, are the plugin name, version, and "
                                          "namespace correct?")
                    return False
                ins = [tensor(n) for n in node.input if n]
                outs = [tensor(n) for n in node.output]
                net._d_layers.append(ILayer(node.name, node.op_type, ins, outs))
            return True

    class IBuilderConfig(trt.IBuilderConfig):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self) -> None:
            self._d_flags, self._d_pools, self._d_timing = set(), {}, None
            self.int8_calibrator = None
            self.progress_monitor = None
            self.DLA_core = -1

        def set_flag(self, flag: Any) -> None:
            self._d_flags.add(trt.BuilderFlag(int(flag)).name)

        def get_flag(self, flag: Any) -> bool:
            return trt.BuilderFlag(int(flag)).name in self._d_flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self._d_pools[trt.MemoryPoolType(int(pool)).name] = pool_size

        def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            data = cache._d_data
            if data and not data.startswith(f"TRT-{version}".encode()) and not ignore_mismatch:
                return False
            self._d_timing = cache
            return True

        def get_timing_cache(self) -> Any:
            return self._d_timing

        def set_calibration_profile(self, profile: Any) -> bool:
            return True

        def add_optimization_profile(self, profile: Any) -> int:
            return 0

    class ITimingCache(trt.ITimingCache):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, data: bytes) -> None:
            self._d_data = data or f"TRT-{version}-timing".encode()

        def serialize(self) -> Any:
            return self._d_data

    def _swallowing(call: Callable[[], Any], default: Any) -> Any:
        """What TensorRT's Python wrapper does around calibrator callbacks: print and carry on."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - this IS the behaviour being modelled
            state.printed.append(f"{type(exc).__name__}: {exc}")
            print(f"[TensorRT] calibrator callback raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return default

    class Builder(trt.Builder):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, logger: Any) -> None:
            self._d_logger = logger

        def create_network(self, flags: int = 0) -> Any:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> Any:
            return IBuilderConfig()

        def create_optimization_profile(self) -> Any:
            return trt.IOptimizationProfile()

        def build_serialized_network(self, network: Any, config: Any) -> Any:
            cal = config.int8_calibrator
            batches = 0
            if cal is not None and "INT8" in config._d_flags:
                cache = _swallowing(cal.read_calibration_cache, None)
                if not cache:
                    while _swallowing(lambda: cal.get_batch(["images"]), None) is not None:
                        batches += 1
                    _swallowing(lambda: cal.write_calibration_cache(f"TRT-{version}-EntropyCalibration2\n"
                                                                     f"batches: {batches}\n".encode()), None)
            pinned = {layer.name: (layer.precision, dict(layer._d_output_types)) for layer in network._d_layers
                      if layer._d_output_types}
            state.builds.append(SimpleNamespace(flags=set(config._d_flags), calibration_batches=batches,
                                                pinned=pinned, network=network, config=config))
            desc = {"input": {"name": "images", "shape": [1, 3, 64, 64], "dtype": "float32",
                              "profile": [[1, 3, 64, 64]] * 3}, "layout": "raw", "nhwc": False,
                    "plugins": sorted({layer._d_op for layer in network._d_layers} & PLUGIN_OPS)}
            return json.dumps(desc).encode()

    class IOptimizationProfile(trt.IOptimizationProfile):  # type: ignore[misc, valid-type]
        _double = True

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            self._d_shape = (input, tuple(min), tuple(opt), tuple(max))

    for name, cls in (("Runtime", Runtime), ("ICudaEngine", ICudaEngine), ("IExecutionContext", IExecutionContext),
                      ("Builder", Builder), ("OnnxParser", OnnxParser), ("IBuilderConfig", IBuilderConfig),
                      ("INetworkDefinition", INetworkDefinition), ("ILayer", ILayer), ("ITensor", ITensor),
                      ("ITimingCache", ITimingCache), ("IOptimizationProfile", IOptimizationProfile)):
        cls.__name__ = name
        cls._stub_name = name
        setattr(trt, name, cls)
    for name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "ILogger", "IProgressMonitor"):
        base = getattr(trt, name)
        # user subclasses of these (calibrators, loggers, monitors) may set their own attributes, as with pybind
        base._generated = False
    return trt


def engine_bytes(layout: str = "raw", nhwc: bool = False, dynamic: bool = False, k: int = 5, **extra: Any) -> bytes:
    """A serialized fake engine (64x64 input) for :func:`make_tensorrt`'s runtime."""
    hw = (64, 64)
    if nhwc:
        shape = (-1, -1, -1, 3) if dynamic else (1, *hw, 3)
        profile = [(1, 32, 32, 3), (1, 64, 64, 3), (4, 64, 64, 3)] if dynamic else [shape] * 3
    else:
        shape = (-1, 3, -1, -1) if dynamic else (1, 3, *hw)
        profile = [(1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 64, 64)] if dynamic else [shape] * 3
    desc = {"input": {"name": "images", "shape": shape, "dtype": "uint8" if nhwc else "float32",
                      "profile": extra.pop("profile", profile)}, "layout": layout, "nhwc": nhwc, "k": k, **extra}
    return json.dumps(desc).encode()


# ------------------------------------------------------------------------------------------------ CUDA runtime
def real_cudart() -> ModuleType:
    """The installed cuda-python runtime module (skips when cuda-python is missing)."""
    try:
        import cuda.bindings.runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt  # type: ignore[no-redef]
        except ImportError:
            pytest.skip("cuda-python is not installed (pip install 'edge-detect[dev]'): no cudart surface")
    return rt


def cuda118_graph_instantiate(graph, logBuffer, bufferSize):  # noqa: N803 - cuda-python 11.8's signature
    """cuda-python 11.8: ``cudaGraphInstantiate(graph, char* logBuffer, size_t bufferSize)``."""


class FakeCudart:
    """``cuda.bindings.runtime`` over host memory (see the module doc); attributes not modelled here but present
    in the real module raise ``NotImplementedError`` when called; names the real module lacks raise
    ``AttributeError``."""

    def __init__(self, device_limit: int = 1 << 30, cuda_python: str = "13") -> None:
        self._real = real_cudart()
        self.cudaError_t = self._real.cudaError_t
        self.cudaMemcpyKind = self._real.cudaMemcpyKind
        self.cudaStreamCaptureMode = self._real.cudaStreamCaptureMode
        self.cudaStreamNonBlocking = self._real.cudaStreamNonBlocking
        self.device: Dict[int, Any] = {}
        self.host: Dict[int, Any] = {}
        self.device_limit = device_limit
        self.copies: List[str] = []
        self.calls: List[str] = []
        self.streams: Dict[int, int] = {}  # handle -> flags
        self.capture: Dict[int, Dict[str, Any]] = {}
        self.graphs: Dict[int, List[Callable[[], None]]] = {}
        self.execs: Dict[int, int] = {}
        self.graph_launches = 0
        self.last_error = self._real.cudaError_t.cudaSuccess
        self.device_now = {}
        self.missing_driver = False
        self._next = 1000
        self._signatures = {n: inspect.signature(getattr(self._real, n)) for n in self._implemented()}
        if cuda_python.startswith("11"):
            self._signatures["cudaGraphInstantiate"] = inspect.signature(cuda118_graph_instantiate)

    def _implemented(self) -> List[str]:
        return [n for n in dir(type(self)) if n.startswith("cuda") and callable(getattr(type(self), n))]

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("cuda"):
            d = object.__getattribute__(self, "__dict__")
            if name in d:  # the real enums / constants
                return d[name]
            real = d["_real"]
            if not hasattr(real, name):
                raise AttributeError(f"module 'cuda.bindings.runtime' has no attribute '{name}'")
            if name in d["_signatures"]:
                return self._checked(name, d["_signatures"][name], object.__getattribute__(self, name))
            if inspect.isroutine(getattr(real, name)):
                return _unmodelled("cudart", name, "cuda-python").__get__(self)
        return object.__getattribute__(self, name)

    def _checked(self, name: str, sig: inspect.Signature, impl: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            sig.bind(*args)  # TypeError on a wrong argument count, as the real Cython function
            self.calls.append(name)
            if self.missing_driver:
                raise RuntimeError("Failed to dlopen libcuda.so.1")
            return impl(*args)

        return call

    # -- helpers for the TensorRT double
    def capturing(self, stream: int) -> bool:
        return int(stream) in self.capture

    def captured(self, stream: int, work: Callable[[], None]) -> None:
        self.capture[int(stream)]["work"].append(work)

    def invalidate_capture(self, stream: int) -> None:
        self.capture[int(stream)]["invalid"] = True

    def _ok(self, *values: Any) -> Tuple[Any, ...]:
        return (self.cudaError_t.cudaSuccess, *values)

    def _err(self, name: str, *values: Any) -> Tuple[Any, ...]:
        self.last_error = getattr(self.cudaError_t, name)
        return (self.last_error, *values)

    def _alloc(self, table: Dict[int, Any], n: int) -> int:
        buf = ctypes.create_string_buffer(max(int(n), 1))
        table[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    # -- the modelled cudart functions (argument lists as the real ones; checked by _checked)
    def cudaGetErrorString(self, error):  # noqa: N802
        text = {2: b"out of memory", 35: b"CUDA driver version is insufficient for CUDA runtime version",
                901: b"operation failed due to a previous error during capture"}.get(int(error), b"no error")
        return self._ok(text)

    def cudaGetLastError(self):  # noqa: N802
        err, self.last_error = self.last_error, self.cudaError_t.cudaSuccess
        return (err,)

    def cudaMalloc(self, size):  # noqa: N802
        if size > self.device_limit:
            return self._err("cudaErrorMemoryAllocation", 0)
        return self._ok(self._alloc(self.device, size))

    def cudaMallocHost(self, size):  # noqa: N802
        return self._ok(self._alloc(self.host, size))

    def cudaFree(self, devPtr):  # noqa: N802, N803
        del self.device[devPtr]
        return self._ok()

    def cudaFreeHost(self, ptr):  # noqa: N802
        del self.host[ptr]
        return self._ok()

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        assert dst in self.device or dst in self.host
        self.copies.append("H2D" if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else "D2H")
        if int(stream) in self.capture:
            self.capture[int(stream)]["work"].append(lambda: ctypes.memmove(dst, src, count))
        else:
            ctypes.memmove(dst, src, count)
        return self._ok()

    def cudaMemcpy(self, dst, src, count, kind):  # noqa: N802
        ctypes.memmove(dst, src, count)
        return self._ok()

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        self._next += 1
        self.streams[self._next] = int(flags)
        return self._ok(self._next)

    def cudaStreamCreate(self):  # noqa: N802
        return self.cudaStreamCreateWithFlags(0)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        if int(stream) in self.capture:  # illegal while capturing; invalidates the capture
            self.capture[int(stream)]["invalid"] = True
            return self._err("cudaErrorStreamCaptureUnsupported")
        return self._ok()

    def cudaStreamDestroy(self, stream):  # noqa: N802
        del self.streams[int(stream)]
        return self._ok()

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        if int(stream) in self.capture:
            return self._err("cudaErrorIllegalState")
        self.capture[int(stream)] = {"work": [], "invalid": False}
        return self._ok()

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        cap = self.capture.pop(int(stream))
        if cap["invalid"]:
            return self._err("cudaErrorStreamCaptureInvalidated", None)
        self._next += 1
        self.graphs[self._next] = cap["work"]
        return self._ok(self._next)

    def cudaGraphInstantiate(self, graph, *rest):  # noqa: N802 - (graph, flags); 11.8: (graph, log, size)
        return self.cudaGraphInstantiateWithFlags(graph, 0)

    def cudaGraphInstantiateWithFlags(self, graph, flags):  # noqa: N802
        self._next += 1
        self.execs[self._next] = graph
        return self._ok(self._next)

    def cudaGraphLaunch(self, graphExec, stream):  # noqa: N802, N803
        self.graph_launches += 1
        for work in self.graphs[self.execs[graphExec]]:
            work()
        return self._ok()

    def cudaGraphExecDestroy(self, graphExec):  # noqa: N802, N803
        del self.execs[graphExec]
        return self._ok()

    def cudaGraphDestroy(self, graph):  # noqa: N802
        del self.graphs[graph]
        return self._ok()

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        return self._ok(SimpleNamespace(name=b"Fake GPU\x00\x00\x00", major=8, minor=6))

    def cudaSetDevice(self, device):  # noqa: N802
        import threading

        self.device_now[threading.get_ident()] = device
        return self._ok()


# ------------------------------------------------------------------------------------------------ installing
def install(monkeypatch: Any, version: str = "10.13.0.35", **cudart: Any) -> SimpleNamespace:
    """Put the doubles in place of ``tensorrt`` and cuda-python, with a fresh process's TensorRT state
    (no logger yet, plugins not registered). Returns ``rt`` (FakeCudart), ``trt`` and ``state``."""
    from edge_detect.backends import _cuda, trt_common

    rt = FakeCudart(**cudart)
    trt = make_tensorrt(version, cudart=rt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(_cuda, "_RT", rt)
    monkeypatch.setattr(trt_common, "_state", {"logger": None, "logger_module": None, "plugins": None})
    return SimpleNamespace(rt=rt, trt=trt, state=trt._d_state)


def make_engine(path: Path, layout: str = "raw", nhwc: bool = False, dynamic: bool = False, k: int = 5,
                tensorrt: str = "10.13.0", gpu: str = "Fake GPU", cc: str = "8.6", onnx: Optional[Path] = None,
                version_compatible: bool = False, dla: Optional[int] = None, **desc: Any) -> Path:
    """A fake engine file (:func:`engine_bytes`) with an edge-detect metadata sidecar recording ``tensorrt``,
    ``gpu``, ``cc`` and the build options."""
    from edge_detect.backends.engine_meta import EngineInfo, write_engine_metadata
    from edge_detect.metadata import ModelMetadata

    path.write_bytes(engine_bytes(layout, nhwc, dynamic, k, version_compatible=version_compatible, dla_core=dla,
                                  **desc))
    shape = json.loads(path.read_bytes())["input"]["shape"]
    meta = ModelMetadata(names=tuple("abcdef"), imgsz=(64, 64), output_layout=layout, dynamic=dynamic,
                         input_format="uint8_nhwc_bgr" if nhwc else "float32_nchw_rgb", precision="fp16",
                         source_path=str(onnx or ""))
    write_engine_metadata(path, meta, EngineInfo(tensorrt, gpu, cc, "images", shape, "uint8" if nhwc else "float32",
                                                 build={"fp16": True, "dla": dla},
                                                 version_compatible=version_compatible))
    return path
