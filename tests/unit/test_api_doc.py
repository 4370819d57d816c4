"""docs/api.md lists exactly what each package exports (regenerate with ``python docs/make_api.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _make_api():
    spec = importlib.util.spec_from_file_location("make_api", DOCS / "make_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_page_matches_the_exports():
    make_api = _make_api()
    assert (DOCS / "api.md").read_text() == make_api.render(), "docs/api.md is stale: run python docs/make_api.py"


def test_every_listed_name_resolves():
    make_api = _make_api()
    for package in make_api.PACKAGES:
        pkg = importlib.import_module(package)
        for name in getattr(pkg, "__all__", []):
            module = importlib.import_module(make_api.defining_module(package, name))
            assert hasattr(module, name), f"{package}.{name} is not defined in {module.__name__}"
