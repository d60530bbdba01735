"""Test doubles for TensorRT and the CUDA runtime, built from the real API surfaces.

* :func:`stub_surface` parses the ``tensorrt-stubs`` package (type stubs of the TensorRT 10.13 Python API) with
  :mod:`ast`: every class with its members (methods, properties, attributes, enum members and their values),
  nested classes, and the module-level names of ``tensorrt``.
* :func:`version_surface` applies the per-release differences kept as data in ``tests/trt_surfaces.json``
  (read from NVIDIA's bindings sources for TensorRT 8.5, 8.6, 10.0, 10.3, 10.12, 10.13, 11.0 and 11.1) to that
  surface: a double of TensorRT 8.5 has no ``IBuilderConfig.hardware_compatibility_level``, no
  ``IProgressMonitor`` and no ``DataType.INT64``; one of 11.x has no calibrators, no ``BuilderFlag.FP16`` and no
  ``ILayer.precision``.
* :func:`make_tensorrt` generates a ``tensorrt`` module for one version from that surface: enums become
  :class:`enum.IntEnum`; every other class gets exactly the release's members (unknown attributes raise
  ``AttributeError`` like pybind11 objects, read-only properties cannot be set, unmodelled methods raise
  ``NotImplementedError``). Behaviour is added where it matters, mirroring the real library:

  - runtime (this module): a plugin registry (``deserialize_cuda_engine`` fails on a plugin layer unless
    ``init_libnvinfer_plugins`` ran); version and GPU checks at deserialization with TensorRT's own messages
    (version-compatible engines need ``engine_host_code_allowed``, hardware-compatible ones an Ampere+ discrete
    GPU); the DLA core; engines with HALF / INT64 / BF16 tensors and data-dependent output shapes; context
    creation that can fail; TensorRT < 9 giving only the first context of a dynamic engine a profile; an
    ``execute_async_v3`` that checks the tensor addresses (set, live, on the engine's device, large enough), the
    current device and the stream, fails under capture for engines that cannot be captured, and queues its work
    on the stream instead of running it (see :mod:`cuda_double`).
  - build side (:mod:`trt_doubles_build`): an ONNX parser with onnx-tensorrt's support matrix and layer naming,
    and a builder that validates the network and config and records each layer's precision.

* :class:`~cuda_double.FakeCudart` is ``cuda.bindings.runtime`` over host memory, with deferred stream execution.

The doubles skip (``pytest.skip``) with the reason when ``tensorrt-stubs`` or cuda-python are not installed
(both are in the ``dev`` extra).
"""
from __future__ import annotations

import ast
import ctypes
import enum
import functools
import importlib.metadata
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import pytest

from cuda_double import FakeCudart, real_cudart, unmodelled  # noqa: F401  (re-exported for the tests)

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


# ------------------------------------------------------------------------------------------------ release surfaces
SURFACES = Path(__file__).with_name("trt_surfaces.json")


@functools.lru_cache(maxsize=1)
def surfaces() -> Dict[str, Any]:
    """``tests/trt_surfaces.json``: Python API differences per release and the ONNX operator support matrix."""
    return json.loads(SURFACES.read_text())


def _vkey(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])


def nearest_release(version: str, releases: List[str]) -> str:
    """The newest of ``releases`` (``"8.6"``, ``"10.12"``...) not newer than ``version`` (the oldest if none)."""
    older = [r for r in releases if _vkey(r) <= _vkey(version)]
    return max(older, key=_vkey) if older else min(releases, key=_vkey)


@dataclass
class VersionSurface:
    """The TensorRT Python API of one release: the stubs' surface with that release's differences applied."""

    release: str
    stubs: StubSurface
    delta: Dict[str, Any]

    def has_class(self, name: str) -> bool:
        tracked = self.delta["classes"]
        if name in tracked and tracked[name] is None:
            return False
        return name in self.stubs.classes and name not in self.delta["module_removed"]

    def members(self, name: str) -> Set[str]:
        """Members of class ``name`` in this release (inherited ones included)."""
        out = set(self.stubs.members(name))
        change = self.delta["classes"].get(name)
        if change:
            out = (out - set(change["removed"])) | set(change["added"])
        return out

    def added(self, name: str) -> Set[str]:
        change = self.delta["classes"].get(name)
        return set(change["added"]) if change else set()

    @property
    def module_names(self) -> Set[str]:
        return (self.stubs.module_names - set(self.delta["module_removed"])) | set(self.delta["module_added"])


