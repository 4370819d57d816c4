"""mixsup: SAM pseudo labels from any weak label (boxes, points, scribbles, full masks), then the SeSAM objective; bundles ``mixsup_*``."""

from scribmed.recipes.mixsup.recipe import MixSupRecipe, WEAK_OPTIONS
from scribmed.recipes.mixsup.trainer import (
    MixSupTrainConfig,
    MixSupTrainer,
    build_mixsup_trainer,
    mixsup_cache,
    train_mixsup,
)

__all__ = [
    "MixSupRecipe",
    "MixSupTrainConfig",
    "MixSupTrainer",
    "WEAK_OPTIONS",
    "build_mixsup_trainer",
    "mixsup_cache",
    "train_mixsup",
]
