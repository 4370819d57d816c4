"""SeSAM on instances: SAM pseudo instances from prompts drawn inside weak labels, an EMA teacher; bundle ``sesam_dsb2018``."""

from scribmed.recipes.sesam.recipe import (
    SeSAMInstanceConfig,
    SeSAMInstanceLoss,
    SeSAMRecipe,
    sam_pseudo_instances,
    sam_target,
)

__all__ = ["SeSAMInstanceConfig", "SeSAMInstanceLoss", "SeSAMRecipe", "sam_pseudo_instances", "sam_target"]
