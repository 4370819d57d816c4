"""Shared part of the recipes whose fold model is one 2D network checkpoint, predicted slice-wise.

DMPLS and SAM-SP both train a network with :mod:`scribmed.training`'s trainer, keep ``best.pt``
(by validation Dice) or ``last.pt`` and predict each test volume slice by slice at the network
size, resized back to the case's grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.training.config import TrainConfig, TrainResult
from scribmed.training.inference import predict_probabilities, predict_volume
from scribmed.runtime.files import file_sha256
from scribmed.recipes.base import (
    FoldModel,
    Recipe,
    checkpoint_model,
    read_recipe_checkpoint,
)

__all__ = ["SegmentorRecipe"]

# settings that do not change results (may differ between reruns of one CV run)
_VOLATILE = ("num_workers", "device", "progress", "val_batch_size", "max_cpu_hours")


class SegmentorRecipe(Recipe):
    """A recipe whose model is one network built by ``config.build_network(network_cls, num_classes)``.

    In eval mode the network returns the logits used for prediction. Subclasses set
    :attr:`network_cls` and :attr:`config_cls` and implement ``train``.
    """

    network_cls: ClassVar[type[torch.nn.Module]]
    config_cls: ClassVar[type] = TrainConfig
    option_aliases: ClassVar[dict[str, str]] = {"val_interval": "epoch_length"}
    volatile: ClassVar[tuple[str, ...]] = _VOLATILE
    distributed: ClassVar[bool] = True  # the shared trainer wraps DDP under torchrun
    config: TrainConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._network: Optional[tuple[Path, torch.nn.Module]] = None

    def fold_model(self, result: TrainResult, class_map: ClassMap, **extra: Any) -> FoldModel:
        """The fold's model: ``best.pt`` when there was validation, else ``last.pt``."""
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

    def network(self, model: FoldModel) -> torch.nn.Module:
        """The trained network of ``model`` (built and loaded once, kept until :meth:`release`)."""
        if self._network is None or self._network[0] != model.checkpoint:
            from scribmed.runtime.checkpoint import load_network_weights
            from scribmed.runtime.device import resolve_device

            net = self.config.build_network(self.network_cls, model.extra["num_classes"])
            load_network_weights(net, model.checkpoint)
            self._network = (model.checkpoint, net.to(resolve_device(self.config.device)).eval())
        return self._network[1]

    def _check_channels(self, case: Case) -> None:
        image = case.image
        channels = 1 if len(image.shape) == 3 else image.shape[1]
        if channels != self.config.in_channels:
            raise DataError(case.source, f"image has {channels} channel(s) but the model was trained on "
                            f"{self.config.in_channels}")

    def predict_case(self, model: FoldModel, case: Case) -> np.ndarray:
        self._check_channels(case)
        image = np.asarray(case.image)
        return predict_volume(
            self.network(model), image, size=self.config.size, batch_size=self.config.val_batch_size,
            device=self.config.device, amp=self.config.amp, image_mode=self.config.image_interp,
        )

    def predict_probabilities(self, model: FoldModel, case: Case, mirror: bool = False) -> torch.Tensor:
        self._check_channels(case)
        return predict_probabilities(
            self.network(model), np.asarray(case.image), size=self.config.size, batch_size=self.config.val_batch_size,
            device=self.config.device, amp=self.config.amp, image_mode=self.config.image_interp, mirror=mirror,
        )

    def release(self, model: FoldModel) -> None:
        self._network = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> tuple["SegmentorRecipe", FoldModel, dict[str, Any]]:
        checkpoint = Path(checkpoint)
        ckpt = read_recipe_checkpoint(checkpoint, cls.name)
        recipe = cls(cls.config_cls.from_dict({**(ckpt.get("config") or {}), "progress": False}))
        model, class_map = checkpoint_model(checkpoint, ckpt)
        return recipe, model, class_map
