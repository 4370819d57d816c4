"""SAM's input frame: where a slice's pixels land after SAM's resize, and back.

``input_size`` int is SAM's ``ResizeLongestSide`` (longest side to ``input_size``, then padded);
``(h, w)`` a plain resize. Points are ``(x, y)``, boxes ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

InputSize = int | tuple[int, int]


def input_frame_shape(original_hw: Sequence[int], input_size: InputSize) -> tuple[int, int]:
    """``(h, w)`` of the image inside SAM's input.

    ``input_size`` int: SAM's ``ResizeLongestSide`` (longest side → ``input_size``, the other
    side ``int(side * scale + 0.5)``, then padded). ``(h, w)``: a plain resize to that shape.
    """
    h, w = (int(v) for v in original_hw)
    if h < 1 or w < 1:
        raise ValueError(f"original size must be positive (H, W), got {tuple(original_hw)}")
    if isinstance(input_size, (int, np.integer)):
        scale = int(input_size) / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)
    ih, iw = (int(v) for v in input_size)
    return ih, iw


def _scales(original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    nh, nw = input_frame_shape(original_hw, input_size)
    return np.array([nw / int(original_hw[1]), nh / int(original_hw[0])], dtype=np.float64)


def to_input_frame(points_xy: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Map ``(..., 2)`` ``(x, y)`` points from the original slice to SAM's input frame (float32).

    Same arithmetic as ``segment_anything``'s ``ResizeLongestSide.apply_coords`` for an int size.
    """
    p = np.asarray(points_xy, dtype=np.float64)
    return (p * _scales(original_hw, input_size)).astype(np.float32)


def from_input_frame(points_xy: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Inverse of :func:`to_input_frame`."""
    p = np.asarray(points_xy, dtype=np.float64)
    return (p / _scales(original_hw, input_size)).astype(np.float32)


def boxes_to_input_frame(boxes: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Map ``(..., 4)`` ``(x0, y0, x1, y1)`` boxes to SAM's input frame (float32)."""
    b = np.asarray(boxes, dtype=np.float64)
    return to_input_frame(b.reshape(*b.shape[:-1], 2, 2), original_hw, input_size).reshape(b.shape)


def boxes_from_input_frame(boxes: Any, original_hw: Sequence[int], input_size: InputSize) -> np.ndarray:
    """Inverse of :func:`boxes_to_input_frame`."""
    b = np.asarray(boxes, dtype=np.float64)
    return from_input_frame(b.reshape(*b.shape[:-1], 2, 2), original_hw, input_size).reshape(b.shape)


__all__ = [
    "boxes_from_input_frame",
    "boxes_to_input_frame",
    "from_input_frame",
    "input_frame_shape",
    "to_input_frame",
]
