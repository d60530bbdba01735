"""Build hook: ship the editable top-level ``configs/`` and ``weights/manifest.yaml`` inside the wheel.

The repository keeps them at the top level (that is where they are edited and what the repo shows); a wheel
gets a copy under ``edge_detect/_resources/``, which :func:`edge_detect.paths.resource_path` reads first. An
editable install copies nothing: it reads the repository's files directly. All metadata is in setup.cfg.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
RESOURCES = (("configs",), ("weights", "manifest.yaml"))  # relative to the repository root


class BuildPyWithResources(build_py):
    """``build_py`` that also copies :data:`RESOURCES` into ``<build_lib>/edge_detect/_resources/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "edge_detect" / "_resources"
        for parts in RESOURCES:
            src, dst = HERE.joinpath(*parts), target.joinpath(*parts)
            if not src.exists():
                raise FileNotFoundError(f"resource {src} is missing from the source tree")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithResources})
