"""Box prompts: the tight ``(x0, y0, x1, y1)`` box of a mask or of one class's scribble.

Boxes are inclusive pixel indices in the slice's own frame (map them with
:func:`scribmed.transforms.prompt_frame.boxes_to_input_frame`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scribmed.transforms.prompt_points import _as_slice


def mask_box(mask_2d: Any, margin: int = 0) -> tuple[int, int, int, int] | None:
    """Tight box ``(x0, y0, x1, y1)`` (inclusive pixel indices) of a mask, grown by ``margin``.

    The box is clipped to the image. Returns ``None`` for an empty mask.
    """
    m = _as_slice(mask_2d, "mask").astype(bool)
    if not m.any():
        return None
    rows = np.nonzero(m.any(axis=1))[0]
    cols = np.nonzero(m.any(axis=0))[0]
    h, w = m.shape
    return (
        max(int(cols[0]) - margin, 0),
        max(int(rows[0]) - margin, 0),
        min(int(cols[-1]) + margin, w - 1),
        min(int(rows[-1]) + margin, h - 1),
    )


def scribble_box(scribble_2d: Any, class_index: int, margin: int = 0) -> tuple[int, int, int, int] | None:
    """Box of one class's scribble (see :func:`mask_box`); ``None`` when it has none."""
    return mask_box(_as_slice(scribble_2d) == class_index, margin)


__all__ = [
    "mask_box",
    "scribble_box",
]
