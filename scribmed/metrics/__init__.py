"""Dice / HD95 / ASD: fast, medpy-exact binary metrics and the per-case evaluators.

Instance metrics of integer instance maps (DSB 2018 score, F1, AJI, AJI+, PQ) and their
evaluator live in :mod:`scribmed.metrics.instance` and :mod:`scribmed.metrics.instance_evaluator`.
Reports of results (CSV, summaries, tables, figures) are :mod:`scribmed.evaluation`'s.

A leaf package: it imports only numpy, scipy, the standard library and
:mod:`scribmed.runtime.progress` (standard library only; tqdm for a bar in a terminal), so
``from scribmed.metrics import dc, hd95, asd`` works as a faster ``medpy.metric.binary`` anywhere.

The MONAI metric classes (``DiceMetric``, ``HD95Metric``, ``ASDMetric`` and their
``MetricSummary``, from :mod:`scribmed.metrics.monai_metrics`) are loaded on first access
(PEP 562), so importing this package never imports torch or MONAI; only touching one of those
names (or ``from scribmed.metrics import *``) does.
"""

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
from scribmed.metrics.instance import (
    DSB_THRESHOLDS,
    OverlapTable,
    aji,
    aji_plus,
    dsb_score,
    f1,
    overlap_table,
    panoptic_quality,
    panoptic_quality_parts,
)
from scribmed.metrics.instance_evaluator import (
    INSTANCE_METRICS,
    InstanceCaseResult,
    evaluate_instance_case,
    evaluate_instance_cases,
)
from scribmed.runtime.lazy_exports import lazy_exports

_LAZY = {
    "ASDMetric": "scribmed.metrics.monai_metrics",
    "DiceMetric": "scribmed.metrics.monai_metrics",
    "HD95Metric": "scribmed.metrics.monai_metrics",
    "MetricSummary": "scribmed.metrics.metric_summary",
}

__all__ = [
    "ASDMetric",
    "CaseResult",
    "ClassResult",
    "DSB_THRESHOLDS",
    "DiceMetric",
    "EMPTY_EVENTS",
    "EmptyPolicy",
    "HD95Metric",
    "HD95Mode",
    "INSTANCE_METRICS",
    "InstanceCaseResult",
    "MetricSummary",
    "OverlapTable",
    "SurfaceDistances",
    "aji",
    "aji_plus",
    "apply_empty_policy",
    "asd",
    "assd",
    "dc",
    "dsb_score",
    "empty_event",
    "evaluate_case",
    "evaluate_cases",
    "evaluate_instance_case",
    "evaluate_instance_cases",
    "f1",
    "hd",
    "hd95",
    "overlap_table",
    "panoptic_quality",
    "panoptic_quality_parts",
    "surface_distances",
]

# the MONAI metric classes load on first access (they need torch and MONAI)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
