"""Post-processing chosen on out-of-fold predictions, by nnU-Net v2's rule: keep the largest component.

nnU-Net's ``determine_postprocessing`` decides, on every out-of-fold prediction of a
cross-validation pooled as one set (each case scored once, its scores averaged over cases):

1. **Foreground as one region**: all foreground classes together form one region whose largest
   connected component is kept (the rest becomes background). Kept when it raises the mean
   foreground Dice (the mean over classes of each class's mean Dice) *and* lowers no class's mean
   Dice.
2. **Each class**, in label order, on the result of step 1 (or the raw predictions when step 1 was
   not kept): keep the class's largest connected component; kept when it raises that class's mean
   Dice.

Comparisons are strict (an equal Dice keeps nothing). Components are 3D with full connectivity
(26 neighbours, :func:`scribmed.transforms.largest_component.keep_largest_component`), as nnU-Net.

Where scribmed differs from nnU-Net:

* Scores are scribmed's, computed exactly as every fold's evaluation
  (:func:`scribmed.metrics.evaluate_case`, medpy-exact, ``nan_counted`` empty-mask policy): a class
  absent from both prediction and reference scores Dice 1 and counts in the mean, where nnU-Net
  leaves such a case out of the class's mean (NaN). HD95 is reported before and after but, as in
  nnU-Net, never decides.
* The class steps are evaluated in one pass over the cases instead of one pass per class: removing
  components of one class only turns that class's voxels into background, so no class step changes
  another class's Dice and the decisions are the ones nnU-Net's sequential passes make.
* Cases a step leaves unchanged are not scored again (their scores are reused).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from scribmed.metrics import CaseResult, ClassResult, evaluate_case
from scribmed.runtime.progress import progress_bar
from scribmed.transforms.largest_component import keep_largest_component

__all__ = ["PostprocessingDecision", "PostprocessingPlan", "PostprocessingStep", "decide_postprocessing"]

#: a pooled case: ``(case_id, prediction, reference, spacing)``, as :func:`scribmed.metrics.evaluate_cases` takes
PooledCase = tuple[str, np.ndarray, np.ndarray, Optional[Sequence[float]]]


@dataclass(frozen=True)
class PostprocessingPlan:
    """What to apply to a predicted label map ``(z, y, x)``: the decision of :func:`decide_postprocessing`.

    Attributes:
        foreground: the foreground label values (step 1's region).
        foreground_as_one: keep the largest component of all foreground classes as one region.
        classes: label values whose largest component is kept, each on its own, after step 1.
    """

    foreground: tuple[int, ...]
    foreground_as_one: bool = False
    classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classes) - set(self.foreground))
        if not self.foreground or 0 in self.foreground or unknown:
            raise ValueError(f"a plan needs foreground label values without 0 and classes among them; got "
                             f"foreground {self.foreground}, classes {self.classes}")

    @property
    def is_empty(self) -> bool:
        """True when the plan changes nothing."""
        return not self.foreground_as_one and not self.classes

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` post-processed (a new array; removed voxels are background, 0)."""
        out = np.asarray(labels)
        if self.foreground_as_one:
            out = keep_largest_component(out, self.foreground)
        for c in self.classes:
            out = keep_largest_component(out, (c,))
        return out if out is not labels else out.copy()

    def describe(self, names: Optional[Mapping[int, str]] = None) -> str:
        """One line saying what :meth:`apply` does, e.g. ``keep the largest component of: RV, LV``."""
        if self.is_empty:
            return "no post-processing (keeping the largest component improved nothing)"
        names = names or {}
        parts = ["all foreground as one region"] if self.foreground_as_one else []
        parts += [names.get(c, f"class {c}") for c in self.classes]
        return "keep the largest component of: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"foreground": list(self.foreground), "foreground_as_one": self.foreground_as_one,
                "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PostprocessingPlan":
        return cls(tuple(int(c) for c in d["foreground"]), bool(d["foreground_as_one"]),
                   tuple(int(c) for c in d["classes"]))


@dataclass(frozen=True)
class PostprocessingStep:
    """One step tried: what was compared, before and after, and whether it is kept."""

    name: str
    class_index: Optional[int]  # None: all foreground as one region
    compared: str
    before: float
    after: float
    applied: bool
    classes_worse: tuple[str, ...] = ()  # step 1 only: classes whose Dice it lowered

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"classes_worse": list(self.classes_worse)}


@dataclass(frozen=True)
class PostprocessingDecision:
    """The plan and the evidence: every step tried and the pooled per-case results before and after."""

    plan: PostprocessingPlan
    steps: tuple[PostprocessingStep, ...]
    before: tuple[CaseResult, ...]
    after: tuple[CaseResult, ...]


