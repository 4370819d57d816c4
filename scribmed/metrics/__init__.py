"""Dice / HD95 / ASD: fast, medpy-exact binary metrics, a per-case evaluator and reports.

A leaf package: it imports only numpy, scipy and the standard library (matplotlib lazily for
plots, tqdm optionally for progress bars), so ``from scribmed.metrics import dc, hd95, asd``
works as a faster ``medpy.metric.binary`` anywhere.

The MONAI metric classes (``DiceMetric``, ``HD95Metric``, ``ASDMetric`` and their
``MetricSummary``, from :mod:`scribmed.metrics.monai_metrics`) are loaded on first access
(PEP 562), so importing this package never imports torch or MONAI; only touching one of those
names (or ``from scribmed.metrics import *``) does.
"""

from typing import Any

from scribmed.metrics.binary import (
    SurfaceDistances,
    asd,
    assd,
    dc,
    hd,
    hd95,
    surface_distances,
)
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

_LAZY = {
    "ASDMetric": "scribmed.metrics.monai_metrics",
    "DiceMetric": "scribmed.metrics.monai_metrics",
    "HD95Metric": "scribmed.metrics.monai_metrics",
    "MetricSummary": "scribmed.metrics.monai_metrics",
}

__all__ = [
    "ASDMetric",
    "DiceMetric",
    "EMPTY_EVENTS",
    "CaseResult",
    "ClassResult",
    "EmptyPolicy",
    "HD95Metric",
    "HD95Mode",
    "MetricSummary",
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


def __getattr__(name: str) -> Any:
    """Import the MONAI metric classes on first access (they need torch and MONAI)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
