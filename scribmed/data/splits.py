"""Making patient-level splits and applying them to a dataset: k-fold, validation carving, checking, fold cases.

The validation subset is carved from each fold's training patients by a rule that is written into
the split (``validation_rule``) and reproducible without numpy: sort the training patients by
``sha256(f"{seed}:{fold_index}:{patient_id}")`` (hex digest) and hold out the first
``max(min, round_half_up(fraction * n_train))`` of them (never all of them). Model selection
therefore never sees a test patient, unlike published ACDC work that validates on the test fold.

:func:`resolve_split` is what ``--split FILE|NAME|auto`` means; :func:`validate_split` checks a
split against a dataset's patients and :func:`fold_cases` lists a fold's cases. The split types
are in :mod:`scribmed.data.split_types`, the JSON files in :mod:`scribmed.data.split_files` and
the shipped protocols in :mod:`scribmed.data.split_protocols`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from scribmed.data.errors import SplitError
from scribmed.data.split_files import load_split
from scribmed.data.split_types import (
    _SUBSETS,
    Fold,
    Split,
    ValidationRule,
    _check_folds,
    natural_key,
)

log = logging.getLogger(__name__)


@dataclass
class SplitReport:
    """Outcome of :func:`validate_split`.

    Attributes:
        split: the split to use (restricted to present patients when ``allow_missing``).
        missing: patients the split names but the dataset lacks, sorted.
        unassigned: dataset patients the split never names (not used by any fold), sorted.
        empty_folds: fold indices (0-based) left with no test or no train patient; a runner skips them.
        warnings: human-readable lines describing what was dropped.
    """

    split: Split
    missing: list[str]
    unassigned: list[str]
    empty_folds: list[int]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """True when the dataset holds every patient of the split."""
        return not self.missing


# --------------------------------------------------------------------------------------- carving


def _digest(seed: int, fold_index: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}:{fold_index}:{patient}".encode("utf-8")).hexdigest()


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def carve_validation(
    train_patients: Iterable[str],
    seed: int,
    fold_index: int,
    fraction: float = 0.1,
    min_count: int = 1,
) -> tuple[list[str], list[str]]:
    """Hold out a deterministic validation subset of a fold's training patients.

    ``n_val = max(min_count, round_half_up(fraction * n))``, capped at ``n - 1`` so training keeps
    at least one patient (``n <= 1`` gives no validation). The patients with the smallest
    ``sha256(f"{seed}:{fold_index}:{patient_id}")`` hex digests are held out: independent of input
    order, of numpy's RNG implementation, and reproducible in any language.

    Args:
        train_patients: the fold's non-test patient ids (duplicates are ignored).
        seed: the split's validation seed (``validation_rule.seed``).
        fold_index: 0-based fold index, so each fold holds out a different subset.
        fraction: share of the training patients held out (0 <= fraction < 1).
        min_count: lower bound on the number held out.

    Returns:
        ``(train, val)``, both sorted, disjoint, union = the input patients.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if min_count < 0:
        raise ValueError(f"min_count must be >= 0, got {min_count}")
    patients = sorted(set(train_patients))
    n = len(patients)
    n_val = min(max(min_count, _round_half_up(fraction * n)), max(n - 1, 0))
    ranked = sorted(patients, key=lambda p: (_digest(seed, fold_index, p), p))
    val = sorted(ranked[:n_val])
    held = set(val)
    return [p for p in patients if p not in held], val


def _make_split(
    name: str,
    description: str,
    test_blocks: Sequence[Sequence[str]],
    all_patients: Sequence[str],
    rule: ValidationRule,
) -> Split:
    folds = []
    for k, block in enumerate(test_blocks):
        test = set(block)
        train, val = carve_validation(
            [p for p in all_patients if p not in test], rule.seed, k, rule.fraction, rule.min_count
        )
        folds.append(Fold(tuple(train), tuple(val), tuple(sorted(test))))
    split = Split(name, tuple(folds), rule, description)
    _check_folds(split, None)
    return split


