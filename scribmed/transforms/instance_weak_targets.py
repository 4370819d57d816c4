"""Sparse contour targets from per-instance weak labels (points, strokes, coarse masks, boxes).

Each function returns an ``(H, W)`` uint8 target in the classes of
:mod:`scribmed.transforms.contour_targets` (0 background, 1 interior, 2 boundary) with 255 where
the weak label says nothing, so a partial cross-entropy learns only from what was annotated.

* points: a disc of ``radius`` pixels around each point is interior; with ``voronoi=True`` the
  edges of the points' Voronoi diagram are background (Qu et al., *Weakly supervised deep nuclei
  segmentation using points annotation*, 2019): a point-only label has no background otherwise,
  and the Voronoi edges run between neighbouring nuclei, where background is likely.
* strokes (``scribble`` masks: ``k > 0`` inside instance k, ``-1`` background): strokes inside
  instances are interior, background strokes background.
* coarse masks: the contour target of the coarse map, with a band of ``band`` pixels around every
  coarse boundary left unlabeled (the coarse outline is off by a few pixels).
* boxes: everything outside all boxes is background; inside is unlabeled.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from scribmed.transforms.contour_targets import (
    BACKGROUND,
    IGNORE,
    INTERIOR,
    contour_target,
    instance_boundaries,
)

__all__ = ["box_target", "coarse_target", "point_target", "stroke_target", "voronoi_edges"]


def _shape(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def voronoi_edges(point_map: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels where the nearest point changes (the Voronoi edges of the points).

    ``point_map`` holds an instance id at each point pixel and 0 elsewhere; fewer than two
    points give no edges.
    """
    pm = np.asarray(point_map)
    if int((np.unique(pm) > 0).sum()) < 2:
        return np.zeros(pm.shape, dtype=bool)
    _, (iy, ix) = ndi.distance_transform_edt(pm == 0, return_indices=True)
    nearest = pm[iy, ix]
    return instance_boundaries(nearest, 1) & _not_image_border(pm.shape)


def _not_image_border(shape: tuple[int, ...]) -> np.ndarray:
    m = np.ones(shape, dtype=bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False
    return m


def point_target(points: Mapping[int, Any], shape: Sequence[int], radius: int = 2, voronoi: bool = True) -> np.ndarray:
    """Target from point labels: interior discs, optionally Voronoi-edge background.

    Args:
        points: instance id -> ``(k, 2)`` ``(x, y)`` pixel coordinates.
        shape: ``(H, W)``.
        radius: disc radius in pixels (0: the point pixel only).
        voronoi: label the Voronoi edges of the points background.
    """
    h, w = _shape(shape)
    out = np.full((h, w), IGNORE, dtype=np.uint8)
    pm = np.zeros((h, w), dtype=np.int32)
    for iid, xy in points.items():
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        cols = np.clip(np.rint(xy[:, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.rint(xy[:, 1]).astype(int), 0, h - 1)
        pm[rows, cols] = int(iid)
    if voronoi:
        out[voronoi_edges(pm)] = BACKGROUND
    seeds = pm > 0
    if radius > 0 and seeds.any():
        dist = ndi.distance_transform_edt(~seeds)
        seeds = dist <= radius
    out[seeds] = INTERIOR
    return out


def stroke_target(strokes: Any) -> np.ndarray:
    """Target from a stroke map (``k > 0`` inside instance k, ``-1`` background, 0 unlabeled)."""
    s = np.asarray(strokes)
    out = np.full(s.shape, IGNORE, dtype=np.uint8)
    out[s < 0] = BACKGROUND
    out[s > 0] = INTERIOR
    return out


def coarse_target(coarse: Any, band: int = 2) -> np.ndarray:
    """Contour target of a coarse instance map with ``band`` pixels around its outlines unlabeled."""
    c = np.asarray(coarse)
    out = contour_target(c)
    if band > 0:
        edge = instance_boundaries(c, 1)
        out[ndi.binary_dilation(edge, iterations=int(band))] = IGNORE
    return out


def box_target(boxes: Mapping[int, Any], shape: Sequence[int]) -> np.ndarray:
    """Background outside every box, unlabeled inside; boxes are inclusive ``(x0, y0, x1, y1)`` pixels."""
    h, w = _shape(shape)
    out = np.zeros((h, w), dtype=np.uint8)
    for box in boxes.values():
        x0, y0, x1, y1 = (int(round(float(v))) for v in np.asarray(box).reshape(4))
        out[max(y0, 0):min(y1, h - 1) + 1, max(x0, 0):min(x1, w - 1) + 1] = IGNORE
    return out
