"""Resizing integer label maps: nearest neighbour, and sparse annotations without losing a drawn pixel.

Shared by SAM decoder fine-tuning (targets resized to the decoder's 256x256 frame) and the
training slice cache (sparse weak targets: points and scribbles must survive downsampling).
"""

from __future__ import annotations

import numpy as np

__all__ = ["resize_label_nearest", "resize_scribble"]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel (pixel centres aligned, like ``nearest-exact``)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_label_nearest(label: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer ``(H, W)`` map to ``out_hw`` (centre-aligned)."""
    h, w = label.shape
    if (h, w) == tuple(out_hw):
        return label
    return label[np.ix_(_nearest_index(h, out_hw[0]), _nearest_index(w, out_hw[1]))]


def resize_scribble(scribble: np.ndarray, out_hw: tuple[int, int], ignore_index: int) -> np.ndarray:
    """Resize a sparse ``(H, W)`` scribble to ``out_hw`` without losing a drawn class.

    Nearest-neighbour first; then every drawn pixel (value != ``ignore_index``) is written onto
    the output pixel containing it, background first and foreground classes last, so a thin
    scribble downsampled still marks every output pixel it crosses.
    """
    h, w = scribble.shape
    if (h, w) == tuple(out_hw):
        return scribble
    out = resize_label_nearest(scribble, out_hw).copy()
    rows, cols = np.nonzero(scribble != ignore_index)
    if rows.size:
        r = np.minimum((rows * out_hw[0]) // h, out_hw[0] - 1)
        c = np.minimum((cols * out_hw[1]) // w, out_hw[1] - 1)
        values = scribble[rows, cols]
        order = np.argsort(values != 0, kind="stable")
        out[r[order], c[order]] = values[order]
    return out
