"""One fold of any recipe as a MONAI bundle workflow: what a recipe's bundle needs and nothing more.

A bundle for a recipe (shipped, or in a package of its own that registers the recipe under the
``scribmed.recipes`` entry-point group) builds the recipe from its YAML keys with
``scribmed.recipes.build(name, **keys)`` and hands it to :class:`RecipeFoldTrainer` as
``train#trainer``; running the workflow is ``scribmed cv --fold k`` (:func:`run_recipe_fold`, the
CV runner itself). Its inference workflow rebuilds the recipe from the fold's checkpoint
(:func:`recipe_from_fold`). Nothing here knows a particular recipe or task; the instance bundles'
prediction and evaluation helpers are in :mod:`scribmed.bundles.instance_fold`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from scribmed.data.errors import DataError

__all__ = ["RecipeFoldTrainer", "fold_checkpoint", "predict_fold_cases", "predict_with_loaded", "recipe_from_checkpoint",
           "recipe_from_fold", "run_recipe_fold"]


def run_recipe_fold(
    recipe: Any,
    dataset: Any,
    split_file: str | Path,
    fold: int,
    output_dir: str | Path,
    allow_missing: bool = False,
    seed: int = 0,
    progress: bool = True,
    merge: bool = True,
) -> Path:
    """Run fold ``fold`` of ``recipe`` exactly as ``scribmed cv --fold k`` does; return its ``fold.json``.

    A recipe bundle's ``run``: no training logic here. ``output_dir`` is the fold folder
    (``.../fold_<k>``) and its parent is the cross-validation run folder handed to
    :func:`scribmed.crossval.runner.run_cross_validation` with ``folds=[fold]``, so the
    bundle reuses the runner itself: the split is loaded and checked
    (:func:`~scribmed.data.splits.validate_split`, its ``SplitReport``), ``run.json`` and
    ``split.json`` are written (a rerun with other settings is refused), ``recipe.prepare_run``
    points a SAM recipe's embedding cache at ``<parent>/sam_embeddings`` (shared by the folds),
    and :func:`~scribmed.crossval.runner.run_fold` writes ``train/``, ``predictions/``,
    ``evaluation/``, ``overlays/`` and, last, ``fold.json``. A finished fold is skipped and an
    interrupted one resumes from ``train/last.pt``. With ``merge`` the across-fold summary of the
    finished folds is written into the parent, as ``scribmed cv`` does without ``--no-merge``.

    Args:
        recipe: any :class:`scribmed.recipes.Recipe` (e.g. ``scribmed.recipes.build("sesam", ...)``).
        dataset: the opened dataset (:func:`scribmed.data.layouts.open_dataset`).
        split_file: split JSON path, a name in ``data_splits/`` (``dsb2018_5fold``) or ``"auto"``.
        fold: 1-based fold number.
        output_dir: the fold folder; its name must be ``fold_<fold>`` (the runner's layout).
        allow_missing: drop split patients the dataset lacks instead of failing.
        seed: seed of an ``"auto"`` split.
        progress: progress bars.
        merge: write ``<parent>/summary.json`` / ``summary.md`` over the finished folds.

    Raises:
        DataError: ``output_dir`` is not named ``fold_<fold>``; the fold has no training or test
            case in this dataset; a run folder made with other settings; bad split or cases.
    """
    from scribmed.crossval.runner import FOLD_DONE, run_cross_validation

    k = int(fold)
    out = Path(output_dir)
    if out.name != f"fold_{k}":
        raise DataError(out, f"output_dir must be a folder named fold_{k} (the cross-validation layout: the run "
                        f"folder is its parent), e.g. runs/<bundle>/fold_{k}")
    run_cross_validation(recipe, dataset, split_file, out.parent, folds=[k], allow_missing=bool(allow_missing),
                         seed=int(seed), progress=bool(progress), merge=bool(merge))
    done = out / FOLD_DONE
    if not done.is_file():
        raise DataError(out, f"fold {k} was skipped: it has no training or no test case in this dataset")
    return done


class RecipeFoldTrainer:
    """A recipe bundle's ``train#trainer``: one fold of a recipe, presented with MONAI's train properties.

    Building it does nothing (MONAI's ``initialize()`` / ``check_properties()`` stay cheap and write
    nothing); :meth:`run` is :func:`run_recipe_fold`. ``max_epochs`` is MONAI's property: the
    recipe's validation rounds, e.g. ``ceil(iterations / val_interval)`` (1 for a recipe that does
    not iterate).
    """

    def __init__(self, recipe: Any, dataset: Any, split_file: str | Path, fold: int, output_dir: str | Path,
                 max_epochs: int, allow_missing: bool = False, seed: int = 0, progress: bool = True,
                 merge: bool = True) -> None:
        self.recipe, self.dataset, self.split_file = recipe, dataset, split_file
        self.fold, self.output_dir = int(fold), Path(output_dir)
        self.max_epochs = int(max_epochs)
        self.allow_missing, self.seed, self.progress, self.merge = bool(allow_missing), int(seed), bool(progress), bool(merge)

    def run(self) -> Path:
        """Train, predict and evaluate the fold (:func:`run_recipe_fold`); returns its ``fold.json``."""
        return run_recipe_fold(self.recipe, self.dataset, self.split_file, self.fold, self.output_dir,
                               allow_missing=self.allow_missing, seed=self.seed, progress=self.progress,
                               merge=self.merge)

    def __repr__(self) -> str:
        return f"RecipeFoldTrainer({self.recipe.name!r}, fold {self.fold}, {self.output_dir})"


def fold_checkpoint(output_dir: str | Path) -> Path:
    """The checkpoint a finished fold used for its test cases (named in ``output_dir/fold.json``).

    Raises:
        DataError: no ``fold.json`` (unfinished fold: pass the checkpoint explicitly) or a fold
            without a checkpoint.
    """
    from scribmed.crossval.runner import FOLD_DONE, read_fold_record

    out = Path(output_dir)
    record_path = out / FOLD_DONE
    if not record_path.is_file():
        raise DataError(record_path, "no finished fold here (fold.json missing); run train.yaml first or pass "
                        "--ckpt_path")
    name = read_fold_record(out).get("checkpoint")
    if not name:
        raise DataError(record_path, "this fold used no checkpoint; pass --ckpt_path")
    path = Path(name)
    return path if path.is_absolute() else out / path


def recipe_from_checkpoint(name: str, ckpt_path: str | Path, device: str = "auto") -> dict[str, Any]:
    """``{"recipe", "model", "class_map"}`` rebuilt by ``<Recipe>.from_checkpoint`` (loaded ``weights_only``).

    ``name`` is the registered recipe the checkpoint must belong to (e.g. ``sesam``, ``s4m``,
    ``wish``); a recipe whose config has a ``device`` field predicts on ``device`` (``auto``,
    ``cpu``, ``cuda[:N]``).

    Raises:
        DataError: missing, unsafe or foreign checkpoint (e.g. a teacher-stage or another recipe's).
        ValueError: unknown recipe name.
    """
    import dataclasses

    from scribmed import recipes

    recipe, model, class_map = recipes.get(str(name)).from_checkpoint(Path(ckpt_path))
    if dataclasses.is_dataclass(recipe.config) and hasattr(recipe.config, "device"):
        recipe.config = dataclasses.replace(recipe.config, device=str(device))
    return {"recipe": recipe, "model": model, "class_map": class_map}


def recipe_from_fold(name: str, ckpt_path: Optional[str | Path], output_dir: str | Path,
                     device: str = "auto") -> dict[str, Any]:
    """:func:`recipe_from_checkpoint` of ``ckpt_path``, or of the checkpoint ``output_dir/fold.json`` names."""
    return recipe_from_checkpoint(name, fold_checkpoint(output_dir) if ckpt_path is None else ckpt_path, device)


def predict_with_loaded(loaded: Any, cases: Any, out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """A recipe bundle's inference engine: ``loaded()`` (the checkpoint, read now, not at
    ``initialize()``) then :func:`predict_fold_cases` with its recipe and model."""
    found = loaded()
    return predict_fold_cases(found["recipe"], found["model"], cases, out_dir, **kwargs)


def predict_fold_cases(
    recipe: Any,
    model: Any,
    cases: Any,
    out_dir: str | Path,
    overwrite: bool = True,
    progress: bool = True,
    dataset_root: Optional[str | Path] = None,
) -> list[Path]:
    """Write ``recipe.predict_case(model, case)`` of every case as ``<out_dir>/<case_id>.nii.gz``.

    The CV runner's loop (:func:`scribmed.training.inference.predict_to_folder`): uint8 label maps,
    or int32 instance maps for a recipe whose ``task`` is ``"instance"``, on each case's grid,
    written atomically; with ``overwrite`` false, files already there are kept (an interrupted run
    resumes).

    Raises:
        DataError: ``out_dir`` inside ``dataset_root`` (nothing is written into a dataset); an
            image whose channel count does not fit the checkpoint.
    """
    import numpy as np

    from scribmed.training.inference import predict_to_folder

    out = Path(out_dir)
    if dataset_root is not None:
        root = Path(dataset_root).resolve()
        if out.resolve() == root or root in out.resolve().parents:
            raise DataError(out, "the prediction folder lies inside the dataset folder; choose a folder outside it")
    dtype = np.int32 if getattr(recipe, "task", "semantic") == "instance" else np.uint8
    paths: list[Path] = []
    try:
        for case, path, _ in predict_to_folder(list(cases), lambda c: recipe.predict_case(model, c), out,
                                               overwrite=bool(overwrite), progress=bool(progress), dtype=dtype):
            paths.append(path)
            case.release()
    finally:
        recipe.release(model)
    return paths
