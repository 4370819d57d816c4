"""Weak labels per instance (points, boxes, scribbles, coarse masks, tags) simulated from an instance map.

The instance-level recipes (SeSAM, WISH, S4M on DSB2018 nuclei, DESIGN §4.4) learn from one weak
label per image, derived here from the image's instance map ``(H, W)`` (0 background, ``k > 0``
instance ``k``; ids need not be contiguous and every dictionary below is keyed by them):

- ``point``: ``points_per_instance`` pixels per instance. ``"center"``: the first is the pixel
  deepest inside the instance (largest Euclidean distance transform, image edges count as
  border; ties by raster order), further ones spread by farthest-point selection among the
  pixels at least half as deep (deterministic); ``"random"``: distinct pixels drawn uniformly.
- ``box``: the tight box, each side moved outward by ``box_margin`` px (an int, or a ``(lo, hi)``
  range drawn per side as :func:`~scribmed.data.weak_conversion.jitter_box` does), clipped.
- ``scribble``: a 1-px stroke per instance along a chord through its deepest pixel, roughly along
  its long axis, inside the instance eroded by 1 px (when that leaves enough of it), covering at
  most 30 % of the instance (thickened to 2-3 px where a 1-px chord is under 3 %); plus a few
  slightly curved background strokes (value -1) at least ``background_margin`` px from every
  instance and 2 px from the image edge.
- ``coarse``: SeSAM's coarse masks: each instance dilated or eroded (equal odds) by 1-3 px
  (Euclidean); a dilation grows into background only, never into another instance or an earlier
  instance's coarse mask; an erosion that would empty it keeps the deepest pixels.
- ``tag``: the number of instances only (WISH's image-level tag); ``full``: the instance map.

Conventions (as :mod:`scribmed.data.weak_labels`): points are ``(x, y)`` = (column, row) pixels;
boxes ``(x0, y0, x1, y1)`` with **inclusive** corners (the box covers ``[y0:y1 + 1, x0:x1 + 1]``).
Every draw comes from :func:`~scribmed.data.weak_conversion.case_rng` ``(seed, key)`` (key = the
case id): the same seed and key give the same label in any order and process.

:func:`assign_weak_kinds` gives each image of a dataset one kind in given ratios (WISH's
heterogeneous mix), by largest-remainder counts over a seeded shuffle.

JSON (schema ``scribmed.instance_weak/1``; masks run-length encoded in raster order as
``[value, length, value, length, ...]``)::

    {"schema": "scribmed.instance_weak/1", "case_id": "img1", "kind": "point", "shape": [H, W],
     "count": 3, "points": {"1": [[x, y], ...], ...}}
    # "box": "boxes": {"1": [x0, y0, x1, y1], ...};  scribble / coarse / full: "mask": {"rle": [...]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from scribmed.data.errors import DataError
from scribmed.data.validation import as_integer_labels
from scribmed.data.weak_conversion import case_rng, jitter_box

INSTANCE_WEAK_KINDS = ("point", "box", "scribble", "coarse", "tag", "full")
#: Kinds whose label is a mask ``(H, W)``.
MASK_KINDS = ("scribble", "coarse", "full")
INSTANCE_WEAK_SCHEMA = "scribmed.instance_weak/1"
POINT_MODES = ("center", "random")
#: Scribble value of a background stroke (0 = unlabeled, k > 0 = a stroke inside instance k).
BACKGROUND_STROKE = -1
#: Largest share of an instance's pixels its stroke covers.
MAX_STROKE_SHARE = 0.3
_CROSS = ndi.generate_binary_structure(2, 1)


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


# ------------------------------------------------------------------------------------ simulation


def as_instance_map(instance: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` integer instance map -> int32 ``(H, W)`` (ValueError otherwise)."""
    arr = np.asarray(instance)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"instance map must be (H, W) or (1, H, W), got shape {np.shape(instance)}")
    arr = as_integer_labels("<instance map>", arr, "instance map")
    if arr.size and int(arr.min()) < 0:
        raise ValueError("instance map values must be >= 0 (0 = background)")
    return arr.astype(np.int32)


