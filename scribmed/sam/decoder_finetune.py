"""One round of SAM mask-decoder fine-tuning on scribbles + the previous round's pseudo labels.

SAM-SP step 3: the image encoder and the prompt encoder stay frozen, only the
mask decoder trains (AdamW). Per training slice, every foreground class with a scribble on the
slice is prompted exactly as pseudo-label generation prompts it (:class:`ScribblePromptsd`:
positives along the scribble skeleton, negatives from the neighbouring structure), all classes
in **one** batched decoder call against the slice's cached embedding; the logits are upsampled
to the slice's own size and scored by :class:`~scribmed.losses.sam_finetune.SamFinetuneLoss`
(partial binary CE on the scribbles + soft Dice [+ soft IoU] against the pseudo label). Slices
without any foreground scribble are skipped.

After every epoch the decoder predicts the validation cases (same prompts, per-class masks at
logit > 0 merged with the cardiac priority for cardiac class maps) and is scored by the mean
foreground Dice against their ground truth (a validation case without a label falls back to
its pseudo label, recorded in the history). The best epoch wins (ties → the earlier one);
epoch 0 is the starting decoder when ``validate_initial`` is set, so a round never selects a
decoder that validates worse than the one it started from.

Files in ``out_dir`` (written to a temporary name and renamed; loadable with
``torch.load(..., weights_only=True)`` and directly usable as a ``build_sam_backend(...,
checkpoint=...)`` file, since the weights sit under ``"model"`` with ``mask_decoder.`` keys):

* ``decoder_best.pt``: the selected decoder, its epoch, validation Dice and config;
* ``decoder_last.pt``: the latest decoder + AdamW state + completed epoch + history + RNG
  state; ``resume=True`` continues from it after a crash (epoch granularity).

Defaults follow the CPU recipe measured on real ACDC with LiteMedSAM: lr 5e-5 (10x the
paper's 5e-6: with a few epochs on a CPU the paper's rate barely moves the decoder), weight
decay 1e-4, 10 points per class with neighbour negatives, CE + 0.5 x soft Dice, 2 epochs.
The order of training slices is a permutation seeded by ``(seed, epoch)``, so a run (and a
resumed run) is deterministic on a CPU.

Mixed precision follows the backend's setting (:meth:`SamBackend.use_amp
<scribmed.networks.sam_backends.SamBackend.use_amp>`; SAM-SP's ``SamStageConfig.amp``): the
decoder's forward pass runs under :func:`scribmed.runtime.device.amp_policy`'s autocast (CUDA, or
bfloat16 on a CPU that has it when asked), the loss in float32, with a ``GradScaler`` for float16
(its state is part of ``decoder_last.pt``).

This module holds the training loop; the pieces it uses live next to it:
:mod:`~scribmed.sam.finetune_config` (settings and result),
:mod:`~scribmed.sam.finetune_prompts` (the slices' prompts),
:mod:`~scribmed.sam.decoder_validation` (prediction and validation Dice) and
:mod:`~scribmed.sam.decoder_checkpoint` (``decoder_best.pt`` / ``decoder_last.pt``).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from scribmed.data.case import ClassMap
from scribmed.losses.sam_finetune import SamFinetuneLoss
from scribmed.networks.prompt_coords import input_size_for_prompts
from scribmed.runtime.progress import progress_bar
from scribmed.sam.decoder_checkpoint import (
    _atomic_save,
    _decoder_weights,
    _read_checkpoint,
    decoder_state_path,
    load_decoder,
    save_decoder,
)
from scribmed.sam.decoder_validation import _validate, validation_scribble
from scribmed.sam.finetune_config import FinetuneConfig, FinetuneResult
from scribmed.sam.finetune_prompts import (
    _case_prompts,
    _decode_slice,
    _decode_slice_low,
    _prompter,
    _SlicePrompt,
    _weak_case_prompts,
)
from scribmed.sam.merge import default_merge_priority
from scribmed.sam.pseudo_labels import case_scribble
from scribmed.transforms.sparse_resize import resize_label_nearest, resize_scribble

__all__ = [
    "finetune_decoder",
    "slice_loss",
]

PathLike = Union[str, Path]


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------


def slice_loss(
    backend: Any,
    embedding: torch.Tensor,
    sp: _SlicePrompt,
    scribble: np.ndarray,
    pseudo_label: Optional[np.ndarray],
    loss_fn: SamFinetuneLoss,
    resolution: str = "low",
) -> torch.Tensor:
    """The fine-tuning loss of one slice (all its prompted classes from one batched decoder call).

    ``resolution="low"``: on the decoder's low-resolution logits, cropped to the image, against
    ``scribble`` / ``pseudo_label`` ``(H, W)`` resized to that frame; ``"full"``: on the logits
    upsampled to ``(H, W)``. The decoder runs under the backend's ``amp_policy`` autocast, the
    loss on float32 logits.
    """
    hw = (int(scribble.shape[0]), int(scribble.shape[1]))
    policy = getattr(backend, "amp_policy", None)
    with policy.autocast() if policy is not None else contextlib.nullcontext():
        if resolution == "low":
            logits = _decode_slice_low(backend, embedding, sp, hw)
        elif resolution == "full":
            logits = _decode_slice(backend, embedding, sp, hw)
        else:
            raise ValueError(f"resolution must be 'low' or 'full', got {resolution!r}")
    logits = logits.float()
    if resolution == "low":
        frame = (int(logits.shape[-2]), int(logits.shape[-1]))
        scribble = resize_scribble(scribble, frame, loss_fn.ignore_index)
        pseudo_label = None if pseudo_label is None else resize_label_nearest(pseudo_label, frame)
    dev = logits.device
    return loss_fn(
        logits,
        torch.from_numpy(scribble.astype(np.int64)).to(dev),
        sp.classes,
        None if pseudo_label is None else torch.from_numpy(pseudo_label.astype(np.int64)).to(dev),
    )


def _train_epoch(
    backend: Any,
    cache: Any,
    cases: Sequence[Any],
    scribbles: Sequence[np.ndarray],
    pls: Sequence[Optional[np.ndarray]],
    items: Sequence[_SlicePrompt],
    loss_fn: SamFinetuneLoss,
    optimizer: torch.optim.Optimizer,
    config: FinetuneConfig,
    epoch: int,
    *,
    scaler: Optional["torch.amp.GradScaler"] = None,
) -> dict[str, Any]:
    """One pass over the training slices in the ``(seed, epoch)`` permutation (``scaler``: float16 AMP)."""
    backend.mask_decoder.train()
    order = np.random.default_rng([int(config.seed), int(epoch)]).permutation(len(items))
    chunks = [order[i : i + int(config.batch_slices)] for i in range(0, len(order), int(config.batch_slices))]
    bar = progress_bar(total=len(order), desc=f"decoder epoch {epoch}", unit="slice", leave=False,
                       disable=not (config.progress and chunks))
    total, terms, n = 0.0, {}, 0
    for chunk in chunks:
        optimizer.zero_grad(set_to_none=True)
        for i in chunk:
            sp = items[int(i)]
            case = cases[sp.case_index]
            scribble = scribbles[sp.case_index][sp.z]
            pl = None if pls[sp.case_index] is None else pls[sp.case_index][sp.z]
            loss = slice_loss(backend, cache.slice(case, sp.z), sp, scribble, pl, loss_fn, config.loss_resolution)
            part = loss / len(chunk)
            (scaler.scale(part) if scaler is not None else part).backward()
            total += float(loss.detach())
            for name, value in loss_fn.last.items():
                terms[name] = terms.get(name, 0.0) + value
            n += 1
            bar.update(1)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    bar.close()
    return {
        "train_loss": total / n if n else float("nan"),
        "train_terms": {k: v / n for k, v in terms.items()},
        "train_slices": n,
        "steps": len(chunks),
    }


def _validation_prompts(case: Any, class_map: ClassMap, scribble_prompter: Any, weak_prompter: Any) -> list[_SlicePrompt]:
    """A validation case prompted from its own supervision; unlabeled (``none``) or scribble cases as without weak labels."""
    from scribmed.sam.weak_prompting import case_supervision, case_target

    kind = case_supervision(case)
    if kind in ("none", "scribble"):
        return _case_prompts(0, validation_scribble(case, class_map), scribble_prompter)
    return _weak_case_prompts(0, case, kind, case_target(case, class_map, kind), weak_prompter)


def _better(score: float, best: Optional[float]) -> bool:
    """Strictly better (ties keep the earlier epoch); NaN never beats a number."""
    if best is None:
        return True
    if math.isnan(score):
        return False
    return math.isnan(best) or score > best


def finetune_decoder(
    backend: Any,
    cache: Any,
    train_cases: Sequence[Any],
    val_cases: Sequence[Any],
    pseudo_labels: Mapping[str, np.ndarray],
    class_map: ClassMap,
    config: Optional[FinetuneConfig] = None,
    out_dir: PathLike = ".",
    resume: bool = True,
    weak: Optional[Any] = None,
) -> FinetuneResult:
    """Fine-tune the backend's mask decoder for one round and select it by validation Dice.

    Args:
        backend: a ``SamBackend`` (its decoder is trained in place; on return it holds the
            selected decoder, in eval mode).
        cache: an ``EmbeddingCache`` for ``backend`` (``cache.slice(case, z)``).
        train_cases: cases with scribbles (``(S, H, W)``) whose slices train the decoder.
        val_cases: cases with labels (and scribbles; without one, see :func:`validation_scribble`); selection by their mean
            foreground Dice. Empty: no validation, the last epoch is selected.
        pseudo_labels: case id → ``(S, H, W)`` integer pseudo label of the previous round (needed
            for every training case when ``dice_weight`` or ``iou_weight`` > 0; for validation
            cases only when they have no label).
        class_map: classes and the scribbles' ignore value.
        config: :class:`FinetuneConfig` (defaults: the measured CPU recipe).
        out_dir: the round's folder (``decoder_best.pt``, ``decoder_last.pt``).
        resume: continue from ``out_dir/decoder_last.pt`` when it exists (it must come from the
            same cases, backend and settings; ``epochs`` may grow). ``False`` starts over.
        weak: a :class:`~scribmed.sam.weak_prompting.WeakPromptConfig`: every case (training and
            validation) is prompted from its own supervision and trained against its sparse
            target (:func:`~scribmed.sam.weak_prompting.case_target`); scribble cases exactly as
            without it. ``None``: scribbles only.

    Returns:
        :class:`FinetuneResult`.

    Raises:
        DataError: a case without scribbles, shape mismatches, unreadable checkpoint.
        ValueError: missing pseudo labels, no training slice with a foreground scribble, or a
            ``decoder_last.pt`` from a different run.
    """
    config = config or FinetuneConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = decoder_state_path(out_dir, "best"), decoder_state_path(out_dir, "last")
    loss_fn = SamFinetuneLoss(
        class_map.ignore_index, config.ce_weight, config.dice_weight, config.iou_weight
    )
    prompter = _prompter(class_map, config, input_size_for_prompts(backend))
    priority = default_merge_priority(class_map)

    # training slices: prompts once (deterministic), pseudo labels checked up front
    train_cases, val_cases = list(train_cases), list(val_cases)
    weak_prompter = kinds = None
    if weak is not None:
        from scribmed.sam.weak_prompting import (
            WeakPrompter,
            case_supervision,
            case_target,
        )

        weak_prompter = WeakPrompter(class_map, input_size_for_prompts(backend), prompter, weak)
        kinds = [case_supervision(c) for c in train_cases]
        scribbles = [case_target(c, class_map, k) for c, k in zip(train_cases, kinds)]
    else:
        scribbles = [case_scribble(c) for c in train_cases]
    pls: list[Optional[np.ndarray]] = []
    for case, scribble in zip(train_cases, scribbles):
        pl = pseudo_labels.get(case.case_id)
        if pl is None and loss_fn.uses_pseudo_label:
            raise ValueError(f"no pseudo label for training case {case.case_id} (dice/iou weight > 0 needs one)")
        if pl is not None:
            pl = np.asarray(pl)
            pl = pl[None] if pl.ndim == 2 else pl
            if pl.shape != scribble.shape:
                raise ValueError(f"pseudo label of {case.case_id} has shape {pl.shape}, its scribble {scribble.shape}")
        pls.append(pl if loss_fn.uses_pseudo_label else None)
    if weak_prompter is None:
        items = [sp for i, s in enumerate(scribbles) for sp in _case_prompts(i, s, prompter)]
        val_prompts = [_case_prompts(0, validation_scribble(c, class_map), prompter) for c in val_cases]
    else:
        items = [sp for i, (c, k, s) in enumerate(zip(train_cases, kinds, scribbles))
                 for sp in _weak_case_prompts(i, c, k, s, weak_prompter)]
        val_prompts = [_validation_prompts(c, class_map, prompter, weak_prompter) for c in val_cases]
    if config.epochs > 0 and not items:
        raise ValueError("no training slice has a foreground scribble: nothing to fine-tune on")
    identity = {
        "config": config.training_identity(),
        "train": [c.case_id for c in train_cases],
        "val": [c.case_id for c in val_cases],
        "backend": getattr(backend, "cache_key", getattr(backend, "name", "?")),
    }
    identity["weak_prompts"] = None if weak is None else weak.to_dict()  # None: scribbles only
    identity["supervision"] = kinds

    # freeze everything but the decoder (restored on exit)
    flags = {n: p.requires_grad for n, p in backend.named_parameters()}
    backend.image_encoder.requires_grad_(False)
    backend.prompt_encoder.requires_grad_(False)
    backend.mask_decoder.requires_grad_(True)
    backend.image_encoder.eval()
    backend.prompt_encoder.eval()
    optimizer = torch.optim.AdamW(
        backend.mask_decoder.parameters(), lr=float(config.lr), weight_decay=float(config.weight_decay)
    )
    policy = getattr(backend, "amp_policy", None)  # mixed precision as the backend is set
    scaler = policy.grad_scaler() if policy is not None else None  # float16 only

    history: list[dict[str, Any]] = []
    best_epoch: Optional[int] = None
    best_dice: Optional[float] = None
    completed = -1  # last finished epoch (0 = starting decoder validated)
    if resume and last_path.is_file():
        ckpt = _read_checkpoint(last_path)
        if ckpt.get("identity") != identity:
            raise ValueError(
                f"{last_path}: written by a run with other cases, backend or settings; "
                "use another out_dir or resume=False to start over"
            )
        load_decoder(backend, last_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        history = list(ckpt.get("history", []))
        completed = int(ckpt["epoch"])
        best_epoch = ckpt.get("best_epoch")
        best_dice = ckpt.get("best_val_dice")
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"]["torch"].to(torch.uint8))

    def checkpoint_last(epoch: int) -> None:
        _atomic_save(
            {
                "backend": getattr(backend, "name", None),
                "model": _decoder_weights(backend),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "epoch": epoch,
                "config": config.to_dict(),
                "identity": identity,
                "history": history,
                "best_epoch": best_epoch,
                "best_val_dice": best_dice,
                "rng": {"torch": torch.get_rng_state()},
            },
            last_path,
        )

    def select(epoch: int, entry: dict[str, Any]) -> None:
        nonlocal best_epoch, best_dice
        score = entry.get("val_dice", float("nan"))
        if not val_cases or _better(score, best_dice):  # without validation: the latest wins
            best_epoch, best_dice = epoch, score
            save_decoder(backend, best_path, epoch=epoch, val_dice=score, config=config.to_dict())
        entry["new_best"] = best_epoch == epoch

    try:
        if completed < 0:
            if config.validate_initial and val_cases:
                start = time.perf_counter()
                entry: dict[str, Any] = {"epoch": 0, "train_loss": None, "train_slices": 0, "steps": 0}
                entry.update(_validate(backend, cache, val_cases, val_prompts, pseudo_labels, class_map, priority))
                entry["seconds"] = time.perf_counter() - start
                select(0, entry)
                history.append(entry)
            elif config.epochs == 0:
                select(0, {"epoch": 0, "val_dice": float("nan")})
            completed = 0
            checkpoint_last(0)
        for epoch in range(completed + 1, int(config.epochs) + 1):
            start = time.perf_counter()
            entry = {"epoch": epoch}
            entry.update(
                _train_epoch(backend, cache, train_cases, scribbles, pls, items, loss_fn, optimizer, config, epoch,
                             scaler=scaler)
            )
            if val_cases:
                entry.update(_validate(backend, cache, val_cases, val_prompts, pseudo_labels, class_map, priority))
            else:
                entry.update({"val_dice": float("nan"), "val_reference": "none"})
            entry["seconds"] = time.perf_counter() - start
            select(epoch, entry)
            history.append(entry)
            checkpoint_last(epoch)
        load_decoder(backend, best_path)
    finally:
        for name, p in backend.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        backend.eval()
    return FinetuneResult(
        best_path=best_path,
        last_path=last_path,
        best_val_dice=float("nan") if best_dice is None else float(best_dice),
        history=history,
        selected_epoch=int(best_epoch or 0),
    )
