"""How a fold's test predictions are judged, by the recipe's task: semantic or instance.

A recipe declares ``task`` (``"semantic"`` by default, ``"instance"`` for recipes that predict
instance maps); the CV runner asks :func:`evaluation_for` for the matching :class:`FoldEvaluation`
and never names a metric itself. Both kinds write the same files into ``fold_k/evaluation/``
(``per_case.csv``, ``summary.json``, ``summary.md``, a box plot) and the same across-fold files
(``summary.json``, ``summary.md``, ``boxplot_folds.png``).

* semantic: Dice / HD95 / ASD per class (:mod:`scribmed.metrics.evaluator`);
* instance: DSB2018 score, F1@0.5, AJI, PQ and foreground Dice per image
  (:mod:`scribmed.metrics.instance_evaluator`), the reference being the case's instance map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_write_text

__all__ = ["EVALUATIONS", "FoldEvaluation", "InstanceEvaluation", "SemanticEvaluation", "evaluation_for"]


class FoldEvaluation:
    """Evaluate one fold, read a fold's report back, and merge finished folds."""

    task: str = ""
    #: the numpy dtype predictions are stored with
    prediction_dtype: Any = np.uint8

    def check_test_cases(self, test: Sequence[Case], where: Path, fold: int) -> None:
        raise NotImplementedError

    def evaluate(self, test: Sequence[Case], predictions: Mapping[str, np.ndarray], class_map: ClassMap,
                 out_dir: Path, pred_dir: Path, checkpoint: str, provenance: Optional[Mapping[str, Any]],
                 progress: bool) -> list[Any]:
        raise NotImplementedError

    def read(self, eval_dir: Path) -> list[Any]:
        """The results of a fold's report folder (either kind: the folder says which)."""
        from scribmed.evaluation.report_writer import read_results

        return read_results(eval_dir)

    def merge(self, folds: Mapping[str, Sequence[Any]], out: Path, checkpoint: str, run: Mapping[str, Any]) -> dict:
        raise NotImplementedError

    @staticmethod
    def _write_summary(out: Path, summary: dict[str, Any], markdown: str) -> None:
        import json

        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        atomic_write_text(out / "summary.md", markdown)


class SemanticEvaluation(FoldEvaluation):
    """Dice / HD95 / ASD per foreground class on the case's label."""

    task = "semantic"
    prediction_dtype = np.uint8

    def check_test_cases(self, test: Sequence[Case], where: Path, fold: int) -> None:
        unlabelled = [c.case_id for c in test if not c.has_label]
        if unlabelled:
            raise DataError(where, f"fold {fold}: {len(unlabelled)} test cases have no reference label "
                            f"({', '.join(unlabelled[:5])})")

    def evaluate(self, test, predictions, class_map, out_dir, pred_dir, checkpoint, provenance, progress):
        from scribmed.evaluation.pairing import PairedCases
        from scribmed.evaluation.report_writer import write_results
        from scribmed.metrics import evaluate_cases

        foreground = {i: n for i, n in class_map.names.items() if i != 0}
        pairs = PairedCases(test, predictions, where=pred_dir, release=False)
        results = evaluate_cases(pairs, foreground, progress=progress)
        write_results(results, out_dir, checkpoint=checkpoint, provenance=provenance)
        return results

    def merge(self, folds, out, checkpoint, run):
        from scribmed.evaluation.paper_table import cv_markdown
        from scribmed.evaluation.report import plot_fold_boxplots, summarize_folds

        summary = summarize_folds(folds, checkpoint=checkpoint)
        summary["run"] = dict(run)
        summary["folds_merged"] = sorted(int(k.split("_")[1]) for k in folds)
        self._write_summary(out, summary, cv_markdown(summary))
        plot_fold_boxplots(folds, out / "boxplot_folds.png")
        return summary


class InstanceEvaluation(FoldEvaluation):
    """DSB score, F1@0.5, AJI, PQ, Dice per image on the case's instance map."""

    task = "instance"
    prediction_dtype = np.int32

    def check_test_cases(self, test: Sequence[Case], where: Path, fold: int) -> None:
        missing = [c.case_id for c in test if not getattr(c, "has_instance", False)]
        if missing:
            raise DataError(where, f"fold {fold}: {len(missing)} test cases have no reference instance map "
                            f"({', '.join(missing[:5])})")

    def evaluate(self, test, predictions, class_map, out_dir, pred_dir, checkpoint, provenance, progress):
        from scribmed.evaluation.report_writer import write_results
        from scribmed.metrics.instance_evaluator import evaluate_instance_cases

        def pairs():
            for case in test:
                ref = np.asarray(case.load().instance)
                pred = np.asarray(predictions[case.case_id]).reshape(ref.shape)
                yield case.case_id, pred, ref

        results = evaluate_instance_cases(pairs(), progress=progress)
        write_results(results, out_dir, checkpoint=checkpoint, provenance=provenance)
        return results

    def merge(self, folds, out, checkpoint, run):
        from scribmed.evaluation.instance_report import (
            instance_cv_markdown,
            plot_instance_fold_boxplots,
            summarize_instance_folds,
        )

        summary = summarize_instance_folds(folds, checkpoint=checkpoint)
        summary["run"] = dict(run)
        summary["folds_merged"] = sorted(int(k.split("_")[1]) for k in folds)
        self._write_summary(out, summary, instance_cv_markdown(summary))
        plot_instance_fold_boxplots(folds, out / "boxplot_folds.png")
        return summary


EVALUATIONS: dict[str, FoldEvaluation] = {e.task: e for e in (SemanticEvaluation(), InstanceEvaluation())}


def evaluation_for(task: Optional[str]) -> FoldEvaluation:
    """The evaluation of a recipe's ``task`` (``None``: semantic)."""
    try:
        return EVALUATIONS[task or "semantic"]
    except KeyError:
        raise ValueError(f"unknown recipe task {task!r}; known: {', '.join(EVALUATIONS)}") from None