def version_surface(version: str) -> VersionSurface:
    """The API surface of the TensorRT release ``version`` belongs to (nearest data release not newer)."""
    data = surfaces()["python_api"]["versions"]
    release = nearest_release(version, list(data))
    return VersionSurface(release, stub_surface(), data[release])


# ------------------------------------------------------------------------------------------------ generated module
class _StubObject:
    """Base of generated non-enum classes: only the release's members exist."""

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
                                     f"TensorRT {cls._stub_release} API)")
            if name in cls._stub_readonly:
                raise AttributeError(f"can't set read-only property tensorrt.{cls._stub_name}.{name}")
        object.__setattr__(self, name, value)

    def _d_init(self, **defaults: Any) -> None:
        """Set the attributes among ``defaults`` that exist in this release."""
        for name, value in defaults.items():
            if name in type(self)._stub_members:
                object.__setattr__(self, name, value)


def _make_enum(stub: StubClass, members: Set[str]) -> type:
    values = {k: v for k, v in stub.enum_members.items() if k in members}
    top = max(stub.enum_members.values(), default=0)
    extras = {m for m in members - set(stub.enum_members) if m.isupper()}  # members only this release has
    for extra in sorted(extras):
        top += 1
        values[extra] = top
    return enum.IntEnum(stub.name, values)


def _make_class(stub: StubClass, surface: VersionSurface) -> type:
    members = surface.members(stub.name)
    ns: Dict[str, Any] = {"_stub_name": stub.name, "_generated": True, "_stub_release": surface.release,
                          "_stub_members": frozenset(members), "_stub_readonly": frozenset(stub.readonly)}
    for m in (stub.methods & members) | (surface.added(stub.name) - stub.readonly - stub.writable):
        if not m.startswith("__"):
            ns[m] = unmodelled(f"tensorrt.{stub.name}", m)
    for name, nested in stub.nested.items():
        ns[name] = _make_enum(nested, set(nested.enum_members)) if nested.is_enum else _make_class(nested, surface)
    for name, (owner, member) in stub.constants.items():  # class-level constants (e.g. ILogger.INFO)
        if owner in ns and isinstance(ns[owner], enum.EnumMeta):
            ns[name] = ns[owner][member]
    return type(stub.name, (_StubObject,), ns)


_DTYPE_ALIASES = (("float32", "FLOAT"), ("float16", "HALF"), ("int8", "INT8"), ("int32", "INT32"), ("int64", "INT64"),
                  ("uint8", "UINT8"), ("bool", "BOOL"), ("bfloat16", "BF16"))


def generate_tensorrt(version: Optional[str] = None) -> ModuleType:
    """A ``tensorrt`` module with the classes of release ``version`` (no behaviour), ``__version__`` = ``version``."""
    stubs = stub_surface()
    version = version or stubs.version
    surface = version_surface(version)
    mod = ModuleType("tensorrt")
    for name, stub in stubs.classes.items():
        if not surface.has_class(name):
            continue
        members = surface.members(name)
        setattr(mod, name, _make_enum(stub, members) if stub.is_enum else _make_class(stub, surface))
    mod.__version__ = version
    mod._d_surface = surface
    for alias, member in _DTYPE_ALIASES:
        if member in mod.DataType.__members__:
            setattr(mod, alias, mod.DataType[member])
    return mod


def prune(cls: type, surface: VersionSurface, name: str) -> None:
    """Remove from a double class every public attribute the release does not have (so ``hasattr`` is right)."""
    members = surface.members(name)
    for klass in cls.__mro__:
        if klass is _StubObject or not getattr(klass, "_double", False):
            continue
        for attr in list(vars(klass)):
            if not attr.startswith("_") and attr not in members:
                delattr(klass, attr)


