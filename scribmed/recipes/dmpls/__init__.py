"""DMPLS (Luo et al., MICCAI 2022): its config, its trainer hook and its recipe; bundles ``dmpls_*``."""

from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.recipes.dmpls.recipe import DMPLSRecipe
from scribmed.recipes.dmpls.trainer import DMPLSTrainer, build_dmpls_trainer, train_dmpls

__all__ = ["DMPLSConfig", "DMPLSRecipe", "DMPLSTrainer", "build_dmpls_trainer", "train_dmpls"]
