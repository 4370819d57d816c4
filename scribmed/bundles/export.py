"""``scribmed bundle list`` / ``scribmed bundle export NAME DIR``: the shipped bundles as folders of the user's.

Like ``monai.bundle download`` for the model zoo: an exported bundle is a copy (configs, docs,
LICENSE, large_files.yml) the user edits, never the installed package. Run outputs and caches are
not copied. The copy is made to stand on its own: every config's ``bundle_root`` is the exported
folder (absolute), the ``bundles/<name>/`` paths of the configs' comments and the README's
commands name that folder, and README links that lead out of the bundle (into scribmed's source
tree) become plain text naming the document.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from scribmed.data.errors import DataError
from scribmed.runtime.shipped import shipped_dir

__all__ = ["bundle_names", "describe_bundles", "export_bundle"]

_IGNORE = shutil.ignore_patterns("runs", "__pycache__", "*.pyc", ".*")

#: ``bundle_root: ...`` lines of a YAML config
_BUNDLE_ROOT = re.compile(r"^bundle_root:.*$", re.MULTILINE)
#: markdown links and images: ``[text](target)`` / ``![alt](target)``
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
#: a URL scheme (``https:``, ``mailto:``): such links are kept
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


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
    source = shipped_dir("bundles") / name
    shutil.copytree(source, tmp, ignore=_IGNORE)
    _make_standalone(tmp, source, name, dest.resolve())
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return dest


def _make_standalone(copy: Path, source: Path, name: str, final: Path) -> None:
    """Point the copy's configs at ``final`` (its folder once renamed) and cut README links out of it."""
    root_line = f"bundle_root: {json.dumps(str(final))}   # the exported folder (scribmed bundle export)"
    for config in sorted((copy / "configs").glob("*.yaml")):
        text = _BUNDLE_ROOT.sub(lambda _: root_line, config.read_text())
        config.write_text(text.replace(f"bundles/{name}/", f"{final}/"))
    for doc in sorted((copy / "docs").rglob("*.md")):
        text = doc.read_text().replace(f"bundles/{name}/", f"{final}/")
        doc.write_text(_outside_links_as_text(text, source / doc.relative_to(copy).parent, source))


def _outside_links_as_text(text: str, doc_dir: Path, bundle_dir: Path) -> str:
    """``text`` (markdown in ``doc_dir`` of the bundle ``bundle_dir``) with every relative link or
    image that leads out of ``bundle_dir`` written as plain text naming the document by its path in
    scribmed's source tree (``docs/recipes.md#section``); links inside the bundle, anchors and URLs
    are kept."""
    tree = bundle_dir.resolve().parent.parent  # <repo>/bundles/<name> (or <package>/_shipped/bundles/<name>)

    def replace(match: re.Match) -> str:
        image, label, target = match.groups()
        if target.startswith(("#", "/")) or _SCHEME.match(target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = Path(os.path.normpath(doc_dir.resolve() / path))
        if resolved == bundle_dir.resolve() or bundle_dir.resolve() in resolved.parents:
            return match.group(0)
        named = Path(os.path.relpath(resolved, tree)).as_posix() + (f"#{anchor}" if anchor else "")
        if image:
            return f"*Figure: {label} (scribmed documentation: `{named}`)*"
        return f"{label} (scribmed documentation: `{named}`)"

    return _LINK.sub(replace, text)
