"""Split files: the JSON format of ``data_splits/``, reading (checked) and writing (atomic).

File format (see ``docs/splits.md``)::

    {"name": "acdc_5fold", "description": "...", "unit": "patient",
     "validation_rule": {"seed": 0, "fraction": 0.1, "min": 1, "how": "..."},
     "folds": [{"train": [...], "val": [...], "test": [...]}, ...]}

:func:`dumps_split` writes one line per id list (diff-friendly); :func:`load_split` names the file
in every error. The committed files are :data:`~scribmed.data.split_protocols.BUILTIN_SPLITS`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scribmed.data.errors import SplitError
from scribmed.data.split_types import (
    VALIDATION_HOW,
    _SUBSETS,
    Fold,
    Split,
    ValidationRule,
    _check_folds,
)
from scribmed.runtime.files import atomic_write_text
from scribmed.runtime.shipped import shipped_dir

#: Where the committed split files live (``<repo>/data_splits``).
SPLITS_DIR = shipped_dir("data_splits")


def dumps_split(split: Split) -> str:
    """JSON with one line per id list: diff-friendly and readable."""
    d = split.to_json()
    lines = ["{"]
    head = [k for k in d if k != "folds"]
    for key in head:
        lines.append(f"  {json.dumps(key)}: {json.dumps(d[key])},")
    lines.append('  "folds": [')
    for i, fold in enumerate(d["folds"]):
        lines.append("    {")
        for j, s in enumerate(_SUBSETS):
            comma = "," if j < len(_SUBSETS) - 1 else ""
            lines.append(f"      {json.dumps(s)}: {json.dumps(fold[s])}{comma}")
        lines.append("    }" + ("," if i < len(d["folds"]) - 1 else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_split(split: Split, path: str | Path) -> Path:
    """Write ``split`` as JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    _check_folds(split, path)
    return atomic_write_text(path, dumps_split(split))


def _id_list(value: Any, where: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SplitError(path, f"{where} must be a list of non-empty patient id strings")
    seen: set[str] = set()
    dups = sorted({v for v in value if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dups:
        raise SplitError(path, f"{where} lists {', '.join(dups)} more than once")
    return tuple(value)


def load_split(path: str | Path) -> Split:
    """Read and check a split file.

    A bare name (``"acdc_5fold"`` or ``"acdc_5fold.json"``) that is not an existing path is looked
    up in ``data_splits/``.

    Raises:
        SplitError: unreadable or malformed JSON, missing keys, wrong types, duplicates, a patient in
            two subsets of a fold or tested in two folds; the message names the file.
    """
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and (SPLITS_DIR / path.with_suffix(".json").name).exists():
        path = SPLITS_DIR / path.with_suffix(".json").name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from scribmed.data.split_protocols import BUILTIN_SPLITS

        known = ", ".join(sorted(BUILTIN_SPLITS))
        raise SplitError(path, f"split file not found (built-in splits: {known})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SplitError(path, f"cannot read split file ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SplitError(path, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise SplitError(path, "top level must be a JSON object with 'name' and 'folds'")
    missing = [k for k in ("name", "folds") if k not in data]
    if missing:
        raise SplitError(path, f"missing key(s): {', '.join(missing)}")
    if not isinstance(data["name"], str) or not data["name"]:
        raise SplitError(path, "'name' must be a non-empty string")
    unit = data.get("unit", "patient")
    if unit != "patient":
        raise SplitError(path, f"'unit' must be 'patient' (splits are by patient), got {unit!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SplitError(path, "'description' must be a string")
    rule = None
    if data.get("validation_rule") is not None:
        r = data["validation_rule"]
        if not isinstance(r, dict):
            raise SplitError(path, "'validation_rule' must be an object")
        try:
            rule = ValidationRule(
                seed=int(r.get("seed", 0)),
                fraction=float(r.get("fraction", 0.1)),
                min_count=int(r.get("min", 1)),
                how=str(r.get("how", VALIDATION_HOW)),
            )
        except (TypeError, ValueError):
            raise SplitError(path, "'validation_rule' seed/min must be integers and fraction a number") from None
    folds_raw = data["folds"]
    if not isinstance(folds_raw, list) or not folds_raw:
        raise SplitError(path, "'folds' must be a non-empty list")
    folds = []
    for k, f in enumerate(folds_raw):
        if not isinstance(f, dict):
            raise SplitError(path, f"fold {k + 1} must be an object with train/val/test")
        absent = [s for s in ("train", "test") if s not in f]
        if absent:
            raise SplitError(path, f"fold {k + 1} is missing key(s): {', '.join(absent)}")
        extra = sorted(set(f) - set(_SUBSETS))
        if extra:
            raise SplitError(path, f"fold {k + 1} has unknown key(s): {', '.join(extra)}")
        folds.append(
            Fold(*(_id_list(f.get(s, []), f"fold {k + 1} {s!r}", path) for s in _SUBSETS))
        )
    split = Split(data["name"], tuple(folds), rule, description, unit, source=path)
    _check_folds(split, path)
    return split


__all__ = [
    "SPLITS_DIR",
    "dumps_split",
    "load_split",
    "save_split",
]
