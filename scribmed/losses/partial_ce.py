"""Partial cross-entropy: cross-entropy over scribble-labelled pixels only.

Unlabelled pixels carry the dataset's ignore value (e.g. 4 for ACDC, where 0 is the background
scribble). The mean is taken over labelled pixels of the whole batch; a batch without any
labelled pixel gives 0 (with a graph, so ``backward`` still works) instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PartialCrossEntropy", "as_label_map", "partial_cross_entropy"]


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
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, check_target: bool = True
) -> torch.Tensor:
    """Mean cross-entropy over pixels whose target is not ``ignore_index``.

    Args:
        logits: ``(B, C, *spatial)`` unnormalised scores.
        target: ``(B, *spatial)`` or ``(B, 1, *spatial)`` labels in ``[0, C)`` or ``ignore_index``.
        ignore_index: the unlabelled value.
        check_target: raise a readable error on out-of-range labels (one host sync).

    Returns:
        Scalar loss; 0 when no pixel is labelled.

    Raises:
        ValueError: shape mismatch, or (``check_target``) a label outside ``[0, C)`` that is
            not ``ignore_index``.
    """
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
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    count = labelled.sum().clamp_min(1).to(total.dtype)
    return total / count


class PartialCrossEntropy(nn.Module):
    """Module form of :func:`partial_cross_entropy`.

    Args:
        ignore_index: the unlabelled value of the scribbles.
        check_target: validate label values each call (see :func:`partial_cross_entropy`).
    """

    def __init__(self, ignore_index: int, check_target: bool = True) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        self.check_target = check_target

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_cross_entropy(logits, target, self.ignore_index, self.check_target)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