@dataclass
class _Candidates:
    """One case's results: raw, step 1, and each class's step on either source (raw, step 1)."""

    raw: CaseResult
    region: CaseResult
    per_class: dict[int, tuple[ClassResult, ClassResult]]


def _score(pred: np.ndarray, ref: np.ndarray, classes: Mapping[int, str], spacing: Any, case_id: str) -> CaseResult:
    """Scores exactly as a fold's evaluation computes them (``evaluate_cases``' defaults)."""
    return evaluate_case(pred, ref, classes, spacing, case_id=case_id)


def _candidates(case: PooledCase, classes: Mapping[int, str]) -> _Candidates:
    case_id, pred, ref, spacing = case
    pred = np.asarray(pred)
    raw = _score(pred, ref, classes, spacing, case_id)
    region_pred = keep_largest_component(pred, tuple(classes))
    same = np.array_equal(region_pred, pred)
    region = raw if same else _score(region_pred, ref, classes, spacing, case_id)
    per_class: dict[int, tuple[ClassResult, ClassResult]] = {}
    for c, name in classes.items():
        results = []
        for source, scored in ((pred, raw), (region_pred, region)):
            if results and same:
                results.append(results[0])
                continue
            kept = keep_largest_component(source, (c,))
            results.append(scored[c] if np.array_equal(kept, source) else
                           _score(kept, ref, {c: name}, spacing, case_id)[c])
        per_class[c] = (results[0], results[1])
    return _Candidates(raw, region, per_class)


def _with(case: CaseResult, records: Mapping[int, ClassResult]) -> CaseResult:
    """``case`` with the records of ``records``' classes replaced."""
    return dataclasses.replace(case, classes=tuple(records.get(r.class_index, r) for r in case.classes))


def _summary(cases: Sequence[CaseResult]) -> dict[str, Any]:
    from scribmed.evaluation.report import summarize

    return summarize(cases)


def decide_postprocessing(
    cases: Iterable[PooledCase],
    classes: Mapping[int, str],
    progress: bool = True,
) -> PostprocessingDecision:
    """nnU-Net's rule (module docstring) on the pooled out-of-fold ``cases``.

    Args:
        cases: ``(case_id, prediction, reference, spacing)`` of every out-of-fold case (read one at a
            time; an iterator keeps memory flat), label maps ``(z, y, x)`` on the reference grid.
        classes: ``{label: name}`` of the foreground classes, in label order.
        progress: a progress bar over the cases.

    Returns:
        The :class:`PostprocessingDecision` (deterministic: the same cases give the same decision).

    Raises:
        ValueError: no case, or no foreground class.
    """
    classes = {int(c): str(n) for c, n in sorted(classes.items()) if int(c) != 0}
    if not classes:
        raise ValueError("post-processing needs at least one foreground class")
    scored = [_candidates(case, classes)
              for case in progress_bar(cases, desc="post-processing", unit="case", disable=not progress)]
    if not scored:
        raise ValueError("no case to decide post-processing on")
    raw = [s.raw for s in scored]
    region = [s.region for s in scored]
    before, with_region = _summary(raw), _summary(region)
    worse = tuple(n for n in classes.values()
                  if with_region["classes"][n]["dice"]["mean"] < before["classes"][n]["dice"]["mean"])
    region_kept = bool(with_region["overall"]["dice"] > before["overall"]["dice"] and not worse)
    steps = [PostprocessingStep("all foreground as one region", None, "mean foreground Dice",
                                before["overall"]["dice"], with_region["overall"]["dice"], region_kept, worse)]
    source = region if region_kept else raw
    source_summary = with_region if region_kept else before
    pick = 1 if region_kept else 0
    chosen: list[int] = []
    for c, name in classes.items():
        trial = [_with(case, {c: s.per_class[c][pick]}) for case, s in zip(source, scored)]
        dice_before = source_summary["classes"][name]["dice"]["mean"]
        dice_after = _summary(trial)["classes"][name]["dice"]["mean"]
        kept = bool(dice_after > dice_before)
        steps.append(PostprocessingStep(f"class {name}", c, f"Dice of {name}", dice_before, dice_after, kept))
        if kept:
            chosen.append(c)
    after = [_with(case, {c: s.per_class[c][pick] for c in chosen}) for case, s in zip(source, scored)]
    plan = PostprocessingPlan(tuple(classes), region_kept, tuple(chosen))
    return PostprocessingDecision(plan, tuple(steps), tuple(raw), tuple(after))
