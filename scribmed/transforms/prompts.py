"""SAM prompts from scribbles and masks: points, negatives, boxes and SAM's input frame.

All coordinates are ``(x, y) = (column, row)`` in pixels, SAM's convention; a pixel's centre is at
its integer index (SAM's prompt encoder adds the half pixel itself). Functions work on one 2D
slice ``(H, W)``; the dictionary transforms accept ``(H, W)`` or ``(1, H, W)`` arrays or tensors.

Positive points (SAM-SP, Sec. 4.2 of DESIGN.md): ``n`` points evenly spaced *along* the skeleton of
the slightly dilated class scribble. The skeleton is walked as a graph (depth first from one end of
its longest path), so "evenly spaced" means equal arc length along the stroke; several strokes
share the ``n`` points in proportion to their lengths. Deterministic.

Negative points: points of exactly one other structure, the first in the class's priority list
that has a scribble on the slice, else the background scribble (value 0).

Deliberate differences from the SAM-SP reference code: background negatives come from the
background scribble (0), never from the *unlabeled* value; a slice where a class has no scribble
just omits that class (the reference blanks the whole slice when Myo is missing); the dilation never
grows into another class's scribble when the ignore value is known.

SeSAM points (DESIGN.md Sec. 4.4): :func:`instance_points` / :class:`SeSAMPointsd` draw K random
points per connected instance of a mask, biased towards its skeleton.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_numpy
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import depth_first_order, dijkstra
from skimage.morphology import skeletonize

from scribmed.data.case import CARDIAC, ClassMap

__all__ = [
    "CARDIAC_NEGATIVE_PRIORITY",
    "PAD_LABEL",
    "SeSAMPointsd",
    "ScribblePromptsd",
    "boxes_from_input_frame",
    "boxes_to_input_frame",
    "default_negative_priority",
    "from_input_frame",
    "input_frame_shape",
    "instance_points",
    "mask_box",
    "negative_points",
    "scribble_box",
    "scribble_points",
    "to_input_frame",
]

PointMode = Literal["skeleton", "pixels"]
NegativeMode = Literal["neighbour", "background", "none"]
InputSize = int | tuple[int, int]
Rng = np.random.RandomState | np.random.Generator

#: SAM's label for padding points (ignored by the prompt encoder).
PAD_LABEL = -1

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


# --------------------------------------------------------------------------------------------
# boxes


def mask_box(mask_2d: Any, margin: int = 0) -> tuple[int, int, int, int] | None:
    """Tight box ``(x0, y0, x1, y1)`` (inclusive pixel indices) of a mask, grown by ``margin``.

    The box is clipped to the image. Returns ``None`` for an empty mask.
    """
    m = _as_slice(mask_2d, "mask").astype(bool)
    if not m.any():
        return None
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    h, w = m.shape
    return (
        max(int(cols[0]) - margin, 0),
        max(int(rows[0]) - margin, 0),
        min(int(cols[-1]) + margin, w - 1),
        min(int(rows[-1]) + margin, h - 1),
    )


def scribble_box(scribble_2d: Any, class_index: int, margin: int = 0) -> tuple[int, int, int, int] | None:
    """Box of one class's scribble (see :func:`mask_box`); ``None`` when it has none."""
    return mask_box(_as_slice(scribble_2d) == class_index, margin)


# --------------------------------------------------------------------------------------------
# SAM input frame


def input_frame_shape(original_hw: Sequence[int], input_size: InputSize) -> tuple[int, int]:
    """``(h, w)`` of the image inside SAM's input.

    ``input_size`` int: SAM's ``ResizeLongestSide`` (longest side → ``input_size``, the other
    side ``int(side * scale + 0.5)``, then padded). ``(h, w)``: a plain resize to that shape.
    """
    h, w = (int(v) for v in original_hw)
    if h < 1 or w < 1:
        raise ValueError(f"original size must be positive (H, W), got {tuple(original_hw)}")
    if isinstance(input_size, (int, np.integer)):
        scale = int(input_size) / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)
    ih, iw = (int(v) for v in input_size)
    return ih, iw


