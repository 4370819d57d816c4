"""MONAI's contract for scribmed's metric classes: ``aggregate()`` reduces like ``monai.metrics.DiceMetric``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")

from monai.utils import MetricReduction  # noqa: E402

from scribmed.metrics import DiceMetric, HD95Metric  # noqa: E402

C = 4
REDUCTIONS = [r.value for r in MetricReduction]


def one_hot(labels: torch.Tensor, num_classes: int = C) -> torch.Tensor:
    """``(B, H, W)`` labels -> float one-hot ``(B, C, H, W)``, as MONAI's post-processing gives."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Five random 16x16 one-hot pairs in which every class has voxels in every mask."""
    g = torch.Generator().manual_seed(11)
    pred, ref = (torch.randint(0, C, (5, 16, 16), generator=g) for _ in range(2))
    assert all(len(x[b].unique()) == C for x in (pred, ref) for b in range(5))
    return one_hot(pred), one_hot(ref)


def _both(monai_metric, ours, pred, ref) -> tuple:
    monai_metric(pred, ref)
    ours(pred, ref)
    return monai_metric.aggregate(), ours.aggregate()


def _assert_same(got, expected) -> None:
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_aggregate_equals_monai_dice_metric(batch, reduction, include_background):
    pred, ref = batch
    expected, got = _both(
        monai_metrics.DiceMetric(include_background=include_background, reduction=reduction),
        DiceMetric(include_background=include_background, reduction=reduction),
        pred, ref,
    )
    _assert_same(got, expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_get_not_nans_equals_monai_dice_metric(batch, reduction):
    pred, ref = batch
    expected, got = _both(
        monai_metrics.DiceMetric(include_background=False, reduction=reduction, get_not_nans=True),
        DiceMetric(reduction=MetricReduction(reduction), get_not_nans=True),
        pred, ref,
    )
    assert isinstance(got, tuple) and len(got) == 2
    _assert_same(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0)


def test_aggregate_reduction_argument_overrides_the_constructor(batch):
    pred, ref = batch
    m = DiceMetric()  # "mean"
    m(pred, ref)
    assert m.aggregate().shape == (1,)
    assert m.aggregate("mean_batch").shape == (C - 1,) and m.aggregate("none").shape == (5, C - 1)
    torch.testing.assert_close(m.aggregate(MetricReduction.NONE), m.get_buffer(), rtol=0, atol=0)


def test_empty_reference_is_nan_and_left_out_as_in_monai(batch):
    """``skip`` excludes the empty reference as MONAI's ``ignore_empty=True`` does: equal results."""
    pred, ref = (x.clone() for x in batch)
    ref[1, 2] = 0  # item 1: class 2 has no reference voxel ...
    ref[1, 0] += batch[1][1, 2]  # ... (its voxels become background; still one-hot)
    ours = DiceMetric(empty_policy="skip", get_not_nans=True)
    theirs = monai_metrics.DiceMetric(include_background=False, get_not_nans=True)
    ours(pred, ref)
    theirs(pred, ref)
    buffer = ours.get_buffer()
    assert torch.isnan(buffer).tolist()[1] == [False, True, False] and torch.isnan(buffer).sum() == 1
    assert ours.get_event_buffer()[1, 1].item() == 3  # ref_empty, counted
    for reduction in REDUCTIONS:
        (got, got_n), (expected, expected_n) = ours.aggregate(reduction), theirs.aggregate(reduction)
        if reduction == "none":  # NaN where MONAI has NaN
            assert torch.equal(torch.isnan(got), torch.isnan(expected))
            got, expected = torch.nan_to_num(got), torch.nan_to_num(expected)
        _assert_same(got, expected)
        torch.testing.assert_close(got_n, expected_n, rtol=0, atol=0)
    assert not torch.isnan(ours.aggregate()[0]).any()
    assert ours.summary().excluded == {"1": 0, "2": 1, "3": 0}


def test_mean_batch_is_the_summary_per_class_and_not_nans_its_n():
    """HD95 under ``nan_counted``: the excluded values are NaN, each class's mean is ``per_class``."""
    ref = np.zeros((3, 20, 24), np.int64)
    ref[:, 2:8, 2:9], ref[:, 10:17, 3:10], ref[:, 5:15, 13:22] = 1, 2, 3
    pred = np.roll(ref, 1, axis=2)
    pred[0, :, :12] = np.roll(pred[0, :, :12], 2, axis=0)  # some spread between the items
    pred[1][pred[1] == 2] = 0  # pred_empty: HD95 excluded
    pred[2][pred[2] == 3] = 0
    ref[2][ref[2] == 3] = 0  # both_empty: HD95 0, kept
    m = HD95Metric(num_classes=C, spacing=(1.5, 0.75), reduction="mean_batch", get_not_nans=True)
    m(torch.as_tensor(pred), torch.as_tensor(ref))
    means, not_nans = m.aggregate()
    s = m.summary()
    assert means.tolist() == pytest.approx(list(s.per_class.values()), rel=1e-6)
    assert not_nans.tolist() == list(s.n.values()) == [3, 2, 3]

    # a class with every value excluded: 0 with not_nans 0 (MONAI), None in the summary
    gone = pred.copy()
    gone[gone == 2] = 0
    m.reset()
    m(torch.as_tensor(gone), torch.as_tensor(ref))
    means, not_nans = m.aggregate()
    assert means[1].item() == 0.0 and not_nans[1].item() == 0 and m.summary().per_class["2"] is None


def test_our_metric_in_monai_ignite_metric_handler(batch):
    """In an ignite engine MONAI's handler stores the same value for our Dice as for MONAI's."""
    from ignite.engine import Engine
    from monai.handlers import IgniteMetricHandler

    pred, ref = batch
    engine = Engine(lambda engine, b: b)
    handlers = {
        "ours": IgniteMetricHandler(metric_fn=DiceMetric()),
        "monai": IgniteMetricHandler(metric_fn=monai_metrics.DiceMetric(include_background=False)),
        "ours_per_class": IgniteMetricHandler(metric_fn=DiceMetric(reduction="mean_batch")),
    }
    for name, h in handlers.items():
        h.attach(engine, name)
    engine.run([(pred[:3], ref[:3]), (pred[3:], ref[3:])])
    metrics = engine.state.metrics
    assert isinstance(metrics["ours"], float) and metrics["ours"] == pytest.approx(metrics["monai"], abs=1e-6)
    assert metrics["ours_per_class"].shape == (C - 1,)
    assert engine.state.metric_details["ours"].shape == (5, C - 1)


def test_bad_reduction_and_empty_buffer_raise_value_error(batch):
    with pytest.raises(ValueError, match="median"):
        DiceMetric(reduction="median")
    m = DiceMetric()
    with pytest.raises(ValueError, match="nothing to aggregate"):
        m.aggregate()
    m(*batch)
    with pytest.raises(ValueError, match="median"):
        m.aggregate("median")
