"""Build hook: ship the top-level ``data_splits/`` and ``bundles/`` inside the wheel as package data.

Everything else is declared in ``pyproject.toml``. The files are copied into
``scribmed/_shipped/`` of the build tree, where :func:`scribmed.runtime.shipped.shipped_dir` finds them
with ``importlib.resources``; run outputs (``runs/``) and caches are left out.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("data_splits", "bundles")
IGNORE = shutil.ignore_patterns("runs", "__pycache__", "*.pyc", ".*")


class BuildPyWithShipped(build_py):
    """``build_py`` plus a copy of the shipped folders into ``scribmed/_shipped/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the source tree
        for name in SHIPPED:
            target = Path(self.build_lib) / "scribmed" / "_shipped" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / name, target, ignore=IGNORE)


setup(cmdclass={"build_py": BuildPyWithShipped})
