"""MONAI-style transforms (array ``Foo`` and dictionary ``Food`` versions); no engine imports."""

from scribmed.transforms.augment import (
    DMPLSAugmentd,
    RandRot90Flip,
    RandRot90Flipd,
    RandRotateSmall,
    RandRotateSmalld,
    rot90_flip,
    rotate_slices,
)
from scribmed.transforms.intensity import ScaleIntensityPercentile, ScaleIntensityPercentiled
from scribmed.transforms.resize import ResizeSlice, ResizeSliced, resize_back, resize_slices

__all__ = [
    "DMPLSAugmentd",
    "RandRot90Flip",
    "RandRot90Flipd",
    "RandRotateSmall",
    "RandRotateSmalld",
    "ResizeSlice",
    "ResizeSliced",
    "ScaleIntensityPercentile",
    "ScaleIntensityPercentiled",
    "resize_back",
    "resize_slices",
    "rot90_flip",
    "rotate_slices",
]
