"""Weak labels per instance simulated from an image's instance map: :func:`make_instance_weak`.

One image's :class:`~scribmed.data.instance_weak_labels.InstanceWeakLabel` of a kind, derived from
its instance map ``(H, W)`` (0 background, ``k > 0`` instance ``k``):

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

Every draw comes from :func:`~scribmed.data.weak_conversion.case_rng` ``(seed, key)`` (key = the
case id): the same seed and key give the same label in any order and process.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from scribmed.data.instance_weak_labels import (
    BACKGROUND_STROKE,
    INSTANCE_WEAK_KINDS,
    InstanceWeakLabel,
    _is_int,
)
from scribmed.data.validation import as_integer_labels
from scribmed.data.weak_conversion import case_rng, jitter_box

POINT_MODES = ("center", "random")
#: Largest share of an instance's pixels its stroke covers.
MAX_STROKE_SHARE = 0.3
_CROSS = ndi.generate_binary_structure(2, 1)


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


__all__ = [
    "as_instance_map",
    "make_instance_weak",
]