def make_kfold_split(
    patients: Iterable[str],
    k: int = 5,
    seed: int = 0,
    name: str = "auto",
    fraction: float = 0.1,
    min_count: int = 1,
) -> Split:
    """A seeded k-fold split by patient (what ``--split auto`` uses).

    Patients are ordered by ``sha256(f"kfold:{seed}:{patient_id}")`` and dealt round-robin into
    ``k`` test blocks (sizes differ by at most one); each fold's validation subset is then carved
    from the other patients by :func:`carve_validation` with the same seed.

    Raises:
        SplitError: fewer than ``k`` distinct patients, or ``k < 2``.
    """
    unique = sorted(set(patients))
    if k < 2:
        raise SplitError(None, f"a k-fold split needs k >= 2, got k={k}")
    if len(unique) < k:
        raise SplitError(None, f"cannot make {k} folds from {len(unique)} patient(s): {', '.join(unique) or 'none'}")
    order = sorted(unique, key=lambda p: hashlib.sha256(f"kfold:{seed}:{p}".encode()).hexdigest())
    blocks = [sorted(order[i::k]) for i in range(k)]
    rule = ValidationRule(seed=seed, fraction=fraction, min_count=min_count)
    desc = (
        f"{k}-fold split of {len(unique)} patients made by scribmed.data.splits.make_kfold_split(seed={seed}): "
        f"patients ordered by sha256('kfold:<seed>:<patient_id>') and dealt round-robin into test blocks"
    )
    return _make_split(name, desc, blocks, unique, rule)


# ----------------------------------------------------------------------------- against a dataset


def _patient_ids(dataset_or_patient_ids: Any) -> list[str]:
    """Patient ids of a Dataset (``.patients``), a sequence of Cases, or an iterable of ids."""
    patients = getattr(dataset_or_patient_ids, "patients", None)
    if patients is not None:
        patients = patients() if callable(patients) else patients
        return sorted(set(map(str, patients)))
    items = list(dataset_or_patient_ids)
    if items and all(hasattr(c, "patient_id") for c in items):
        return sorted({c.patient_id for c in items})
    return sorted(set(map(str, items)))


def _name_list(ids: Sequence[str], limit: int = 40) -> str:
    if len(ids) <= limit:
        return ", ".join(ids)
    return ", ".join(ids[:limit]) + f", ... ({len(ids) - limit} more)"


def validate_split(split: Split, dataset_or_patient_ids: Any, allow_missing: bool = False) -> SplitReport:
    """Check that the dataset holds every patient the split names.

    Args:
        split: a loaded split.
        dataset_or_patient_ids: a Dataset (``.patients``), a list of Cases, or patient ids.
        allow_missing: restrict the split to present patients instead of failing. Folds keep their
            indices; a fold left without test or train patients is listed in ``empty_folds``.

    Returns:
        A :class:`SplitReport`; its ``split`` is the one to run.

    Raises:
        SplitError: patients are missing (and ``allow_missing`` is false), naming them, or no
            patient of the split is in the dataset at all.
    """
    present = set(_patient_ids(dataset_or_patient_ids))
    named = split.patients
    missing = [p for p in named if p not in present]
    unassigned = sorted(present - set(named), key=natural_key)
    if not missing:
        return SplitReport(split, [], unassigned, [], [])
    if len(missing) == len(named):
        raise SplitError(
            split.source,
            f"split {split.name!r} names {len(named)} patients and none is in the dataset "
            f"(split: {_name_list(named, 5)}; dataset: {_name_list(sorted(present, key=natural_key), 5) or 'no patients'})",
        )
    if not allow_missing:
        raise SplitError(
            split.source,
            f"split names {len(missing)} patients absent from the dataset: {_name_list(missing)} "
            f"(--allow-missing, or allow_missing=True, runs on the {len(named) - len(missing)} present ones)",
        )
    keep = lambda ids: tuple(p for p in ids if p in present)  # noqa: E731
    folds = tuple(Fold(keep(f.train), keep(f.val), keep(f.test)) for f in split.folds)
    empty = [k for k, f in enumerate(folds) if not f.test or not f.train]
    warnings = [f"split {split.name!r}: dropped {len(missing)} patients absent from the dataset: {_name_list(missing)}"]
    for k, (old, new) in enumerate(zip(split.folds, folds)):
        lost = {s: len(getattr(old, s)) - len(getattr(new, s)) for s in _SUBSETS}
        if any(lost.values()):
            detail = ", ".join(f"{n} {s}" for s, n in lost.items() if n)
            note = " -> no test patients left, skip this fold" if not new.test else ""
            note += " -> no train patients left, skip this fold" if not new.train else ""
            warnings.append(f"fold {k + 1}: dropped {detail}{note}")
    for w in warnings:
        log.warning(w)
    restricted = replace(split, folds=folds)
    return SplitReport(restricted, missing, unassigned, empty, warnings)


