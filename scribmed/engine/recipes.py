"""Recipes the cross-validation runner can train: a name, a config, ``train`` and ``predict``.

Each recipe composes the shared engine parts (trainer, checkpoints, slice-wise inference); it
adds no training logic of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from scribmed.data.case import Case, ClassMap
from scribmed.engine.checkpoint import file_sha256, load_network_weights
from scribmed.engine.cross_validation import FoldModel, Recipe
from scribmed.engine.inference import predict_cases
from scribmed.engine.trainer import TrainConfig, train_dmpls
from scribmed.networks.unet_dual import DualBranchUNet

# CLI flag names -> TrainConfig fields
_FLAG_FIELDS = {"val_interval": "epoch_length"}


class DMPLSRecipe(Recipe):
    """Dual-branch U-Net with dynamically mixed pseudo labels (Luo et al., MICCAI 2022), DESIGN §4.1.

    The test cases are predicted with ``best.pt`` (highest mean foreground Dice on the fold's
    validation patients), or ``last.pt`` when the fold has no validation patients.
    """

    name = "dmpls"

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()

    def config_dict(self) -> dict[str, Any]:
        d = self.config.to_dict()
        for volatile in ("num_workers", "device", "progress", "val_batch_size"):
            d.pop(volatile, None)  # do not change results, may differ between reruns
        return d

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        cfg = TrainConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_dmpls(train, val, class_map, out_dir, cfg, resume=True)
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
            },
        )

    def predict(self, model: FoldModel, cases: Sequence[Case], out_dir: Path, progress: bool) -> list[Path]:
        network = DualBranchUNet(in_channels=self.config.in_channels, num_classes=model.extra["num_classes"])
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
        )


RECIPES = {"dmpls": DMPLSRecipe}


def build_recipe(name: str, **overrides: Any) -> Recipe:
    """A recipe by name with ``TrainConfig`` overrides (CLI flag names accepted, e.g. ``val_interval``)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    fields = {_FLAG_FIELDS.get(k, k): v for k, v in overrides.items() if v is not None}
    return RECIPES[name](TrainConfig.from_dict({**TrainConfig().to_dict(), **fields}))
