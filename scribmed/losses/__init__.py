"""Losses: plain torch modules (no engine imports)."""

from scribmed.losses.dmpls import DMPLSLoss
from scribmed.losses.partial_ce import PartialCrossEntropy, partial_cross_entropy
from scribmed.losses.pseudo_label_dice import (
    SoftDiceLoss,
    mixed_pseudo_label,
    soft_dice_loss,
)
from scribmed.losses.sam_finetune import (
    SamFinetuneLoss,
    scribble_binary_targets,
    soft_binary_dice_loss,
    soft_binary_iou_loss,
)
from scribmed.losses.samsp import SAMSPLoss
from scribmed.losses.semantic_alignment import (
    SemanticAlignmentLoss,
    class_prototypes,
    semantic_alignment_loss,
)

__all__ = [
    "DMPLSLoss",
    "PartialCrossEntropy",
    "SAMSPLoss",
    "SemanticAlignmentLoss",
    "SamFinetuneLoss",
    "SoftDiceLoss",
    "class_prototypes",
    "mixed_pseudo_label",
    "partial_cross_entropy",
    "scribble_binary_targets",
    "semantic_alignment_loss",
    "soft_binary_dice_loss",
    "soft_binary_iou_loss",
    "soft_dice_loss",
]
