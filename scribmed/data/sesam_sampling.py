"""SeSAM's point sampler: K random points per connected instance of a binary mask.

:func:`instance_points` covers each instance's box with square cells, picks K cells at random and
draws one pixel in each, biased towards the instance's skeleton. Pure numpy / scipy, so the
weak-label converters of :mod:`scribmed.data.weak_conversion` use it without the transforms;
:class:`~scribmed.transforms.sesam_points.SeSAMPointsd` is the randomizable dictionary transform
built on it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

Rng = np.random.RandomState | np.random.Generator


def _rng(rng: Rng | int | None) -> Rng:
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    return np.random.default_rng(rng)


def _mask_slice(mask_2d: Any) -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` array or tensor → boolean ``(H, W)`` numpy array."""
    a = np.asarray(mask_2d.detach().cpu().numpy() if hasattr(mask_2d, "detach") else mask_2d)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"mask must be one 2D slice (H, W) or (1, H, W), got shape {a.shape}")
    return a.astype(bool)


def instance_points(
    mask_2d: Any, k: int = 5, rng: Rng | int | None = None, connectivity: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """SeSAM's K random points per connected instance of a binary mask.

    Per instance of area A: its bounding box is covered by square cells of side ``sqrt(A / K)``;
    ``K`` of the cells that hold instance pixels are chosen at random (all of them, plus repeats,
    when fewer exist), and in each a pixel of the instance is drawn with probability proportional
    to the instance's distance transform normalised to [0, 1] (the skeleton is likeliest). Points
    are distinct; an instance with fewer than ``K`` pixels gives all of them.

    Args:
        mask_2d: ``(H, W)`` (or ``(1, H, W)``) binary mask of one class.
        k: points per instance.
        rng: ``np.random.RandomState`` (e.g. a transform's ``self.R``), ``Generator`` or seed.
        connectivity: 1 (4-connected) or 2 (8-connected) instances.

    Returns:
        ``(points, instance)``: float32 ``(N, 2)`` ``(x, y)`` points and int64 ``(N,)`` instance
        number (1-based, raster order of the instances' first pixels, as ``scipy.ndimage.label``
        and :func:`~scribmed.transforms.instance_split.split_instances` number them).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    gen = _rng(rng)
    labels, _ = ndi.label(_mask_slice(mask_2d), structure=ndi.generate_binary_structure(2, connectivity))
    pts, inst = [], []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        local = labels[box] == i
        pix = np.argwhere(local)
        dist = ndi.distance_transform_edt(np.pad(local, 1))[1:-1, 1:-1]
        weight = dist[pix[:, 0], pix[:, 1]] / dist.max()
        chosen = _instance_draw(pix, weight, k, gen)
        pts.append(chosen + np.array([box[0].start, box[1].start]))
        inst.append(np.full(len(chosen), i, dtype=np.int64))
    if not pts:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    rows_cols = np.concatenate(pts)
    return np.ascontiguousarray(rows_cols[:, ::-1], dtype=np.float32).reshape(-1, 2), np.concatenate(inst)


def _instance_draw(pix: np.ndarray, weight: np.ndarray, k: int, gen: Rng) -> np.ndarray:
    """Pick ``min(k, len(pix))`` distinct (row, col) pixels of one instance (SeSAM grid rule)."""
    area = len(pix)
    if area <= k:
        return pix
    side = math.sqrt(area / k)
    cell = (pix // side).astype(np.int64)
    cell_id = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
    cells = np.unique(cell_id)
    if len(cells) >= k:
        picked = cells[gen.choice(len(cells), size=k, replace=False)]
    else:
        extra = cells[gen.choice(len(cells), size=k - len(cells), replace=True)]
        picked = np.concatenate([cells[gen.permutation(len(cells))], extra])
    taken = np.zeros(area, dtype=bool)
    out = []
    for c in picked:
        idx = np.nonzero((cell_id == c) & ~taken)[0]
        if idx.size == 0:  # a repeated cell ran out of pixels: use any free pixel
            idx = np.nonzero(~taken)[0]
        p = weight[idx] / weight[idx].sum()
        j = int(idx[gen.choice(idx.size, p=p)])
        taken[j] = True
        out.append(pix[j])
    return np.asarray(out)


__all__ = [
    "instance_points",
]
