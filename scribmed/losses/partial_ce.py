"""Partial cross-entropy: cross-entropy over the labelled pixels of a sparse label map only.

Unlabelled pixels carry the dataset's ignore value (e.g. 4 for ACDC, where 0 is the background
scribble). The mean is taken over labelled pixels of the whole batch; a batch without any
labelled pixel gives 0 (with a graph, so ``backward`` still works) instead of NaN.

It is the loss of every sparse supervision (SAMIX: scribble and point → partial
CE): a scribble map is used as it is, points through
:meth:`scribmed.data.weak_labels.WeakLabel.point_map` (the class at each positive point,
``ignore_index`` elsewhere), and pseudo labels with unconfident pixels set to ``ignore_index``
likewise. ``reduction="none"`` gives one mean per sample, which
:class:`~scribmed.losses.mixed_supervision.MixedSupervisionLoss` averages over samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REDUCTIONS", "PartialCrossEntropy", "as_label_map", "partial_cross_entropy"]

#: ``reduction`` values of the losses: ``"mean"`` a scalar, ``"none"`` one value per sample ``(B,)``.
REDUCTIONS = ("mean", "none")


def as_label_map(target: torch.Tensor, ndim: int) -> torch.Tensor:
    """Integer label map ``(B, *spatial)`` from ``(B, *spatial)`` or ``(B, 1, *spatial)``.

    Args:
        target: labels, any integer or integral float dtype (MONAI collation may give floats).
        ndim: number of dims of the matching prediction ``(B, C, *spatial)``.
    """
    if target.ndim == ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != ndim - 1:
        raise ValueError(f"target must be (B, *spatial) or (B, 1, *spatial), got {tuple(target.shape)}")
    return target if target.dtype == torch.long else target.long()


def partial_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    check_target: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean cross-entropy (nats) over pixels whose target is not ``ignore_index``.

    Args:
        logits: ``(B, C, *spatial)`` unnormalised scores.
        target: ``(B, *spatial)`` or ``(B, 1, *spatial)`` labels in ``[0, C)`` or ``ignore_index``.
        ignore_index: the unlabelled value.
        check_target: raise a readable error on out-of-range labels (one host sync).
        reduction: ``"mean"`` (default): one mean over the labelled pixels of the whole batch
            (pooled, as DMPLS); ``"none"``: ``(B,)``, each sample's mean over its own labelled
            pixels (0 for a sample without any).

    Returns:
        Scalar loss (or ``(B,)``); 0 (with a graph) where no pixel is labelled.

    Raises:
        ValueError: shape mismatch, an unknown ``reduction``, or (``check_target``) a label
            outside ``[0, C)`` that is not ``ignore_index``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    target = as_label_map(target, logits.ndim)
    if target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    labelled = target != ignore_index
    num_classes = logits.shape[1]
    if check_target:
        bad = labelled & ((target < 0) | (target >= num_classes))
        if bool(bad.any()):
            values = torch.unique(target[bad]).tolist()
            raise ValueError(
                f"target holds values {values} outside [0, {num_classes}) that are not "
                f"ignore_index={ignore_index}"
            )
    if reduction == "none":
        per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
        total = per_pixel.flatten(1).sum(1)
        return total / labelled.flatten(1).sum(1).clamp_min(1).to(total.dtype)
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    count = labelled.sum().clamp_min(1).to(total.dtype)
    return total / count


class PartialCrossEntropy(nn.Module):
    """Module form of :func:`partial_cross_entropy`.

    Args:
        ignore_index: the unlabelled value of the scribbles (or point maps, pseudo labels).
        check_target: validate label values each call (see :func:`partial_cross_entropy`).
        reduction: ``"mean"`` (pooled over the batch's labelled pixels) or ``"none"`` (``(B,)``).
    """

    def __init__(self, ignore_index: int, check_target: bool = True, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.ignore_index = int(ignore_index)
        self.check_target = check_target
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_cross_entropy(logits, target, self.ignore_index, self.check_target, self.reduction)

    def extra_repr(self) -> str:
        extra = "" if self.reduction == "mean" else f", reduction={self.reduction!r}"
        return f"ignore_index={self.ignore_index}{extra}"
