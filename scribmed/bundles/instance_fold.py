"""Helpers the instance bundles' configs call (``sesam_dsb2018``, ``s4m_dsb2018``, ``wish_dsb2018``).

One fold through the CV runner itself (so the bundle's fold equals ``scribmed cv --fold k``), the
fold's checkpoint, prediction of int32 instance maps and the instance evaluation of a folder.
Re-exported by :mod:`scribmed.bundles.workflow`, the module the configs import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from scribmed.data.case import Case
from scribmed.data.errors import DataError
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.runtime.files import file_sha256


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

    The instance bundles' ``run``: no training logic here. ``output_dir`` is the fold folder
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
        progress: tqdm bars.
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
    """The instance bundles' ``train#trainer``: one fold of a recipe, presented with MONAI's train properties.

    Building it does nothing (MONAI's ``initialize()`` / ``check_properties()`` stay cheap and write
    nothing); :meth:`run` is :func:`run_recipe_fold`. ``max_epochs`` is MONAI's property: the
    recipe's validation rounds, ``ceil(iterations / val_interval)``.
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
    import json

    from scribmed.crossval.runner import FOLD_DONE

    out = Path(output_dir)
    record_path = out / FOLD_DONE
    if not record_path.is_file():
        raise DataError(record_path, "no finished fold here (fold.json missing); run train.yaml first or pass "
                        "--ckpt_path")
    name = json.loads(record_path.read_text()).get("checkpoint")
    if not name:
        raise DataError(record_path, "this fold used no checkpoint; pass --ckpt_path")
    path = Path(name)
    return path if path.is_absolute() else out / path


def recipe_from_checkpoint(name: str, ckpt_path: str | Path, device: str = "auto") -> dict[str, Any]:
    """``{"recipe", "model", "class_map"}`` rebuilt by ``<Recipe>.from_checkpoint`` (loaded ``weights_only``).

    ``name`` is the registered recipe the checkpoint must belong to (``sesam``, ``s4m``, ``wish``);
    the recipe predicts on ``device`` (``auto``, ``cpu``, ``cuda[:N]``).

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


def predict_with_loaded(loaded: Any, cases: Sequence[Case], out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """The instance inference bundles' engine: ``loaded()`` (the checkpoint, read now, not at
    ``initialize()``) then :func:`predict_instance_cases` with its recipe and model."""
    found = loaded()
    return predict_instance_cases(found["recipe"], found["model"], cases, out_dir, **kwargs)


def predict_instance_cases(
    recipe: Any,
    model: Any,
    cases: Sequence[Case],
    out_dir: str | Path,
    overwrite: bool = True,
    progress: bool = True,
    dataset_root: Optional[str | Path] = None,
) -> list[Path]:
    """Write ``recipe.predict_case(model, case)`` as an int32 instance map ``<out_dir>/<case_id>.nii.gz``.

    :func:`scribmed.training.inference.predict_to_folder` with ``dtype=np.int32`` (the CV runner's
    loop for instance recipes): files on each case's grid, written atomically; with ``overwrite``
    false, files already there are kept (an interrupted run resumes).

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
    paths: list[Path] = []
    try:
        for case, path, _ in predict_to_folder(list(cases), lambda c: recipe.predict_case(model, c), out,
                                               overwrite=bool(overwrite), progress=bool(progress), dtype=np.int32):
            paths.append(path)
            case.release()
    finally:
        recipe.release(model)
    return paths


def evaluate_instance_folder(
    pred_dir: str | Path,
    cases: Sequence[Case],
    out_dir: str | Path,
    checkpoint: Optional[str] = None,
    provenance: Optional[dict[str, Any]] = None,
    progress: bool = True,
) -> Path:
    """Instance report of ``<pred_dir>/<case_id>.nii.gz`` against each case's instance map; returns summary.json.

    Every case of ``cases`` must have a reference instance map and a prediction on its grid.
    :func:`scribmed.evaluation.instance_report.evaluate_instance_cases` (DSB score, F1, AJI, AJI+,
    PQ, SQ, RQ, foreground Dice per image) and
    :func:`~scribmed.evaluation.instance_report.write_instance_report` write ``per_case.csv``,
    ``summary.json`` (``"task": "instance"``, ``checkpoint`` as given), ``summary.md`` and
    ``boxplot.png`` into ``out_dir`` — the files and values of the CV runner's
    ``fold_k/evaluation/`` for the same predictions.

    Raises:
        DataError: no case; a case without an instance map, without a prediction, or whose
            prediction has another shape.
    """
    import numpy as np

    from scribmed.data.nifti import read_label_nifti
    from scribmed.evaluation.instance_report import write_instance_report
    from scribmed.metrics.instance_evaluator import evaluate_instance_cases

    pred_dir, cases = Path(pred_dir), list(cases)
    if not cases:
        raise DataError(pred_dir, "no case to evaluate")
    no_ref = [c.case_id for c in cases if not getattr(c, "has_instance", False)]
    if no_ref:
        raise DataError(cases[0].source, f"{len(no_ref)} case(s) have no reference instance map ({', '.join(no_ref[:5])})")
    missing = [c.case_id for c in cases if not (pred_dir / f"{c.case_id}.nii.gz").is_file()]
    if missing:
        raise DataError(pred_dir, f"{len(missing)} case(s) have no prediction <case_id>.nii.gz here "
                        f"({', '.join(missing[:5])}); run inference.yaml with the same cases first")

    def pairs():
        for case in cases:
            path = pred_dir / f"{case.case_id}.nii.gz"
            ref = np.asarray(case.load().instance)
            pred = np.asarray(read_label_nifti(path, "prediction").array)
            if pred.size != ref.size:
                raise DataError(path, f"prediction shape {pred.shape} does not match the reference {ref.shape}")
            yield case.case_id, pred.reshape(ref.shape), ref
            case.release()

    results = evaluate_instance_cases(pairs(), progress=bool(progress))
    return write_instance_report(results, Path(out_dir), checkpoint=checkpoint, provenance=provenance)["summary"]


def describe_instance_checkpoint(path: str | Path) -> str:
    """One line naming an instance-recipe checkpoint: file, iteration, best validation DSB score, sha256."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    parts = [f"recipe {ckpt.get('recipe')}"]
    if ckpt.get("iteration") is not None:
        parts.append(f"iteration {ckpt['iteration']}")
    if ckpt.get("best_metric") is not None:
        parts.append(f"best val DSB score {float(ckpt['best_metric']):.4f} at iteration {ckpt.get('best_iteration')}")
    parts.append(f"sha256 {file_sha256(path)}")
    return f"{path.name} ({', '.join(parts)}) at {path.resolve()}"