# ------------------------------------------------------------------------------------------------ engines
NP_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
         "UINT8": np.uint8, "BOOL": np.bool_}
PLUGIN_OPS = {"EfficientNMS_TRT"}
_NMS_OUTPUTS = (("classes", "INT32", 2), ("boxes", "FLOAT", 3), ("num_dets", "INT32", 2), ("scores", "FLOAT", 2))


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
    mean = x.reshape(b, -1).astype(np.float32).mean(1).astype(np.float32)
    return (mean[:, None, None] + np.arange(n, dtype=np.float32)[None, :, None]
            + 10 * np.arange(6, dtype=np.float32)[None, None, :]).astype(np.float32)


def engine_outputs(desc: Dict[str, Any]) -> List[Tuple[str, str, int, bool]]:
    """``(name, DataType name, rank, data_dependent)`` of each output of a fake engine description."""
    if desc.get("outputs_spec"):  # an engine of the builder double: the network's outputs
        return [(n, t, len(shape), False) for n, t, shape in desc["outputs_spec"]]
    base = [("output0", "FLOAT", 3)] if desc["layout"] == "raw" else list(_NMS_OUTPUTS)
    over = desc.get("outputs") or {}
    return [(n, over.get(n, {}).get("dtype", t), r, bool(over.get(n, {}).get("data_dependent"))) for n, t, r in base]


