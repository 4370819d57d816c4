"""Losses: plain torch modules (no engine imports)."""

from scribmed.losses.dmpls import DMPLSLoss
from scribmed.losses.partial_ce import PartialCrossEntropy, partial_cross_entropy
from scribmed.losses.pseudo_label_dice import SoftDiceLoss, mixed_pseudo_label, soft_dice_loss

__all__ = [
    "DMPLSLoss",
    "PartialCrossEntropy",
    "SoftDiceLoss",
    "mixed_pseudo_label",
    "partial_cross_entropy",
    "soft_dice_loss",
]
