"""Mixed-supervision segmentor training on the shared DMPLS engine.

:class:`MixSupTrainer` is a :class:`~scribmed.training.trainer.SegmentorTrainer` whose iteration runs the
dual-branch U-Net (DMPLS's network) through the SeSAM objective
(:class:`~scribmed.training.ema_teacher.SeSAMObjective`): each sample's own weak loss
(:class:`~scribmed.losses.mixed_supervision.MixedSupervisionLoss`: full → Dice + CE, box → SAMIX
projection, point and scribble → partial CE), the SAM pseudo label and the EMA teacher's confident
pseudo label, with the precedence weak > SAM > teacher, on both heads (mean of the two). The
teacher follows the student after every optimizer step and is part of the checkpoint (the loss's
state), so a resumed run continues with the same teacher.

Slices come from a :class:`~scribmed.training.slice_cache.SliceCache` built by
:func:`mixsup_cache`, whose arrays every batch carries (moved with the image by one augmentation
draw):

- ``weak`` (the target): the sparse labels of scribble and point cases (ignore elsewhere);
- ``full``: full cases' masks (ignore for the other cases);
- ``box_bits``: bit ``k`` set where a box of class ``k`` covers the pixel (box cases);
- ``sam``: the SAM pseudo label (ignore for unlabeled cases);
- ``codes`` (per slice, not augmented): the case's index in
  :data:`~scribmed.losses.mixed_supervision.SUPERVISION_TYPES`.

Everything else (poly SGD, iteration budget, seeded sampling, validation on held-out patients,
checkpoints, exact resume) is the DMPLS engine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from monai.engines.utils import IterationEvents

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.training.config import TrainConfig, TrainResult
from scribmed.training.ema_teacher import SeSAMConfig, SeSAMObjective
from scribmed.training.slice_cache import SliceCache
from scribmed.training.trainer import SegmentorTrainer
from scribmed.training.assembly import assemble_trainer, run_training
from scribmed.training.validation import VolumeDiceEvaluator
from scribmed.losses.mixed_supervision import SUPERVISION_TYPES
from scribmed.networks.unet_dual import DualBranchUNet

__all__ = [
    "MixSupTrainConfig",
    "MixSupTrainer",
    "box_bits_to_masks",
    "build_mixsup_trainer",
    "mixsup_cache",
    "train_mixsup",
]

#: the extras of a mixed-supervision slice cache, and those padded with the ignore value
EXTRAS = ("full", "box_bits", "sam")
SPARSE = ("sam",)


@dataclass
class MixSupTrainConfig(TrainConfig):
    """The DMPLS schedule and network (Luo et al., MICCAI 2022) with SeSAM's objective weights.

    Attributes:
        sam_weight: weight of the SAM pseudo-label term (1.0, SeSAM).
        teacher_weight: weight of the EMA teacher's term (0.01, SeSAM).
        ema_decay: the teacher's EMA decay (0.999, SeSAM).
        confidence: the teacher's pseudo-label threshold (0.96, SeSAM).
    """

    sam_weight: float = 1.0
    teacher_weight: float = 0.01
    ema_decay: float = 0.999
    confidence: float = 0.96

    RESULT_FIELDS = (
        *TrainConfig.RESULT_FIELDS, "sam_weight", "teacher_weight", "ema_decay", "confidence",
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sesam()  # validates the objective's fields

    def sesam(self) -> SeSAMConfig:
        """The objective's settings."""
        return SeSAMConfig(sam_weight=float(self.sam_weight), teacher_weight=float(self.teacher_weight),
                           ema_decay=float(self.ema_decay), confidence=float(self.confidence))


def box_bits_to_masks(bits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, H, W)`` integer bit masks → ``(B, C, H, W)`` bool, channel ``k`` = bit ``k`` (channel 0 unused)."""
    shifts = torch.arange(num_classes, device=bits.device).view(1, -1, 1, 1)
    return ((bits.long().unsqueeze(1) >> shifts) & 1).bool()


class MixSupTrainer(SegmentorTrainer):
    """The DMPLS engine running the SeSAM objective on mixed supervision (see the module docstring)."""

    recipe = "mixsup"
    loss_terms = ("weak", "sam", "teacher")
    target_key = "weak"

    def __init__(self, *args: Any, slice_cache: Optional[SliceCache] = None, **kwargs: Any) -> None:
        """``SegmentorTrainer``'s arguments; ``slice_cache``: the :func:`mixsup_cache` the loader draws
        from (its per-slice supervision codes route the loss; :func:`assemble_trainer` sets it).
        ``None``: the cache of the loader's dataset, read when training needs it (a bundle's
        training set is built only when the engine starts)."""
        super().__init__(*args, **kwargs)
        self.slice_cache = slice_cache
        objective: SeSAMObjective = self.loss_function  # type: ignore[assignment]
        if objective.teacher is None:
            objective.bind_student(self.network)  # before a resume loads the teacher's state
        self.add_event_handler(IterationEvents.MODEL_COMPLETED, self._update_teacher)

    def _update_teacher(self, engine: "MixSupTrainer") -> None:
        engine.loss_function.update_teacher(engine.network)

    def compute_loss(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Mean over both heads of ``L_weak + w_SAM L_SAM + w_T L_teacher``; the prediction is the main head."""
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise TypeError("the mixed-supervision network must return (main_logits, aux_logits) in training mode")
        cache = self.slice_cache if self.slice_cache is not None else self.data_loader.dataset.cache
        codes_np = cache.codes
        if codes_np is None:
            raise ValueError("the slice cache holds no supervision codes (build it with mixsup_cache)")
        objective: SeSAMObjective = self.loss_function  # type: ignore[assignment]
        loss_fn = objective.loss
        main, aux = (o.float() for o in outputs)
        dev = main.device
        codes = torch.as_tensor(codes_np[batch["slice"].cpu().numpy()], device=dev)
        targets = {
            "label": batch["full"],
            "scribble": batch["weak"],
            "point_map": batch["weak"],
            "box_masks": box_bits_to_masks(batch["box_bits"], main.shape[1]),
        }
        teacher = None
        if objective.config.teacher_weight > 0:
            teacher = objective.teacher.targets(batch["image"], loss_fn.ignore_index)  # type: ignore[union-attr]
        loss_main = loss_fn(main, codes, targets, sam=batch["sam"], teacher=teacher)
        terms = dict(loss_fn.last)
        loss_aux = loss_fn(aux, codes, targets, sam=batch["sam"], teacher=teacher)
        logged = {name: torch.tensor(float(terms.get(name, 0.0))) for name in self.loss_terms}
        return 0.5 * (loss_main + loss_aux), main, logged


