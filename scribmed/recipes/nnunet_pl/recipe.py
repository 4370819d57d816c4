"""nnU-Net + partial loss: nnU-Net v2 trained on scribbles through its ignore label, one scribmed fold at a time.

The strongest scribble baseline of the ScribbleBench study: plain nnU-Net, whose loss skips the
voxels marked with the dataset's ignore label. Per fold, inside the fold's ``train/`` folder:

1. the fold's training and validation cases become an nnU-Net raw dataset (scribbles with the
   ignore label; :mod:`~scribmed.recipes.nnunet_pl.raw_dataset`), and nnU-Net's
   ``splits_final.json`` is scribmed's fold, so nnU-Net's validation (its EMA pseudo Dice and
   ``checkpoint_best``) only ever sees the fold's validation cases;
2. nnU-Net fingerprints, plans and preprocesses them, and its ``nnUNetTrainer`` trains fold 0
   (resuming from its own ``checkpoint_latest.pth`` when the fold was killed);
3. the chosen checkpoint is kept as a scribmed checkpoint (``model.pt``: weights, plans and
   ``dataset.json``), and nnU-Net's predictor predicts the test cases, which scribmed's evaluator
   scores like every other recipe's.

nnU-Net v2 is an optional dependency (``pip install 'scribmed[nnunet]'``).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.recipes.base import FoldModel, Recipe, checkpoint_model, read_recipe_checkpoint
from scribmed.recipes.nnunet_pl.config import CHECKPOINTS, CONFIGURATIONS, NNUNetPLConfig
from scribmed.recipes.nnunet_pl.raw_dataset import NNUNetFolders, write_raw_dataset, write_split

__all__ = ["NNUNetPLRecipe"]


class NNUNetPLRecipe(Recipe):
    """The ``nnunet_pl`` recipe: nnU-Net v2 with its ignore label on the fold's scribbles.

    Fold folder (``out_dir`` = ``fold_k/train``)::

        nnunet/raw|preprocessed|results/   nnU-Net's own folders (its plans, logs, checkpoints)
        nnunet.log                         nnU-Net's printed log
        model.pt                           the checkpoint that predicts the test cases
    """

    name = "nnunet_pl"
    title = "nnU-Net + partial loss (ignore label)"
    config_cls = NNUNetPLConfig
    volatile: ClassVar[tuple[str, ...]] = NNUNetPLConfig.VOLATILE
    config: NNUNetPLConfig

    def __init__(self, config: Optional[NNUNetPLConfig] = None) -> None:
        super().__init__(config)
        self._predictor: Optional[tuple[Path, bool, Any]] = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> list[str]:
        dests = super().add_arguments(parser)
        d = NNUNetPLConfig()
        g = parser.add_argument_group("nnunet_pl recipe (nnU-Net v2 with its ignore label; defaults: nnU-Net's)")
        g.add_argument("--configuration", choices=CONFIGURATIONS,
                       help=f"nnU-Net configuration (default: {d.configuration}; 3d_fullres for 3D volumes)")
        g.add_argument("--epochs", type=int, help=f"nnU-Net epochs (default: {d.epochs})")
        g.add_argument("--iterations-per-epoch", dest="iterations_per_epoch", type=int,
                       help=f"training iterations per nnU-Net epoch (default: {d.iterations_per_epoch})")
        g.add_argument("--val-iterations-per-epoch", dest="val_iterations_per_epoch", type=int,
                       help=f"validation batches per epoch, for the EMA pseudo Dice (default: {d.val_iterations_per_epoch})")
        g.add_argument("--nnunet-checkpoint", dest="checkpoint", choices=CHECKPOINTS,
                       help=f"nnU-Net checkpoint that predicts the test cases: final, or best by EMA pseudo Dice "
                       f"on the fold's validation scribbles (default: {d.checkpoint})")
        g.add_argument("--nnunet-planner", dest="planner",
                       help=f"nnU-Net experiment planner, e.g. nnUNetPlannerResEncM (default: {d.planner})")
        g.add_argument("--num-workers", dest="num_workers", type=int,
                       help="nnU-Net data-augmentation processes (default: -1, one fewer than the cores; 0: none)")
        return [*dests, "configuration", "epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                "checkpoint", "planner", "num_workers"]

    def check_device(self) -> None:
        """Refuse a missing nnU-Net install or an unusable ``--device`` before any case is loaded."""
        from scribmed.recipes.nnunet_pl.engine import require_nnunet
        from scribmed.runtime.device import resolve_device

        require_nnunet()
        resolve_device(self.config.device)

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        from scribmed.recipes.nnunet_pl import engine
        from scribmed.runtime.checkpoint import save_checkpoint
        from scribmed.runtime.records import CHECKPOINT, stamp

        self.check_device()
        out_dir = Path(out_dir)
        folders = NNUNetFolders(out_dir / "nnunet")
        write_raw_dataset([*train, *val], class_map, folders.raw_dataset)
        write_split(folders.preprocessed_dataset / "splits_final.json", [c.case_id for c in train],
                    [c.case_id for c in val])
        config = self.config if val else _final_only(self.config)
        with self._log(out_dir, progress) as log:
            plans = engine.plan_and_preprocess(folders, config, log)
            trained = engine.train_fold(folders, config, plans, log)
        record = engine.trained_model_record(trained, config, plans)
        payload = stamp(CHECKPOINT, {
            "recipe": self.name,
            **record,
            "config": self.config.to_dict(),
            "class_map": {"names": class_map.to_json(), "ignore_index": class_map.ignore_index},
        })
        checkpoint = out_dir / "model.pt"
        sha = save_checkpoint(checkpoint, payload)
        info = record["nnunet"]
        return FoldModel(checkpoint, "best" if config.checkpoint == "best" else "last", sha, {
            "num_classes": class_map.num_classes,
            "nnunet_checkpoint": info["checkpoint"],
            "epochs": info["epochs_trained"],
            "iterations": info["epochs_trained"] * config.iterations_per_epoch,
            "best_ema_pseudo_dice": info["best_ema_pseudo_dice"],
            "plans": plans["plans_name"],
            "configuration": config.configuration,
        })

    @staticmethod
    @contextlib.contextmanager
    def _log(out_dir: Path, progress: bool) -> Any:
        """nnU-Net's prints: to the console with ``progress``, always to ``out_dir/nnunet.log``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "nnunet.log", "a", encoding="utf-8", buffering=1) as fh:
            yield _Tee(fh) if progress else fh

    def _nnunet(self, model: FoldModel, mirror: bool) -> Any:
        """nnU-Net's predictor for ``model`` (built once, kept until :meth:`release`)."""
        from scribmed.recipes.nnunet_pl.engine import predictor_from_record
        from scribmed.runtime.checkpoint import load_checkpoint

        key = (Path(model.checkpoint), bool(mirror))
        if self._predictor is None or self._predictor[:2] != key:
            record = load_checkpoint(model.checkpoint)
            self._predictor = (*key, predictor_from_record(record, self.config, mirror))
        return self._predictor[2]

    def predict_case(self, model: FoldModel, case: Case) -> np.ndarray:
        from scribmed.recipes.nnunet_pl.engine import predict_array

        labels = predict_array(self._nnunet(model, self.config.mirror), case.image, case.spacing)
        return labels.astype(np.uint8)

    def predict_probabilities(self, model: FoldModel, case: Case, mirror: bool = False) -> Any:
        """nnU-Net's class probabilities ``(slices, classes, H, W)`` on the case's own grid (mirrored
        when ``mirror`` or the config's ``mirror``, nnU-Net's default, asks for it)."""
        import torch

        from scribmed.recipes.nnunet_pl.engine import predict_array

        _, probs = predict_array(self._nnunet(model, mirror or self.config.mirror), case.image, case.spacing,
                                 probabilities=True)
        return torch.from_numpy(probs)

    def release(self, model: FoldModel) -> None:
        self._predictor = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> tuple["NNUNetPLRecipe", FoldModel, dict[str, Any]]:
        checkpoint = Path(checkpoint)
        ckpt = read_recipe_checkpoint(checkpoint, cls.name)
        if "nnunet" not in ckpt or "network" not in ckpt:
            raise DataError(checkpoint, "nnunet_pl checkpoint holds no nnU-Net model")
        recipe = cls(NNUNetPLConfig.from_dict({**(ckpt.get("config") or {}), "progress": False}))
        model, class_map = checkpoint_model(checkpoint, ckpt)
        return recipe, model, class_map


def _final_only(config: NNUNetPLConfig) -> NNUNetPLConfig:
    """A fold without validation cases validates on its training cases: predict with the final checkpoint."""
    import dataclasses

    return dataclasses.replace(config, checkpoint="final")


class _Tee:
    """A text stream writing to a log file and to the console."""

    def __init__(self, fh: Any) -> None:
        import sys

        self._streams = (fh, sys.stderr)

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()
