"""Synthesise realistic scribbles from a full label volume (to simulate weak supervision).

Real scribbles (ACDC, Valvano et al.) are thin 1-3 px strokes: a curve along the middle of each
structure in every slice where it appears, and a background stroke that loops around the heart at
a margin. About 99% of the pixels stay unlabeled (measured on WSL4MIS ACDC: 98.6-99.2%; a
structure's stroke covers ~5-20% of its pixels, the background stroke <1% of the background).

Per slice and class the synthesiser:

1. takes the class region, keeps its largest connected component and erodes it (less if the
   erosion would empty it) so strokes stay clear of the boundary;
2. builds a 1-px path inside it: the skeleton (``skimage.morphology.skeletonize``) for elongated or
   ring-shaped regions (myocardium, RV crescent, kidneys), an inner iso-distance loop for compact
   blobs (LV cavity, liver, spleen) where a skeleton would shrink to a dot;
3. keeps a random contiguous arc of it (geodesic growth from a random point along the path);
4. optionally thickens it by one pixel, then intersects with the class region.

The background stroke is an iso-distance loop at a random margin around all foreground of the
slice (around the volume's foreground footprint in slices that have none), kept inside the
background and away from the image border. By construction every scribble pixel of class ``k``
lies inside ``label == k``; this is asserted before returning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from scribmed.data.case import ClassMap
from scribmed.data.scribblebench_synthesis import ScribbleBenchStyle, scribblebench_slice

_EIGHT = np.ones((3, 3), dtype=bool)
_CROSS = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class ScribbleStyle:
    """Knobs of the synthesiser (defaults match the ACDC scribbles' statistics roughly).

    Attributes:
        keep_fraction: range of the share of a class path kept as one contiguous stroke.
        background_keep_fraction: same for the background loop.
        erode_px: erosion (px) of a class region before its path is taken (reduced when too thin).
        thicken_prob: probability that a stroke is dilated by one pixel (2-3 px wide).
        background_margin: range of the background loop's distance from the foreground, as a
            fraction of the image's smaller side (ACDC: ~0.08-0.2).
        min_region_px: regions smaller than this get no stroke (annotators skip specks).
        compactness_threshold: ``area / maxdist**2`` below which a region counts as a compact blob
            (a disk gives pi, a thin ring ~8*pi*R/t) and gets an inner loop instead of a skeleton.
        slice_skip_prob: probability of leaving a slice's class unscribbled (annotator omission).
    """

    keep_fraction: tuple[float, float] = (0.5, 0.95)
    background_keep_fraction: tuple[float, float] = (0.6, 1.0)
    erode_px: int = 2
    thicken_prob: float = 0.5
    background_margin: tuple[float, float] = (0.07, 0.16)
    min_region_px: int = 6
    compactness_threshold: float = 8.0
    slice_skip_prob: float = 0.0


#: Strokes for abdominal MRI (liver, kidneys, spleen: larger organs than the heart's, in a body
#: that fills the image): a deeper erosion keeps strokes off organ boundaries, shorter arcs keep a
#: stroke to ~5-15 % of an organ like ACDC's, specks under 20 px (kidney poles in end slices) get
#: none, and the background loop runs closer to the organs (pair it with a body mask as
#: ``background_region`` so it stays inside the body).
ABDOMINAL_STYLE = ScribbleStyle(
    keep_fraction=(0.4, 0.85),
    background_keep_fraction=(0.5, 0.9),
    erode_px=3,
    thicken_prob=0.5,
    background_margin=(0.03, 0.08),
    min_region_px=20,
)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _erode_keep(mask: np.ndarray, px: int) -> np.ndarray:
    """Erode by up to ``px`` pixels, backing off so the result is never empty."""
    for r in range(px, 0, -1):
        er = ndi.binary_erosion(mask, structure=_CROSS, iterations=r)
        if er.sum() >= 3:
            return er
    return mask


def _iso_loop(region: np.ndarray, level: float) -> np.ndarray:
    """The 1-px inner boundary of ``{edt(region) >= level}``: a closed loop inside the region."""
    dist = ndi.distance_transform_edt(region)
    core = dist >= level
    if not core.any():
        core = dist >= dist.max()
    return core & ~ndi.binary_erosion(core, structure=_CROSS)


def _path(region: np.ndarray, style: ScribbleStyle, rng: np.random.Generator) -> np.ndarray:
    """A thin curve inside ``region``: skeleton for elongated shapes, inner loop for blobs."""
    dist = ndi.distance_transform_edt(region)
    maxd = float(dist.max())
    if maxd <= 0:
        return region.copy()
    compact = region.sum() / (maxd * maxd) < style.compactness_threshold
    if compact and maxd >= 3:
        # a loop at 35-70% of the depth (an annotator's "C" or circle inside a cavity)
        curve = _iso_loop(region, rng.uniform(0.35, 0.7) * maxd)
    else:
        curve = skeletonize(region)
    curve &= region
    if not curve.any():
        curve = dist >= maxd
    return _largest_component(curve)


def _geodesic_steps(curve: np.ndarray, start: int) -> np.ndarray:
    """8-connected step distance within ``curve`` from its ``start``-th pixel (row-major order), per
    curve pixel in that order; ``inf`` where unreachable. One breadth-first search (scipy's csgraph)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    ys, xs = np.nonzero(curve)
    n = len(ys)
    index = np.full((curve.shape[0] + 2, curve.shape[1] + 2), -1, dtype=np.int64)
    index[ys + 1, xs + 1] = np.arange(n)
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # half the neighbours: the graph is undirected
        nb = index[ys + 1 + dy, xs + 1 + dx]
        ok = nb >= 0
        rows.append(np.nonzero(ok)[0])
        cols.append(nb[ok])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return shortest_path(graph, directed=False, unweighted=True, indices=start)


def _arc(curve: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A contiguous piece of ``curve`` holding about ``fraction`` of its pixels.

    Grows geodesically (8-connected, within the curve) from a random curve pixel; on a line or a
    loop growth proceeds both ways, hence ``fraction * n / 2`` steps; when the start is at an end of
    an open line (one-sided growth) the arc grows on until it holds ``fraction`` of the pixels or
    all that is reachable. The arc is the curve pixels within the final step count of the start.
    """
    ys, xs = np.nonzero(curve)
    n = len(ys)
    if n == 0 or fraction >= 1.0:
        return curve.copy()
    i = int(rng.integers(n))
    steps = max(1, int(round(fraction * n / 2)))
    dist = _geodesic_steps(curve, i)
    reach = np.sort(dist[np.isfinite(dist)]).astype(np.int64)
    # the fewest steps >= `steps` whose ball holds fraction * n pixels, else every reachable pixel
    enough = np.nonzero(np.arange(1, len(reach) + 1) >= fraction * n)[0]
    radius = max(steps, int(reach[enough[0]])) if enough.size else int(reach[-1])
    grown = np.zeros_like(curve)
    keep = dist <= radius
    grown[ys[keep], xs[keep]] = True
    return grown


def _stroke(region: np.ndarray, style: ScribbleStyle, rng: np.random.Generator) -> Optional[np.ndarray]:
    """The stroke of one class in one slice (full-size mask), computed on the region's bounding box."""
    if region.sum() < style.min_region_px:
        return None
    ys, xs = np.nonzero(region)
    pad = 2
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, region.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, region.shape[1])
    out = np.zeros_like(region)
    out[y0:y1, x0:x1] = _stroke_in(region[y0:y1, x0:x1], style, rng)
    return out


def _stroke_in(region: np.ndarray, style: ScribbleStyle, rng: np.random.Generator) -> np.ndarray:
    main = _largest_component(region)
    inner = _erode_keep(main, style.erode_px)
    curve = _path(inner, style, rng)
    stroke = _arc(curve, rng.uniform(*style.keep_fraction), rng)
    if rng.random() < style.thicken_prob:
        stroke = ndi.binary_dilation(stroke, structure=_CROSS) & _erode_keep(main, 1)
    return stroke & region


def _background_stroke(
    bg: np.ndarray,
    footprint: np.ndarray,
    style: ScribbleStyle,
    rng: np.random.Generator,
) -> Optional[np.ndarray]:
    """A loop through the background at a margin around ``footprint`` (the foreground)."""
    h, w = bg.shape
    border = max(2, int(round(0.03 * min(h, w))))
    allowed = bg.copy()
    allowed[:border] = allowed[-border:] = False
    allowed[:, :border] = allowed[:, -border:] = False
    allowed = ndi.binary_erosion(allowed, structure=_CROSS, iterations=1)
    if allowed.sum() < style.min_region_px:
        allowed = bg
        if allowed.sum() < style.min_region_px:
            return None
    if footprint.any():
        margin = rng.uniform(*style.background_margin) * min(h, w)
        near = ndi.distance_transform_edt(~footprint) <= margin
        loop = near & ~ndi.binary_erosion(near, structure=_CROSS)
        # smooth the loop's route: dilate-then-thin keeps it 1 px while rounding corners
        loop = skeletonize(ndi.binary_dilation(loop, structure=_CROSS)) & allowed
    else:
        # nothing anywhere: a loop around the image centre
        yy, xx = np.mgrid[:h, :w]
        r = rng.uniform(0.15, 0.3) * min(h, w)
        d = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
        loop = (np.abs(d - r) <= 0.5) & allowed
    if loop.sum() < style.min_region_px:
        # no room for a loop (foreground fills the field of view): skeleton of what is left
        loop = skeletonize(_erode_keep(_largest_component(allowed), style.erode_px)) & allowed
    if not loop.any():
        return None
    stroke = _arc(_largest_component(loop), rng.uniform(*style.background_keep_fraction), rng)
    if rng.random() < style.thicken_prob:
        stroke = ndi.binary_dilation(stroke, structure=_CROSS) & allowed
    return stroke & bg


#: Named styles (``scribmed data weak make --scribble-style``, the ``chaos-t2-nifti`` layout's
#: ``scribble_style``): ``acdc`` (skeleton arcs like the real ACDC scribbles), ``abdominal`` (the same
#: for abdominal organs), ``scribblebench`` (interior curves + partial boundaries, some slices left out:
#: :mod:`scribmed.data.scribblebench_synthesis`).
SCRIBBLE_STYLES: dict[str, "ScribbleStyle | ScribbleBenchStyle"] = {
    "acdc": ScribbleStyle(),
    "abdominal": ABDOMINAL_STYLE,
    "scribblebench": ScribbleBenchStyle(),
}


def named_style(name: str) -> "ScribbleStyle | ScribbleBenchStyle":
    """The style called ``name`` in :data:`SCRIBBLE_STYLES` (``ValueError`` naming the known ones)."""
    if name not in SCRIBBLE_STYLES:
        raise ValueError(f"unknown scribble style {name!r}; known: {', '.join(SCRIBBLE_STYLES)}")
    return SCRIBBLE_STYLES[name]


def synthesize_scribbles(
    label: np.ndarray,
    class_map: ClassMap | None = None,
    *,
    ignore_index: Optional[int] = None,
    classes: Optional[Sequence[int]] = None,
    seed: int | np.random.Generator | None = 0,
    style: ScribbleStyle | ScribbleBenchStyle | None = None,
    background: bool = True,
    background_region: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Scribbles like the real ACDC ones from a full label volume.

    Args:
        label: integer labels ``(slices, H, W)`` (or ``(H, W)``); 0 is background.
        class_map: gives the classes and the ignore value (e.g. ``CARDIAC``: classes 0-3, ignore 4).
        ignore_index: the unlabeled value when no ``class_map`` is given (default: max class + 1).
        classes: foreground classes to scribble (default: the class map's, else those present).
        seed: int seed or a ``numpy.random.Generator``; same seed, same scribbles.
        style: stroke parameters: :class:`ScribbleStyle` (ACDC-like arcs, default) or
            :class:`~scribmed.data.scribblebench_synthesis.ScribbleBenchStyle`.
        background: also draw the background stroke (class 0).
        background_region: optional boolean mask shaped like ``label`` where background strokes
            may go (e.g. the body, so strokes avoid the air around it); default everywhere.

    Returns:
        ``uint16`` array shaped like ``label``: class values on strokes, ``ignore_index`` elsewhere.

    Raises:
        ValueError: ``label`` is not 2D/3D integer data, or a label value equals the ignore value.
    """
    lab = np.asarray(label)
    if lab.ndim not in (2, 3):
        raise ValueError(f"label must be (slices, H, W) or (H, W), got shape {lab.shape}")
    if lab.size and not (np.issubdtype(lab.dtype, np.integer) or np.array_equal(lab, np.round(lab))):
        raise ValueError("label must hold integer class values")
    lab = lab.astype(np.int64, copy=False)
    squeeze = lab.ndim == 2
    if squeeze:
        lab = lab[None]
    style = style or ScribbleStyle()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    present = [int(v) for v in np.unique(lab)]
    if class_map is not None:
        ignore = class_map.ignore_index if ignore_index is None else ignore_index
        fg = list(classes) if classes is not None else class_map.foreground
    else:
        ignore = ignore_index if ignore_index is not None else (max(present + [0]) + 1)
        fg = list(classes) if classes is not None else [v for v in present if v != 0]
    if ignore in present:
        raise ValueError(f"label contains the ignore value {ignore}; pass the right class_map/ignore_index")
    if ignore < 0 or ignore > np.iinfo(np.uint16).max:
        raise ValueError(f"ignore value {ignore} does not fit uint16")

    region3 = None
    if background_region is not None:
        region3 = np.asarray(background_region, dtype=bool)
        region3 = region3[None] if squeeze and region3.ndim == 2 else region3
        if region3.shape != lab.shape:
            raise ValueError(f"background_region shape {region3.shape} does not match label shape {lab.shape}")
    out = np.full(lab.shape, ignore, dtype=np.uint16)
    footprint_all = ndi.binary_dilation((lab > 0).any(axis=0), iterations=2)
    for z in range(lab.shape[0]) if isinstance(style, ScribbleBenchStyle) else ():
        out[z] = scribblebench_slice(lab[z], fg, ignore, style, rng, background,
                                     None if region3 is None else region3[z])
    for z in range(lab.shape[0]) if not isinstance(style, ScribbleBenchStyle) else ():
        sl = lab[z]
        for k in fg:
            region = sl == k
            if not region.any() or rng.random() < style.slice_skip_prob:
                continue
            stroke = _stroke(region, style, rng)
            if stroke is not None:
                out[z][stroke] = k
        if background:
            bg = sl == 0
            if region3 is not None:
                bg = bg & region3[z]
            fp = sl > 0
            stroke = _background_stroke(bg, fp if fp.any() else footprint_all, style, rng)
            if stroke is not None:
                out[z][stroke & (out[z] == ignore)] = 0
    for k in [0, *fg]:
        assert not np.any((out == k) & (lab != k)), f"scribble of class {k} left its region"
    return out[0] if squeeze else out


def scribble_stats(
    scribble: np.ndarray,
    label: Optional[np.ndarray] = None,
    ignore_index: int = 4,
    class_names: Optional[Mapping[int, str]] = None,
) -> dict:
    """How much a scribble labels: overall and per class.

    Returns:
        ``{"unlabeled_fraction": float, "classes": {k: {"name", "pixels", "fraction_of_image",
        "fraction_of_region" (if label), "slices_with_scribble", "slices_with_class" (if label),
        "outside_region" (if label: scribble pixels of k where label != k)}}}``.
    """
    s = np.asarray(scribble)
    lab = None if label is None else np.asarray(label)
    if lab is not None and lab.shape != s.shape:
        raise ValueError(f"scribble {s.shape} and label {lab.shape} differ in shape")
    s3 = s[None] if s.ndim == 2 else s
    l3 = None if lab is None else (lab[None] if lab.ndim == 2 else lab)
    values = sorted({int(v) for v in np.unique(s3)} - {ignore_index})
    if class_names:
        values = sorted(set(values) | set(class_names))
    total = s3.size
    stats: dict = {"unlabeled_fraction": float((s3 == ignore_index).sum() / max(total, 1)), "classes": {}}
    for k in values:
        m = s3 == k
        entry = {
            "name": (class_names or {}).get(k, str(k)),
            "pixels": int(m.sum()),
            "fraction_of_image": float(m.sum() / max(total, 1)),
            "slices_with_scribble": int(m.any(axis=(1, 2)).sum()),
        }
        if l3 is not None:
            region = l3 == k
            entry["fraction_of_region"] = float(m.sum() / region.sum()) if region.any() else 0.0
            entry["slices_with_class"] = int(region.any(axis=(1, 2)).sum())
            entry["outside_region"] = int((m & ~region).sum())
        stats["classes"][k] = entry
    return stats
