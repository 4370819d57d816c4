"""Rasterised phantom shapes: the mm coordinate grid, polar coordinates, ellipses, wobbly outlines.

Shared by the cardiac and abdominal generators; shapes are evaluated on a (possibly
supersampled) grid of pixel centres in mm, origin at the image centre.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _grid(shape: tuple[int, int], dx: float, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (mm, origin at the image centre) of an ``ss``-times finer grid."""
    h, w = shape
    ys = ((np.arange(h * ss) + 0.5) / ss - h / 2) * dx
    xs = ((np.arange(w * ss) + 0.5) / ss - w / 2) * dx
    return np.meshgrid(ys, xs, indexing="ij")


def _polar(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = yy - cy, xx - cx
    return np.hypot(dy, dx), np.arctan2(dy, dx)


def _ellipse_radius(theta: np.ndarray, a: float, b: float, rot: float) -> np.ndarray:
    """Radius of an ellipse (semi-axes ``a`` along ``rot``, ``b`` across) in direction ``theta``."""
    t = theta - rot
    return 1.0 / np.sqrt((np.cos(t) / a) ** 2 + (np.sin(t) / b) ** 2)


def _ellipse(yy, xx, cy, cx, ry: float, rx: float, rot: float = 0.0) -> np.ndarray:
    """Filled ellipse: semi-axis ``rx`` along direction ``rot`` (0 = +x), ``ry`` across it."""
    dy, dx = yy - cy, xx - cx
    if rot:
        c, s = np.cos(rot), np.sin(rot)
        dx, dy = dx * c + dy * s, dy * c - dx * s
    return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0


def _wobbly(yy, xx, cy, cx, ry, rx, rot, harm: Sequence[tuple[int, float, float]]) -> np.ndarray:
    """Ellipse (as :func:`_ellipse`) whose radius is modulated by harmonics ``(order, amplitude, phase)``."""
    rho, th = _polar(yy, xx, cy, cx)
    r = _ellipse_radius(th, rx, ry, rot)
    for n, amp, ph in harm:
        r = r * (1 + amp * np.cos(n * th + ph))
    return rho <= r
