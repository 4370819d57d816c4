"""evaluate_case: medpy values per class, MONAI's HD95 convention, explicit empty-mask policies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from scribmed.data import CARDIAC
from scribmed.metrics import (
    CaseResult,
    EmptyPolicy,
    apply_empty_policy,
    empty_event,
    evaluate_case,
    evaluate_cases,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")

SPACING = (10.0, 1.5, 1.5)


@pytest.fixture(scope="module")
def acdc_pair(acdc_root) -> tuple[np.ndarray, np.ndarray]:
    """(prediction-like, reference) label volumes of one real ACDC frame."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(acdc_root / "ACDC_training_volumes" / "patient002_frame01.h5", "r") as f:
        ref = np.asarray(f["label"][:])
    inplane = np.zeros((3, 3, 3), bool)
    inplane[1] = ndimage.generate_binary_structure(2, 1)
    pred = np.roll(ndimage.grey_dilation(ref, footprint=inplane), 2, axis=2)
    pred[ref.shape[0] // 2 + 1] = ref[ref.shape[0] // 2 + 1]  # one untouched slice
    return pred, ref


@pytest.mark.realdata
@pytest.mark.parametrize("spacing", [None, SPACING])
def test_equals_medpy_on_real_volume(acdc_pair, spacing):
    pred, ref = acdc_pair
    res = evaluate_case(pred, ref, {1: "RV", 2: "Myo", 3: "LV"}, spacing, case_id="p002")
    assert res.case_id == "p002"
    assert res.hd95_units == ("pixels" if spacing is None else "mm")
    assert [r.class_name for r in res] == ["RV", "Myo", "LV"]
    for r in res:
        p, t = pred == r.class_index, ref == r.class_index
        assert r.empty is None and not r.excluded
        assert r.dice == medpy_binary.dc(p, t)
        assert abs(r.hd95 - medpy_binary.hd95(p, t, spacing)) <= 1e-6
        assert abs(r.asd - medpy_binary.asd(p, t, spacing)) <= 1e-6


@pytest.mark.realdata
def test_removed_class_on_real_volume_is_reported(acdc_pair):
    pred, ref = acdc_pair
    pred = np.where(pred == 2, 0, pred)
    res = evaluate_case(pred, ref, CARDIAC, SPACING)
    assert res[2].empty == "pred_empty" and res[2].dice == 0.0 and math.isnan(res[2].hd95)
    assert res.events["pred_empty"] == 1
    worst = evaluate_case(pred, ref, CARDIAC, SPACING, empty_policy="worst")
    assert worst[2].hd95 == pytest.approx(math.sqrt(sum((n * s) ** 2 for n, s in zip(ref.shape, SPACING))))
    assert worst[1].hd95 == res[1].hd95 == medpy_binary.hd95(pred == 1, ref == 1, SPACING)


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_monai_mode_equals_monai(acdc_pair):
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    from monai.networks.utils import one_hot

    dilated, ref = acdc_pair
    dropped = ref.copy()
    dropped[4] = 0  # a missed slice: here the two HD95 conventions differ
    differ = False
    for pred in (dilated, dropped):
        for cls in (1, 2, 3):  # the heart never touches the image border in ACDC
            for mask in (pred == cls, ref == cls):
                idx = np.argwhere(mask)
                assert idx.min(0)[1:].min() > 0 and np.all(idx.max(0)[1:] < np.array(mask.shape[1:]) - 1)
        p = one_hot(torch.as_tensor(pred[None, None].astype(np.int64)), 4)
        r = one_hot(torch.as_tensor(ref[None, None].astype(np.int64)), 4)
        want = metrics.compute_hausdorff_distance(p, r, include_background=False, percentile=95, spacing=SPACING)
        ours = evaluate_case(pred, ref, [1, 2, 3], SPACING, hd95_mode="monai")
        medpy_mode = evaluate_case(pred, ref, [1, 2, 3], SPACING)
        for k, rec in enumerate(ours):
            assert rec.hd95 == pytest.approx(float(want[0, k]), rel=1e-5)  # MONAI works in float32
            assert rec.dice == medpy_mode[rec.class_index].dice and rec.asd == medpy_mode[rec.class_index].asd
        differ |= any(abs(a.hd95 - b.hd95) > 1.0 for a, b in zip(ours, medpy_mode))
    assert differ, "the two conventions should differ on the dropped slice"


def test_monai_mode_is_max_of_directed_percentiles():
    """The worked example of docs/metrics.md: a 3-pixel false positive 12 pixels away."""
    ref = np.zeros((12, 24), np.uint8)
    ref[3:9, 3:9] = 1
    pred = ref.copy()
    pred[4:7, 20] = 1
    medpy_like = evaluate_case(pred, ref, [1])[1].hd95
    monai_like = evaluate_case(pred, ref, [1], hd95_mode="monai")[1].hd95
    assert medpy_like == medpy_binary.hd95(pred, ref) == pytest.approx(10.8)
    assert monai_like == 12.0


def _toy() -> tuple[np.ndarray, np.ndarray]:
    """Class 1 in both, 2 only in ref (pred_empty), 3 only in pred (ref_empty), 4 in neither."""
    pred = np.zeros((6, 20, 30), np.int16)
    ref = np.zeros_like(pred)
    ref[2:4, 3:9, 3:9] = 1
    pred[2:4, 4:9, 3:10] = 1
    ref[1:3, 12:16, 12:18] = 2
    pred[3:5, 14:18, 20:25] = 3
    return pred, ref


def test_empty_events_and_nan_counted_policy():
    pred, ref = _toy()
    res = evaluate_case(pred, ref, [1, 2, 3, 4], spacing=(2.0, 1.0, 1.0))
    assert [r.empty for r in res] == [None, "pred_empty", "ref_empty", "both_empty"]
    assert res.events == {"both_empty": 1, "pred_empty": 1, "ref_empty": 1}
    assert res[1].hd95 == medpy_binary.hd95(pred == 1, ref == 1, (2.0, 1.0, 1.0))
    for k in (2, 3):
        assert res[k].dice == 0.0 and math.isnan(res[k].hd95) and math.isnan(res[k].asd)
        assert not res[k].excluded
    assert (res[4].dice, res[4].hd95, res[4].asd, res[4].excluded) == (1.0, 0.0, 0.0, False)


def test_worst_policy_uses_the_image_diagonal():
    pred, ref = _toy()
    res = evaluate_case(pred, ref, [1, 2, 3, 4], spacing=(2.0, 1.0, 1.0), empty_policy="worst")
    diag = math.sqrt((6 * 2.0) ** 2 + 20**2 + 30**2)
    for k in (2, 3):
        assert res[k].dice == 0.0 and res[k].hd95 == pytest.approx(diag) and res[k].asd == pytest.approx(diag)
    assert (res[4].dice, res[4].hd95) == (1.0, 0.0)
    pix = evaluate_case(pred, ref, [2], empty_policy=EmptyPolicy.WORST)
    assert pix[2].hd95 == pytest.approx(math.sqrt(6**2 + 20**2 + 30**2)) and pix.hd95_units == "pixels"


def test_skip_policy_excludes_but_keeps_the_event():
    pred, ref = _toy()
    res = evaluate_case(pred, ref, [1, 2, 3, 4], empty_policy="skip")
    assert [r.excluded for r in res] == [False, True, True, True]
    assert [r.empty for r in res] == [None, "pred_empty", "ref_empty", "both_empty"]


def test_policy_function_and_events():
    assert empty_event(False, False) is None
    assert empty_event(True, True) == "both_empty"
    assert empty_event(True, False) == "pred_empty"
    assert empty_event(False, True) == "ref_empty"
    assert apply_empty_policy("pred_empty", "worst", 7.5) == (0.0, 7.5, 7.5, False)
    dice, h, a, excluded = apply_empty_policy("ref_empty", EmptyPolicy.NAN_COUNTED, 7.5)
    assert dice == 0.0 and math.isnan(h) and math.isnan(a) and not excluded
    with pytest.raises(ValueError):
        apply_empty_policy("nothing", "worst", 1.0)
    with pytest.raises(ValueError):
        apply_empty_policy("both_empty", "zero", 1.0)


def test_class_arguments_connectivity_and_2d():
    pred, ref = _toy()
    by_map = evaluate_case(pred, ref, CARDIAC)  # ClassMap: its foreground classes and names
    assert [(r.class_index, r.class_name) for r in by_map] == [(1, "RV"), (2, "Myo"), (3, "LV")]
    assert evaluate_case(pred, ref, [1])[1].class_name == "1"
    c3 = evaluate_case(pred, ref, [1], connectivity=3)
    assert c3.connectivity == 3
    assert c3[1].hd95 == medpy_binary.hd95(pred == 1, ref == 1, None, 3)
    sl = evaluate_case(pred[2], ref[2], [1], spacing=(1.5, 1.5))  # one 2D slice
    assert sl[1].hd95 == pytest.approx(medpy_binary.hd95(pred[2] == 1, ref[2] == 1, (1.5, 1.5)), abs=1e-6)
    bg = evaluate_case(pred, ref, [0])  # background works too (label 0)
    assert bg[0].dice == medpy_binary.dc(pred == 0, ref == 0)
    with pytest.raises(KeyError):
        by_map[7]


def test_float_labels_and_invalid_input():
    pred, ref = _toy()
    res = evaluate_case(pred.astype(np.float32), ref, [1])
    assert res[1].dice == evaluate_case(pred, ref, [1])[1].dice
    with pytest.raises(ValueError, match="same shape"):
        evaluate_case(pred, ref[:3], [1])
    with pytest.raises(ValueError, match="integer"):
        evaluate_case(pred + 0.5, ref, [1])
    with pytest.raises(ValueError):
        evaluate_case(pred, ref, [1], hd95_mode="scipy")
    with pytest.raises(ValueError):
        evaluate_case(pred, ref, [1], empty_policy="zero")
    with pytest.raises(ValueError):
        evaluate_case(pred, ref, [])


def test_evaluate_cases_from_a_generator():
    pred, ref = _toy()
    items = ((f"c{i}", pred, ref, (2.0, 1.0, 1.0)) for i in range(3))
    out = evaluate_cases(items, [1, 2], progress=True)
    assert [c.case_id for c in out] == ["c0", "c1", "c2"]
    assert all(isinstance(c, CaseResult) and c.hd95_units == "mm" for c in out)


def test_class_boxes_equal_find_objects_over_the_whole_volume():
    from scribmed.metrics.evaluator import _class_boxes

    rng = np.random.default_rng(3)
    for shape in ((7, 30, 25), (40, 33), (50,), (4, 6, 5, 7)):
        labels = np.zeros(shape, np.uint8)
        inner = tuple(slice(int(rng.integers(0, n // 2)), int(rng.integers(n // 2 + 1, n + 1))) for n in shape)
        labels[inner] = rng.integers(0, 4, labels[inner].shape)
        found = ndimage.find_objects(labels, max_label=5)
        boxes = _class_boxes(labels, [0, 1, 2, 3, 5])
        for c in (1, 2, 3, 5):
            assert boxes[c] == (found[c - 1] if c - 1 < len(found) else None), (shape, c)
        zero = ndimage.find_objects((labels == 0).view(np.uint8), max_label=1)
        assert boxes[0] == (zero[0] if zero else None)
    assert _class_boxes(np.zeros((3, 4), np.uint8), [1, 2]) == {1: None, 2: None}