def mixsup_cache(
    cases: Sequence[Case],
    class_map: ClassMap,
    supervision: Mapping[str, str],
    pseudo: Mapping[str, np.ndarray],
    config: TrainConfig,
    progress: bool = False,
) -> SliceCache:
    """The training slices with every array :class:`MixSupTrainer` reads (module docstring).

    Args:
        cases: the training cases.
        class_map: classes (at most 8, so box bits fit a byte) and the ignore value.
        supervision: case id → type (:func:`scribmed.sam.weak_prompting.case_supervision`).
        pseudo: SAM pseudo label by case id (``(S, H, W)``), for every case whose type is not ``none``.
        config: the training config (network size, image resizing).

    Only the view a case's type allows is read: the scribble of scribble cases, the points of
    point cases, the boxes of box cases, the label of full cases only.
    """
    from scribmed.sam.weak_prompting import case_shape, case_target

    if class_map.num_classes > 8:
        raise ValueError(f"box bit masks hold at most 8 classes, the class map has {class_map.num_classes}")
    ignore = int(class_map.ignore_index)
    weak: dict[str, np.ndarray] = {}
    extras: dict[str, dict[str, np.ndarray]] = {name: {} for name in EXTRAS}
    codes: dict[str, int] = {}
    for case in cases:
        kind = supervision[case.case_id]
        if kind not in SUPERVISION_TYPES:
            raise DataError(case.source, f"case {case.case_id}: unknown supervision {kind!r}")
        # box and unlabeled cases have no per-pixel target here (boxes train through their bit masks)
        target = case_target(case, class_map, kind) if kind in ("scribble", "point", "full") else None
        shape = target.shape if target is not None else case_shape(case)
        empty = np.full(shape, ignore, dtype=np.uint8)
        weak[case.case_id] = target.astype(np.uint8) if kind in ("scribble", "point") else empty
        extras["full"][case.case_id] = target.astype(np.uint8) if kind == "full" else empty
        bits = np.zeros(shape, dtype=np.uint8)
        if kind == "box":
            w = case.weak
            for z, per_class in w.boxes.items():
                for k in per_class:
                    bits[z] |= (w.box_mask(z, k).astype(np.uint8) << np.uint8(k))
        extras["box_bits"][case.case_id] = bits
        if kind == "none":
            extras["sam"][case.case_id] = empty
        else:
            if case.case_id not in pseudo:
                raise DataError(case.source, f"no SAM pseudo label for {kind}-supervised case {case.case_id}")
            extras["sam"][case.case_id] = np.asarray(pseudo[case.case_id]).astype(np.uint8)
        codes[case.case_id] = SUPERVISION_TYPES.index(kind)
    all_extras = {"weak": weak, **extras}
    return SliceCache.from_cases(
        cases, size=config.size, keys=("image",), progress=progress, image_mode=config.image_interp,
        extras=all_extras, sparse=("weak",), ignore_index=ignore, codes=codes,
    )


def build_mixsup_trainer(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: MixSupTrainConfig,
    supervision: Mapping[str, str],
    pseudo: Mapping[str, np.ndarray],
    cache: Optional[SliceCache] = None,
) -> tuple[MixSupTrainer, Optional[VolumeDiceEvaluator]]:
    """The mixed-supervision trainer (:class:`DualBranchUNet` + :class:`SeSAMObjective`), see :func:`assemble_trainer`."""
    if cache is None:
        cache = mixsup_cache(train_cases, class_map, supervision, pseudo, config, progress=config.progress)
    objective = SeSAMObjective(class_map.num_classes, class_map.ignore_index, config.sesam())
    trainer, evaluator = assemble_trainer(
        train_cases,
        val_cases,
        class_map,
        out_dir,
        config,
        network_cls=DualBranchUNet,
        loss=objective,
        trainer_cls=MixSupTrainer,
        cache=cache,
        target_key="weak",
        extra_keys=EXTRAS,
        sparse_keys=SPARSE,
    )
    return trainer, evaluator  # type: ignore[return-value]


def train_mixsup(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    supervision: Mapping[str, str],
    pseudo: Mapping[str, np.ndarray],
    config: Optional[MixSupTrainConfig] = None,
    resume: bool = False,
) -> TrainResult:
    """Train the dual-branch segmentor on mixed supervision + SAM pseudo labels + the EMA teacher.

    Same run folder, checkpoints and resume semantics as :func:`scribmed.recipes.dmpls.trainer.train_dmpls`;
    checkpoints are tagged ``recipe: mixsup``.
    """
    config = config or MixSupTrainConfig()
    return run_training(
        lambda: build_mixsup_trainer(train_cases, val_cases, class_map, out_dir, config, supervision, pseudo),
        out_dir,
        deterministic=config.deterministic,
        has_validation=bool(val_cases),
        resume=resume,
    )
