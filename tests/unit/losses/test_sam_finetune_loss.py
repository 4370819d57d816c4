"""SamFinetuneLoss: binary partial CE on scribbles + soft Dice / IoU against a pseudo label."""

from __future__ import annotations

import math

import pytest
import torch

from scribmed.losses.sam_finetune import (
    SamFinetuneLoss,
    scribble_binary_targets,
    soft_binary_dice_loss,
    soft_binary_iou_loss,
)

IGNORE = 4


def _bce(x: float, t: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# a 2x3 slice: RV (1) and LV (3) scribbled, one background-scribble pixel, two unlabeled pixels
SCRIBBLE = torch.tensor([[1, 1, IGNORE], [0, 3, IGNORE]])
LOGITS = torch.tensor(
    [
        [[2.0, -1.0, 5.0], [0.5, -3.0, -7.0]],  # prompt for class 1
        [[-2.0, 0.0, 9.0], [-1.0, 4.0, 3.0]],  # prompt for class 3
    ]
)


def test_binary_targets_one_on_own_scribble_zero_on_other_scribbles():
    target, labelled = scribble_binary_targets(SCRIBBLE, [1, 3], IGNORE)
    assert target.tolist() == [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 0]]]
    assert labelled.tolist() == [[[True, True, False], [True, True, False]]] * 2


def test_ce_value_by_hand_and_unlabeled_ignored():
    loss_fn = SamFinetuneLoss(IGNORE, ce_weight=1.0, dice_weight=0.0)
    got = loss_fn(LOGITS, SCRIBBLE, [1, 3])
    # class 1: pixels (0,0)=1 (0,1)=1 (1,0)=0 (1,1)=0 ; class 3: (0,0)=0 (0,1)=0 (1,0)=0 (1,1)=1
    c1 = (_bce(2.0, 1) + _bce(-1.0, 1) + _bce(0.5, 0) + _bce(-3.0, 0)) / 4
    c3 = (_bce(-2.0, 0) + _bce(0.0, 0) + _bce(-1.0, 0) + _bce(4.0, 1)) / 4
    assert got.item() == pytest.approx((c1 + c3) / 2, rel=1e-6)
    assert loss_fn.last == pytest.approx({"ce": (c1 + c3) / 2}, rel=1e-6)
    # the unlabeled column may hold anything
    changed = LOGITS.clone()
    changed[:, :, 2] = torch.tensor([[-50.0, 50.0], [50.0, -50.0]])
    assert loss_fn(changed, SCRIBBLE, [1, 3]).item() == pytest.approx(got.item(), rel=1e-7)


def test_dice_and_iou_values_by_hand():
    pl = torch.tensor([[1, 1, 1], [0, 3, 3]])  # pseudo label (dense, any values)
    probs = torch.sigmoid(LOGITS)
    dice_only = SamFinetuneLoss(IGNORE, ce_weight=0.0, dice_weight=1.0)
    iou_only = SamFinetuneLoss(IGNORE, ce_weight=0.0, dice_weight=0.0, iou_weight=1.0)
    expected_dice, expected_iou = [], []
    for i, k in enumerate((1, 3)):
        t = (pl == k).float()
        p = probs[i]
        inter, sp, st = float((p * t).sum()), float(p.sum()), float(t.sum())
        expected_dice.append(1 - (2 * inter + 1e-5) / (sp + st + 1e-5))
        expected_iou.append(1 - (inter + 1e-5) / (sp + st - inter + 1e-5))
    assert dice_only(LOGITS, SCRIBBLE, [1, 3], pl).item() == pytest.approx(sum(expected_dice) / 2, rel=1e-6)
    assert iou_only(LOGITS, SCRIBBLE, [1, 3], pl).item() == pytest.approx(sum(expected_iou) / 2, rel=1e-6)
    # an explicit hand value: one pixel, p = sigmoid(0) = 0.5, target 1 -> dice 1 - (1+e)/(1.5+e)
    one = soft_binary_dice_loss(torch.tensor([[[0.5]]]), torch.tensor([[[1.0]]]), eps=0.0)
    assert one.item() == pytest.approx(1 - 1 / 1.5)
    iou = soft_binary_iou_loss(torch.tensor([[[0.5]]]), torch.tensor([[[1.0]]]), eps=0.0)
    assert iou.item() == pytest.approx(0.5)


