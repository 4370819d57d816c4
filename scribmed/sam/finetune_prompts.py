"""The prompts of a fine-tuning round: one batched prompt set per scribbled slice.

Every foreground class with a scribble on a slice is prompted exactly as pseudo-label
generation prompts it (:class:`~scribmed.transforms.prompts.ScribblePromptsd`); the prompts
are computed once per case (deterministic) and decoded for all classes of a slice in one
call. Shared by training (:mod:`scribmed.sam.decoder_finetune`) and validation
(:mod:`scribmed.sam.decoder_validation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from scribmed.data.case import ClassMap
from scribmed.networks.sam_backends import LOW_RES
from scribmed.sam.finetune_config import FinetuneConfig
from scribmed.sam.pseudo_labels import decode_prompts
from scribmed.transforms.prompt_frame import InputSize
from scribmed.transforms.prompts import ScribblePromptsd

__all__ = ["low_res_hw"]


@dataclass
class _SlicePrompt:
    case_index: int
    z: int
    classes: list[int]
    coords: torch.Tensor  # (K, P, 2) in the backend's input frame
    labels: torch.Tensor  # (K, P)
    boxes: Optional[torch.Tensor] = None  # (K, 4) in the input frame (weak boxes, full masks)
    row_classes: Optional[list[int]] = None  # per row when a class has several rows (boxes); merged by max


def _from_prompt_dict(case_index: int, z: int, p: dict[str, Any]) -> Optional[_SlicePrompt]:
    """A prompt dict (ScribblePromptsd's format) as a slice prompt; ``None`` when it has no rows."""
    rows = [int(k) for k in p["classes"]]
    if not rows:
        return None
    classes = list(dict.fromkeys(rows))
    return _SlicePrompt(
        case_index,
        z,
        classes,
        torch.from_numpy(np.asarray(p["point_coords"], dtype=np.float32)),
        torch.from_numpy(np.asarray(p["point_labels"], dtype=np.int64)),
        None if p.get("boxes") is None else torch.from_numpy(np.asarray(p["boxes"], dtype=np.float32)),
        rows if len(classes) != len(rows) else None,
    )


def _weak_case_prompts(case_index: int, case: Any, kind: str, target: np.ndarray, prompter: Any) -> list[_SlicePrompt]:
    """The slice prompts of a case of any supervision (``prompter``: a :class:`WeakPrompter`)."""
    out = []
    for z in range(target.shape[0]):
        sp = _from_prompt_dict(case_index, z, prompter.slice_prompts(case, kind, target, z))
        if sp is not None:
            out.append(sp)
    return out


def _merge(logits: torch.Tensor, sp: _SlicePrompt) -> torch.Tensor:
    if sp.row_classes is None:
        return logits
    from scribmed.sam.weak_prompting import merge_rows

    return merge_rows(logits, sp.row_classes)[0]


def _prompter(class_map: ClassMap, config: FinetuneConfig, input_size: InputSize) -> ScribblePromptsd:
    return ScribblePromptsd(
        keys=("scribble",),
        class_map=class_map,
        n_points=int(config.n_points),
        negatives=config.negatives,  # type: ignore[arg-type]
        input_size=input_size if isinstance(input_size, tuple) else int(input_size),
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
    return _merge(decode_prompts(backend, embedding, sp.coords, sp.labels, hw, boxes=sp.boxes), sp)


def low_res_hw(backend: Any, hw: tuple[int, int], side: int = LOW_RES) -> tuple[int, int]:
    """``(h, w)`` of a slice of shape ``hw`` in the decoder's ``side`` x ``side`` low-resolution frame (padding excluded)."""
    nh, nw = backend.resized_hw(hw)
    scale = int(side) / float(backend.input_size)
    return max(1, int(round(nh * scale))), max(1, int(round(nw * scale)))


def _decode_slice_low(backend: Any, embedding: torch.Tensor, sp: _SlicePrompt, hw: tuple[int, int]) -> torch.Tensor:
    """Low-resolution logits ``(K, h, w)`` (:func:`low_res_hw`) for all classes of one slice, not upsampled."""
    low_res, _ = backend.decode(embedding, point_coords=sp.coords, point_labels=sp.labels, boxes=sp.boxes)
    lh, lw = low_res_hw(backend, hw, int(low_res.shape[-1]))
    return _merge(low_res[:, 0, :lh, :lw], sp)
