"""Mixed supervision: SAM pseudo labels from each case's own weak label, then the dual-branch segmentor.

Per fold:

1. **SAM stage** (SAM-SP's rounds, :func:`scribmed.sam.rounds.run_pseudo_label_rounds` with
   :class:`~scribmed.sam.weak_prompting.WeakPromptConfig`): every training case is prompted from
   its own supervision (boxes, points, full masks, scribbles; unlabeled cases are not), zero-shot
   and then after each round of decoder fine-tuning on the mixed labels, the decoder selected by
   Dice on the fold's validation patients. With a scribble-only manifest this is exactly SAM-SP's
   pseudo-label path. When every training case is fully labelled, SAM is skipped (the labels are
   their own pseudo labels).
2. **Segmentor**: DMPLS's dual-branch U-Net and schedule trained with SeSAM's objective
   (:mod:`scribmed.recipes.mixsup.trainer`): each sample's own weak loss, the SAM pseudo label and
   an EMA teacher, precedence weak > SAM > teacher; selected by validation Dice.

Which supervision a case has comes from the dataset (a generic layout's ``supervision.json``)
or from ``scribmed cv --supervision FILE`` / ``--supervision-mix MIX``; cases stating none train
from their scribble when they have one, else as unlabeled.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.data.weak_labels import SUPERVISION_TYPES
from scribmed.recipes.mixsup.trainer import MixSupTrainConfig, train_mixsup
from scribmed.networks.unet_dual import DualBranchUNet
from scribmed.recipes.base import FoldModel
from scribmed.recipes.samsp.recipe import SAMSPRecipe
from scribmed.sam.stage_config import SamStageConfig
from scribmed.sam.weak_prompting import WeakPromptConfig, case_supervision, case_target

__all__ = ["WEAK_OPTIONS", "MixSupRecipe"]

#: CLI option name -> :class:`WeakPromptConfig` field
WEAK_OPTIONS = {
    "weak_box_margin": "box_margin",
    "weak_full_points": "full_points",
    "weak_point_negatives": "point_negatives",
    "weak_point_multimask": "point_multimask",
    "weak_selection": "selection",
    "weak_min_coverage": "min_coverage",
    "weak_min_compatibility": "min_compatibility",
}


class MixSupRecipe(SAMSPRecipe):
    """Mixed supervision (SAMIX losses, SeSAM prompting/selection and EMA teacher) on medical volumes.

    Fold folder (``out_dir`` = ``fold_k/train``)::

        sam/            pseudo-label rounds from each case's own weak label (as SAM-SP's)
        segmentor/      the dual-branch U-Net run (last.pt, best.pt, history.json, training_curve.png)

    The test cases are predicted by the segmentor alone (``best.pt`` by validation Dice).
    """

    name = "mixsup"
    title = "Mixed supervision (SAM from weak labels + SeSAM objective)"
    network_cls = DualBranchUNet
    config_cls = MixSupTrainConfig
    supervision_types = SUPERVISION_TYPES

    def __init__(
        self,
        config: MixSupTrainConfig | None = None,
        sam: SamStageConfig | None = None,
        weak: WeakPromptConfig | None = None,
    ) -> None:
        super().__init__(config, sam)  # type: ignore[arg-type]
        self.weak = weak or WeakPromptConfig()

    @classmethod
    def option_names(cls) -> set[str]:
        return super().option_names() | set(WEAK_OPTIONS)

    @classmethod
    def from_options(cls, **options: Any) -> "MixSupRecipe":
        """Segmentor options (:class:`MixSupTrainConfig`), the SAM stage's (:data:`SAM_OPTIONS`) and
        the weak prompts' (:data:`WEAK_OPTIONS`)."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - cls.option_names())
        if unknown:
            raise ValueError(f"recipe {cls.name!r} does not take {', '.join(unknown)} "
                             f"(its options: {', '.join(sorted(cls.option_names()))})")
        weak = {WEAK_OPTIONS[k]: given.pop(k) for k in list(given) if k in WEAK_OPTIONS}
        base = super().from_options(**given)
        return cls(base.config, base.sam, WeakPromptConfig.from_dict({**WeakPromptConfig().to_dict(), **weak}))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> list[str]:
        dests = super().add_arguments(parser)
        g = parser.add_argument_group("mixsup recipe (prompts from boxes, points and full masks)")
        g.add_argument("--weak-box-margin", dest="weak_box_margin", type=int,
                       help="pixels added around box prompts (default 0: boxes as drawn)")
        g.add_argument("--weak-selection", dest="weak_selection", choices=("sesam", "score", "random"),
                       help="which of SAM's three masks a point prompt keeps (default sesam: coverage >= 0.3 "
                       "and compatibility >= 0.7, most compatible)")
        g.add_argument("--weak-min-coverage", dest="weak_min_coverage", type=float, help="SeSAM coverage threshold (0.3)")
        g.add_argument("--weak-min-compatibility", dest="weak_min_compatibility", type=float,
                       help="SeSAM compatibility threshold (0.7)")
        return [*dests, "weak_box_margin", "weak_selection", "weak_min_coverage", "weak_min_compatibility"]

    def config_dict(self) -> dict[str, Any]:
        d = super().config_dict()
        return {**d, "weak_prompts": self.weak.to_dict()}

    def plan_sam_stage(self, train: Sequence[Case]) -> tuple[dict[str, str], list[Case], bool]:
        """``(supervision by case id, the labelled cases, whether SAM is skipped)`` of a fold's training cases.

        SAM is skipped when every labelled case is fully labelled (``full_from_label``).

        Raises:
            DataError: every training case is unlabeled; a case lacks what its type needs.
        """
        supervision = {c.case_id: case_supervision(c) for c in train}
        labelled = [c for c in train if supervision[c.case_id] != "none"]
        if not labelled:
            raise DataError(train[0].source if train else None, "every training case is unlabeled (supervision none)")
        skips = self.weak.full_from_label and all(supervision[c.case_id] == "full" for c in labelled)
        return supervision, labelled, bool(skips)

    def sam_stage(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """The fold's SAM pseudo labels from each training case's own supervision (run or resumed in ``out_dir/sam``).

        Returns:
            ``(pseudo labels by case id (every case but the unlabeled ones), last round's quality
            {"round", "dice", "sam_stage"}, supervision by case id)``. When every labelled training
            case is fully labelled the labels are the pseudo labels and SAM is not run.

        Raises:
            DataError: every training case is unlabeled; a case lacks what its type needs.
        """
        supervision, labelled, skips_sam = self.plan_sam_stage(train)
        if skips_sam:
            pseudo = {c.case_id: case_target(c, class_map, "full") for c in labelled}
            return pseudo, {"round": None, "dice": None,
                            "sam_stage": "skipped: every labelled training case is fully labelled"}, supervision
        pseudo, quality = self.pseudo_labels(train, val, class_map, Path(out_dir), progress, weak_prompts=self.weak)
        return pseudo, {**quality, "sam_stage": "rounds"}, supervision

    def prepare_fold(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> None:
        """The SAM stage alone (``scribmed cv --stage prepare``); :meth:`train` finds it finished."""
        self.check_supervision(train)
        self.sam_stage(train, val, class_map, Path(out_dir), progress)

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        self.check_supervision(train)
        pseudo, quality, supervision = self.sam_stage(train, val, class_map, Path(out_dir), progress)
        counts = {t: list(supervision.values()).count(t) for t in SUPERVISION_TYPES}
        cfg = MixSupTrainConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_mixsup(train, val, class_map, Path(out_dir) / "segmentor", supervision, pseudo, cfg,
                              resume=True)
        return self.fold_model(result, class_map, supervision=counts, sam_stage=quality["sam_stage"],
                               pseudo_label_round=quality["round"], pseudo_label_dice=quality["dice"])
