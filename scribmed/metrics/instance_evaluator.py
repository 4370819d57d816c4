"""The instance evaluator: every instance metric of one case from one overlap table.

The instance counterpart of :mod:`scribmed.metrics.evaluator`. Reports (summaries, tables,
box plots, ``per_case.csv``) are written by :mod:`scribmed.evaluation.instance_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from scribmed.metrics.evaluator import empty_event
from scribmed.metrics.instance import DSB_THRESHOLDS, overlap_table
from scribmed.runtime.progress import progress_bar

__all__ = ["INSTANCE_METRICS", "InstanceCaseResult", "evaluate_instance_case", "evaluate_instance_cases"]

#: the per-case instance metrics, in report order
INSTANCE_METRICS: tuple[str, ...] = ("dsb_score", "f1", "aji", "aji_plus", "pq", "sq", "rq", "dice")


@dataclass(frozen=True)
class InstanceCaseResult:
    """Instance metrics of one case.

    Attributes:
        case_id: the case's id (``None`` only when not given).
        n_ref: number of reference instances.
        n_pred: number of predicted instances.
        dsb_score: mean over ``thresholds`` of TP / (TP + FP + FN) (2018 Data Science Bowl).
        f1: 2 TP / (2 TP + FP + FN) at IoU > ``match_iou``.
        aji: aggregated Jaccard index, original definition (Kumar et al. 2017).
        aji_plus: AJI+ (one-to-one pairing of largest total IoU).
        pq: panoptic quality SQ * RQ at IoU > ``match_iou``.
        sq: mean IoU of the matches (0 when none).
        rq: TP / (TP + FP/2 + FN/2).
        dice: foreground Dice of ``pred > 0`` vs ``ref > 0`` (both empty → 1.0).
        thresholds: the DSB IoU thresholds used.
        match_iou: the IoU threshold of F1 and PQ (strict: IoU > match_iou).

    Every score is 1.0 when both maps are empty and 0.0 when exactly one is.
    """

    case_id: Optional[str]
    n_ref: int
    n_pred: int
    dsb_score: float
    f1: float
    aji: float
    aji_plus: float
    pq: float
    sq: float
    rq: float
    dice: float
    thresholds: tuple[float, ...] = DSB_THRESHOLDS
    match_iou: float = 0.5

    @property
    def empty(self) -> Optional[str]:
        """The empty-map event: ``"both_empty"``, ``"pred_empty"``, ``"ref_empty"`` or ``None``."""
        return empty_event(self.n_pred == 0, self.n_ref == 0)


def evaluate_instance_case(
    pred: Any,
    ref: Any,
    case_id: Optional[str] = None,
    thresholds: Iterable[float] = DSB_THRESHOLDS,
    match_iou: float = 0.5,
) -> InstanceCaseResult:
    """Every instance metric of one case, from one contingency table.

    Args:
        pred: predicted instance map (any integer dtype, 2D or ND, 0 = background).
        ref: reference instance map, same shape.
        case_id: carried into the result for reports.
        thresholds: DSB IoU thresholds (default 0.5:0.05:0.95).
        match_iou: IoU threshold of F1 and PQ (default 0.5, strict).

    Raises:
        ValueError: shapes differ, a map is not integer, a threshold is outside [0, 1].
    """
    table = overlap_table(pred, ref)
    ts = tuple(float(t) for t in thresholds)
    pq, sq, rq = table.panoptic_quality_parts(match_iou)
    return InstanceCaseResult(
        case_id=case_id,
        n_ref=table.n_ref,
        n_pred=table.n_pred,
        dsb_score=table.dsb_score(ts),
        f1=table.f1(match_iou),
        aji=table.aji(),
        aji_plus=table.aji_plus(),
        pq=pq,
        sq=sq,
        rq=rq,
        dice=table.foreground_dice(),
        thresholds=ts,
        match_iou=float(match_iou),
    )


def evaluate_instance_cases(
    pairs: Iterable[tuple[str, Any, Any]],
    progress: bool = False,
    thresholds: Iterable[float] = DSB_THRESHOLDS,
    match_iou: float = 0.5,
) -> list[InstanceCaseResult]:
    """:func:`evaluate_instance_case` over ``(case_id, pred, ref)`` items.

    The iterable is consumed lazily (a generator loading one case at a time keeps memory flat);
    progress (:func:`scribmed.runtime.progress.progress_bar`) is shown when ``progress``.
    """
    ts = tuple(float(t) for t in thresholds)
    items = progress_bar(pairs, desc="evaluate instances", unit="case", disable=not progress)
    return [evaluate_instance_case(p, r, str(cid), ts, match_iou) for cid, p, r in items]
