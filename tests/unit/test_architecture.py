"""The package floors and module sizes that docs/architecture.md states, checked on the source.

Floors, bottom up: a package imports only packages on its own floor or below (imports inside
functions count too: a lazy import is still a dependency). Top-level modules of ``scribmed``
(``__main__``, ``demo``, ``predict``) are faces on the top floor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "scribmed"

FLOORS: dict[str, int] = {
    "data": 0, "runtime": 0,
    "transforms": 1, "networks": 1, "losses": 1, "metrics": 1,
    "sam": 2,
    "training": 3,
    "recipes": 4,
    "crossval": 5, "evaluation": 5,
    "predict": 6, "cli": 6, "bundles": 6, "demo": 6, "__main__": 6, "__init__": 6,
}
MAX_LINES = 500


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """The scribmed packages ``path`` imports (absolute imports; the first name after ``scribmed``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] if node.module == "scribmed" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "scribmed" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_floor():
    assert {_package(p) for p in MODULES} <= set(FLOORS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_from_a_higher_floor(path: Path):
    own = FLOORS[_package(path)]
    higher = sorted(pkg for pkg in _imports(path) if FLOORS.get(pkg, 0) > own)
    assert not higher, f"{path.relative_to(SRC)} (floor {own}) imports {higher} from a higher floor"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(SRC)} has {lines} lines (at most {MAX_LINES})"
