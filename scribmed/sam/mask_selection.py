"""Choosing one of SAM's candidate masks per prompt (SeSAM's rule and ablations).

SAM answers a prompt with ``M`` (= 3 with ``multimask_output``) candidate masks ``S_j`` and a
predicted IoU per candidate. Given the weak label's region ``W`` of that prompt (a boolean
``(H, W)``: the class's scribble pixels, the box's inside, or the points' pixels), per candidate:

- coverage ``|S ∩ W| / |W|`` (0 when ``W`` is empty),
- compatibility ``|S ∩ W| / |S|`` (0 when ``S`` is empty: an empty mask is never compatible).

Rules (``rule=``):

- ``"sesam"`` (default): the candidates with coverage ``>= min_coverage`` (0.3) **and**
  compatibility ``>= min_compatibility`` (0.7) qualify; the most compatible of them is taken. When
  none qualifies, the most compatible candidate overall (``fallback`` is True). Ties: higher
  predicted IoU, then lower index (without ``iou``: lower index).
- ``"score"``: SAM's own choice, the highest predicted IoU (ties: lower index).
- ``"random"``: uniform over the candidates, from a seeded ``numpy`` generator.

Candidates are logits (a pixel is in ``S`` when its logit ``> threshold``, SAM's 0) or booleans,
on the same grid as ``W``; batched over ``K`` prompt rows. Numpy in → numpy out; torch in →
torch out on the input's device (the pixel counts are reduced on that device).

Typical use with a backend (all rows of a slice in one decoder call)::

    low, iou = backend.decode(emb, coords, labels, boxes, multimask_output=True)
    logits = backend.postprocess(low, hw)            # (K, 3, H, W)
    sel = select_masks(logits, regions, iou)          # regions (K, H, W) bool
    chosen = gather_masks(logits, sel.index)          # (K, H, W)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

import numpy as np
import torch

__all__ = [
    "SELECTION_RULES",
    "MaskSelection",
    "MaskSelectionConfig",
    "MaskSelector",
    "gather_masks",
    "mask_stats",
    "select_masks",
]

SelectionRule = Literal["sesam", "score", "random"]
SELECTION_RULES: tuple[str, ...] = ("sesam", "score", "random")


@dataclass
class MaskSelection:
    """The chosen candidate per prompt row and the statistics behind it.

    Arrays are ``(K,)`` / ``(K, M)`` for batched input, ``()`` / ``(M,)`` for one prompt; numpy
    or torch like the candidates.

    Attributes:
        index: int64 chosen candidate per row.
        coverage: float32 ``|S ∩ W| / |W|`` per candidate.
        compatibility: float32 ``|S ∩ W| / |S|`` per candidate.
        qualified: bool, candidates meeting both thresholds (always computed, whatever the rule).
        fallback: bool per row, no candidate qualified (for ``"sesam"`` the choice was the most
            compatible overall).
        rule: the rule used.
    """

    index: Any
    coverage: Any
    compatibility: Any
    qualified: Any
    fallback: Any
    rule: str

    def summary(self) -> dict[str, float]:
        """Scalars for logging: rows, fallback rate, mean coverage / compatibility of the chosen masks."""
        idx = _np(self.index).reshape(-1)
        cov = _np(self.coverage).reshape(idx.size, -1)
        comp = _np(self.compatibility).reshape(idx.size, -1)
        rows = np.arange(idx.size)
        n = int(idx.size)
        return {
            "rows": float(n),
            "fallback_rate": float(_np(self.fallback).mean()) if n else 0.0,
            "coverage": float(cov[rows, idx].mean()) if n else 0.0,
            "compatibility": float(comp[rows, idx].mean()) if n else 0.0,
        }


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _binary(candidates: Any, threshold: float) -> Any:
    if isinstance(candidates, torch.Tensor):
        return candidates if candidates.dtype == torch.bool else candidates > threshold
    c = np.asarray(candidates)
    return c if c.dtype == bool else c > threshold


def mask_stats(candidates: Any, regions: Any, threshold: float = 0.0) -> tuple[Any, Any]:
    """Coverage and compatibility of every candidate.

    Args:
        candidates: ``(K, M, H, W)`` (or ``(M, H, W)``) logits or booleans.
        regions: ``(K, H, W)`` (or ``(H, W)``, shared by every row) weak-label regions, non-zero = in ``W``.
        threshold: logit threshold for non-boolean candidates (``S = logits > threshold``).

    Returns:
        ``(coverage, compatibility)``, float32 ``(K, M)`` (``(M,)`` for unbatched candidates),
        numpy or torch like ``candidates``.
    """
    is_torch = isinstance(candidates, torch.Tensor)
    s = _binary(candidates, threshold)
    single = s.ndim == 3
    if single:
        s = s[None]
    if s.ndim != 4:
        raise ValueError(f"candidates must be (M, H, W) or (K, M, H, W), got shape {tuple(s.shape)}")
    if is_torch:
        w = torch.as_tensor(regions, device=s.device) != 0
    else:
        w = np.asarray(regions.detach().cpu() if isinstance(regions, torch.Tensor) else regions) != 0
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or tuple(w.shape[-2:]) != tuple(s.shape[-2:]) or w.shape[0] not in (1, s.shape[0]):
        raise ValueError(f"regions must be (H, W) or (K, H, W) matching candidates {tuple(s.shape)}, "
                         f"got shape {tuple(w.shape)}")
    w = w[:, None]  # (K|1, 1, H, W)
    if is_torch:
        inter = (s & w).sum(dim=(-2, -1)).double()
        area_s = s.sum(dim=(-2, -1)).double()
        area_w = w.sum(dim=(-2, -1)).double().expand_as(inter)
        cov = torch.where(area_w > 0, inter / area_w.clamp(min=1), torch.zeros_like(inter)).float()
        comp = torch.where(area_s > 0, inter / area_s.clamp(min=1), torch.zeros_like(inter)).float()
    else:
        inter = (s & w).sum(axis=(-2, -1)).astype(np.float64)
        area_s = s.sum(axis=(-2, -1)).astype(np.float64)
        area_w = np.broadcast_to(w.sum(axis=(-2, -1)).astype(np.float64), inter.shape)
        cov = np.where(area_w > 0, inter / np.maximum(area_w, 1), 0.0).astype(np.float32)
        comp = np.where(area_s > 0, inter / np.maximum(area_s, 1), 0.0).astype(np.float32)
    return (cov[0], comp[0]) if single else (cov, comp)


def _generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def select_masks(
    candidates: Any,
    regions: Any,
    iou: Any = None,
    rule: SelectionRule = "sesam",
    min_coverage: float = 0.3,
    min_compatibility: float = 0.7,
    threshold: float = 0.0,
    seed: int | np.random.Generator | None = 0,
) -> MaskSelection:
    """Pick one candidate mask per prompt row (rules in the module docstring).

    Args:
        candidates: ``(K, M, H, W)`` or ``(M, H, W)`` logits or booleans (SAM: ``M = 3``).
        regions: the weak label's region per row, ``(K, H, W)`` or ``(H, W)`` (shared).
        iou: SAM's predicted IoUs ``(K, M)`` / ``(M,)``; needed by ``"score"``, tie-break of ``"sesam"``.
        rule: ``"sesam"``, ``"score"`` or ``"random"``.
        min_coverage, min_compatibility: ``"sesam"``'s thresholds (inclusive).
        threshold: logit threshold for non-boolean candidates.
        seed: ``"random"``'s seed or generator (a generator advances between calls; an int
            gives the same draw every call).

    Returns:
        A :class:`MaskSelection` (numpy or torch like ``candidates``).
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"rule must be one of {', '.join(SELECTION_RULES)}, got {rule!r}")
    cov_t, comp_t = mask_stats(candidates, regions, threshold)
    single = cov_t.ndim == 1
    cov, comp = _np(cov_t).reshape(-1, cov_t.shape[-1]), _np(comp_t).reshape(-1, comp_t.shape[-1])
    k, m = cov.shape
    scores: Optional[np.ndarray] = None
    if iou is not None:
        raw = _np(iou).astype(np.float64)
        if raw.size != k * m:
            raise ValueError(f"iou must have shape {(m,) if single else (k, m)}, got {raw.shape}")
        scores = raw.reshape(k, m)
    qualified = (cov >= min_coverage) & (comp >= min_compatibility)
    fallback = ~qualified.any(axis=1)
    if rule == "score":
        if scores is None:
            raise ValueError("rule 'score' needs SAM's predicted IoUs (iou=)")
        index = np.argmax(scores, axis=1)  # first maximum: lower index on ties
    elif rule == "random":
        index = _generator(seed).integers(0, m, size=k)
    else:
        index = np.empty(k, dtype=np.int64)
        for r in range(k):
            pool = np.nonzero(qualified[r])[0] if qualified[r].any() else np.arange(m)
            tie = scores[r, pool] if scores is not None else np.zeros(pool.size)
            # lexsort: last key is primary; -compat (desc), -iou (desc), index (asc)
            index[r] = pool[np.lexsort((pool, -tie, -comp[r, pool].astype(np.float64)))[0]]
    index = index.astype(np.int64)
    out = [index, cov, comp, qualified, fallback]
    if single:
        out = [a[0] for a in out]
    if isinstance(candidates, torch.Tensor):
        dev = candidates.device
        out = [torch.as_tensor(np.ascontiguousarray(a)).to(dev) for a in out]
        out[1], out[2] = cov_t, comp_t  # keep the device-computed float32 stats
    return MaskSelection(*out, rule=rule)


