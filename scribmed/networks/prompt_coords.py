"""Prompt coordinates for a SAM backend: the prompt transforms' input frame and padded point batches.

:func:`input_size_for_prompts` gives the ``input_size`` the prompt transforms
(:mod:`scribmed.transforms.prompt_frame`) need to land in a backend's frame; :func:`pad_points`
stacks per-class point sets into the ``(K, P, 2)`` / ``(K, P)`` tensors
:meth:`SamBackend.decode <scribmed.networks.sam_backends.SamBackend.decode>` takes. Coordinates are
``(x, y) = (column, row)`` pixels.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
InputSize = Union[int, tuple[int, int]]


def input_size_for_prompts(backend: Any) -> InputSize:
    """The ``input_size`` prompt transforms (``ScribblePromptsd``, ``WeakPromptsd``) need for ``backend``.

    :attr:`~scribmed.networks.sam_backends.SamBackend.prompt_input_size` (SAM2: ``(S, S)``), else
    ``backend.input_size``.
    """
    return getattr(backend, "prompt_input_size", None) or int(backend.input_size)


def pad_points(
    prompts: Sequence[tuple[ArrayLike, ArrayLike]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-class ``(coords (P_k, 2), labels (P_k,))`` into ``(K, P, 2)`` / ``(K, P)`` tensors.

    Shorter sets are padded with label -1 points (ignored by SAM's prompt encoder, though the
    extra tokens change the logits slightly; give every class the same number of points for
    results identical to one call per class).
    """
    if not prompts:
        raise ValueError("no prompt sets given")
    p = max(int(len(c)) for c, _ in prompts)
    coords = torch.zeros((len(prompts), p, 2), dtype=torch.float32)
    labels = torch.full((len(prompts), p), -1, dtype=torch.int64)
    for k, (c, lab) in enumerate(prompts):
        n = int(len(c))
        if n:
            coords[k, :n] = torch.as_tensor(np.asarray(c, dtype=np.float32).reshape(n, 2))
            labels[k, :n] = torch.as_tensor(np.asarray(lab, dtype=np.int64).reshape(n))
    return coords, labels


def _scale_xy(xy: ArrayLike, sx: float, sy: float) -> ArrayLike:
    """``(..., 2)`` coordinates ``(x, y)`` scaled by ``(sx, sy)`` (tensor or float64 array, as given)."""
    if isinstance(xy, torch.Tensor):
        factor = torch.tensor([sx, sy], dtype=torch.float32 if not xy.is_floating_point() else xy.dtype,
                              device=xy.device)
        return xy.to(factor.dtype) * factor
    arr = np.asarray(xy, dtype=np.float64)
    if arr.shape[-1] != 2:
        raise ValueError(f"coordinates must have a last axis of 2 (x, y), got shape {arr.shape}")
    return arr * np.array([sx, sy])


__all__ = [
    "input_size_for_prompts",
    "pad_points",
]
