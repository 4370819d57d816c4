"""Synthetic nuclei images (DSB2018-like fluorescence) with instance maps, for the instance recipes' tests.

:func:`make_nuclei_image` places non-overlapping elliptical nuclei of varied size, elongation and
brightness on a dark background (about one in seven is placed against an earlier nucleus, so some
touch: their shared pixels stay with the earlier one), then blurs and adds Gaussian noise.
:func:`write_nuclei_dataset` writes such images in the ``dsb2018`` layout (one mask PNG per
nucleus) through that layout's ``write_case``. Image ``i`` of a seed is the same whatever
``n_images`` is (its generator is seeded by ``(seed, i)``). Ten 128 x 128 images take well
under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

#: Semi-axis range (px) of a nucleus at the reference size of 128 px (scaled with the image).
SEMI_AXES_PX = (3.0, 9.0)
TOUCH_PROB = 0.15
MIN_NUCLEUS_PX = 12


def _ellipse_in_box(shape: tuple[int, int], cy: float, cx: float, a: float, b: float,
                    rot: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """A filled ellipse (semi-axis ``a`` along ``rot``, ``b`` across) as a bounding-box slice and mask."""
    h, w = shape
    r = int(np.ceil(max(a, b))) + 1
    y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 2)
    x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 2)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy + 0.5 - cy, xx + 0.5 - cx
    c, s = np.cos(rot), np.sin(rot)
    u, v = dx * c + dy * s, dy * c - dx * s
    return (slice(y0, y1), slice(x0, x1)), (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _largest_component(mask: np.ndarray) -> np.ndarray:
    comps, n = ndi.label(mask)
    if n <= 1:
        return mask
    return comps == (int(np.argmax(np.bincount(comps.ravel())[1:])) + 1)


def make_nuclei_image(
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 128),
    n_range: tuple[int, int] = (8, 20),
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic nuclei image and its instance map.

    Args:
        rng: the generator (all randomness comes from it).
        size: ``(H, W)`` in pixels.
        n_range: inclusive range of the number of nuclei tried (fewer when the image is full).

    Returns:
        ``(image, instance)``: image float32 ``(H, W)`` in [0, 1]; instance int32 ``(H, W)``,
        0 background, nuclei numbered 1..n in placement order, each one 4-connected piece of at
        least :data:`MIN_NUCLEUS_PX` pixels.
    """
    h, w = (int(size[0]), int(size[1]))
    lo, hi = n_range
    if not 1 <= lo <= hi:
        raise ValueError(f"n_range must satisfy 1 <= lo <= hi, got {n_range}")
    scale = min(h, w) / 128.0
    target = int(rng.integers(lo, hi + 1))
    instance = np.zeros((h, w), dtype=np.int32)
    brightness = [0.0]
    centres: list[tuple[float, float, float]] = []
    for _ in range(30 * target):
        if len(centres) == target:
            break
        a, b = (float(v) for v in rng.uniform(*SEMI_AXES_PX, size=2) * max(scale, 0.25))
        a, b = max(a, b), min(a, b) * float(rng.uniform(0.6, 1.0))
        rot = float(rng.uniform(0.0, np.pi))
        if centres and rng.random() < TOUCH_PROB:  # against an earlier nucleus
            py, px, pr = centres[int(rng.integers(len(centres)))]
            ang = float(rng.uniform(0.0, 2 * np.pi))
            cy, cx = py + (pr + b) * np.sin(ang), px + (pr + b) * np.cos(ang)
        else:
            cy, cx = float(rng.uniform(a, h - a)), float(rng.uniform(a, w - a))
        box, mask = _ellipse_in_box((h, w), cy, cx, a, b, rot)
        crop = instance[box]
        clash = mask & (crop > 0)
        if clash.sum() > 0.15 * mask.sum():
            continue
        mask = _largest_component(mask & (crop == 0))
        if mask.sum() < MIN_NUCLEUS_PX:
            continue
        k = len(centres) + 1
        crop[mask] = k
        centres.append((cy, cx, 0.5 * (a + b)))
        brightness.append(float(rng.uniform(0.35, 0.95)))
    fg = np.asarray(brightness, dtype=np.float32)[instance]
    texture = ndi.gaussian_filter(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), 1.5)
    image = np.float32(rng.uniform(0.02, 0.12)) + fg * (1.0 + 0.25 * texture)
    image = ndi.gaussian_filter(image, float(rng.uniform(0.6, 1.2)))
    image = image + rng.normal(0.0, float(rng.uniform(0.01, 0.04)), (h, w)).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), instance


def nuclei_case_id(i: int) -> str:
    """Case id of phantom image ``i`` (also its patient id)."""
    return f"nuclei{i:03d}"


def write_nuclei_dataset(
    root: str | Path,
    n_images: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (128, 128),
) -> list[str]:
    """Write ``n_images`` synthetic nuclei images in the ``dsb2018`` layout under ``root``.

    Image ``i`` is ``root/nuclei00i/images/nuclei00i.png`` (8-bit grey) with one mask per
    nucleus; its generator is ``numpy.random.default_rng([seed, i])``. Returns the case ids.
    """
    # layouts import data only; keep phantoms importable alone
    from scribmed.data.layouts import dsb2018

    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    root = Path(root)
    ids = []
    for i in range(n_images):
        image, instance = make_nuclei_image(np.random.default_rng([int(seed), i]), size)
        case_id = nuclei_case_id(i)
        dsb2018.write_case(root, case_id, case_id, image[None], instance=instance[None])
        ids.append(case_id)
    return ids


__all__ = ["make_nuclei_image", "nuclei_case_id", "write_nuclei_dataset"]