def gather_masks(candidates: Any, index: Any) -> Any:
    """The chosen candidate per row: ``(K, M, H, W)`` + ``(K,)`` → ``(K, H, W)`` (``(M, H, W)`` + ``()`` → ``(H, W)``)."""
    if isinstance(candidates, torch.Tensor):
        idx = torch.as_tensor(index, device=candidates.device).long()
        if candidates.ndim == 3:
            return candidates[idx]
        return candidates[torch.arange(candidates.shape[0], device=candidates.device), idx]
    c = np.asarray(candidates)
    idx = _np(index).astype(np.int64)
    if c.ndim == 3:
        return c[int(idx)]
    return c[np.arange(c.shape[0]), idx]


@dataclass
class MaskSelectionConfig:
    """Settings of :func:`select_masks` (JSON-friendly for run records).

    Attributes:
        rule: ``"sesam"`` (default), ``"score"`` or ``"random"``.
        min_coverage: SeSAM's coverage threshold (0.3).
        min_compatibility: SeSAM's compatibility threshold (0.7).
        threshold: logit threshold of a candidate mask (SAM: 0.0).
        seed: seed of ``"random"``'s generator.
    """

    rule: str = "sesam"
    min_coverage: float = 0.3
    min_compatibility: float = 0.7
    threshold: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rule not in SELECTION_RULES:
            raise ValueError(f"rule must be one of {', '.join(SELECTION_RULES)}, got {self.rule!r}")
        for name in ("min_coverage", "min_compatibility"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MaskSelector:
    """Callable :func:`select_masks` with a fixed :class:`MaskSelectionConfig`.

    ``"random"`` draws from one generator seeded with ``config.seed`` at construction, so
    successive calls differ and a run is reproducible.
    """

    def __init__(self, config: MaskSelectionConfig | None = None, **overrides: Any) -> None:
        base = config or MaskSelectionConfig()
        self.config = MaskSelectionConfig(**{**base.to_dict(), **overrides})
        self._rng = np.random.default_rng(self.config.seed)

    def __call__(self, candidates: Any, regions: Any, iou: Any = None) -> MaskSelection:
        c = self.config
        return select_masks(candidates, regions, iou, rule=c.rule, min_coverage=c.min_coverage,  # type: ignore[arg-type]
                            min_compatibility=c.min_compatibility, threshold=c.threshold, seed=self._rng)

    def choose(self, candidates: Any, regions: Any, iou: Any = None) -> tuple[Any, MaskSelection]:
        """``(chosen candidates (K, H, W), selection)``."""
        sel = self(candidates, regions, iou)
        return gather_masks(candidates, sel.index), sel
