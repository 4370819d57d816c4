"""Keep the largest connected component of a region of a label map, as nnU-Net's post-processing does.

The region is the union of the given label values (one class, or every foreground class as one
region). Its connected components are found with full connectivity over every axis of the array:
26 neighbours on a ``(z, y, x)`` volume (faces, edges and corners), 8 on a 2D image, which is what
nnU-Net v2 uses (``skimage.measure.label`` with its default connectivity). Voxels of the region
outside the largest component become background (0); voxels of other labels are left as they
are. Components tied for the largest size are all kept (nnU-Net keeps every component of the
maximal size). The input array is never modified.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

__all__ = ["keep_largest_component"]


def keep_largest_component(labels: np.ndarray, region: Iterable[int]) -> np.ndarray:
    """``labels`` with every voxel of ``region`` outside its largest connected component set to 0.

    Args:
        labels: integer label map, e.g. ``(z, y, x)`` (slices, H, W); any number of axes >= 1.
        region: label values forming one region (e.g. ``[2]`` for one class, ``[1, 2, 3]`` for
            all foreground classes as one region). Background (0) may not be part of it.

    Returns:
        A new array of the same shape and dtype (a copy, also when nothing is removed).

    Raises:
        ValueError: an empty region, a region naming 0, or a non-integer label map.
    """
    arr = np.asarray(labels)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"labels must be an integer label map, got dtype {arr.dtype}")
    values = sorted({int(v) for v in region})
    if not values:
        raise ValueError("region is empty: name at least one label value")
    if 0 in values:
        raise ValueError("region may not contain the background label 0")
    out = arr.copy()
    mask = np.isin(arr, values)
    if not mask.any():
        return out
    structure = ndimage.generate_binary_structure(max(arr.ndim, 1), max(arr.ndim, 1))  # full connectivity
    components, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return out
    sizes = np.bincount(components.ravel())[1:]
    keep = np.flatnonzero(sizes == sizes.max()) + 1
    out[mask & ~np.isin(components, keep)] = 0
    return out
