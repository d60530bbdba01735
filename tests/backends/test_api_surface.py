"""Every TensorRT and cudart name the code uses exists in the real API surfaces.

TensorRT: the code of ``backends/tensorrt.py``, ``backends/trt_common.py`` and ``deploy/tensorrt_build.py`` is
read with :mod:`ast`; every ``trt.X`` / ``trt.X.Y`` must be in the ``tensorrt-stubs`` package (TensorRT 10.13),
and every attribute used on a TensorRT object must be a member of its class there. Object types come from
what created them (``trt.Runtime(...)``, ``builder.create_network(...)`` -> the stub's return annotation) and,
for parameters and loop variables, from :data:`SEEDS`. Methods of the classes the code derives from TensorRT's
(logger, calibrators, progress monitor) must be members of the base class.

Other releases: the same uses are checked against the surfaces of TensorRT 8.5, 8.6, 10.0, 10.3, 10.12, 11.0 and
11.1 (``tests/trt_surfaces.json``, read from NVIDIA's bindings sources). A name a release lacks must be one of
:data:`GUARDED`, each with the reason the code never reaches it on that release; the doubles of those releases
(``make_tensorrt(version)``) then prove the guards by running the code.

cudart: every ``call("cudaX", ...)`` / ``_invoke("cudaX", ...)`` in ``backends/_cuda.py`` names a function of the
installed cuda-python whose signature accepts that many arguments; every ``runtime().A.B`` exists.
"""
from __future__ import annotations

import ast
import inspect
from typing import Dict, List, Optional, Set, Tuple

import pytest

from conftest import REPO
from trt_doubles import real_cudart, stub_surface, surfaces, version_surface

TRT_FILES = ["edge_detect/backends/tensorrt.py", "edge_detect/backends/trt_common.py",
             "edge_detect/deploy/tensorrt_build.py"]
# names whose TensorRT class cannot be inferred from an assignment (parameters, loop variables)
SEEDS = {"network": "INetworkDefinition", "layer": "ILayer", "config": "IBuilderConfig", "parser": "OnnxParser",
         "request.context": "IExecutionContext", "context": "IExecutionContext", "builder": "Builder"}
# module attributes the real tensorrt package defines outside the bindings (tensorrt/__init__.py)
MODULE_EXTRA = {"__version__"}
# pairs that must be among the checked ones, so the inference cannot silently check nothing
MUST_CHECK = {("Runtime", "engine_host_code_allowed"), ("Runtime", "DLA_core"), ("Runtime", "deserialize_cuda_engine"),
              ("ICudaEngine", "create_execution_context"), ("IExecutionContext", "execute_async_v3"),
              ("IExecutionContext", "set_tensor_address"), ("IBuilderConfig", "set_timing_cache"),
              ("IBuilderConfig", "int8_calibrator"), ("ILayer", "set_output_type"), ("ILayer", "precision"),
              ("ITensor", "dtype"), ("INetworkDefinition", "get_layer"), ("ITimingCache", "serialize"),
              ("Builder", "build_serialized_network"), ("OnnxParser", "parse_from_file")}
# names some releases lack -> (those releases, why the code never uses them there)
GUARDED = {
    ("BuilderFlag", "VERSION_COMPATIBLE"): ("8.5", "version_compatible=True is refused below 8.6 by plan_build"),
    ("Runtime", "engine_host_code_allowed"): ("8.5", "set only for version-compatible engines (built by >= 8.6)"),
    ("IBuilderConfig", "hardware_compatibility_level"): ("8.5", "hardware_compatible=True is refused below 8.6 "
                                                                "by plan_build"),
    ("trt", "HardwareCompatibilityLevel"): ("8.5", "likewise"),
    ("IBuilderConfig", "progress_monitor"): ("8.5 8.6", "set only when trt.IProgressMonitor exists (>= 10.0)"),
    ("BuilderFlag", "PREFER_PRECISION_CONSTRAINTS"): ("11.0 11.1", "FP16 pinning on weakly typed networks; 11 "
                                                                   "plans are strongly typed"),
    ("ILayer", "precision"): ("11.0 11.1", "likewise"),
    ("ILayer", "set_output_type"): ("11.0 11.1", "likewise"),
    ("IBuilderConfig", "int8_calibrator"): ("11.0 11.1", "implicit INT8 only, refused on 11 by plan_build"),
    ("IBuilderConfig", "set_calibration_profile"): ("11.0 11.1", "likewise"),
}