def output_shape(desc: Dict[str, Any], name: str, input_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The shape of output ``name`` for a concrete input shape (``-1`` where the output is data-dependent)."""
    s = input_shape
    if desc.get("outputs_spec"):
        shape = {n: tuple(shp) for n, _, shp in desc["outputs_spec"]}[name]
        return (s[0], *shape[1:]) if shape and shape[0] < 0 <= s[0] else shape
    if any(d < 0 for d in s):
        rank = {n: r for n, _, r, _ in engine_outputs(desc)}[name]
        return (-1,) * rank
    b, h, w = (s[0], s[1], s[2]) if desc["nhwc"] else (s[0], s[2], s[3])
    k = desc.get("k", 5)
    shape = {"output0": (b, h * w // 64, 6), "num_dets": (b, 1), "boxes": (b, k, 4), "scores": (b, k),
             "classes": (b, k)}[name]
    dependent = {n for n, _, _, dd in engine_outputs(desc) if dd}
    return (shape[0], -1, *shape[2:]) if name in dependent else shape


# ------------------------------------------------------------------------------------------------ module behaviour
def make_tensorrt(version: str = "10.13.0.35", cudart: Optional[FakeCudart] = None, dla_cores: int = 0) -> ModuleType:
    """The generated ``tensorrt`` module of release ``version`` with the behaviour the tests need.

    Engines are JSON descriptions (:func:`engine_bytes`): input name/shape/dtype/profile, output layout and
    dtypes, the TensorRT version and compute capability that built them, ``plugins`` (plugin layer types),
    ``version_compatible``, ``hardware_compatible``, ``dla_core``, ``capturable``, ``max_contexts``.

    Args:
        version: ``trt.__version__``; the API surface is the nearest data release not newer.
        cudart: the CUDA double that streams, devices and allocations live in.
        dla_cores: DLA cores the (fake) device has (``Builder.num_DLA_cores`` / ``Runtime.num_DLA_cores``).
    """
    trt = generate_tensorrt(version)
    state = SimpleNamespace(plugins_registered=False, plugin_logger=None, deserialized=[], builds=[], printed=[],
                            cudart=cudart, dla_cores=dla_cores, errors=[], warnings=[])
    trt._d_state = state

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        state.plugins_registered, state.plugin_logger = True, logger
        return True

    def nptype(dtype: Any) -> type:  # tensorrt/__init__.py: no NumPy type for BF16 / FP8 / INT4
        name = trt.DataType(int(dtype)).name
        if name not in NP_OF:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return NP_OF[name]

    trt.init_libnvinfer_plugins, trt.nptype = init_libnvinfer_plugins, nptype
    classes = dict(_runtime_classes(trt, state))
    import trt_doubles_build

    classes.update(trt_doubles_build.builder_classes(trt, state))
    surface = trt._d_surface
    for name, cls in classes.items():
        cls.__name__ = cls._stub_name = name
        cls._stub_release = surface.release
        prune(cls, surface, name)
        setattr(trt, name, cls)
    for name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "ILogger", "IProgressMonitor"):
        base = getattr(trt, name, None)
        if base is not None:  # user subclasses (calibrators, loggers, monitors) may set their own attributes
            base._generated = False
    return trt


def log(trt: Any, logger: Any, severity: str, msg: str) -> None:
    """Send ``msg`` to a TensorRT logger (and keep errors / warnings in the double's state)."""
    getattr(trt._d_state, {"ERROR": "errors", "WARNING": "warnings"}.get(severity, "printed")).append(msg)
    if logger is not None:
        logger.log(trt.ILogger.Severity[severity], msg)


def deserialize_problem(trt: Any, desc: Dict[str, Any], runtime: Any) -> Optional[str]:
    """Why TensorRT would refuse to deserialize ``desc`` here (its own wording), or ``None``."""
    state, rt = trt._d_state, trt._d_state.cudart
    missing = [p for p in desc.get("plugins", []) if not state.plugins_registered]
    if missing:
        return f"getPluginCreator could not find plugin: {missing[0]} version: 1"
    built, here = desc.get("tensorrt"), _vkey(trt.__version__)
    if built is not None:
        if desc.get("version_compatible"):
            if not _vkey(built) <= here:
                return f"The engine plan file is not compatible with this version of TensorRT, expecting library " \
                       f"version {trt.__version__} got {built}, please rebuild."
            if not runtime.engine_host_code_allowed:
                return "Cannot deserialize engine with lean runtime: engine_host_code_allowed is false"
        elif _vkey(built) != here:
            return f"The engine plan file is not compatible with this version of TensorRT, expecting library version " \
                   f"{trt.__version__} got {built}, please rebuild."
    gpu = rt.gpus[rt.current()] if rt is not None else None
    if gpu is not None and desc.get("cc") is not None:
        here_cc = f"{gpu['major']}.{gpu['minor']}"
        portable = desc.get("hardware_compatible") and gpu["major"] >= 8 and not gpu["integrated"]
        if here_cc != desc["cc"] and not portable:
            return f"The engine plan file is generated on an incompatible device, expecting compute {desc['cc']} " \
                   f"got compute {here_cc}, please rebuild."
    if desc.get("dla_core") is not None:
        if runtime.DLA_core != desc["dla_core"] or desc["dla_core"] >= state.dla_cores:
            return f"engine built for DLA core {desc['dla_core']}, runtime DLA core {runtime.DLA_core} " \
                   f"({state.dla_cores} DLA cores)"
    return None


def _runtime_classes(trt: Any, state: Any) -> Dict[str, type]:
    class Runtime(trt.Runtime):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, logger: Any) -> None:
            self._d_logger = logger
            self._d_init(DLA_core=-1, engine_host_code_allowed=False)

        @property
        def logger(self) -> Any:
            return self._d_logger

        @property
        def num_DLA_cores(self) -> int:  # noqa: N802
            return state.dla_cores

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
            desc = json.loads(bytes(serialized_engine))
            problem = deserialize_problem(trt, desc, self)
            if problem is not None:
                log(trt, self._d_logger, "ERROR", problem)
                log(trt, self._d_logger, "ERROR", "Engine deserialization failed.")
                return None
            rt = state.cudart
            engine = trt.ICudaEngine(desc, rt.current() if rt is not None else 0, self._d_logger)
            state.deserialized.append(engine)
            return engine

    return {"Runtime": Runtime, "ICudaEngine": _engine_class(trt, state),
            "IExecutionContext": _context_class(trt, state)}


def _engine_class(trt: Any, state: Any) -> type:
    class ICudaEngine(trt.ICudaEngine):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, desc: dict, device: int, logger: Any) -> None:
            self._d_desc, self._d_device, self._d_logger = desc, device, logger
            self._d_names = [desc["input"]["name"], *(n for n, _, _, _ in engine_outputs(desc))]
            self._d_dtypes = {n: t for n, t, _, _ in engine_outputs(desc)}
            self._d_dtypes[desc["input"]["name"]] = {"uint8": "UINT8", "float16": "HALF"}.get(
                desc["input"]["dtype"], "FLOAT")
            self._d_contexts: List[Any] = []

        @property
        def num_io_tensors(self) -> int:
            return len(self._d_names)

        @property
        def num_optimization_profiles(self) -> int:
            return 1

        def _d_dynamic(self) -> bool:
            return any(d < 0 for d in self._d_desc["input"]["shape"])

        def get_tensor_name(self, index: int) -> str:
            return self._d_names[index]

        def get_tensor_mode(self, name: str) -> Any:
            if name not in self._d_names:
                return trt.TensorIOMode.NONE
            return trt.TensorIOMode.INPUT if name == self._d_desc["input"]["name"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return trt.DataType[self._d_dtypes[name]]

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            inp = self._d_desc["input"]
            if name == inp["name"]:
                return tuple(inp["shape"])
            return output_shape(self._d_desc, name, tuple(inp["shape"]))

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Tuple[int, ...]]:
            if name != self._d_desc["input"]["name"] or profile_index != 0:
                return []
            return [tuple(s) for s in self._d_desc["input"]["profile"]]

        def create_execution_context(self, *args: Any) -> Any:
            limit = self._d_desc.get("max_contexts")
            if limit is not None and len(self._d_contexts) >= limit:
                log(trt, self._d_logger, "ERROR", "Requested amount of GPU memory could not be allocated: out of "
                                                  "memory (IExecutionContext creation failed)")
                return None
            # TensorRT < 9: only the first context of an engine gets profile 0 implicitly
            legacy = _vkey(trt.__version__) < (9,) and self._d_dynamic() and self._d_contexts
            ctx = trt.IExecutionContext(self, -1 if legacy else 0)
            self._d_contexts.append(ctx)
            return ctx

    return ICudaEngine


