"""The prompts of a fine-tuning round: one batched prompt set per scribbled slice.

Every foreground class with a scribble on a slice is prompted exactly as pseudo-label
generation prompts it (:class:`~scribmed.transforms.prompts.ScribblePromptsd`); the prompts
are computed once per case (deterministic) and decoded for all classes of a slice in one
call. Shared by training (:mod:`scribmed.sam.decoder_finetune`) and validation
(:mod:`scribmed.sam.decoder_validation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scribmed.data.case import ClassMap
from scribmed.networks.sam_backends import LOW_RES
from scribmed.sam.finetune_config import FinetuneConfig
from scribmed.sam.pseudo_labels import decode_prompts
from scribmed.transforms.prompts import ScribblePromptsd


@dataclass
class _SlicePrompt:
    case_index: int
    z: int
    classes: list[int]
    coords: torch.Tensor  # (K, P, 2) in the backend's input frame
    labels: torch.Tensor  # (K, P)


def _prompter(class_map: ClassMap, config: FinetuneConfig, input_size: int) -> ScribblePromptsd:
    return ScribblePromptsd(
        keys=("scribble",),
        class_map=class_map,
        n_points=int(config.n_points),
        negatives=config.negatives,  # type: ignore[arg-type]
        input_size=int(input_size),
    )


def _case_prompts(case_index: int, scribble: np.ndarray, prompter: ScribblePromptsd) -> list[_SlicePrompt]:
    out = []
    for z in range(scribble.shape[0]):
        p = prompter.prompts(scribble[z])
        if not p["classes"]:
            continue
        out.append(
            _SlicePrompt(
                case_index,
                z,
                [int(k) for k in p["classes"]],
                torch.from_numpy(np.asarray(p["point_coords"], dtype=np.float32)),
                torch.from_numpy(np.asarray(p["point_labels"], dtype=np.int64)),
            )
        )
    return out


def _decode_slice(backend: Any, embedding: torch.Tensor, sp: _SlicePrompt, hw: tuple[int, int]) -> torch.Tensor:
    """Logits ``(K, H, W)`` for all classes of one slice: one batched decoder call."""
    return decode_prompts(backend, embedding, sp.coords, sp.labels, hw)


def low_res_hw(backend: Any, hw: tuple[int, int], side: int = LOW_RES) -> tuple[int, int]:
    """``(h, w)`` of a slice of shape ``hw`` in the decoder's ``side`` x ``side`` low-resolution frame (padding excluded)."""
    nh, nw = backend.resized_hw(hw)
    scale = int(side) / float(backend.input_size)
    return max(1, int(round(nh * scale))), max(1, int(round(nw * scale)))


def _decode_slice_low(backend: Any, embedding: torch.Tensor, sp: _SlicePrompt, hw: tuple[int, int]) -> torch.Tensor:
    """Low-resolution logits ``(K, h, w)`` (:func:`low_res_hw`) for all classes of one slice, not upsampled."""
    low_res, _ = backend.decode(embedding, point_coords=sp.coords, point_labels=sp.labels)
    lh, lw = low_res_hw(backend, hw, int(low_res.shape[-1]))
    return low_res[:, 0, :lh, :lw]


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
