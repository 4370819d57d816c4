"""Instance segmentation metrics of integer instance maps: DSB 2018 score, F1, AJI, AJI+, PQ.

An instance map is an integer array (any integer dtype, 2D or ND) in which 0 is background and
every other value is one instance; ids need not be consecutive, and negative ids are ids like any
other. Prediction and reference must have the same shape. Because every pixel holds one id,
the instances of a map are disjoint, which the matching rules below rely on.

Everything is computed from one sparse contingency table (:func:`overlap_table`): the
intersection of every overlapping (predicted, reference) pair, found with one ``bincount`` (or
``np.unique``) of a combined per-pixel key, never a loop over pairs; 1,500 instances on a
2048 x 2048 map take well under a second.

Matching (:meth:`OverlapTable.matches`): a predicted and a reference instance match at
threshold ``t`` when their IoU is **strictly above** ``t`` (IoU > t, "an IoU above the
threshold" in the Kaggle 2018 Data Science Bowl metric), one-to-one:

* ``t >= 0.5``: every pair with IoU > t is kept. They are one-to-one automatically: if a
  reference G had IoU > 0.5 with two predictions S1 and S2, then |G ∩ Sk| > |G ∪ Sk| / 2 >=
  |G| / 2 for both, and S1, S2 being disjoint, |G ∩ S1| + |G ∩ S2| > |G|, impossible (the same
  holds with the roles swapped).
* ``t < 0.5``: an optimal one-to-one assignment among the pairs with IoU > t
  (``scipy.optimize.linear_sum_assignment`` on each connected group of candidate pairs): the
  largest number of matches, and among those the largest total IoU (as StarDist's and
  Cellpose's matching do). A greedy choice can lose matches; this never does.

Edge cases, the same for every score: both maps empty → 1.0 (nothing to find, nothing
found); exactly one empty → 0.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "DSB_THRESHOLDS",
    "OverlapTable",
    "aji",
    "aji_plus",
    "dsb_score",
    "f1",
    "overlap_table",
    "panoptic_quality",
    "panoptic_quality_parts",
]

DSB_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
"""The 2018 Data Science Bowl IoU thresholds, 0.5:0.05:0.95 (exact decimal literals)."""

_DENSE_MIN = 1 << 20  # a dense bincount of the pair keys is used below this many cells (8 MiB)


# --------------------------------------------------------------------------------------------
# the contingency table
# --------------------------------------------------------------------------------------------


def _check_maps(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(pred), np.asarray(ref)
    described = f"pred {p.shape} {p.dtype}, ref {r.shape} {r.dtype}"
    if not (np.issubdtype(p.dtype, np.integer) and np.issubdtype(r.dtype, np.integer)):
        raise ValueError(
            f"pred and ref must be integer instance maps (0 = background), got {described}; "
            "label a binary or float mask first (e.g. scipy.ndimage.label)"
        )
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got {described}")
    return p, r


def _relabel(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted non-zero ids, their areas, and every pixel's id index (1..n; 0 = background).

    Ids that are non-negative and not much larger than the array go through a lookup table
    (``bincount``, linear time); others (negative, huge, uint64 beyond int64) through
    ``np.unique(return_inverse=True)``.
    """
    flat = arr.reshape(-1)
    if flat.size == 0:
        return np.zeros(0, arr.dtype), np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < 2 * flat.size + (1 << 16):
        counts = np.bincount(flat.astype(np.int64) if flat.dtype == np.uint64 else flat)
        ids = np.flatnonzero(counts)
        ids = ids[ids != 0]
        lut = np.zeros(hi + 1, np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids.astype(arr.dtype), counts[ids].astype(np.int64), lut[flat]
    uniq, inverse = np.unique(flat, return_inverse=True)
    nonzero = uniq != 0
    rank = np.cumsum(nonzero) * nonzero  # 1-based rank among the non-zero ids, 0 for background
    idx = rank[inverse.reshape(-1)].astype(np.int64)
    ids = uniq[nonzero]
    return ids, np.bincount(idx, minlength=ids.size + 1)[1:].astype(np.int64), idx


@dataclass(frozen=True, eq=False)
class OverlapTable:
    """The sparse contingency table of two instance maps, and every score computed from it.

    Attributes:
        pred_ids: ``(n_pred,)`` sorted predicted ids (input dtype), background excluded.
        ref_ids: ``(n_ref,)`` sorted reference ids.
        pred_area: ``(n_pred,)`` int64 pixel count of each predicted instance.
        ref_area: ``(n_ref,)`` int64 pixel count of each reference instance.
        pair_pred: ``(n_pairs,)`` int64 index into ``pred_ids`` of each overlapping pair
            (pairs sorted by predicted, then reference index).
        pair_ref: ``(n_pairs,)`` int64 index into ``ref_ids``.
        pair_inter: ``(n_pairs,)`` int64 intersection in pixels (> 0).
        pair_iou: ``(n_pairs,)`` float64 IoU, ``inter / (area_p + area_r - inter)``.

    Pairs that do not overlap (IoU 0) are not stored.
    """

    pred_ids: np.ndarray
    ref_ids: np.ndarray
    pred_area: np.ndarray
    ref_area: np.ndarray
    pair_pred: np.ndarray
    pair_ref: np.ndarray
    pair_inter: np.ndarray
    pair_iou: np.ndarray

    @property
    def n_pred(self) -> int:
        """Number of predicted instances."""
        return int(self.pred_ids.size)

    @property
    def n_ref(self) -> int:
        """Number of reference instances."""
        return int(self.ref_ids.size)

    @property
    def pair_union(self) -> np.ndarray:
        """``(n_pairs,)`` int64 union of each overlapping pair."""
        return self.pred_area[self.pair_pred] + self.ref_area[self.pair_ref] - self.pair_inter

    # ---------------------------------------------------------------------------- matching

    def matches(self, iou: float = 0.5) -> np.ndarray:
        """Indices (into the ``pair_*`` arrays, sorted) of the one-to-one matches at IoU > ``iou``.

        ``iou >= 0.5``: all pairs above it (unique by the module's argument); below 0.5: the
        assignment with the most matches, then the largest total IoU (module docstring).
        """
        t = _check_threshold(iou)
        above = np.flatnonzero(self.pair_iou > t)
        if t >= 0.5:
            return above
        return above[_assign(self.pair_pred[above], self.pair_ref[above], self.pair_iou[above],
                             self.n_pred, cardinality_first=True)]

    def matched_pairs(self, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pred_ids, ref_ids, ious)`` of the matches at IoU > ``iou`` (see :meth:`matches`)."""
        m = self.matches(iou)
        return self.pred_ids[self.pair_pred[m]], self.ref_ids[self.pair_ref[m]], self.pair_iou[m]

    def tp(self, iou: float = 0.5) -> int:
        """Number of matches (true positives) at IoU > ``iou``."""
        return int(self.matches(iou).size)

    def _tp_counts(self, thresholds: Iterable[float]) -> np.ndarray:
        ts = _check_thresholds(thresholds)
        hi = ts >= 0.5
        counts = np.zeros(ts.size, np.int64)
        counts[hi] = np.count_nonzero(self.pair_iou[None, :] > ts[hi, None], axis=1)
        for k in np.flatnonzero(~hi):
            counts[k] = self.tp(float(ts[k]))
        return counts

    # ---------------------------------------------------------------------------- scores

    def _both_or_one_empty(self) -> Optional[float]:
        if self.n_pred == 0 and self.n_ref == 0:
            return 1.0
        if self.n_pred == 0 or self.n_ref == 0:
            return 0.0
        return None

    def dsb_score(self, thresholds: Iterable[float] = DSB_THRESHOLDS) -> float:
        """Mean over ``thresholds`` of TP / (TP + FP + FN): see :func:`dsb_score`."""
        tp = self._tp_counts(thresholds)
        edge = self._both_or_one_empty()
        if edge is not None:
            return edge
        return float(np.mean(tp / (self.n_pred + self.n_ref - tp)))

    def f1(self, iou: float = 0.5) -> float:
        """2 TP / (2 TP + FP + FN) at IoU > ``iou``: see :func:`f1`."""
        tp = self.tp(iou)
        edge = self._both_or_one_empty()
        if edge is not None:
            return edge
        return 2.0 * tp / (self.n_pred + self.n_ref)

    def panoptic_quality_parts(self, iou: float = 0.5) -> tuple[float, float, float]:
        """``(pq, sq, rq)``: see :func:`panoptic_quality_parts`."""
        m = self.matches(iou)
        edge = self._both_or_one_empty()
        if edge is not None:
            return edge, edge, edge
        tp = m.size
        if tp == 0:
            return 0.0, 0.0, 0.0
        total_iou = float(np.sum(self.pair_iou[m]))
        half = tp + 0.5 * (self.n_pred - tp) + 0.5 * (self.n_ref - tp)
        return total_iou / half, total_iou / tp, tp / half

    def aji(self) -> float:
        """Aggregated Jaccard index, the original definition: see :func:`aji`."""
        edge = self._both_or_one_empty()
        if edge is not None:
            return edge
        if self.pair_iou.size == 0:
            return 0.0
        # per reference: the overlapping prediction of largest IoU, ties to the lowest id
        order = np.lexsort((self.pair_pred, -self.pair_iou, self.pair_ref))
        ref_sorted = self.pair_ref[order]
        first = order[np.r_[True, ref_sorted[1:] != ref_sorted[:-1]]]
        inter = int(self.pair_inter[first].sum())
        union = int(self.pair_union[first].sum())
        union += int(self.ref_area.sum() - self.ref_area[self.pair_ref[first]].sum())  # no overlap
        used = np.zeros(self.n_pred, bool)
        used[self.pair_pred[first]] = True
        union += int(self.pred_area[~used].sum())
        return inter / union

    def aji_plus(self) -> float:
        """AJI+ (one-to-one pairing of largest total IoU): see :func:`aji_plus`."""
        edge = self._both_or_one_empty()
        if edge is not None:
            return edge
        pick = _assign(self.pair_pred, self.pair_ref, self.pair_iou, self.n_pred, cardinality_first=False)
        inter = int(self.pair_inter[pick].sum())
        union = int(self.pair_union[pick].sum())
        union += int(self.ref_area.sum() - self.ref_area[self.pair_ref[pick]].sum())
        union += int(self.pred_area.sum() - self.pred_area[self.pair_pred[pick]].sum())
        return inter / union

    def foreground_dice(self) -> float:
        """Dice of ``pred > 0`` vs ``ref > 0`` (both empty → 1.0, as the semantic ``dc``)."""
        total = int(self.pred_area.sum() + self.ref_area.sum())
        if total == 0:
            return 1.0
        return 2.0 * int(self.pair_inter.sum()) / total


def overlap_table(pred: Any, ref: Any) -> OverlapTable:
    """The sparse contingency table of two instance maps (see :class:`OverlapTable`).

    Ids are relabelled to ``0..n`` (lookup table or ``np.unique(return_inverse=True)``), then
    the combined key ``pred_idx * (n_ref + 1) + ref_idx`` of every pixel that is foreground in
    both maps is counted: with a dense ``bincount`` when ``(n_pred + 1) * (n_ref + 1)`` is at
    most ``max(2**20, pixels counted)``, else with ``np.unique(return_counts=True)``, so memory
    stays proportional to the input.

    Args:
        pred: predicted instance map, any integer dtype, any number of dimensions.
        ref: reference instance map, same shape (the dtype may differ).

    Returns:
        The :class:`OverlapTable`.

    Raises:
        ValueError: shapes differ or either map is not of an integer dtype (bool and float
            included); the message names both shapes and dtypes.
    """
    p, r = _check_maps(pred, ref)
    pred_ids, pred_area, p_idx = _relabel(p)
    ref_ids, ref_area, r_idx = _relabel(r)
    stride = ref_ids.size + 1
    both = (p_idx > 0) & (r_idx > 0)
    key = p_idx[both] * stride + r_idx[both]
    cells = (pred_ids.size + 1) * stride
    if cells <= max(_DENSE_MIN, key.size):
        counts = np.bincount(key, minlength=cells)
        keys = np.flatnonzero(counts)
        inter = counts[keys]
    else:
        keys, inter = np.unique(key, return_counts=True)
    pair_pred = (keys // stride - 1).astype(np.int64)
    pair_ref = (keys % stride - 1).astype(np.int64)
    inter = inter.astype(np.int64)
    union = pred_area[pair_pred] + ref_area[pair_ref] - inter
    return OverlapTable(pred_ids, ref_ids, pred_area, ref_area, pair_pred, pair_ref, inter, inter / union)


# --------------------------------------------------------------------------------------------
# assignment
# --------------------------------------------------------------------------------------------


def _assign(pp: np.ndarray, pr: np.ndarray, weight: np.ndarray, n_pred: int, cardinality_first: bool) -> np.ndarray:
    """Indices of an optimal one-to-one subset of the candidate edges ``(pp[k], pr[k])``.

    The bipartite candidate graph is split into connected components; a component of one edge
    is its own answer, larger ones are solved by ``linear_sum_assignment`` (maximising) on their
    small dense block. ``cardinality_first`` adds ``min(rows, cols) + 1`` to every candidate's
    weight, so a matching with more edges always outweighs one with fewer (each has weight in
    (0, 1]) and the total IoU only breaks ties; otherwise the total ``weight`` is maximised.
    """
    m = pp.size
    if m == 0:
        return np.zeros(0, np.int64)
    n_nodes = n_pred + int(pr.max()) + 1
    graph = coo_matrix((np.ones(m), (pp, n_pred + pr)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    comp = labels[pp]
    single = np.bincount(comp)[comp] == 1
    chosen = [np.flatnonzero(single)]
    multi = np.flatnonzero(~single)
    if multi.size:
        multi = multi[np.argsort(comp[multi], kind="stable")]
        for group in np.split(multi, np.flatnonzero(np.diff(comp[multi])) + 1):
            rows, ri = np.unique(pp[group], return_inverse=True)
            cols, ci = np.unique(pr[group], return_inverse=True)
            bonus = min(rows.size, cols.size) + 1.0 if cardinality_first else 0.0
            block = np.zeros((rows.size, cols.size))
            block[ri, ci] = weight[group] + bonus
            edge = np.full((rows.size, cols.size), -1, np.int64)
            edge[ri, ci] = group
            a, b = linear_sum_assignment(block, maximize=True)
            e = edge[a, b]
            chosen.append(e[e >= 0])  # cells without a candidate only fill the square
    return np.sort(np.concatenate(chosen))


def _check_threshold(t: float) -> float:
    t = float(t)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"an IoU threshold must be in [0, 1], got {t!r}")
    return t


def _check_thresholds(thresholds: Iterable[float]) -> np.ndarray:
    values = [thresholds] if np.isscalar(thresholds) else list(thresholds)
    ts = np.asarray([_check_threshold(t) for t in values], dtype=np.float64)
    if ts.size == 0:
        raise ValueError("thresholds is empty: give at least one IoU threshold")
    return ts


# --------------------------------------------------------------------------------------------
# functions
# --------------------------------------------------------------------------------------------


def dsb_score(pred: Any, ref: Any, thresholds: Iterable[float] = DSB_THRESHOLDS) -> float:
    """The 2018 Data Science Bowl score: the mean over thresholds of TP / (TP + FP + FN).

    At each threshold t, TP is the number of one-to-one matches with IoU > t (strict), FP the
    unmatched predictions, FN the unmatched references.

    Args:
        pred: predicted instance map (integer, 0 = background).
        ref: reference instance map, same shape.
        thresholds: IoU thresholds in [0, 1]; default 0.5, 0.55, ..., 0.95 (10 values).

    Returns:
        The score in [0, 1]; 1.0 when both maps are empty, 0.0 when exactly one is.

    Raises:
        ValueError: see :func:`overlap_table`; a threshold outside [0, 1] or none given.
    """
    return overlap_table(pred, ref).dsb_score(thresholds)


def f1(pred: Any, ref: Any, iou: float = 0.5) -> float:
    """Detection F1 at IoU > ``iou``: 2 TP / (2 TP + FP + FN) = 2 TP / (n_pred + n_ref).

    Returns 1.0 when both maps are empty, 0.0 when exactly one is. ``iou < 0.5`` uses the
    optimal one-to-one assignment (module docstring).
    """
    return overlap_table(pred, ref).f1(iou)


def aji(pred: Any, ref: Any) -> float:
    """Aggregated Jaccard index (Kumar et al., IEEE TMI 2017), the original definition.

    For each reference instance G_i, the overlapping predicted instance S_j of largest IoU
    with it (ties: the lowest id) adds |G_i ∩ S_j| to C and |G_i ∪ S_j| to U; a reference that
    overlaps no prediction adds |G_i| to U; finally every predicted instance never chosen adds
    its area to U. AJI = C / U. A prediction may be chosen by several references (a merge),
    and its area then enters U once per reference; :func:`aji_plus` pairs one-to-one instead.

    Returns 1.0 when both maps are empty, 0.0 when exactly one is.
    """
    return overlap_table(pred, ref).aji()


def aji_plus(pred: Any, ref: Any) -> float:
    """AJI+ (Graham et al., HoVer-Net, 2019): AJI with a one-to-one pairing.

    The overlapping (prediction, reference) pairs are paired one-to-one so as to maximise the
    total IoU (``linear_sum_assignment``); paired instances add their intersection to C and
    their union to U, every unpaired instance of either map adds its area to U. AJI+ = C / U.
    Returns 1.0 when both maps are empty, 0.0 when exactly one is.
    """
    return overlap_table(pred, ref).aji_plus()


def panoptic_quality_parts(pred: Any, ref: Any, iou: float = 0.5) -> tuple[float, float, float]:
    """``(PQ, SQ, RQ)`` of one class of instances (Kirillov et al., CVPR 2019).

    Matches are the pairs with IoU > ``iou`` (0.5 in the paper, where they are unique).
    SQ = mean IoU of the matches, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ * RQ
    (computed as sum of matched IoU / (TP + FP/2 + FN/2)).

    Returns ``(1.0, 1.0, 1.0)`` when both maps are empty, ``(0.0, 0.0, 0.0)`` when exactly one
    is or nothing matches (SQ of no match is defined as 0).
    """
    return overlap_table(pred, ref).panoptic_quality_parts(iou)


def panoptic_quality(pred: Any, ref: Any, iou: float = 0.5) -> float:
    """Panoptic quality PQ = SQ * RQ: see :func:`panoptic_quality_parts`."""
    return overlap_table(pred, ref).panoptic_quality_parts(iou)[0]
