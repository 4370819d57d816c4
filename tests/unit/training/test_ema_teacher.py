"""EMA teacher: update formula, warm-up, buffers, no gradients, confidence threshold, precedence, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from scribmed.training.ema_teacher import (
    EMATeacher,
    SeSAMConfig,
    SeSAMObjective,
    combine_targets,
    confident_labels,
)
from scribmed.losses.mixed_supervision import (
    SOURCE_NONE,
    SOURCE_SAM,
    SOURCE_TEACHER,
    SOURCE_WEAK,
    MixedSupervisionLoss,
)

pytestmark = pytest.mark.usefixtures("one_thread")

IGNORE = 9


def _net(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, classes, 1))


def _shift(net: nn.Module, seed: int) -> None:
    """Move the student away from the teacher: new parameters and new BN statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    net.train()
    net(torch.randn(2, 1, 6, 6, generator=g))  # updates running_mean / running_var / num_batches_tracked


def test_one_update_is_d_t_plus_1_minus_d_s_and_buffers_are_copied():
    student = _net()
    teacher = EMATeacher(student, decay=0.9)
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    _shift(student, 1)
    assert teacher.update(student) == 0.9
    for name, s in student.named_parameters():
        torch.testing.assert_close(teacher.network.get_parameter(name), 0.9 * before[name] + 0.1 * s.detach())
    for name, s in student.named_buffers():  # "copy": BN statistics are the student's
        assert torch.equal(teacher.network.get_buffer(name), s)
    assert int(teacher.num_updates) == 1


def test_exact_values_and_averaged_buffers():
    student = nn.BatchNorm1d(1)
    teacher = EMATeacher(student, decay=0.75, buffers="average")
    with torch.no_grad():
        student.weight.fill_(5.0)  # teacher 1.0
        student.running_mean.fill_(2.0)  # teacher 0.0
        student.num_batches_tracked.fill_(7)
    teacher.update(student)
    assert teacher.network.weight.item() == 0.75 * 1.0 + 0.25 * 5.0 == 2.0
    assert teacher.network.running_mean.item() == 0.5
    assert int(teacher.network.num_batches_tracked) == 7  # integer buffers are copied


def test_default_decay_and_warmup():
    student = _net()
    assert EMATeacher(student).current_decay() == 0.999
    teacher = EMATeacher(student, decay=0.5, warmup=True)
    used = [teacher.update(student) for _ in range(12)]
    assert used[:3] == [1 / 10, 2 / 11, 3 / 12]
    assert used[-1] == 0.5 and all(d == min(0.5, (1 + n) / (10 + n)) for n, d in enumerate(used))
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(student, decay=1.5)


def test_the_teacher_never_receives_gradients_and_stays_in_eval_mode():
    student = _net()
    teacher = EMATeacher(student)
    assert not any(p.requires_grad for p in teacher.network.parameters())
    assert all(p.requires_grad for p in student.parameters())
    teacher.train()
    assert not teacher.network.training
    images = torch.randn(2, 1, 6, 6)
    label, confidence = teacher.pseudo_labels(images)
    assert label.shape == confidence.shape == (2, 6, 6) and label.dtype == torch.long
    assert not label.requires_grad and not confidence.requires_grad
    student.train()
    logits = student(images)
    loss = MixedSupervisionLoss(3, IGNORE, teacher_weight=1.0)(
        logits, ["none", "none"], {}, teacher=teacher.targets(images, IGNORE, threshold=0.0)
    )
    loss.backward()
    assert all(p.grad is None for p in teacher.network.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_confidence_threshold_on_a_hand_built_map():
    # an identity "network": the images are the teacher's logits
    teacher = EMATeacher(nn.Identity())
    assert teacher.threshold == 0.96
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1] = torch.tensor([3.2, 3.1, -4.0, 0.0])  # p1 = sigmoid(d)
    label, confidence = teacher.pseudo_labels(logits)
    assert label.tolist() == [[[1, 1, 0, 0]]]
    expected = [1 / (1 + math.exp(-3.2)), 1 / (1 + math.exp(-3.1)), 1 / (1 + math.exp(-4.0)), 0.5]
    assert confidence[0, 0].tolist() == pytest.approx(expected, rel=1e-6)
    # 0.9608 and 0.9820 pass 0.96; 0.9569 and 0.5 do not
    assert teacher.targets(logits, IGNORE).tolist() == [[[1, IGNORE, 0, IGNORE]]]
    assert teacher.targets(logits, IGNORE, threshold=0.5).tolist() == [[[1, 1, 0, 0]]]
    # the threshold is inclusive
    conf = torch.tensor([[0.96, 0.9599, 1.0]])
    assert confident_labels(torch.tensor([[2, 2, 1]]), conf, 0.96, IGNORE).tolist() == [[2, IGNORE, 1]]


