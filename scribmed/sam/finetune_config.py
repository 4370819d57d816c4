"""Settings and result of one SAM mask-decoder fine-tuning round.

:class:`FinetuneConfig` (validated on construction, round-trips through plain dicts, and
names the settings a resumed run must share) and :class:`FinetuneResult`, what
:func:`scribmed.sam.decoder_finetune.finetune_decoder` returns. Kept apart from the training
loop so the CLI and recipes can build a config without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

_NEGATIVES = ("neighbour", "background", "none")
LOSS_RESOLUTIONS = ("low", "full")


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning round.

    Attributes:
        epochs: passes over the training slices (each followed by validation).
        lr: AdamW learning rate. 5e-5 is 10x SAM-SP's 5e-6: on short CPU budgets
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
        loss_resolution: ``"low"`` (default): the loss is computed on the decoder's own 256x256
            low-resolution logits (cropped to the image, padding excluded) against the scribble
            and pseudo label resized to that frame (nearest; no scribble pixel is dropped);
            ``"full"``: the logits are upsampled to the slice and the loss computed there (slower
            on large slices; what runs before this option used).
        progress: progress bars.
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
    loss_resolution: str = "low"

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
        if self.loss_resolution not in LOSS_RESOLUTIONS:
            raise ValueError(f"loss_resolution must be one of {LOSS_RESOLUTIONS}, got {self.loss_resolution!r}")
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


__all__ = [
    "LOSS_RESOLUTIONS",
    "FinetuneConfig",
    "FinetuneResult",
]
