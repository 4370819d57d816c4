"""DMPLS: dual-branch U-Net with dynamically mixed pseudo labels (Luo et al., MICCAI 2022).

Composes :class:`~scribmed.networks.unet_dual.DualBranchUNet`,
:class:`~scribmed.losses.dmpls.DMPLSLoss` and the shared segmentor loop through
:func:`scribmed.recipes.dmpls.trainer.train_dmpls`; defaults are the paper's (:class:`DMPLSConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from scribmed.data.case import Case, ClassMap
from scribmed.networks.unet_dual import DualBranchUNet
from scribmed.recipes.base import FoldModel
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.recipes.dmpls.trainer import train_dmpls
from scribmed.recipes.segmentor import SegmentorRecipe

__all__ = ["DMPLSRecipe"]


class DMPLSRecipe(SegmentorRecipe):
    """The test cases are predicted with ``best.pt`` (highest mean foreground Dice on the fold's
    validation patients), or ``last.pt`` when the fold has no validation patients.
    """

    name = "dmpls"
    title = "DMPLS"
    network_cls = DualBranchUNet
    config_cls = DMPLSConfig
    config: DMPLSConfig

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        cfg = DMPLSConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_dmpls(train, val, class_map, out_dir, cfg, resume=True)
        return self.fold_model(result, class_map)