def _crops(inst: np.ndarray, pad: int) -> list[tuple[int, tuple[slice, slice]]]:
    """``(id, padded bounding-box slice)`` of every instance, ids ascending."""
    h, w = inst.shape
    out = []
    for k, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is not None:
            out.append((k, (slice(max(0, sl[0].start - pad), min(h, sl[0].stop + pad)),
                            slice(max(0, sl[1].start - pad), min(w, sl[1].stop + pad)))))
    return out


def _depth(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest non-mask pixel (outside the crop counts)."""
    return ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _center_points(mask: np.ndarray, n: int) -> np.ndarray:
    """Deepest pixel, then farthest-point picks among pixels at least half as deep: ``(n', 2)`` (row, col)."""
    depth = _depth(mask)
    rows, cols = np.nonzero(depth >= 0.5 * depth.max())
    cand = np.stack([rows, cols], axis=1)
    first = int(np.argmax(depth[rows, cols]))
    chosen = [first]
    nearest = np.hypot(*(cand - cand[first]).T)
    while len(chosen) < min(n, len(cand)):
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.hypot(*(cand - cand[nxt]).T))
    picked = cand[chosen]
    if len(picked) < n:  # fewer deep pixels than asked: add the others, deepest first
        rest_r, rest_c = np.nonzero(mask & (depth < 0.5 * depth.max()))
        order = np.argsort(-depth[rest_r, rest_c], kind="stable")[: n - len(picked)]
        picked = np.concatenate([picked, np.stack([rest_r[order], rest_c[order]], axis=1)])
    return picked


def _largest(mask: np.ndarray) -> np.ndarray:
    comps, n = ndi.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    return comps == int(np.argmax(np.bincount(comps.ravel())[1:])) + 1


def _walk(region: np.ndarray, start: tuple[float, float], angles: np.ndarray) -> list[tuple[int, int]]:
    """Pixels ``(row, col)`` visited from ``start`` in half-pixel steps along ``angles`` until leaving ``region``."""
    h, w = region.shape
    y, x = start
    out: list[tuple[int, int]] = []
    for a in angles:
        r, c = int(round(y)), int(round(x))
        if not (0 <= r < h and 0 <= c < w and region[r, c]):
            break
        if not out or out[-1] != (r, c):
            out.append((r, c))
        y, x = y + 0.5 * math.sin(a), x + 0.5 * math.cos(a)
    return out


def _instance_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stroke inside one instance's crop mask: a chord through its deepest pixel (see module doc)."""
    area = int(mask.sum())
    eroded = _largest(ndi.binary_erosion(mask, structure=_CROSS))
    region = eroded if eroded.sum() >= max(3, 0.2 * area) else mask
    depth = _depth(region)
    cy, cx = np.unravel_index(int(np.argmax(depth)), depth.shape)
    rows, cols = np.nonzero(region)
    cov = np.cov(np.stack([cols, rows]).astype(float)) if rows.size > 1 else np.eye(2)
    theta = 0.5 * math.atan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1]) + float(rng.uniform(-0.35, 0.35))
    steps = np.full(2 * (sum(mask.shape) + 2), theta)
    ahead = _walk(region, (float(cy), float(cx)), steps)
    behind = _walk(region, (float(cy), float(cx)), steps + math.pi)
    path = behind[::-1] + ahead[1:]
    keep = max(1, min(int(round(float(rng.uniform(0.6, 1.0)) * len(path))), int(MAX_STROKE_SHARE * area)))
    start = int(rng.integers(0, len(path) - keep + 1))
    stroke = np.zeros_like(mask)
    for r, c in path[start : start + keep]:
        stroke[r, c] = True
    if stroke.sum() < 0.03 * area:
        thick = ndi.binary_dilation(stroke, structure=_CROSS) & region
        if thick.sum() <= MAX_STROKE_SHARE * area:
            stroke = thick
    return stroke


