"""MR image formation for the phantoms: partial volume, bias field, Rician noise, scaling, texture.

Turns fine-grid intensity maps into a float32 volume in [0, 1] the same way for the cardiac
and the abdominal generators.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _downsample(fine: np.ndarray, ss: int, sigma_px: float) -> np.ndarray:
    """Partial-volume: blur on the fine grid, then average ``ss x ss`` blocks."""
    if sigma_px > 0:
        fine = ndi.gaussian_filter(fine, sigma_px * ss)
    h, w = fine.shape[0] // ss, fine.shape[1] // ss
    return fine.reshape(h, ss, w, ss).mean(axis=(1, 3))


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative field, ``exp`` of a random quadratic in (z, y, x), about 1 +- strength."""
    s, h, w = shape
    z = np.linspace(-1, 1, s)[:, None, None] if s > 1 else np.zeros((1, 1, 1))
    y = np.linspace(-1, 1, h)[None, :, None]
    x = np.linspace(-1, 1, w)[None, None, :]
    c = rng.normal(0, 1, 7)
    poly = c[0] * y + c[1] * x + 0.5 * c[2] * y * x + 0.5 * c[3] * y**2 + 0.5 * c[4] * x**2 + 0.3 * c[5] * z
    poly = poly + 0.3 * c[6] * z * x
    poly = poly / (np.abs(poly).max() + 1e-6)
    return np.exp(strength * poly)


def _finish(fine_slices: list[np.ndarray], ss: int, rng: np.random.Generator, blur_px: float,
            noise: tuple[float, float], bias: float) -> np.ndarray:
    """Fine-grid intensity maps -> blurred, biased, noisy float32 volume in [0, 1]."""
    vol = np.stack([_downsample(f, ss, blur_px) for f in fine_slices]).astype(np.float64)
    vol *= _bias_field(rng, vol.shape, bias)
    sigma = rng.uniform(*noise) * max(float(vol.max()), 1e-6)
    vol = np.sqrt((vol + rng.normal(0, sigma, vol.shape)) ** 2 + rng.normal(0, sigma, vol.shape) ** 2)
    hi = float(np.percentile(vol, 99))
    lo = float(vol.min())
    vol = (np.clip(vol, lo, hi) - lo) / max(hi - lo, 1e-6)
    return vol.astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale_px: float, amp: float) -> np.ndarray:
    """Smooth random texture around 1 (tissue inhomogeneity)."""
    t = ndi.gaussian_filter(rng.normal(0, 1, shape), scale_px)
    t /= t.std() + 1e-9
    return 1 + amp * t
