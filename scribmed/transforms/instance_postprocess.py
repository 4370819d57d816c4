"""Contour probabilities → instance map: seeded watershed or connected components.

Input: softmax probabilities ``(3, H, W)`` of background / interior / boundary
(:mod:`scribmed.transforms.contour_targets`). Foreground is ``p_interior + p_boundary >
fg_threshold``.

* ``mode="watershed"`` (default): seeds are the connected components of ``p_interior >
  seed_threshold`` (at least ``min_seed`` pixels); every foreground pixel joins a seed by a
  watershed on ``1 - p_interior`` restricted to the foreground (:func:`skimage.segmentation.watershed`),
  so touching nuclei split along their predicted boundary and each instance regains its boundary
  ring. Foreground blobs without a seed become instances of their own.
* ``mode="components"``: the 8-connected components of the interior, each grown by the foreground
  pixels nearest to it (a cheaper variant without the watershed).

Instances smaller than ``min_size`` pixels are dropped; ids are consecutive from 1 in raster order.
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage as ndi

__all__ = ["POSTPROCESS_MODES", "InstancesFromContours", "InstancesFromContoursd", "instances_from_contours"]

POSTPROCESS_MODES = ("watershed", "components")
_EIGHT = np.ones((3, 3), dtype=bool)


def _renumber(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop instances under ``min_size`` pixels; consecutive ids in raster order of first pixel."""
    flat = labels.ravel()
    n = int(flat.max()) if flat.size else 0
    if n == 0:
        return np.zeros(labels.shape, dtype=np.int32)
    sizes = np.bincount(flat, minlength=n + 1)
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    _, first = np.unique(flat, return_index=True)
    ids = np.unique(flat)
    order = [i for _, i in sorted(zip(first, ids)) if keep[i]]
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels]


def instances_from_contours(
    probs: Any,
    mode: Literal["watershed", "components"] = "watershed",
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 10,
    min_seed: int = 3,
) -> np.ndarray:
    """``(H, W)`` int32 instance map from contour probabilities ``(3, H, W)``.

    Args:
        probs: softmax output ``(3, H, W)`` (or ``(1, 3, H, W)``), numpy or torch.
        mode: ``"watershed"`` or ``"components"`` (module docstring).
        fg_threshold: foreground is ``p_interior + p_boundary > fg_threshold``.
        seed_threshold: seeds are ``p_interior > seed_threshold``.
        min_size: instances smaller than this (pixels) are dropped.
        min_seed: seed components smaller than this are not seeds.
    """
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"mode must be one of {POSTPROCESS_MODES}, got {mode!r}")
    p = np.asarray(probs.detach().float().cpu() if hasattr(probs, "detach") else probs, dtype=np.float32)
    if p.ndim == 4 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 3 or p.shape[0] != 3:
        raise ValueError(f"probs must be (3, H, W) background/interior/boundary probabilities, got {p.shape}")
    interior = p[1]
    fg = (p[1] + p[2]) > fg_threshold
    seeds, n = ndi.label((interior > seed_threshold) & fg, structure=_EIGHT)
    if n and min_seed > 1:
        sizes = np.bincount(seeds.ravel(), minlength=n + 1)
        small = sizes < int(min_seed)
        small[0] = False
        seeds[small[seeds]] = 0
    # foreground blobs without a seed keep their pixels as instances of their own
    blobs, nb = ndi.label(fg, structure=_EIGHT)
    if nb:
        seeded = np.zeros(nb + 1, dtype=bool)
        seeded[np.unique(blobs[seeds > 0])] = True
        seeded[0] = True
        orphan = ~seeded[blobs]
        if orphan.any():
            seeds = np.where(orphan, blobs + int(seeds.max()), seeds)
    if mode == "watershed":
        from skimage.segmentation import watershed

        labels = watershed(1.0 - interior, markers=seeds, mask=fg)
    else:
        if seeds.max() == 0:
            labels = seeds
        else:  # each foreground pixel takes the nearest seed's id
            _, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
            labels = np.where(fg, seeds[idx[0], idx[1]], 0)
    return _renumber(labels.astype(np.int64), min_size)


class InstancesFromContours(Transform):
    """Array transform: probabilities ``(3, H, W)`` → instance map ``(1, H, W)`` int32."""

    def __init__(self, mode: str = "watershed", fg_threshold: float = 0.5, seed_threshold: float = 0.5,
                 min_size: int = 10, min_seed: int = 3) -> None:
        if mode not in POSTPROCESS_MODES:
            raise ValueError(f"mode must be one of {POSTPROCESS_MODES}, got {mode!r}")
        self.kwargs = dict(mode=mode, fg_threshold=fg_threshold, seed_threshold=seed_threshold,
                           min_size=min_size, min_seed=min_seed)

    def __call__(self, probs: Any) -> np.ndarray:
        return instances_from_contours(probs, **self.kwargs)[None]


class InstancesFromContoursd(MapTransform):
    """Dictionary transform: ``data[output_key] = InstancesFromContours(...)(data[key])``."""

    def __init__(self, keys: KeysCollection, output_key: str = "instance", allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError("InstancesFromContoursd takes one probability key")
        self.output_key = output_key
        self.transform = InstancesFromContours(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key])
        return d
