"""Binary overlap and surface metrics: fast drop-in replacements for ``medpy.metric.binary``.

``dc``, ``hd95`` and ``asd`` take the same arguments as medpy's functions and return the same
values (bit for bit on the cases tested; always within 1e-6). Definitions (medpy's):

* surface (border) of a mask = ``mask ^ binary_erosion(mask, structure, iterations=1)`` with
  ``structure = generate_binary_structure(ndim, connectivity)`` and voxels outside the array
  counted as background (so objects touching the array edge have a border there);
* directed surface distances A→B = for every border voxel of A (in C order), the Euclidean
  distance (``voxelspacing`` units, voxels when ``None``) to the nearest border voxel of B;
* ``hd95`` = 95th percentile (linear interpolation) of the pooled distances A→B and B→A;
* ``asd`` = mean of the distances result→reference (directed, as medpy defines it).

Why it is faster while staying exact:

1. Everything happens inside the bounding box of ``result | reference`` grown by one voxel and
   clipped to the array. The grown margin is background, so erosion inside the box equals
   erosion of the full array (where the box touches the array edge, the implicit outside
   background is the same as scipy's ``border_value=0``). Every border voxel of both masks lies
   inside the box, so nearest-border searches inside it are exact.
2. Borders are computed once per mask and reused by both directions, HD95 and ASD.
3. Border voxels shared by both masks have distance 0; the others look for the opposite border
   at each offset of a small neighbourhood in order of length (the first hit is the nearest),
   and the few left over are matched with a k-d tree over border coordinates, or read from
   scipy's exact Euclidean distance transform of the box when that is cheaper. Every distance
   is computed from the integer voxel offset with the very arithmetic of
   ``scipy.ndimage.distance_transform_edt`` (``sqrt(sum_i (offset_i * spacing_i)**2)`` in
   float64, axes summed in order), so values match medpy's bit for bit except in exact ties
   between equidistant neighbours (≤ 1 ulp).
4. The 95th percentile is numpy's linear interpolation computed from one partition
   (:func:`percentile`), bit for bit ``np.percentile`` without its per-call overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

Spacing = Union[None, float, int, Sequence[float], np.ndarray]
Box = tuple[slice, ...]

__all__ = [
    "SurfaceDistances",
    "asd",
    "assd",
    "dc",
    "hd",
    "hd95",
    "surface_distances",
]


# --------------------------------------------------------------------------------------------
# input normalisation
# --------------------------------------------------------------------------------------------


def _as_bool(array: np.ndarray) -> np.ndarray:
    """Cast like medpy: ``numpy.atleast_1d(array.astype(bool))`` (array-likes accepted)."""
    return np.atleast_1d(np.asarray(array).astype(bool))


def normalize_spacing(voxelspacing: Spacing, ndim: int) -> Optional[tuple[float, ...]]:
    """Spacing as one float64 per axis (a scalar is repeated), or ``None`` (unit voxels).

    Raises:
        RuntimeError: a sequence whose length differs from ``ndim`` (scipy/medpy's error).
        ValueError: a spacing that is not finite and positive.
    """
    if voxelspacing is None:
        return None
    values = np.asarray(voxelspacing, dtype=np.float64)
    if values.ndim == 0:
        values = np.repeat(values, ndim)
    elif values.ndim != 1 or values.shape[0] != ndim:
        raise RuntimeError("sequence argument must have length equal to input rank")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"voxelspacing must be finite and positive, got {values.tolist()}")
    return tuple(float(v) for v in values)


def check_connectivity(connectivity: int, ndim: int) -> int:
    if int(connectivity) != connectivity or connectivity < 1:
        raise ValueError(f"connectivity must be an integer >= 1, got {connectivity!r}")
    return min(int(connectivity), ndim)  # scipy clips larger values to a full neighbourhood


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"result and reference must have the same shape, got {a.shape} and {b.shape}")


# --------------------------------------------------------------------------------------------
# bounding boxes and borders
# --------------------------------------------------------------------------------------------


def nonzero_box(array: np.ndarray) -> Optional[Box]:
    """Tight bounding box of the non-zero voxels of an array (``None`` when there are none).

    From axis projections (one comparison pass over the array, then reductions of shrinking
    views): several times faster than ``find_objects`` over a whole volume whose foreground is
    a small part of it, as in cardiac MRI.
    """
    mask = array != 0
    box: list[slice] = []
    for _ in range(array.ndim):
        hit = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
        mask = mask[box[-1]].any(axis=0) if mask.ndim > 1 else mask
    return tuple(box)


def grown_union_box(box_a: Optional[Box], box_b: Optional[Box], shape: Sequence[int], margin: int = 1) -> Box:
    """Union of two boxes grown by ``margin`` voxels per side and clipped to ``shape``."""
    boxes = [b for b in (box_a, box_b) if b is not None]
    if not boxes:
        raise ValueError("at least one box is needed")
    return tuple(
        slice(max(min(b[ax].start for b in boxes) - margin, 0), min(max(b[ax].stop for b in boxes) + margin, n))
        for ax, n in enumerate(shape)
    )


@lru_cache(maxsize=None)
def _neighbour_offsets(ndim: int, connectivity: int) -> tuple[tuple[int, ...], ...]:
    """Non-zero offsets of ``generate_binary_structure(ndim, connectivity)``."""
    structure = ndimage.generate_binary_structure(ndim, connectivity)
    return tuple(tuple(int(v) - 1 for v in idx) for idx in np.argwhere(structure) if any(v != 1 for v in idx))


def border(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """One-voxel surface of a boolean mask: ``mask ^ binary_erosion(mask, structure)``.

    Equal to scipy's erosion with ``border_value=0`` (outside counts as background), computed
    as the AND of the mask shifted by each neighbour offset, which is faster on small boxes.
    """
    offsets = _neighbour_offsets(mask.ndim, connectivity)
    padded = zero_padded(mask, (1,) * mask.ndim)
    eroded = mask.copy()
    for off in offsets:
        eroded &= padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(off, mask.shape))]
    return mask & ~eroded


def zero_padded(array: np.ndarray, widths: Sequence[int]) -> np.ndarray:
    """``np.pad(array, [(w, w) for w in widths])`` with zeros, without ``np.pad``'s per-call overhead."""
    out = np.zeros(tuple(n + 2 * w for n, w in zip(array.shape, widths)), dtype=array.dtype)
    out[tuple(slice(w, w + n) for w, n in zip(widths, array.shape))] = array
    return out


# --------------------------------------------------------------------------------------------
# directed distances
# --------------------------------------------------------------------------------------------


def _edt_arithmetic(offsets: np.ndarray, spacing: Optional[tuple[float, ...]]) -> np.ndarray:
    """Length of integer offsets ``(n, ndim)`` computed exactly as scipy's EDT does."""
    d = offsets.astype(np.float64)
    if spacing is not None:
        d *= np.asarray(spacing, dtype=np.float64)
    np.multiply(d, d, out=d)
    total = d[:, 0].copy()
    for ax in range(1, d.shape[1]):
        total += d[:, ax]
    return np.sqrt(total, out=total)


SHELL_STEPS = 2
"""Radius of the neighbourhood searched offset by offset, in steps of the finest spacing."""


@lru_cache(maxsize=256)
def _shell(spacing: Optional[tuple[float, ...]], ndim: int, steps: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Neighbour offsets sorted by length, complete up to (excluding) their length bound.

    Returns ``(reach, offsets, lengths)``: ``reach[i]`` voxels per axis; ``offsets`` (k, ndim)
    holds *every* non-zero integer offset shorter than ``min_i (reach[i] + 1) * spacing[i]``
    (any offset that short fits within ``reach``), sorted by length; ``lengths`` computed with
    :func:`_edt_arithmetic`. The first offset at which a border voxel is found is therefore the
    nearest one.
    """
    s = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    reach = np.floor(steps * s.min() / s + 1e-9).astype(int)
    bound = float(np.min((reach + 1) * s))
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, ndim)
    grid = grid[np.any(grid != 0, axis=1)]
    lengths = _edt_arithmetic(grid, spacing)
    keep = lengths < bound
    order = np.argsort(lengths[keep], kind="stable")
    return tuple(int(r) for r in reach), grid[keep][order], lengths[keep][order]


def _directed(a_border: np.ndarray, b_border: np.ndarray, spacing: Optional[tuple[float, ...]]) -> np.ndarray:
    """Distances from each border voxel of ``a`` (C order) to the nearest border voxel of ``b``.

    Exact nearest-neighbour search in three stages:

    1. voxels on both borders are at distance 0;
    2. the others look for a ``b`` border voxel at each offset of a small neighbourhood in order
       of length (:func:`_shell`), in blocks of offsets (4, then 8, 16, ...: one vectorised
       lookup per block, the first hit of a voxel being its nearest); a well-matched prediction
       is almost entirely resolved here at a cost linear in the number of border voxels;
    3. what is left is matched with a k-d tree over ``b``'s border coordinates when it is little,
       else read from scipy's exact EDT of the box. Left-over voxels are far from ``b`` (past
       the neighbourhood), where a tree query costs ~0.5-5 us (measured on ACDC, more for
       voxels a slice away at 10 mm) against ~50 ns per box voxel for the transform.

    Distances are computed from the integer offsets with scipy's EDT arithmetic.
    """
    n_a = int(np.count_nonzero(a_border))
    out = np.zeros(n_a, dtype=np.float64)
    away = a_border & ~b_border
    if not away.any():
        return out
    ndim = a_border.ndim
    reach, offsets, lengths = _shell(spacing, ndim, SHELL_STEPS)
    b_flat = zero_padded(b_border, reach).ravel()
    padded_shape = tuple(n + 2 * r for n, r in zip(a_border.shape, reach))
    strides = np.array([int(np.prod(padded_shape[i + 1 :])) for i in range(ndim)], dtype=np.intp)
    deltas = offsets @ strides
    lin = np.flatnonzero(zero_padded(away, reach))
    found = np.empty(lin.size, dtype=np.float64)
    pos = np.arange(lin.size)
    start, width = 0, 4
    while start < deltas.size and lin.size:
        # a block of offsets at once: hits (voxels, offsets); the first hit of a row is its nearest
        stop = min(start + width, deltas.size)
        hits = b_flat[lin[:, None] + deltas[None, start:stop]]
        first = hits.argmax(axis=1)
        hit = hits[np.arange(lin.size), first]
        found[pos[hit]] = lengths[start:stop][first[hit]]
        miss = ~hit
        lin, pos = lin[miss], pos[miss]
        start, width = stop, width * 2
    if lin.size:
        query = np.stack(np.unravel_index(lin, padded_shape), axis=1) - np.asarray(reach)
        targets = np.argwhere(b_border)
        if lin.size * 50 + targets.shape[0] < a_border.size:
            scale = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
            tree = cKDTree(targets * scale, leafsize=32, balanced_tree=False, compact_nodes=False)
            _, nearest = tree.query(query * scale, k=1)
            found[pos] = _edt_arithmetic(targets[nearest] - query, spacing)
        else:
            edt = ndimage.distance_transform_edt(~b_border, sampling=spacing)
            found[pos] = edt[tuple(query.T)]
    out[away[a_border]] = found
    return out


def percentile(values: np.ndarray, q: float) -> float:
    """``float(np.percentile(values, q))`` (method ``linear``) bit for bit, without its overhead.

    numpy's arithmetic: virtual index ``(n - 1) * (q / 100)``, the two order statistics around it
    from one partition, and numpy's ``_lerp`` (``b - (b - a) * (1 - t)`` when ``t >= 0.5``).
    ``values`` is a non-empty float64 vector without NaN (distances).
    """
    n = int(values.size)
    index = (n - 1) * (q / 100.0)
    if index >= n - 1:
        return float(values.max())
    lo = int(math.floor(index))
    t = index - lo
    part = np.partition(values, (lo, lo + 1))
    a, b = part[lo], part[lo + 1]
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


# --------------------------------------------------------------------------------------------
# public: surface distances of a pair of masks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances of one (result, reference) pair, both computed once.

    Attributes:
        result_to_reference: distance of every result border voxel (C order) to the reference
            border, float64, in spacing units (voxels when no spacing).
        reference_to_result: the other direction.
    """

    result_to_reference: np.ndarray
    reference_to_result: np.ndarray

    def pooled(self) -> np.ndarray:
        return np.hstack((self.result_to_reference, self.reference_to_result))

    def hd95(self) -> float:
        """medpy's HD95: 95th percentile of the pooled distances of both directions."""
        return percentile(self.pooled(), 95.0)

    def hd95_monai(self) -> float:
        """MONAI's HD95 (``directed=False``): max of the two directed 95th percentiles."""
        return max(percentile(self.result_to_reference, 95.0), percentile(self.reference_to_result, 95.0))

    def hd(self) -> float:
        """Hausdorff distance: the largest distance of either direction."""
        return float(max(self.result_to_reference.max(), self.reference_to_result.max()))

    def asd(self) -> float:
        """medpy's ASD: mean distance result → reference (directed)."""
        return float(self.result_to_reference.mean())

    def assd(self) -> float:
        """medpy 0.5.2's ASSD: mean of the pooled distances of both directions."""
        return float(self.pooled().mean())


def surface_distances_in_box(
    result: np.ndarray,
    reference: np.ndarray,
    spacing: Optional[tuple[float, ...]],
    connectivity: int,
) -> SurfaceDistances:
    """Surface distances of two non-empty boolean masks already cropped to a grown union box.

    The box must contain both masks plus a one-voxel background margin wherever it does not
    touch the original array's edge (see :func:`grown_union_box`).
    """
    result_border = border(result, connectivity)
    reference_border = border(reference, connectivity)
    return SurfaceDistances(
        _directed(result_border, reference_border, spacing),
        _directed(reference_border, result_border, spacing),
    )


def surface_distances(
    result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1
) -> SurfaceDistances:
    """Both directed surface distances of two binary masks (medpy's definition, computed once).

    Args:
        result: prediction, any array (cast to bool), 1D to nD.
        reference: ground truth, same shape.
        voxelspacing: a scalar or one value per axis (mm); ``None`` for voxel units.
        connectivity: neighbourhood of the erosion that defines the surface (1 = faces).

    Raises:
        RuntimeError: ``result`` or ``reference`` is empty (medpy's messages).
    """
    result = _as_bool(result)
    reference = _as_bool(reference)
    _check_same_shape(result, reference)
    spacing = normalize_spacing(voxelspacing, result.ndim)
    connectivity = check_connectivity(connectivity, result.ndim)
    box_r = nonzero_box(result)
    if box_r is None:
        raise RuntimeError("The first supplied array does not contain any binary object.")
    box_t = nonzero_box(reference)
    if box_t is None:
        raise RuntimeError("The second supplied array does not contain any binary object.")
    box = grown_union_box(box_r, box_t, result.shape)
    return surface_distances_in_box(result[box], reference[box], spacing, connectivity)


# --------------------------------------------------------------------------------------------
# public: medpy drop-ins
# --------------------------------------------------------------------------------------------


def dc(result: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A|+|B|)``; 1.0 when both masks are empty.

    1.0 is medpy's intended value for two empty masks (its ``ZeroDivisionError`` branch, what it
    returns under numpy 1.x); under numpy 2 medpy 0.5.2 returns NaN with a RuntimeWarning
    because the division no longer raises.
    """
    result = _as_bool(result)
    reference = _as_bool(reference)
    intersection = np.count_nonzero(result & reference)
    total = np.count_nonzero(result) + np.count_nonzero(reference)
    return 1.0 if total == 0 else 2.0 * intersection / float(total)


def hd95(result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1) -> float:
    """95th percentile Hausdorff distance, medpy's definition (pooled directed distances).

    Raises:
        RuntimeError: either mask is empty (like medpy).
    """
    return surface_distances(result, reference, voxelspacing, connectivity).hd95()


def hd(result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1) -> float:
    """Hausdorff distance (maximum of both directed distances), medpy's definition."""
    return surface_distances(result, reference, voxelspacing, connectivity).hd()


def asd(result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1) -> float:
    """Average surface distance result → reference, medpy's (directed) definition.

    Raises:
        RuntimeError: either mask is empty (like medpy).
    """
    return surface_distances(result, reference, voxelspacing, connectivity).asd()


def assd(result: np.ndarray, reference: np.ndarray, voxelspacing: Spacing = None, connectivity: int = 1) -> float:
    """Average symmetric surface distance, medpy 0.5.2's definition (mean of pooled distances)."""
    return surface_distances(result, reference, voxelspacing, connectivity).assd()


def diagonal(shape: Sequence[int], spacing: Optional[Sequence[float]] = None) -> float:
    """Length of the array's field of view diagonal, ``sqrt(sum((n_i * s_i)**2))`` (spacing units)."""
    s = [1.0] * len(shape) if spacing is None else list(spacing)
    return float(math.sqrt(sum((n * v) ** 2 for n, v in zip(shape, s))))
