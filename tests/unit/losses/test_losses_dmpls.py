"""Partial CE, soft Dice, mixed pseudo label and the DMPLS objective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import scribmed.losses.dmpls as dmpls_module
from scribmed.losses import (
    DMPLSLoss,
    PartialCrossEntropy,
    SoftDiceLoss,
    mixed_pseudo_label,
    soft_dice_loss,
)

IGNORE = 4


def _scribble(b: int, h: int, w: int, seed: int = 0, frac: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 4, (b, h, w), generator=g)
    keep = torch.rand(b, h, w, generator=g) < frac
    return torch.where(keep, s, torch.full_like(s, IGNORE))


# ---------------------------------------------------------------- partial CE


def test_pce_equals_cross_entropy_on_labelled_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 16, 12)
    s = _scribble(3, 16, 12)
    mask = s != IGNORE
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[mask], s[mask])
    torch.testing.assert_close(PartialCrossEntropy(IGNORE)(logits, s), expected)
    # channel-first target and float dtype (MONAI collation) are accepted
    torch.testing.assert_close(PartialCrossEntropy(IGNORE)(logits, s[:, None].float()), expected)


def test_pce_ignores_unlabelled_pixels() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 8, 8)
    s = _scribble(2, 8, 8, frac=0.3)
    changed = logits.clone()
    changed[(s == IGNORE)[:, None].expand_as(logits)] = torch.randn(int((s == IGNORE).sum()) * 4) * 50
    loss = PartialCrossEntropy(IGNORE)
    torch.testing.assert_close(loss(logits, s), loss(changed, s))
    logits.requires_grad_(True)
    loss(logits, s).backward()
    assert torch.all(logits.grad.permute(0, 2, 3, 1)[s == IGNORE] == 0)


def test_pce_all_unlabelled_is_zero_with_grad() -> None:
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    out = PartialCrossEntropy(IGNORE)(logits, torch.full((2, 8, 8), IGNORE))
    assert out.item() == 0.0 and not math.isnan(out.item())
    out.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_pce_rejects_out_of_range_labels() -> None:
    s = torch.zeros(1, 4, 4, dtype=torch.long)
    s[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        PartialCrossEntropy(IGNORE)(torch.randn(1, 4, 4, 4), s)
    with pytest.raises(ValueError, match="do not match"):
        PartialCrossEntropy(IGNORE)(torch.randn(1, 4, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# ---------------------------------------------------------------- soft Dice


def test_soft_dice_equals_hand_computation() -> None:
    # 2 images x 2 classes x 1x2 pixels, computed in plain Python
    probs = torch.tensor(
        [[[[0.9, 0.2]], [[0.1, 0.8]]], [[[0.6, 0.3]], [[0.4, 0.7]]]], dtype=torch.float64
    )
    target = torch.tensor([[[0, 1]], [[1, 1]]])
    eps = 1e-5
    p = probs.tolist()
    dices = []
    for k in range(2):
        inter = sum(p[b][k][0][j] * (target[b, 0, j].item() == k) for b in range(2) for j in range(2))
        p2 = sum(p[b][k][0][j] ** 2 for b in range(2) for j in range(2))
        t2 = sum(float(target[b, 0, j].item() == k) for b in range(2) for j in range(2))
        dices.append((2 * inter + eps) / (p2 + t2 + eps))
    expected = 1 - sum(dices) / 2
    # class 0: inter .9, p2 .81+.04+.36+.09=1.30, t2 1 -> 1.8/2.3; class 1: inter .8+.4+.7=1.9,
    # p2 .01+.64+.16+.49=1.30, t2 3 -> 3.8/4.3
    assert expected == pytest.approx(1 - (1.8 / 2.3 + 3.8 / 4.3) / 2, abs=1e-5)
    assert SoftDiceLoss(2)(probs, target).item() == pytest.approx(expected, abs=1e-12)


def test_soft_dice_integer_and_onehot_targets_agree_and_batch_is_pooled() -> None:
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(3, 4, 10, 10), 1)
    target = torch.randint(0, 4, (3, 10, 10))
    onehot = F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    d = soft_dice_loss(probs, target)
    torch.testing.assert_close(d, soft_dice_loss(probs, onehot))
    torch.testing.assert_close(d, soft_dice_loss(probs, target[:, None]))
    # pooled over the batch: same as one wide image made by concatenating the batch
    wide = soft_dice_loss(torch.cat(list(probs), -1)[None], torch.cat(list(target), -1)[None])
    torch.testing.assert_close(d, wide)
    perfect = soft_dice_loss(onehot, target)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        SoftDiceLoss(3)(probs, target)


# ---------------------------------------------------------------- pseudo label


def test_mixed_pseudo_label_extremes_and_no_grad() -> None:
    torch.manual_seed(3)
    p1 = torch.softmax(torch.randn(2, 4, 6, 6, requires_grad=True), 1)
    p2 = torch.softmax(torch.randn(2, 4, 6, 6, requires_grad=True), 1)
    pl = mixed_pseudo_label(p1, p2, 0.3)
    assert pl.dtype == torch.long and pl.shape == (2, 6, 6) and not pl.requires_grad
    assert torch.equal(mixed_pseudo_label(p1, p2, 1.0), p1.argmax(1))
    assert torch.equal(mixed_pseudo_label(p1, p2, 0.0), p2.argmax(1))
    assert torch.equal(pl, (0.3 * p1 + 0.7 * p2).argmax(1))


# ---------------------------------------------------------------- DMPLS


def _logits(seed: int, shape: tuple[int, ...] = (2, 4, 12, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g).requires_grad_(True),
        torch.randn(shape, generator=g).requires_grad_(True),
    )


def test_dmpls_total_is_the_documented_combination() -> None:
    y1, y2 = _logits(4)
    s = _scribble(2, 12, 12, seed=4, frac=0.2)
    loss = DMPLSLoss(4, IGNORE, lam=0.5, generator=torch.Generator().manual_seed(0))
    total, parts = loss(y1, y2, s)
    assert total.ndim == 0 and set(parts) == {"pce", "dice", "alpha"}
    assert 0.0 <= parts["alpha"] < 1.0
    pce = PartialCrossEntropy(IGNORE)
    dice = SoftDiceLoss(4)
    p1, p2 = torch.softmax(y1, 1), torch.softmax(y2, 1)
    pl = mixed_pseudo_label(p1, p2, parts["alpha"])
    exp_pce = 0.5 * (pce(y1, s) + pce(y2, s))
    exp_dice = 0.5 * (dice(p1, pl) + dice(p2, pl))
    torch.testing.assert_close(parts["pce"], exp_pce.detach())
    torch.testing.assert_close(parts["dice"], exp_dice.detach())
    torch.testing.assert_close(total, exp_pce + 0.5 * exp_dice)
    assert not parts["pce"].requires_grad and not parts["dice"].requires_grad


def test_alpha_drawn_exactly_once_per_call_from_own_generator() -> None:
    loss = DMPLSLoss(4, IGNORE, generator=torch.Generator().manual_seed(123))
    reference = torch.Generator().manual_seed(123)
    y1, y2 = _logits(5)
    s = _scribble(2, 12, 12, seed=5)
    alphas = []
    for _ in range(3):
        _, parts = loss(y1, y2, s)
        alphas.append(parts["alpha"])
        # exactly one scalar draw: the loss's generator is in the reference's state after one draw
        expected = torch.rand((), generator=reference).item()
        assert parts["alpha"] == pytest.approx(expected, abs=0)
        assert torch.equal(loss.generator.get_state(), reference.get_state())
    assert len(set(alphas)) == 3, "successive iterations draw different alphas"
    torch.rand(1)  # the global RNG is not what drives alpha
    assert loss(y1, y2, s)[1]["alpha"] == pytest.approx(torch.rand((), generator=reference).item(), abs=0)


def test_both_branches_use_one_detached_pseudo_label(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, torch.Tensor]] = []
    real = dmpls_module.mixed_pseudo_label

    def spy(p1: torch.Tensor, p2: torch.Tensor, alpha: float) -> torch.Tensor:
        out = real(p1, p2, alpha)
        calls.append((alpha, out))
        return out

    dice_targets: list[torch.Tensor] = []
    real_dice = SoftDiceLoss.forward

    def dice_spy(self: SoftDiceLoss, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice_targets.append(target)
        return real_dice(self, probs, target)

    monkeypatch.setattr(dmpls_module, "mixed_pseudo_label", spy)
    monkeypatch.setattr(SoftDiceLoss, "forward", dice_spy)
    loss = DMPLSLoss(4, IGNORE, generator=torch.Generator().manual_seed(9))
    y1, y2 = _logits(6)
    _, parts = loss(y1, y2, _scribble(2, 12, 12, seed=6))
    assert len(calls) == 1 and calls[0][0] == parts["alpha"]
    assert len(dice_targets) == 2 and dice_targets[0] is dice_targets[1] is calls[0][1]
    assert not calls[0][1].requires_grad


def _analytic_grad(y: torch.Tensor, s: torch.Tensor, pl: torch.Tensor, lam: float) -> torch.Tensor:
    """d/dy of 0.5 * pCE(y, s) + lam * 0.5 * Dice(softmax(y), pl), pl constant, no autograd."""
    y = y.detach().double()
    p = torch.softmax(y, 1)
    c = y.shape[1]
    mask = (s != IGNORE)[:, None].double()
    n = mask.sum().clamp_min(1)
    onehot_s = F.one_hot(torch.where(s == IGNORE, 0, s), c).permute(0, 3, 1, 2).double()
    g_pce = 0.5 * (p - onehot_s) * mask / n  # CE gradient w.r.t. logits
    t = F.one_hot(pl, c).permute(0, 3, 1, 2).double()
    eps = 1e-5
    inter = (p * t).sum((0, 2, 3)).view(1, c, 1, 1)
    den = ((p * p).sum((0, 2, 3)) + (t * t).sum((0, 2, 3))).view(1, c, 1, 1) + eps
    dd_dp = (2 * t * den - (2 * inter + eps) * 2 * p) / den**2  # d dice_k / d p_k
    g_p = -dd_dp / c * (0.5 * lam)  # loss = 1 - mean_k dice_k
    g_dice = p * (g_p - (p * g_p).sum(1, keepdim=True))  # through the softmax
    return g_pce + g_dice


def test_gradient_matches_analytic_with_fixed_pseudo_label() -> None:
    y1, y2 = _logits(7, (2, 4, 8, 8))
    s = _scribble(2, 8, 8, seed=7, frac=0.3)
    loss = DMPLSLoss(4, IGNORE, lam=0.5, generator=torch.Generator().manual_seed(1))
    total, parts = loss(y1.double(), y2.double(), s)
    total.backward()
    pl = mixed_pseudo_label(torch.softmax(y1, 1), torch.softmax(y2, 1), parts["alpha"])
    torch.testing.assert_close(y1.grad.double(), _analytic_grad(y1, s, pl, 0.5), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(y2.grad.double(), _analytic_grad(y2, s, pl, 0.5), rtol=1e-6, atol=1e-9)


def test_generator_state_round_trips_through_state_dict() -> None:
    torch.manual_seed(0)
    a = DMPLSLoss(4, IGNORE)
    torch.manual_seed(0)
    assert DMPLSLoss(4, IGNORE).draw_alpha() == a.draw_alpha(), "seeded from the global RNG at build"
    state = a.state_dict()
    next_two = [a.draw_alpha(), a.draw_alpha()]
    b = DMPLSLoss(4, IGNORE, generator=torch.Generator().manual_seed(999))
    b.load_state_dict(state)
    assert [b.draw_alpha(), b.draw_alpha()] == next_two
    assert DMPLSLoss(4, IGNORE).manual_seed(5).draw_alpha() == torch.rand((), generator=torch.Generator().manual_seed(5)).item()


def test_dmpls_rejects_mismatched_inputs() -> None:
    loss = DMPLSLoss(4, IGNORE)
    with pytest.raises(ValueError):
        loss(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 4), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError):
        loss(torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError):
        DMPLSLoss(4, IGNORE, lam=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_dmpls_on_cuda() -> None:
    y1, y2 = (t.detach().cuda().requires_grad_(True) for t in _logits(8))
    total, _ = DMPLSLoss(4, IGNORE)(y1, y2, _scribble(2, 12, 12).cuda())
    total.backward()
    assert y1.grad is not None and y1.grad.device.type == "cuda"
