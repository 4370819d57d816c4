"""Nearest-scribble baseline: every voxel takes the class of the closest scribble pixel in its slice.

No learning at all, so it is the floor any trained recipe must beat; the demo uses it before training
exists, and reports can quote it as the "scribbles only" lower bound.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


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
