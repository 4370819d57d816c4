"""Evaluation of predictions: pairing, reports, figures, overlays, run comparison, the paper table.

* :class:`~scribmed.evaluation.pairing.PairedCases` — the one generator that pairs predictions
  with reference cases (id, shape and spacing checks), used by the CV runner, ``scribmed evaluate``
  and the bundles' evaluate workflow.
* :mod:`~scribmed.evaluation.report` / :mod:`~scribmed.evaluation.instance_report` — the
  semantic and instance reports (``per_case.csv``, ``summary.json``, ``summary.md``, box plots);
  :func:`write_results` writes either kind.
* :mod:`~scribmed.runtime.figures` — figure styling, the class palette, PNG/PDF output.
* :func:`~scribmed.evaluation.folder.evaluate_folder` — ``scribmed evaluate``.
* :func:`~scribmed.evaluation.comparison.compare_runs` — ``scribmed cv compare``.
* :func:`~scribmed.evaluation.overlays.write_overlays` — image / scribble / prediction / truth PNGs.
* :func:`~scribmed.evaluation.paper_table.cv_markdown` — the cross-validation report.

The metrics themselves live in :mod:`scribmed.metrics` (a leaf package usable alone).
"""

from scribmed.evaluation.instance_report import (
    instance_cv_markdown,
    instance_summary_markdown,
    plot_instance_fold_boxplots,
    read_instance_report,
    summarize_instance,
    summarize_instance_folds,
    write_instance_report,
)
from scribmed.evaluation.pairing import Pair, PairedCases, Reference
from scribmed.evaluation.report import (
    read_report,
    summarize,
    summarize_folds,
    summary_markdown,
    write_report,
)
from scribmed.evaluation.report_writer import read_results, write_results

__all__ = [
    "Pair",
    "PairedCases",
    "Reference",
    "instance_cv_markdown",
    "instance_summary_markdown",
    "plot_instance_fold_boxplots",
    "read_instance_report",
    "read_report",
    "read_results",
    "summarize",
    "summarize_folds",
    "summarize_instance",
    "summarize_instance_folds",
    "summary_markdown",
    "write_instance_report",
    "write_report",
    "write_results",
]