def _background_strokes(inst: np.ndarray, rng: np.random.Generator, n_range: tuple[int, int],
                        margin: float) -> np.ndarray:
    """Boolean ``(H, W)`` of slightly curved strokes ``>= margin`` px from every instance and 2 px from the edge."""
    h, w = inst.shape
    allowed = ndi.distance_transform_edt(inst == 0) > margin if (inst > 0).any() else np.ones((h, w), bool)
    allowed[:2], allowed[-2:], allowed[:, :2], allowed[:, -2:] = False, False, False, False
    out = np.zeros((h, w), dtype=bool)
    lo, hi = n_range
    for _ in range(int(rng.integers(lo, hi + 1))):
        free = np.flatnonzero(allowed & ~out)
        if free.size == 0:
            break
        r, c = divmod(int(free[int(rng.integers(free.size))]), w)
        length = max(3.0, float(rng.uniform(0.05, 0.15)) * min(h, w))
        angles = float(rng.uniform(0, 2 * math.pi)) + np.cumsum(rng.normal(0.0, 0.04, int(2 * length)))
        for pr, pc in _walk(allowed, (float(r), float(c)), angles):
            out[pr, pc] = True
    return out


def _coarse(inst: np.ndarray, rng: np.random.Generator, px: tuple[int, int]) -> np.ndarray:
    """SeSAM coarse masks: each instance dilated (into free background) or eroded by ``px`` px."""
    lo, hi = px
    out = np.zeros(inst.shape, dtype=np.int32)
    for k, sl in _crops(inst, hi + 1):
        own, crop = inst[sl] == k, out[sl]
        r = int(rng.integers(lo, hi + 1))
        if rng.random() < 0.5:  # dilate
            near = ndi.distance_transform_edt(~own) <= r
            new = own | (near & (inst[sl] == 0) & (crop == 0))
        else:  # erode
            depth = _depth(own)
            new = depth > r
            if not new.any():
                new = own & (depth >= depth.max())
        crop[new & (crop == 0)] = k
    return out


