"""SAM-SP segmentor training (step 4, the aligned segmentor) on the shared DMPLS engine.

:class:`SAMSPTrainer` is a :class:`~scribmed.training.trainer.SegmentorTrainer` whose iteration runs
the :class:`~scribmed.networks.samsp_unet.SAMSPUNet` (main, auxiliary and fusion heads plus the
bottleneck) through :class:`~scribmed.losses.samsp.SAMSPLoss`: partial CE against the scribble
and soft Dice against the SAM pseudo label on every head, plus the semantic-alignment prototype
loss. Everything else — poly SGD, iteration budget, seeded sampling and augmentation (the pseudo
label moves with the image), validation on held-out patients, checkpoints, history and exact
resume — is the DMPLS engine's (:func:`~scribmed.training.assembly.assemble_trainer`,
:class:`~scribmed.training.run_record.RunRecorder`, :func:`~scribmed.training.run_record.run_or_resume`).

Logged loss terms per epoch: ``pce`` and ``dice`` (each summed over the three heads, as the
objective sums them) and ``align`` (unweighted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from scribmed.data.case import Case, ClassMap
from scribmed.training.config import TrainConfig, TrainResult
from scribmed.training.slice_cache import SliceCache
from scribmed.training.trainer import SegmentorTrainer
from scribmed.training.assembly import assemble_trainer, run_training
from scribmed.training.validation import VolumeDiceEvaluator
from scribmed.losses.samsp import HEADS, SAMSPLoss
from scribmed.networks.samsp_unet import SAMSPUNet

__all__ = ["SAMSPTrainConfig", "SAMSPTrainer", "build_samsp_trainer", "train_samsp"]


@dataclass
class SAMSPTrainConfig(TrainConfig):
    """Hyper-parameters of the SAM-SP segmentor: the DMPLS schedule plus the alignment term.

    Attributes:
        align_weight: weight of the semantic-alignment loss (1 in SAM-SP).
        temperature: cosine-similarity temperature of the alignment loss.
    """

    align_weight: float = 1.0
    temperature: float = 1.0
    #: SAM-SP keeps the transposed-conv up-steps its measured numbers were obtained with
    upsample: str = "transpose"
    #: and the NCHW memory format (channels-last was measured for DMPLS only)
    channels_last: bool = False

    RESULT_FIELDS = (
        "iterations", "batch_size", "size", "lr", "momentum", "weight_decay", "poly_power",
        "lr_horizon", "image_interp", "upsample", "channels_last",
        "seed", "epoch_length", "in_channels", "augment", "align_weight", "temperature",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.align_weight < 0:
            raise ValueError(f"SAMSPTrainConfig.align_weight must be >= 0, got {self.align_weight}")
        if not self.temperature > 0:
            raise ValueError(f"SAMSPTrainConfig.temperature must be > 0, got {self.temperature}")


class SAMSPTrainer(SegmentorTrainer):
    """The DMPLS engine running the SAM-SP objective; batches carry ``"pseudo"`` (the SAM pseudo label)."""

    recipe = "samsp"
    loss_terms = ("pce", "dice", "align")

    def compute_loss(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``SAMSPLoss(outputs, scribble, pseudo)``; the prediction is the fusion head's logits."""
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 4:
            raise TypeError("the SAM-SP network must return (main, aux, fused, bottleneck) in training mode")
        if "pseudo" not in batch:
            raise KeyError("SAM-SP batches need a 'pseudo' key (build the trainer with pseudo labels)")
        outputs = [o.float() for o in outputs]
        loss, parts = self.loss_function(outputs, batch["scribble"], batch["pseudo"])
        logged = {
            "pce": sum(parts[f"pce_{h}"] for h in HEADS),
            "dice": sum(parts[f"dice_{h}"] for h in HEADS),
            "align": parts["align"],
        }
        return loss, outputs[2], logged


def build_samsp_trainer(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: SAMSPTrainConfig,
    pseudo: Mapping[str, np.ndarray],
    cache: Optional[SliceCache] = None,
) -> tuple[SAMSPTrainer, Optional[VolumeDiceEvaluator]]:
    """The SAM-SP trainer (:class:`SAMSPUNet` + :class:`SAMSPLoss`), see :func:`assemble_trainer`.

    Args:
        pseudo: SAM pseudo label of every training case by case id, ``(S, H, W)`` uint8 on the
            case's grid (e.g. :func:`scribmed.sam.pseudo_labels.load_pseudo_labels` of the last
            round).
        cache: a pre-built slice cache that holds ``pseudo`` (built here when ``None``).
    """
    loss = SAMSPLoss(
        class_map.num_classes,
        class_map.ignore_index,
        align_weight=config.align_weight,
        temperature=config.temperature,
    )
    trainer, evaluator = assemble_trainer(
        train_cases,
        val_cases,
        class_map,
        out_dir,
        config,
        network_cls=SAMSPUNet,
        loss=loss,
        trainer_cls=SAMSPTrainer,
        cache=cache,
        pseudo=pseudo,
    )
    return trainer, evaluator  # type: ignore[return-value]


def train_samsp(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    pseudo: Mapping[str, np.ndarray],
    config: Optional[SAMSPTrainConfig] = None,
    resume: bool = False,
) -> TrainResult:
    """Train the SAM-SP segmentor on scribbles + SAM pseudo labels, validating on ``val_cases``.

    Same run folder, checkpoints and resume semantics as :func:`scribmed.recipes.dmpls.trainer.train_dmpls`
    (``last.pt``, ``best.pt``, ``history.json``, ``checkpoints.json``, ``training_curve.png``);
    checkpoints are tagged ``recipe: samsp``.

    Raises:
        DataError: ``out_dir`` already holds a run and ``resume`` is False; incompatible
            checkpoint; a training case without a pseudo label or with one of the wrong shape.
    """
    config = config or SAMSPTrainConfig()
    return run_training(
        lambda: build_samsp_trainer(train_cases, val_cases, class_map, out_dir, config, pseudo),
        out_dir,
        deterministic=config.deterministic,
        has_validation=bool(val_cases),
        resume=resume,
    )
