"""S4M's structural distillation: gradients, scale invariance, seeded sampling, foreground share, errors."""

from __future__ import annotations

import pytest
import torch

from scribmed.losses import (
    StructuralDistillationLoss,
    sample_query_pixels,
    structural_distillation_loss,
)


def test_gradient_reaches_the_student_not_the_teacher():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 16, 16, requires_grad=True)
    teacher = torch.randn(2, 8, 8, 8, requires_grad=True)  # other channels, coarser grid: resized
    loss = structural_distillation_loss(student, teacher, num_points=32, generator=gen)
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_zero_when_features_agree_up_to_a_positive_pixel_scale():
    teacher = torch.randn(2, 6, 12, 12)
    scale = torch.rand(2, 1, 12, 12) * 5 + 0.1
    loss = structural_distillation_loss(teacher * scale, teacher, num_points=40,
                                        generator=torch.Generator().manual_seed(1))
    assert float(loss) < 1e-10
    flipped = structural_distillation_loss(-teacher * scale + torch.randn(2, 6, 12, 12), teacher, num_points=40,
                                           generator=torch.Generator().manual_seed(1))
    assert float(flipped) > 1e-3


def test_deterministic_with_a_seeded_generator_and_module_seed():
    s, t = torch.randn(1, 4, 10, 10), torch.randn(1, 3, 10, 10)
    a = structural_distillation_loss(s, t, num_points=16, generator=torch.Generator().manual_seed(7))
    b = structural_distillation_loss(s, t, num_points=16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    m1, m2 = StructuralDistillationLoss(num_points=16, seed=3), StructuralDistillationLoss(num_points=16, seed=3)
    first = m1(s, t)
    assert torch.equal(first, m2(s, t))
    assert not torch.equal(first, m1(s, t))  # the module's generator advances


def test_foreground_sampling_takes_half_the_points_from_the_foreground():
    fg = torch.zeros(2, 20, 20, dtype=torch.bool)
    fg[0, 2:6, 2:6] = True  # 16 px >= 8 wanted: without replacement
    fg[1, 0, 0] = True  # 1 px: with replacement
    idx = sample_query_pixels(2, (20, 20), num_points=16, foreground=fg, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (2, 16)
    flat = fg.reshape(2, -1)
    assert bool(flat[0, idx[0, :8]].all()) and len(set(idx[0, :8].tolist())) == 8
    assert (idx[1, :8] == 0).all()
    none = sample_query_pixels(1, (20, 20), 16, torch.zeros(1, 20, 20, dtype=torch.bool))
    assert len(set(none[0].tolist())) == 16  # no foreground: all uniform, without replacement
    tiny = sample_query_pixels(1, (2, 2), 10)
    assert tiny.shape == (1, 10) and int(tiny.max()) < 4  # fewer pixels than points: with replacement
    s = torch.randn(2, 3, 20, 20, requires_grad=True)
    loss = StructuralDistillationLoss(num_points=16, seed=0)(s, torch.randn(2, 3, 20, 20), fg[:, None])
    loss.backward()
    assert s.grad is not None


def test_shape_and_argument_errors():
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="batch"):
        structural_distillation_loss(s, t[:1])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        structural_distillation_loss(s[0], t)
    with pytest.raises(ValueError, match="foreground"):
        structural_distillation_loss(s, t, foreground=torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="num_points"):
        StructuralDistillationLoss(num_points=0)
    with pytest.raises(ValueError, match="fg_fraction"):
        structural_distillation_loss(s, t, fg_fraction=2.0)
