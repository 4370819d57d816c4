"""Five-fold cross-validation runner with nnU-Net's plain on-disk contract.

Layout of a run directory::

    OUT/
      run.json                 recipe, dataset, layout, root, training config (a rerun must match)
      split.json               the split protocol used (run.json lists patients dropped as absent)
      fold_1/
        train/                 last.pt, best.pt, history.json, training_curve.png
        predictions/           <case_id>.nii.gz of the fold's TEST cases, on the reference grid
        evaluation/            per_case.csv, summary.json, summary.md, boxplot.png
        overlays/              a few PNGs: image, scribble, prediction, ground truth
        prepare.json           the recipe's stage before training finished (``--stage prepare``)
        jobs/                  job records when folds run as jobs (scribmed.crossval.fold_jobs)
        fold.json              written last: marks the fold finished (checkpoint used, sha256, counts)
      summary.json             per fold, across folds (mean ± std of fold means), pooled out-of-fold
      summary.md               the paper table
      boxplot_folds.png        per-class Dice / HD95 across folds

``run.json`` and ``fold.json`` carry their schema (``scribmed.run/N``, ``scribmed.fold/N``); they are
read through :func:`read_run_record` / :func:`read_fold_record`, which upgrade older ones
(:mod:`scribmed.runtime.migrations`).

A fold with ``fold.json`` is skipped on a rerun; an unfinished fold resumes training from its
``last.pt``. ``--fold k`` runs one fold (one process or node per fold); :func:`merge_folds`
assembles the summary from whatever folds are finished. Folds are numbered from 1 on disk and on
the command line, like the papers.

Under ``torchrun`` (an initialised process group) every rank trains the fold with
DistributedDataParallel; rank 0 alone runs the recipe's stage before training, writes the run
records, predicts, evaluates and merges, and the other ranks wait for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from scribmed.data.case import Case
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.split_files import load_split, save_split
from scribmed.data.splits import SplitReport, auto_folds, fold_cases, make_kfold_split, split_summary, validate_split
from scribmed.runtime import distributed as dist_utils
from scribmed.crossval.fold_evaluation import evaluation_for
from scribmed.runtime.files import atomic_write_text
from scribmed.runtime.migrations import read_json_record, upgrade_fold_record, upgrade_run_record
from scribmed.runtime.records import FOLD, RUN, stamp
from scribmed.metrics import CaseResult

if TYPE_CHECKING:
    from scribmed.recipes.base import FoldModel, Recipe

__all__ = [
    "FOLD_DONE", "PREPARE_DONE", "RUN_RECORD", "CVRun", "empty_folds", "merge_folds", "open_run", "read_fold_record",
    "read_run_record", "run_cross_validation", "run_fold", "write_fold_record",
]

log = logging.getLogger(__name__)

FOLD_DONE = "fold.json"
RUN_RECORD = "run.json"
PREPARE_DONE = "prepare.json"
STAGES = ("all", "prepare")


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_run_record(out: Path) -> dict[str, Any]:
    """``out/run.json`` in the current schema (an older one upgraded).

    Raises:
        DataError: missing, unreadable, or of a newer or unknown schema.
    """
    return read_json_record(Path(out) / RUN_RECORD, upgrade_run_record)


def read_fold_record(fold_dir: Path) -> dict[str, Any]:
    """``fold_dir/fold.json`` in the current schema (an older one upgraded).

    Raises:
        DataError: missing, unreadable, or of a newer or unknown schema.
    """
    return read_json_record(Path(fold_dir) / FOLD_DONE, upgrade_fold_record)


def _check_run_record(out: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` on the first call; later calls must describe the same run.

    ``record`` is stamped here; an earlier ``run.json`` is compared after its upgrade, so a run
    folder written before the current schema is the same run.
    """
    path = out / RUN_RECORD
    record = json.loads(json.dumps(stamp(RUN, record), default=str))
    if path.exists():
        previous = read_run_record(out)
        if previous != record:
            changed = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
            raise DataError(
                path, f"this run directory was made with other settings ({', '.join(changed)}); use a new --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, record)


def _parse_folds(folds: Optional[Sequence[int]], num_folds: int) -> list[int]:
    """1-based fold numbers to run (default: all)."""
    if not folds:
        return list(range(1, num_folds + 1))
    bad = [k for k in folds if not 1 <= k <= num_folds]
    if bad:
        raise DataError(None, f"folds {bad} do not exist; the split has folds 1..{num_folds}")
    return sorted(set(folds))


def _predict_fold(
    recipe: "Recipe", model: "FoldModel", cases: Sequence[Case], pred_dir: Path, progress: bool,
    dtype: Any = np.uint8,
) -> dict[str, np.ndarray]:
    """Predict each test case (kept in memory for evaluation) and write ``pred_dir/<case_id>.nii.gz``.

    A prediction file left by an interrupted run is read back instead of recomputed.
    """
    from scribmed.data.nifti import read_label_nifti
    from scribmed.training.inference import predict_to_folder

    predictions: dict[str, np.ndarray] = {}
    for case, path, pred in predict_to_folder(cases, lambda c: recipe.predict_case(model, c), pred_dir,
                                              progress=progress, dtype=dtype):
        predictions[case.case_id] = pred if pred is not None else read_label_nifti(path, "prediction").array
    return predictions


def run_fold(
    recipe: "Recipe",
    dataset: Dataset,
    report: SplitReport,
    k: int,
    out: Path,
    progress: bool = True,
    n_overlays: int = 3,
    stage: str = "all",
) -> Optional[list[CaseResult]]:
    """Train, predict and evaluate fold ``k`` (1-based); return its per-case results (None if empty).

    The predictions are evaluated from memory (paired with the test cases by
    :func:`scribmed.evaluation.pairing.PairedCases`) and written as NIfTI on each case's grid.
    ``stage="prepare"`` runs only the recipe's stage before training (:meth:`Recipe.prepare_fold`,
    e.g. SAM pseudo labels; its own job on a cluster) and marks it with ``prepare.json``. Under
    ``torchrun`` every rank must call this; only rank 0 returns the results.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    fold_dir = out / f"fold_{k}"
    done = fold_dir / FOLD_DONE
    evaluation = evaluation_for(getattr(recipe, "task", "semantic"))
    if done.exists():
        log.info("fold %d already finished, skipping", k)
        return evaluation.read(fold_dir / "evaluation") if stage == "all" else None
    ids = fold_cases(report.split, k - 1, dataset)
    if not ids["test"] or not ids["train"]:
        log.warning("fold %d has no %s cases in this dataset; skipped", k, "test" if not ids["test"] else "train")
        return None
    distributed = dist_utils.is_distributed()
    if distributed and not getattr(recipe, "distributed", False):
        raise DataError(None, f"recipe {recipe.name!r} does not train with DistributedDataParallel; run it without "
                        "torchrun (one process per fold: --executor local/slurm)")
    main = dist_utils.is_main_process()
    progress = progress and main
    train = [dataset[c] for c in ids["train"]]
    val = [dataset[c] for c in ids["val"]]
    test = [dataset[c] for c in ids["test"]]
    if not val:
        log.warning("fold %d has no validation patients: the last checkpoint is used", k)
    if stage == "all":
        evaluation.check_test_cases(test, dataset.root, k)
    recipe.check_supervision(train)
    train_dir = fold_dir / "train"
    if stage == "prepare" or (distributed and getattr(recipe, "prepare_stage", None)):
        prepared = fold_dir / PREPARE_DONE
        if main and not prepared.exists():  # rank 0 alone; the others find it finished
            recipe.prepare_fold(train, val, dataset.class_map, train_dir, progress)
            _write_json(prepared, {"fold": int(k), "stage": getattr(recipe, "prepare_stage", None)})
        dist_utils.barrier()
        if stage == "prepare":
            return None
    model = recipe.train(train, val, dataset.class_map, train_dir, progress)
    if not main:
        recipe.release(model)
        dist_utils.barrier()  # rank 0 predicts and evaluates
        return None
    try:
        predictions = _predict_fold(recipe, model, test, fold_dir / "predictions", progress,
                                    dtype=evaluation.prediction_dtype)
        recipe.release(model)

        from scribmed.evaluation.overlays import checkpoint_label, write_overlays

        shown = [predictions[c.case_id] for c in test[:n_overlays]]
        if evaluation.task == "instance":  # overlays show the predicted foreground
            shown = [(np.asarray(p) > 0).astype(np.uint8) for p in shown]
        write_overlays(test[:n_overlays], shown, dataset.class_map, fold_dir / "overlays",
                       checkpoint=checkpoint_label(model.checkpoint, model.policy))
        results = evaluation.evaluate(test, predictions, dataset.class_map, fold_dir / "evaluation",
                                      fold_dir / "predictions", model.policy, dataset.provenance, progress)
        write_fold_record(
            fold_dir, k, model.checkpoint, model.policy, model.sha256, {s: len(v) for s, v in ids.items()},
            **model.extra
        )
    finally:
        if distributed:
            dist_utils.barrier()
    for c in (*train, *val, *test):
        c.release()
    return results


def write_fold_record(
    fold_dir: Path,
    fold: int,
    checkpoint: Optional[Path],
    policy: str,
    sha256: Optional[str],
    case_counts: dict[str, int],
    **extra: Any,
) -> Path:
    """Write ``fold_dir/fold.json``, the marker of a finished fold (written last, atomically).

    It names the checkpoint used for the test cases, how it was chosen (``best``/``last``, or
    ``none`` for a method that learns nothing) and its sha256; :func:`merge_folds` reads it,
    whoever wrote the fold (this runner or a bundle).
    """
    if policy not in ("best", "last", "none"):
        raise ValueError(f"checkpoint policy must be 'best', 'last' or 'none', got {policy!r}")
    fold_dir = Path(fold_dir)
    if checkpoint is None:
        where = None
    else:
        checkpoint = Path(checkpoint)
        where = str(checkpoint.relative_to(fold_dir) if checkpoint.is_relative_to(fold_dir) else checkpoint)
    record = stamp(FOLD, {
        "fold": int(fold),
        "checkpoint": where,
        "checkpoint_policy": policy,
        "checkpoint_sha256": sha256,
        "cases": dict(case_counts),
        **extra,
    })
    path = fold_dir / FOLD_DONE
    _write_json(path, record)
    return path


def merge_folds(out: Path) -> Path:
    """Summarise every finished fold of ``out`` (``scribmed cv merge``); returns ``summary.json``.

    Works on folds computed elsewhere (other processes or nodes) as long as each ``fold_k``
    folder holds its ``fold.json`` and ``evaluation/``.
    """
    out = Path(out)
    finished = [(k, out / f"fold_{k}") for k in finished_folds(out)]
    if not finished:
        raise DataError(out, "no finished fold (fold_k/fold.json) to merge")
    run = read_run_record(out) if (out / RUN_RECORD).exists() else {}
    evaluation = evaluation_for(run.get("task"))
    folds = {f"fold_{k}": evaluation.read(p / "evaluation") for k, p in finished}
    policies = sorted({read_fold_record(p)["checkpoint_policy"] for _, p in finished})
    evaluation.merge(folds, out, "/".join(policies), run)
    return out / "summary.json"


def finished_folds(out: Path) -> list[int]:
    """The folds of the run folder ``out`` that hold a ``fold.json``, in order."""
    return sorted(int(p.name.split("_")[1]) for p in Path(out).glob("fold_*")
                  if p.name.split("_")[1].isdigit() and (p / FOLD_DONE).exists())


def missing_folds(out: Path) -> tuple[list[int], int]:
    """``(folds of the run's split without a fold.json, number of folds)``; ``([], 0)`` without ``split.json``."""
    out = Path(out)
    split_file = out / "split.json"
    if not split_file.is_file():
        return [], 0
    try:
        n = len(json.loads(split_file.read_text()).get("folds", []))
    except (OSError, ValueError):
        return [], 0
    done = set(finished_folds(out))
    return [k for k in range(1, n + 1) if k not in done], n


def empty_folds(out: Path) -> list[int]:
    """Folds of the run's split left without test or training patients once the patients absent from
    the dataset are dropped (``run.json``'s ``missing_patients_dropped``): they never run."""
    out = Path(out)
    try:
        folds = json.loads((out / "split.json").read_text()).get("folds", [])
        absent = set(json.loads((out / RUN_RECORD).read_text()).get("missing_patients_dropped") or ())
    except (OSError, ValueError):
        return []
    return [k for k, fold in enumerate(folds, 1)
            if not set(fold.get("test", ())) - absent or not set(fold.get("train", ())) - absent]


class CVRun:
    """An opened run directory: the checked run record, the validated split and its fold numbers."""

    def __init__(self, out: Path, report: SplitReport) -> None:
        self.out = Path(out)
        self.report = report

    @property
    def num_folds(self) -> int:
        return int(self.report.split.num_folds)

    def folds(self, requested: Optional[Sequence[int]] = None) -> list[int]:
        """1-based folds to run (default all); unknown folds are an error."""
        return _parse_folds(requested, self.num_folds)

    def check_data(self, dataset: Dataset, folds: Sequence[int], progress: bool = True) -> int:
        """Load and check every case the unfinished ``folds`` use (training, validation and test),
        before any of them trains: a bad file stops the run now with one line naming it, not after
        days of training (:meth:`scribmed.data.dataset.Dataset.validate`). Returns the number of
        cases checked."""
        ids: list[str] = []
        for k in folds:
            if (self.out / f"fold_{k}" / FOLD_DONE).exists():
                continue
            for subset in fold_cases(self.report.split, k - 1, dataset).values():
                ids.extend(subset)
        unique = list(dict.fromkeys(ids))
        if unique:
            dataset.validate(progress=progress, cases=[dataset[c] for c in unique])
        return len(unique)


def open_run(
    recipe: "Recipe",
    dataset: Dataset,
    split: str | Path,
    out: Path,
    allow_missing: bool = False,
    seed: int = 0,
    supervision: Optional[dict[str, Any]] = None,
) -> CVRun:
    """Validate the split against ``dataset`` and write (or check) ``run.json`` and ``split.json``.

    Everything that can be refused is refused here, before any fold runs or any job is submitted.
    Under ``torchrun`` rank 0 writes and the other ranks wait, then read.
    """
    out = Path(out)
    k = auto_folds(split)
    protocol = make_kfold_split(dataset.patients, k=k, seed=seed) if k else load_split(split)
    report = validate_split(protocol, dataset, allow_missing=allow_missing)
    recipe.prepare_run(out)
    record = {
        "recipe": recipe.name,
        "layout": dataset.layout,
        "root": str(Path(dataset.root).resolve()),
        "split": str(split),
        "split_name": protocol.name,
        "missing_patients_dropped": report.missing,
        "config": recipe.config_dict(),
        "task": getattr(recipe, "task", "semantic"),
        "supervision": supervision,  # None: the dataset's own supervision
    }
    if dataset.provenance:  # e.g. synthesised scribbles: said in run.json and every report
        record["provenance"] = dataset.provenance
    main = dist_utils.is_main_process()
    if main:
        _check_run_record(out, record)
        split_file = out / "split.json"
        if not split_file.exists():
            save_split(protocol, split_file)  # the protocol as given; run.json lists what was dropped
    dist_utils.barrier()
    if not main:
        _check_run_record(out, record)  # reads only: rank 0 wrote it
    if main:  # validate_split has logged what it dropped
        log.info("split %s", split_summary(report.split))
    return CVRun(out, report)


def run_cross_validation(
    recipe: Recipe,
    dataset: Dataset,
    split: str | Path,
    out: Path,
    folds: Optional[Sequence[int]] = None,
    allow_missing: bool = False,
    seed: int = 0,
    progress: bool = True,
    merge: bool = True,
    supervision: Optional[dict[str, Any]] = None,
    stage: str = "all",
    check_data: bool = True,
) -> Optional[Path]:
    """Run the requested folds (1-based; default all) and merge what is finished.

    Args:
        recipe: the method, any :class:`scribmed.recipes.Recipe` (e.g. ``scribmed.recipes.build("dmpls")``).
        dataset: opened dataset (training cases need scribbles, test cases labels).
        split: a split JSON path, or ``"auto"`` / ``"auto:K"`` for a seeded five-fold / K-fold split by patient.
        out: run directory (created; a rerun skips finished folds and resumes unfinished ones).
        folds: 1-based folds to run.
        allow_missing: drop split patients the dataset lacks instead of failing.
        seed: seed of ``auto`` splits.
        merge: write the across-fold summary afterwards.
        supervision: the record of the supervision assignment applied to ``dataset``
            (:func:`scribmed.data.supervision_assignment.apply_supervision`), kept in ``run.json``.
        stage: ``"all"`` or ``"prepare"`` (only the recipe's stage before training, see :func:`run_fold`).
        check_data: load and check every case of the unfinished requested folds before the first
            one runs (:meth:`CVRun.check_data`); a job whose submitter checked them skips it.

    Returns:
        ``summary.json`` when merged (on rank 0 under ``torchrun``), else None.
    """
    recipe.check_device()  # before the data check, which can take minutes
    run = open_run(recipe, dataset, split, out, allow_missing=allow_missing, seed=seed, supervision=supervision)
    if check_data:
        run.check_data(dataset, run.folds(folds), progress=progress)
    for k in run.folds(folds):
        run_fold(recipe, dataset, run.report, k, run.out, progress=progress, stage=stage)
    if merge and stage == "all" and dist_utils.is_main_process():
        return merge_folds(run.out)
    return None
