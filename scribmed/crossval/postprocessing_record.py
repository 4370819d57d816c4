"""A cross-validation run's post-processing: decided on its out-of-fold predictions, recorded, read back.

``scribmed cv postprocess RUN_DIR`` (:func:`postprocess_run`) pools the test predictions of every
finished fold (``fold_k/predictions/<case_id>.nii.gz``, as they are on disk now) with the labels of
the run's dataset (reopened from ``run.json``'s layout and root), applies nnU-Net's rule
(:func:`scribmed.crossval.postprocessing.decide_postprocessing`) and writes into the run folder:

* ``postprocessing.json`` (schema ``scribmed.postprocessing/1``): the decision (``plan``: whether
  all foreground is kept as one region, the classes whose largest component is kept), every step
  tried with the Dice it compared, per-class pooled Dice and HD95 before and after, the folds and
  number of cases used;
* ``postprocessing.md``: the before/after table.

Each case is scored as its fold's evaluation scored it: in mm (the dataset's spacing, or the
prediction file's when the dataset stores none and the run was given ``--spacing``) when the fold's
report is in mm, in pixels otherwise. ``scribmed predict --run`` applies the recorded plan
(:func:`read_postprocessing_plan`). Instance runs are refused: the rule is for label maps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from scribmed.crossval.postprocessing import PooledCase, PostprocessingDecision, PostprocessingPlan, decide_postprocessing
from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_write_text
from scribmed.runtime.migrations import read_json_record, upgrade_postprocessing_record
from scribmed.runtime.records import POSTPROCESSING, stamp

__all__ = ["POSTPROCESSING_RECORD", "POSTPROCESSING_TABLE", "postprocess_run", "postprocessing_markdown",
           "read_postprocessing_plan"]

POSTPROCESSING_RECORD = "postprocessing.json"
POSTPROCESSING_TABLE = "postprocessing.md"
RULE = ("nnU-Net v2: keep the largest connected component (full 3D connectivity) of all foreground as one "
        "region if it raises the mean foreground Dice and lowers no class's Dice, then of each class whose "
        "Dice it raises; pooled over the out-of-fold cases")


class _PooledCases:
    """The out-of-fold cases of the finished folds, read one at a time (it has a length for progress)."""

    def __init__(self, folds: list[tuple[Path, list[str], bool]], dataset: Any) -> None:
        self._folds, self._dataset = folds, dataset

    def __len__(self) -> int:
        return sum(len(ids) for _, ids, _ in self._folds)

    def __iter__(self) -> Iterator[PooledCase]:
        from scribmed.data.nifti import read_nifti_spacing
        from scribmed.evaluation.pairing import PairedCases

        for pred_dir, ids, in_mm in self._folds:
            paths = {cid: pred_dir / f"{cid}.nii.gz" for cid in ids}
            for pair in PairedCases([self._dataset[cid] for cid in ids], paths, where=pred_dir):
                spacing = (pair.spacing or read_nifti_spacing(paths[pair.case_id])) if in_mm else None
                yield pair.case_id, pair.prediction, pair.reference, spacing


def _fold_cases(run_dir: Path, folds: list[int], dataset: Any) -> list[tuple[Path, list[str], bool]]:
    """Per finished fold: its predictions folder, the test cases its report scored, whether in mm.

    Everything is checked here, before any case is read: the report, every prediction file, every
    case in the dataset with a label.
    """
    from scribmed.crossval.fold_evaluation import evaluation_for

    out = []
    for k in folds:
        fold_dir = run_dir / f"fold_{k}"
        report = fold_dir / "evaluation"
        if not (report / "per_case.csv").is_file() or not (report / "summary.json").is_file():
            raise DataError(report, f"fold {k} is finished but has no evaluation report (per_case.csv, summary.json)")
        results = evaluation_for("semantic").read(report)
        ids = [str(r.case_id) for r in results]
        absent = [cid for cid in ids if cid not in dataset]
        if absent:
            raise DataError(Path(dataset.root), f"fold {k}'s test cases {', '.join(absent[:5])} are not in this dataset")
        unlabelled = [cid for cid in ids if not dataset[cid].has_label]
        if unlabelled:
            raise DataError(Path(dataset.root), f"fold {k}'s test cases {', '.join(unlabelled[:5])} have no label")
        missing = [cid for cid in ids if not (fold_dir / "predictions" / f"{cid}.nii.gz").is_file()]
        if missing:
            raise DataError(fold_dir / "predictions", f"fold {k} has no prediction for {', '.join(missing[:5])}")
        in_mm = bool(results) and results[0].hd95_units == "mm"
        out.append((fold_dir / "predictions", ids, in_mm))
    return out


def _per_class(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"class_index": c["class_index"], "dice": c["dice"]["mean"], "hd95": c["hd95"]["mean"],
                   "hd95_n": c["hd95"]["n"]} for name, c in summary["classes"].items()}


def _record(decision: PostprocessingDecision, run: Mapping[str, Any], folds: list[int],
            not_finished: list[int], never_run: list[int]) -> dict[str, Any]:
    from scribmed.evaluation.report import summarize

    before, after = summarize(decision.before), summarize(decision.after)
    names = {c["class_index"]: n for n, c in before["classes"].items()}
    classes = {}
    for (name, b), a in zip(_per_class(before).items(), _per_class(after).values()):
        classes[name] = {"class_index": b["class_index"],
                         "keep_largest_component": b["class_index"] in decision.plan.classes,
                         "dice_before": b["dice"], "dice_after": a["dice"],
                         "hd95_before": b["hd95"], "hd95_after": a["hd95"],
                         "hd95_n_before": b["hd95_n"], "hd95_n_after": a["hd95_n"]}
    return stamp(POSTPROCESSING, {
        "plan": decision.plan.to_dict(),
        "applies": decision.plan.describe(names),
        "rule": RULE,
        "steps": [s.to_dict() for s in decision.steps],
        "classes": classes,
        "mean": {"dice_before": before["overall"]["dice"], "dice_after": after["overall"]["dice"],
                 "hd95_before": before["overall"]["hd95"], "hd95_after": after["overall"]["hd95"]},
        "hd95_units": before["hd95_units"],
        "hd95_mode": before["hd95_mode"],
        "empty_policy": before["empty_policy"],
        "folds": folds,
        "folds_not_finished": not_finished,
        "folds_never_run": never_run,
        "n_cases": before["n_cases"],
        "run": {k: run.get(k) for k in ("recipe", "layout", "root", "split_name")},
    })


def _number(value: Optional[float], digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def postprocessing_markdown(record: Mapping[str, Any], digits: int = 3, hd_digits: int = 2) -> str:
    """The before/after table of a ``postprocessing.json`` record (Dice and HD95 per class and mean)."""
    units = "mm" if record["hd95_units"] == "mm" else "px"
    folds = ", ".join(map(str, record["folds"]))
    lines = [
        "# Post-processing: keep the largest connected component",
        "",
        f"Decided on {record['n_cases']} pooled out-of-fold cases (folds {folds}) by nnU-Net's rule; "
        f"`scribmed predict --run` applies it. Decision: {record['applies']}.",
    ]
    if record["folds_not_finished"]:
        lines.append(f"Folds not finished, left out: {', '.join(map(str, record['folds_not_finished']))}.")
    lines += ["", f"| class | largest component | Dice before | Dice after | HD95 before ({units}) | "
              f"HD95 after ({units}) |", "|---|---|---|---|---|---|"]
    for name, c in record["classes"].items():
        lines.append(f"| {name} | {'kept' if c['keep_largest_component'] else '–'} | "
                     f"{_number(c['dice_before'], digits)} | {_number(c['dice_after'], digits)} | "
                     f"{_number(c['hd95_before'], hd_digits)} | {_number(c['hd95_after'], hd_digits)} |")
    m = record["mean"]
    all_fg = "kept (all foreground)" if record["plan"]["foreground_as_one"] else "–"
    lines.append(f"| mean | {all_fg} | {_number(m['dice_before'], digits)} | {_number(m['dice_after'], digits)} | "
                 f"{_number(m['hd95_before'], hd_digits)} | {_number(m['hd95_after'], hd_digits)} |")
    lines += ["", "| step tried | compared | before | after | kept |", "|---|---|---|---|---|"]
    for s in record["steps"]:
        lines.append(f"| {s['name']} | {s['compared']} | {_number(s['before'], 4)} | {_number(s['after'], 4)} | "
                     f"{'yes' if s['applied'] else 'no'} |")
    return "\n".join(lines) + "\n"


def postprocess_run(run_dir: str | Path, progress: bool = True) -> Path:
    """Decide the post-processing of the cv run ``run_dir`` and write its record and table; returns the record's path.

    Raises:
        DataError: no ``run.json``, an instance run, no finished fold, a finished fold without its
            report or predictions, or a dataset that no longer holds the test cases with labels.
    """
    from scribmed.crossval.runner import empty_folds, finished_folds, missing_folds, read_run_record
    from scribmed.data.layouts import open_dataset
    from scribmed.evaluation.report import write_summary_json

    run_dir = Path(run_dir)
    run = read_run_record(run_dir)
    if run.get("task") == "instance":
        raise DataError(run_dir, f"recipe {run.get('recipe')!r} predicts instance maps: post-processing by largest "
                        "component is for semantic label maps")
    folds = finished_folds(run_dir)
    if not folds:
        raise DataError(run_dir, "no finished fold (fold_k/fold.json) to decide post-processing on")
    missing, _ = missing_folds(run_dir)
    never = [k for k in empty_folds(run_dir) if k in missing]
    not_finished = [k for k in missing if k not in never]
    dataset = open_dataset(run["layout"], run["root"])
    pooled = _PooledCases(_fold_cases(run_dir, folds, dataset), dataset)
    classes = {int(i): n for i, n in dataset.class_map.names.items() if int(i) != 0}
    decision = decide_postprocessing(pooled, classes, progress=progress)
    record = _record(decision, run, folds, not_finished, never)
    path = write_summary_json(record, run_dir / POSTPROCESSING_RECORD)
    atomic_write_text(run_dir / POSTPROCESSING_TABLE, postprocessing_markdown(record))
    return path


def read_postprocessing_plan(run_dir: str | Path) -> Optional[PostprocessingPlan]:
    """The plan recorded in ``run_dir/postprocessing.json``; ``None`` when the run has none.

    Raises:
        DataError: an unreadable record, or one of a newer or foreign schema.
    """
    path = Path(run_dir) / POSTPROCESSING_RECORD
    if not path.exists():
        return None
    record = read_json_record(path, upgrade_postprocessing_record)
    try:
        return PostprocessingPlan.from_dict(record["plan"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"holds no valid post-processing plan ({type(exc).__name__}: {exc})") from None
