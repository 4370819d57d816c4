"""Instance priors from point labels: each point's Voronoi cell, clipped to a radius, and its box.

A point says where a nucleus is, not how big it is. Two facts bound it: the nucleus does not
reach into its neighbours' cells (it lies in its point's Voronoi cell), and it is not much wider
than the gap to the nearest other point. So each point gets the region

    cell_i = {pixels whose nearest point is i} ∩ {pixels within r_i of point i},
    r_i = clip(distance to the nearest other point, min_radius, max_radius),

and the region's bounding box. The SAM-based instance recipes use both:

* the **box** is an extra prompt next to the point: MedSAM / LiteMedSAM were trained with box
  prompts, and a point alone gives them tiny or spilled masks on nuclei (measured in
  ``benchmarks/instance_pseudo_labels.py``);
* the **cell** is the weak region ``W`` of SeSAM's coverage / compatibility selection: a candidate
  that spills into the neighbours' cells (SAM's "several nuclei" answer) is not compatible, one
  that covers too little of its cell is not covering.

Instances with several points use all of them: the cell is the union of their cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["PointCells", "point_cells"]


@dataclass
class PointCells:
    """Per instance (sorted ids): its cell ``regions (N, H, W)`` bool and box ``(N, 4)`` (x0, y0, x1, y1 inclusive)."""

    ids: np.ndarray
    regions: np.ndarray
    boxes: np.ndarray
    radius: np.ndarray


def point_cells(points: Mapping[int, Any], shape: Sequence[int], max_radius: float = 60.0,
                min_radius: float = 6.0) -> PointCells:
    """Voronoi cells of the points, clipped to each point's nearest-neighbour radius (module docstring).

    Args:
        points: instance id -> ``(k, 2)`` ``(x, y)`` pixel coordinates.
        shape: ``(H, W)``.
        max_radius / min_radius: bounds of the radius (px); a lone point gets ``max_radius``.
    """
    if min_radius <= 0 or max_radius < min_radius:
        raise ValueError(f"need 0 < min_radius <= max_radius, got {min_radius}, {max_radius}")
    h, w = int(shape[0]), int(shape[1])
    ids = np.array(sorted(int(i) for i in points), dtype=np.int64)
    if ids.size == 0:
        return PointCells(ids, np.zeros((0, h, w), bool), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    xy, owner = [], []
    for n, i in enumerate(ids):
        p = np.asarray(points[int(i)], dtype=np.float64).reshape(-1, 2)
        xy.append(p)
        owner += [n] * len(p)
    xy = np.concatenate(xy)
    owner = np.asarray(owner)
    cols = np.clip(np.rint(xy[:, 0]).astype(int), 0, w - 1)
    rows = np.clip(np.rint(xy[:, 1]).astype(int), 0, h - 1)
    seeds = np.zeros((h, w), np.int64)
    seeds[rows, cols] = np.arange(1, len(xy) + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[iy, ix] - 1  # index of the nearest point
    # radius per instance: the distance from its points to the nearest point of another instance.
    # Nearest neighbours have touching Voronoi cells, so it suffices to look at pixel pairs across
    # cell borders (O(H W), whatever the number of points: strokes and coarse masks have many).
    radius = np.full(len(ids), np.inf)
    for a, b in ((nearest[:, :-1], nearest[:, 1:]), (nearest[:-1, :], nearest[1:, :])):
        cross = owner[a] != owner[b]
        pa, pb = a[cross], b[cross]
        if pa.size:
            d = np.hypot(*(xy[pa] - xy[pb]).T)
            np.minimum.at(radius, owner[pa], d)
            np.minimum.at(radius, owner[pb], d)
    radius[~np.isfinite(radius)] = float(max_radius)
    radius = np.clip(radius, min_radius, max_radius)
    cell_of = owner[nearest]
    regions = np.zeros((len(ids), h, w), bool)
    boxes = np.zeros((len(ids), 4), np.float32)
    for n in range(len(ids)):
        m = (cell_of == n) & (dist <= radius[n])
        regions[n] = m
        ys, xs = np.nonzero(m)
        boxes[n] = (xs.min(), ys.min(), xs.max(), ys.max())
    return PointCells(ids, regions, boxes, radius.astype(np.float32))
