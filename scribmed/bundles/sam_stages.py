"""The SAM stages of the ``samsp_*`` and ``mixsup_*`` bundles, run before their segmentor.

:func:`samsp_pseudo_labels` and :func:`mixsup_stage` run (or resume) exactly their recipe's SAM
pseudo-label rounds on a fold's training cases, in ``out_dir/sam`` (so a bundle fold and a
``scribmed cv`` fold write the same folder), rank 0 alone under DDP; :func:`supervised_dataset`
sets each case's supervision first (mixsup), as ``scribmed cv --supervision[-mix]`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from scribmed.data.case import Case
from scribmed.sam.stage_config import SamStageConfig

__all__ = ["mixsup_stage", "samsp_pseudo_labels", "supervised_dataset"]


def samsp_pseudo_labels(
    dataset: Any,
    fold_cases: dict[str, list[Case]],
    out_dir: str | Path,
    sam: Optional[SamStageConfig] = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """SAM pseudo labels of a fold's training cases: the ``samsp`` recipe's rounds, in ``out_dir/sam``.

    Runs (or resumes: finished rounds are skipped) exactly the pseudo-label stage of
    :meth:`scribmed.recipes.samsp.recipe.SAMSPRecipe.pseudo_labels` —
    :func:`scribmed.sam.rounds.run_pseudo_label_rounds` on the fold's training patients, with its
    validation patients selecting each round's decoder, the test patients never used — then
    :func:`scribmed.sam.pseudo_labels.load_pseudo_labels` of the last round. A bundle run and
    ``scribmed cv --recipe samsp`` therefore write the same ``sam/`` folder. Under DDP rank 0 runs
    the rounds while the other ranks wait, then they read the finished last round.

    Args:
        dataset: the opened dataset (gives the class map).
        fold_cases: :func:`~scribmed.bundles.locate.fold_case_lists` of the fold (``train`` prompted, ``val`` selects).
        out_dir: the fold's run folder (the rounds go to ``out_dir/sam``).
        sam: the SAM stage (:class:`scribmed.sam.stage_config.SamStageConfig`, built by the
            bundle's ``sam_config`` from its ``sam_*`` keys; ``None``: the defaults; ``cache_dir``
            ``None``: ``out_dir/sam/embeddings``).
        seed: seed of the decoder fine-tuning's slice order (the segmentor's seed).
        progress: progress bars.

    Returns:
        ``{case_id: uint8 (S, H, W)}`` for every training case, on the case's grid.

    Raises:
        DataError: a training case without a scribble; bad selection; a ``sam/`` folder made with
            other settings; a bad SAM checkpoint. (Validation cases without a scribble, such as
            MSCMR's val subjects, are prompted with scribbles synthesised from their labels, see
            :func:`scribmed.sam.decoder_validation.validation_scribble`.)
    """
    import logging

    from scribmed.runtime import distributed as dist_utils
    from scribmed.recipes.samsp.trainer import SAMSPTrainConfig
    from scribmed.recipes.samsp.recipe import SAMSPRecipe, require_scribbled
    from scribmed.sam.pseudo_labels import load_pseudo_labels

    train, val = list(fold_cases["train"]), list(fold_cases["val"])
    require_scribbled(train)  # on every rank, before rank 0 starts the rounds
    sam = sam or SamStageConfig()
    recipe = SAMSPRecipe(SAMSPTrainConfig(seed=int(seed), progress=bool(progress)), sam)
    out = Path(out_dir)
    main = dist_utils.is_main_process()
    if main:
        pseudo, quality = recipe.pseudo_labels(train, val, dataset.class_map, out, bool(progress))
        logging.getLogger(__name__).info(
            "SAM pseudo labels of %d training cases from round %s (Dice on labelled training cases: %s)",
            len(pseudo), quality.get("round"), quality.get("dice"),
        )
    dist_utils.barrier()
    if not main:
        pseudo = load_pseudo_labels(out / "sam" / f"round_{sam.rounds}", [c.case_id for c in train])
    return pseudo


def supervised_dataset(
    dataset: Any,
    supervision_file: Optional[str | Path] = None,
    supervision_mix: Optional[str] = None,
    seed: int = 0,
    simulate_weak: bool = False,
) -> Any:
    """``dataset`` with each case's supervision set, as ``scribmed cv --supervision`` / ``--supervision-mix``.

    :func:`scribmed.data.supervision_assignment.apply_supervision_source`, as ``scribmed cv`` applies it: a ``supervision.json`` manifest
    (``simulate_weak``: box/point labels the dataset lacks are simulated from its full labels) or a
    mix over the patients (``"full=0.1,box=0.3,point=0.3,scribble=0.3"``, seeded by ``seed``;
    a mix is always simulated) is applied in place with
    :func:`scribmed.data.supervision_assignment.apply_supervision`, so a bundle fold and a
    ``scribmed cv`` fold train on the same assignment. Both ``None``: the dataset as opened (its
    own ``supervision.json`` for the generic layout, else every case by its scribble).

    Returns:
        ``dataset`` (the same object).

    Raises:
        DataError: both a manifest and a mix; ``simulate_weak`` without either; a bad mix or
            manifest; a case its type cannot be satisfied for.
    """
    import logging

    from scribmed.data.supervision_assignment import apply_supervision_source

    record = apply_supervision_source(dataset, supervision_file, supervision_mix, int(seed), bool(simulate_weak),
                                      names=("supervision_file", "supervision_mix", "simulate_weak"))
    if record is not None:
        logging.getLogger(__name__).info("supervision from %s: %s", record["source"], record["cases"])
    return dataset


def mixsup_stage(
    dataset: Any,
    fold_cases: dict[str, list[Case]],
    out_dir: str | Path,
    sam: Optional[SamStageConfig] = None,
    seed: int = 0,
    progress: bool = True,
    box_margin: int = 0,
    selection: str = "sesam",
    min_coverage: float = 0.3,
    min_compatibility: float = 0.7,
) -> dict[str, Any]:
    """The ``mixsup`` recipe's SAM stage of a fold, in ``out_dir/sam``: pseudo labels from each case's own label.

    Runs (or resumes: finished rounds are skipped) exactly
    :meth:`scribmed.recipes.mixsup.recipe.MixSupRecipe.sam_stage`: SAM-SP's rounds on the fold's training
    patients with every case prompted from its own supervision (box, points, full mask or
    scribble; ``none`` cases not at all), the decoder of each round selected on the fold's
    validation patients, the test patients never used; SAM is skipped when every labelled
    training case is fully labelled (the labels are the pseudo labels). A bundle run and
    ``scribmed cv --recipe mixsup`` therefore write the same ``sam/`` folder. Under DDP rank 0 runs
    the rounds while the other ranks wait, then they read the finished last round.

    Args:
        dataset: the opened dataset with its supervision set (:func:`supervised_dataset`).
        fold_cases: :func:`~scribmed.bundles.locate.fold_case_lists` of the fold (``train`` prompted, ``val`` selects).
        out_dir: the fold's run folder (the rounds go to ``out_dir/sam``).
        sam: the SAM stage (:class:`scribmed.sam.stage_config.SamStageConfig`, built by the
            bundle's ``sam_config`` from its ``sam_*`` keys; ``None``: the defaults; ``cache_dir``
            ``None``: ``out_dir/sam/embeddings``).
        seed: seed of the decoder fine-tuning's slice order (the segmentor's seed).
        progress: progress bars.
        box_margin, selection, min_coverage, min_compatibility: the weak prompts
            (:class:`scribmed.sam.weak_prompting.WeakPromptConfig`; other fields at their defaults).

    Returns:
        ``{"pseudo": {case_id: uint8 (S, H, W)} for every training case but the unlabeled ones,
        "supervision": {case_id: type} for every training case}``.

    Raises:
        DataError: every training case is unlabeled; a case lacks what its type needs; a ``sam/``
            folder made with other settings; a bad SAM checkpoint.
    """
    import logging

    from scribmed.runtime import distributed as dist_utils
    from scribmed.recipes.mixsup.trainer import MixSupTrainConfig
    from scribmed.recipes.mixsup.recipe import MixSupRecipe
    from scribmed.sam.pseudo_labels import load_pseudo_labels
    from scribmed.sam.weak_prompting import WeakPromptConfig

    train, val = list(fold_cases["train"]), list(fold_cases["val"])
    sam = sam or SamStageConfig()
    weak = WeakPromptConfig.from_dict({
        **WeakPromptConfig().to_dict(), "box_margin": int(box_margin), "selection": str(selection),
        "min_coverage": float(min_coverage), "min_compatibility": float(min_compatibility),
    })
    recipe = MixSupRecipe(MixSupTrainConfig(seed=int(seed), progress=bool(progress)), sam, weak)
    recipe.check_supervision(train)  # on every rank, before rank 0 starts the rounds
    supervision, labelled, skips_sam = recipe.plan_sam_stage(train)
    out = Path(out_dir)
    main = dist_utils.is_main_process()
    if main or skips_sam:  # no SAM run when it is skipped: every rank takes the labels itself
        pseudo, quality, supervision = recipe.sam_stage(train, val, dataset.class_map, out, bool(progress))
        if main:
            logging.getLogger(__name__).info(
                "SAM stage (%s) of %d training cases %s: pseudo labels of %d, round %s (Dice on labelled "
                "training cases: %s)", quality.get("sam_stage"), len(train),
                {t: list(supervision.values()).count(t) for t in sorted(set(supervision.values()))},
                len(pseudo), quality.get("round"), quality.get("dice"),
            )
    dist_utils.barrier()
    if not main and not skips_sam:
        pseudo = load_pseudo_labels(out / "sam" / f"round_{sam.rounds}", [c.case_id for c in labelled])
    return {"pseudo": pseudo, "supervision": supervision}
