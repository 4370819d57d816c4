"""Connected-component instance split: a class mask ``(H, W)`` → an int instance map.

Instances are the connected components of the mask's True (non-zero) pixels, 4-connected
(``connectivity`` 1 or 4) or 8-connected (2 or 8, the default, as SeSAM and MedSAM's boxes).
Components with fewer than ``min_size`` pixels are **dropped** (they become background, 0).

The map holds 0 for background and ``1..N`` for the kept instances, numbered in **raster order
of each instance's first pixel** (the top-most row that holds it, then the left-most column in
that row): the order ``scipy.ndimage.label`` gives, renumbered consecutively after the drop.
Deterministic: the same mask always gives the same map.

:func:`split_instances` is the array function; :class:`SplitInstances` / :class:`SplitInstancesd`
are the MONAI array and dictionary transforms.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type
from scipy import ndimage as ndi

from scribmed.transforms.prompt_packing import _output_keys
from scribmed.transforms.prompt_points import _as_slice

#: Accepted ``connectivity`` values → scipy's structuring-element rank (1: 4-, 2: 8-connected).
_CONNECTIVITY = {1: 1, 4: 1, 2: 2, 8: 2}


def _rank(connectivity: int) -> int:
    try:
        return _CONNECTIVITY[int(connectivity)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"connectivity must be 1 or 4 (4-connected), 2 or 8 (8-connected), got {connectivity!r}") from None


def split_instances(mask_2d: Any, connectivity: int = 2, min_size: int = 1) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask as an instance map.

    Args:
        mask_2d: ``(H, W)`` (or ``(1, H, W)``) mask, array or tensor; non-zero = the class.
        connectivity: 1 or 4 (4-connected), 2 or 8 (8-connected).
        min_size: smallest instance kept, in pixels; smaller components become 0.

    Returns:
        ``(instances, n)``: int32 ``(H, W)`` map (0 background, ``1..n`` in raster order of each
        instance's first pixel, see the module docstring) and the number of instances ``n``.
    """
    if int(min_size) < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    m = _as_slice(mask_2d, "mask").astype(bool)
    labels, n = ndi.label(m, structure=ndi.generate_binary_structure(2, _rank(connectivity)))
    labels = labels.astype(np.int32, copy=False)
    if min_size > 1 and n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= int(min_size)
        keep[0] = False
        remap = np.zeros(n + 1, dtype=np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels, n = remap[labels], int(keep.sum())
    return labels, int(n)


class SplitInstances(Transform):
    """Array transform: mask ``(H, W)`` or ``(1, H, W)`` → instance map of the same shape and
    container type (numpy or tensor), int32 values (see :func:`split_instances`).

    Args:
        connectivity: 1 or 4 (4-connected), 2 or 8 (8-connected).
        min_size: smallest instance kept (px).
        class_index: when given, the mask is ``x == class_index`` (a label map in); else ``x != 0``.
    """

    def __init__(self, connectivity: int = 2, min_size: int = 1, class_index: int | None = None) -> None:
        _rank(connectivity)
        if int(min_size) < 1:
            raise ValueError(f"min_size must be >= 1, got {min_size}")
        self.connectivity = int(connectivity)
        self.min_size = int(min_size)
        self.class_index = None if class_index is None else int(class_index)

    def __call__(self, img: Any) -> Any:
        a = _as_slice(img, "mask")
        mask = a != 0 if self.class_index is None else a == self.class_index
        inst, _ = split_instances(mask, self.connectivity, self.min_size)
        out = inst.reshape(np.shape(img))
        return convert_to_dst_type(out, img, dtype=np.int32)[0]


class SplitInstancesd(MapTransform):
    """Dictionary version of :class:`SplitInstances`: ``d[output_key] = instance map of d[key]``.

    Args:
        keys: mask or label-map key(s), each ``(H, W)`` or ``(1, H, W)``.
        connectivity, min_size, class_index: as :class:`SplitInstances`.
        output_key: one output key per key (default ``"instances"``).
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = ("label",),
        connectivity: int = 2,
        min_size: int = 1,
        class_index: int | None = None,
        output_key: str | Sequence[str] = "instances",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.splitter = SplitInstances(connectivity, min_size, class_index)
        self.output_keys = _output_keys(self.keys, output_key)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = self.splitter(d[key])
        return d


__all__ = [
    "SplitInstances",
    "SplitInstancesd",
    "split_instances",
]
