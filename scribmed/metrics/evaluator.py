"""Per-case, per-class Dice / HD95 / ASD of labelled volumes, with an explicit empty-mask policy.

One pass per case: the bounding box of every class in prediction and reference comes from
``scipy.ndimage.find_objects`` inside the box of all non-zero labels (found from axis
projections: the foreground is a small part of a cardiac volume), then each class is evaluated inside
its grown union box only (see :mod:`scribmed.metrics.binary`), Dice from the same crop.

Empty masks (``"both_empty"``, ``"pred_empty"``, ``"ref_empty"``) never pass silently. Every
record carries its event and the policy decides the numbers (see :class:`EmptyPolicy`):

==============  ==========================  ===========================================
policy          both_empty                  pred_empty / ref_empty
==============  ==========================  ===========================================
nan_counted     dice 1, hd95 0, asd 0       dice 0, hd95/asd NaN (left out of the HD/ASD
                                            means, counted in the summary)
worst           dice 1, hd95 0, asd 0       dice 0, hd95/asd = the image diagonal
                                            (finite penalty, same units)
skip            values as nan_counted, but the record is excluded from every mean
                (counted in the summary)
==============  ==========================  ===========================================

Units: HD95/ASD in mm when a spacing is given, in pixels (voxel units) otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage

from scribmed.metrics.binary import (
    Spacing,
    check_connectivity,
    diagonal,
    grown_union_box,
    nonzero_box,
    normalize_spacing,
    surface_distances_in_box,
)
from scribmed.runtime.progress import progress_bar

__all__ = [
    "EMPTY_EVENTS",
    "CaseResult",
    "ClassResult",
    "EmptyPolicy",
    "HD95Mode",
    "apply_empty_policy",
    "empty_event",
    "evaluate_case",
    "evaluate_cases",
    "normalize_classes",
]

EMPTY_EVENTS: tuple[str, ...] = ("both_empty", "pred_empty", "ref_empty")


class EmptyPolicy(str, Enum):
    """What a class that is empty in the prediction and/or the reference scores."""

    NAN_COUNTED = "nan_counted"
    WORST = "worst"
    SKIP = "skip"


class HD95Mode(str, Enum):
    """``medpy``: percentile of the pooled directed distances (published tables, default).
    ``monai``: max of the two directed 95th percentiles (``compute_hausdorff_distance``)."""

    MEDPY = "medpy"
    MONAI = "monai"


ClassesArg = Union[Sequence[int], Mapping[int, str], Any]


@dataclass(frozen=True)
class ClassResult:
    """Metrics of one class of one case.

    Attributes:
        class_index: label value.
        class_name: its name (``str(class_index)`` when none was given).
        dice: Dice coefficient in [0, 1].
        hd95: 95th percentile Hausdorff distance (units of the case: mm or pixels); NaN only
            for an empty-mask event under the ``nan_counted``/``skip`` policies.
        asd: average surface distance prediction → reference (same units and NaN rule).
        empty: ``None`` or the empty-mask event (``"both_empty"``, ``"pred_empty"``, ``"ref_empty"``).
        excluded: True when the policy leaves this record out of every mean (``skip``).
    """

    class_index: int
    class_name: str
    dice: float
    hd95: float
    asd: float
    empty: Optional[str] = None
    excluded: bool = False


@dataclass(frozen=True)
class CaseResult:
    """All classes of one case plus the conventions they were computed with."""

    case_id: Optional[str]
    classes: tuple[ClassResult, ...]
    hd95_units: str
    hd95_mode: str
    empty_policy: str
    connectivity: int = 1
    shape: tuple[int, ...] = ()
    spacing: Optional[tuple[float, ...]] = field(default=None)

    def __iter__(self) -> Iterator[ClassResult]:
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, class_index: int) -> ClassResult:
        """The record of label value ``class_index`` (not a position)."""
        for rec in self.classes:
            if rec.class_index == class_index:
                return rec
        raise KeyError(f"class {class_index} was not evaluated (have {[r.class_index for r in self.classes]})")

    @property
    def events(self) -> dict[str, int]:
        """Number of classes of this case with each empty-mask event."""
        counts = {e: 0 for e in EMPTY_EVENTS}
        for rec in self.classes:
            if rec.empty:
                counts[rec.empty] += 1
        return counts


def normalize_classes(classes: ClassesArg) -> dict[int, str]:
    """``{label: name}`` from a list of ints, a mapping, or a ClassMap-like object.

    A ClassMap-like object (has ``.foreground`` and ``.names``, e.g. ``scribmed.data.CARDIAC``)
    gives its foreground classes.
    """
    if hasattr(classes, "foreground") and hasattr(classes, "names"):
        return {int(k): str(classes.names[k]) for k in classes.foreground}
    if isinstance(classes, Mapping):
        out = {int(k): str(v) for k, v in classes.items()}
    else:
        try:
            out = {int(k): str(int(k)) for k in classes}
        except TypeError as err:
            raise ValueError(f"classes must be a list of ints or an {{int: name}} mapping, got {classes!r}") from err
    if not out:
        raise ValueError("classes is empty: name at least one label value to evaluate")
    return out


def empty_event(pred_empty: bool, ref_empty: bool) -> Optional[str]:
    """The empty-mask event of a class, or ``None`` when both masks have voxels."""
    if pred_empty and ref_empty:
        return "both_empty"
    if pred_empty:
        return "pred_empty"
    if ref_empty:
        return "ref_empty"
    return None


def apply_empty_policy(
    event: str, policy: Union[EmptyPolicy, str], penalty: float
) -> tuple[float, float, float, bool]:
    """``(dice, hd95, asd, excluded)`` of an empty-mask event under ``policy``.

    Args:
        event: one of :data:`EMPTY_EVENTS`.
        policy: an :class:`EmptyPolicy` (or its value).
        penalty: the finite distance the ``worst`` policy assigns (the image diagonal).
    """
    policy = EmptyPolicy(policy)
    if event not in EMPTY_EVENTS:
        raise ValueError(f"unknown empty-mask event {event!r}; expected one of {EMPTY_EVENTS}")
    if event == "both_empty":
        dice, dist = 1.0, 0.0  # the class is correctly absent
    else:
        dice, dist = 0.0, (penalty if policy is EmptyPolicy.WORST else math.nan)
    return dice, dist, dist, policy is EmptyPolicy.SKIP


def _as_labels(array: Any, name: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integer labels, got non-integral {arr.dtype} values")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")


def _class_boxes(labels: np.ndarray, classes: Iterable[int]) -> dict[int, Optional[tuple[slice, ...]]]:
    """Tight bounding box of every listed label (``None`` when absent).

    Positive labels: one ``find_objects`` scan inside the box of all non-zero voxels.
    """
    classes = list(classes)
    positive = [c for c in classes if c > 0]
    boxes: dict[int, Optional[tuple[slice, ...]]] = {}
    if positive:
        outer = nonzero_box(labels) if labels.ndim else None
        found = ndimage.find_objects(labels[outer], max_label=max(positive)) if outer is not None else []
        for c in positive:
            inner = found[c - 1] if c - 1 < len(found) else None
            boxes[c] = None if inner is None else tuple(
                slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))
    for c in classes:
        if c <= 0:  # find_objects ignores labels <= 0
            found = ndimage.find_objects((labels == c).view(np.uint8), max_label=1)
            boxes[c] = found[0] if found else None
    return boxes


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: ClassesArg,
    spacing: Spacing = None,
    hd95_mode: Union[HD95Mode, str] = HD95Mode.MEDPY,
    empty_policy: Union[EmptyPolicy, str] = EmptyPolicy.NAN_COUNTED,
    connectivity: int = 1,
    case_id: Optional[str] = None,
) -> CaseResult:
    """Dice, HD95 and ASD of every listed class of a labelled prediction against its reference.

    Args:
        pred: integer label array (any dimension, e.g. ``(slices, H, W)``).
        ref: reference labels, same shape.
        classes: label values to evaluate, as a list, an ``{int: name}`` mapping or a ClassMap.
        spacing: mm per axis (or a scalar) in the arrays' axis order; ``None`` → pixel units.
        hd95_mode: ``"medpy"`` (pooled percentile, default) or ``"monai"`` (max of directed).
        empty_policy: ``"nan_counted"`` (default), ``"worst"`` or ``"skip"`` (module docstring).
        connectivity: erosion neighbourhood that defines surfaces (1 = faces, as medpy).
        case_id: carried into the result for reports.

    Returns:
        A :class:`CaseResult` with one :class:`ClassResult` per class, in the order given.

    Raises:
        ValueError: shapes differ, labels are not integers, bad spacing/mode/policy/classes.
    """
    names = normalize_classes(classes)
    mode = HD95Mode(hd95_mode)
    policy = EmptyPolicy(empty_policy)
    pred_l = _as_labels(pred, "pred")
    ref_l = _as_labels(ref, "ref")
    if pred_l.shape != ref_l.shape:
        raise ValueError(f"pred and ref must have the same shape, got {pred_l.shape} and {ref_l.shape}")
    if pred_l.ndim == 0:
        pred_l, ref_l = pred_l.reshape(1), ref_l.reshape(1)
    sp = normalize_spacing(spacing, pred_l.ndim)
    conn = check_connectivity(connectivity, pred_l.ndim)
    penalty = diagonal(pred_l.shape, sp)

    boxes_p = _class_boxes(pred_l, names)
    boxes_r = _class_boxes(ref_l, names)
    records = []
    for c, name in names.items():
        event = empty_event(boxes_p[c] is None, boxes_r[c] is None)
        if event is not None:
            dice, h, a, excluded = apply_empty_policy(event, policy, penalty)
            records.append(ClassResult(c, name, dice, h, a, event, excluded))
            continue
        box = grown_union_box(boxes_p[c], boxes_r[c], pred_l.shape)
        p = pred_l[box] == c
        r = ref_l[box] == c
        dice = 2.0 * np.count_nonzero(p & r) / float(np.count_nonzero(p) + np.count_nonzero(r))
        sd = surface_distances_in_box(p, r, sp, conn)
        h = sd.hd95() if mode is HD95Mode.MEDPY else sd.hd95_monai()
        records.append(ClassResult(c, name, float(dice), h, sd.asd(), None, False))
    return CaseResult(
        case_id=case_id,
        classes=tuple(records),
        hd95_units="pixels" if sp is None else "mm",
        hd95_mode=mode.value,
        empty_policy=policy.value,
        connectivity=conn,
        shape=tuple(int(n) for n in pred_l.shape),
        spacing=sp,
    )


def evaluate_cases(
    cases: Iterable[tuple[str, np.ndarray, np.ndarray, Spacing]],
    classes: ClassesArg,
    hd95_mode: Union[HD95Mode, str] = HD95Mode.MEDPY,
    empty_policy: Union[EmptyPolicy, str] = EmptyPolicy.NAN_COUNTED,
    connectivity: int = 1,
    progress: bool = True,
) -> list[CaseResult]:
    """:func:`evaluate_case` over ``(case_id, pred, ref, spacing)`` items, with progress output.

    The iterable is consumed lazily, so a generator that loads one case at a time keeps memory
    flat. Progress (:func:`scribmed.runtime.progress.progress_bar`) is shown when ``progress``.
    """
    items = progress_bar(cases, desc="evaluate", unit="case", disable=not progress)
    return [
        evaluate_case(
            pred, ref, classes, spacing, hd95_mode=hd95_mode, empty_policy=empty_policy,
            connectivity=connectivity, case_id=str(case_id),
        )
        for case_id, pred, ref, spacing in items
    ]
