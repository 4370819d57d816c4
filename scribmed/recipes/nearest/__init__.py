"""The nearest-scribble baseline: every voxel takes the class of its nearest scribble (no learning)."""

from scribmed.recipes.nearest.recipe import NearestScribbleRecipe, nearest_scribble_prediction

__all__ = ["NearestScribbleRecipe", "nearest_scribble_prediction"]
