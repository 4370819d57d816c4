"""Percentile clipping + scaling to [0, 1], as the WSL4MIS ACDC preprocessing does.

WSL4MIS clips each volume at its 99th intensity percentile (lower end: the minimum) and then
min-max scales it to [0, 1]. MONAI's ``ScaleIntensityRangePercentiles(d)`` already computes exactly
this (``lower=0, upper=99, b_min=0, b_max=1, clip=True``), so scribmed does not re-implement it:
the classes below are MONAI's with those defaults, plus a ``per_slice`` switch (MONAI's
``channel_wise`` on a ``(slices, H, W)`` array, i.e. one percentile per slice) and an explicit
error for non-finite input, which would otherwise turn the whole volume into NaN silently.

Outputs follow MONAI: ``MetaTensor`` float32 (MONAI warns and returns a constant for a constant
input, e.g. an all-zero padding slice with ``per_slice=True``).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import (
    ScaleIntensityRangePercentiles,
    ScaleIntensityRangePercentilesd,
)

from scribmed.data.errors import DataError

__all__ = ["ScaleIntensityPercentile", "ScaleIntensityPercentiled"]


def _check_finite(img: NdarrayOrTensor, what: str) -> None:
    finite = bool(torch.isfinite(img).all()) if isinstance(img, torch.Tensor) else bool(np.isfinite(img).all())
    if not finite:
        raise DataError(None, f"{what}: image contains NaN or Inf values; cannot scale intensities")


class ScaleIntensityPercentile(ScaleIntensityRangePercentiles):
    """Clip at the ``lower``/``upper`` percentiles and scale to ``[b_min, b_max]``.

    Args:
        lower: lower percentile (0 = minimum, as WSL4MIS).
        upper: upper percentile (99 as WSL4MIS).
        b_min, b_max: output range.
        per_slice: one percentile pair per leading-axis entry (slice/channel) instead of one for
            the whole array.

    Raises:
        DataError: the image holds NaN or Inf.
    """

    def __init__(
        self,
        lower: float = 0.0,
        upper: float = 99.0,
        b_min: float = 0.0,
        b_max: float = 1.0,
        per_slice: bool = False,
    ) -> None:
        super().__init__(lower, upper, b_min, b_max, clip=True, relative=False, channel_wise=per_slice)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        _check_finite(img, "ScaleIntensityPercentile")
        return super().__call__(img)


class ScaleIntensityPercentiled(ScaleIntensityRangePercentilesd):
    """Dictionary version of :class:`ScaleIntensityPercentile` (each key scaled on its own).

    Args:
        keys: image keys to scale (never labels).
        lower, upper, b_min, b_max, per_slice: see :class:`ScaleIntensityPercentile`.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.0,
        upper: float = 99.0,
        b_min: float = 0.0,
        b_max: float = 1.0,
        per_slice: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            lower,
            upper,
            b_min,
            b_max,
            clip=True,
            relative=False,
            channel_wise=per_slice,
            allow_missing_keys=allow_missing_keys,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            _check_finite(data[key], f"key {key!r}")
        return super().__call__(data)
