"""nnU-Net + partial loss: nnU-Net v2 trained on scribbles through its ignore label (Gotkowski et al., 2024).

``config`` (nnU-Net's defaults), ``raw_dataset`` (a fold as an nnU-Net raw dataset with the
ignore label and scribmed's split), ``engine`` (nnU-Net's planning, training and predictor,
driven through its API), ``recipe`` (:class:`NNUNetPLRecipe`). Needs ``scribmed[nnunet]``.
"""

from scribmed.recipes.nnunet_pl.config import NNUNetPLConfig
from scribmed.recipes.nnunet_pl.recipe import NNUNetPLRecipe

__all__ = ["NNUNetPLConfig", "NNUNetPLRecipe"]
