"""One round of SAM mask-decoder fine-tuning on scribbles + the previous round's pseudo labels.

SAM-SP step 3 (DESIGN.md §4.2): the image encoder and the prompt encoder stay frozen, only the
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

Defaults follow the CPU recipe measured on real ACDC with LiteMedSAM (§4.3): lr 5e-5 (10x the
paper's 5e-6: with a few epochs on a CPU the paper's rate barely moves the decoder), weight
decay 1e-4, 10 points per class with neighbour negatives, CE + 0.5 x soft Dice, 2 epochs.
The order of training slices is a permutation seeded by ``(seed, epoch)``, so a run (and a
resumed run) is deterministic on a CPU.
"""

from __future__ import annotations

import math
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.files import atomic_output
from scribmed.losses.sam_finetune import SamFinetuneLoss
from scribmed.networks.sam_backends import read_state_dict
from scribmed.sam.merge import default_merge_priority, merge_logits
from scribmed.sam.pseudo_labels import case_scribble, decode_prompts
from scribmed.transforms.prompts import ScribblePromptsd

__all__ = [
    "DECODER_BEST",
    "DECODER_LAST",
    "FinetuneConfig",
    "FinetuneResult",
    "decoder_state_path",
    "default_merge_priority",
    "finetune_decoder",
    "load_decoder",
    "predict_case",
    "save_decoder",
    "validation_dice",
]

PathLike = Union[str, Path]
DECODER_BEST = "decoder_best.pt"
DECODER_LAST = "decoder_last.pt"
FORMAT = "scribmed-sam-decoder-v1"
_NEGATIVES = ("neighbour", "background", "none")


# ------------------------------------------------------------------------------------------
# configuration and result
# ------------------------------------------------------------------------------------------


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning round.

    Attributes:
        epochs: passes over the training slices (each followed by validation).
        lr: AdamW learning rate. 5e-5 is 10x SAM-SP's 5e-6 (DESIGN §4.3): on short CPU budgets
            (a few epochs) the paper's rate barely moves the decoder; use 5e-6 for long GPU runs.
        weight_decay: AdamW weight decay (paper: 1e-4).
        n_points: positive (and negative) points per class.
        negatives: ``"neighbour"`` (SAM-SP), ``"background"`` or ``"none"``.
        ce_weight / dice_weight / iou_weight: loss weights (see ``SamFinetuneLoss``); the paper's
            combination is ``dice_weight=1, iou_weight=1``.
        seed: seeds the per-epoch slice order (a permutation drawn from ``(seed, epoch)``).
        batch_slices: slices per optimizer step (gradients averaged over them); all classes of
            a slice always go through one batched decoder call.
        validate_initial: validate the starting decoder as epoch 0 (it can then be selected).
        progress: tqdm bars.
    """

    epochs: int = 2
    lr: float = 5e-5
    weight_decay: float = 1e-4
    n_points: int = 10
    negatives: str = "neighbour"
    dice_weight: float = 0.5
    seed: int = 0
    batch_slices: int = 1
    progress: bool = True
    ce_weight: float = 1.0
    iou_weight: float = 0.0
    validate_initial: bool = True

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if int(self.n_points) < 1:
            raise ValueError(f"n_points must be >= 1, got {self.n_points}")
        if self.negatives not in _NEGATIVES:
            raise ValueError(f"negatives must be one of {_NEGATIVES}, got {self.negatives!r}")
        if int(self.batch_slices) < 1:
            raise ValueError(f"batch_slices must be >= 1, got {self.batch_slices}")
        for name in ("ce_weight", "dice_weight", "iou_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and ``weights_only``-safe)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FinetuneConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (typos must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FinetuneConfig keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def training_identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the interrupted one (not epochs/progress)."""
        d = self.to_dict()
        d.pop("epochs")
        d.pop("progress")
        return d


