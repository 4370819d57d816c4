"""Box projection loss: supervise a segmentation with boxes through the mask's axis projections.

SAMIX trains on box-labelled slices with the projection loss of BoxInst (Tian et
al., CVPR 2021): a mask lies inside its box and touches every row and column the box spans, so
the mask's max-projection onto each axis must equal the box's. For sample ``b`` and class ``k``
with box mask ``M`` (the union of the class's boxes on the slice) and the predicted class
probability ``p = softmax(logits)[b, k]`` ``(H, W)``:

* ``proj_x(p) = max_y p`` (length ``W``) and ``proj_y(p) = max_x p`` (length ``H``); the same
  for ``M`` (0/1 vectors: the columns and rows the boxes span).
* per projection ``a``: ``BCE_a`` = mean over the vector's entries of the binary cross-entropy
  (nats) of ``proj_a(p)`` against ``proj_a(M)``, and ``Dice_a = 1 - (2 Σ p t + eps) / (Σ p² +
  Σ t² + eps)`` (BoxInst's squared denominators, ``eps = 1e-5``).
* ``term(b, k) = bce_weight * (BCE_x + BCE_y) / 2 + dice_weight * (Dice_x + Dice_y) / 2``
  (weights 1 + 1 by default: BCE + Dice per projection; ``bce_weight=0`` is BoxInst's
  Dice-only projection term, whose Dice is summed rather than averaged over the two axes).

Only classes with a box on the slice give a term: channel 0 (background) is never read, and a
foreground class without a box on the slice is *not* pushed towards empty (a box-labelled slice
may omit small or unannotated structures). A sample's loss is the mean over its boxed classes;
a sample without any box has no loss (0 under ``reduction="none"``, left out of the mean). The
BCE is computed in log space from ``log_softmax`` (``log max p = max log p``, exact and unclamped
like :func:`torch.nn.functional.cross_entropy`); ``log(1 - max p)`` uses ``expm1`` and is clamped
at -100 as in :func:`torch.nn.functional.binary_cross_entropy`, so saturated logits stay finite.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scribmed.losses.partial_ce import REDUCTIONS

__all__ = ["BoxProjectionLoss", "box_masks_from_weak", "box_projection_loss"]

_LOG_FLOOR = -100.0


def _log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(log_p))`` for ``log_p <= 0``: accurate near 0 (``expm1``), clamped at -100.

    The argument of the log is floored at the dtype's smallest normal number *before* the log, so
    a saturated ``p == 1`` gives a finite value and a zero (not NaN) gradient.
    """
    return torch.log((-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny)).clamp_min(_LOG_FLOOR)


def _projection_terms(log_proj: torch.Tensor, target: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE (mean over the last dim) and squared-denominator Dice loss of one projection; ``(...,)`` each."""
    bce = -(target * log_proj + (1.0 - target) * _log1mexp(log_proj)).mean(-1)
    proj = log_proj.exp()
    dice = 1.0 - (2.0 * (proj * target).sum(-1) + eps) / ((proj * proj).sum(-1) + (target * target).sum(-1) + eps)
    return bce, dice


def box_projection_loss(
    logits: torch.Tensor,
    box_masks: torch.Tensor,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    eps: float = 1e-5,
    reduction: str = "mean",
) -> torch.Tensor:
    """SAMIX/BoxInst projection loss of multi-class logits against per-class box masks.

    Args:
        logits: ``(B, C, H, W)`` unnormalised scores (softmax over ``C``, background included).
        box_masks: ``(B, C, H, W)`` bool (or 0/1 float, never differentiated): channel ``k`` is
            the union of class ``k``'s boxes on the sample's slice; channel 0 is ignored.
        bce_weight: weight of the projection BCE (1; 0 leaves BoxInst's Dice-only term).
        dice_weight: weight of the projection Dice (1).
        eps: Dice smoothing (1e-5).
        reduction: ``"mean"``: mean over the samples that have a box of each sample's mean over
            its boxed classes; ``"none"``: ``(B,)`` per-sample values (0 for a sample without box).

    Returns:
        Scalar (or ``(B,)``) loss; 0 with a graph on the logits when no sample has a box.

    Raises:
        ValueError: shape mismatch or an unknown ``reduction``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got {tuple(logits.shape)}")
    if tuple(box_masks.shape) != tuple(logits.shape):
        raise ValueError(f"box_masks {tuple(box_masks.shape)} must match logits {tuple(logits.shape)} (B, C, H, W)")
    target = box_masks.detach().to(device=logits.device, dtype=logits.dtype).clamp(0.0, 1.0)
    log_p = torch.log_softmax(logits, dim=1)
    # projections: along rows (max over y) -> (B, C, W); along columns (max over x) -> (B, C, H)
    bce_x, dice_x = _projection_terms(log_p.amax(2), target.amax(2), eps)
    bce_y, dice_y = _projection_terms(log_p.amax(3), target.amax(3), eps)
    terms = bce_weight * 0.5 * (bce_x + bce_y) + dice_weight * 0.5 * (dice_x + dice_y)  # (B, C)
    boxed = target.flatten(2).amax(2) > 0  # (B, C)
    boxed[:, 0] = False
    boxed_f = boxed.to(terms.dtype)
    n_classes = boxed_f.sum(1)
    per_sample = (terms * boxed_f).sum(1) / n_classes.clamp_min(1.0)  # unboxed classes weigh 0
    if reduction == "none":
        return per_sample
    has_box = (n_classes > 0).to(terms.dtype)
    return (per_sample * has_box).sum() / has_box.sum().clamp_min(1.0)


def box_masks_from_weak(weak: Any, z: int, num_classes: int) -> torch.Tensor:
    """The ``(C, H, W)`` bool box-mask stack of one slice of a box :class:`~scribmed.data.weak_labels.WeakLabel`.

    Channel ``k`` is ``weak.box_mask(z, k)`` (channel 0, background, stays False); stack the
    slices of a batch along a new first axis for :func:`box_projection_loss`.
    """
    h, w = (int(v) for v in weak.shape[1:])
    out = torch.zeros(num_classes, h, w, dtype=torch.bool)
    for k in range(1, num_classes):
        out[k] = torch.from_numpy(weak.box_mask(z, k))
    return out


class BoxProjectionLoss(nn.Module):
    """Module form of :func:`box_projection_loss`.

    Args:
        bce_weight: weight of the projection BCE (1).
        dice_weight: weight of the projection Dice (1).
        eps: Dice smoothing.
        reduction: ``"mean"`` or ``"none"`` (per sample).

    Call ``loss(logits, box_masks)`` with both ``(B, C, H, W)``.
    """

    def __init__(
        self, bce_weight: float = 1.0, dice_weight: float = 1.0, eps: float = 1e-5, reduction: str = "mean"
    ) -> None:
        super().__init__()
        for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.eps = float(eps)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, box_masks: torch.Tensor) -> torch.Tensor:
        return box_projection_loss(logits, box_masks, self.bce_weight, self.dice_weight, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}, reduction={self.reduction!r}"
