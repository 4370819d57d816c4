"""Point prompts on one scribble slice: positives along the skeleton, negatives from a neighbour.

Positive points (SAM-SP): ``n`` points evenly spaced *along* the skeleton of
the slightly dilated class scribble. The skeleton is walked as a graph (depth first from one end of
its longest path), so "evenly spaced" means equal arc length along the stroke; several strokes
share the ``n`` points in proportion to their lengths. Deterministic.

Negative points: points of exactly one other structure, the first in the class's priority list
that has a scribble on the slice, else the background scribble (value 0).

Coordinates are ``(x, y) = (column, row)`` pixels. Also the slice coercion (``(H, W)`` or
``(1, H, W)`` array or tensor) shared by every prompt module.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from monai.utils import convert_to_numpy
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import depth_first_order, dijkstra
from skimage.morphology import skeletonize

from scribmed.data.case import CARDIAC, ClassMap

PointMode = Literal["skeleton", "pixels"]

#: Cardiac negatives as in SAM-SP: RV and LV take Myo points, Myo takes RV points.
CARDIAC_NEGATIVE_PRIORITY: dict[int, tuple[int, ...]] = {1: (2,), 3: (2,), 2: (1,)}

_EIGHT = np.ones((3, 3), dtype=bool)


def _as_slice(x: Any, what: str = "scribble") -> np.ndarray:
    """``(H, W)`` or ``(1, H, W)`` array/tensor → ``(H, W)`` numpy array."""
    a = np.asarray(convert_to_numpy(x))
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what} must be one 2D slice (H, W) or (1, H, W), got shape {a.shape}")
    return a


# --------------------------------------------------------------------------------------------
# positive points


def _skeleton_graph(skel: np.ndarray) -> tuple[np.ndarray, Any]:
    """Pixels ``(m, 2)`` (row, col) of a skeleton and its symmetric adjacency (edge = step length).

    Pixels are 8-connected, but a diagonal step is dropped when a 4-neighbour path of two steps
    joins the same pixels (staircase corners), so a walk visits every pixel of a thin stroke.
    """
    rows, cols = np.nonzero(skel)
    m = rows.size
    index = np.full((skel.shape[0] + 2, skel.shape[1] + 2), -1, dtype=np.int64)
    index[rows + 1, cols + 1] = np.arange(m)
    src, dst, weight = [], [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        nb = index[rows + 1 + dr, cols + 1 + dc]
        ok = nb >= 0
        if dr and dc:  # diagonal: skip when a 4-connected corner pixel exists
            corner = (index[rows + 1 + dr, cols + 1] >= 0) | (index[rows + 1, cols + 1 + dc] >= 0)
            ok &= ~corner
        src.append(np.nonzero(ok)[0])
        dst.append(nb[ok])
        weight.append(np.full(int(ok.sum()), math.sqrt(2.0) if dr and dc else 1.0))
    s, d, w = np.concatenate(src), np.concatenate(dst), np.concatenate(weight)
    graph = coo_matrix((np.concatenate([w, w]), (np.concatenate([s, d]), np.concatenate([d, s]))), shape=(m, m))
    return np.stack([rows, cols], axis=1), graph.tocsr()


def _walk(graph: Any, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order one connected component along its stroke.

    Starts at the far end of a longest path (two geodesic sweeps), walks depth first and
    returns ``(order, arclength)``: the component's pixel indices in walk order and the
    cumulative length of the walk's tree edges at each (branches laid end to end).
    """
    sub = graph[members][:, members]
    dist = dijkstra(sub, directed=False, indices=0)
    start = int(np.argmax(np.where(np.isfinite(dist), dist, -1.0)))
    order, pred = depth_first_order(sub, start, directed=False, return_predecessors=True)
    steps = np.zeros(order.size)
    has_pred = pred[order] >= 0
    steps[has_pred] = np.asarray(sub[pred[order][has_pred], order[has_pred]]).ravel()
    return members[order], np.cumsum(steps)