def _context_class(trt: Any, state: Any) -> type:
    class IExecutionContext(trt.IExecutionContext):  # type: ignore[misc, valid-type]
        _double = True

        def __init__(self, engine: Any, profile: int) -> None:
            self._d_engine, self._d_profile, self._d_addresses = engine, profile, {}
            self._d_runs = self._d_shape_sets = 0
            spec = engine._d_desc["input"]
            self._d_shapes = {spec["name"]: tuple(spec["shape"])}

        def _d_error(self, msg: str) -> bool:
            log(trt, self._d_engine._d_logger, "ERROR", msg)
            return False

        @property
        def engine(self) -> Any:
            return self._d_engine

        @property
        def active_optimization_profile(self) -> int:
            return self._d_profile

        def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
            if profile_index != 0:
                return self._d_error(f"setOptimizationProfileAsync: profile {profile_index} out of range (1 profile)")
            others = [c for c in self._d_engine._d_contexts if c is not self and c._d_profile == 0]
            if _vkey(trt.__version__) < (9,) and others:
                return self._d_error("setOptimizationProfileAsync: profile 0 is used by another execution context")
            self._d_profile = 0
            return True

        def set_input_shape(self, name: str, shape: Any) -> bool:
            spec = self._d_engine._d_desc["input"]
            shape = tuple(int(d) for d in shape)
            lo, _, hi = [tuple(s) for s in spec["profile"]]
            ok = name == spec["name"] and len(shape) == len(lo) and all(a <= s <= c for a, s, c in zip(lo, shape, hi))
            if not ok:
                return self._d_error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (shape "
                                     f"{shape} for '{name}' is outside the profile {lo}..{hi})")
            self._d_shapes[name] = shape
            self._d_shape_sets += 1
            return True

        def _d_in_shape(self) -> Tuple[int, ...]:
            return self._d_shapes[self._d_engine._d_desc["input"]["name"]]

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name == self._d_engine._d_desc["input"]["name"]:
                return self._d_in_shape()
            return output_shape(self._d_engine._d_desc, name, self._d_in_shape())

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self._d_engine._d_names:
                return self._d_error(f"setTensorAddress: '{name}' is not an I/O tensor of the engine")
            self._d_addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._d_addresses.get(name, 0)

        def execute_async_v3(self, stream_handle: int) -> bool:
            self._d_runs += 1
            rt = state.cudart
            shapes = {n: self.get_tensor_shape(n) for n in self._d_engine._d_names}
            dependent = {n for n, s in shapes.items() if any(d < 0 for d in s)}  # data-dependent outputs
            sized = {n: tuple(max(d, 1) for d in s) for n, s in shapes.items()}
            problem = _enqueue_problem(self, rt, sized)
            if problem is not None:
                return self._d_error(problem)
            if rt.capturing(stream_handle) and not self._d_engine._d_desc.get("capturable", True):
                rt.invalidate_capture(stream_handle)  # e.g. a plugin doing a synchronous call
                return self._d_error("Error Code 1: Cuda Runtime (operation not permitted when stream is capturing)")
            addresses, in_shape = dict(self._d_addresses), self._d_in_shape()
            error = rt.launch(stream_handle, lambda: _compute(self._d_engine, addresses, in_shape, dependent),
                              "enqueue")
            if error is not None:
                return self._d_error(f"Error Code 1: Cuda Runtime ({error})")
            return True

    return IExecutionContext


