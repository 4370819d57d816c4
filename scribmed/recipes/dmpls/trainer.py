"""DMPLS training: the shared segmentor loop with the DMPLS objective (Luo et al., MICCAI 2022).

:class:`DMPLSTrainer` overrides one hook of :class:`~scribmed.training.trainer.SegmentorTrainer`,
:meth:`~DMPLSTrainer.compute_loss`: both heads of the
:class:`~scribmed.networks.unet_dual.DualBranchUNet` through
:class:`~scribmed.losses.dmpls.DMPLSLoss` (partial CE on the scribble, Dice against the
dynamically mixed pseudo label). :func:`build_dmpls_trainer` assembles it with the shared data
pipeline; :func:`train_dmpls` builds and runs (or resumes) it, the one call the recipe makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from scribmed.data.case import Case, ClassMap
from scribmed.losses.dmpls import DMPLSLoss
from scribmed.networks.unet_dual import DualBranchUNet
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.runtime.seeding import loss_generator
from scribmed.training.assembly import assemble_trainer, run_training
from scribmed.training.config import TrainResult
from scribmed.training.slice_cache import SliceCache
from scribmed.training.trainer import SegmentorTrainer
from scribmed.training.validation import VolumeDiceEvaluator

__all__ = ["DMPLSTrainer", "build_dmpls_trainer", "train_dmpls"]


class DMPLSTrainer(SegmentorTrainer):
    """The shared segmentor loop running the DMPLS objective; the network returns ``(main, aux)``."""

    recipe = "dmpls"
    loss_terms = ("pce", "dice")

    def compute_loss(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``DMPLSLoss(main, aux, scribble)``: ``outputs`` is ``(main, aux)``; the logged terms are
        :attr:`loss_terms` (detached scalars) plus the iteration's ``alpha``."""
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise TypeError("the DMPLS network must return (main_logits, aux_logits) in training mode")
        main, aux = outputs
        loss, parts = self.loss_function(main.float(), aux.float(), batch["scribble"])
        return loss, main, {"pce": parts["pce"], "dice": parts["dice"], "alpha": float(parts["alpha"])}


def build_dmpls_trainer(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: DMPLSConfig,
    cache: Optional[SliceCache] = None,
) -> tuple[DMPLSTrainer, Optional[VolumeDiceEvaluator]]:
    """The DMPLS trainer (:class:`DualBranchUNet` + :class:`DMPLSLoss`), see :func:`assemble_trainer`.

    Returns:
        ``(trainer, evaluator)``; ``trainer.recorder`` is the attached :class:`RunRecorder`.
    """
    loss = DMPLSLoss(
        class_map.num_classes,
        class_map.ignore_index,
        lam=config.lam,
        generator=loss_generator(config.seed),
    )
    return assemble_trainer(
        train_cases,
        val_cases,
        class_map,
        out_dir,
        config,
        network_cls=DualBranchUNet,
        loss=loss,
        trainer_cls=DMPLSTrainer,
        cache=cache,
    )


def train_dmpls(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: Optional[DMPLSConfig] = None,
    resume: bool = False,
) -> TrainResult:
    """Train DMPLS on ``train_cases``, validating on ``val_cases``; one call for the CV runner.

    Args:
        train_cases: training cases (image + scribble).
        val_cases: validation cases (image + label; held out from training, never the test
            fold). May be empty: then only ``last.pt`` is kept.
        class_map: classes and scribble ignore value.
        out_dir: run folder (``last.pt``, ``best.pt``, ``history.json``, ``checkpoints.json``,
            ``training_curve.png``).
        config: hyper-parameters (defaults: the paper's).
        resume: continue from ``out_dir/last.pt`` (started afresh when there is none). The
            resumed run ends with the weights an uninterrupted run would have.

    Returns:
        :class:`TrainResult`.

    Raises:
        DataError: ``out_dir`` already holds a run and ``resume`` is False; the checkpoint's
            configuration or class map differ from the given ones; unusable cases.
    """
    config = config or DMPLSConfig()
    return run_training(
        lambda: build_dmpls_trainer(train_cases, val_cases, class_map, out_dir, config),
        out_dir,
        deterministic=config.deterministic,
        has_validation=bool(val_cases),
        resume=resume,
    )
