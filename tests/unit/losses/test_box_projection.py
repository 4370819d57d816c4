"""Box projection loss (SAMIX / BoxInst): values by hand, class handling, empty boxes, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from scribmed.data.weak_labels import WeakLabel
from scribmed.losses import BoxProjectionLoss, box_masks_from_weak, box_projection_loss

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 1e-5


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _box(shape: tuple[int, int, int, int], b: int, k: int, y0: int, y1: int, x0: int, x1: int,
         masks: torch.Tensor | None = None) -> torch.Tensor:
    """Set class ``k``'s inclusive box rows y0..y1, columns x0..x1 on sample ``b``."""
    masks = torch.zeros(shape, dtype=torch.bool) if masks is None else masks
    masks[b, k, y0 : y1 + 1, x0 : x1 + 1] = True
    return masks


def test_perfect_prediction_inside_the_box_gives_zero():
    masks = _box((1, 3, 6, 6), 0, 1, 1, 3, 2, 4)
    logits = torch.zeros(1, 3, 6, 6)
    logits[0, 1] = torch.where(masks[0, 1], 30.0, 0.0)
    logits[0, 0] = torch.where(masks[0, 1], 0.0, 30.0)
    assert box_projection_loss(logits, masks).item() < 1e-6
    # any mask that touches every row and column of its box projects like the box: a cross
    cross = torch.zeros(6, 6, dtype=torch.bool)
    cross[2, 2:5] = True
    cross[1:4, 3] = True
    logits[0, 1] = torch.where(cross, 30.0, 0.0)
    logits[0, 0] = torch.where(cross, 0.0, 30.0)
    assert box_projection_loss(logits, masks).item() < 1e-6


def test_prediction_outside_the_box_value_by_hand():
    # 4x4, two classes, box of class 1 = rows 0..1, cols 0..1; the prediction's peak at (3, 3)
    masks = _box((1, 2, 4, 4), 0, 1, 0, 1, 0, 1)
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    logits[0, 1] = -2.0
    logits[0, 1, 3, 3] = 2.0
    a, b = _sig(2.0), _sig(-2.0)  # p1 at the peak, p1 elsewhere
    # max over rows per column: [b, b, b, a] against [1, 1, 0, 0]; by symmetry the same along y
    bce = (-math.log(b) - math.log(b) - math.log(1 - b) - math.log(1 - a)) / 4
    dice = 1 - (2 * (b + b) + EPS) / ((3 * b * b + a * a) + 2 + EPS)
    expected = bce + dice  # (bce_x + bce_y) / 2 + (dice_x + dice_y) / 2
    assert box_projection_loss(logits, masks).item() == pytest.approx(expected, rel=1e-12)
    # configurable weights
    got = box_projection_loss(logits, masks, bce_weight=2.0, dice_weight=0.5).item()
    assert got == pytest.approx(2.0 * bce + 0.5 * dice, rel=1e-12)
    assert BoxProjectionLoss(dice_weight=0.0)(logits, masks).item() == pytest.approx(bce, rel=1e-12)


def test_uniform_prediction_value_by_hand():
    masks = _box((1, 2, 4, 4), 0, 1, 1, 2, 1, 2)
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)  # p1 = 0.5 everywhere
    expected = math.log(2) + 1 - (2 * (0.5 * 2) + EPS) / (4 * 0.25 + 2 + EPS)
    assert box_projection_loss(logits, masks).item() == pytest.approx(expected, rel=1e-12)


def test_only_boxed_foreground_classes_contribute_and_samples_average():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    shape = tuple(logits.shape)
    both = _box(shape, 0, 1, 0, 2, 1, 3)
    _box(shape, 0, 3, 3, 5, 4, 6, both)
    only1 = _box(shape, 0, 1, 0, 2, 1, 3)
    only3 = _box(shape, 0, 3, 3, 5, 4, 6)
    l1 = box_projection_loss(logits, only1, reduction="none")[0]
    l3 = box_projection_loss(logits, only3, reduction="none")[0]
    per_sample = box_projection_loss(logits, both, reduction="none")
    torch.testing.assert_close(per_sample[0], (l1 + l3) / 2)
    assert per_sample[1].item() == 0.0  # sample 1 has no box: no loss ...
    torch.testing.assert_close(box_projection_loss(logits, both), per_sample[0])  # ... and is left out
    # the background channel is never read
    with_bg = both.clone()
    with_bg[:, 0] = True
    torch.testing.assert_close(box_projection_loss(logits, with_bg), box_projection_loss(logits, both))
    # the mean over samples with a box
    two = both.clone()
    _box(shape, 1, 2, 1, 1, 0, 6, two)
    none = box_projection_loss(logits, two, reduction="none")
    torch.testing.assert_close(box_projection_loss(logits, two), none.mean())


def test_no_box_gives_zero_with_a_graph_and_no_nan():
    logits = torch.randn(3, 3, 5, 5, requires_grad=True)
    loss = box_projection_loss(logits, torch.zeros(3, 3, 5, 5, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # a single channel (background only) has no class to box
    one = torch.randn(2, 1, 4, 4, requires_grad=True)
    assert box_projection_loss(one, torch.ones(2, 1, 4, 4, dtype=torch.bool)).item() == 0.0


def test_saturated_logits_stay_finite():
    masks = _box((1, 2, 4, 4), 0, 1, 0, 1, 0, 1)
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1] = 1e3  # p1 == 1 in float32 everywhere, also outside the box
    logits.requires_grad_(True)
    loss = box_projection_loss(logits, masks)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() > 40  # log(1 - p) clamped, not -inf


def test_gradcheck_and_gradients_flow_only_through_the_logits():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    masks = _box(tuple(logits.shape), 0, 1, 1, 2, 0, 3)
    _box(tuple(logits.shape), 1, 2, 0, 3, 2, 2, masks)
    _box(tuple(logits.shape), 1, 1, 3, 3, 4, 4, masks)
    assert torch.autograd.gradcheck(lambda z: box_projection_loss(z, masks), (logits,))
    soft = masks.double().requires_grad_(True)
    g_logits, g_masks = torch.autograd.grad(box_projection_loss(logits, soft), [logits, soft], allow_unused=True)
    assert g_masks is None and g_logits.abs().sum() > 0


def test_box_masks_from_weak_label():
    weak = WeakLabel("box", (3, 5, 6), boxes={1: {2: [(0, 1, 2, 3), (5, 4, 5, 4)]}})
    stack = box_masks_from_weak(weak, 1, num_classes=4)
    assert stack.shape == (4, 5, 6) and stack.dtype == torch.bool
    assert torch.equal(stack[2], torch.from_numpy(weak.box_mask(1, 2)))
    assert not stack[[0, 1, 3]].any()
    assert not box_masks_from_weak(weak, 0, 4).any()


def test_shape_and_reduction_errors():
    with pytest.raises(ValueError, match="box_masks"):
        box_projection_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        BoxProjectionLoss(reduction="sum")