def test_precedence_weak_over_sam_over_teacher_on_a_hand_built_map():
    i = IGNORE
    weak = torch.tensor([[[1, i, i], [i, 0, i], [i, i, i]]])
    sam = torch.tensor([[[2, 2, i], [2, 2, i], [i, i, i]]])
    teacher = torch.tensor([[[0, 0, 0], [i, 1, 1], [i, 2, i]]])
    out = combine_targets(weak, sam, teacher, IGNORE)
    assert out.label.tolist() == [[[1, 2, 0], [2, 0, 1], [i, 2, i]]]
    W, S, T, N = SOURCE_WEAK, SOURCE_SAM, SOURCE_TEACHER, SOURCE_NONE
    assert out.source.tolist() == [[[W, S, T], [S, W, T], [N, T, N]]]
    assert out.select(SOURCE_SAM).tolist() == [[[i, 2, i], [2, i, i], [i, i, i]]]
    assert out.select(SOURCE_TEACHER).tolist() == [[[i, i, 0], [i, i, 1], [i, 2, i]]]
    # missing sources say nothing
    assert combine_targets(None, sam, None, IGNORE).label.tolist() == sam.tolist()
    assert combine_targets(weak[:, None], None, teacher, IGNORE).label.tolist() == [[[1, 0, 0], [i, 0, 1], [i, 2, i]]]
    with pytest.raises(ValueError):
        combine_targets(None, None, None, IGNORE)


def test_state_dict_round_trip_resumes_the_teacher():
    student = _net()
    teacher = EMATeacher(student, decay=0.8, warmup=True)
    for seed in (1, 2):
        _shift(student, seed)
        teacher.update(student)
    buf = io.BytesIO()
    torch.save(teacher.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = EMATeacher(_net(seed=5), decay=0.8, warmup=True)  # another initialisation
    resumed.load_state_dict(state)
    assert int(resumed.num_updates) == 2 and resumed.current_decay() == teacher.current_decay()
    for (k, a), b in zip(teacher.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    _shift(student, 3)
    teacher.update(student)
    resumed.update(student)
    for a, b in zip(teacher.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_wrappers_are_unwrapped_and_other_architectures_refused():
    student = _net()
    teacher = EMATeacher(nn.DataParallel(student))
    assert not any(k.startswith("module.") for k in teacher.state_dict())
    teacher.update(nn.DataParallel(student))
    with pytest.raises(ValueError, match="parameters"):
        teacher.update(_net(classes=2)[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_teacher_follows_a_cuda_student():
    student = _net().cuda()
    teacher = EMATeacher(student)
    assert teacher.device.type == "cuda"
    teacher.update(student)
    label, _ = teacher.pseudo_labels(torch.randn(1, 1, 6, 6))  # CPU images: moved in, results moved back
    assert label.device.type == "cpu"


def test_sesam_objective_defaults_terms_and_checkpoint():
    config = SeSAMConfig()
    assert (config.sam_weight, config.teacher_weight, config.ema_decay, config.confidence) == (1.0, 0.01, 0.999, 0.96)
    assert not config.ema_warmup
    student = _net()
    objective = SeSAMObjective(3, IGNORE, SeSAMConfig(teacher_weight=0.5, confidence=0.4))
    with pytest.raises(RuntimeError, match="bind_student"):
        objective.update_teacher(student)
    objective.bind_student(student)
    torch.manual_seed(7)
    images = torch.randn(2, 1, 6, 6)
    scribble = torch.full((2, 6, 6), IGNORE)
    scribble[0, 2, :] = 1
    sam = torch.full((2, 6, 6), IGNORE)
    sam[:, :, :2] = 2
    student.train()
    logits = student(images)
    targets = {"scribble": scribble}
    got = objective(logits, ["scribble", "none"], targets, sam=sam, images=images)
    ref = MixedSupervisionLoss(3, IGNORE, teacher_weight=0.5)(
        logits, ["scribble", "none"], targets, sam=sam, teacher=objective.teacher.targets(images, IGNORE, 0.4)
    )
    torch.testing.assert_close(got, ref)
    assert set(objective.last) == {"scribble", "weak", "sam", "teacher"}
    got.backward()
    assert objective.update_teacher(student) == 0.999
    state = objective.state_dict()
    assert "teacher.num_updates" in state and any(k.startswith("teacher.network.") for k in state)
    again = SeSAMObjective(3, IGNORE, SeSAMConfig(teacher_weight=0.5, confidence=0.4), student=_net(seed=3))
    again.load_state_dict(state)
    assert torch.equal(again.teacher.network[0].weight, objective.teacher.network[0].weight)
    with pytest.raises(ValueError, match="ema_decay"):
        SeSAMConfig(ema_decay=-0.1)