def _chain(node: ast.AST) -> Optional[List[str]]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


class TrtUses(ast.NodeVisitor):
    """Collect ``trt.X[.Y]`` chains and (class, attribute) uses on inferred TensorRT objects."""

    def __init__(self, surface) -> None:
        self.surface = surface
        self.module: Set[Tuple[str, ...]] = set()
        self.members: Set[Tuple[str, str, int]] = set()
        self.types: Dict[str, str] = dict(SEEDS)

    def type_of(self, node: ast.AST) -> Optional[str]:
        t = self._type_of(node)
        return t if t in self.surface.classes else None

    def _type_of(self, node: ast.AST) -> Optional[str]:
        if isinstance(node, (ast.Name, ast.Attribute)):
            key = ast.unparse(node)
            if key in self.types:
                return self.types[key]
            chain = _chain(node)
            if chain and chain[0] == "trt" and len(chain) == 2 and chain[1] in self.surface.classes:
                return None
        if isinstance(node, ast.Call):
            chain = _chain(node.func)
            if chain and chain[0] == "trt" and len(chain) == 2 and chain[1] in self.surface.classes:
                return chain[1]  # trt.Runtime(logger)
            if isinstance(node.func, ast.Attribute):
                owner = self.type_of(node.func.value)
                if owner:
                    return self.surface.returns(owner, node.func.attr)
        if isinstance(node, ast.Attribute):
            owner = self.type_of(node.value)
            if owner:
                return self.surface.returns(owner, node.attr)
        return None

    def learn(self, tree: ast.AST) -> None:
        for _ in range(4):  # assignments in any order: iterate to a fixpoint
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    t = self.type_of(node.value)
                    if t and t in self.surface.classes:
                        self.types[ast.unparse(node.targets[0])] = t

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node)
        if chain and chain[0] == "trt":
            self.module.add(tuple(chain[1:3]))
        owner = self.type_of(node.value)
        if owner:
            self.members.add((owner, node.attr, node.lineno))
        self.generic_visit(node)


@pytest.fixture(scope="module")
def surface():
    return stub_surface()


@pytest.fixture(scope="module")
def uses(surface) -> Dict[str, TrtUses]:
    out = {}
    for rel in TRT_FILES:
        tree = ast.parse((REPO / rel).read_text())
        v = TrtUses(surface)
        v.learn(tree)
        v.visit(tree)
        out[rel] = v
    return out


def test_trt_module_names_exist_in_the_stubs(surface, uses) -> None:
    missing = []
    for rel, v in uses.items():
        for chain in sorted(v.module):
            name = chain[0]
            if name not in surface.module_names and name not in MODULE_EXTRA:
                missing.append(f"{rel}: trt.{name}")
            elif len(chain) > 1 and name in surface.classes and chain[1] not in surface.members(name):
                missing.append(f"{rel}: trt.{'.'.join(chain)}")
    assert missing == []
    used = set().union(*(v.module for v in uses.values()))
    assert {("Runtime",), ("BuilderFlag", "VERSION_COMPATIBLE"), ("BuilderFlag", "PREFER_PRECISION_CONSTRAINTS"),
            ("init_libnvinfer_plugins",), ("TensorIOMode", "INPUT"), ("float32",)} <= used


def test_trt_object_members_exist_in_the_stubs(surface, uses) -> None:
    missing = [f"{rel}:{line}: {cls}.{attr}" for rel, v in uses.items() for cls, attr, line in sorted(v.members)
               if attr not in surface.members(cls)]
    assert missing == []
    checked = {(cls, attr) for v in uses.values() for cls, attr, _ in v.members}
    assert MUST_CHECK <= checked, sorted(MUST_CHECK - checked)


def _missing_in(release: str, uses: Dict[str, "TrtUses"]) -> Set[Tuple[str, str]]:
    vs = version_surface(release)
    missing = set()
    for v in uses.values():
        for cls, attr, _ in v.members:
            if not vs.has_class(cls) or attr not in vs.members(cls):
                missing.add((cls, attr))
        for chain in v.module:
            if chain[0] not in vs.module_names and chain[0] not in MODULE_EXTRA:
                missing.add(("trt", chain[0]))
            elif len(chain) > 1 and vs.has_class(chain[0]) and chain[1] not in vs.members(chain[0]):
                missing.add(tuple(chain[:2]))
    return missing


