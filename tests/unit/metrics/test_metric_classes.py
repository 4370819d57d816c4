"""MONAI metric classes (scribmed.metrics.monai_metrics): values, layouts, spacing, empty masks."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
medpy_binary = pytest.importorskip("medpy.metric.binary")

from scribmed.metrics import (  # noqa: E402
    ASDMetric,
    DiceMetric,
    HD95Metric,
    MetricSummary,
    asd,
    dc,
    evaluate_case,
    hd95,
)
from scribmed.metrics.binary import diagonal  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
NAMES = ["RV", "Myo", "LV"]
C = 4
TOL = 1e-6


def blobs(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int = C) -> np.ndarray:
    """A label volume with a few smooth blobs per class (some touch the array edge)."""
    labels = np.zeros(shape, np.int64)
    for c in range(1, num_classes):
        field = ndimage.gaussian_filter(rng.random(shape), 1.5)
        labels[field > np.quantile(field, 0.8)] = c
    for c in range(1, num_classes):  # every class present
        if not (labels == c).any():
            labels[(0,) * len(shape)] = c
    return labels


def one_hot(labels: np.ndarray, num_classes: int = C, axis: int = 1) -> np.ndarray:
    return np.moveaxis(np.eye(num_classes, dtype=np.uint8)[labels], -1, axis)


@pytest.fixture(scope="module")
def volumes() -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, float]]]:
    rng = np.random.default_rng(7)
    shape = (6, 22, 20)
    ref = np.stack([blobs(rng, shape) for _ in range(3)])
    pred = np.stack([blobs(rng, shape) for _ in range(3)])
    pred[1] = np.where(ndimage.binary_dilation(ref[1] > 0), ref[1], 0)  # one close prediction
    spacing = [(2.5, 1.25, 0.8), (1.0, 1.0, 1.0), (3.0, 0.7, 1.1)]
    return pred, ref, spacing


# --------------------------------------------------------------------------------------------
# import hygiene and API surface
# --------------------------------------------------------------------------------------------


def test_package_import_does_not_load_torch_or_monai():
    code = (
        "import sys\n"
        "import scribmed.metrics\n"
        "from scribmed.metrics import dc, hd95, asd, evaluate_case\n"
        "assert 'DiceMetric' in dir(scribmed.metrics) and 'HD95Metric' in scribmed.metrics.__all__\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lazy_names_resolve_to_the_module_classes():
    import scribmed.metrics as m
    from scribmed.metrics import monai_metrics

    assert m.DiceMetric is monai_metrics.DiceMetric and m.ASDMetric is monai_metrics.ASDMetric
    assert set(["DiceMetric", "HD95Metric", "ASDMetric", "MetricSummary"]) <= set(m.__all__)
    with pytest.raises(AttributeError, match="no attribute"):
        m.NoSuchMetric  # noqa: B018
    from monai.metrics import CumulativeIterationMetric

    assert all(issubclass(k, CumulativeIterationMetric) for k in (DiceMetric, HD95Metric, ASDMetric))


# --------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------


def test_values_equal_functions_and_medpy(volumes):
    pred, ref, spacing = volumes
    metrics = {
        "dice": DiceMetric(num_classes=C, class_names=NAMES),
        "hd95": HD95Metric(num_classes=C, class_names=NAMES),
        "asd": ASDMetric(num_classes=C, class_names=NAMES),
    }
    p_t, r_t = torch.as_tensor(pred[:, None]), torch.as_tensor(ref[:, None])
    got = {k: m(p_t, r_t, spacing=spacing) for k, m in metrics.items()}
    for v in got.values():
        assert v.shape == (3, 3) and v.dtype == torch.float64 and not torch.isnan(v).any()
    for b in range(3):
        for c in range(1, C):
            p, r = pred[b] == c, ref[b] == c
            assert got["dice"][b, c - 1].item() == pytest.approx(dc(p, r), abs=TOL)
            assert got["hd95"][b, c - 1].item() == pytest.approx(hd95(p, r, spacing[b]), abs=TOL)
            assert got["asd"][b, c - 1].item() == pytest.approx(asd(p, r, spacing[b]), abs=TOL)
            assert got["dice"][b, c - 1].item() == pytest.approx(medpy_binary.dc(p, r), abs=TOL)
            assert got["hd95"][b, c - 1].item() == pytest.approx(medpy_binary.hd95(p, r, spacing[b]), abs=TOL)
            assert got["asd"][b, c - 1].item() == pytest.approx(medpy_binary.asd(p, r, spacing[b]), abs=TOL)
    summary = metrics["hd95"].summary()
    assert isinstance(summary, MetricSummary)
    assert list(summary.per_class) == NAMES and summary.n == {n: 3 for n in NAMES} and summary.n_items == 3
    for k, name in enumerate(NAMES):
        assert summary.per_class[name] == pytest.approx(got["hd95"][:, k].mean().item(), abs=1e-12)
    assert summary.mean == pytest.approx(float(np.mean(list(summary.per_class.values()))), abs=1e-12)
    assert summary.units == "mm" and summary.hd95_mode == "medpy" and summary.empty_policy == "nan_counted"
    assert metrics["dice"].summary().units is None
    assert torch.equal(metrics["asd"].get_buffer(), got["asd"])  # MONAI's buffer API holds the raw values


def test_pixels_without_spacing_and_2d(volumes):
    pred, ref, _ = volumes
    p2, r2 = pred[:, 3], ref[:, 3]  # (B, H, W) 2D label maps
    m = HD95Metric(num_classes=C)
    v = m(torch.as_tensor(p2), torch.as_tensor(r2))
    for b in range(3):
        for c in range(1, C):
            assert v[b, c - 1].item() == pytest.approx(medpy_binary.hd95(p2[b] == c, r2[b] == c), abs=TOL)
    assert m.summary().units == "pixels" and list(m.summary().per_class) == ["1", "2", "3"]


def test_one_hot_and_label_map_inputs_agree(volumes):
    pred, ref, spacing = volumes
    pred_t, ref_t = torch.as_tensor(pred), torch.as_tensor(ref)
    oh_pred, oh_ref = torch.as_tensor(one_hot(pred)), torch.as_tensor(one_hot(ref))
    for cls in (DiceMetric, HD95Metric, ASDMetric):
        base = cls(num_classes=C)(pred_t[:, None], ref_t[:, None], spacing=spacing)
        variants = [
            cls()(oh_pred, oh_ref, spacing=spacing),  # num_classes from the channels
            cls(num_classes=C)(oh_pred.float(), ref_t[:, None], spacing=spacing),
            cls(num_classes=C)(oh_pred.bool(), ref_t, spacing=spacing),  # (B, D, H, W) beside a 5D input
            cls()(pred_t[:, None].float(), oh_ref, spacing=spacing),
            cls(num_classes=C, spatial_dims=3)(pred_t, ref_t, spacing=spacing),
            cls(num_classes=C)(pred[:, None], ref[:, None], spacing=np.array(spacing)),  # numpy input
        ]
        for v in variants:
            torch.testing.assert_close(v, base, rtol=0, atol=0)


def test_list_input(volumes):
    pred, ref, spacing = volumes
    from monai.data import MetaTensor

    m_batch, m_list = HD95Metric(num_classes=C), HD95Metric(num_classes=C)
    batch = m_batch(torch.as_tensor(one_hot(pred)), torch.as_tensor(ref[:, None]), spacing=spacing)
    items_pred = [MetaTensor(torch.as_tensor(one_hot(p, axis=0))) for p in pred]  # decollated (C, D, H, W)
    items_ref = [torch.as_tensor(r[None]) for r in ref]  # (1, D, H, W)
    listed = m_list(items_pred, items_ref, spacing=spacing)
    torch.testing.assert_close(listed, batch, rtol=0, atol=0)
    torch.testing.assert_close(m_list.get_buffer(), m_batch.get_buffer(), rtol=0, atol=0)
    assert m_list.summary().as_dict() == m_batch.summary().as_dict()

    # items may differ in shape (different volumes); tuples work as lists
    m = ASDMetric(num_classes=C)
    small_p, small_r = pred[0, :, :10, :12], ref[0, :, :10, :12]
    v = m((torch.as_tensor(pred[2][None]), torch.as_tensor(small_p[None])),
          (torch.as_tensor(ref[2][None]), torch.as_tensor(small_r[None])), spacing=[spacing[2], spacing[0]])
    for c in range(1, C):
        assert v[0, c - 1].item() == pytest.approx(asd(pred[2] == c, ref[2] == c, spacing[2]), abs=TOL)
        if (small_p == c).any() and (small_r == c).any():
            assert v[1, c - 1].item() == pytest.approx(asd(small_p == c, small_r == c, spacing[0]), abs=TOL)


def test_per_item_spacing_and_default(volumes):
    pred, ref, spacing = volumes
    p, r = torch.as_tensor(pred[:, None]), torch.as_tensor(ref[:, None])
    per_item = HD95Metric(num_classes=C)(p, r, spacing=spacing)
    as_tensor = HD95Metric(num_classes=C)(p, r, spacing=torch.tensor(spacing, dtype=torch.float64))
    torch.testing.assert_close(as_tensor, per_item, rtol=0, atol=0)
    for b in range(3):  # one item at a time with its own spacing gives the same row
        single = HD95Metric(num_classes=C)(p[b : b + 1], r[b : b + 1], spacing=spacing[b])
        torch.testing.assert_close(single[0], per_item[b], rtol=0, atol=0)
    assert not torch.equal(per_item[0], HD95Metric(num_classes=C)(p, r)[0])  # spacing matters

    # one tuple for the whole batch == the constructor's default == per-item copies of it
    one = HD95Metric(num_classes=C)(p, r, spacing=spacing[2])
    default = HD95Metric(num_classes=C, spacing=spacing[2])(p, r)
    copies = HD95Metric(num_classes=C)(p, r, spacing=[spacing[2]] * 3)
    torch.testing.assert_close(one, default, rtol=0, atol=0)
    torch.testing.assert_close(copies, default, rtol=0, atol=0)
    # a call's spacing overrides the default; a scalar is isotropic
    torch.testing.assert_close(HD95Metric(num_classes=C, spacing=(9.0, 9.0, 9.0))(p, r, spacing=spacing), per_item)
    iso = HD95Metric(num_classes=C)(p, r, spacing=2.0)
    torch.testing.assert_close(iso, HD95Metric(num_classes=C)(p, r, spacing=(2.0, 2.0, 2.0)), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# empty masks
# --------------------------------------------------------------------------------------------


def empty_cases() -> tuple[np.ndarray, np.ndarray]:
    """Three 2D cases: case 0 all classes fine; case 1 class 1 both empty, class 2 pred empty;
    case 2 class 3 ref empty, class 2 pred empty."""
    ref = np.zeros((3, 20, 24), np.int64)
    ref[:, 2:8, 2:9] = 1
    ref[:, 10:17, 3:10] = 2
    ref[:, 5:15, 13:22] = 3
    pred = np.roll(ref, 1, axis=2)
    ref[1][ref[1] == 1] = 0
    pred[1][pred[1] == 1] = 0  # case 1: class 1 both_empty
    pred[1][pred[1] == 2] = 0  # case 1: class 2 pred_empty
    pred[2][pred[2] == 2] = 0  # case 2: class 2 pred_empty
    ref[2][ref[2] == 3] = 0  # case 2: class 3 ref_empty
    return pred, ref


EXPECTED_EVENTS = {
    "RV": {"both_empty": 1, "pred_empty": 0, "ref_empty": 0},
    "Myo": {"both_empty": 0, "pred_empty": 2, "ref_empty": 0},
    "LV": {"both_empty": 0, "pred_empty": 0, "ref_empty": 1},
}


@pytest.mark.parametrize("policy", ["nan_counted", "worst", "skip"])
def test_empty_events_counted_and_never_nan_averaged(policy):
    pred, ref = empty_cases()
    sp = (1.5, 0.75)
    classes = dict(enumerate(NAMES, 1))
    cases = [evaluate_case(pred[b], ref[b], classes, spacing=sp, empty_policy=policy) for b in range(3)]
    penalty = diagonal(pred.shape[1:], sp)
    for cls, field in ((DiceMetric, "dice"), (HD95Metric, "hd95"), (ASDMetric, "asd")):
        m = cls(num_classes=C, class_names=NAMES, empty_policy=policy)
        values = m(torch.as_tensor(pred), torch.as_tensor(ref), spacing=sp)
        s = m.summary()
        assert s.empty_events == EXPECTED_EVENTS
        assert s.total_events == {"both_empty": 1, "pred_empty": 2, "ref_empty": 1}
        codes = m.get_event_buffer()
        assert codes.tolist() == [[0, 0, 0], [1, 2, 0], [0, 2, 3]]
        # NaN in the buffer exactly where the policy excludes, and it matches evaluate_case
        for b in range(3):
            for k in range(3):
                rec = cases[b].classes[k]
                excluded = rec.excluded or math.isnan(getattr(rec, field))
                assert math.isnan(values[b, k].item()) == excluded, (cls.__name__, policy, b, k)
                if not excluded:
                    assert values[b, k].item() == pytest.approx(getattr(rec, field), abs=TOL)
        nan_per_class = torch.isnan(values).sum(0).tolist()
        assert s.excluded == dict(zip(NAMES, nan_per_class)) and s.n_excluded == sum(nan_per_class)
        assert s.n == {n: 3 - x for n, x in zip(NAMES, nan_per_class)}
        # means: never NaN; None only for a class with nothing left to average
        for k, name in enumerate(NAMES):
            col = values[:, k][~torch.isnan(values[:, k])]
            if col.numel():
                assert s.per_class[name] == pytest.approx(col.mean().item(), abs=1e-12)
            else:
                assert s.per_class[name] is None
        assert s.mean is not None and not math.isnan(s.mean)
        assert s.mean == pytest.approx(np.mean([v for v in s.per_class.values() if v is not None]), abs=1e-12)
        assert "NaN" not in json.dumps(s.as_dict())  # JSON-clean
        # the expected exclusions, policy by policy
        if policy == "skip":
            assert nan_per_class == [1, 2, 1]
        elif policy == "worst":
            assert nan_per_class == [0, 0, 0]
            if field != "dice":
                assert values[1, 1].item() == pytest.approx(penalty) and values[2, 2].item() == pytest.approx(penalty)
        else:
            assert nan_per_class == ([0, 0, 0] if field == "dice" else [0, 2, 1])
        if field == "dice" and policy != "skip":
            assert values[1, 0].item() == 1.0 and values[1, 1].item() == 0.0  # both empty 1, pred empty 0
        if field != "dice" and policy != "skip":
            assert values[1, 0].item() == 0.0  # both empty: distance 0


def test_all_values_of_a_class_excluded_is_reported_not_nan():
    ref = np.zeros((2, 12, 12), np.int64)
    ref[:, 2:6, 2:6] = 1
    ref[:, 7:11, 7:11] = 2
    pred = ref.copy()
    pred[pred == 2] = 0  # class 2 missing in both predictions
    m = HD95Metric(num_classes=3, class_names=["a", "b"])
    m(torch.as_tensor(pred), torch.as_tensor(ref))
    s = m.summary()
    assert s.per_class == {"a": 0.0, "b": None} and s.n == {"a": 2, "b": 0} and s.excluded == {"a": 0, "b": 2}
    assert s.mean == 0.0 and s.empty_events["b"]["pred_empty"] == 2
    assert "n/a" in str(s) and "excluded 2" in str(s)


# --------------------------------------------------------------------------------------------
# conventions
# --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own get_mask_edges deprecation
def test_monai_hd95_mode_equals_evaluate_case_monai_mode(volumes):
    pred, ref, spacing = volumes
    m = HD95Metric(num_classes=C, hd95_mode="monai")
    v = m(torch.as_tensor(pred[:, None]), torch.as_tensor(ref[:, None]), spacing=spacing)
    for b in range(3):
        res = evaluate_case(pred[b], ref[b], [1, 2, 3], spacing=spacing[b], hd95_mode="monai")
        for c in range(1, C):
            assert v[b, c - 1].item() == pytest.approx(res[c].hd95, abs=TOL)
    assert m.summary().hd95_mode == "monai"

    # the docs' worked example: MONAI 12.0, medpy 10.8; MONAI's own function agrees (float32)
    from monai.metrics import compute_hausdorff_distance

    r = np.zeros((12, 24), np.int64)
    r[3:9, 3:9] = 1
    p = r.copy()
    p[4:7, 20] = 1
    monai_mode = HD95Metric(num_classes=2, hd95_mode="monai")(torch.as_tensor(p[None]), torch.as_tensor(r[None]))
    medpy_mode = HD95Metric(num_classes=2)(torch.as_tensor(p[None]), torch.as_tensor(r[None]))
    assert monai_mode.item() == 12.0 and medpy_mode.item() == pytest.approx(10.8, abs=TOL)
    ref_monai = compute_hausdorff_distance(
        torch.as_tensor(one_hot(p[None], 2)), torch.as_tensor(one_hot(r[None], 2)), percentile=95
    )
    assert monai_mode.item() == pytest.approx(ref_monai.item(), abs=1e-4)


def test_include_background_and_class_names():
    rng = np.random.default_rng(3)
    pred, ref = blobs(rng, (16, 18))[None], blobs(rng, (16, 18))[None]
    v = DiceMetric(num_classes=C, include_background=True)(torch.as_tensor(pred), torch.as_tensor(ref))
    assert v.shape == (1, 4) and v[0, 0].item() == pytest.approx(dc(pred[0] == 0, ref[0] == 0), abs=TOL)
    for names in (["bg", *NAMES], dict(zip([1, 2, 3], NAMES)), NAMES):
        m = DiceMetric(num_classes=C, class_names=names)
        m(torch.as_tensor(pred), torch.as_tensor(ref))
        assert list(m.summary().per_class) == NAMES


def test_summary_structure(volumes):
    pred, ref, spacing = volumes
    m = ASDMetric(num_classes=C, class_names=NAMES)
    m(torch.as_tensor(pred[:, None]), torch.as_tensor(ref[:, None]), spacing=spacing)
    s = m.summary()
    assert not isinstance(s, Mapping)  # so ignite/StatsHandler keep it under its own name
    d = s.as_dict()
    assert set(d) == set(s.keys()) >= {"per_class", "mean", "n", "n_items", "empty_events", "excluded"}
    assert s["per_class"] == s.per_class and dict(s)["mean"] == s.mean and json.loads(json.dumps(d)) == d
    with pytest.raises(KeyError):
        s["nope"]  # noqa: B018
    assert m.summary().as_dict() == d


def test_reset_clears_everything(volumes):
    pred, ref, spacing = volumes
    three = one_hot(np.minimum(pred, 2), 3), one_hot(np.minimum(ref, 2), 3)  # a 3-class version
    m = HD95Metric()
    m(torch.as_tensor(one_hot(pred)), torch.as_tensor(one_hot(ref)), spacing=spacing)
    assert len(m) == 3 and m.summary().n_items == 3
    with pytest.raises(ValueError, match="pixels but earlier batches were in mm"):
        m(torch.as_tensor(one_hot(pred)), torch.as_tensor(one_hot(ref)))
    with pytest.raises(ValueError, match="earlier items had 4"):
        m(torch.as_tensor(three[0]), torch.as_tensor(three[1]), spacing=spacing)
    assert len(m) == 3  # failed calls added nothing
    m.reset()
    assert m.get_buffer() is None and m.get_event_buffer() is None and len(m) == 0
    s = m.summary()
    assert s.n_items == 0 and s.per_class == {} and s.mean is None and s.units is None
    with pytest.raises(ValueError, match="nothing to aggregate"):
        m.aggregate()  # as MONAI's metrics: no buffer, no tensor
    # after reset a new round may use another class count and units
    v = m(torch.as_tensor(three[0]), torch.as_tensor(three[1]))
    assert v.shape == (3, 2) and m.summary().units == "pixels" and m.summary().n_items == 3
    assert m.get_event_buffer().shape == (3, 2)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def _lab(*shape: int, value: int = 1) -> torch.Tensor:
    x = torch.zeros(shape, dtype=torch.int64)
    x[..., 1:3, 1:3] = value
    return x


def _ok() -> torch.Tensor:
    """A valid 2D label-map batch (B=2, one channel, 8x8)."""
    return _lab(2, 1, 8, 8)


def _hd(**kw):
    return HD95Metric(num_classes=3, **kw)


BAD_INPUTS = [
    (lambda: _hd(), lambda m: m(_ok(), _lab(2, 1, 8, 9)), "spatial shape"),
    (lambda: _hd(), lambda m: m(_ok(), _lab(3, 1, 8, 8)), "batch size"),
    (lambda: _hd(), lambda m: m(torch.zeros(2, 8), torch.zeros(2, 8)), "expected batch-first"),
    (lambda: _hd(), lambda m: m(_lab(1, 1, 1, 1, 4, 4), _lab(1, 1, 1, 1, 4, 4)), "expected batch-first"),
    (lambda: _hd(spatial_dims=3), lambda m: m(_lab(2, 8, 8), _lab(2, 8, 8)), "3 spatial"),
    (lambda: _hd(), lambda m: m(_lab(2, 5, 8, 8, 8), _lab(2, 1, 8, 8, 8)), "5 channels but num_classes=3"),
    (lambda: _hd(), lambda m: m(_lab(2, 6, 8, 8), _lab(2, 6, 8, 8)), "spatial_dims=3"),
    (lambda: HD95Metric(), lambda m: m(_lab(2, 4, 8, 8), _lab(2, 3, 8, 8)), "4 channels but y has 3"),
    (lambda: HD95Metric(), lambda m: m(_ok(), _ok()), "pass num_classes"),
    (lambda: _hd(), lambda m: m(_lab(2, 1, 8, 8, value=3), _ok()), "num_classes=3"),
    (lambda: _hd(), lambda m: m(_lab(2, 1, 8, 8, value=-1), _ok()), r"\[0, 2\]"),
    (lambda: _hd(), lambda m: m(_ok().float() / 2, _ok()), "non-integer"),
    (lambda: _hd(), lambda m: m(_lab(2, 3, 8, 8, value=2), _ok()), "not binary"),
    (lambda: _hd(), lambda m: m(_ok(), _ok(), spacing=(1.0, 1.0, 1.0)), "has 3 values but the images have 2"),
    (lambda: _hd(spacing=(1.0,)), lambda m: m(_ok(), _ok()), "has 1 values"),
    (lambda: _hd(), lambda m: m(_ok(), _ok(), spacing=[(1.0, 1.0)] * 3), "3 per-item entries but the batch has 2"),
    (lambda: _hd(), lambda m: m(_ok(), _ok(), spacing=[(1.0, 1.0), None]), "mixes None"),
    (lambda: _hd(), lambda m: m(_ok(), _ok(), spacing=(1.0, -1.0)), "positive"),
    (lambda: _hd(), lambda m: m([_lab(1, 8, 8)], _lab(1, 1, 8, 8)), "both lists"),
    (lambda: _hd(), lambda m: m([_lab(1, 8, 8)] * 2, [_lab(1, 8, 8)]), "2 items but y has 1"),
    (lambda: _hd(), lambda m: m([_lab(1, 8, 8)] * 2, [_lab(1, 8, 8)] * 2, spacing=[(1.0, 1.0)] * 3), "3 per-item"),
    (lambda: _hd(), lambda m: m(_ok()), "needs the reference"),
    (lambda: _hd(), lambda m: m("a", "b"), "torch.Tensor or numpy"),
    (lambda: HD95Metric(num_classes=1), None, "num_classes must be an integer >= 2"),
    (lambda: _hd(class_names=["a"]), None, "1 names but 2 classes"),
    (lambda: _hd(class_names=["a", "a"]), None, "unique"),
    (lambda: _hd(class_names={1: "a"}), None, r"no name for class\(es\) \[2\]"),
    (lambda: HD95Metric(spacing=(1.0, 0.0)), None, "positive"),
    (lambda: HD95Metric(hd95_mode="nnunet"), None, "nnunet"),
    (lambda: HD95Metric(empty_policy="ignore"), None, "ignore"),
    (lambda: HD95Metric(spatial_dims=4), None, "spatial_dims"),
    (lambda: HD95Metric(connectivity=0), None, "connectivity"),
    (lambda: HD95Metric(reduction="median"), None, "median"),
]


@pytest.mark.parametrize("make, call, match", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_raises_value_error(make, call, match):
    with pytest.raises(ValueError, match=match):
        m = make()
        call(m)
    if call is not None:
        assert m.get_buffer() is None and m.get_event_buffer() is None  # nothing half-added


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="voxelspacing"):
        HD95Metric(num_classes=3)(_lab(1, 1, 8, 8), _lab(1, 1, 8, 8), voxelspacing=(1.0, 1.0))


# --------------------------------------------------------------------------------------------
# the docs example
# --------------------------------------------------------------------------------------------


def test_docs_monai_evaluator_example_runs():
    text = (REPO / "docs" / "metrics.md").read_text()
    section = text.split("\n## MONAI metric classes\n", 1)
    assert len(section) == 2, "docs/metrics.md lost its 'MONAI metric classes' section"
    body = re.split(r"\n## ", section[1], maxsplit=1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, re.S)
    assert blocks, "the 'MONAI metric classes' section lost its python example"
    scope: dict = {"__name__": "docs_metrics_example"}
    exec(compile(blocks[0], "docs/metrics.md", "exec"), scope)

    names = dict(enumerate(scope["NAMES"], 1))
    results = [
        evaluate_case(c["image"][0].numpy().astype(np.int64), c["label"][0].numpy(), names, spacing=scope["SPACING"])
        for c in scope["cases"]
    ]
    for key in ("dice", "hd95", "asd"):
        summary = scope[key]
        assert isinstance(summary, MetricSummary) and summary.n_items == 4
        for idx, name in names.items():
            vals = [getattr(r[idx], key) for r in results]
            kept = [v for v in vals if not math.isnan(v)]
            assert summary.per_class[name] == pytest.approx(float(np.mean(kept)), abs=1e-9)
            assert summary.n[name] == len(kept)
        assert summary.empty_events["LV"] == {"both_empty": 0, "pred_empty": 1, "ref_empty": 0}
    assert scope["hd95"].excluded == {"RV": 0, "Myo": 0, "LV": 1} and scope["dice"].n_excluded == 0
    assert scope["hd95"].units == "mm"
    state = scope["evaluator"].state
    mean_dice = state.metrics["mean_dice"]  # no Dice excluded, same count per class: the two means agree
    assert isinstance(mean_dice, float) and mean_dice == pytest.approx(scope["dice"].mean, abs=1e-6)
    assert state.best_metric == pytest.approx(mean_dice)
    for key in ("dice", "hd95", "asd"):  # "mean_batch": the summary's per-class means, NaNs left out
        per_class = state.metrics[key]
        assert isinstance(per_class, torch.Tensor) and per_class.shape == (3,)
        assert per_class.tolist() == pytest.approx(list(scope[key].per_class.values()), rel=1e-6)
    details = state.metric_details["hd95"]
    assert details.shape == (4, 3) and torch.isnan(details).tolist()[3] == [False, False, True]
