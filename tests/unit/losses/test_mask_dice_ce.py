"""Full-mask Dice + CE: values by hand, MONAI agreement, ignored pixels, per-sample reduction, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from scribmed.losses import MaskDiceCELoss, mask_dice_ce_loss

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 1e-5


def test_values_by_hand():
    # one sample, two classes, two pixels: p1 = 0.5 and 0.75; target [0, 1]
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 1]]])
    ce = (-math.log(0.5) - math.log(0.75)) / 2
    dice = 1 - (2 * 0.75 + EPS) / ((0.5 + 0.75) + 1 + EPS)
    assert mask_dice_ce_loss(logits, target).item() == pytest.approx(dice + ce, rel=1e-12)
    got = MaskDiceCELoss(dice_weight=0.25, ce_weight=2.0)(logits, target[:, None])  # (B, 1, H, W) works too
    assert got.item() == pytest.approx(0.25 * dice + 2.0 * ce, rel=1e-12)


def test_perfect_prediction_is_near_zero():
    target = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    logits = 40.0 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).double()
    assert mask_dice_ce_loss(logits, target).item() < 1e-9


def test_equals_monai_dice_ce():
    monai_losses = pytest.importorskip("monai.losses")
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 6, 5))
    ref = monai_losses.DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(logits, target[:, None])
    torch.testing.assert_close(mask_dice_ce_loss(logits, target), ref)


def test_ignored_pixels_and_empty_samples():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, :, 2:] = 9
    target[1] = 9  # nothing valid in sample 1
    per = mask_dice_ce_loss(logits, target, ignore_index=9, reduction="none")
    assert per[1].item() == 0.0
    ref = mask_dice_ce_loss(logits[:1, :, :, :2], target[:1, :, :2])
    torch.testing.assert_close(per[0], ref)
    torch.testing.assert_close(mask_dice_ce_loss(logits, target, ignore_index=9), ref)  # sample 1 left out
    empty = mask_dice_ce_loss(logits, torch.full((2, 4, 4), 9), ignore_index=9)
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_per_sample_reduction_is_the_single_sample_loss():
    torch.manual_seed(2)
    logits = torch.randn(3, 3, 5, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (3, 5, 4))
    per = mask_dice_ce_loss(logits, target, reduction="none")
    for b in range(3):
        torch.testing.assert_close(per[b], mask_dice_ce_loss(logits[b : b + 1], target[b : b + 1]))
    torch.testing.assert_close(mask_dice_ce_loss(logits, target), per.mean())


def test_gradcheck():
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 3, 4))
    target[1, 0] = 7
    assert torch.autograd.gradcheck(lambda z: mask_dice_ce_loss(z, target, ignore_index=7), (logits,))


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="outside"):
        mask_dice_ce_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 2))
    with pytest.raises(ValueError, match="do not match"):
        mask_dice_ce_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))