def fold_cases(split: Split, k: int, dataset: Any) -> dict[str, list[str]]:
    """Case ids of fold ``k`` (0-based): ``{"train": [...], "val": [...], "test": [...]}``.

    ``dataset`` is a Dataset (``.cases``) or a sequence of Cases; a patient's cases all go to the
    subset of that patient, in dataset order. Patients of the split absent from the dataset are an
    error (run :func:`validate_split` with ``allow_missing=True`` first to drop them).
    """
    fold = split.fold(k)
    cases = list(getattr(dataset, "cases", dataset))
    by_patient: dict[str, list[str]] = {}
    for c in cases:
        by_patient.setdefault(c.patient_id, []).append(c.case_id)
    absent = sorted((p for p in fold.patients if p not in by_patient), key=natural_key)
    if absent:
        raise SplitError(
            split.source,
            f"fold {k + 1} names {len(absent)} patients absent from the dataset: {_name_list(absent)}",
        )
    return {s: [cid for p in ids for cid in by_patient[p]] for s, ids in fold.subsets().items()}


def auto_folds(spec: str | Path) -> int:
    """The fold count of an ``auto`` split spec (``"auto"``: 5, ``"auto:K"``: K >= 2); 0 for a file or a name.

    Raises:
        SplitError: ``auto:`` with something else than a count of at least 2.
    """
    text = str(spec)
    if text != "auto" and not text.startswith("auto:"):
        return 0
    count = text.partition(":")[2] or "5"
    if not count.isdigit() or int(count) < 2:
        raise SplitError(None, f"split {text!r}: auto takes a fold count of at least 2, e.g. auto:3")
    return int(count)


def resolve_split(
    spec: str | Path,
    dataset: Any,
    k: int = 5,
    seed: int = 0,
    allow_missing: bool = False,
) -> SplitReport:
    """What ``--split FILE|NAME|auto|auto:K`` means: load (or make) the split and validate it on ``dataset``.

    ``"auto"`` makes a seeded ``k``-fold split of the dataset's patients (:func:`make_kfold_split`),
    ``"auto:K"`` a ``K``-fold one.
    """
    count = auto_folds(spec)
    if count:
        split = make_kfold_split(_patient_ids(dataset), k=k if str(spec) == "auto" else count, seed=seed)
    else:
        split = load_split(spec)
    return validate_split(split, dataset, allow_missing=allow_missing)


def split_summary(split: Split) -> Mapping[str, Any]:
    """Counts per fold, for logs and reports."""
    return {
        "name": split.name,
        "num_folds": split.num_folds,
        "patients": len(split.patients),
        "folds": [{s: len(v) for s, v in f.subsets().items()} for f in split.folds],
    }


__all__ = [
    "SplitReport",
    "auto_folds",
    "carve_validation",
    "fold_cases",
    "make_kfold_split",
    "resolve_split",
    "split_summary",
    "validate_split",
]
