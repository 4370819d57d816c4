"""Dice / HD95 / ASD: fast, medpy-exact binary metrics, a per-case evaluator and reports.

A leaf package: it imports only numpy, scipy and the standard library (matplotlib lazily for
plots, tqdm optionally for progress bars), so ``from scribmed.metrics import dc, hd95, asd``
works as a faster ``medpy.metric.binary`` anywhere.
"""

from scribmed.metrics.binary import SurfaceDistances, asd, assd, dc, hd, hd95, surface_distances
from scribmed.metrics.evaluator import (
    EMPTY_EVENTS,
    CaseResult,
    ClassResult,
    EmptyPolicy,
    HD95Mode,
    apply_empty_policy,
    empty_event,
    evaluate_case,
    evaluate_cases,
)
from scribmed.metrics.report import (
    read_report,
    summarize,
    summarize_folds,
    summary_markdown,
    write_report,
)

__all__ = [
    "EMPTY_EVENTS",
    "CaseResult",
    "ClassResult",
    "EmptyPolicy",
    "HD95Mode",
    "SurfaceDistances",
    "apply_empty_policy",
    "asd",
    "assd",
    "dc",
    "empty_event",
    "evaluate_case",
    "evaluate_cases",
    "hd",
    "hd95",
    "read_report",
    "summarize",
    "summarize_folds",
    "summary_markdown",
    "surface_distances",
    "write_report",
]
