"""The nnU-Net + partial loss recipe's configuration (defaults: nnU-Net v2's, as the paper ran it).

Gotkowski et al., "Embarrassingly Simple Scribble Supervision for 3D Medical Segmentation"
(arXiv 2403.12834), train nnU-Net v2 unchanged on scribbles whose unlabeled voxels carry nnU-Net's
*ignore label*: the Dice and cross-entropy terms skip them (a partial loss). Every default here is
nnU-Net's own: 1000 epochs of 250 iterations, 50 validation iterations per epoch, the default
planner, the final checkpoint, sliding-window inference with Gaussian weighting and mirroring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

__all__ = ["CHECKPOINTS", "CONFIGURATIONS", "NNUNetPLConfig"]

#: nnU-Net configurations this recipe trains (``3d_fullres`` only where the planner makes one)
CONFIGURATIONS = ("2d", "3d_fullres")
#: which of nnU-Net's checkpoints predicts the test cases
CHECKPOINTS = ("final", "best")


@dataclass
class NNUNetPLConfig:
    """Hyper-parameters of one nnU-Net fold (nnU-Net v2's defaults).

    Attributes:
        configuration: nnU-Net configuration: ``2d`` (slice-wise, every dataset) or ``3d_fullres``
            (3D patches; the planner makes it for 3D volumes only).
        epochs: nnU-Net epochs (nnU-Net: 1000).
        iterations_per_epoch: training iterations per epoch (nnU-Net: 250); the fold trains
            ``epochs * iterations_per_epoch`` iterations at nnU-Net's planned batch size.
        val_iterations_per_epoch: validation batches per epoch (nnU-Net: 50); they feed the EMA
            pseudo Dice that picks ``checkpoint_best``.
        checkpoint: ``final`` (nnU-Net's default for inference) or ``best`` (highest EMA pseudo
            Dice on the fold's validation cases, computed on their scribbles).
        planner: nnU-Net experiment planner class (``ExperimentPlanner``: the default U-Net;
            ``nnUNetPlannerResEncM``/``L``/``XL``: residual-encoder presets).
        mirror: mirror test-time augmentation, as nnU-Net predicts by default.
        tile_step_size: sliding-window step as a fraction of the patch (nnU-Net: 0.5).
        seed: seeds torch, numpy and Python before training (nnU-Net's augmentation workers draw
            their own randomness, so two runs with workers are not bit-identical).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``.
        num_workers: nnU-Net's data-augmentation processes (``nnUNet_n_proc_DA``); ``-1``: one
            fewer than this machine's cores; ``0``: augment in the training process.
        save_every: epochs between ``checkpoint_latest.pth`` writes, what a killed fold resumes
            from (nnU-Net: 50; 1 here, because a CPU epoch is long).
        max_cpu_hours: on a CPU, stop a fold whose training would take longer than this many
            hours, estimated from its first iterations (as every scribmed recipe; ``0``: no limit).
        progress: print nnU-Net's epoch log (else it goes to ``nnunet.log`` only).
    """

    configuration: str = "2d"
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    checkpoint: str = "final"
    planner: str = "ExperimentPlanner"
    mirror: bool = True
    tile_step_size: float = 0.5
    seed: int = 0
    device: str = "auto"
    num_workers: int = -1
    save_every: int = 1
    max_cpu_hours: float = 4.0
    progress: bool = True

    #: fields that do not change results (left out of ``run.json``)
    VOLATILE: ClassVar[tuple[str, ...]] = ("device", "num_workers", "save_every", "max_cpu_hours", "progress")

    def __post_init__(self) -> None:
        if self.configuration not in CONFIGURATIONS:
            raise ValueError(f"nnunet_pl configuration must be one of {CONFIGURATIONS}, got {self.configuration!r}")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"nnunet_pl checkpoint must be one of {CHECKPOINTS}, got {self.checkpoint!r}")
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"nnunet_pl {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < float(self.tile_step_size) <= 1:
            raise ValueError(f"nnunet_pl tile_step_size must be in (0, 1], got {self.tile_step_size}")
        if float(self.max_cpu_hours) < 0:
            raise ValueError(f"nnunet_pl max_cpu_hours must be >= 0 (0: no limit), got {self.max_cpu_hours}")
        if int(self.num_workers) < -1:
            raise ValueError(f"nnunet_pl num_workers must be >= -1, got {self.num_workers}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NNUNetPLConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (typos are not ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown NNUNetPLConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**dict(data))
