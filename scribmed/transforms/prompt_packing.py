"""Packing prompts for SAM: ragged per-prompt point sets into padded ``(K, P)`` arrays.

Shared by the dictionary transforms (:class:`~scribmed.transforms.prompts.ScribblePromptsd`,
:class:`~scribmed.transforms.sesam_points.SeSAMPointsd`), with their one-output-key-per-key rule.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

#: SAM's label for padding points (ignored by the prompt encoder).
PAD_LABEL = -1


def _output_keys(keys: Sequence[Hashable], output_key: str | Sequence[str]) -> tuple[str, ...]:
    outs = (output_key,) if isinstance(output_key, str) else tuple(output_key)
    if len(outs) != len(keys):
        raise ValueError(f"need one output key per key: keys {list(keys)}, output_key {list(outs)}")
    return outs


def _pack(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-prompt ``(coords (p, 2), labels (p,))`` padded with ``PAD_LABEL`` at (0, 0)."""
    width = max((len(c) for c, _ in rows), default=0)
    coords = np.zeros((len(rows), width, 2), dtype=np.float32)
    labels = np.full((len(rows), width), PAD_LABEL, dtype=np.int32)
    for i, (c, lab) in enumerate(rows):
        coords[i, : len(c)] = c
        labels[i, : len(lab)] = lab
    return coords, labels


__all__ = [
    "PAD_LABEL",
]
