"""Weak labels per instance (points, boxes, scribbles, coarse masks, tags): the label and its JSON.

The instance-level recipes (SeSAM, WISH, S4M on DSB2018 nuclei) learn from one weak
label per image, of one of :data:`INSTANCE_WEAK_KINDS` (``point``, ``box``, ``scribble``,
``coarse``, ``tag``, ``full``), over the image's instance map ``(H, W)`` (0 background, ``k > 0``
instance ``k``; ids need not be contiguous and every dictionary below is keyed by them). They are
simulated from the instance map by :mod:`scribmed.data.instance_weak_simulation`; the per-image
mix of kinds is :mod:`scribmed.data.instance_weak_mix`.

Conventions (as :mod:`scribmed.data.weak_labels`): points are ``(x, y)`` = (column, row) pixels;
boxes ``(x0, y0, x1, y1)`` with **inclusive** corners (the box covers ``[y0:y1 + 1, x0:x1 + 1]``);
a scribble holds 0 unlabeled, ``k`` a stroke inside instance ``k`` and
:data:`BACKGROUND_STROKE` (-1) a background stroke.

JSON (schema ``scribmed.instance_weak/1``; masks run-length encoded in raster order as
``[value, length, value, length, ...]``)::

    {"schema": "scribmed.instance_weak/1", "case_id": "img1", "kind": "point", "shape": [H, W],
     "count": 3, "points": {"1": [[x, y], ...], ...}}
    # "box": "boxes": {"1": [x0, y0, x1, y1], ...};  scribble / coarse / full: "mask": {"rle": [...]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scribmed.data.errors import DataError

INSTANCE_WEAK_KINDS = ("point", "box", "scribble", "coarse", "tag", "full")
#: Kinds whose label is a mask ``(H, W)``.
MASK_KINDS = ("scribble", "coarse", "full")
INSTANCE_WEAK_SCHEMA = "scribmed.instance_weak/1"
#: Scribble value of a background stroke (0 = unlabeled, k > 0 = a stroke inside instance k).
BACKGROUND_STROKE = -1


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _rle(mask: np.ndarray) -> list[int]:
    """Raster-order run-length code ``[value, length, ...]`` of an integer array."""
    flat = mask.ravel()
    if flat.size == 0:
        return []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return np.stack([flat[starts].astype(np.int64), lengths], axis=1).ravel().tolist()


def _unrle(code: Any, shape: tuple[int, int], source: str | Path) -> np.ndarray:
    if not (isinstance(code, list) and len(code) % 2 == 0 and all(_is_int(v) for v in code)):
        raise DataError(source, "\"mask\" must be {\"rle\": [value, length, ...]} with integers")
    pairs = np.asarray(code, dtype=np.int64).reshape(-1, 2)
    if (pairs[:, 1] <= 0).any() or int(pairs[:, 1].sum()) != shape[0] * shape[1]:
        raise DataError(source, f"mask run lengths must be positive and sum to H * W = {shape[0] * shape[1]}")
    return np.repeat(pairs[:, 0], pairs[:, 1]).astype(np.int32).reshape(shape)


@dataclass(eq=False)
class InstanceWeakLabel:
    """One image's weak label per instance (see the module docstring for the conventions).

    Attributes:
        kind: one of :data:`INSTANCE_WEAK_KINDS`.
        shape: ``(H, W)`` of the image.
        count: number of instances in the image (every kind carries it; a tag carries only it).
        points: ``{instance id: int64 (k, 2) array of (x, y)}`` (``kind="point"``).
        boxes: ``{instance id: int64 (4,) array (x0, y0, x1, y1)}``, inclusive (``kind="box"``).
        mask: int32 ``(H, W)`` for the mask kinds: scribble (0 unlabeled, ``k`` a stroke inside
            instance ``k``, -1 a background stroke), coarse (coarse mask ids, 0 elsewhere),
            full (the instance map); ``None`` otherwise.
        case_id: the image it annotates (the seeding key).
    """

    kind: str
    shape: tuple[int, int]
    count: int
    points: dict[int, np.ndarray] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    mask: Optional[np.ndarray] = None
    case_id: str = ""

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.points = {int(k): np.asarray(v, dtype=np.int64) for k, v in sorted(self.points.items())}
        self.boxes = {int(k): np.asarray(v, dtype=np.int64) for k, v in sorted(self.boxes.items())}
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=np.int32)
        _check(self, "<instance weak label>")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstanceWeakLabel):
            return NotImplemented
        same_arrays = lambda a, b: a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # noqa: E731
        return ((self.kind, self.shape, self.count, self.case_id) == (other.kind, other.shape, other.count, other.case_id)
                and same_arrays(self.points, other.points) and same_arrays(self.boxes, other.boxes)
                and ((self.mask is None and other.mask is None)
                     or (self.mask is not None and other.mask is not None and np.array_equal(self.mask, other.mask))))

    def point_map(self) -> np.ndarray:
        """Int32 ``(H, W)``: the instance id at each point pixel, 0 elsewhere."""
        out = np.zeros(self.shape, dtype=np.int32)
        for k, pts in self.points.items():
            out[pts[:, 1], pts[:, 0]] = k
        return out

    def box_map(self) -> np.ndarray:
        """Int32 ``(H, W)``: the instance id inside each box (ascending ids, later boxes over earlier)."""
        out = np.zeros(self.shape, dtype=np.int32)
        for k, (x0, y0, x1, y1) in self.boxes.items():
            out[y0 : y1 + 1, x0 : x1 + 1] = k
        return out

    def regions(self) -> np.ndarray:
        """Int32 ``(H, W)`` per-instance weak region W of SeSAM's coverage / compatibility test:
        point pixels, box insides, instance strokes (background strokes dropped), coarse or
        full masks; all 0 for a tag."""
        if self.kind == "point":
            return self.point_map()
        if self.kind == "box":
            return self.box_map()
        if self.mask is None:
            return np.zeros(self.shape, dtype=np.int32)
        return np.where(self.mask > 0, self.mask, 0).astype(np.int32)

    def to_json(self) -> dict[str, Any]:
        """The ``scribmed.instance_weak/1`` document (ids ascending; masks run-length encoded)."""
        out: dict[str, Any] = {"schema": INSTANCE_WEAK_SCHEMA, "case_id": self.case_id, "kind": self.kind,
                               "shape": list(self.shape), "count": int(self.count)}
        if self.points:
            out["points"] = {str(k): v.tolist() for k, v in self.points.items()}
        if self.boxes:
            out["boxes"] = {str(k): v.tolist() for k, v in self.boxes.items()}
        if self.mask is not None:
            out["mask"] = {"rle": _rle(self.mask)}
        return out

    @classmethod
    def from_json(cls, data: Any, source: str | Path = "<instance weak label>") -> "InstanceWeakLabel":
        """Parse and check a ``scribmed.instance_weak/1`` document; errors name ``source``."""
        if not isinstance(data, dict):
            raise DataError(source, "must hold a JSON object")
        if data.get("schema") != INSTANCE_WEAK_SCHEMA:
            raise DataError(source, f"unknown schema {data.get('schema')!r} (expected {INSTANCE_WEAK_SCHEMA!r})")
        shape = data.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(s) and s > 0 for s in shape)):
            raise DataError(source, f"\"shape\" must be [H, W] of positive integers, got {shape!r}")
        tables: dict[str, dict[int, np.ndarray]] = {}
        for name, width in (("points", 2), ("boxes", 4)):
            raw = data.get(name, {})
            if not isinstance(raw, dict):
                raise DataError(source, f"\"{name}\" must map instance ids to coordinates")
            table = {}
            for key, value in raw.items():
                if not (isinstance(key, str) and key.isdigit()):
                    raise DataError(source, f"{name}: instance id {key!r} is not a positive integer")
                flat = np.ravel(value) if isinstance(value, list) else None
                if flat is None or flat.size == 0 or flat.size % width or not all(_is_int(v) for v in flat.tolist()):
                    raise DataError(source, f"{name} of instance {key}: must be integer coordinates, got {value!r}")
                table[int(key)] = flat.astype(np.int64).reshape(-1, 2) if width == 2 else flat.astype(np.int64)
            tables[name] = table
        mask = None
        if data.get("mask") is not None:
            raw_mask = data["mask"]
            mask = _unrle(raw_mask.get("rle") if isinstance(raw_mask, dict) else None, tuple(shape), source)
        count, case_id = data.get("count"), data.get("case_id", "")
        if not _is_int(count):
            raise DataError(source, f"\"count\" must be an integer, got {count!r}")
        if not isinstance(case_id, str):
            raise DataError(source, "\"case_id\" must be a string")
        try:
            return cls(str(data.get("kind")), tuple(shape), int(count), tables["points"], tables["boxes"],  # type: ignore[arg-type]
                       mask, case_id)
        except DataError as err:
            raise DataError(source, err.problem) from None


def _check(weak: InstanceWeakLabel, source: str | Path) -> None:
    """Raise a DataError naming ``source`` when ``weak`` breaks its kind's conventions."""
    if weak.kind not in INSTANCE_WEAK_KINDS:
        raise DataError(source, f"unknown instance weak-label kind {weak.kind!r} (known: {', '.join(INSTANCE_WEAK_KINDS)})")
    if len(weak.shape) != 2 or min(weak.shape) <= 0:
        raise DataError(source, f"shape must be (H, W) of positive integers, got {weak.shape}")
    if not _is_int(weak.count) or weak.count < 0:
        raise DataError(source, f"count must be an integer >= 0, got {weak.count!r}")
    h, w = weak.shape
    for name, table, allowed in (("points", weak.points, "point"), ("boxes", weak.boxes, "box")):
        if table and weak.kind != allowed:
            raise DataError(source, f"a {weak.kind} label carries no {name}")
        if len(table) > weak.count or any(k <= 0 for k in table):
            raise DataError(source, f"{name} of {len(table)} instances for count {weak.count} (ids must be > 0)")
    for k, pts in weak.points.items():
        if pts.ndim != 2 or pts.shape[1] != 2 or not len(pts):
            raise DataError(source, f"points of instance {k} must be (n, 2) (x, y), got shape {pts.shape}")
        if (pts < 0).any() or (pts[:, 0] >= w).any() or (pts[:, 1] >= h).any():
            raise DataError(source, f"a point of instance {k} is outside the image (W {w}, H {h})")
    for k, box in weak.boxes.items():
        if box.shape != (4,):
            raise DataError(source, f"box of instance {k} must be (x0, y0, x1, y1), got shape {box.shape}")
        x0, y0, x1, y1 = box.tolist()
        if not (0 <= x0 <= x1 < w and 0 <= y0 <= y1 < h):
            raise DataError(source, f"box {box.tolist()} of instance {k} is not inside the image (W {w}, H {h}; inclusive)")
    if weak.kind in MASK_KINDS:
        if weak.mask is None or weak.mask.shape != weak.shape:
            got = None if weak.mask is None else weak.mask.shape
            raise DataError(source, f"a {weak.kind} label needs an (H, W) = {weak.shape} mask, got {got}")
        low = BACKGROUND_STROKE if weak.kind == "scribble" else 0
        if weak.mask.size and int(weak.mask.min()) < low:
            raise DataError(source, f"{weak.kind} mask values must be >= {low}")
        ids = np.unique(weak.mask[weak.mask > 0])
        if ids.size > weak.count:
            raise DataError(source, f"{weak.kind} mask holds {ids.size} instance ids but count is {weak.count}")
    elif weak.mask is not None:
        raise DataError(source, f"a {weak.kind} label carries no mask")


__all__ = [
    "BACKGROUND_STROKE",
    "INSTANCE_WEAK_KINDS",
    "INSTANCE_WEAK_SCHEMA",
    "InstanceWeakLabel",
]