@dataclass
class FinetuneResult:
    """What :func:`finetune_decoder` returns.

    Attributes:
        best_path / last_path: ``decoder_best.pt`` / ``decoder_last.pt``.
        best_val_dice: validation mean foreground Dice of the selected decoder (NaN without
            validation cases).
        history: one dict per epoch (epoch 0 = the starting decoder when validated): train loss
            and its terms, slices and steps, validation Dice (mean and per class), its reference
            (``"label"`` / ``"pseudo_label"`` / ``"mixed"`` / ``"none"``), seconds.
        selected_epoch: the epoch of ``decoder_best.pt`` (0 = the starting decoder).
    """

    best_path: Path
    last_path: Path
    best_val_dice: float
    history: list[dict[str, Any]] = field(default_factory=list)
    selected_epoch: int = 0


def decoder_state_path(out_dir: PathLike, which: str = "best") -> Path:
    """``out_dir/decoder_best.pt`` (``which="best"``) or ``out_dir/decoder_last.pt`` (``"last"``)."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    return Path(out_dir) / (DECODER_BEST if which == "best" else DECODER_LAST)


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------


def _atomic_save(payload: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename (umask permissions)."""
    with atomic_output(path) as tmp:
        torch.save(dict(payload), tmp)


def _decoder_weights(backend: Any) -> dict[str, torch.Tensor]:
    return {f"mask_decoder.{k}": v.detach().cpu().clone() for k, v in backend.mask_decoder.state_dict().items()}


