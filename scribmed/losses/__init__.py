"""Losses: plain torch modules (no engine imports)."""

from scribmed.losses.box_projection import (
    BoxProjectionLoss,
    box_masks_from_weak,
    box_projection_loss,
)
from scribmed.losses.dmpls import DMPLSLoss
from scribmed.losses.mask_dice_ce import MaskDiceCELoss, mask_dice_ce_loss
from scribmed.losses.mixed_supervision import (
    CombinedTargets,
    MixedSupervisionLoss,
    combine_targets,
    supervision_codes,
)
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
from scribmed.losses.sam_min_cost import SAMMinCostLoss, sam_min_cost
from scribmed.losses.samsp import SAMSPLoss
from scribmed.losses.semantic_alignment import (
    SemanticAlignmentLoss,
    class_prototypes,
    semantic_alignment_loss,
)
from scribmed.losses.structural_distillation import (
    StructuralDistillationLoss,
    sample_query_pixels,
    structural_distillation_loss,
)

__all__ = [
    "BoxProjectionLoss",
    "CombinedTargets",
    "DMPLSLoss",
    "MaskDiceCELoss",
    "MixedSupervisionLoss",
    "PartialCrossEntropy",
    "SAMSPLoss",
    "SemanticAlignmentLoss",
    "SamFinetuneLoss",
    "SoftDiceLoss",
    "box_masks_from_weak",
    "box_projection_loss",
    "class_prototypes",
    "combine_targets",
    "mask_dice_ce_loss",
    "mixed_pseudo_label",
    "partial_cross_entropy",
    "scribble_binary_targets",
    "semantic_alignment_loss",
    "soft_binary_dice_loss",
    "soft_binary_iou_loss",
    "soft_dice_loss",
    "supervision_codes",
    "SAMMinCostLoss",
    "StructuralDistillationLoss",
    "sam_min_cost",
    "sample_query_pixels",
    "structural_distillation_loss",
]
