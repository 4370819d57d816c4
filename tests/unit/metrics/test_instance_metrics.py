"""Instance metrics: hand-computed cases, a brute-force reference on random maps, strictness, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from scribmed.metrics import (
    DSB_THRESHOLDS,
    aji,
    aji_plus,
    dsb_score,
    f1,
    overlap_table,
    panoptic_quality,
    panoptic_quality_parts,
)

# --------------------------------------------------------------------------------------------
# hand-built maps
# --------------------------------------------------------------------------------------------


def _two_squares() -> tuple[np.ndarray, np.ndarray]:
    """Refs R1 = rows 0:10 x cols 0:10 (100 px), R2 = rows 0:10 x cols 20:30 (100 px).

    Preds: P5 = rows 0:10 x cols 0:6 (60 px, inside R1: IoU 60/100 = 0.6),
    P7 = rows 0:9 x cols 20:25 (45 px, inside R2: IoU 45/100 = 0.45),
    P9 = rows 0:4 x cols 35:39 (16 px, a false positive).
    """
    ref = np.zeros((10, 40), np.int32)
    ref[0:10, 0:10] = 1
    ref[0:10, 20:30] = 2
    pred = np.zeros_like(ref)
    pred[0:10, 0:6] = 5
    pred[0:9, 20:25] = 7
    pred[0:4, 35:39] = 9
    return pred, ref


def test_overlap_table_of_two_squares():
    t = overlap_table(*_two_squares())
    assert t.pred_ids.tolist() == [5, 7, 9] and t.ref_ids.tolist() == [1, 2]
    assert t.pred_area.tolist() == [60, 45, 16] and t.ref_area.tolist() == [100, 100]
    assert t.pair_pred.tolist() == [0, 1] and t.pair_ref.tolist() == [0, 1]
    assert t.pair_inter.tolist() == [60, 45]
    assert t.pair_iou.tolist() == [0.6, 0.45]
    assert t.pair_union.tolist() == [100, 100]


def test_two_squares_by_hand():
    pred, ref = _two_squares()
    # t = 0.5, 0.55: only P5-R1 (0.6) matches: TP 1, FP 2, FN 1 -> 1/4; t >= 0.6: 0.6 > t fails -> 0
    assert dsb_score(pred, ref) == pytest.approx((0.25 + 0.25) / 10)  # 0.05
    assert f1(pred, ref) == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))  # 0.4
    # t = 0.4 (< 0.5, assignment): both pairs match: TP 2, FP 1, FN 0 -> 4/5
    assert f1(pred, ref, iou=0.4) == pytest.approx(0.8)
    # AJI: R1 -> P5 (C 60, U 100), R2 -> P7 (C 45, U 100), P9 unused (U 16): 105 / 216
    assert aji(pred, ref) == pytest.approx(105 / 216)
    assert aji_plus(pred, ref) == pytest.approx(105 / 216)
    # PQ: one match of IoU 0.6; RQ = 1 / (1 + 2/2 + 1/2) = 0.4; PQ = 0.24
    assert panoptic_quality_parts(pred, ref) == pytest.approx((0.24, 0.6, 0.4))
    assert panoptic_quality(pred, ref) == pytest.approx(0.24)
    assert overlap_table(pred, ref).foreground_dice() == pytest.approx(2 * 105 / (121 + 200))


def test_split_prediction_by_hand():
    """R1 = 10 x 10; prediction split into P1 (cols 0:6, IoU 0.6) and P2 (cols 6:10, IoU 0.4)."""
    ref = np.zeros((10, 10), np.uint16)
    ref[:] = 3
    pred = np.zeros_like(ref)
    pred[:, 0:6] = 1
    pred[:, 6:10] = 2
    # t = 0.5, 0.55: TP 1, FP 1, FN 0 -> 1/2; else 0
    assert dsb_score(pred, ref) == pytest.approx(2 * 0.5 / 10)  # 0.1
    assert f1(pred, ref) == pytest.approx(2 / 3)
    # below 0.5 both pairs pass the threshold, but matching stays one-to-one: still TP 1
    assert f1(pred, ref, iou=0.3) == pytest.approx(2 / 3)
    # AJI: R -> P1 (C 60, U 100), P2 unused (U 40): 60 / 140
    assert aji(pred, ref) == pytest.approx(3 / 7)
    assert aji_plus(pred, ref) == pytest.approx(3 / 7)
    # PQ: SQ 0.6, RQ 1 / (1 + 0.5) = 2/3, PQ 0.4
    assert panoptic_quality_parts(pred, ref) == pytest.approx((0.4, 0.6, 2 / 3))


def test_merged_prediction_by_hand():
    """R1 = cols 0:10, R2 = cols 10:20 (10 x 10 each); one prediction covers both (200 px)."""
    ref = np.zeros((10, 20), np.int64)
    ref[:, 0:10] = 1
    ref[:, 10:20] = 2
    pred = np.full_like(ref, 4)
    # IoU of P with each ref: 100 / 200 = 0.5 exactly, not above 0.5: no match at any DSB threshold
    assert overlap_table(pred, ref).pair_iou.tolist() == [0.5, 0.5]
    assert dsb_score(pred, ref) == 0.0
    assert f1(pred, ref) == 0.0
    assert panoptic_quality_parts(pred, ref) == (0.0, 0.0, 0.0)
    # at 0.45 one ref matches (one-to-one): TP 1, FP 0, FN 1 -> 2/3
    assert f1(pred, ref, iou=0.45) == pytest.approx(2 / 3)
    # original AJI: both refs choose P: C 100 + 100, U 200 + 200 -> 0.5 (P's area counted twice)
    assert aji(pred, ref) == pytest.approx(0.5)
    # AJI+: P pairs with one ref (C 100, U 200), the other ref adds 100 -> 1/3
    assert aji_plus(pred, ref) == pytest.approx(1 / 3)


def test_threshold_is_strict():
    ref = np.zeros((1, 20), np.int32)
    ref[0, 0:10] = 1
    pred = np.zeros_like(ref)
    pred[0, 0:5] = 1  # IoU 5/10 = 0.5 exactly
    assert overlap_table(pred, ref).pair_iou.tolist() == [0.5]
    assert f1(pred, ref, iou=0.5) == 0.0
    assert f1(pred, ref, iou=0.4999) == 1.0
    assert panoptic_quality(pred, ref, iou=0.5) == 0.0
    pred[0, 5] = 1  # IoU 0.6: matched at 0.5 and 0.55, not at 0.6 (0.6 > 0.6 is false)
    assert dsb_score(pred, ref) == pytest.approx(0.2)
    assert dsb_score(pred, ref, thresholds=[0.6]) == 0.0


def test_below_half_uses_optimal_assignment_not_greedy():
    """On one row: R1 = [0, 10), R2 = [10, 20); P1 = [4, 14), P2 = [0, 4).

    IoU(P1, R1) = 6/14 = 0.43, IoU(P1, R2) = 4/16 = 0.25, IoU(P2, R1) = 4/10 = 0.4.
    At t = 0.2 a greedy matcher takes P1-R1 first and ends with 1 match; the optimum is
    P1-R2 + P2-R1: TP 2, F1 1.0. At t = 0.3 only P1-R1 and P2-R1 pass: TP 1, F1 2/4.
    """
    ref = np.zeros((1, 24), np.int32)
    ref[0, 0:10], ref[0, 10:20] = 1, 2
    pred = np.zeros_like(ref)
    pred[0, 4:14], pred[0, 0:4] = 1, 2
    assert f1(pred, ref, iou=0.2) == 1.0
    assert f1(pred, ref, iou=0.3) == pytest.approx(0.5)
    p, r, ious = overlap_table(pred, ref).matched_pairs(0.2)
    assert sorted(zip(p.tolist(), r.tolist())) == [(1, 2), (2, 1)]
    assert sorted(ious.tolist()) == pytest.approx([0.25, 0.4])


def test_below_half_prefers_more_matches_then_iou():
    """R1 = 10 x 10 (rows 0:10, cols 0:10), R2 = rows 0:10 x cols 10:21 (110 px).

    P2 = row 0 of R1 (10 px): IoU(P2, R1) = 10/100 = 0.1. P1 = rows 1:10 of R1 (90 px) plus
    rows 1:3 x cols 10:20 of R2 (20 px): IoU(P1, R1) = 90/120 = 0.75, IoU(P1, R2) = 20/200 = 0.1.
    At t = 0.05 the matching keeps the most matches (P1-R2, P2-R1: TP 2) rather than the single
    best pair; AJI+ maximises total IoU (P1-R1 only).
    """
    ref = np.zeros((10, 21), np.int32)
    ref[:, 0:10], ref[:, 10:21] = 1, 2
    pred = np.zeros_like(ref)
    pred[0, 0:10] = 2
    pred[1:10, 0:10] = 1
    pred[1:3, 10:20] = 1
    assert sorted(overlap_table(pred, ref).pair_iou.tolist()) == pytest.approx([0.1, 0.1, 0.75])
    assert f1(pred, ref, iou=0.05) == 1.0
    assert f1(pred, ref, iou=0.5) == pytest.approx(0.5)  # P1-R1 only: 2 / (2 + 1 + 1)
    # AJI+: P1-R1 (C 90, U 120), P2 unpaired (10), R2 unpaired (110): 90 / 240
    assert aji_plus(pred, ref) == pytest.approx(0.375)
    # AJI: R1 -> P1 (C 90, U 120), R2 -> P1 (C 20, U 200), P2 unused (10): 110 / 330
    assert aji(pred, ref) == pytest.approx(1 / 3)


def test_aji_best_iou_and_ties_go_to_the_lowest_id():
    """On one row. R = [0, 20) (20 px); P3 = [0, 8) + [20, 24) (12 px, inter 8, IoU 8/24 = 1/3);
    P8 = [8, 15) + [30, 31) (8 px, inter 7, IoU 7/21 = 1/3): a tie, R takes P3 (lowest id).
    AJI: C 8, U 24, P8 unused adds 8 -> 8/32 = 0.25 (choosing P8 would give 7/33).
    """
    ref = np.zeros((1, 32), np.int32)
    ref[0, 0:20] = 1
    pred = np.zeros_like(ref)
    pred[0, 0:8], pred[0, 20:24] = 3, 3
    pred[0, 8:15], pred[0, 30] = 8, 8
    assert overlap_table(pred, ref).pair_iou.tolist() == [1 / 3, 1 / 3]
    assert aji(pred, ref) == pytest.approx(0.25)
    swapped = np.select([pred == 3, pred == 8], [8, 3], 0).astype(np.int32)  # now P3 is the 7-px one
    assert aji(swapped, ref) == pytest.approx(7 / 33)


def test_aji_prediction_overlapping_two_references():
    """R1 = [0, 10), R2 = [10, 20); P8 = [0, 5), P3 = [5, 15), P9 = [15, 20).

    IoU(P8, R1) = 5/10, IoU(P3, R1) = IoU(P3, R2) = 5/15, IoU(P9, R2) = 5/10.
    R1 -> P8 (C 5, U 10), R2 -> P9 (C 5, U 10), P3 unused (U 10): 10/30. Without P9, R2 -> P3
    (C 5, U 15) and P3 is used: 10/25.
    """
    ref = np.zeros((1, 20), np.int32)
    ref[0, 0:10], ref[0, 10:20] = 1, 2
    pred = np.zeros_like(ref)
    pred[0, 0:5], pred[0, 5:15], pred[0, 15:20] = 8, 3, 9
    assert aji(pred, ref) == pytest.approx(1 / 3)
    pred[0, 15:20] = 0
    assert aji(pred, ref) == pytest.approx(10 / 25)


def test_empty_maps():
    z = np.zeros((8, 8), np.uint8)
    one = z.copy()
    one[2:4, 2:4] = 7
    for fn in (dsb_score, f1, aji, aji_plus, panoptic_quality):
        assert fn(z, z) == 1.0, fn.__name__
        assert fn(one, z) == 0.0, fn.__name__
        assert fn(z, one) == 0.0, fn.__name__
    assert panoptic_quality_parts(z, z) == (1.0, 1.0, 1.0)
    assert panoptic_quality_parts(z, one) == (0.0, 0.0, 0.0)
    assert overlap_table(z, z).foreground_dice() == 1.0
    assert overlap_table(np.zeros((0, 3), np.int32), np.zeros((0, 3), np.int64)).n_pred == 0


def test_perfect_match_with_relabelled_ids():
    ref = np.zeros((3, 12, 12), np.int64)  # 3D
    ref[0, 1:5, 1:5], ref[1:3, 6:11, 2:9], ref[2, 0:3, 9:12] = 1, 2, 3
    pred = np.select([ref == 1, ref == 2, ref == 3], [900, 17, 4000], 0).astype(np.uint16)
    for fn in (dsb_score, f1, aji, aji_plus, panoptic_quality):
        assert fn(pred, ref) == 1.0


# --------------------------------------------------------------------------------------------
# brute force reference
# --------------------------------------------------------------------------------------------


def _brute_iou(pred: np.ndarray, ref: np.ndarray):
    """All-pairs loop: ids, areas, and the dense intersection and IoU matrices."""
    p_ids = [int(v) for v in np.unique(pred) if v != 0]
    r_ids = [int(v) for v in np.unique(ref) if v != 0]
    inter = np.zeros((len(p_ids), len(r_ids)), np.int64)
    iou = np.zeros((len(p_ids), len(r_ids)))
    pa = [int(np.sum(pred == p)) for p in p_ids]
    ra = [int(np.sum(ref == r)) for r in r_ids]
    for i, p in enumerate(p_ids):
        for j, r in enumerate(r_ids):
            n = int(np.sum((pred == p) & (ref == r)))
            inter[i, j] = n
            iou[i, j] = n / (pa[i] + ra[j] - n) if n else 0.0
    return p_ids, r_ids, np.array(pa), np.array(ra), inter, iou


def _max_matching(adj: np.ndarray) -> int:
    """Maximum bipartite matching size (Kuhn's augmenting paths)."""
    owner = [-1] * adj.shape[1]

    def augment(i: int, seen: set) -> bool:
        for j in np.flatnonzero(adj[i]):
            if j in seen:
                continue
            seen.add(j)
            if owner[j] < 0 or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    return sum(augment(i, set()) for i in range(adj.shape[0]))


def _brute_scores(pred: np.ndarray, ref: np.ndarray, thresholds) -> dict[str, float]:
    p_ids, r_ids, pa, ra, inter, iou = _brute_iou(pred, ref)
    n_p, n_r = len(p_ids), len(r_ids)
    if n_p == 0 and n_r == 0:
        return dict(dsb=1.0, f1=1.0, aji=1.0, aji_plus=1.0, pq=1.0, sq=1.0, rq=1.0)
    if n_p == 0 or n_r == 0:
        return dict(dsb=0.0, f1=0.0, aji=0.0, aji_plus=0.0, pq=0.0, sq=0.0, rq=0.0)
    dsb = np.mean([(tp := _max_matching(iou > t)) / (n_p + n_r - tp) for t in thresholds])
    tp5 = _max_matching(iou > 0.5)
    assert tp5 == int(np.sum(iou > 0.5))  # unique above 0.5
    # original AJI
    c = u = 0
    used = set()
    for j in range(n_r):
        best = -1
        for i in range(n_p):  # ascending ids: strict > keeps the lowest id on ties
            if inter[i, j] > 0 and (best < 0 or iou[i, j] > iou[best, j]):
                best = i
        if best < 0:
            u += ra[j]
        else:
            c += inter[best, j]
            u += pa[best] + ra[j] - inter[best, j]
            used.add(best)
    u += sum(pa[i] for i in range(n_p) if i not in used)
    # AJI+: one-to-one pairing of largest total IoU over the dense matrix
    rows, cols = linear_sum_assignment(iou, maximize=True)
    keep = inter[rows, cols] > 0
    rows, cols = rows[keep], cols[keep]
    c2 = int(inter[rows, cols].sum())
    u2 = int((pa[rows] + ra[cols] - inter[rows, cols]).sum())
    u2 += int(pa.sum() - pa[rows].sum() + ra.sum() - ra[cols].sum())
    matched = iou[iou > 0.5]
    half = tp5 + (n_p - tp5) / 2 + (n_r - tp5) / 2
    sq = float(matched.mean()) if tp5 else 0.0
    return dict(dsb=float(dsb), f1=2 * tp5 / (n_p + n_r), aji=c / u, aji_plus=c2 / u2,
                pq=float(matched.sum()) / half, sq=sq, rq=tp5 / half)


def _random_maps(seed: int, shape=(40, 44), n=9, id_pool=60000):
    """Rectangles painted in turn (later ones cover earlier), random non-consecutive ids."""
    rng = np.random.default_rng(seed)

    def paint(k):
        out = np.zeros(shape, np.int64)
        ids = rng.choice(np.arange(1, id_pool), size=k, replace=False)
        for v in ids:
            lo = [rng.integers(0, s - 3) for s in shape]
            hi = [lo_i + rng.integers(2, max(3, s // 3)) for lo_i, s in zip(lo, shape)]
            out[tuple(slice(a, b) for a, b in zip(lo, hi))] = v
        return out

    ref = paint(n)
    pred = np.roll(ref, tuple(rng.integers(-2, 3, size=len(shape))), axis=tuple(range(len(shape))))
    remap = {int(v): int(w) for v, w in zip(np.unique(pred), rng.choice(np.arange(1, id_pool), np.unique(pred).size, False))}
    remap[0] = 0
    pred = np.vectorize(remap.get)(pred)
    extra = paint(3)
    pred = np.where(extra > 0, extra, pred)
    pred[rng.random(shape) < 0.03] = 0  # speckle
    return pred, ref


THRESHOLDS_MIXED = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.int32])
def test_equals_brute_force(seed, dtype):
    pred, ref = _random_maps(seed)
    pred, ref = pred.astype(dtype), ref.astype(dtype)
    want = _brute_scores(pred, ref, DSB_THRESHOLDS)
    t = overlap_table(pred, ref)
    assert t.dsb_score() == pytest.approx(want["dsb"], abs=1e-12)
    assert t.f1() == pytest.approx(want["f1"], abs=1e-12)
    assert t.aji() == pytest.approx(want["aji"], abs=1e-12)
    assert t.aji_plus() == pytest.approx(want["aji_plus"], abs=1e-12)
    assert t.panoptic_quality_parts() == pytest.approx((want["pq"], want["sq"], want["rq"]), abs=1e-12)
    mixed = _brute_scores(pred, ref, THRESHOLDS_MIXED)
    assert dsb_score(pred, ref, THRESHOLDS_MIXED) == pytest.approx(mixed["dsb"], abs=1e-12)
    for th in (0.05, 0.25):
        p_ids, r_ids, _, _, _, iou = _brute_iou(pred, ref)
        tp = _max_matching(iou > th)
        assert f1(pred, ref, iou=th) == pytest.approx(2 * tp / (len(p_ids) + len(r_ids)), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_equals_brute_force_3d_and_unusual_ids(seed):
    pred, ref = _random_maps(100 + seed, shape=(6, 14, 16), n=7)
    want = _brute_scores(pred, ref, DSB_THRESHOLDS)
    # huge and negative ids take the np.unique path; the scores must not change
    huge = np.where(pred > 0, pred * 10**12, 0).astype(np.int64)
    neg = np.where(ref > 0, -ref, 0).astype(np.int64)
    for p, r in ((pred.astype(np.uint16), ref.astype(np.int64)), (huge, neg)):
        assert dsb_score(p, r) == pytest.approx(want["dsb"], abs=1e-12)
        assert aji(p, r) == pytest.approx(want["aji"], abs=1e-12)
        assert aji_plus(p, r) == pytest.approx(want["aji_plus"], abs=1e-12)
        assert panoptic_quality(p, r) == pytest.approx(want["pq"], abs=1e-12)
    t = overlap_table(huge, neg)
    assert set(t.pred_ids.tolist()) == {int(v) for v in np.unique(huge) if v}
    assert set(t.ref_ids.tolist()) == {int(v) for v in np.unique(neg) if v}


def test_overlap_table_matches_brute_force_pairs():
    pred, ref = _random_maps(7)
    p_ids, r_ids, pa, ra, inter, iou = _brute_iou(pred, ref)
    t = overlap_table(pred.astype(np.uint16), ref)
    assert t.pred_ids.tolist() == p_ids and t.ref_ids.tolist() == r_ids
    assert t.pred_area.tolist() == pa.tolist() and t.ref_area.tolist() == ra.tolist()
    nz = np.argwhere(inter > 0)
    assert list(zip(t.pair_pred.tolist(), t.pair_ref.tolist())) == [tuple(x) for x in nz.tolist()]
    assert t.pair_inter.tolist() == inter[inter > 0].tolist()
    assert np.array_equal(t.pair_iou, iou[inter > 0])


def test_large_id_counts_use_the_sparse_path(monkeypatch):
    """Force the np.unique branch of the pair count and compare with the dense one."""
    import scribmed.metrics.instance as inst

    pred, ref = _random_maps(3)
    dense = overlap_table(pred, ref)
    monkeypatch.setattr(inst, "_DENSE_MIN", 0)
    sparse = overlap_table(np.where(pred > 0, pred + 10**9, 0), ref)
    for name in ("pair_pred", "pair_ref", "pair_inter", "pair_iou", "pred_area", "ref_area"):
        assert np.array_equal(getattr(dense, name), getattr(sparse, name)), name


def test_many_instances_brute_force_permutation_check():
    """AJI+ on a tiny case against an exhaustive search over all one-to-one pairings."""
    pred, ref = _random_maps(11, shape=(16, 16), n=5)
    p_ids, r_ids, pa, ra, inter, iou = _brute_iou(pred, ref)
    best = None
    small, large = (p_ids, r_ids) if len(p_ids) <= len(r_ids) else (r_ids, p_ids)
    for perm in itertools.permutations(range(len(large)), len(small)):
        pairs = [(i, j) if len(p_ids) <= len(r_ids) else (j, i) for i, j in enumerate(perm)]
        pairs = [(i, j) for i, j in pairs if inter[i, j] > 0]
        total = sum(iou[i, j] for i, j in pairs)
        if best is None or total > best[0] + 1e-12:
            best = (total, pairs)
    pairs = best[1]
    c = sum(inter[i, j] for i, j in pairs)
    u = sum(pa[i] + ra[j] - inter[i, j] for i, j in pairs)
    u += pa.sum() - sum(pa[i] for i, _ in pairs) + ra.sum() - sum(ra[j] for _, j in pairs)
    assert aji_plus(pred, ref) == pytest.approx(c / u, abs=1e-12)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_errors():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        overlap_table(a, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="float64"):
        dsb_score(a.astype(np.float64), a)
    with pytest.raises(ValueError, match="float32"):
        f1(a, a.astype(np.float32))
    with pytest.raises(ValueError, match="bool"):
        aji(a.astype(bool), a)
    with pytest.raises(ValueError, match="threshold"):
        f1(a, a, iou=1.5)
    with pytest.raises(ValueError, match="threshold"):
        dsb_score(a, a, thresholds=[0.5, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        dsb_score(a, a, thresholds=[])
