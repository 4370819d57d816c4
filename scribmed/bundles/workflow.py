"""Small factories for the MONAI bundles under ``bundles/`` (what a config cannot say by itself).

The bundle configs (``bundles/dmpls_*/configs/*.yaml``) compose scribmed's network, loss,
transforms and engine with ``_target_`` references; the helpers here cover the few steps that
are not one constructor call: locating the bundle, picking a fold's cases from a split file,
seeding the loss and the DDP ranks the way :func:`scribmed.training.assembly.build_dmpls_trainer`
does, refusing (or resuming) a run folder that already holds a run, and naming the checkpoint
an evaluation used. They hold no training logic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from scribmed.data.case import Case
from scribmed.data.errors import DataError
from scribmed.data.splits import fold_cases, resolve_split
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.runtime.seeding import loader_generator, loss_generator
from scribmed.runtime.files import file_sha256
from scribmed.runtime.shipped import shipped_dir

__all__ = [
    "BUNDLES_DIR",
    "RecipeFoldTrainer",
    "as_size",
    "bundle_dir",
    "call_once",
    "deferred_slice_dataset",
    "describe_checkpoint",
    "describe_instance_checkpoint",
    "dmpls_trainer",
    "evaluate_instance_folder",
    "fold_case_lists",
    "fold_checkpoint",
    "load_weights",
    "loader_generator",
    "loss_generator",
    "mixsup_stage",
    "mixsup_trainer",
    "predict_instance_cases",
    "predict_with_checkpoint",
    "predict_with_loaded",
    "recipe_from_checkpoint",
    "recipe_from_fold",
    "reseed_rank",
    "run_recipe_fold",
    "run_training",
    "samsp_pseudo_labels",
    "samsp_trainer",
    "select_cases",
    "supervised_dataset",
    "write_fold_record",
]

#: The bundles shipped with scribmed (inside the installed package, or ``<repo>/bundles``).
BUNDLES_DIR = shipped_dir("bundles")

_SUBSETS = ("train", "val", "test")


def bundle_dir(name: str) -> str:
    """Absolute path of the shipped bundle ``name`` (the default ``bundle_root`` of its configs).

    A copied bundle passes ``--bundle_root`` instead.

    Raises:
        DataError: no such shipped bundle.
    """
    path = BUNDLES_DIR / name
    if not (path / "configs").is_dir():
        raise DataError(path, "no such shipped bundle (see `scribmed bundle list`); pass --bundle_root <bundle folder>")
    return str(path)


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """Network input ``(h, w)`` from ``64`` or ``[64, 64]`` (command-line friendly)."""
    if isinstance(size, (int, float)):
        return (int(size), int(size))
    values = tuple(int(s) for s in size)
    if len(values) != 2:
        raise ValueError(f"size must be one int or two ints (h, w), got {size!r}")
    return values  # type: ignore[return-value]


def fold_case_lists(
    dataset: Any,
    split_file: str | Path,
    fold: int,
    allow_missing: bool = False,
    seed: int = 0,
) -> dict[str, list[Case]]:
    """The cases of one fold: ``{"train": [...], "val": [...], "test": [...]}``.

    Args:
        dataset: an opened :class:`~scribmed.data.dataset.Dataset`.
        split_file: split JSON path, a name in ``data_splits/`` (``acdc_5fold``) or ``"auto"``.
        fold: 1-based fold number, as on the command line and in the papers.
        allow_missing: run on the patients present when the split names absent ones
            (ACDC 001-080 against the 100-patient split).
        seed: seed of an ``"auto"`` split.

    Raises:
        SplitError: bad split file, missing patients (without ``allow_missing``), bad fold number.
        DataError: the fold has no training cases in this dataset.
    """
    report = resolve_split(split_file, dataset, seed=seed, allow_missing=allow_missing)
    ids = fold_cases(report.split, int(fold) - 1, dataset)
    if not ids["train"]:
        raise DataError(dataset.root, f"fold {fold} of split {report.split.name!r} has no training patient in this dataset")
    return {s: [dataset[c] for c in ids[s]] for s in _SUBSETS}


def select_cases(
    dataset: Any,
    which: str,
    split_file: str | Path,
    fold: int,
    allow_missing: bool = False,
    seed: int = 0,
) -> list[Case]:
    """Cases to predict: ``"all"`` cases of the dataset, or a fold's ``"test"``/``"val"``/``"train"`` cases."""
    if which == "all":
        return list(dataset.cases)
    if which not in _SUBSETS:
        raise ValueError(f"cases to predict must be 'all', 'test', 'val' or 'train', got {which!r}")
    return fold_case_lists(dataset, split_file, fold, allow_missing, seed)[which]


