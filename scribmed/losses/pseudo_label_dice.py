"""Soft Dice against a hard (pseudo) label, and DMPLS's dynamically mixed pseudo label.

Soft Dice here is the batch-pooled, per-class form with squared denominators used by DMPLS:
``dice_k = (2 * sum(p_k * t_k) + eps) / (sum(p_k ** 2) + sum(t_k ** 2) + eps)`` where the sums run
over the batch and all pixels, ``loss = 1 - mean_k dice_k``. It is one reduction per class over
``(B, C, H, W)`` tensors (the reference implementation's pseudo-label term broadcasts to a
batch x batch tensor; this one never does).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SoftDiceLoss", "mixed_pseudo_label", "soft_dice_loss"]


def _one_hot_like(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Float one-hot ``(B, C, *spatial)`` for integer ``(B, [1,] *spatial)`` or one-hot targets."""
    num_classes = probs.shape[1]
    if target.shape == probs.shape and target.is_floating_point():
        return target.to(probs.dtype)
    if target.ndim == probs.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != probs.ndim - 1 or target.shape[0] != probs.shape[0] or target.shape[1:] != probs.shape[2:]:
        raise ValueError(
            f"target {tuple(target.shape)} is neither a label map nor a one-hot of probs {tuple(probs.shape)}"
        )
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, *([1] * (target.ndim - 1)))
    return (target.unsqueeze(1).long() == classes).to(probs.dtype)


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean_k dice_k`` with batch-pooled sums and squared denominators.

    Args:
        probs: ``(B, C, *spatial)`` probabilities (e.g. a softmax).
        target: integer label map ``(B, *spatial)`` / ``(B, 1, *spatial)``, or a float one-hot
            ``(B, C, *spatial)``. Values outside ``[0, C)`` match no class.
        eps: smoothing added to numerator and denominator (1e-5 as in DMPLS).

    Returns:
        Scalar loss in ``[0, 1]``.
    """
    onehot = _one_hot_like(probs, target)
    dims = [0, *range(2, probs.ndim)]
    intersect = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    dice = (2.0 * intersect + eps) / (denom + eps)
    return 1.0 - dice.mean()


class SoftDiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`.

    Args:
        num_classes: expected channel count of the probabilities (checked each call).
        eps: smoothing constant.
    """

    def __init__(self, num_classes: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.eps = float(eps)

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} channels, got probabilities {tuple(probs.shape)}")
        return soft_dice_loss(probs, target, self.eps)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, eps={self.eps}"


def mixed_pseudo_label(
    p1: torch.Tensor, p2: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """DMPLS pseudo label ``argmax_c(alpha * p1 + (1 - alpha) * p2)`` with no gradient.

    Args:
        p1, p2: ``(B, C, *spatial)`` softmax outputs of the two branches (detached here).
        alpha: mixing weight in ``[0, 1]``; one draw per iteration in DMPLS.

    Returns:
        ``(B, *spatial)`` long tensor.
    """
    if p1.shape != p2.shape:
        raise ValueError(f"branch outputs differ in shape: {tuple(p1.shape)} vs {tuple(p2.shape)}")
    with torch.no_grad():
        mixed = alpha * p1.detach() + (1.0 - alpha) * p2.detach()
        return mixed.argmax(dim=1)
