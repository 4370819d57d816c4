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
