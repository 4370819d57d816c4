"""Prompting SAM once per instance and turning its answers into an instance map.

The instance-level recipes (SeSAM's instance priors, S4M, WISH) prompt SAM with one prompt row per
object, e.g. nucleus: a few points and/or a box. SAM answers every row with ``M`` (= 3) candidate
masks and a predicted IoU each; one candidate per row is kept by a rule of
:mod:`scribmed.sam.mask_selection` (``"score"``: SAM's highest predicted IoU, S4M's choice;
``"sesam"``: coverage / compatibility against the row's weak region; ``"random"``), and the kept
masks, which may overlap, are painted into one instance map by :func:`masks_to_instances`.

- :func:`prompt_instances`: prompts → candidates, IoUs, chosen masks (batched decoder calls).
- :func:`masks_to_instances`: per-instance masks + scores → ``(H, W)`` int32 instance map.
- :func:`refine_instances`: S4M's refinement of a teacher's instance map (K stochastic points per
  instance from the teacher's probability, SAM, best mask, rebuilt map).
- :func:`sesam_instance_prompts`: SeSAM's skeleton-grid points per instance of a weak-label map.

Coordinates are ``(x, y) = (column, row)`` pixels of the original slice and boxes ``(x0, y0, x1,
y1)`` inclusive pixel corners (as :mod:`scribmed.transforms.weak_prompts`); they are mapped into
the backend's input frame with ``backend.to_input_coords`` (a box as its two corner points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from scribmed.sam.mask_selection import (
    SELECTION_RULES,
    MaskSelection,
    gather_masks,
    select_masks,
)
from scribmed.transforms.prompt_packing import PAD_LABEL
from scribmed.transforms.prompt_points import _as_slice
from scribmed.data.sesam_sampling import _instance_draw
from scribmed.transforms.stochastic_points import sample_instance_points

if TYPE_CHECKING:
    from scribmed.networks.sam_backends import SamBackend

Rng = np.random.RandomState | np.random.Generator

__all__ = [
    "InstancePrompting",
    "masks_to_instances",
    "prompt_instances",
    "refine_instances",
    "sesam_instance_prompts",
]


@dataclass
class InstancePrompting:
    """SAM's answers to ``N`` instance prompt rows (numpy, on the original ``(H, W)`` grid).

    Attributes:
        candidates: float32 ``(N, M, H, W)`` logits of SAM's candidates, or ``None`` when
            :func:`prompt_instances` ran with ``keep_candidates=False`` (only the chosen masks
            are then kept, bounding memory by ``N x H x W`` booleans).
        iou: float32 ``(N, M)`` SAM's predicted IoUs.
        index: int64 ``(N,)`` the chosen candidate per row.
        masks: bool ``(N, H, W)`` the chosen masks (logit ``> threshold``).
        selection: the :class:`~scribmed.sam.mask_selection.MaskSelection` of all rows (numpy
            coverage / compatibility against the regions; ``summary()`` for logging).
    """

    candidates: Optional[np.ndarray]
    iou: np.ndarray
    index: np.ndarray
    masks: np.ndarray
    selection: MaskSelection

    @property
    def scores(self) -> np.ndarray:
        """float32 ``(N,)`` predicted IoU of each chosen mask."""
        return self.iou[np.arange(self.index.size), self.index] if self.index.size else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return int(self.index.size)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _rows(name: str, x: Any, n: Optional[int]) -> int:
    rows = int(x.shape[0])
    if n is not None and rows != n:
        raise ValueError(f"{name} has {rows} prompt rows, but another prompt has {n}")
    return rows


def _selection_rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):  # e.g. a transform's self.R: derive a Generator once
        return np.random.default_rng(int(seed.randint(0, 2**31 - 1)))
    return np.random.default_rng(seed)


def prompt_instances(
    backend: "SamBackend",
    embedding: Any,
    hw: Sequence[int],
    point_coords: Any = None,
    point_labels: Any = None,
    boxes: Any = None,
    regions: Any = None,
    rule: str = "score",
    min_coverage: float = 0.3,
    min_compatibility: float = 0.7,
    batch_size: int = 64,
    seed: int | np.random.Generator | np.random.RandomState | None = None,
    keep_candidates: bool = True,
    threshold: float = 0.0,
) -> InstancePrompting:
    """Prompt SAM with one row per instance and keep one of its candidate masks per row.

    Rows are decoded ``batch_size`` at a time (one ``backend.decode(..., multimask_output=True)``
    per batch, all of an image's rows in ``ceil(N / batch_size)`` calls), upsampled with
    ``backend.postprocess`` and chosen per batch with
    :func:`~scribmed.sam.mask_selection.select_masks`. Memory: each batch holds
    ``batch_size x M x H x W`` float32 logits; with ``keep_candidates`` all ``N x M x H x W`` are
    kept (on the CPU), else only the chosen boolean masks. Runs without gradients.

    Args:
        backend: a SAM backend (:class:`~scribmed.networks.sam_backends.SamBackend` interface).
        embedding: the slice's image embedding as ``backend.decode`` takes it (e.g.
            ``(1, 256, 64, 64)``); a numpy array is converted to a tensor, anything else is
            passed to ``backend.decode`` unchanged.
        hw: ``(H, W)`` of the original slice.
        point_coords: ``(N, P, 2)`` ``(x, y)`` original pixels, or ``None``.
        point_labels: ``(N, P)``: 1 positive, 0 negative, -1 padding (default: all 1).
        boxes: ``(N, 4)`` ``(x0, y0, x1, y1)`` original pixels (inclusive corners), or ``None``.
        regions: ``(N, H, W)`` bool weak region of each row (needed by ``"sesam"``; optional
            otherwise, where it only feeds the coverage / compatibility statistics, which are 0
            without it).
        rule: ``"score"`` (SAM's predicted IoU, default), ``"sesam"`` or ``"random"``.
        min_coverage, min_compatibility: ``"sesam"``'s thresholds.
        batch_size: prompt rows per decoder call.
        seed: ``"random"``'s seed or generator.
        keep_candidates: keep every candidate's logits in the result.
        threshold: logit threshold of a mask (SAM: 0).

    Returns:
        An :class:`InstancePrompting`.

    Raises:
        ValueError: no prompt, rows disagreeing in number, bad shapes, unknown rule, or
            ``"sesam"`` without regions.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"rule must be one of {', '.join(SELECTION_RULES)}, got {rule!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    h, w = int(hw[0]), int(hw[1])
    if point_coords is None and boxes is None:
        raise ValueError("give point_coords and/or boxes (one prompt row per instance)")
    n: Optional[int] = None
    coords = labels = box_t = None
    if point_coords is not None:
        coords = torch.as_tensor(_np(point_coords), dtype=torch.float32)
        if coords.ndim != 3 or coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be (N, P, 2) (x, y), got {tuple(coords.shape)}")
        n = _rows("point_coords", coords, n)
        if point_labels is None:
            labels = torch.ones(coords.shape[:2], dtype=torch.int64)
        else:
            labels = torch.as_tensor(_np(point_labels), dtype=torch.int64)
            if tuple(labels.shape) != tuple(coords.shape[:2]):
                raise ValueError(f"point_labels must be (N, P) = {tuple(coords.shape[:2])}, got {tuple(labels.shape)}")
        coords = torch.as_tensor(backend.to_input_coords(coords, (h, w)), dtype=torch.float32)
    elif point_labels is not None:
        raise ValueError("point_labels given without point_coords")
    if boxes is not None:
        box_t = torch.as_tensor(_np(boxes), dtype=torch.float32)
        if box_t.ndim != 2 or box_t.shape[-1] != 4:
            raise ValueError(f"boxes must be (N, 4) (x0, y0, x1, y1), got {tuple(box_t.shape)}")
        n = _rows("boxes", box_t, n)
        corners = backend.to_input_coords(box_t.reshape(-1, 2, 2), (h, w))  # both corners as (x, y) points
        box_t = torch.as_tensor(corners, dtype=torch.float32).reshape(-1, 4)
    assert n is not None
    if regions is not None:
        if tuple(regions.shape) != (n, h, w):
            raise ValueError(f"regions must be (N, H, W) = {(n, h, w)}, got {tuple(regions.shape)}")
    elif rule == "sesam":
        raise ValueError("rule 'sesam' needs regions (N, H, W): the weak-label region of each instance")
    if isinstance(embedding, np.ndarray):  # e.g. a memory-mapped cache entry
        embedding = torch.from_numpy(np.ascontiguousarray(embedding))
    gen = _selection_rng(seed)
    no_region = np.zeros((h, w), dtype=bool)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("cand", "iou", "index", "masks", "cov", "comp", "qual", "fb")}
    with torch.no_grad():
        for start in range(0, n, int(batch_size)):
            sl = slice(start, min(start + int(batch_size), n))
            low, iou = backend.decode(
                embedding,
                point_coords=None if coords is None else coords[sl],
                point_labels=None if labels is None else labels[sl],
                boxes=None if box_t is None else box_t[sl],
                multimask_output=True,
            )
            logits = backend.postprocess(low, (h, w)).float()
            reg = no_region if regions is None else regions[sl]
            sel = select_masks(logits, reg, iou, rule=rule, min_coverage=min_coverage,  # type: ignore[arg-type]
                               min_compatibility=min_compatibility, threshold=threshold, seed=gen)
            parts["masks"].append(_np(gather_masks(logits, sel.index) > threshold))
            if keep_candidates:
                parts["cand"].append(_np(logits).astype(np.float32, copy=False))
            for key, value in (("iou", iou), ("index", sel.index), ("cov", sel.coverage), ("comp", sel.compatibility),
                               ("qual", sel.qualified), ("fb", sel.fallback)):
                parts[key].append(_np(value))
    m = int(parts["iou"][0].shape[1]) if parts["iou"] else 3

    def cat(key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.concatenate(parts[key]).astype(dtype, copy=False) if parts[key] else np.zeros(shape, dtype)

    selection = MaskSelection(cat("index", (0,), np.int64), cat("cov", (0, m), np.float32),
                              cat("comp", (0, m), np.float32), cat("qual", (0, m), bool), cat("fb", (0,), bool),
                              rule=rule)
    return InstancePrompting(
        candidates=cat("cand", (0, m, h, w), np.float32) if keep_candidates else None,
        iou=cat("iou", (0, m), np.float32),
        index=selection.index,
        masks=cat("masks", (0, h, w), bool),
        selection=selection,
    )


def masks_to_instances(
    masks: Any,
    scores: Any,
    ids: Optional[Sequence[int] | np.ndarray] = None,
    min_size: int = 5,
    connectivity: int = 2,
) -> np.ndarray:
    """Paint per-instance masks into one instance map, higher score winning overlaps.

    Each pixel goes to the highest-scoring mask that covers it (ties: the lower row). The pixels
    an instance keeps are then split into connected pieces (``connectivity`` 1: 4-, 2:
    8-connected) and pieces smaller than ``min_size`` pixels become background; an instance with
    no piece left is dropped.

    Args:
        masks: ``(N, H, W)`` bool masks (numpy or torch).
        scores: ``(N,)`` score per mask (e.g. SAM's predicted IoU).
        ids: optional ``(N,)`` distinct positive ids; each surviving instance keeps its id (e.g.
            the teacher's). Default: ids ``1..n`` consecutive over the survivors in descending
            score order (ties: lower row first).
        min_size: smallest piece kept (pixels; ``<= 1`` keeps everything).
        connectivity: 1 or 2.

    Returns:
        int32 ``(H, W)`` instance map, 0 background.

    Raises:
        ValueError: shapes disagree, ``ids`` not distinct positive integers, bad ``min_size``.
    """
    mk = _np(masks).astype(bool, copy=False)
    if mk.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {mk.shape}")
    sc = _np(scores).astype(np.float64).reshape(-1)
    n = mk.shape[0]
    if sc.size != n:
        raise ValueError(f"need one score per mask: {n} masks, {sc.size} scores")
    if int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    if ids is not None:
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids_arr.size != n or (ids_arr <= 0).any() or np.unique(ids_arr).size != n:
            raise ValueError(f"ids must be {n} distinct positive integers, got {ids_arr.tolist()}")
    out = np.zeros(mk.shape[1:], dtype=np.int32)
    if n == 0:
        return out
    order = np.argsort(-sc, kind="stable")  # best first
    ranked = mk[order]
    covered = ranked.any(axis=0)
    owner = np.where(covered, np.argmax(ranked, axis=0), -1)  # first True = best-scoring mask
    structure = ndi.generate_binary_structure(2, connectivity)
    next_id = 1
    for rank in range(n):
        own = owner == rank
        if not own.any():
            continue
        if int(min_size) > 1:
            pieces, count = ndi.label(own, structure=structure)
            sizes = np.bincount(pieces.ravel(), minlength=count + 1)
            keep = sizes >= int(min_size)
            keep[0] = False
            own = keep[pieces]
            if not own.any():
                continue
        if ids is None:
            out[own] = next_id
            next_id += 1
        else:
            out[own] = int(ids_arr[order[rank]])
    return out


def refine_instances(
    backend: "SamBackend",
    embedding: Any,
    hw: Sequence[int],
    instance: Any,
    prob: Any,
    k: int = 3,
    rule: str = "score",
    rng: Rng | int | None = None,
    min_size: int = 5,
    batch_size: int = 64,
    min_coverage: float = 0.3,
    min_compatibility: float = 0.7,
    keep_ids: bool = True,
    box_margin: Optional[int] = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """S4M's SAM refinement of a teacher's instance map.

    For each teacher instance, ``k`` positive points are drawn from ``prob`` restricted to its
    mask (:func:`~scribmed.transforms.stochastic_points.sample_instance_points`); SAM answers each
    instance's points with its candidates, one is kept by ``rule`` (``"sesam"``: the teacher's
    instance mask is the region), and :func:`masks_to_instances` paints them by predicted IoU.

    Args:
        backend: a SAM backend.
        embedding: the slice's image embedding.
        hw: ``(H, W)`` of the slice (= the instance map's shape).
        instance: ``(H, W)`` (or ``(1, H, W)``) teacher instance map.
        prob: ``(H, W)`` teacher foreground probability (``>= 0``).
        k: points per instance (S4M: 3).
        rule: ``"score"`` (S4M), ``"sesam"`` or ``"random"``.
        rng: ``RandomState``, ``Generator`` or seed for the points (and ``"random"``).
        min_size: smallest piece kept in the refined map.
        batch_size: prompt rows per decoder call.
        min_coverage, min_compatibility: ``"sesam"``'s thresholds.
        keep_ids: refined instances keep the teacher's ids (else ``1..n`` by score).
        box_margin: also prompt with each teacher instance's bounding box grown by this many
            pixels (``None``: points only, as S4M; box-trained backends such as LiteMedSAM answer
            points alone poorly).

    Returns:
        ``(refined, stats)``: int32 ``(H, W)`` instance map and ``{"instances", "kept",
        "mean_iou", "rows", "fallback_rate", "coverage", "compatibility"}`` (coverage /
        compatibility of the chosen masks against the teacher's masks).
    """
    inst = _as_slice(instance, "instance").astype(np.int64, copy=False)
    h, w = int(hw[0]), int(hw[1])
    if inst.shape != (h, w):
        raise ValueError(f"instance map {inst.shape} does not match hw {(h, w)}")
    gen: Rng = rng if isinstance(rng, (np.random.RandomState, np.random.Generator)) else np.random.default_rng(rng)
    coords, labels, ids = sample_instance_points(prob, inst, k, gen)
    stats: dict[str, float] = {"instances": float(ids.size)}
    if ids.size == 0:
        return np.zeros((h, w), np.int32), {**stats, "kept": 0.0, "mean_iou": 0.0, "rows": 0.0, "fallback_rate": 0.0,
                                            "coverage": 0.0, "compatibility": 0.0}
    regions = inst[None] == ids[:, None, None]
    boxes = None
    if box_margin is not None:
        m = int(box_margin)
        boxes = np.zeros((ids.size, 4), np.float32)
        for n, region in enumerate(regions):
            ys, xs = np.nonzero(region)
            boxes[n] = (max(xs.min() - m, 0), max(ys.min() - m, 0), min(xs.max() + m, w - 1), min(ys.max() + m, h - 1))
    res = prompt_instances(backend, embedding, (h, w), coords, labels, boxes=boxes, regions=regions, rule=rule,
                           min_coverage=min_coverage, min_compatibility=min_compatibility,
                           batch_size=batch_size, seed=gen, keep_candidates=False)
    refined = masks_to_instances(res.masks, res.scores, ids if keep_ids else None, min_size)
    kept = np.unique(refined)
    stats.update(kept=float((kept > 0).sum()), mean_iou=float(res.scores.mean()), **res.selection.summary())
    return refined, stats


def sesam_instance_prompts(
    regions: Any,
    k: int = 5,
    rng: Rng | int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SeSAM's ``k`` skeleton-grid points inside each instance's weak region.

    Per instance id ``i > 0`` of ``regions`` (its points, strokes or coarse mask, which may be in
    several pieces), the grid rule of :mod:`scribmed.transforms.sesam_points` is applied to the
    region's pixels: cells of side ``sqrt(area / k)`` over its box, ``k`` cells at random, and in
    each a pixel drawn with probability proportional to the region's normalised distance
    transform. A region of fewer than ``k`` pixels gives all its pixels, the row padded with
    label -1 points at ``(0, 0)`` (ignored by SAM).

    Args:
        regions: ``(H, W)`` (or ``(1, H, W)``) int map of per-instance weak regions (0 none;
            negative values ignored).
        k: points per instance (SeSAM: 5).
        rng: ``RandomState``, ``Generator`` or seed.

    Returns:
        ``(coords, labels, ids)``: float32 ``(N, k, 2)`` ``(x, y)``, int64 ``(N, k)`` (1 or -1
        padding) and int64 ``(N,)`` ascending instance ids.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = int(k)
    reg = _as_slice(regions, "regions").astype(np.int64, copy=False)
    gen: Rng = rng if isinstance(rng, (np.random.RandomState, np.random.Generator)) else np.random.default_rng(rng)
    ids = np.unique(reg)
    ids = ids[ids > 0]
    coords = np.zeros((ids.size, k, 2), dtype=np.float32)
    labels = np.full((ids.size, k), PAD_LABEL, dtype=np.int64)
    boxes = ndi.find_objects(np.where(reg > 0, reg, 0))
    for row, i in enumerate(ids):
        box = boxes[int(i) - 1]
        local = reg[box] == i
        pix = np.argwhere(local)
        dist = ndi.distance_transform_edt(np.pad(local, 1))[1:-1, 1:-1]
        weight = dist[pix[:, 0], pix[:, 1]] / dist.max()
        chosen = _instance_draw(pix, weight, k, gen) + np.array([box[0].start, box[1].start])
        coords[row, : len(chosen)] = chosen[:, ::-1]  # (row, col) -> (x, y)
        labels[row, : len(chosen)] = 1
    return coords, labels, ids.astype(np.int64)
