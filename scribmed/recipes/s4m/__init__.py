"""S4M: teacher masks refined by SAM, ARP copy-paste, structural distillation; bundle ``s4m_dsb2018``."""

from scribmed.recipes.s4m.recipe import (
    S4MConfig,
    S4MLoss,
    S4MRecipe,
    gate_refinement,
    labelled_subset,
    sam_feature_map,
)

__all__ = ["S4MConfig", "S4MLoss", "S4MRecipe", "gate_refinement", "labelled_subset", "sam_feature_map"]