def make_instance_weak(
    instance: np.ndarray,
    kind: str,
    seed: int = 0,
    key: str = "",
    points_per_instance: int = 1,
    point_mode: str = "center",
    box_margin: int | tuple[int, int] = 0,
    *,
    background_strokes: tuple[int, int] = (2, 4),
    background_margin: float = 3.0,
    coarse_px: tuple[int, int] = (1, 3),
) -> InstanceWeakLabel:
    """Simulate one image's weak label of ``kind`` from its instance map (see the module docstring).

    Args:
        instance: ``(H, W)`` or ``(1, H, W)`` integer instance map (0 background).
        kind: one of :data:`INSTANCE_WEAK_KINDS`.
        seed: run seed (>= 0); with ``key`` it seeds :func:`~scribmed.data.weak_conversion.case_rng`.
        key: the case id (so every image draws independently of order).
        points_per_instance: points per instance (``kind="point"``).
        point_mode: ``"center"`` (deepest, then spread) or ``"random"`` (uniform inside).
        box_margin: outward shift (px) of each box side: an int, or a ``(lo, hi)`` range per side.
        background_strokes: inclusive range of the number of background strokes (``scribble``).
        background_margin: least distance (px) of a background stroke from any instance.
        coarse_px: inclusive range of the dilation / erosion radius (``coarse``), SeSAM: 1-3 px.

    Returns:
        An :class:`InstanceWeakLabel` with ``case_id = key``.
    """
    if kind not in INSTANCE_WEAK_KINDS:
        raise ValueError(f"kind must be one of {', '.join(INSTANCE_WEAK_KINDS)}, got {kind!r}")
    if point_mode not in POINT_MODES:
        raise ValueError(f"point_mode must be one of {', '.join(POINT_MODES)}, got {point_mode!r}")
    if points_per_instance < 1:
        raise ValueError(f"points_per_instance must be >= 1, got {points_per_instance}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    margin = (box_margin, box_margin) if _is_int(box_margin) else tuple(box_margin)  # type: ignore[arg-type]
    if len(margin) != 2 or not 0 <= margin[0] <= margin[1]:
        raise ValueError(f"box_margin must be an int >= 0 or (lo, hi) with 0 <= lo <= hi, got {box_margin!r}")
    if not 0 <= coarse_px[0] <= coarse_px[1]:
        raise ValueError(f"coarse_px must be (lo, hi) with 0 <= lo <= hi, got {coarse_px!r}")
    inst = as_instance_map(instance)
    rng = case_rng(int(seed), key)
    crops = _crops(inst, 0)
    points: dict[int, np.ndarray] = {}
    boxes: dict[int, np.ndarray] = {}
    mask: Optional[np.ndarray] = None
    if kind == "point":
        for k, sl in crops:
            own = inst[sl] == k
            if point_mode == "center":
                rc = _center_points(own, points_per_instance)
            else:
                rows, cols = np.nonzero(own)
                idx = rng.choice(rows.size, size=min(points_per_instance, rows.size), replace=False)
                rc = np.stack([rows[idx], cols[idx]], axis=1)
            points[k] = np.stack([rc[:, 1] + sl[1].start, rc[:, 0] + sl[0].start], axis=1)
    elif kind == "box":
        for k, sl in crops:
            tight = (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)
            boxes[k] = np.asarray(jitter_box(tight, inst.shape, margin, rng))  # type: ignore[arg-type]
    elif kind == "scribble":
        mask = np.zeros(inst.shape, dtype=np.int32)
        for k, sl in crops:
            mask[sl][_instance_stroke(inst[sl] == k, rng)] = k
        mask[_background_strokes(inst, rng, background_strokes, background_margin)] = BACKGROUND_STROKE
    elif kind == "coarse":
        mask = _coarse(inst, rng, coarse_px)
    elif kind == "full":
        mask = inst.copy()
    return InstanceWeakLabel(kind, inst.shape, len(crops), points, boxes, mask, key)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- the mix


def check_kind_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Ratios per kind in :data:`INSTANCE_WEAK_KINDS` order, checked: known kinds, finite, >= 0, sum 1 (1e-6)."""
    from scribmed.data.supervision_mix import check_mix

    return check_mix(ratios, INSTANCE_WEAK_KINDS, "weak-label kind")


def kind_counts(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Images per kind out of ``n``: largest-remainder rounding of ``n * ratio`` (ties in kind order)."""
    from scribmed.data.supervision_mix import mix_counts

    return mix_counts(n, ratios, INSTANCE_WEAK_KINDS, "weak-label kind")


def assign_weak_kinds(case_ids: Sequence[str], ratios: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """WISH's heterogeneous mix: one weak-label kind per image, in the given ratios.

    Counts come from :func:`kind_counts`; the sorted ids are shuffled by
    ``numpy.random.default_rng(seed)`` and dealt the kinds in :data:`INSTANCE_WEAK_KINDS` order,
    so the same ids, ratios and seed give the same assignment in any input order.

    Raises:
        ValueError: repeated ids, unknown kinds, negative ratios or ratios not summing to 1.
    """
    unique = sorted(set(case_ids))
    if len(unique) != len(case_ids):
        raise ValueError("case ids must be unique")
    counts = kind_counts(len(unique), ratios)
    order = np.random.default_rng(seed).permutation(len(unique))
    kinds = [t for t in INSTANCE_WEAK_KINDS for _ in range(counts.get(t, 0))]
    return {unique[i]: kind for i, kind in zip(order, kinds)}


__all__ = [
    "BACKGROUND_STROKE",
    "INSTANCE_WEAK_KINDS",
    "INSTANCE_WEAK_SCHEMA",
    "InstanceWeakLabel",
    "as_instance_map",
    "assign_weak_kinds",
    "check_kind_ratios",
    "kind_counts",
    "make_instance_weak",
]
