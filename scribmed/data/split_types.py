"""Patient-level splits as data: :class:`Split` (a named list of :class:`Fold`) and its :class:`ValidationRule`.

A split is a list of folds; each fold names the ``train``, ``val`` and ``test`` *patients* (never
cases: both frames of an ACDC patient, or the T1 and T2 scans of a CHAOS patient, always land on
the same side). Fold indices are 0-based in Python and in ``fold_k`` folder names (``folds[0]``
is what papers call "fold 1"). :func:`_check_folds` holds the invariants every split keeps
(disjoint subsets, no patient tested twice, no empty test or train). Making splits
(k-fold, validation carving) and checking them against a dataset is in
:mod:`scribmed.data.splits`, their JSON files in :mod:`scribmed.data.split_files`.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from scribmed.data.errors import SplitError

VALIDATION_HOW = (
    "val = the max(min, round_half_up(fraction * n_train)) training patients (at most n_train - 1) "
    "with the smallest sha256('<seed>:<fold_index>:<patient_id>') hex digest, fold_index 0-based; "
    "train = the remaining training patients, sorted"
)

_SUBSETS = ("train", "val", "test")


def natural_key(patient_id: str) -> tuple:
    """Sort key that orders ``subject3`` before ``subject10`` (digit runs compare as numbers)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", patient_id))


@dataclass(frozen=True)
class ValidationRule:
    """How ``val`` was carved from the training patients of each fold.

    See :func:`~scribmed.data.splits.carve_validation`.
    """

    seed: int = 0
    fraction: float = 0.1
    min_count: int = 1
    how: str = VALIDATION_HOW

    def to_json(self) -> dict:
        return {"seed": self.seed, "fraction": self.fraction, "min": self.min_count, "how": self.how}


@dataclass(frozen=True)
class Fold:
    """Patient ids of one fold; ``train`` excludes ``val``; the three are disjoint."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def subsets(self) -> dict[str, tuple[str, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def patients(self) -> list[str]:
        return sorted({*self.train, *self.val, *self.test})


@dataclass(frozen=True)
class Split:
    """A named list of folds keyed by patient id.

    Attributes:
        name: short identifier (``acdc_5fold``), also used in run folder names.
        folds: the folds, index 0 = "fold 1" of the papers.
        validation_rule: how ``val`` was carved (``None`` when the file gives ``val`` by hand).
        description: free text (protocol and its source).
        unit: always ``"patient"``.
        source: file the split was loaded from (for error messages), ``None`` if built in memory.
    """

    name: str
    folds: tuple[Fold, ...]
    validation_rule: Optional[ValidationRule] = None
    description: str = ""
    unit: str = "patient"
    source: Optional[Path] = field(default=None, compare=False)

    @property
    def num_folds(self) -> int:
        return len(self.folds)

    @property
    def patients(self) -> list[str]:
        """Every patient named anywhere in the split, in natural order."""
        return sorted({p for f in self.folds for p in f.patients}, key=natural_key)

    def fold(self, k: int) -> Fold:
        """Fold ``k`` (0-based) or a :class:`SplitError` naming the valid range."""
        try:
            k = operator.index(k)
        except TypeError:
            k = -1
        if not 0 <= k < len(self.folds):
            raise SplitError(
                self.source, f"split {self.name!r} has fold indices 0..{len(self.folds) - 1} (0-based), not {k!r}"
            )
        return self.folds[k]

    def to_json(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "unit": self.unit}
        if self.validation_rule is not None:
            out["validation_rule"] = self.validation_rule.to_json()
        out["folds"] = [{s: list(v) for s, v in f.subsets().items()} for f in self.folds]
        return out


def _check_folds(split: Split, path: Optional[Path]) -> None:
    """Disjoint train/val/test within each fold, no patient tested twice, no empty test/train."""
    where = path if path is not None else split.source
    if not split.folds:
        raise SplitError(where, f"split {split.name!r} has no folds")
    tested: dict[str, int] = {}
    for k, fold in enumerate(split.folds):
        sets = {s: set(v) for s, v in fold.subsets().items()}
        for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
            both = sorted(sets[a] & sets[b])
            if both:
                raise SplitError(where, f"fold {k + 1}: {', '.join(both)} in both {a} and {b}")
        if not fold.test:
            raise SplitError(where, f"fold {k + 1} has no test patients")
        if not fold.train:
            raise SplitError(where, f"fold {k + 1} has no train patients")
        for p in fold.test:
            if p in tested:
                raise SplitError(where, f"{p} is a test patient of both fold {tested[p] + 1} and fold {k + 1}")
            tested[p] = k


__all__ = [
    "VALIDATION_HOW",
    "Fold",
    "Split",
    "ValidationRule",
    "natural_key",
]
