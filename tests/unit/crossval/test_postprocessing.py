"""nnU-Net's post-processing rule on synthetic pooled out-of-fold cases."""

from __future__ import annotations

import numpy as np
import pytest

from scribmed.crossval.postprocessing import PostprocessingPlan, decide_postprocessing
from scribmed.metrics import evaluate_case

CLASSES = {1: "organ", 2: "vessel"}


def _reference() -> np.ndarray:
    ref = np.zeros((2, 32, 32), dtype=np.uint8)
    ref[:, 4:12, 4:12] = 1  # one organ
    ref[:, 4:10, 20:26] = 2  # a class with two true components of different sizes
    ref[:, 20:24, 20:24] = 2
    return ref


def _cases(pred: np.ndarray, ref: np.ndarray, n: int = 3):
    return [(f"case{i}", pred, ref, (5.0, 1.0, 1.0)) for i in range(n)]


def test_a_spurious_blob_far_from_the_organ_turns_its_class_step_on():
    ref = _reference()
    pred = ref.copy()
    pred[:, 27:30, 2:5] = 1  # spurious organ blob in the corner
    decision = decide_postprocessing(_cases(pred, ref), CLASSES, progress=False)
    # all foreground as one region would drop the vessel's smaller true component (and the vessel's Dice)
    region, organ, vessel = decision.steps
    assert not region.applied and region.classes_worse == ("vessel",)
    assert organ.applied and organ.after == 1.0 > organ.before
    assert not vessel.applied and vessel.after < vessel.before  # removal would hurt: two true components
    assert decision.plan == PostprocessingPlan((1, 2), False, (1,))
    # the after-results are the scores of the post-processed predictions, as a fold's evaluation gives them
    want = evaluate_case(decision.plan.apply(pred), ref, CLASSES, (5.0, 1.0, 1.0), case_id="case0")
    assert decision.after[0] == want
    assert decision.before[0] == evaluate_case(pred, ref, CLASSES, (5.0, 1.0, 1.0), case_id="case0")


def test_the_region_step_is_kept_when_it_helps_and_lowers_no_class_then_classes_start_from_it():
    ref = np.zeros((2, 32, 32), dtype=np.uint8)
    ref[:, 4:12, 4:12] = 1
    ref[:, 4:12, 12:16] = 2  # touches the organ: one foreground region
    pred = ref.copy()
    pred[:, 26:29, 26:29] = 2  # a spurious blob of class 2, apart from the foreground
    decision = decide_postprocessing(_cases(pred, ref), CLASSES, progress=False)
    region, organ, vessel = decision.steps
    assert region.applied and region.after > region.before
    # on the region step's result nothing is left to remove: equal Dice keeps nothing (strict rule)
    assert not organ.applied and not vessel.applied and vessel.before == vessel.after == 1.0
    assert decision.plan == PostprocessingPlan((1, 2), True, ())
    assert all(r.dice == 1.0 for case in decision.after for r in case)


def test_the_region_step_that_raises_the_mean_but_lowers_one_class_is_not_kept():
    ref = np.zeros((2, 32, 32), dtype=np.uint8)
    ref[:, 4:12, 4:12] = 1
    ref[:, 4:12, 12:16] = 2  # touches the organ
    ref[:, 28:30, 28:30] = 2  # a small true component of class 2 apart
    pred = ref.copy()
    pred[:, 20:26, 0:5] = 1  # a large spurious organ blob
    decision = decide_postprocessing(_cases(pred, ref), CLASSES, progress=False)
    region, organ, vessel = decision.steps
    assert region.after > region.before and region.classes_worse == ("vessel",) and not region.applied
    assert organ.applied and not vessel.applied
    assert decision.plan == PostprocessingPlan((1, 2), False, (1,))


def test_nothing_to_remove_keeps_nothing_and_the_results_are_unchanged():
    ref = _reference()
    decision = decide_postprocessing(_cases(ref.copy(), ref), CLASSES, progress=False)
    assert decision.plan.is_empty and not any(s.applied for s in decision.steps)
    assert decision.after == decision.before
    assert "no post-processing" in decision.plan.describe(CLASSES)


def test_the_decision_is_pooled_over_cases_not_taken_case_by_case():
    """Removal helps one case and ruins three: pooled, the organ's step is off."""
    ref = _reference()
    helped = ref.copy()
    helped[:, 27:30, 2:5] = 1
    hurt = np.zeros_like(ref)  # half the organ, and a larger wrong blob far off: the largest is the wrong one
    hurt[:, 4:12, 4:8] = 1
    hurt[:, 26:31, 0:12] = 1
    hurt[ref == 2] = 2
    cases = [("a", helped, ref, None), ("b", hurt, ref, None), ("c", hurt, ref, None), ("d", hurt, ref, None)]
    decision = decide_postprocessing(cases, CLASSES, progress=False)
    organ = decision.steps[1]
    assert not organ.applied and organ.after < organ.before


def test_the_same_cases_give_the_same_decision():
    ref = _reference()
    pred = ref.copy()
    pred[:, 27:30, 2:5] = 1
    first = decide_postprocessing(_cases(pred, ref), CLASSES, progress=False)
    again = decide_postprocessing(iter(_cases(pred, ref)), CLASSES, progress=False)
    assert first == again


def test_no_case_or_no_foreground_is_refused():
    with pytest.raises(ValueError, match="no case"):
        decide_postprocessing([], CLASSES, progress=False)
    with pytest.raises(ValueError, match="foreground class"):
        decide_postprocessing([], {0: "background"}, progress=False)


def test_a_plan_applies_region_then_classes_and_round_trips():
    labels = np.zeros((2, 16, 16), dtype=np.uint8)
    labels[:, 2:8, 2:8] = 1
    labels[:, 2:8, 8:10] = 2
    labels[0, 14, 14] = 2
    labels[1, 12:14, 2:4] = 1
    plan = PostprocessingPlan((1, 2), True, (1,))
    out = plan.apply(labels)
    assert out[0, 14, 14] == 0 and (out[1, 12:14, 2:4] == 0).all() and (out[:, 2:8, 2:10] == labels[:, 2:8, 2:10]).all()
    assert labels[0, 14, 14] == 2  # input untouched
    assert PostprocessingPlan.from_dict(plan.to_dict()) == plan
    assert plan.describe({1: "LV", 2: "MYO"}) == "keep the largest component of: all foreground as one region, LV"
    np.testing.assert_array_equal(PostprocessingPlan((1, 2)).apply(labels), labels)
    with pytest.raises(ValueError, match="classes among them"):
        PostprocessingPlan((1, 2), False, (3,))
