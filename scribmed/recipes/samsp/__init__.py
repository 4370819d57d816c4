"""SAM-SP: SAM pseudo-label rounds refined by mask-decoder fine-tuning, then the aligned dual-branch segmentor; bundles ``samsp_*``."""

from scribmed.recipes.samsp.recipe import (
    SAMSPRecipe,
    require_scribbled,
)
from scribmed.recipes.samsp.trainer import SAMSPTrainConfig, SAMSPTrainer, build_samsp_trainer, train_samsp

__all__ = [
    "SAMSPRecipe",
    "SAMSPTrainConfig",
    "SAMSPTrainer",
    "build_samsp_trainer",
    "require_scribbled",
    "train_samsp",
]
