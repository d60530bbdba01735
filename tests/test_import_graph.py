"""The import graph is one-way: runtime <- deploy <- training.

Every module's imports (module level and inside functions, absolute and relative) are read with :mod:`ast`:
the runtime packages (``backends``, ``stream``, ``sinks``) never import ``edge_detect.deploy`` or
``edge_detect.training``; ``edge_detect.deploy`` never imports ``edge_detect.training``; no runtime module
outside the top layer (``models.py``, ``cli/``, ``__init__``) imports them either. The torch-free TensorRT
builder (``edge_detect.deploy.tensorrt_build``) imports in a subprocess where torch is blocked.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Set

import pytest

from conftest import REPO

PKG = REPO / "edge_detect"
RUNTIME_PACKAGES = ("backends", "stream", "sinks")
# the layer above the backends, allowed to reach the build side (lazily): open_model, the export API, the CLI,
# the lazy API
TOP_LAYER = {"edge_detect", "edge_detect.__main__", "edge_detect.models", "edge_detect.exporter"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # from edge_detect import deploy
    return out


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def _hits(imports: Set[str], world: str) -> Set[str]:
    return {i for i in imports if i == world or i.startswith(world + ".")}


def test_the_parser_sees_function_level_and_relative_imports(tmp_path: Path, monkeypatch) -> None:
    """A probe module in a copy of the package layout under tmp_path (nothing is written into the repository)."""
    probe = tmp_path / "edge_detect" / "backends" / "_import_probe_for_test.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from edge_detect.deploy.tensorrt_build import build_engine\n"
                     "from ..training import model\nfrom edge_detect import deploy\n")
    monkeypatch.setitem(globals(), "REPO", tmp_path)  # module_name() resolves paths against REPO
    assert module_name(probe) == "edge_detect.backends._import_probe_for_test"
    found = imports_of(probe)
    assert {"edge_detect.deploy.tensorrt_build", "edge_detect.training", "edge_detect.deploy"} <= found


def test_runtime_never_imports_deploy_or_training(graph: Dict[str, Set[str]]) -> None:
    runtime = {m: i for m, i in graph.items()
               if not m.startswith(("edge_detect.deploy", "edge_detect.training", "edge_detect.cli"))
               and m not in TOP_LAYER}
    assert any(m.startswith("edge_detect.backends.") for m in runtime)  # the check really covers them
    bad = {m: sorted(_hits(i, "edge_detect.deploy") | _hits(i, "edge_detect.training")) for m, i in runtime.items()}
    assert {m: v for m, v in bad.items() if v} == {}
    strict = [m for m in graph if m.split(".")[1:2] and m.split(".")[1] in RUNTIME_PACKAGES]
    assert len(strict) >= 8


def test_deploy_never_imports_training(graph: Dict[str, Set[str]]) -> None:
    deploy = {m: i for m, i in graph.items() if m.startswith("edge_detect.deploy")}
    assert "edge_detect.deploy.tensorrt_build" in deploy
    assert {m: sorted(_hits(i, "edge_detect.training")) for m, i in deploy.items()
            if _hits(i, "edge_detect.training")} == {}


def test_tensorrt_build_imports_with_torch_blocked() -> None:
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
                return None
        sys.meta_path.insert(0, Block())
        import edge_detect.deploy.tensorrt_build as tb
        import edge_detect.models
        import edge_detect.backends.tensorrt
        assert callable(tb.build_engine)
        print("torch loaded:", any(m.split(".")[0] == "torch" for m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "torch loaded: False"


def test_sinks_and_stream_meet_only_through_the_shared_types(graph: Dict[str, Set[str]]) -> None:
    """``sinks/`` imports nothing from ``stream/`` and vice versa; ``types.py`` and ``events.py`` (where they meet)
    import neither; drawing lives outside ``stream/``."""
    def bad(prefix: str, other: str) -> Dict[str, list]:
        return {m: sorted(_hits(i, other)) for m, i in graph.items() if m.startswith(prefix) and _hits(i, other)}

    assert sum(m.startswith("edge_detect.sinks.") for m in graph) >= 8
    assert bad("edge_detect.sinks", "edge_detect.stream") == {}
    assert bad("edge_detect.stream", "edge_detect.sinks") == {}
    for shared in ("edge_detect.types", "edge_detect.events", "edge_detect.annotate", "edge_detect.urls"):
        assert _hits(graph[shared], "edge_detect.stream") == set(), shared
        assert _hits(graph[shared], "edge_detect.sinks") == set(), shared


def _probes(text: str, where: str) -> list:
    """``getattr``/``hasattr`` calls in ``text`` whose object is named like a detector, a backend or a pipeline."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and node.args:
            target = ast.unparse(node.args[0]).lower()
            if any(word in target for word in ("detector", "pipeline", "backend", "_det")):
                out.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_getattr_probing_of_detector_or_pipeline_in_stream_and_sinks() -> None:
    files = [p for pkg in ("stream", "sinks") for p in (PKG / pkg).rglob("*.py")]
    assert len(files) >= 15
    assert [hit for p in files for hit in _probes(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))] == []
    probe = "getattr(self.detector, 'names', ())\nhasattr(self._pipeline, 'sources')\ngetattr(proc, 'finish', None)\n"
    assert len(_probes(probe, "probe")) == 2  # the check finds what it looks for, and only that