def test_weighted_sum_default_and_paper():
    pl = torch.tensor([[1, 1, 1], [0, 3, 3]])
    ce = SamFinetuneLoss(IGNORE, 1.0, 0.0)(LOGITS, SCRIBBLE, [1, 3]).item()
    dice = SamFinetuneLoss(IGNORE, 0.0, 1.0)(LOGITS, SCRIBBLE, [1, 3], pl).item()
    iou = SamFinetuneLoss(IGNORE, 0.0, 0.0, 1.0)(LOGITS, SCRIBBLE, [1, 3], pl).item()
    default = SamFinetuneLoss(IGNORE)
    assert (default.ce_weight, default.dice_weight, default.iou_weight) == (1.0, 0.5, 0.0)
    assert default(LOGITS, SCRIBBLE, [1, 3], pl).item() == pytest.approx(ce + 0.5 * dice, rel=1e-6)
    paper = SamFinetuneLoss.paper(IGNORE)
    assert paper(LOGITS, SCRIBBLE, [1, 3], pl).item() == pytest.approx(ce + dice + iou, rel=1e-6)
    assert set(paper.last) == {"ce", "dice", "iou"}


def test_per_prompt_targets_and_channel_dim_accepted():
    pl = torch.tensor([[1, 1, 1], [0, 3, 3]])
    loss_fn = SamFinetuneLoss(IGNORE)
    shared = loss_fn(LOGITS, SCRIBBLE, [1, 3], pl)
    stacked = loss_fn(LOGITS[:, None], SCRIBBLE.expand(2, 2, 3), [1, 3], pl.expand(2, 2, 3))
    assert stacked.item() == pytest.approx(shared.item(), rel=1e-7)


def test_gradient_flows_only_where_supervised():
    logits = LOGITS.clone().requires_grad_(True)
    SamFinetuneLoss(IGNORE, 1.0, 0.0)(logits, SCRIBBLE, [1, 3]).backward()
    assert torch.all(logits.grad[:, :, 2] == 0)  # unlabeled column
    assert torch.all(logits.grad[:, :, :2] != 0)
    logits.grad = None
    SamFinetuneLoss(IGNORE)(logits, SCRIBBLE, [1, 3], torch.tensor([[1, 1, 1], [0, 3, 3]])).backward()
    assert torch.all(logits.grad[:, :, 2] != 0)  # the pseudo-label Dice covers every pixel
    assert torch.isfinite(logits.grad).all()


def test_no_nan_on_empty_inputs():
    loss_fn = SamFinetuneLoss.paper(IGNORE)
    # nothing scribbled and an empty pseudo label for the class
    logits = torch.zeros(1, 4, 4, requires_grad=True)
    out = loss_fn(logits, torch.full((4, 4), IGNORE), [2], torch.zeros(4, 4, dtype=torch.long))
    assert torch.isfinite(out) and out.item() >= 0
    out.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0  # Dice pushes towards empty
    # no prompt at all (K = 0): zero, with a graph
    empty = torch.zeros(0, 4, 4, requires_grad=True)
    out = loss_fn(empty, torch.zeros(4, 4, dtype=torch.long), [], torch.zeros(4, 4, dtype=torch.long))
    assert out.item() == 0.0 and out.requires_grad
    out.backward()


def test_scribbles_alone_give_the_scribble_term():
    """The defaults work without a pseudo label: the loss is the scribble CE, as with dice_weight 0."""
    loss_fn = SamFinetuneLoss(IGNORE)
    out = loss_fn(LOGITS, SCRIBBLE, [1, 3])
    assert set(loss_fn.last) == {"ce"}
    torch.testing.assert_close(out, SamFinetuneLoss(IGNORE, dice_weight=0.0)(LOGITS, SCRIBBLE, [1, 3]))


def test_errors():
    with pytest.raises(ValueError, match="classes"):
        SamFinetuneLoss(IGNORE, 1.0, 0.0)(LOGITS, SCRIBBLE, [1])
    with pytest.raises(ValueError, match="scribble"):
        SamFinetuneLoss(IGNORE, 1.0, 0.0)(LOGITS, SCRIBBLE[:, :2], [1, 3])
    with pytest.raises(ValueError, match="dice_weight"):
        SamFinetuneLoss(IGNORE, dice_weight=-1.0)
