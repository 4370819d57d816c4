"""Instance map → three-class contour target (background / interior / boundary) for nuclei.

Touching nuclei merge into one blob under a two-class foreground target; the usual remedy (the
DSB2018 winners, DCAN, Hover-Net's foreground/boundary heads) is a third class for the instances'
boundaries, so the interiors of touching instances stay apart and become watershed seeds
(:mod:`scribmed.transforms.instance_postprocess`).

Classes: 0 background, 1 interior, 2 boundary; ``ignore`` (255) marks pixels a target says
nothing about (sparse and weak targets). The boundary of an instance is its pixels with a
4-neighbour outside the instance (``width`` 1), grown inwards to ``width`` pixels; an instance too
small to have an interior is all boundary.

:func:`contour_target` is the array function; :class:`ContourTarget` / :class:`ContourTargetd`
are the MONAI array and dictionary transforms.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage as ndi

__all__ = ["BACKGROUND", "BOUNDARY", "CONTOUR_CLASSES", "IGNORE", "INTERIOR", "ContourTarget", "ContourTargetd",
           "contour_target", "instance_boundaries"]

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
IGNORE = 255
CONTOUR_CLASSES: dict[int, str] = {BACKGROUND: "background", INTERIOR: "interior", BOUNDARY: "boundary"}


def _as_2d(instance: Any, name: str = "instance") -> np.ndarray:
    arr = np.asarray(instance.detach().cpu() if hasattr(instance, "detach") else instance)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (H, W) or (1, H, W), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{name} must hold integer instance ids, got dtype {arr.dtype}")
    return arr


def instance_boundaries(instance: Any, width: int = 1) -> np.ndarray:
    """``(H, W)`` bool: the inner boundary of every instance, ``width`` pixels thick.

    A pixel is on the boundary when one of its 4-neighbours holds another id (background or
    another instance) or lies outside the image; ``width > 1`` adds the pixels within
    ``width - 1`` steps inside the instance.
    """
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    inst = _as_2d(instance).astype(np.int64, copy=False)
    padded = np.pad(inst, 1, mode="constant", constant_values=-1)
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(inst.shape, dtype=bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        edge |= padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx] != centre
    edge &= inst > 0
    if width > 1:  # pixels fewer than `width` 4-steps from an edge pixel, inside an instance
        steps = ndi.distance_transform_cdt(~edge, metric="taxicab")
        edge = (inst > 0) & (steps < int(width))
    return edge


def contour_target(instance: Any, width: int = 1, ignore: Any = None) -> np.ndarray:
    """``(H, W)`` uint8 contour target of an instance map (0 background, 1 interior, 2 boundary).

    Args:
        instance: ``(H, W)`` or ``(1, H, W)`` integer instance map, 0 = background.
        width: boundary thickness in pixels.
        ignore: optional ``(H, W)`` bool: pixels set to :data:`IGNORE` (255) in the output.
    """
    inst = _as_2d(instance)
    out = np.where(inst > 0, INTERIOR, BACKGROUND).astype(np.uint8)
    out[instance_boundaries(inst, width)] = BOUNDARY
    if ignore is not None:
        mask = _as_2d(np.asarray(ignore).astype(bool), "ignore")
        if mask.shape != out.shape:
            raise ValueError(f"ignore mask {mask.shape} does not match the instance map {out.shape}")
        out[mask] = IGNORE
    return out


class ContourTarget(Transform):
    """Array transform: instance map ``(1, H, W)`` or ``(H, W)`` → contour target of the same shape."""

    def __init__(self, width: int = 1) -> None:
        self.width = int(width)

    def __call__(self, instance: Any) -> np.ndarray:
        arr = np.asarray(instance)
        out = contour_target(arr, self.width)
        return out[None] if arr.ndim == 3 else out


class ContourTargetd(MapTransform):
    """Dictionary transform: ``data[output_key] = ContourTarget(width)(data[key])``.

    Args:
        keys: the instance-map key(s).
        output_keys: where each target goes (default: ``"<key>_contour"``).
    """

    def __init__(self, keys: KeysCollection, width: int = 1, output_keys: KeysCollection | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ContourTarget(width)
        outs = [output_keys] if isinstance(output_keys, str) else output_keys
        self.output_keys = list(outs) if outs is not None else [f"{k}_contour" for k in self.keys]
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"{len(self.keys)} keys but {len(self.output_keys)} output_keys")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in zip(self.key_iterator(d), self.output_keys):
            d[out] = self.transform(d[key])
        return d
