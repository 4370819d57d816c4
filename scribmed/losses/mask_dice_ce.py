"""Full-mask supervision: soft Dice over the foreground classes plus cross-entropy over all pixels.

SAMIX trains fully labelled slices with Dice + CE, the nnU-Net / MONAI
``DiceCELoss`` combination. Per sample ``b`` with ``p = softmax(logits)`` and the one-hot target
``t`` over the sample's valid pixels (all pixels, or those whose label is not ``ignore_index``):

* ``Dice_b = 1 - mean_{k=1..C-1} (2 Σ p_k t_k + eps) / (Σ p_k + Σ t_k + eps)`` (foreground classes
  only, plain denominators and ``eps = 1e-5`` in numerator and denominator, as MONAI's
  ``DiceLoss(include_background=False, softmax=True)``). A class absent from the target scores
  ≈ 1 − eps / (Σ p_k + eps): the term pushes its prediction towards empty, never NaN.
* ``CE_b`` = mean cross-entropy (nats) over the sample's valid pixels.
* ``loss_b = dice_weight * Dice_b + ce_weight * CE_b`` (1 + 1 by default).

Dice is per sample (MONAI's ``batch=False``), so a batch's loss is the mean of its samples' losses
and :class:`~scribmed.losses.mixed_supervision.MixedSupervisionLoss` can route samples one by
one. A sample without valid pixels has no loss (0 under ``reduction="none"``, left out of the
mean); a batch without any gives 0 with a graph on the logits.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from scribmed.losses.partial_ce import REDUCTIONS, as_label_map

__all__ = ["MaskDiceCELoss", "mask_dice_ce_loss"]


def mask_dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    ignore_index: Optional[int] = None,
    eps: float = 1e-5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Per-sample soft Dice (foreground classes) + CE (all valid pixels) against a full label map.

    Args:
        logits: ``(B, C, *spatial)`` unnormalised scores (softmax over ``C``, background included).
        target: ``(B, *spatial)`` or ``(B, 1, *spatial)`` labels in ``[0, C)`` (or ``ignore_index``).
        dice_weight: weight of the soft Dice term (1).
        ce_weight: weight of the CE term (1).
        ignore_index: a label value excluded from both terms (``None``: every pixel counts).
        eps: Dice smoothing.
        reduction: ``"mean"``: mean over samples with valid pixels; ``"none"``: ``(B,)``.

    Returns:
        Scalar (or ``(B,)``) loss; 0 with a graph on the logits when no pixel is valid.

    Raises:
        ValueError: shape mismatch, a label outside ``[0, C)`` that is not ``ignore_index``, or
            an unknown ``reduction``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    target = as_label_map(target, logits.ndim).to(logits.device)
    if target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    num_classes = logits.shape[1]
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"target holds values {torch.unique(target[bad]).tolist()} outside [0, {num_classes})"
            + ("" if ignore_index is None else f" that are not ignore_index={ignore_index}")
        )
    safe = torch.where(valid, target, torch.zeros_like(target))
    valid_f = valid.unsqueeze(1).to(logits.dtype)  # (B, 1, *spatial)
    n_valid = valid_f.flatten(1).sum(1)  # (B,)

    ce_map = F.cross_entropy(logits, safe, reduction="none")  # (B, *spatial)
    ce = (ce_map * valid_f[:, 0]).flatten(1).sum(1) / n_valid.clamp_min(1.0)

    if num_classes > 1:
        probs = torch.softmax(logits, dim=1)[:, 1:] * valid_f  # foreground, valid pixels only
        classes = torch.arange(1, num_classes, device=target.device).view(1, -1, *([1] * (target.ndim - 1)))
        onehot = (safe.unsqueeze(1) == classes).to(logits.dtype) * valid_f
        inter = (probs * onehot).flatten(2).sum(2)
        denom = probs.flatten(2).sum(2) + onehot.flatten(2).sum(2)
        dice = 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean(1)
    else:
        dice = logits.flatten(1).sum(1) * 0.0
    per_sample = (dice_weight * dice + ce_weight * ce) * (n_valid > 0).to(logits.dtype)
    if reduction == "none":
        return per_sample
    has = (n_valid > 0).to(logits.dtype)
    return per_sample.sum() / has.sum().clamp_min(1.0)


class MaskDiceCELoss(nn.Module):
    """Module form of :func:`mask_dice_ce_loss`.

    Args:
        dice_weight: weight of the soft Dice term (1).
        ce_weight: weight of the CE term (1).
        ignore_index: label value excluded from both terms (``None``: none).
        eps: Dice smoothing.
        reduction: ``"mean"`` or ``"none"`` (per sample).

    Call ``loss(logits, label)`` with logits ``(B, C, H, W)`` and the label ``(B, H, W)`` or
    ``(B, 1, H, W)``.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        ignore_index: Optional[int] = None,
        eps: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        for name, value in (("dice_weight", dice_weight), ("ce_weight", ce_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.eps = float(eps)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mask_dice_ce_loss(
            logits, target, self.dice_weight, self.ce_weight, self.ignore_index, self.eps, self.reduction
        )

    def extra_repr(self) -> str:
        return (
            f"dice_weight={self.dice_weight}, ce_weight={self.ce_weight}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
