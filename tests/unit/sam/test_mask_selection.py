"""SeSAM's choice among SAM's candidate masks: statistics, every branch of the rule, ablations, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import EMBED_DIM, fake_backend  # noqa: E402

from scribmed.sam import (
    MaskSelectionConfig,
    MaskSelector,
    gather_masks,
    mask_stats,
    select_masks,
)


def rect(y0: int, y1: int, x0: int, x1: int, hw=(10, 10)) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


REGION = rect(2, 6, 2, 7)  # |W| = 20


def candidates() -> np.ndarray:
    """c0: whole image (cov 1, comp 0.2); c1: W plus 5 px (cov 1, comp 0.8); c2: 8 px of W (cov 0.4, comp 1)."""
    return np.stack([np.ones((10, 10), bool), REGION | rect(6, 7, 2, 7), rect(2, 4, 2, 6)])


def test_coverage_and_compatibility_values():
    cov, comp = mask_stats(candidates(), REGION)
    np.testing.assert_allclose(cov, [1.0, 1.0, 0.4], rtol=1e-6)
    np.testing.assert_allclose(comp, [0.2, 0.8, 1.0], rtol=1e-6)
    assert cov.dtype == np.float32 and cov.shape == (3,)
    # empty W -> coverage 0; empty S -> compatibility 0
    cov, comp = mask_stats(np.stack([np.zeros((10, 10), bool), REGION]), np.zeros((10, 10), bool))
    np.testing.assert_array_equal(cov, [0, 0])
    np.testing.assert_array_equal(comp, [0, 0])
    # logits are thresholded (> threshold)
    logits = np.where(candidates(), 2.0, -2.0)
    np.testing.assert_allclose(mask_stats(logits, REGION)[1], [0.2, 0.8, 1.0], rtol=1e-6)
    assert (mask_stats(logits, REGION, threshold=3.0)[1] == 0).all()


def test_sesam_takes_the_most_compatible_qualifying_mask():
    iou = np.array([0.9, 0.8, 0.1])
    sel = select_masks(candidates(), REGION, iou)
    assert int(sel.index) == 2  # c1 and c2 qualify; c2 is more compatible, despite its low IoU
    np.testing.assert_array_equal(sel.qualified, [False, True, True])
    assert not sel.fallback and sel.rule == "sesam"
    # raise the coverage bar: only c1 qualifies
    assert int(select_masks(candidates(), REGION, iou, min_coverage=0.5).index) == 1


def test_sesam_falls_back_to_the_most_compatible_overall():
    cands = candidates()
    cands[2] = rect(2, 3, 2, 4)  # 2 px of W: cov 0.1 (fails), comp 1
    sel = select_masks(cands, REGION, np.array([0.9, 0.8, 0.1]), min_compatibility=0.9)
    assert not sel.qualified.any() and bool(sel.fallback) and int(sel.index) == 2
    # nothing overlaps W at all: all compatibilities 0 -> IoU breaks the tie
    off = np.stack([rect(7, 10, 0, 10), rect(8, 10, 0, 10), rect(9, 10, 0, 10)])
    assert int(select_masks(off, REGION, np.array([0.2, 0.7, 0.5])).index) == 1


def test_ties_higher_iou_then_lower_index():
    same = np.stack([REGION, REGION, rect(2, 4, 2, 7)])  # comp 1 each; c0 = c1 exactly
    assert int(select_masks(same, REGION, np.array([0.5, 0.9, 0.95])).index) == 2  # all comp 1: IoU decides
    assert int(select_masks(same, REGION, np.array([0.5, 0.9, 0.1])).index) == 1
    assert int(select_masks(same, REGION, np.array([0.7, 0.7, 0.7])).index) == 0  # equal IoU: lower index
    assert int(select_masks(same, REGION).index) == 0  # no IoUs: lower index
    assert int(select_masks(np.zeros((3, 10, 10), bool), REGION, np.array([0.1, 0.3, 0.3])).index) == 1


def test_score_and_random_rules():
    iou = np.array([0.2, 0.9, 0.9])
    assert int(select_masks(candidates(), REGION, iou, rule="score").index) == 1  # first maximum
    with pytest.raises(ValueError, match="iou"):
        select_masks(candidates(), REGION, rule="score")
    batch = np.repeat(candidates()[None], 64, axis=0)
    a = select_masks(batch, REGION, rule="random", seed=3).index
    b = select_masks(batch, REGION, rule="random", seed=3).index
    c = select_masks(batch, REGION, rule="random", seed=4).index
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and set(a.tolist()) == {0, 1, 2}
    selector = MaskSelector(rule="random", seed=3)
    first, second = selector(batch, REGION).index, selector(batch, REGION).index
    np.testing.assert_array_equal(first, a)  # the selector's generator starts at the seed ...
    assert not np.array_equal(first, second)  # ... and advances between calls
    with pytest.raises(ValueError, match="rule"):
        select_masks(candidates(), REGION, rule="best")


def test_batched_rows_match_one_by_one_and_torch_matches_numpy():
    c0 = candidates()
    c1 = c0.copy()
    c1[2] = rect(2, 3, 2, 4)
    c2 = np.stack([REGION, REGION, rect(2, 4, 2, 7)])
    cands = np.stack([c0, c1, c2])  # (K=3, M=3, H, W)
    regions = np.stack([REGION, REGION, REGION])
    iou = np.array([[0.9, 0.8, 0.1], [0.9, 0.8, 0.1], [0.5, 0.9, 0.1]])
    sel = select_masks(cands, regions, iou, min_compatibility=0.9)
    assert sel.index.shape == (3,) and sel.coverage.shape == (3, 3) and sel.index.dtype == np.int64
    for k in range(3):
        one = select_masks(cands[k], regions[k], iou[k], min_compatibility=0.9)
        assert int(one.index) == sel.index[k] and bool(one.fallback) == sel.fallback[k]
    np.testing.assert_array_equal(select_masks(cands, REGION, iou, min_compatibility=0.9).index, sel.index)
    logits = torch.from_numpy(np.where(cands, 1.5, -1.5).astype(np.float32))
    tsel = select_masks(logits, torch.from_numpy(regions), torch.from_numpy(iou), min_compatibility=0.9)
    assert isinstance(tsel.index, torch.Tensor) and tsel.index.dtype == torch.int64
    np.testing.assert_array_equal(tsel.index.numpy(), sel.index)
    np.testing.assert_allclose(tsel.compatibility.numpy(), sel.compatibility, rtol=1e-6)
    chosen = gather_masks(logits, tsel.index)
    assert chosen.shape == (3, 10, 10)
    np.testing.assert_array_equal((chosen > 0).numpy(), cands[np.arange(3), sel.index])
    np.testing.assert_array_equal(gather_masks(cands, sel.index), cands[np.arange(3), sel.index])
    summary = sel.summary()
    assert summary["rows"] == 3 and 0 <= summary["fallback_rate"] <= 1
    with pytest.raises(ValueError, match="regions"):
        select_masks(cands, np.stack([REGION, REGION]))


def test_config_and_selector_on_sam_candidates():
    with pytest.raises(ValueError, match="min_coverage"):
        MaskSelectionConfig(min_coverage=1.5)
    cfg = MaskSelectionConfig(min_coverage=0.2)
    assert MaskSelectionConfig(**cfg.to_dict()) == cfg
    backend = fake_backend()
    emb = torch.randn(1, EMBED_DIM, 64, 64)
    coords = torch.tensor([[[40.0, 50.0]], [[120.0, 100.0]]])
    with torch.no_grad():
        low, iou = backend.decode(emb, coords, torch.ones(2, 1, dtype=torch.int64), multimask_output=True)
        logits = backend.postprocess(low, (48, 64))  # (K=2, 3, H, W)
    regions = np.zeros((2, 48, 64), bool)
    regions[0, 5:15, 5:15] = True
    regions[1, 20:40, 20:50] = True
    chosen, sel = MaskSelector(cfg).choose(logits, regions, iou)
    assert chosen.shape == (2, 48, 64) and sel.index.shape == (2,)
    assert ((0 <= sel.coverage) & (sel.coverage <= 1)).all() and sel.qualified.dtype == torch.bool
