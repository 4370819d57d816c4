"""MixedSupervisionLoss: per-sample routing of the five supervision types, SAM / teacher terms, partial CE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scribmed.data.weak_labels import SUPERVISION_TYPES as DATA_TYPES
from scribmed.data.weak_labels import PointSet, WeakLabel
from scribmed.losses import (
    MixedSupervisionLoss,
    box_projection_loss,
    combine_targets,
    mask_dice_ce_loss,
    partial_cross_entropy,
    supervision_codes,
)
from scribmed.losses.mixed_supervision import (
    SOURCE_SAM,
    SOURCE_TEACHER,
    SUPERVISION_TYPES,
)

pytestmark = pytest.mark.usefixtures("one_thread")

C, H, W, IGNORE = 3, 4, 5, 3
TYPES = ["full", "box", "point", "scribble", "none"]


def _batch(dtype=torch.float64):
    """Five samples, one per type, each with a non-empty target in its own row."""
    torch.manual_seed(0)
    b = len(TYPES)
    logits = torch.randn(b, C, H, W, dtype=dtype)
    label = torch.full((b, H, W), IGNORE)
    label[0] = torch.randint(0, C, (H, W))
    box = torch.zeros(b, C, H, W, dtype=torch.bool)
    box[1, 1, 0:2, 1:4] = True
    box[1, 2, 2:4, 0:2] = True
    points = torch.full((b, H, W), IGNORE)
    points[2, 1, 1], points[2, 3, 4], points[2, 0, 0] = 1, 2, 0
    scribble = torch.full((b, H, W), IGNORE)
    scribble[3, 0, :] = 0
    scribble[3, 2, 1:4] = 1
    scribble[3, 3, 2] = 2
    targets = {"label": label, "box_masks": box, "point_map": points, "scribble": scribble}
    return logits, targets


def _single(kind: str, logits: torch.Tensor, targets: dict, i: int) -> torch.Tensor:
    """The type's own loss on sample ``i`` alone (batch of one)."""
    x = logits[i : i + 1]
    if kind == "full":
        return mask_dice_ce_loss(x, targets["label"][i : i + 1], ignore_index=IGNORE)
    if kind == "box":
        return box_projection_loss(x, targets["box_masks"][i : i + 1])
    key = "point_map" if kind == "point" else "scribble"
    return partial_cross_entropy(x, targets[key][i : i + 1], IGNORE)


def test_supervision_types_match_the_data_package():
    assert SUPERVISION_TYPES == DATA_TYPES


def test_a_batch_of_all_five_types_equals_the_per_sample_losses():
    logits, targets = _batch()
    singles = {kind: _single(kind, logits, targets, i) for i, kind in enumerate(TYPES) if kind != "none"}
    loss_fn = MixedSupervisionLoss(C, IGNORE)
    got = loss_fn(logits, TYPES, targets)
    torch.testing.assert_close(got, sum(singles.values()) / 4)  # "none" has no loss: 4 samples
    assert loss_fn.last == pytest.approx({**{k: float(v) for k, v in singles.items()}, "weak": float(got)})
    weights = {"full": 2.0, "box": 0.5, "scribble": 3.0}  # point keeps 1
    weighted = MixedSupervisionLoss(C, IGNORE, type_weights=weights)(logits, TYPES, targets)
    expected = sum(weights.get(k, 1.0) * v for k, v in singles.items()) / 4
    torch.testing.assert_close(weighted, expected)


def test_routing_is_per_sample_not_per_position():
    logits, targets = _batch()
    loss_fn = MixedSupervisionLoss(C, IGNORE)
    ref = loss_fn(logits, TYPES, targets)
    perm = torch.tensor([4, 2, 0, 3, 1])
    shuffled = {k: v[perm] for k, v in targets.items()}
    torch.testing.assert_close(loss_fn(logits[perm], [TYPES[i] for i in perm], shuffled), ref)
    # integer codes work like the strings
    torch.testing.assert_close(loss_fn(logits, supervision_codes(TYPES), targets), ref)


def test_rows_of_other_types_are_never_read():
    logits, targets = _batch()
    loss_fn = MixedSupervisionLoss(C, IGNORE)
    ref = loss_fn(logits, TYPES, targets)
    garbage = {k: v.clone() for k, v in targets.items()}
    garbage["label"][1:] = 99  # out of range, but not a "full" sample
    garbage["scribble"][:3] = 77
    garbage["box_masks"][[0, 2, 3, 4]] = True
    torch.testing.assert_close(loss_fn(logits, TYPES, garbage), ref)
    # keys of absent types are not needed
    only_full = loss_fn(logits[:1], ["full"], {"label": targets["label"][:1]})
    torch.testing.assert_close(only_full, _single("full", logits, targets, 0))