def _address_problem(ctx: Any, rt: FakeCudart, shapes: Dict[str, Tuple[int, ...]]) -> Optional[str]:
    """Why the bound tensor addresses of ``ctx`` cannot hold ``shapes`` on the engine's device, or ``None``."""
    engine = ctx._d_engine
    for name in engine._d_names:
        if name not in ctx._d_addresses:
            return f"Error Code 3: API Usage Error (Address is not set for tensor '{name}')"
        nbytes = int(np.prod(shapes[name])) * np.dtype(NP_OF.get(engine._d_dtypes[name], np.uint16)).itemsize
        alloc = rt.find(ctx._d_addresses[name], nbytes)
        if alloc is None or alloc.kind not in ("device", "managed") or alloc.device != engine._d_device:
            return (f"Error Code 1: Cuda Runtime (an illegal memory access was encountered: tensor '{name}' "
                    f"needs {nbytes} bytes of device memory on device {engine._d_device} at "
                    f"{ctx._d_addresses[name]:#x})")
    return None


def _enqueue_problem(ctx: Any, rt: FakeCudart, shapes: Dict[str, Tuple[int, ...]]) -> Optional[str]:
    """What TensorRT's enqueue would refuse for ``ctx`` (profile, input shapes, current device, addresses)."""
    if ctx._d_profile < 0:
        return "Error Code 1: Internal Error (no optimization profile set for this execution context)"
    if any(d < 0 for d in ctx._d_in_shape()):
        return "Error Code 3: API Usage Error (not all input shapes are specified)"
    if rt.current() != ctx._d_engine._d_device:
        return (f"Error Code 1: Cuda Runtime (invalid resource handle: engine of device "
                f"{ctx._d_engine._d_device} enqueued while device {rt.current()} is current)")
    return _address_problem(ctx, rt, shapes)


@functools.lru_cache(maxsize=8)
def _onnx_session(path: str) -> Any:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run_onnx(engine: Any, addresses: Dict[str, int], x: np.ndarray) -> None:
    """Engines of the builder double compute what their ONNX computes (ONNX Runtime; not TensorRT's numerics)."""
    desc = engine._d_desc
    outs = _onnx_session(desc["onnx"]).run(None, {desc["input"]["name"]: np.array(x)})
    for (name, dtype, _, _), value in zip(engine_outputs(desc), outs):
        _array_at(addresses[name], NP_OF[dtype], value.shape)[...] = value


