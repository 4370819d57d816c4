"""Weak-label types and their on-disk format (box and point JSON files, the supervision manifest).

A case's *training supervision* is one of :data:`SUPERVISION_TYPES`:

- ``full``: the case's label mask; ``scribble``: the case's scribble array; ``none``: unlabeled.
  These live in the case's arrays (``case.label`` / ``case.scribble``), no extra file.
- ``box``: per slice and class, one or more boxes ``(x0, y0, x1, y1)``;
- ``point``: per slice and class, positive points ``(x, y)`` and optional negatives.
  These are a :class:`WeakLabel`, stored as ``weak/<case>.json``.

Coordinates are pixels of the ``(slices, H, W)`` volume: ``x`` is the column (``0 <= x < W``),
``y`` the row (``0 <= y < H``), ``z`` the slice index. Box corners are inclusive: ``x1``/``y1``
is the last pixel inside, as MedSAM builds boxes from a mask's min/max indices, so the box
covers ``array[z, y0:y1 + 1, x0:x1 + 1]``. A negative point of class ``k`` is a pixel that is
not ``k``.

File schema ``scribmed.weak/1``::

    {"schema": "scribmed.weak/1", "case_id": "case_a", "type": "box", "shape": [S, H, W],
     "slices": {"<z>": {"<class>": {"boxes": [[x0, y0, x1, y1], ...]}}}}
    # type "point": {"<class>": {"points": [[x, y], ...], "negatives": [[x, y], ...]}}

Dataset manifest ``supervision.json`` (schema ``scribmed.supervision/1``)::

    {"schema": "scribmed.supervision/1", "cases": {"<case_id>": "box", ...}}

Every malformed input is a one-line :class:`~scribmed.data.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_write_text

SUPERVISION_TYPES = ("full", "box", "point", "scribble", "none")
#: The supervision types stored as a weak-label file (the others live in the case's arrays).
WEAK_FILE_TYPES = ("box", "point")
WEAK_SCHEMA = "scribmed.weak/1"
SUPERVISION_SCHEMA = "scribmed.supervision/1"

Box = tuple[int, int, int, int]
Point = tuple[int, int]


@dataclass
class PointSet:
    """Points of one class on one slice: ``positive`` pixels are the class, ``negative`` are not.

    Both are lists of ``(x, y)`` pixel coordinates (x = column, y = row).
    """

    positive: list[Point] = field(default_factory=list)
    negative: list[Point] = field(default_factory=list)


@dataclass
class WeakLabel:
    """The box or point annotation of one case.

    Attributes:
        kind: ``"box"`` or ``"point"`` (:data:`WEAK_FILE_TYPES`).
        shape: ``(S, H, W)`` of the case's image.
        boxes: ``{z: {class: [(x0, y0, x1, y1), ...]}}``, inclusive pixel corners (``kind="box"``).
        points: ``{z: {class: PointSet}}`` (``kind="point"``).
        case_id: the case it annotates (recorded in the file).
    """

    kind: str
    shape: tuple[int, int, int]
    boxes: dict[int, dict[int, list[Box]]] = field(default_factory=dict)
    points: dict[int, dict[int, PointSet]] = field(default_factory=dict)
    case_id: str = ""

    def slices(self) -> list[int]:
        """Sorted slice indices that carry at least one class entry."""
        table = self.boxes if self.kind == "box" else self.points
        return sorted(z for z, per_class in table.items() if per_class)

    def classes(self) -> list[int]:
        """Sorted class values annotated on any slice."""
        table = self.boxes if self.kind == "box" else self.points
        return sorted({k for per_class in table.values() for k in per_class})

    def box_mask(self, z: int, k: int) -> np.ndarray:
        """Boolean ``(H, W)`` union of class ``k``'s boxes on slice ``z`` (all False when none)."""
        mask = np.zeros(self.shape[1:], dtype=bool)
        for x0, y0, x1, y1 in self.boxes.get(z, {}).get(k, []):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return mask

    def point_map(self, z: int, ignore_index: int) -> np.ndarray:
        """Int64 ``(H, W)`` map for partial cross-entropy: class value at positive points of slice
        ``z``, ``ignore_index`` elsewhere (negatives are not drawn). Classes are written in
        ascending order, so a pixel claimed by two classes keeps the larger value."""
        out = np.full(self.shape[1:], ignore_index, dtype=np.int64)
        for k in sorted(self.points.get(z, {})):
            for x, y in self.points[z][k].positive:
                out[y, x] = k
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``scribmed.weak/1`` document (slices and classes in ascending order)."""
        slices: dict[str, dict[str, Any]] = {}
        if self.kind == "box":
            for z in sorted(self.boxes):
                entry = {str(k): {"boxes": [list(b) for b in self.boxes[z][k]]} for k in sorted(self.boxes[z])}
                if entry:
                    slices[str(z)] = entry
        else:
            for z in sorted(self.points):
                entry = {}
                for k in sorted(self.points[z]):
                    ps = self.points[z][k]
                    item: dict[str, Any] = {"points": [list(p) for p in ps.positive]}
                    if ps.negative:
                        item["negatives"] = [list(p) for p in ps.negative]
                    entry[str(k)] = item
                if entry:
                    slices[str(z)] = entry
        return {"schema": WEAK_SCHEMA, "case_id": self.case_id, "type": self.kind,
                "shape": [int(s) for s in self.shape], "slices": slices}

    @classmethod
    def from_json(
        cls,
        data: Any,
        class_map: Optional[ClassMap] = None,
        shape: Optional[Sequence[int]] = None,
        source: str | Path = "<weak label>",
    ) -> "WeakLabel":
        """Parse and check a ``scribmed.weak/1`` document; errors name ``source``.

        Args:
            data: the parsed JSON.
            class_map: when given, every class must be one of its foreground classes.
            shape: the image's ``(S, H, W)``; the file's shape must equal it.
            source: the file name for error messages.
        """
        if not isinstance(data, dict):
            raise DataError(source, "must hold a JSON object")
        schema = data.get("schema")
        if schema != WEAK_SCHEMA:
            if isinstance(schema, str) and schema.startswith("scribmed.weak/"):
                raise DataError(source, f"unsupported schema version {schema!r} (this scribmed reads {WEAK_SCHEMA})")
            raise DataError(source, f"unknown schema {schema!r} (expected {WEAK_SCHEMA!r})")
        kind = data.get("type")
        if kind not in WEAK_FILE_TYPES:
            raise DataError(source, f"unknown weak-label type {kind!r} (a weak-label file holds 'box' or 'point')")
        case_id = data.get("case_id")
        if not isinstance(case_id, str) or not case_id:
            raise DataError(source, "\"case_id\" must be a non-empty string")
        raw_shape = data.get("shape")
        if not (isinstance(raw_shape, list) and len(raw_shape) == 3
                and all(_is_int(s) and s > 0 for s in raw_shape)):
            raise DataError(source, f"\"shape\" must be [S, H, W] of positive integers, got {raw_shape!r}")
        raw_slices = data.get("slices", {})
        if not isinstance(raw_slices, dict):
            raise DataError(source, "\"slices\" must map slice indices to class entries")
        weak = cls(kind, tuple(raw_shape), case_id=case_id)  # type: ignore[arg-type]
        for zkey, per_class in raw_slices.items():
            z = _key_int(zkey, "slice index", source)
            if not isinstance(per_class, dict):
                raise DataError(source, f"slice {zkey}: must map class values to entries")
            for kkey, entry in per_class.items():
                k = _key_int(kkey, "class", source)
                where = f"slice {z} class {k}"
                if kind == "box":
                    weak.boxes.setdefault(z, {})[k] = _parse_boxes(entry, where, source)
                else:
                    weak.points.setdefault(z, {})[k] = _parse_points(entry, where, source)
        check_weak_label(weak, source, class_map=class_map, shape=shape)
        return weak


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key_int(key: str, what: str, source: str | Path) -> int:
    try:
        value = int(key)
    except ValueError:
        raise DataError(source, f"{what} {key!r} is not an integer") from None
    if str(value) != key.strip():
        raise DataError(source, f"{what} {key!r} is not an integer")
    return value


def _coords(value: Any, n: int, what: str, where: str, source: str | Path) -> tuple[int, ...]:
    if not (isinstance(value, list) and len(value) == n and all(_is_int(v) for v in value)):
        raise DataError(source, f"{where}: a {what} must be {n} integers, got {value!r}")
    return tuple(value)


def _entry(entry: Any, allowed: tuple[str, ...], where: str, source: str | Path) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise DataError(source, f"{where}: must be an object with {' / '.join(allowed)}")
    extra = sorted(set(entry) - set(allowed))
    if extra:
        raise DataError(source, f"{where}: unexpected key(s) {', '.join(extra)} (expected {' / '.join(allowed)})")
    for key, value in entry.items():
        if not isinstance(value, list):
            raise DataError(source, f"{where}: {key!r} must be a list")
    return entry


def _parse_boxes(entry: Any, where: str, source: str | Path) -> list[Box]:
    entry = _entry(entry, ("boxes",), where, source)
    return [_coords(b, 4, "box [x0, y0, x1, y1]", where, source) for b in entry.get("boxes", [])]  # type: ignore[misc]


def _parse_points(entry: Any, where: str, source: str | Path) -> PointSet:
    entry = _entry(entry, ("points", "negatives"), where, source)
    pos = [_coords(p, 2, "point [x, y]", where, source) for p in entry.get("points", [])]
    neg = [_coords(p, 2, "point [x, y]", where, source) for p in entry.get("negatives", [])]
    return PointSet(pos, neg)  # type: ignore[arg-type]


def check_weak_label(
    weak: WeakLabel,
    source: str | Path,
    class_map: Optional[ClassMap] = None,
    shape: Optional[Sequence[int]] = None,
) -> None:
    """Raise a :class:`DataError` naming ``source`` when ``weak`` is inconsistent.

    Checks: kind, shape (against ``shape`` when given), slice indices inside the volume, classes
    in ``class_map`` (when given) and never the background 0 for boxes or positive points,
    boxes inside the image with ``x0 <= x1`` and ``y0 <= y1``, points inside the image.
    """
    if weak.kind not in WEAK_FILE_TYPES:
        raise DataError(source, f"unknown weak-label type {weak.kind!r} (a weak-label file holds 'box' or 'point')")
    s, h, w = (int(v) for v in weak.shape)
    if shape is not None and tuple(int(v) for v in shape) != (s, h, w):
        raise DataError(source, f"weak-label shape {(s, h, w)} does not match image shape {tuple(int(v) for v in shape)}")
    table: Mapping[int, Mapping[int, Any]] = weak.boxes if weak.kind == "box" else weak.points
    other = weak.points if weak.kind == "box" else weak.boxes
    if any(other.values()):
        raise DataError(source, f"a {weak.kind} label must not hold {'points' if weak.kind == 'box' else 'boxes'}")
    known = None if class_map is None else set(class_map.names)
    for z, per_class in table.items():
        if not 0 <= z < s:
            raise DataError(source, f"slice index {z} is outside the volume (0..{s - 1})")
        for k, entry in per_class.items():
            where = f"slice {z} class {k}"
            if known is not None and k not in known:
                raise DataError(source, f"{where}: class {k} is not in the class map {sorted(known)}")
            if weak.kind == "box":
                if k == 0 and entry:
                    raise DataError(source, f"{where}: the background class 0 cannot have boxes")
                for x0, y0, x1, y1 in entry:
                    if x0 > x1 or y0 > y1:
                        raise DataError(source, f"{where}: box {[x0, y0, x1, y1]} has x0 > x1 or y0 > y1")
                    if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h:
                        raise DataError(source, f"{where}: box {[x0, y0, x1, y1]} is outside the image "
                                                f"(W {w}, H {h}; x1 < W and y1 < H, inclusive corners)")
            else:
                if k == 0 and entry.positive:
                    raise DataError(source, f"{where}: the background class 0 cannot have positive points")
                for x, y in [*entry.positive, *entry.negative]:
                    if not (0 <= x < w and 0 <= y < h):
                        raise DataError(source, f"{where}: point {[x, y]} is outside the image (W {w}, H {h})")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "missing JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON: {exc.msg} (line {exc.lineno})") from None


def read_weak_label(
    path: str | Path,
    class_map: Optional[ClassMap] = None,
    shape: Optional[Sequence[int]] = None,
    kind: Optional[str] = None,
) -> WeakLabel:
    """Read and check ``weak/<case>.json``.

    Args:
        path: the file.
        class_map: the dataset's classes (every annotated class must be one of them).
        shape: the image's ``(S, H, W)``; a file on another grid is refused.
        kind: the expected type (e.g. from ``supervision.json``); another type is refused.

    Raises:
        DataError: ``<path>: <problem>`` for every malformed input.
    """
    path = Path(path)
    weak = WeakLabel.from_json(_read_json(path), class_map, shape, source=path)
    if kind is not None and weak.kind != kind:
        raise DataError(path, f"holds {weak.kind} labels but the case is supervised by {kind}")
    return weak


def write_weak_label(path: str | Path, weak: WeakLabel) -> Path:
    """Write ``weak`` as ``scribmed.weak/1`` JSON (checked first, published atomically)."""
    path = Path(path)
    if not weak.case_id:
        raise ValueError("a weak label needs its case_id to be written")
    check_weak_label(weak, path)
    return atomic_write_text(path, _dumps(weak.to_json()))


def _dumps(doc: Mapping[str, Any]) -> str:
    """The document with one line per slice (readable and diffable; plain JSON)."""
    head = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k != "slices")
    rows = [f"  {json.dumps(z)}: {json.dumps(entry)}" for z, entry in doc["slices"].items()]
    body = "{}" if not rows else "{\n" + ",\n".join(rows) + "\n }"
    return "{" + head + ",\n \"slices\": " + body + "}\n"


def _check_type(value: Any, case_id: str, source: str | Path) -> str:
    if value not in SUPERVISION_TYPES:
        raise DataError(source, f"case {case_id}: unknown supervision type {value!r} "
                                f"(known: {', '.join(SUPERVISION_TYPES)})")
    return value


def read_supervision(path: str | Path, case_ids: Optional[Iterable[str]] = None) -> dict[str, str]:
    """Read ``supervision.json``: case id -> supervision type.

    Args:
        path: the manifest.
        case_ids: the dataset's cases; a manifest naming any other case is refused. Cases the
            manifest does not list have no stated supervision.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "must hold a JSON object")
    schema = data.get("schema")
    if schema != SUPERVISION_SCHEMA:
        if isinstance(schema, str) and schema.startswith("scribmed.supervision/"):
            raise DataError(path, f"unsupported schema version {schema!r} (this scribmed reads {SUPERVISION_SCHEMA})")
        raise DataError(path, f"unknown schema {schema!r} (expected {SUPERVISION_SCHEMA!r})")
    cases = data.get("cases")
    if not isinstance(cases, dict):
        raise DataError(path, "\"cases\" must map case ids to supervision types")
    mapping = {str(cid): _check_type(kind, str(cid), path) for cid, kind in cases.items()}
    if case_ids is not None:
        absent = sorted(set(mapping) - set(case_ids))
        if absent:
            shown = ", ".join(absent[:5]) + (f", ... (+{len(absent) - 5} more)" if len(absent) > 5 else "")
            raise DataError(path, f"names {len(absent)} case(s) absent from the dataset: {shown}")
    return mapping


def write_supervision(path: str | Path, mapping: Mapping[str, str]) -> Path:
    """Write ``supervision.json`` (cases sorted; types checked; atomic)."""
    path = Path(path)
    cases = {str(cid): _check_type(kind, str(cid), path) for cid, kind in sorted(mapping.items())}
    return atomic_write_text(path, json.dumps({"schema": SUPERVISION_SCHEMA, "cases": cases}, indent=2) + "\n")


__all__ = [
    "SUPERVISION_SCHEMA",
    "SUPERVISION_TYPES",
    "WEAK_FILE_TYPES",
    "WEAK_SCHEMA",
    "PointSet",
    "WeakLabel",
    "check_weak_label",
    "read_supervision",
    "read_weak_label",
    "write_supervision",
    "write_weak_label",
]
