"""SAM-SP: SAM pseudo labels refined by mask-decoder fine-tuning, then the aligned segmentor.

Per fold: SAM pseudo-label rounds on the fold's training patients (zero-shot, then decoder
fine-tuning selected on the fold's validation patients), then the SAM-SP segmentor on scribbles +
the last round's pseudo labels. The test patients are never prompted, fine-tuned on or selected on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from scribmed.data.case import Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.recipes.samsp.trainer import SAMSPTrainConfig, train_samsp
from scribmed.networks.samsp_unet import SAMSPUNet
from scribmed.recipes.base import FoldModel
from scribmed.recipes.segmentor import SegmentorRecipe
from scribmed.sam.stage_config import SamStageConfig
from scribmed.sam.stage_options import SAM_OPTIONS, add_sam_stage_arguments

__all__ = ["SAMSPRecipe", "require_scribbled"]

def require_scribbled(cases: Sequence[Case]) -> None:
    """SAM-SP prompts SAM with every training case's scribble and trains on it.

    Raises:
        DataError: naming the training cases without a scribble.
    """
    missing = [c.case_id for c in cases if not c.has_scribble]
    if missing:
        raise DataError(cases[0].source, f"SAM-SP trains on scribbled cases only; no scribble: {', '.join(missing[:5])}")


class SAMSPRecipe(SegmentorRecipe):
    """SAM-SP: SAM pseudo-label rounds on the fold's training patients, then the aligned segmentor.

    Fold folder (``out_dir`` = ``fold_k/train``)::

        sam/            pseudo-label rounds (round_0 = zero-shot, round_r = after fine-tuning r;
                        quality.json scores every round on the training patients' ground truth
                        when it exists)
        segmentor/      the SAM-SP U-Net run (last.pt, best.pt, history.json, training_curve.png)

    The segmentor trains on the scribbles and the last round's pseudo labels, is selected by
    Dice on the fold's validation patients, and predicts the test patients without SAM.
    """

    name = "samsp"
    title = "SAM-SP (LiteMedSAM rounds + aligned segmentor)"
    network_cls = SAMSPUNet
    config_cls = SAMSPTrainConfig
    prepare_stage = "sam"

    def __init__(self, config: SAMSPTrainConfig | None = None, sam: SamStageConfig | None = None) -> None:
        super().__init__(config)
        self.sam = sam or SamStageConfig()

    @classmethod
    def option_names(cls) -> set[str]:
        return super().option_names() | set(SAM_OPTIONS)

    def check_device(self) -> None:
        """The segmentor's device and precision, then the SAM stage's (``--sam-amp``)."""
        from scribmed.runtime.device import amp_policy, resolve_device

        super().check_device()
        amp_policy(resolve_device(self.sam.device), self.sam.amp)

    @classmethod
    def from_options(cls, **options: Any) -> "SAMSPRecipe":
        """Segmentor options (:class:`SAMSPTrainConfig` fields) plus the SAM stage's (:data:`SAM_OPTIONS`)."""
        given = {k: v for k, v in options.items() if v is not None}
        sam = {SAM_OPTIONS[k]: given.pop(k) for k in list(given) if k in SAM_OPTIONS}
        segmentor = super().from_options(**given)
        return cls(segmentor.config, SamStageConfig.from_dict({**SamStageConfig().to_dict(), **sam}))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> list[str]:
        return [*super().add_arguments(parser),
                *add_sam_stage_arguments(parser, SamStageConfig(), "SAM stage (samsp, mixsup: SAM pseudo-label "
                                         "rounds before the segmentor)", leave_unset=True)]

    def prepare_run(self, out: Path) -> None:
        """A CV run shares one embedding cache across folds (``OUT/sam_embeddings``) unless one was given."""
        if self.sam.cache_dir is None:
            self.sam.cache_dir = str(Path(out) / "sam_embeddings")

    def config_dict(self) -> dict[str, Any]:
        seg = super().config_dict()
        sam = self.sam.to_dict()
        for volatile in ("device", "cache_dir", "amp"):  # amp: keyed in the SAM stage's own record on CUDA
            sam.pop(volatile, None)
        return {"segmentor": seg, "sam": sam}

    def pseudo_labels(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool,
        weak_prompts: Any = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run (or resume) the fold's SAM rounds; return ``(pseudo labels by train case id, last round's quality)``.

        ``weak_prompts`` (a :class:`~scribmed.sam.weak_prompting.WeakPromptConfig`): prompt each case
        from its own supervision; cases of type ``none`` get no pseudo label.
        """
        from scribmed.sam.pseudo_labels import load_pseudo_labels
        from scribmed.sam.rounds import run_pseudo_label_rounds
        from scribmed.sam.stage_config import RoundsConfig

        # the fold's own cases only: test patients are never prompted or used for selection
        fold = Dataset("fold", out_dir, class_map, [*train, *val])
        sam_dir = Path(out_dir) / "sam"
        config = RoundsConfig.from_stage(self.sam, seed=self.config.seed, progress=progress, weak_prompts=weak_prompts)
        result = run_pseudo_label_rounds(
            fold,
            sam_dir,
            config,  # cache_dir None: sam_dir/embeddings
            train_patients=sorted({c.patient_id for c in train}),
            val_patients=sorted({c.patient_id for c in val}) or None,
            progress=progress,
        )
        labelled = train
        if weak_prompts is not None:
            from scribmed.sam.weak_prompting import case_supervision

            labelled = [c for c in train if case_supervision(c) != "none"]
        pseudo = load_pseudo_labels(result.round_dirs[-1], [c.case_id for c in labelled])
        last = result.quality["rounds"][-1] if result.quality.get("rounds") else {}
        return pseudo, {"round": last.get("round"), "dice": last.get("dice")}

    def prepare_fold(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> None:
        """The SAM rounds alone (``scribmed cv --stage prepare``); :meth:`train` finds them finished."""
        require_scribbled(train)
        self.pseudo_labels(train, val, class_map, Path(out_dir), progress)

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        require_scribbled(train)
        pseudo, quality = self.pseudo_labels(train, val, class_map, Path(out_dir), progress)
        cfg = SAMSPTrainConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_samsp(train, val, class_map, Path(out_dir) / "segmentor", pseudo, cfg, resume=True)
        return self.fold_model(result, class_map, pseudo_label_round=quality["round"],
                                pseudo_label_dice=quality["dice"])