def save_decoder(backend: Any, path: PathLike, **meta: Any) -> Path:
    """Write the backend's mask decoder (+ ``meta``: plain values only) atomically to ``path``.

    The weights sit under ``"model"`` with ``mask_decoder.`` keys, so the file is also a valid
    ``build_sam_backend(name, checkpoint=path)`` checkpoint for LiteMedSAM (decoder on top of
    the packaged weights).
    """
    path = Path(path)
    payload = {"format": FORMAT, "backend": getattr(backend, "name", None), "model": _decoder_weights(backend)}
    payload.update(meta)
    _atomic_save(payload, path)
    return path


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(path, "decoder checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(path, f"cannot read decoder checkpoint with weights_only=True: {msg[:160]}") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"decoder checkpoint holds a {type(obj).__name__}, expected a dict")
    return obj


def load_decoder(backend: Any, path: PathLike) -> dict[str, Any]:
    """Load a fine-tuned mask decoder into ``backend`` (read with ``weights_only=True``).

    Accepts the files written here, any SAM-style checkpoint with ``mask_decoder.*`` keys, or a
    bare ``mask_decoder.state_dict()``.

    Returns:
        The file's metadata (non-weight top-level entries, e.g. ``epoch``, ``val_dice``,
        ``config``); ``{}`` for a bare state dict.

    Raises:
        DataError: missing/unreadable file, no decoder weights, or weights that do not fit.
    """
    path = Path(path)
    state = read_state_dict(path)
    prefix = "mask_decoder."
    decoder = {k.split(prefix, 1)[1]: v for k, v in state.items() if prefix in k}
    if not decoder:
        own = set(backend.mask_decoder.state_dict())
        bare = {k.removeprefix("module."): v for k, v in state.items()}
        if not own & set(bare):
            raise DataError(path, f"no mask decoder weights found ({len(state)} tensors)")
        decoder = bare
    own = backend.mask_decoder.state_dict()
    missing = len(set(own) - set(decoder))
    unexpected = len(set(decoder) - set(own))
    mis_shaped = sum(1 for k in set(own) & set(decoder) if tuple(own[k].shape) != tuple(decoder[k].shape))
    if missing or unexpected or mis_shaped:
        raise DataError(
            path,
            f"decoder weights do not fit backend {getattr(backend, 'name', '?')}: {missing} missing, "
            f"{unexpected} unexpected, {mis_shaped} shape-mismatched keys",
        )
    backend.mask_decoder.load_state_dict(decoder, strict=True)
    meta = _read_checkpoint(path)
    return {
        k: v for k, v in meta.items()
        if k not in ("model", "optimizer", "rng") and not isinstance(v, torch.Tensor)
    }


# ------------------------------------------------------------------------------------------
# prompts, prediction, validation
# ------------------------------------------------------------------------------------------


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
        prompts = _case_prompts(0, scribble, _prompter(class_map, cfg, backend.input_size))
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


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------


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
) -> dict[str, Any]:
    """One pass over the training slices in the ``(seed, epoch)`` permutation."""
    backend.mask_decoder.train()
    order = np.random.default_rng([int(config.seed), int(epoch)]).permutation(len(items))
    chunks = [order[i : i + int(config.batch_slices)] for i in range(0, len(order), int(config.batch_slices))]
    bar = None
    if config.progress and chunks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc=f"decoder epoch {epoch}", unit="slice", leave=False)
    total, terms, n = 0.0, {}, 0
    dev = backend.device
    for chunk in chunks:
        optimizer.zero_grad(set_to_none=True)
        for i in chunk:
            sp = items[int(i)]
            case = cases[sp.case_index]
            scribble = scribbles[sp.case_index][sp.z]
            hw = (int(scribble.shape[0]), int(scribble.shape[1]))
            logits = _decode_slice(backend, cache.slice(case, sp.z), sp, hw)
            pl = pls[sp.case_index]
            loss = loss_fn(
                logits,
                torch.from_numpy(scribble.astype(np.int64)).to(dev),
                sp.classes,
                None if pl is None else torch.from_numpy(pl[sp.z].astype(np.int64)).to(dev),
            )
            (loss / len(chunk)).backward()
            total += float(loss.detach())
            for name, value in loss_fn.last.items():
                terms[name] = terms.get(name, 0.0) + value
            n += 1
            if bar is not None:
                bar.update(1)
        optimizer.step()
    if bar is not None:
        bar.close()
    return {
        "train_loss": total / n if n else float("nan"),
        "train_terms": {k: v / n for k, v in terms.items()},
        "train_slices": n,
        "steps": len(chunks),
    }


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
        config: :class:`FinetuneConfig` (defaults: the §4.3 CPU recipe).
        out_dir: the round's folder (``decoder_best.pt``, ``decoder_last.pt``).
        resume: continue from ``out_dir/decoder_last.pt`` when it exists (it must come from the
            same cases, backend and settings; ``epochs`` may grow). ``False`` starts over.

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
    prompter = _prompter(class_map, config, backend.input_size)
    priority = default_merge_priority(class_map)

    # training slices: prompts once (deterministic), pseudo labels checked up front
    train_cases, val_cases = list(train_cases), list(val_cases)
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
    items = [sp for i, s in enumerate(scribbles) for sp in _case_prompts(i, s, prompter)]
    if config.epochs > 0 and not items:
        raise ValueError("no training slice has a foreground scribble: nothing to fine-tune on")
    val_prompts = [_case_prompts(0, validation_scribble(c, class_map), prompter) for c in val_cases]
    identity = {
        "config": config.training_identity(),
        "train": [c.case_id for c in train_cases],
        "val": [c.case_id for c in val_cases],
        "backend": getattr(backend, "cache_key", getattr(backend, "name", "?")),
    }

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
        history = list(ckpt.get("history", []))
        completed = int(ckpt["epoch"])
        best_epoch = ckpt.get("best_epoch")
        best_dice = ckpt.get("best_val_dice")
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"]["torch"].to(torch.uint8))

    def checkpoint_last(epoch: int) -> None:
        _atomic_save(
            {
                "format": FORMAT,
                "backend": getattr(backend, "name", None),
                "model": _decoder_weights(backend),
                "optimizer": optimizer.state_dict(),
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
                _train_epoch(backend, cache, train_cases, scribbles, pls, items, loss_fn, optimizer, config, epoch)
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
