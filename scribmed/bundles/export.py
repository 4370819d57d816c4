"""``scribmed bundle list`` / ``scribmed bundle export NAME DIR``: the shipped bundles as folders of the user's.

Like ``monai.bundle download`` for the model zoo: an exported bundle is a plain copy (configs,
docs, LICENSE) ready for ``python -m monai.bundle run --bundle_root DIR ...``; the user edits the
copy, never the installed package. Run outputs and caches are not copied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scribmed.data.errors import DataError
from scribmed.runtime.shipped import shipped_dir

__all__ = ["bundle_names", "describe_bundles", "export_bundle"]

_IGNORE = shutil.ignore_patterns("runs", "__pycache__", "*.pyc", ".*")


def bundle_names() -> list[str]:
    """Names of the shipped bundles (folders with ``configs/metadata.json``), sorted."""
    root = shipped_dir("bundles")
    return sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def describe_bundles() -> list[dict[str, str]]:
    """``[{"name", "version", "description"}]`` of every shipped bundle, from its ``metadata.json``."""
    rows = []
    for name in bundle_names():
        meta = json.loads((shipped_dir("bundles") / name / "configs" / "metadata.json").read_text())
        rows.append({"name": name, "version": str(meta.get("version", "")), "description": str(meta.get("name", ""))})
    return rows


def export_bundle(name: str, dest: str | Path) -> Path:
    """Copy the shipped bundle ``name`` into ``dest`` (created; must not exist or be empty).

    Returns:
        ``dest``, to pass as ``--bundle_root``.

    Raises:
        DataError: unknown bundle, or ``dest`` exists and is not an empty folder.
    """
    known = bundle_names()
    if name not in known:
        raise DataError(None, f"no shipped bundle {name!r}; shipped: {', '.join(known)}")
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(dest, "export target exists and is not an empty folder; choose a new folder")
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(shipped_dir("bundles") / name, tmp, ignore=_IGNORE)
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return dest