def _compute(engine: Any, addresses: Dict[str, int], in_shape: Tuple[int, ...], dependent: Set[str]) -> None:
    """The fake network, run when its stream reaches it: reads the input, writes the outputs."""
    desc = engine._d_desc
    x = _array_at(addresses[desc["input"]["name"]], desc["input"]["dtype"], in_shape)
    if desc.get("onnx"):
        _run_onnx(engine, addresses, x)
        return
    raw = expected_raw(x, desc["nhwc"])
    b, k = raw.shape[0], desc.get("k", 5)
    values = {"output0": raw, "num_dets": np.arange(b)[:, None] + 1, "boxes": raw[:, :k, :4],
              "scores": raw[:, :k, 4], "classes": np.repeat(np.arange(k)[None] * 2, b, 0)}
    for name, dtype, _, _ in engine_outputs(desc):
        if name in dependent or dtype not in NP_OF:
            continue  # data-dependent / BF16 outputs: nothing the tests read
        _array_at(addresses[name], NP_OF[dtype], values[name].shape)[...] = values[name]


# ------------------------------------------------------------------------------------------------ installing
def install(monkeypatch: Any, version: str = "10.13.0.35", dla_cores: int = 0, **cudart: Any) -> SimpleNamespace:
    """Put the doubles in place of ``tensorrt`` and cuda-python, with a fresh process's TensorRT state
    (no logger yet, plugins not registered). ``cudart`` goes to :class:`FakeCudart` (``devices=...``).
    Returns ``rt`` (FakeCudart), ``trt`` and ``state``."""
    from edge_detect.backends import _cuda, trt_common

    rt = FakeCudart(**cudart)
    trt = make_tensorrt(version, cudart=rt, dla_cores=dla_cores)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(_cuda, "_RT", rt)
    monkeypatch.setattr(trt_common, "_state", {"logger": None, "logger_module": None, "plugins": None})
    return SimpleNamespace(rt=rt, trt=trt, state=trt._d_state)


def engine_bytes(layout: str = "raw", nhwc: bool = False, dynamic: bool = False, k: int = 5, **extra: Any) -> bytes:
    """A serialized fake engine (64x64 input) for :func:`make_tensorrt`'s runtime.

    ``extra``: ``profile``, ``outputs`` (``{name: {"dtype": "HALF", "data_dependent": True}}``), ``tensorrt`` /
    ``cc`` (checked at deserialization when given), ``version_compatible``, ``hardware_compatible``, ``dla_core``,
    ``plugins``, ``capturable``, ``max_contexts``.
    """
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


def make_engine(path: Path, layout: str = "raw", nhwc: bool = False, dynamic: bool = False, k: int = 5,
                tensorrt: str = "10.13.0", gpu: str = "Fake GPU", cc: str = "8.6", onnx: Optional[Path] = None,
                version_compatible: bool = False, dla: Optional[int] = None, hardware_compatible: bool = False,
                **desc: Any) -> Path:
    """A fake engine file (:func:`engine_bytes`, recording ``tensorrt`` and ``cc`` for the runtime's checks) with
    an edge-detect metadata sidecar recording ``tensorrt``, ``gpu``, ``cc`` and the build options."""
    from edge_detect.backends.engine_meta import EngineInfo, write_engine_metadata
    from edge_detect.metadata import ModelMetadata

    path.write_bytes(engine_bytes(layout, nhwc, dynamic, k, version_compatible=version_compatible, dla_core=dla,
                                  tensorrt=tensorrt, cc=cc, hardware_compatible=hardware_compatible, **desc))
    shape = json.loads(path.read_bytes())["input"]["shape"]
    meta = ModelMetadata(names=tuple("abcdef"), imgsz=(64, 64), output_layout=layout, dynamic=dynamic,
                         input_format="uint8_nhwc_bgr" if nhwc else "float32_nchw_rgb", precision="fp16",
                         source_path=str(onnx or ""))
    write_engine_metadata(path, meta, EngineInfo(tensorrt, gpu, cc, "images", shape, "uint8" if nhwc else "float32",
                                                 build={"fp16": True, "dla": dla},
                                                 version_compatible=version_compatible,
                                                 hardware_compatible=hardware_compatible))
    return path