def _even_indices(arclength: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct indices into a walk whose arc length is closest to ``(i + 1/2) L / n``."""
    m = arclength.size
    if n >= m:
        return np.arange(m)
    targets = (np.arange(n) + 0.5) * arclength[-1] / n
    idx = np.clip(np.searchsorted(arclength, targets), 1, m - 1)
    idx = np.where(targets - arclength[idx - 1] <= arclength[idx] - targets, idx - 1, idx)
    for i in range(1, n):  # distinct and increasing, staying inside [0, m)
        idx[i] = max(idx[i], idx[i - 1] + 1)
    idx[-1] = min(idx[-1], m - 1)
    for i in range(n - 2, -1, -1):
        idx[i] = min(idx[i], idx[i + 1] - 1)
    return idx


def _apportion(n: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Split ``n`` points over strokes ∝ weight (Sainte-Laguë), never more than a stroke's cap."""
    seats = [0] * len(weights)
    for _ in range(min(n, int(sum(caps)))):
        best, score = -1, -1.0
        for i, (w, cap) in enumerate(zip(weights, caps)):
            if seats[i] < cap and w / (2 * seats[i] + 1) > score:
                best, score = i, w / (2 * seats[i] + 1)
        seats[best] += 1
    return seats


def _farthest_points(pixels: np.ndarray, n: int) -> np.ndarray:
    """Farthest-point sampling of ``n`` of the ``(m, 2)`` pixels, from the one farthest from their mean."""
    p = pixels.astype(np.float64)
    first = int(np.argmax(((p - p.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    d2 = ((p - p[first]) ** 2).sum(axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(d2))
        chosen.append(nxt)
        d2 = np.minimum(d2, ((p - p[nxt]) ** 2).sum(axis=1))
    return pixels[chosen]


def _xy(rows_cols: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows_cols[:, ::-1], dtype=np.float32).reshape(-1, 2)


def scribble_points(
    scribble_2d: Any,
    class_index: int,
    n: int = 10,
    mode: PointMode = "skeleton",
    dilate: int = 1,
    ignore_index: int | None = None,
) -> np.ndarray:
    """``n`` points evenly spread over one class's scribble.

    ``mode="skeleton"``: the class scribble is dilated ``dilate`` times (3x3; joins small gaps),
    skeletonised, and each skeleton stroke walked; points sit at equal arc length along the
    strokes, the ``n`` points shared among strokes in proportion to their lengths. When the
    skeleton has fewer than ``n`` pixels the function falls back to ``"pixels"`` on the
    undilated scribble. ``mode="pixels"``: farthest-point sampling over all scribble pixels
    (spatially even, deterministic).

    Args:
        scribble_2d: ``(H, W)`` (or ``(1, H, W)``) scribble label map.
        class_index: the class whose scribble is sampled.
        n: number of points wanted.
        mode: ``"skeleton"`` or ``"pixels"``.
        dilate: dilation steps before skeletonising (0: none).
        ignore_index: the unlabeled value; when given the dilation only grows into unlabeled
            pixels, so no point lands on another class's scribble.

    Returns:
        float32 ``(min(n, #class pixels), 2)`` array of ``(x, y)`` pixel coordinates in the
        scribble's own frame; ``(0, 2)`` when the class has no scribble. Skeleton points lie on
        the class scribble or its ``dilate``-pixel dilation.
    """
    if mode not in ("skeleton", "pixels"):
        raise ValueError(f"mode must be 'skeleton' or 'pixels', got {mode!r}")
    if n < 0 or dilate < 0:
        raise ValueError(f"n and dilate must be >= 0, got n={n}, dilate={dilate}")
    s = _as_slice(scribble_2d)
    mask = s == class_index
    count = int(mask.sum())
    if count == 0 or n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if mode == "skeleton":
        grown = mask
        if dilate:
            allowed = None if ignore_index is None else (mask | (s == ignore_index))
            grown = ndi.binary_dilation(mask, structure=_EIGHT, iterations=dilate, mask=allowed)
        skel = skeletonize(grown)
        if int(skel.sum()) >= n:
            return _xy(_skeleton_samples(skel, n))
    pixels = np.argwhere(mask)
    if count <= n:
        return _xy(pixels)
    return _xy(_farthest_points(pixels, n))


def _skeleton_samples(skel: np.ndarray, n: int) -> np.ndarray:
    """``n`` (row, col) skeleton pixels at equal arc length along its strokes (``n`` <= #pixels)."""
    pixels, graph = _skeleton_graph(skel)
    labels, _ = ndi.label(skel, structure=_EIGHT)
    comp = labels[pixels[:, 0], pixels[:, 1]]
    walks = []
    for c in np.unique(comp):  # raster order of each stroke's first pixel
        walks.append(_walk(graph, np.nonzero(comp == c)[0]))
    # dropped diagonals always have a two-step detour, so graph components match ndi.label's
    seats = _apportion(n, [w[1][-1] + 1.0 for w in walks], [w[0].size for w in walks])
    out = [pixels[order[_even_indices(arc, k)]] for (order, arc), k in zip(walks, seats) if k]
    return np.concatenate(out, axis=0)


# --------------------------------------------------------------------------------------------
# negatives


def default_negative_priority(class_map: ClassMap | None) -> dict[int, tuple[int, ...]]:
    """SAM-SP's neighbour order for cardiac classes (RV→Myo, LV→Myo, Myo→RV); ``{}`` otherwise."""
    if class_map is not None and dict(class_map.names) == dict(CARDIAC.names):
        return dict(CARDIAC_NEGATIVE_PRIORITY)
    return {}


def negative_points(
    scribble_2d: Any,
    class_index: int,
    priority: Mapping[int, Sequence[int]],
    n: int = 10,
    use_background: bool = True,
    background_index: int = 0,
    mode: PointMode = "skeleton",
    dilate: int = 1,
    ignore_index: int | None = None,
) -> tuple[np.ndarray, int | None]:
    """Negative points for ``class_index`` from exactly one other structure.

    The source is the first class in ``priority[class_index]`` that has a scribble on the slice;
    failing that the background scribble (``background_index``, 0) when ``use_background``. The
    unlabeled value is never a source.

    Args:
        scribble_2d: ``(H, W)`` scribble label map.
        class_index: the class being prompted.
        priority: class → neighbouring classes to try, in order.
        n: number of points wanted.
        use_background: fall back to the background scribble.
        background_index: the background scribble's value.
        mode, dilate, ignore_index: as :func:`scribble_points`.

    Returns:
        ``(points, source)``: float32 ``(<= n, 2)`` ``(x, y)`` points and the label value they
        were taken from, or ``((0, 2), None)`` when no source is available.
    """
    s = _as_slice(scribble_2d)
    present = set(np.unique(s).tolist())
    candidates = [int(k) for k in priority.get(class_index, ())]
    if use_background:
        candidates.append(int(background_index))
    for source in candidates:
        if source == class_index or source == ignore_index or source not in present:
            continue
        pts = scribble_points(s, source, n=n, mode=mode, dilate=dilate, ignore_index=ignore_index)
        if len(pts):
            return pts, source
    return np.zeros((0, 2), dtype=np.float32), None


__all__ = [
    "CARDIAC_NEGATIVE_PRIORITY",
    "default_negative_priority",
    "negative_points",
    "scribble_points",
]
