"""WISH's minimum cost over SAM's candidates: hand-computed Dice, argmin, BCE, valid mask, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scribmed.losses import SAMMinCostLoss, sam_min_cost


def _masks() -> torch.Tensor:
    """Three 2x3 candidates: c0 = left column pair, c1 = top row, c2 = everything."""
    c = torch.zeros(1, 3, 2, 3, dtype=torch.bool)
    c[0, 0, :, 0] = True
    c[0, 1, 0, :] = True
    c[0, 2] = True
    return c


def test_hand_computed_dice_costs_on_tiny_masks():
    prob = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # = c0
    costs, index = sam_min_cost(prob, _masks(), cost="dice", from_logits=False, smooth=0.0)
    assert int(index[0]) == 0 and float(costs[0]) == pytest.approx(0.0)
    # against c1 (top row, 3 px): inter 1 -> 1 - 2/(2+3) = 0.6; against c2 (6 px): 1 - 4/8 = 0.5
    c12, i12 = sam_min_cost(prob, _masks()[:, 1:], cost="dice", from_logits=False, smooth=0.0)
    assert int(i12[0]) == 1 and float(c12[0]) == pytest.approx(0.5)
    only_c1, _ = sam_min_cost(prob, _masks()[:, 1:2], cost="dice", from_logits=False, smooth=0.0)
    assert float(only_c1[0]) == pytest.approx(0.6)
    smooth, _ = sam_min_cost(prob, _masks()[:, 1:2], cost="dice", from_logits=False, smooth=1.0)
    assert float(smooth[0]) == pytest.approx(1 - 3 / 6)  # (2*1 + 1) / (2 + 3 + 1)


def test_argmin_picks_the_candidate_equal_to_the_prediction_and_logit_candidates():
    cands = torch.randn(4, 3, 8, 8)
    pick = torch.tensor([2, 0, 1, 2])
    pred = torch.where(cands[torch.arange(4), pick] > 0, 8.0, -8.0)  # confident logits matching one candidate
    for cost in ("dice", "bce", "dice+bce"):
        _, index = sam_min_cost(pred, cands, cost=cost)
        assert torch.equal(index, pick), cost
    bool_index = sam_min_cost(pred, cands > 0)[1]
    float_index = sam_min_cost(pred, (cands > 0).float())[1]
    assert torch.equal(bool_index, pick) and torch.equal(float_index, pick)


def test_bce_and_sum_match_torch():
    logits = torch.randn(2, 5, 5)
    cands = torch.rand(2, 3, 5, 5) > 0.5
    bce, idx = sam_min_cost(logits, cands, cost="bce")
    ref = torch.stack([torch.stack([F.binary_cross_entropy_with_logits(logits[n], cands[n, m].float())
                                    for m in range(3)]) for n in range(2)])
    torch.testing.assert_close(bce, ref.min(1).values)
    assert torch.equal(idx, ref.argmin(1))
    prob_bce, _ = sam_min_cost(torch.sigmoid(logits), cands, cost="bce", from_logits=False)
    torch.testing.assert_close(prob_bce, bce, rtol=1e-4, atol=1e-5)
    dice, _ = sam_min_cost(logits, cands, cost="dice", valid=torch.nn.functional.one_hot(idx, 3).bool())
    both, _ = sam_min_cost(logits, cands, cost="dice+bce", valid=torch.nn.functional.one_hot(idx, 3).bool())
    torch.testing.assert_close(both, dice + bce)


def test_valid_mask_respected_and_rows_without_candidates():
    pred = torch.where(_masks()[:, 0], 9.0, -9.0)  # matches c0
    valid = torch.tensor([[False, True, True]])
    costs, index = sam_min_cost(pred, _masks(), valid=valid)
    assert int(index[0]) in (1, 2) and float(costs[0]) > 0.1
    costs, index = sam_min_cost(pred, _masks(), valid=torch.zeros(1, 3, dtype=torch.bool))
    assert int(index[0]) == -1 and float(costs[0]) == 0.0
    with pytest.raises(ValueError, match="valid"):
        sam_min_cost(pred, _masks(), valid=torch.ones(1, 2, dtype=torch.bool))


def test_gradient_and_module_mean():
    pred = torch.randn(3, 6, 6, requires_grad=True)
    cands = torch.randn(3, 3, 6, 6)
    loss_fn = SAMMinCostLoss()
    loss = loss_fn(pred, cands)
    costs = sam_min_cost(pred, cands)[0].detach()
    assert float(loss.detach()) == pytest.approx(float(costs.mean()))
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0 and torch.isfinite(pred.grad).all()
    # a row with no valid candidate is left out of the mean and gets no gradient
    pred.grad = None
    valid = torch.ones(3, 3, dtype=torch.bool)
    valid[1] = False
    loss = loss_fn(pred, cands, valid)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float(costs[[0, 2]].mean()), rel=1e-5)
    assert pred.grad[1].abs().sum() == 0 and pred.grad[0].abs().sum() > 0
    empty = torch.zeros(0, 6, 6, requires_grad=True)
    zero = loss_fn(empty, torch.zeros(0, 3, 6, 6))
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    zero.backward()
    none_valid = loss_fn(pred, cands, torch.zeros(3, 3, dtype=torch.bool))
    assert float(none_valid.detach()) == 0.0 and none_valid.requires_grad


def test_shape_and_cost_errors():
    with pytest.raises(ValueError, match="cost"):
        SAMMinCostLoss(cost="iou")
    with pytest.raises(ValueError, match="candidates"):
        sam_min_cost(torch.zeros(2, 4, 4), torch.zeros(2, 3, 5, 4))
    with pytest.raises(ValueError, match="pred"):
        sam_min_cost(torch.zeros(4, 4), torch.zeros(1, 3, 4, 4))
    assert math.isfinite(float(sam_min_cost(torch.zeros(1, 4, 4), torch.zeros(1, 3, 4, 4))[0][0]))
