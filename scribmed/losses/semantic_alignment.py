"""SAM-SP semantic alignment loss: classify bottleneck features by their class prototypes.

SAM-SP's step 4 (the aligned segmentor). Per image ``b`` and class ``k``, the prototype is
``p_bk = normalize(mean_{n : PL_bn = k} normalize(f_bn).detach())``, with the SAM pseudo label
``PL`` resized to the bottleneck's size by nearest-neighbour sampling. Each pixel's logits are
the cosine similarities ``<normalize(f_bn), p_bk> / temperature`` to the prototypes of *its own
image*; classes absent from that image have no prototype and their logits are masked out. The
loss is the cross-entropy of those logits against ``PL``, averaged over the target pixels of
the whole batch.

Gradient path (the exact choice): prototypes are built from **detached** features, so no
gradient flows through them; the per-pixel features being classified keep their gradient.
Detaching both would leave the loss without any gradient.

Background: with ``foreground_only=True`` (default, "foreground pixels as targets") background
pixels (label 0) still build the background prototype, which competes in every foreground
pixel's softmax, but contribute no cross-entropy term themselves. ``foreground_only=False``
makes them targets as well. Pixels whose label is ``ignore_index`` or outside ``[0, C)`` build
no prototype and are never targets. A batch without any target pixel gives 0 (with a graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scribmed.losses.partial_ce import as_label_map

__all__ = ["SemanticAlignmentLoss", "class_prototypes", "semantic_alignment_loss"]


def _labels_at(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a ``(B, H, W)`` integer label map to ``size``."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].double(), size=size, mode="nearest")
    return resized[:, 0].round().long()


def class_prototypes(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image class prototypes from L2-normalised, detached features.

    Args:
        features: ``(B, D, h, w)`` feature maps.
        labels: ``(B, h, w)`` long labels; values outside ``[0, num_classes)`` are skipped.
        num_classes: number of classes ``K``.

    Returns:
        ``(prototypes, present)``: ``(B, K, D)`` unit vectors (zeros for absent classes) and a
        ``(B, K)`` bool mask of the classes with at least one pixel in each image.
    """
    with torch.no_grad():
        f = F.normalize(features.detach().flatten(2), dim=1)  # (B, D, N)
        flat = labels.flatten(1)  # (B, N)
        classes = torch.arange(num_classes, device=labels.device).view(1, num_classes, 1)
        onehot = (flat[:, None] == classes).to(f.dtype)  # (B, K, N)
        sums = torch.einsum("bkn,bdn->bkd", onehot, f)
        present = onehot.sum(2) > 0
        return F.normalize(sums, dim=2), present


def semantic_alignment_loss(
    features: torch.Tensor,
    pseudo_label: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    foreground_only: bool = True,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Prototype-classification cross-entropy of bottleneck features against the pseudo label.

    Args:
        features: ``(B, D, h, w)`` bottleneck features (keep their gradient).
        pseudo_label: ``(B, H, W)`` or ``(B, 1, H, W)`` integer labels, any resolution (resized
            to ``(h, w)`` by nearest neighbour).
        num_classes: classes including background (label 0).
        ignore_index: pseudo-label value to skip, if any (values outside ``[0, K)`` are always
            skipped).
        foreground_only: only pixels with label ``>= 1`` are cross-entropy targets.
        temperature: cosine similarities are divided by this (> 0).

    Returns:
        Scalar loss; 0 when no pixel is a target.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, D, h, w), got {tuple(features.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    labels = as_label_map(pseudo_label, 4)
    if labels.shape[0] != features.shape[0]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} differ in batch")
    labels = _labels_at(labels, tuple(features.shape[-2:]))
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid &= labels != ignore_index
    labels = torch.where(valid, labels, torch.full_like(labels, -1))
    target_mask = valid & (labels >= 1) if foreground_only else valid
    if not bool(target_mask.any()):
        return features.sum() * 0.0

    prototypes, present = class_prototypes(features, labels, num_classes)
    f = F.normalize(features.flatten(2), dim=1)  # (B, D, N), keeps the gradient
    logits = torch.einsum("bdn,bkd->bnk", f, prototypes) / temperature  # (B, N, K)
    logits = logits.masked_fill(~present[:, None, :], torch.finfo(logits.dtype).min)
    selected = target_mask.flatten(1)
    # Only target pixels enter the softmax: each one's own class is present, so no row is all-masked.
    return F.cross_entropy(logits[selected], labels.flatten(1)[selected])


class SemanticAlignmentLoss(nn.Module):
    """Module form of :func:`semantic_alignment_loss`.

    Args:
        num_classes: classes including background (label 0).
        ignore_index: pseudo-label value to skip, if any.
        foreground_only: only foreground pixels are targets (background still has a prototype).
        temperature: divisor of the cosine similarities.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        foreground_only: bool = True,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.foreground_only = bool(foreground_only)
        self.temperature = float(temperature)

    def forward(self, features: torch.Tensor, pseudo_label: torch.Tensor) -> torch.Tensor:
        return semantic_alignment_loss(
            features,
            pseudo_label,
            self.num_classes,
            self.ignore_index,
            self.foreground_only,
            self.temperature,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"foreground_only={self.foreground_only}, temperature={self.temperature}"
        )
