"""Predicting and validating with the mask decoder being fine-tuned.

:func:`predict_case` labels a case from its scribbles with the backend's current decoder,
:func:`validation_scribble` gives validation cases without a scribble a synthesised one, and
:func:`validation_dice` / ``_validate`` score the decoder after every epoch, which is how a
round selects its decoder (:mod:`scribmed.sam.decoder_finetune`).
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.networks.prompt_coords import input_size_for_prompts
from scribmed.sam.finetune_config import FinetuneConfig
from scribmed.sam.finetune_prompts import (
    _case_prompts,
    _decode_slice,
    _prompter,
    _SlicePrompt,
)
from scribmed.sam.merge import default_merge_priority, merge_logits
from scribmed.sam.pseudo_labels import case_scribble


@torch.no_grad()
def predict_case(
    backend: Any,
    cache: Any,
    case: Any,
    class_map: ClassMap,
    n_points: int = 10,
    negatives: str = "neighbour",
    priority: Optional[Sequence[int]] = None,
    prompts: Optional[Sequence[_SlicePrompt]] = None,
) -> np.ndarray:
    """Label map ``(S, H, W)`` uint8 of one case from its scribbles with the backend's current decoder.

    Each slice's scribbled classes are prompted (one batched call), masks are logit > 0 and
    merged by ``priority`` (default :func:`default_merge_priority`); slices without a foreground
    scribble are background. ``prompts`` (internal): the case's precomputed slice prompts.
    """
    if priority is None:
        priority = default_merge_priority(class_map)
    if prompts is None:
        scribble = case_scribble(case)
        cfg = FinetuneConfig(n_points=n_points, negatives=negatives)
        prompts = _case_prompts(0, scribble, _prompter(class_map, cfg, input_size_for_prompts(backend)))
        s, h, w = scribble.shape
    else:
        shape = tuple(np.shape(case.image))
        s, h, w = (1, *shape) if len(shape) == 2 else shape
    out = np.zeros((s, h, w), dtype=np.uint8)
    for sp in prompts:
        logits = _decode_slice(backend, cache.slice(case, sp.z), sp, (h, w)).float().cpu().numpy()
        label, _ = merge_logits(dict(zip(sp.classes, logits)), priority, threshold=0.0, shape=(h, w))
        out[sp.z] = label
    return out


def validation_scribble(case: Any, class_map: ClassMap) -> np.ndarray:
    """The scribble that prompts a validation case: its own, or one synthesised from its label.

    Some datasets give validation patients full labels but no scribbles (MSCMR's ``val/``).
    Selecting the decoder needs prompts for them, so scribbles are drawn from the label with
    :func:`scribmed.data.scribble_synthesis.synthesize_scribbles` (ACDC-like strokes, seeded by
    the case id, so every round and rerun prompts the same way). The label stays the reference.

    Raises:
        DataError: the case has neither a scribble nor a label.
    """
    if case.has_scribble:
        return case_scribble(case)
    if not case.has_label:
        raise DataError(case.source, f"validation case {case.case_id} has neither a scribble nor a label")
    from scribmed.data.scribble_synthesis import synthesize_scribbles

    label = np.asarray(case.label)
    label = label[None] if label.ndim == 2 else label
    seed = zlib.crc32(str(case.case_id).encode("utf-8"))
    return np.asarray(synthesize_scribbles(label, class_map, seed=seed), dtype=np.int64)


def validation_dice(prediction: np.ndarray, reference: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    """Per-class volume Dice; a class empty in both is left out (no NaN enters a mean)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    out = {}
    for k in classes:
        p, r = prediction == k, reference == k
        total = int(p.sum()) + int(r.sum())
        if total:
            out[int(k)] = 2.0 * float(np.logical_and(p, r).sum()) / total
    return out


def _validate(
    backend: Any,
    cache: Any,
    val_cases: Sequence[Any],
    val_prompts: Sequence[list[_SlicePrompt]],
    pseudo_labels: Mapping[str, np.ndarray],
    class_map: ClassMap,
    priority: Optional[Sequence[int]],
) -> dict[str, Any]:
    """Mean foreground Dice of the current decoder on the validation cases (mean of case means)."""
    backend.mask_decoder.eval()
    case_means: list[float] = []
    per_class: dict[int, list[float]] = {k: [] for k in class_map.foreground}
    used_pl: list[str] = []
    for case, prompts in zip(val_cases, val_prompts):
        reference = case.label
        if reference is None:
            if case.case_id not in pseudo_labels:
                raise ValueError(f"validation case {case.case_id} has neither a label nor a pseudo label")
            reference = pseudo_labels[case.case_id]
            used_pl.append(case.case_id)
        reference = np.asarray(reference)
        reference = reference[None] if reference.ndim == 2 else reference
        pred = predict_case(backend, cache, case, class_map, priority=priority, prompts=prompts)
        scores = validation_dice(pred, reference, class_map.foreground)
        for k, v in scores.items():
            per_class[k].append(v)
        if scores:
            case_means.append(float(np.mean(list(scores.values()))))
    if used_pl:
        warnings.warn(
            f"validation cases without a ground-truth label scored against their pseudo label: {used_pl}",
            stacklevel=3,
        )
    reference_kind = "pseudo_label" if len(used_pl) == len(val_cases) else ("mixed" if used_pl else "label")
    return {
        "val_dice": float(np.mean(case_means)) if case_means else float("nan"),
        "val_dice_per_class": {
            class_map.names[k]: (float(np.mean(v)) if v else float("nan")) for k, v in per_class.items()
        },
        "val_reference": reference_kind,
        "val_cases_scored_against_pseudo_label": used_pl,
    }


__all__ = [
    "predict_case",
    "validation_dice",
    "validation_scribble",
]
