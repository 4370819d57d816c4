"""Merging SAM's per-class masks and logits into pseudo labels with confidence maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from scribmed.sam.merge import (
    CARDIAC_MERGE_PRIORITY,
    merge_class_masks,
    merge_logits,
    merge_volume_logits,
    merge_volume_masks,
    paint_order,
)


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def _three(shape=(40, 40)):
    """Myo, RV, LV squares that all overlap in the centre."""
    return {2: _box(shape, 5, 30, 5, 30), 1: _box(shape, 15, 35, 15, 35), 3: _box(shape, 10, 25, 10, 25)}


def test_cardiac_priority_lv_over_rv_over_myo():
    masks = _three()
    label = merge_class_masks(masks, CARDIAC_MERGE_PRIORITY, (40, 40))
    assert label.dtype == np.uint8 and label.shape == (40, 40)
    assert label[20, 20] == 3  # all three overlap: LV
    assert label[27, 27] == 1  # RV ∩ Myo: RV
    assert label[7, 7] == 2 and label[33, 33] == 1 and label[0, 0] == 0
    # reversed priority: Myo wins everything it covers
    rev = merge_class_masks(masks, (3, 1, 2))
    assert rev[20, 20] == 2 and rev[27, 27] == 2 and rev[33, 33] == 1


def test_absent_and_unlisted_classes():
    masks = _three()
    assert paint_order([3, 1, 2, 7], (2, 1, 3)) == [2, 1, 3, 7]
    assert paint_order([3, 1], (2, 1, 3, 3)) == [1, 3]  # absent classes skipped
    assert paint_order([3, 1, 2], None) == [1, 2, 3]
    only_lv = merge_class_masks({3: masks[3]}, CARDIAC_MERGE_PRIORITY)  # RV, Myo absent
    assert set(np.unique(only_lv)) == {0, 3}
    masks[7] = _box((40, 40), 0, 12, 0, 12)  # not in priority: painted last, wins its overlap
    label = merge_class_masks(masks, CARDIAC_MERGE_PRIORITY)
    assert label[8, 8] == 7 and label[20, 20] == 3
    assert merge_class_masks({}, CARDIAC_MERGE_PRIORITY, (3, 4)).tolist() == [[0] * 4] * 3


def test_no_pixel_gets_a_class_whose_mask_is_false():
    rng = np.random.default_rng(0)
    for priority in (CARDIAC_MERGE_PRIORITY, None, (3,)):
        masks = {k: rng.random((30, 30)) < 0.4 for k in (1, 2, 3)}
        label = merge_class_masks(masks, priority)
        for k, m in masks.items():
            assert not (label == k)[~m].any()
        assert ((label == 0) == ~np.logical_or.reduce(list(masks.values()))).all()


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        merge_class_masks({})
    with pytest.raises(ValueError, match="disagree"):
        merge_class_masks({1: np.zeros((4, 4), bool)}, None, (5, 5))
    with pytest.raises(ValueError, match="1..255"):
        merge_class_masks({0: np.zeros((4, 4), bool)})
    with pytest.raises(ValueError, match="too small"):
        merge_logits({3: np.zeros((4, 4))}, num_classes=3)


def test_merge_logits_confidence_shape_values_and_threshold():
    rng = np.random.default_rng(1)
    logits = {k: rng.normal(0, 4, (16, 20)).astype(np.float32) for k in (1, 3)}  # Myo absent
    label, conf = merge_logits(logits, CARDIAC_MERGE_PRIORITY, num_classes=4)
    assert label.shape == (16, 20) and label.dtype == np.uint8
    assert conf.shape == (4, 16, 20) and conf.dtype == np.float16
    for k in (1, 3):
        np.testing.assert_allclose(conf[k], expit(logits[k]), atol=1e-3)
    assert (conf[2] == 0).all()
    np.testing.assert_allclose(conf[0], 1 - np.maximum(expit(logits[1]), expit(logits[3])), atol=1e-3)
    expected = merge_class_masks({k: v > 0 for k, v in logits.items()}, CARDIAC_MERGE_PRIORITY)
    np.testing.assert_array_equal(label, expected)
    strict, _ = merge_logits(logits, CARDIAC_MERGE_PRIORITY, threshold=2.0)
    assert (strict > 0).sum() < (label > 0).sum()
    for k in (1, 3):
        assert not (strict == k)[logits[k] <= 2.0].any()
    # default channel count: largest class + 1; no logits at all → background confidence 1
    assert merge_logits(logits)[1].shape == (4, 16, 20)
    lab0, conf0 = merge_logits({}, shape=(3, 3), num_classes=4)
    assert (lab0 == 0).all() and (conf0[0] == 1).all() and (conf0[1:] == 0).all()


def test_confidence_overlap_rule():
    a = np.full((2, 2), 3.0)
    b = np.array([[5.0, 1.0], [-1.0, 3.0]])
    label, _ = merge_logits({1: a, 3: b}, priority=(3, 1), overlap="confidence")
    assert label.tolist() == [[3, 1], [1, 1]]  # tie at (1,1): the class painted later (1)
    prio, _ = merge_logits({1: a, 3: b}, priority=(3, 1))
    assert prio.tolist() == [[1, 1], [1, 1]]


def test_volume_versions():
    slices = [_three((12, 12)), {3: _box((12, 12), 0, 4, 0, 4)}, {}]
    vol = merge_volume_masks(slices, CARDIAC_MERGE_PRIORITY, (12, 12))
    assert vol.shape == (3, 12, 12)
    np.testing.assert_array_equal(vol[0], merge_class_masks(slices[0], CARDIAC_MERGE_PRIORITY))
    assert set(np.unique(vol[1])) == {0, 3} and (vol[2] == 0).all()
    logit_slices = [{k: np.where(m, 4.0, -4.0) for k, m in s.items()} for s in slices]
    label, conf = merge_volume_logits(logit_slices, CARDIAC_MERGE_PRIORITY, (12, 12))
    np.testing.assert_array_equal(label, vol)
    assert conf.shape == (4, 3, 12, 12) and conf.dtype == np.float16
    assert (conf[0, 2] == 1).all() and (conf[1:, 2] == 0).all()
    # whole-volume arrays work directly too
    stacked = {k: np.stack([s.get(k, np.zeros((12, 12), bool)) for s in slices]) for k in (1, 2, 3)}
    direct = merge_class_masks(stacked, CARDIAC_MERGE_PRIORITY)
    np.testing.assert_array_equal(direct, vol)