@pytest.mark.parametrize("release", sorted(surfaces()["python_api"]["versions"], key=lambda r: tuple(
    int(p) for p in r.split("."))))
def test_names_a_release_lacks_are_the_guarded_ones(uses, release: str) -> None:
    expected = {name for name, (releases, _) in GUARDED.items() if release in releases.split()}
    assert _missing_in(release, uses) == expected


def test_flags_and_calibrators_named_by_strings_exist(surface) -> None:
    from edge_detect.deploy.tensorrt_build import CALIBRATION_METHODS, plan_build

    flags = set()
    for kwargs in (dict(fp16=True), dict(int8=True, has_qdq=True), dict(int8=True, can_calibrate=True, dla=0)):
        flags |= set(plan_build("10.3.0", **kwargs).flags)
    assert flags == {"FP16", "INT8", "GPU_FALLBACK"} and flags <= set(surface.classes["BuilderFlag"].enum_members)
    assert set(CALIBRATION_METHODS.values()) <= surface.module_names
    assert {"STRONGLY_TYPED", "EXPLICIT_BATCH"} <= set(surface.classes["NetworkDefinitionCreationFlag"].enum_members)


def test_overridden_methods_exist_in_the_tensorrt_base_classes(surface) -> None:
    """The classes derived from TensorRT's (logger, calibrator, progress monitor) override real callbacks."""
    bases = {"trt.ILogger": ["ILogger"], "base": ["IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IProgressMonitor"]}
    own = {"close"}  # our helper, not a TensorRT callback
    found = 0
    for rel in TRT_FILES:
        for node in ast.walk(ast.parse((REPO / rel).read_text())):
            if not isinstance(node, ast.ClassDef) or not node.bases:
                continue
            base = ast.unparse(node.bases[0])
            if base not in bases:
                continue
            methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
            candidates = [b for b in bases[base] if methods - own <= surface.members(b)]
            assert candidates, f"{rel}: {node.name} overrides {sorted(methods - own)}, not all in {bases[base]}"
            found += 1
    assert found == 3  # _Logger, _Calibrator, _Monitor


# ------------------------------------------------------------------------------------------------ cudart
def _cudart_calls() -> List[Tuple[str, int, int]]:
    tree = ast.parse((REPO / "edge_detect/backends/_cuda.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("call", "_invoke") \
                and node.args and isinstance(node.args[0], ast.Constant):
            out.append((node.args[0].value, len(node.args) - 1, node.lineno))
    return out


def test_cudart_functions_exist_with_the_argument_counts_used() -> None:
    rt = real_cudart()
    calls = _cudart_calls()
    assert len({name for name, _, _ in calls}) >= 17
    bad = []
    for name, nargs, line in calls:
        fn = getattr(rt, name, None)
        if fn is None:
            bad.append(f"_cuda.py:{line}: {name} not in cuda-python")
            continue
        try:
            inspect.signature(fn).bind(*range(nargs))
        except TypeError as exc:
            bad.append(f"_cuda.py:{line}: {name} with {nargs} args: {exc}")
    assert bad == []
    names = {name for name, _, _ in calls}
    # cudaGraphInstantiate's signature differs between cuda-python 11.x and 12+: never used
    assert "cudaGraphInstantiate" not in names and "cudaGraphInstantiateWithFlags" in names


def test_cudart_enums_and_constants_exist() -> None:
    rt = real_cudart()
    tree = ast.parse((REPO / "edge_detect/backends/_cuda.py").read_text())
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            text = ast.unparse(node)
            for root in ("runtime().", "rt."):
                if text.startswith(root) and text.count(".") - root.count(".") <= 1:
                    chains.add(text[len(root):])
    assert {"cudaStreamNonBlocking", "cudaError_t.cudaSuccess", "cudaMemcpyKind.cudaMemcpyHostToDevice",
            "cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal"} <= chains
    missing = []
    for chain in chains:
        obj = rt
        for part in chain.split("."):
            if not hasattr(obj, part):
                missing.append(chain)
                break
            obj = getattr(obj, part)
    assert missing == []
    from edge_detect.backends._cuda import _DRIVER_HINTS

    assert all(hasattr(rt.cudaError_t, name) for name in _DRIVER_HINTS)
