"""Per-patient random draws shared by the phantom generators.

The generator of patient ``i`` (seeded by ``(seed, i, salt)``, so a patient does not depend on
``n_patients``), the matrix size, the pixel size, and the patient's synthesised scribble.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from scribmed.data.case import ClassMap
from scribmed.data.scribble_synthesis import ScribbleStyle, synthesize_scribbles


def _rng(seed: int, index: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, index, int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)])


def _size(rng: np.random.Generator, size: int | tuple[int, int] | None, lo_hi: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return tuple(int(v) for v in 8 * rng.integers(lo_hi[0] // 8, lo_hi[1] // 8 + 1, size=2))  # type: ignore[return-value]
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _pixel_size(rng: np.random.Generator, shape: tuple[int, int], fov_mm: tuple[float, float],
                spacing_xy: Optional[tuple[float, float]]) -> float:
    """In-plane pixel size (mm): from an explicit range, else field of view / larger side."""
    if spacing_xy is not None:
        return round(float(rng.uniform(*spacing_xy)), 3)
    return round(float(rng.uniform(*fov_mm)) / max(shape), 3)


def _scribble(label: np.ndarray, class_map: ClassMap, rng: np.random.Generator,
              style: Optional[ScribbleStyle], background_region: Optional[np.ndarray] = None) -> np.ndarray:
    return synthesize_scribbles(label, class_map, seed=rng, style=style, background_region=background_region)
