"""ScribbleBench-style scribbles: a smooth interior curve and part of the boundary per class, some slices left out.

ScribbleBench (MIC-DKFZ, MICCAI 2025) simulates scribbles for datasets beyond the heart (WORD,
AMOS, KiTS23, LiTS, BraTS) with strokes unlike ACDC's skeleton arcs: per slice and class

1. an **interior scribble**: a smooth curve (a Catmull-Rom spline through a few random points,
   weighted towards the region's middle, visited nearest-first) inside the eroded class region;
2. a **partial-boundary scribble**: a contiguous arc of the class outline, traced along its inner
   edge (with probability ``boundary_prob``);
3. **slices without scribbles**: each slice with foreground is skipped entirely with probability
   ``slice_skip_prob``, as annotators label a subset of slices.

Background (class 0) gets the same two strokes: an interior curve in a band around the foreground
(inside ``background_region`` when given) and an arc just outside the foreground's outline. The
numbers of :class:`ScribbleBenchStyle` are this implementation's (chosen so that about 1-3 % of
the pixels are labelled, as in real scribbles), not constants published by ScribbleBench. By
construction every scribble pixel of class ``k`` lies inside ``label == k``; this is asserted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line
from skimage.measure import find_contours

__all__ = ["ScribbleBenchStyle", "scribblebench_slice"]

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ScribbleBenchStyle:
    """Knobs of the ScribbleBench-style synthesiser.

    Attributes:
        control_points: range of the number of random points the interior spline passes through.
        erode_px: erosion (px) of a region before the interior curve is drawn (less when too thin).
        boundary_prob: probability that a class also gets a partial-boundary scribble.
        boundary_fraction: range of the share of the outline kept as one contiguous arc.
        slice_skip_prob: probability that a slice with foreground gets no scribble at all.
        background_band: width (px) of the band around the foreground where background strokes go.
        min_region_px: regions smaller than this get no stroke.
    """

    control_points: tuple[int, int] = (3, 6)
    erode_px: int = 2
    boundary_prob: float = 0.5
    boundary_fraction: tuple[float, float] = (0.15, 0.4)
    slice_skip_prob: float = 0.3
    background_band: int = 12
    min_region_px: int = 10


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask
    sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _eroded(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` eroded by up to ``px`` pixels, less when the erosion would empty it."""
    for k in range(px, 0, -1):
        out = ndi.binary_erosion(mask, iterations=k)
        if out.sum() >= 3:
            return out
    return mask


def _catmull_rom(points: np.ndarray, samples: int = 12) -> np.ndarray:
    """A Catmull-Rom spline through ``points`` ``(n, 2)`` (end points repeated), densely sampled."""
    if len(points) < 2:
        return points.astype(float)
    p = np.vstack([points[:1], points, points[-1:]]).astype(float)
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(p[-2:-1])
    return np.vstack(out)


def _polyline(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of the polyline through ``points`` (rounded, clipped to ``shape``)."""
    out = np.zeros(shape, dtype=bool)
    pts = np.clip(np.rint(points).astype(int), 0, np.array(shape) - 1)
    if len(pts) == 1:
        out[pts[0, 0], pts[0, 1]] = True
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
        rr, cc = line(r0, c0, r1, c1)
        out[rr, cc] = True
    return out


def _interior(region: np.ndarray, style: ScribbleBenchStyle, rng: np.random.Generator) -> Optional[np.ndarray]:
    """A smooth curve through random interior points of ``region``, kept inside it."""
    inner = _eroded(region, style.erode_px)
    depth = ndi.distance_transform_edt(inner)
    rows, cols = np.nonzero(inner)
    if rows.size < 2:
        return None
    weight = depth[rows, cols] ** 2
    n = int(rng.integers(style.control_points[0], style.control_points[1] + 1))
    pick = rng.choice(rows.size, size=min(n, rows.size), replace=False, p=weight / weight.sum())
    pts = np.stack([rows[pick], cols[pick]], axis=1)
    order = [int(rng.integers(len(pts)))]
    while len(order) < len(pts):  # nearest unvisited point next: a curve, not a zig-zag
        rest = [i for i in range(len(pts)) if i not in order]
        d = ((pts[rest] - pts[order[-1]]) ** 2).sum(axis=1)
        order.append(rest[int(np.argmin(d))])
    stroke = _polyline(_catmull_rom(pts[order]), region.shape) & inner
    return _largest(stroke) if stroke.any() else None


def _boundary(region: np.ndarray, allowed: np.ndarray, style: ScribbleBenchStyle,
              rng: np.random.Generator) -> Optional[np.ndarray]:
    """A contiguous arc of ``region``'s outline, drawn on the pixels of ``allowed`` along it."""
    contours = find_contours(region.astype(float), 0.5)
    if not contours:
        return None
    contour = max(contours, key=len)
    n = len(contour)
    keep = max(2, int(round(n * rng.uniform(*style.boundary_fraction))))
    start = int(rng.integers(n))
    arc = contour[(start + np.arange(min(keep, n))) % n]
    ring = allowed & ndi.binary_dilation(_polyline(arc, region.shape), structure=_EIGHT)
    return _largest(ring) if ring.any() else None


def scribblebench_slice(
    sl: np.ndarray, foreground: list[int], ignore: int, style: ScribbleBenchStyle, rng: np.random.Generator,
    background: bool = True, background_region: Optional[np.ndarray] = None,
) -> np.ndarray:
    """ScribbleBench-style scribbles of one ``(H, W)`` label slice: class values on strokes, ``ignore`` elsewhere."""
    out = np.full(sl.shape, ignore, dtype=np.uint16)
    fg_any = sl > 0
    if fg_any.any() and rng.random() < style.slice_skip_prob:
        return out
    for k in foreground:
        region = sl == k
        if region.sum() < style.min_region_px:
            continue
        main = _largest(region)
        for stroke in (_interior(main, style, rng),
                       _boundary(main, main, style, rng) if rng.random() < style.boundary_prob else None):
            if stroke is not None:
                out[stroke & region] = k
    if background and fg_any.any():
        bg = ~fg_any if background_region is None else (~fg_any & background_region)
        band = bg & ndi.binary_dilation(fg_any, iterations=style.background_band)
        if band.sum() >= style.min_region_px:
            strokes = [_interior(_largest(band), style, rng)]
            if rng.random() < style.boundary_prob:
                strokes.append(_boundary(_largest(fg_any), band & ndi.binary_dilation(fg_any), style, rng))
            for stroke in strokes:
                if stroke is not None:
                    out[stroke & bg & (out == ignore)] = 0
    return out
