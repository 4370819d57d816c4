"""The SAM-SP segmentor objective (step 4, the aligned segmentor).

``L = sum_h pCE(y_h, s) + sum_h Dice(softmax(y_h), PL_SAM) + align_weight * L_align`` over the
heads ``h`` = main, aux, fused of :class:`~scribmed.networks.samsp_unet.SAMSPUNet`, with ``s``
the scribble (unlabelled = ``ignore_index``), ``PL_SAM`` the merged SAM pseudo label, Dice the
batch-pooled soft Dice of DMPLS, and ``L_align`` the semantic alignment loss on the bottleneck
features. Terms are summed, not averaged.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from scribmed.losses.partial_ce import PartialCrossEntropy
from scribmed.losses.pseudo_label_dice import SoftDiceLoss
from scribmed.losses.semantic_alignment import SemanticAlignmentLoss

__all__ = ["HEADS", "SAMSPLoss"]

HEADS: tuple[str, ...] = ("main", "aux", "fused")


class SAMSPLoss(nn.Module):
    """Partial CE and pseudo-label Dice on all three heads plus the semantic alignment term.

    Args:
        num_classes: classes including background.
        ignore_index: the scribbles' unlabelled value.
        align_weight: weight of the alignment term (1 in SAM-SP).
        pl_ignore_index: pseudo-label value the alignment term skips, if any (SAM pseudo labels
            are dense, so usually None).
        foreground_only: alignment targets are foreground pixels only (as in SAM-SP).
        temperature: alignment cosine-similarity temperature.

    Call ``loss(outputs, scribble, pseudo_label)`` with ``outputs`` the network's training
    output ``(main, aux, fused, bottleneck)`` (a :class:`SAMSPOutput` or any 4-sequence), logits
    ``(B, C, H, W)``, scribble and pseudo label ``(B, H, W)`` or ``(B, 1, H, W)``. Returns
    ``(total, parts)`` where ``parts`` holds detached ``pce_<head>``, ``dice_<head>`` and
    ``align`` (unweighted) terms, with ``total = sum(pce_*) + sum(dice_*) + align_weight * align``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        align_weight: float = 1.0,
        pl_ignore_index: int | None = None,
        foreground_only: bool = True,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {align_weight}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.align_weight = float(align_weight)
        self.pce = PartialCrossEntropy(ignore_index)
        self.dice = SoftDiceLoss(num_classes)
        self.align = SemanticAlignmentLoss(num_classes, pl_ignore_index, foreground_only, temperature)

    def forward(
        self, outputs: Sequence[torch.Tensor], scribble: torch.Tensor, pseudo_label: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if len(outputs) != 4:
            raise ValueError(f"expected outputs (main, aux, fused, bottleneck), got {len(outputs)} items")
        *logits, bottleneck = outputs
        parts: dict[str, torch.Tensor] = {}
        total = bottleneck.new_zeros(())
        for name, y in zip(HEADS, logits):
            if y.shape[1] != self.num_classes:
                raise ValueError(f"expected {self.num_classes} channels, got {name} logits {tuple(y.shape)}")
            pce = self.pce(y, scribble)
            dice = self.dice(torch.softmax(y, dim=1), pseudo_label)
            total = total + pce + dice
            parts[f"pce_{name}"] = pce.detach()
            parts[f"dice_{name}"] = dice.detach()
        align = self.align(bottleneck, pseudo_label)
        total = total + self.align_weight * align
        parts["align"] = align.detach()
        return total, parts

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"align_weight={self.align_weight}"
        )