def _scales(original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    nh, nw = input_frame_shape(original_hw, input_size)
    return np.array([nw / int(original_hw[1]), nh / int(original_hw[0])], dtype=np.float64)


def to_input_frame(points_xy: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Map ``(..., 2)`` ``(x, y)`` points from the original slice to SAM's input frame (float32).

    Same arithmetic as ``segment_anything``'s ``ResizeLongestSide.apply_coords`` for an int size.
    """
    p = np.asarray(points_xy, dtype=np.float64)
    return (p * _scales(original_hw, input_size)).astype(np.float32)


def from_input_frame(points_xy: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Inverse of :func:`to_input_frame`."""
    p = np.asarray(points_xy, dtype=np.float64)
    return (p / _scales(original_hw, input_size)).astype(np.float32)


def boxes_to_input_frame(boxes: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Map ``(..., 4)`` ``(x0, y0, x1, y1)`` boxes to SAM's input frame (float32)."""
    b = np.asarray(boxes, dtype=np.float64)
    return to_input_frame(b.reshape(*b.shape[:-1], 2, 2), original_hw, input_size).reshape(b.shape)


def boxes_from_input_frame(boxes: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Inverse of :func:`boxes_to_input_frame`."""
    b = np.asarray(boxes, dtype=np.float64)
    return from_input_frame(b.reshape(*b.shape[:-1], 2, 2), original_hw, input_size).reshape(b.shape)


# --------------------------------------------------------------------------------------------
# dictionary transforms


def _output_keys(keys: Sequence[Hashable], output_key: str | Sequence[str]) -> tuple[str, ...]:
    outs = (output_key,) if isinstance(output_key, str) else tuple(output_key)
    if len(outs) != len(keys):
        raise ValueError(f"need one output key per key: keys {list(keys)}, output_key {list(outs)}")
    return outs


def _pack(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-prompt ``(coords (p, 2), labels (p,))`` padded with ``PAD_LABEL`` at (0, 0)."""
    width = max((len(c) for c, _ in rows), default=0)
    coords = np.zeros((len(rows), width, 2), dtype=np.float32)
    labels = np.full((len(rows), width), PAD_LABEL, dtype=np.int32)
    for i, (c, lab) in enumerate(rows):
        coords[i, : len(c)] = c
        labels[i, : len(lab)] = lab
    return coords, labels


class ScribblePromptsd(MapTransform):
    """SAM point (and box) prompts for every foreground class scribbled on a slice.

    Output ``d[output_key]`` is a dict:

    - ``"classes"``: ``list[int]``, the foreground classes with a scribble on the slice (one SAM
      call each; classes without a scribble are omitted, the slice is never blanked);
    - ``"point_coords"``: float32 ``(K, P, 2)`` ``(x, y)``, positives first then negatives;
    - ``"point_labels"``: int32 ``(K, P)``: 1 positive, 0 negative, -1 padding (SAM's padding
      label, at coordinate (0, 0)) where a class has fewer than ``P`` points;
    - ``"boxes"``: float32 ``(K, 4)`` ``(x0, y0, x1, y1)`` scribble boxes, or ``None``;
    - ``"negative_sources"``: ``list[int | None]``, the label value each class's negatives came
      from;
    - ``"original_size"``: ``(H, W)``; ``"input_size"``: the ``input_size`` argument.

    Coordinates are in SAM's input frame when ``input_size`` is given (see
    :func:`to_input_frame`), else in the slice's pixels.

    Args:
        keys: scribble key(s); each value ``(H, W)`` or ``(1, H, W)``.
        class_map: gives the foreground classes and the ignore value.
        classes: explicit foreground classes (overrides ``class_map.foreground``).
        ignore_index: unlabeled value (default ``class_map.ignore_index``).
        n_points: positives per class.
        n_negatives: negatives per class (default ``n_points``).
        mode: ``"skeleton"`` or ``"pixels"`` (see :func:`scribble_points`).
        dilate: dilation before skeletonising.
        negatives: ``"neighbour"`` (priority list, then background scribble), ``"background"``
            (background scribble only) or ``"none"``.
        priority: class → neighbour classes for negatives (default
            :func:`default_negative_priority`, SAM-SP's order for cardiac data).
        background_index: the background scribble's value.
        boxes: also return each class's scribble box.
        box_margin: pixels added around scribble boxes (original frame).
        input_size: SAM's input size (int, longest side) or ``(h, w)``; ``None`` keeps pixels.
        output_key: where the prompt dict goes (one per key).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: neither ``class_map`` nor ``classes`` given, bad options or a non-2D slice.
    """

    def __init__(
        self,
        keys: KeysCollection = ("scribble",),
        class_map: ClassMap | None = None,
        classes: Sequence[int] | None = None,
        ignore_index: int | None = None,
        n_points: int = 10,
        n_negatives: int | None = None,
        mode: PointMode = "skeleton",
        dilate: int = 1,
        negatives: NegativeMode = "neighbour",
        priority: Mapping[int, Sequence[int]] | None = None,
        background_index: int = 0,
        boxes: bool = False,
        box_margin: int = 0,
        input_size: InputSize | None = None,
        output_key: str | Sequence[str] = "prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if class_map is None and classes is None:
            raise ValueError("ScribblePromptsd needs class_map or classes")
        if negatives not in ("neighbour", "background", "none"):
            raise ValueError(f"negatives must be 'neighbour', 'background' or 'none', got {negatives!r}")
        if mode not in ("skeleton", "pixels"):
            raise ValueError(f"mode must be 'skeleton' or 'pixels', got {mode!r}")
        chosen = classes if classes is not None else class_map.foreground  # type: ignore[union-attr]
        self.classes = [int(k) for k in chosen]
        if ignore_index is None and class_map is not None:
            ignore_index = class_map.ignore_index
        self.ignore_index = ignore_index
        self.n_points = int(n_points)
        self.n_negatives = self.n_points if n_negatives is None else int(n_negatives)
        self.mode: PointMode = mode
        self.dilate = int(dilate)
        self.negatives: NegativeMode = negatives
        self.priority = dict(priority) if priority is not None else default_negative_priority(class_map)
        self.background_index = int(background_index)
        self.boxes = bool(boxes)
        self.box_margin = int(box_margin)
        self.input_size = input_size
        self.output_keys = _output_keys(self.keys, output_key)

    def prompts(self, scribble: Any) -> dict[str, Any]:
        """The prompt dict (see the class docstring) for one scribble slice."""
        s = _as_slice(scribble)
        hw = (int(s.shape[0]), int(s.shape[1]))
        present = set(np.unique(s).tolist())
        classes, rows, sources, boxes = [], [], [], []
        for k in self.classes:
            if k not in present:
                continue
            pos = scribble_points(s, k, self.n_points, self.mode, self.dilate, self.ignore_index)
            neg, source = np.zeros((0, 2), np.float32), None
            if self.negatives != "none" and self.n_negatives > 0:
                neg, source = negative_points(
                    s,
                    k,
                    self.priority if self.negatives == "neighbour" else {},
                    n=self.n_negatives,
                    use_background=True,
                    background_index=self.background_index,
                    mode=self.mode,
                    dilate=self.dilate,
                    ignore_index=self.ignore_index,
                )
            coords = np.concatenate([pos, neg], axis=0)
            labels = np.concatenate([np.ones(len(pos), np.int32), np.zeros(len(neg), np.int32)])
            classes.append(k)
            rows.append((coords, labels))
            sources.append(source)
            if self.boxes:
                boxes.append(scribble_box(s, k, self.box_margin))
        coords, labels = _pack(rows)
        box_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if self.boxes else None
        if self.input_size is not None:
            valid = labels != PAD_LABEL
            coords[valid] = to_input_frame(coords[valid], hw, self.input_size)
            if box_arr is not None:
                box_arr = boxes_to_input_frame(box_arr, hw, self.input_size)
        return {
            "classes": classes,
            "point_coords": coords,
            "point_labels": labels,
            "boxes": box_arr,
            "negative_sources": sources,
            "original_size": hw,
            "input_size": self.input_size,
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = self.prompts(d[key])
        return d


# --------------------------------------------------------------------------------------------
# SeSAM instance points


def _rng(rng: Rng | int | None) -> Rng:
    if isinstance(rng, (np.random.RandomState, np.random.Generator)):
        return rng
    return np.random.default_rng(rng)


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
        number (1-based, raster order of the instances' first pixels).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    gen = _rng(rng)
    m = _as_slice(mask_2d, "mask").astype(bool)
    labels, count = ndi.label(m, structure=ndi.generate_binary_structure(2, connectivity))
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
    return _xy(np.concatenate(pts)), np.concatenate(inst)


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


class SeSAMPointsd(Randomizable, MapTransform):
    """Random SeSAM point prompts: ``k`` points per connected instance of each class.

    Reads a label map (mask, coarse mask or dense weak label) and writes ``d[output_key]``:

    - ``"classes"``: ``list[int]``, the class of each prompt row (one row per instance);
    - ``"instances"``: ``list[int]``, the instance number within its class (1-based);
    - ``"point_coords"``: float32 ``(I, P, 2)`` ``(x, y)``; ``"point_labels"``: int32 ``(I, P)``,
      1 or -1 padding (instances smaller than ``k`` pixels);
    - ``"original_size"``, ``"input_size"`` as :class:`ScribblePromptsd`.

    All draws come from ``self.R`` during the one ``randomize`` per call, so
    ``set_random_state`` makes the output reproducible.

    Args:
        keys: label map key(s), ``(H, W)`` or ``(1, H, W)``.
        k: points per instance (SeSAM: 5).
        classes: classes to prompt (default: every non-zero value present except
            ``ignore_index``).
        ignore_index: a value that is not a class (e.g. a scribble's unlabeled value).
        connectivity: 1 or 2 (8-connected instances).
        input_size: SAM's input size; ``None`` keeps pixels.
        output_key: output key(s), one per key.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = ("label",),
        k: int = 5,
        classes: Sequence[int] | None = None,
        ignore_index: int | None = None,
        connectivity: int = 2,
        input_size: InputSize | None = None,
        output_key: str | Sequence[str] = "sesam_prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.ignore_index = ignore_index
        self.connectivity = int(connectivity)
        self.input_size = input_size
        self.output_keys = _output_keys(self.keys, output_key)
        self._drawn: list[dict[str, Any]] = []

    def _classes_of(self, label: np.ndarray) -> list[int]:
        if self.classes is not None:
            return self.classes
        return [int(v) for v in np.unique(label) if v != 0 and v != self.ignore_index]

    def randomize(self, data: Sequence[np.ndarray]) -> None:
        """Draw the points for each label slice in ``data`` (one entry per key) from ``self.R``."""
        self._drawn = []
        for label in data:
            classes, instances, rows = [], [], []
            for c in self._classes_of(label):
                pts, inst = instance_points(label == c, self.k, self.R, self.connectivity)
                for i in np.unique(inst):
                    sel = pts[inst == i]
                    classes.append(c)
                    instances.append(int(i))
                    rows.append((sel, np.ones(len(sel), np.int32)))
            coords, labels = _pack(rows)
            hw = (int(label.shape[0]), int(label.shape[1]))
            if self.input_size is not None:
                valid = labels != PAD_LABEL
                coords[valid] = to_input_frame(coords[valid], hw, self.input_size)
            self._drawn.append(
                {
                    "classes": classes,
                    "instances": instances,
                    "point_coords": coords,
                    "point_labels": labels,
                    "original_size": hw,
                    "input_size": self.input_size,
                }
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        pairs = list(self.key_iterator(d, self.output_keys))
        self.randomize([_as_slice(d[key], "label") for key, _ in pairs])
        for (_, out), prompt in zip(pairs, self._drawn):
            d[out] = prompt
        return d