def test_samples_without_a_target_are_left_out_and_an_empty_batch_is_zero_with_a_graph():
    logits, targets = _batch()
    loss_fn = MixedSupervisionLoss(C, IGNORE)
    empty = {k: v.clone() for k, v in targets.items()}
    empty["scribble"][3] = IGNORE  # the scribble sample has no scribble on this slice
    empty["box_masks"][1] = False  # nor the box sample a box
    got = loss_fn(logits, TYPES, empty)
    expected = (_single("full", logits, targets, 0) + _single("point", logits, targets, 2)) / 2
    torch.testing.assert_close(got, expected)
    assert set(loss_fn.last) == {"full", "point", "weak"}
    x = logits.clone().requires_grad_(True)
    zero = loss_fn(x, ["none"] * 5, {})
    assert zero.item() == 0.0 and zero.requires_grad and not math.isnan(zero.item())
    zero.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_sam_and_teacher_terms_follow_the_precedence():
    logits, targets = _batch()
    sam = torch.full((5, H, W), IGNORE)
    sam[:, :2] = 1  # rows 0-1 everywhere, including pixels the weak labels already hold
    teacher = torch.full((5, H, W), IGNORE)
    teacher[:, :, :3] = 2  # columns 0-2
    loss_fn = MixedSupervisionLoss(C, IGNORE, sam_weight=0.7, teacher_weight=0.2)
    got = loss_fn(logits, TYPES, targets, sam=sam, teacher=teacher)
    weak = MixedSupervisionLoss(C, IGNORE)(logits, TYPES, targets)
    # by hand: the weak pixels of each sample (full: all; point / scribble: their labels; box / none: none)
    weak_px = torch.zeros(5, H, W, dtype=torch.bool)
    weak_px[0] = True
    weak_px[2] = targets["point_map"][2] != IGNORE
    weak_px[3] = targets["scribble"][3] != IGNORE
    sam_own = torch.where(~weak_px & (sam != IGNORE), sam, IGNORE)
    teacher_own = torch.where(~weak_px & (sam == IGNORE) & (teacher != IGNORE), teacher, IGNORE)
    l_sam = partial_cross_entropy(logits, sam_own, IGNORE)
    l_teacher = partial_cross_entropy(logits, teacher_own, IGNORE)
    torch.testing.assert_close(got, weak + 0.7 * l_sam + 0.2 * l_teacher)
    assert loss_fn.last["sam"] == pytest.approx(float(l_sam))
    assert loss_fn.last["teacher"] == pytest.approx(float(l_teacher))
    combined = combine_targets(loss_fn.weak_pixels(TYPES, targets, logits), sam, teacher, IGNORE)
    assert torch.equal(combined.select(SOURCE_SAM), sam_own)
    assert torch.equal(combined.select(SOURCE_TEACHER), teacher_own)
    # defaults are SeSAM's: 1.0 and 0.01
    default = MixedSupervisionLoss(C, IGNORE)(logits, TYPES, targets, sam=sam, teacher=teacher)
    torch.testing.assert_close(default, weak + 1.0 * l_sam + 0.01 * l_teacher)


def test_gradcheck_of_the_whole_objective():
    logits, targets = _batch()
    x = logits.clone().requires_grad_(True)
    sam = torch.full((5, H, W), IGNORE)
    sam[1:, 1] = 2
    teacher = torch.full((5, H, W), IGNORE)
    teacher[4, 3] = 0
    loss_fn = MixedSupervisionLoss(C, IGNORE, sam_weight=0.5, teacher_weight=0.3, check_target=False)
    assert torch.autograd.gradcheck(lambda z: loss_fn(z, TYPES, targets, sam=sam, teacher=teacher), (x,))


def test_contract_errors():
    logits, targets = _batch()
    loss_fn = MixedSupervisionLoss(C, IGNORE)
    with pytest.raises(ValueError, match="'point_map'"):
        loss_fn(logits, TYPES, {k: v for k, v in targets.items() if k != "point_map"})
    with pytest.raises(ValueError, match="unknown supervision"):
        loss_fn(logits, ["full", "boxes", "point", "scribble", "none"], targets)
    with pytest.raises(ValueError, match="4 supervision types"):
        loss_fn(logits, TYPES[:4], targets)
    with pytest.raises(TypeError):
        loss_fn(logits, "full", targets)
    with pytest.raises(ValueError, match="expected logits"):
        loss_fn(logits[:, :2], TYPES, targets)
    with pytest.raises(ValueError, match="unknown supervision type"):
        MixedSupervisionLoss(C, IGNORE, type_weights={"mask": 1.0})


# -- partial CE: the point and scribble loss ---------------------------------------------------


def test_partial_ce_default_is_still_the_pooled_mean():
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    target = torch.full((2, 4, 4), IGNORE)
    target[0, 0, :3] = torch.tensor([0, 1, 2])
    target[1, 2, 2] = 1
    ref = F.cross_entropy(logits, target, ignore_index=IGNORE)  # mean over the 4 labelled pixels
    torch.testing.assert_close(partial_cross_entropy(logits, target, IGNORE), ref)
    per = partial_cross_entropy(logits, target, IGNORE, reduction="none")
    torch.testing.assert_close(per[0], F.cross_entropy(logits[:1], target[:1], ignore_index=IGNORE))
    torch.testing.assert_close(per[1], F.cross_entropy(logits[1:], target[1:], ignore_index=IGNORE))
    target[1] = IGNORE
    assert partial_cross_entropy(logits, target, IGNORE, reduction="none")[1].item() == 0.0


def test_points_use_partial_ce_through_the_point_map():
    weak = WeakLabel("point", (1, H, W), points={0: {1: PointSet([(1, 0)]), 2: PointSet([(4, 3)], [(0, 0)])}})
    point_map = torch.from_numpy(weak.point_map(0, IGNORE))[None]
    logits = torch.zeros(1, C, H, W, dtype=torch.float64)
    logits[0, 1, 0, 1] = math.log(2.0)  # p1 = 2/4 at (x=1, y=0)
    logits[0, 2, 3, 4] = math.log(6.0)  # p2 = 6/8 at (x=4, y=3)
    expected = (-math.log(0.5) - math.log(0.75)) / 2  # negatives are not drawn
    assert partial_cross_entropy(logits, point_map, IGNORE).item() == pytest.approx(expected, rel=1e-12)
    got = MixedSupervisionLoss(C, IGNORE)(logits, ["point"], {"point_map": point_map})
    assert got.item() == pytest.approx(expected, rel=1e-12)
