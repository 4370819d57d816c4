"""Whole-slice resizing to the network's input size, and back for predictions.

DMPLS trains on whole 2D slices resized to 256x256. The last two axes are ``(H, W)``; any leading
axes (channel, slices of a volume) are kept, so one call resizes a ``(C, H, W)`` slice or every
slice of a ``(slices, H, W)`` volume.

Interpolation (a deliberate departure from the reference, documented):
- images: bilinear with antialiasing when shrinking (``image_mode="nearest"`` reproduces WSL4MIS,
  which resizes images with ``scipy.ndimage.zoom(order=0)``; nearest aliases intensities and
  moves edges by up to a pixel, bilinear does not);
- labels, scribbles, pseudo labels: nearest neighbour, never interpolated.
Both use pixel-centre alignment (torch ``bilinear`` with ``align_corners=False`` and
``nearest-exact``), so image and label stay registered; ``scipy.ndimage.zoom`` instead aligns the
corner pixels' centres, which differs by under one output pixel. Train and infer with the same
functions here so the two paths match.
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform

__all__ = ["ResizeSlice", "ResizeSliced", "resize_back", "resize_slices"]

ResizeMode = Literal["bilinear", "nearest"]


def _as_hw(size: Sequence[int] | int) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    hw = tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"spatial size must be two positive ints (H, W), got {size!r}")
    return hw  # type: ignore[return-value]


def resize_slices(
    x: NdarrayOrTensor, spatial_size: Sequence[int] | int, mode: ResizeMode = "bilinear", antialias: bool = True
) -> NdarrayOrTensor:
    """Resize the last two axes of ``x`` to ``spatial_size``.

    Args:
        x: numpy array or tensor ``(..., H, W)`` with at least two dims (any device).
        spatial_size: target ``(H, W)`` (or one int for a square).
        mode: ``"bilinear"`` for intensities, ``"nearest"`` (pixel-centre ``nearest-exact``) for
            label maps.
        antialias: low-pass before shrinking in bilinear mode (ignored for nearest).

    Returns:
        Same type, device and dtype as ``x`` (integer inputs in bilinear mode are rounded back),
        shape ``(..., *spatial_size)``.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    hw = _as_hw(spatial_size)
    is_numpy = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if t.ndim < 2:
        raise ValueError(f"expected an array (..., H, W), got shape {tuple(t.shape)}")
    if tuple(t.shape[-2:]) == hw:
        return x
    lead = t.shape[:-2]
    dtype = t.dtype
    work = t.reshape(1, -1, *t.shape[-2:])
    if dtype == torch.bool or not work.is_floating_point():
        work = work.to(torch.float32)
    elif work.dtype in (torch.float16, torch.bfloat16) and work.device.type == "cpu":
        work = work.float()
    if mode == "nearest":
        out = F.interpolate(work, size=hw, mode="nearest-exact")
    else:
        out = F.interpolate(work, size=hw, mode="bilinear", align_corners=False, antialias=antialias)
        if not (dtype.is_floating_point or dtype.is_complex):
            out = out.round()
    out = out.reshape(*lead, *hw).to(dtype)
    return out.numpy() if is_numpy else out


def resize_back(
    pred: NdarrayOrTensor, original_hw: Sequence[int], mode: ResizeMode = "nearest"
) -> NdarrayOrTensor:
    """Resize a prediction ``(..., h, w)`` back to the slice's original ``(H, W)``.

    Nearest for label maps (default); pass ``mode="bilinear"`` to resize probabilities/logits
    before the argmax instead (smoother boundaries).
    """
    return resize_slices(pred, original_hw, mode=mode, antialias=False)


class ResizeSlice(Transform):
    """Array transform: resize the last two axes to ``spatial_size``.

    Args:
        spatial_size: output ``(H, W)``.
        mode: ``"bilinear"`` (images) or ``"nearest"`` (label maps).
        antialias: antialias when shrinking in bilinear mode.
    """

    def __init__(
        self, spatial_size: Sequence[int] | int = (256, 256), mode: ResizeMode = "bilinear", antialias: bool = True
    ) -> None:
        self.spatial_size = _as_hw(spatial_size)
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.mode: ResizeMode = mode
        self.antialias = antialias

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return resize_slices(img, self.spatial_size, self.mode, self.antialias)


class ResizeSliced(MapTransform):
    """Dictionary transform: images bilinear, ``label_keys`` nearest, all to ``spatial_size``.

    Args:
        keys: every key to resize (images and label maps).
        spatial_size: output ``(H, W)`` (DMPLS: 256x256).
        label_keys: the subset of ``keys`` holding label maps (labels, scribbles, pseudo labels).
        image_mode: ``"bilinear"`` (default) or ``"nearest"`` (the WSL4MIS behaviour).
        antialias: antialias images when shrinking.
        original_size_key: if set, the first key's ``(H, W)`` before resizing is stored under this
            key, for :func:`resize_back` at inference.
        allow_missing_keys: skip absent keys instead of raising.

    Raises:
        ValueError: ``label_keys`` not a subset of ``keys``; keys whose ``(H, W)`` differ.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | int = (256, 256),
        label_keys: KeysCollection = (),
        image_mode: ResizeMode = "bilinear",
        antialias: bool = True,
        original_size_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        labels = (label_keys,) if isinstance(label_keys, (str, int)) else tuple(label_keys)
        extra = set(labels) - set(self.keys)
        if extra:
            raise ValueError(f"label_keys {sorted(map(str, extra))} are not among keys {list(self.keys)}")
        self.label_keys = frozenset(labels)
        self.image_resize = ResizeSlice(spatial_size, image_mode, antialias)
        self.label_resize = ResizeSlice(spatial_size, "nearest")
        self.original_size_key = original_size_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        original: tuple[int, int] | None = None
        for key in self.key_iterator(d):
            hw = tuple(int(s) for s in d[key].shape[-2:])
            if original is None:
                original = hw  # type: ignore[assignment]
            elif hw != original:
                raise ValueError(f"key {key!r} has (H, W) {hw}, other keys {original}; they must match")
            resize = self.label_resize if key in self.label_keys else self.image_resize
            d[key] = resize(d[key])
        if self.original_size_key is not None and original is not None:
            d[self.original_size_key] = original
        return d
