"""Semantic alignment loss and the SAM-SP objective (DESIGN 4.2 step 4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scribmed.losses.partial_ce import partial_cross_entropy
from scribmed.losses.pseudo_label_dice import soft_dice_loss
from scribmed.losses.samsp import SAMSPLoss
from scribmed.losses.semantic_alignment import (
    SemanticAlignmentLoss,
    class_prototypes,
    semantic_alignment_loss,
)


def _aligned_features(labels: torch.Tensor, dim: int = 8) -> torch.Tensor:
    """Features ``(B, dim, h, w)`` equal to ``e_k`` (one-hot axis k) at pixels of class k."""
    return F.one_hot(labels, dim).permute(0, 3, 1, 2).float()


def _labels() -> torch.Tensor:
    lab = torch.zeros(2, 4, 4, dtype=torch.long)
    lab[:, :2, :2] = 1
    lab[:, 2:, :2] = 2
    lab[:, 2:, 2:] = 3
    return lab


def _manual_loss(features: torch.Tensor, labels: torch.Tensor, k: int, detach: bool = True) -> torch.Tensor:
    """Straightforward per-pixel loop: prototypes per image, foreground pixels as targets."""
    terms = []
    for b in range(features.shape[0]):
        f = F.normalize(features[b].flatten(1), dim=0)  # (D, N)
        src = f.detach() if detach else f
        lab = labels[b].flatten()
        present = [c for c in range(k) if bool((lab == c).any())]
        protos = torch.stack([F.normalize(src[:, lab == c].mean(1), dim=0) for c in present])
        logits = protos @ f  # (P, N)
        for n in range(lab.numel()):
            if lab[n] >= 1:
                terms.append(-torch.log_softmax(logits[:, n], 0)[present.index(int(lab[n]))])
    return torch.stack(terms).mean()


def test_pixels_equal_to_their_prototype_give_the_closed_form_low_loss() -> None:
    labels = _labels()
    feats = _aligned_features(labels)
    loss = semantic_alignment_loss(feats, labels, num_classes=4)
    # cosine 1 to the own prototype, 0 to the three others (all classes present)
    assert loss.item() == pytest.approx(math.log(1 + 3 * math.exp(-1)), abs=1e-6)
    sharp = semantic_alignment_loss(feats, labels, num_classes=4, temperature=0.05)
    assert sharp.item() < 1e-6


def test_shuffled_labels_give_a_higher_loss() -> None:
    torch.manual_seed(0)
    labels = _labels()
    feats = _aligned_features(labels) + 0.05 * torch.randn(2, 8, 4, 4)
    aligned = semantic_alignment_loss(feats, labels, 4)
    perm = torch.randperm(16)
    shuffled = labels.flatten(1)[:, perm].view(2, 4, 4)
    assert not torch.equal(shuffled, labels)
    assert semantic_alignment_loss(feats, shuffled, 4).item() > aligned.item() + 0.1


def test_matches_a_manual_per_pixel_computation_including_absent_classes() -> None:
    torch.manual_seed(1)
    labels = _labels()
    labels[1, 2:, 2:] = 0  # class 3 absent from image 1: masked out of its softmax
    feats = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(semantic_alignment_loss(feats, labels, 4), _manual_loss(feats, labels, 4))


def test_prototypes_are_detached_but_pixel_features_keep_their_gradient() -> None:
    torch.manual_seed(2)
    labels = _labels()
    base = torch.randn(2, 6, 4, 4)
    feats = base.clone().requires_grad_(True)
    semantic_alignment_loss(feats, labels, 4).backward()

    ref = base.clone().requires_grad_(True)
    _manual_loss(ref, labels, 4, detach=True).backward()
    torch.testing.assert_close(feats.grad, ref.grad)
    assert float(feats.grad.abs().sum()) > 0

    through = base.clone().requires_grad_(True)
    _manual_loss(through, labels, 4, detach=False).backward()
    assert not torch.allclose(feats.grad, through.grad, atol=1e-4), "gradient must not flow via prototypes"

    protos, present = class_prototypes(feats, labels, 4)
    assert not protos.requires_grad and bool(present.all())


def test_no_foreground_gives_zero_with_a_graph() -> None:
    feats = torch.randn(2, 6, 4, 4, requires_grad=True)
    loss = SemanticAlignmentLoss(4)(feats, torch.zeros(2, 4, 4, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert float(feats.grad.abs().sum()) == 0.0


def test_background_is_a_target_only_when_asked() -> None:
    torch.manual_seed(3)
    labels = _labels()
    feats = torch.randn(2, 6, 4, 4)
    fg = semantic_alignment_loss(feats, labels, 4, foreground_only=True)
    everything = semantic_alignment_loss(feats, labels, 4, foreground_only=False)
    assert not torch.isclose(fg, everything)
    # background pixels still build a prototype that competes: removing them changes the loss
    no_bg = labels.clone()
    no_bg[labels == 0] = 9
    assert not torch.isclose(fg, semantic_alignment_loss(feats, no_bg, 4))


def test_ignored_pixels_neither_build_prototypes_nor_count() -> None:
    torch.manual_seed(4)
    labels = _labels()
    labels[:, 0, 0] = 255
    feats = torch.randn(2, 6, 4, 4)
    a = semantic_alignment_loss(feats, labels, 4, ignore_index=255)
    changed = feats.clone()
    changed[:, :, 0, 0] = 100.0
    torch.testing.assert_close(a, semantic_alignment_loss(changed, labels, 4, ignore_index=255))


def test_prototypes_are_per_image_and_the_mean_is_over_batch_target_pixels() -> None:
    torch.manual_seed(5)
    labels = _labels()
    labels[1, 0, :] = 3
    feats = torch.randn(2, 6, 4, 4)
    batch = semantic_alignment_loss(feats, labels, 4)
    n = [(labels[b] >= 1).sum().item() for b in range(2)]
    per = [semantic_alignment_loss(feats[b : b + 1], labels[b : b + 1], 4).item() for b in range(2)]
    assert batch.item() == pytest.approx((n[0] * per[0] + n[1] * per[1]) / (n[0] + n[1]), rel=1e-5)


def test_full_resolution_pseudo_label_is_downsampled_by_nearest() -> None:
    torch.manual_seed(6)
    labels = _labels()
    full = labels.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None]  # (B, 1, 64, 64)
    feats = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(
        semantic_alignment_loss(feats, full, 4), semantic_alignment_loss(feats, labels, 4)
    )


def test_samsp_loss_is_the_sum_of_its_parts() -> None:
    torch.manual_seed(7)
    b, k, h, w = 2, 4, 32, 32
    heads = [torch.randn(b, k, h, w, requires_grad=True) for _ in range(3)]
    bottleneck = torch.randn(b, 16, 2, 2, requires_grad=True)
    scribble = torch.full((b, h, w), 4)
    scribble[:, :4] = 0
    scribble[:, 10:12] = 1
    scribble[:, 20:22] = 2
    scribble[:, 30:] = 3
    pseudo = torch.randint(0, k, (b, h, w))
    loss = SAMSPLoss(k, ignore_index=4, align_weight=0.5)
    total, parts = loss((*heads, bottleneck), scribble, pseudo)
    expected = sum(
        partial_cross_entropy(y, scribble, 4) + soft_dice_loss(torch.softmax(y, 1), pseudo) for y in heads
    ) + 0.5 * semantic_alignment_loss(bottleneck, pseudo, k)
    torch.testing.assert_close(total, expected)
    summed = sum(v for key, v in parts.items() if key != "align") + 0.5 * parts["align"]
    torch.testing.assert_close(total.detach(), summed)
    assert set(parts) == {f"{t}_{n}" for t in ("pce", "dice") for n in ("main", "aux", "fused")} | {"align"}
    total.backward()
    assert all(float(t.grad.abs().sum()) > 0 for t in (*heads, bottleneck))
    with pytest.raises(ValueError):
        loss(heads, scribble, pseudo)
