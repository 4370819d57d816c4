"""The contour U-Net on simulated weak labels, without SAM: the floor and the ceiling of the instance recipes.

Everything is the shared instance segmentor (:class:`~scribmed.recipes.instance_segmentor.InstanceSegmentorRecipe`:
the contour U-Net, its partial contour loss, watershed post-processing, DSB-score selection);
the SAM instance recipes (``sesam``, ``s4m``, ``wish``) subclass the same base with their own
pseudo-label stage. ``--set weak=full`` trains on the full instance masks (the ceiling),
``--set weak=point`` on one point per nucleus (the floor).
"""

from __future__ import annotations

from scribmed.recipes.instance_segmentor import InstanceSegmentorRecipe

__all__ = ["ContourUNetRecipe"]


class ContourUNetRecipe(InstanceSegmentorRecipe):
    """``contour_unet``: the shared instance segmentor as a recipe of its own (no SAM stage)."""

    name = "contour_unet"
    title = "Contour U-Net"
