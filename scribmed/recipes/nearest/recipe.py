"""Nearest-scribble baseline: every voxel takes the class of the closest scribble pixel in its slice.

No learning at all, so it is the floor any trained recipe must beat; the demo compares every recipe
with it, and reports can quote it as the "scribbles only" lower bound. As a recipe (``nearest``) it
runs through ``scribmed cv`` like any other: ``train`` does nothing, and each test case is predicted
from its own scribble (so test cases need scribbles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.recipes.base import FoldModel, NoConfig, Recipe

__all__ = ["NearestScribbleRecipe", "nearest_scribble_prediction"]


def nearest_scribble_prediction(scribble: np.ndarray, ignore_index: int) -> np.ndarray:
    """Label each pixel of each slice with the class of its nearest labelled scribble pixel.

    Args:
        scribble: (slices, H, W) integer scribble, ``ignore_index`` marking unlabeled pixels.
        ignore_index: the unlabeled value.

    Returns:
        (slices, H, W) uint8 prediction; slices without any scribble are predicted background.
    """
    scribble = np.asarray(scribble)
    out = np.zeros(scribble.shape, dtype=np.uint8)
    for z, sl in enumerate(scribble):
        unlabeled = sl == ignore_index
        if unlabeled.all():
            continue
        # indices of the nearest labelled pixel for every pixel (EDT of the unlabeled mask)
        _, (iy, ix) = ndimage.distance_transform_edt(unlabeled, return_indices=True)
        out[z] = sl[iy, ix].astype(np.uint8)
    return out


class NearestScribbleRecipe(Recipe):
    """The ``nearest`` recipe: :func:`nearest_scribble_prediction` of each case's own scribble."""

    name = "nearest"
    title = "nearest scribble (no learning)"
    config_cls = NoConfig

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        return FoldModel(checkpoint=None, policy="none", extra={"ignore_index": class_map.ignore_index})

    def predict_case(self, model: FoldModel, case: Case) -> np.ndarray:
        if case.scribble is None:
            raise DataError(case.source, f"case {case.case_id} has no scribble to predict from")
        return nearest_scribble_prediction(case.scribble, int(model.extra["ignore_index"]))