def load_weights(network: torch.nn.Module, ckpt_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a scribmed checkpoint (``weights_only=True``) into ``network``; return it on ``device``.

    Raises:
        DataError: missing or unsafe checkpoint, or weights that do not fit the network.
    """
    from scribmed.runtime.checkpoint import load_network_weights

    load_network_weights(network, ckpt_path)
    return network.to(device).eval()


def predict_with_checkpoint(network: torch.nn.Module, ckpt_path: str | Path, device: str | torch.device = "cpu",
                            **kwargs: Any) -> list[Path]:
    """Load ``ckpt_path``'s weights into ``network``, then :func:`~scribmed.training.inference.predict_cases`.

    The inference bundles' engine: the checkpoint is read when the workflow runs, so
    ``initialize()`` and ``check_properties()`` work before any training has happened.
    """
    from scribmed.training.inference import predict_cases

    return predict_cases(load_weights(network, ckpt_path, device), device=device, **kwargs)


def reseed_rank(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """:func:`scribmed.runtime.seeding.reseed_rank` for configs: returns ``network`` unchanged."""
    from scribmed.runtime.seeding import reseed_rank as _reseed

    _reseed(seed)
    return network


def memory_format(network: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """``network`` in the channels-last memory format when asked (before a DDP wrap, which cannot convert)."""
    return network.to(memory_format=torch.channels_last) if channels_last else network


class call_once:
    """``function(**kwargs)``, called on first use and remembered: a bundle's SAM stage.

    A config item ``{_target_: scribmed.bundles.workflow.call_once, function: ..., ...}`` builds this
    object at ``initialize()`` without running anything; the training set (when training starts)
    and ``--run_id pseudo_labels`` call it, and within one workflow the stage runs once.
    """

    def __init__(self, function: Callable[..., Any], **kwargs: Any) -> None:
        self.function = function
        self.kwargs = kwargs
        self._done = False
        self._result: Any = None

    def __call__(self) -> Any:
        if not self._done:
            self._result = self.function(**self.kwargs)
            self._done = True
        return self._result

    def __repr__(self) -> str:
        name = getattr(self.function, "__name__", repr(self.function))
        return f"call_once({name}, {'done' if self._done else 'not run yet'})"


def deferred_slice_dataset(
    cache: Callable[..., Any],
    stage: Optional[Callable[[], Any]] = None,
    stage_args: Sequence[str] = (),
    **dataset_kwargs: Any,
) -> Any:
    """A bundle's training set, built when training starts (:mod:`scribmed.training.deferred_dataset`).

    Args:
        cache: builds the slice cache (the config's ``train#cache`` with ``_mode_: callable``).
        stage: the step the cache needs first (the SAM stage, ``_mode_: callable``), or ``None``.
        stage_args: the cache's keyword argument(s) the stage's result fills: one name takes the
            whole result (SAM-SP: ``[pseudo]``), several take its items (mixsup: ``[pseudo, supervision]``).
        dataset_kwargs: :class:`~scribmed.training.sampling.SliceTrainingDataset`'s other arguments.

    Returns:
        A :class:`~scribmed.training.deferred_dataset.DeferredDataset`; the trainer factories here
        build it when their engine starts.
    """
    from scribmed.training.deferred_dataset import DeferredDataset
    from scribmed.training.sampling import SliceTrainingDataset

    names = list(stage_args)
    if stage is None and names:
        raise ValueError(f"stage_args {names} given without a stage")

    def build() -> Any:
        kwargs: dict[str, Any] = {}
        if stage is not None:
            result = stage()
            kwargs = {names[0]: result} if len(names) == 1 else {n: result[n] for n in names}
        return SliceTrainingDataset(cache(**kwargs), **dataset_kwargs)

    return DeferredDataset(build, "slice cache" + (" after the SAM stage" if stage is not None else ""))


def _build_data_on_start(trainer: Any, loader: Any) -> Any:
    from scribmed.training.deferred_dataset import materialize_on_start

    materialize_on_start(trainer, getattr(loader, "dataset", None))
    return trainer


def dmpls_trainer(max_epochs: int, iterations: int, epoch_length: int, **kwargs: Any) -> Any:
    """A :class:`~scribmed.training.trainer.DMPLSTrainer` with MONAI's ``max_epochs`` bundle property.

    The DMPLS budget is counted in iterations; ``max_epochs`` must equal
    ``ceil(iterations / epoch_length)`` (set ``iterations`` to change the length of a run).

    Raises:
        ValueError: ``max_epochs`` disagrees with ``iterations`` and ``epoch_length``.
    """
    from scribmed.training.trainer import DMPLSTrainer

    _check_max_epochs(max_epochs, iterations, epoch_length)
    trainer = DMPLSTrainer(iterations=iterations, epoch_length=epoch_length, **kwargs)
    return _build_data_on_start(trainer, kwargs.get("train_data_loader"))


def _check_max_epochs(max_epochs: int, iterations: int, epoch_length: int) -> None:
    """MONAI's ``max_epochs`` property must match the iteration budget: ``ceil(iterations / epoch_length)``."""
    expected = math.ceil(int(iterations) / int(epoch_length))
    if int(max_epochs) != expected:
        raise ValueError(
            f"max_epochs={max_epochs} disagrees with iterations={iterations} and epoch_length={epoch_length} "
            f"(ceil gives {expected}); change iterations instead"
        )


def run_training(recorder: Any, resume: bool = False) -> Optional[float]:
    """Run a bundle's trainer (:func:`scribmed.training.run_record.run_or_resume`); return the best val Dice."""
    from scribmed.training.run_record import run_or_resume

    run_or_resume(recorder, resume)
    return recorder.best_metric


def write_fold_record(
    output_dir: str | Path, fold: int, ckpt_path: str | Path, policy: str, cases: dict[str, list[Case]], summary: Any = None
) -> Path:
    """Write ``output_dir/fold.json`` after an evaluation, so ``scribmed cv merge`` can merge bundle folds.

    Same marker as the cross-validation runner's (:data:`scribmed.crossval.runner.FOLD_DONE`):
    written last, it names the checkpoint, how it was chosen (``best``/``last``) and its sha256.

    Args:
        output_dir: the fold's run folder (``.../fold_<k>``; its ``evaluation/`` holds the report).
        fold: 1-based fold number.
        ckpt_path: the checkpoint evaluated.
        policy: ``"best"`` or ``"last"``.
        cases: the fold's case lists (counts are recorded).
        summary: the evaluation's ``summary.json`` path (only orders the call after the evaluation).
    """
    from scribmed.crossval.runner import write_fold_record as _write

    ckpt = Path(ckpt_path)
    counts = {s: len(v) for s, v in cases.items()}
    return _write(Path(output_dir), fold, ckpt, policy, file_sha256(ckpt), counts, written_by="bundle evaluate workflow")


def describe_checkpoint(path: str | Path) -> str:
    """One line naming a checkpoint for reports: file, iteration, validation Dice and sha256."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    parts = [path.name]
    iteration = (ckpt.get("trainer") or {}).get("iteration")
    if iteration is not None:
        parts.append(f"iteration {iteration}")
    val: Optional[float] = ckpt.get("val_mean_dice")
    if val is not None:
        parts.append(f"val mean Dice {val:.4f}")
    parts.append(f"sha256 {file_sha256(path)}")
    return f"{parts[0]} ({', '.join(parts[1:])}) at {path.resolve()}"


# ----------------------------------------------------------------------------- SAM-SP bundles


def samsp_trainer(max_epochs: int, iterations: int, epoch_length: int, **kwargs: Any) -> Any:
    """A :class:`~scribmed.recipes.samsp.trainer.SAMSPTrainer` with MONAI's ``max_epochs`` bundle property.

    The SAM-SP counterpart of :func:`dmpls_trainer` (same iteration budget and checks); batches
    must carry ``"pseudo"`` (the SAM pseudo label).

    Raises:
        ValueError: ``max_epochs`` disagrees with ``iterations`` and ``epoch_length``.
    """
    from scribmed.recipes.samsp.trainer import SAMSPTrainer

    _check_max_epochs(max_epochs, iterations, epoch_length)
    trainer = SAMSPTrainer(iterations=iterations, epoch_length=epoch_length, **kwargs)
    return _build_data_on_start(trainer, kwargs.get("train_data_loader"))


def _sam_stage_config(
    backend: str, checkpoint: Optional[str | Path], rounds: int, epochs: int, lr: float, n_points: int,
    device: str, cache_dir: Optional[str | Path], encoder_runtime: str, loss_resolution: str,
) -> Any:
    """The :class:`~scribmed.recipes.samsp.recipe.SamStageConfig` of a bundle's SAM keys (samsp and mixsup bundles)."""
    from scribmed.recipes.samsp.recipe import SamStageConfig

    return SamStageConfig(
        backend=backend, checkpoint=None if checkpoint is None else str(checkpoint), rounds=int(rounds),
        epochs=int(epochs), lr=float(lr), n_points=int(n_points), device=str(device),
        cache_dir=None if cache_dir is None else str(cache_dir), encoder_runtime=str(encoder_runtime),
        loss_resolution=str(loss_resolution),
    )


def samsp_pseudo_labels(
    dataset: Any,
    fold_cases: dict[str, list[Case]],
    out_dir: str | Path,
    backend: str = "lite_medsam",
    checkpoint: Optional[str | Path] = None,
    rounds: int = 2,
    epochs: int = 2,
    lr: float = 5e-5,
    n_points: int = 10,
    device: str = "auto",
    cache_dir: Optional[str | Path] = None,
    seed: int = 0,
    progress: bool = True,
    encoder_runtime: str = "auto",
    loss_resolution: str = "low",
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
        fold_cases: :func:`fold_case_lists` of the fold (``train`` prompted, ``val`` selects).
        out_dir: the fold's run folder (the rounds go to ``out_dir/sam``).
        backend, checkpoint, rounds, epochs, lr, n_points, device, cache_dir, encoder_runtime,
            loss_resolution: the SAM stage
            (:class:`scribmed.recipes.samsp.recipe.SamStageConfig`; ``cache_dir`` ``None``:
            ``out_dir/sam/embeddings``).
        seed: seed of the decoder fine-tuning's slice order (the segmentor's seed).
        progress: tqdm bars.

    Returns:
        ``{case_id: uint8 (S, H, W)}`` for every training case, on the case's grid.

    Raises:
        DataError: a training case without a scribble; bad selection; a ``sam/`` folder made with
            other settings; a bad SAM checkpoint. (Validation cases without a scribble, such as
            MSCMR's val subjects, are prompted with scribbles synthesised from their labels, see
            :func:`scribmed.sam.decoder_finetune.validation_scribble`.)
    """
    import logging

    from scribmed.runtime import distributed as dist_utils
    from scribmed.recipes.samsp.trainer import SAMSPTrainConfig
    from scribmed.recipes.samsp.recipe import SAMSPRecipe, require_scribbled
    from scribmed.sam.pseudo_labels import load_pseudo_labels

    train, val = list(fold_cases["train"]), list(fold_cases["val"])
    require_scribbled(train)  # on every rank, before rank 0 starts the rounds
    sam = _sam_stage_config(backend, checkpoint, rounds, epochs, lr, n_points, device, cache_dir, encoder_runtime,
                            loss_resolution)
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
        pseudo = load_pseudo_labels(out / "sam" / f"round_{int(rounds)}", [c.case_id for c in train])
    return pseudo


# ----------------------------------------------------------------------------- mixsup bundles


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
    backend: str = "lite_medsam",
    checkpoint: Optional[str | Path] = None,
    rounds: int = 2,
    epochs: int = 2,
    lr: float = 5e-5,
    n_points: int = 10,
    device: str = "auto",
    cache_dir: Optional[str | Path] = None,
    seed: int = 0,
    progress: bool = True,
    encoder_runtime: str = "auto",
    loss_resolution: str = "low",
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
        fold_cases: :func:`fold_case_lists` of the fold (``train`` prompted, ``val`` selects).
        out_dir: the fold's run folder (the rounds go to ``out_dir/sam``).
        backend, checkpoint, rounds, epochs, lr, n_points, device, cache_dir, encoder_runtime,
            loss_resolution: the SAM stage (:class:`scribmed.recipes.samsp.recipe.SamStageConfig`;
            ``cache_dir`` ``None``: ``out_dir/sam/embeddings``).
        seed: seed of the decoder fine-tuning's slice order (the segmentor's seed).
        progress: tqdm bars.
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
    sam = _sam_stage_config(backend, checkpoint, rounds, epochs, lr, n_points, device, cache_dir, encoder_runtime,
                            loss_resolution)
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
        pseudo = load_pseudo_labels(out / "sam" / f"round_{int(rounds)}", [c.case_id for c in labelled])
    return {"pseudo": pseudo, "supervision": supervision}


def mixsup_trainer(max_epochs: int, iterations: int, epoch_length: int, **kwargs: Any) -> Any:
    """A :class:`~scribmed.recipes.mixsup.trainer.MixSupTrainer` with MONAI's ``max_epochs`` bundle property.

    The mixsup counterpart of :func:`dmpls_trainer` (same iteration budget and checks); the loss
    reads the per-slice supervision codes of the loader's slice cache
    (:func:`~scribmed.recipes.mixsup.trainer.mixsup_cache`); batches must carry ``weak``, ``full``,
    ``box_bits`` and ``sam``.

    Raises:
        ValueError: ``max_epochs`` disagrees with ``iterations`` and ``epoch_length``.
    """
    from scribmed.recipes.mixsup.trainer import MixSupTrainer

    _check_max_epochs(max_epochs, iterations, epoch_length)
    trainer = MixSupTrainer(iterations=iterations, epoch_length=epoch_length, **kwargs)
    return _build_data_on_start(trainer, kwargs.get("train_data_loader"))


# the instance bundles' helpers (DSB2018) live in their own module; re-exported for the bundle configs
from scribmed.bundles.instance_fold import (  # noqa: E402
    RecipeFoldTrainer,
    describe_instance_checkpoint,
    evaluate_instance_folder,
    fold_checkpoint,
    predict_instance_cases,
    predict_with_loaded,
    recipe_from_checkpoint,
    recipe_from_fold,
    run_recipe_fold,
)
