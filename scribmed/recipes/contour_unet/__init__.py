"""contour_unet: the contour U-Net on simulated weak labels, without SAM (instance floor and ceiling)."""

from scribmed.recipes.contour_unet.recipe import ContourUNetRecipe

__all__ = ["ContourUNetRecipe"]
