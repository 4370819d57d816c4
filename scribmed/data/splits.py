"""Patient-level train/val/test splits: JSON files in ``data_splits/``, loading, checking, carving.

A split is a list of folds; each fold names the ``train``, ``val`` and ``test`` *patients* (never
cases: both frames of an ACDC patient, or the T1 and T2 scans of a CHAOS patient, always land on
the same side). Fold indices are 0-based in Python and in ``fold_k`` folder names (``folds[0]``
is what papers call "fold 1").

The validation subset is carved from each fold's training patients by a rule that is written into
the file (``validation_rule``) and reproducible without numpy: sort the training patients by
``sha256(f"{seed}:{fold_index}:{patient_id}")`` (hex digest) and hold out the first
``max(min, round_half_up(fraction * n_train))`` of them (never all of them). Model selection
therefore never sees a test patient, unlike published ACDC work that validates on the test fold.

File format (see ``docs/splits.md``)::

    {"name": "acdc_5fold", "description": "...", "unit": "patient",
     "validation_rule": {"seed": 0, "fraction": 0.1, "min": 1, "how": "..."},
     "folds": [{"train": [...], "val": [...], "test": [...]}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from scribmed.data.errors import SplitError
from scribmed.runtime.files import atomic_write_text
from scribmed.runtime.shipped import shipped_dir

log = logging.getLogger(__name__)

#: Where the committed split files live (``<repo>/data_splits``).
SPLITS_DIR = shipped_dir("data_splits")

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
    """How ``val`` was carved from the training patients of each fold (see :func:`carve_validation`)."""

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


# --------------------------------------------------------------------------- the committed files

#: the split protocols live in :mod:`scribmed.data.split_protocols`; these names stay importable from here
_PROTOCOL_NAMES = frozenset({
    "ACDC_PATIENTS", "MSCMR_TRAIN", "MSCMR_VAL", "MSCMR_TEST", "CHAOS_TEST_FOLDS", "CHAOS_PATIENTS", "DSB2018_IDS",
    "acdc_5fold", "mscmr_split", "chaos_mr_5fold", "dsb2018_5fold", "BUILTIN_SPLITS", "write_builtin_splits",
})


def __getattr__(name: str) -> Any:
    if name in _PROTOCOL_NAMES:  # imported on first use: split_protocols builds on this module
        from scribmed.data import split_protocols

        return getattr(split_protocols, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------ load/save/check


def dumps_split(split: Split) -> str:
    """JSON with one line per id list: diff-friendly and readable."""
    d = split.to_json()
    lines = ["{"]
    head = [k for k in d if k != "folds"]
    for key in head:
        lines.append(f"  {json.dumps(key)}: {json.dumps(d[key])},")
    lines.append('  "folds": [')
    for i, fold in enumerate(d["folds"]):
        lines.append("    {")
        for j, s in enumerate(_SUBSETS):
            comma = "," if j < len(_SUBSETS) - 1 else ""
            lines.append(f"      {json.dumps(s)}: {json.dumps(fold[s])}{comma}")
        lines.append("    }" + ("," if i < len(d["folds"]) - 1 else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_split(split: Split, path: str | Path) -> Path:
    """Write ``split`` as JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    _check_folds(split, path)
    return atomic_write_text(path, dumps_split(split))


def _id_list(value: Any, where: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SplitError(path, f"{where} must be a list of non-empty patient id strings")
    seen: set[str] = set()
    dups = sorted({v for v in value if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dups:
        raise SplitError(path, f"{where} lists {', '.join(dups)} more than once")
    return tuple(value)


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


def load_split(path: str | Path) -> Split:
    """Read and check a split file.

    A bare name (``"acdc_5fold"`` or ``"acdc_5fold.json"``) that is not an existing path is looked
    up in ``data_splits/``.

    Raises:
        SplitError: unreadable or malformed JSON, missing keys, wrong types, duplicates, a patient in
            two subsets of a fold or tested in two folds; the message names the file.
    """
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and (SPLITS_DIR / path.with_suffix(".json").name).exists():
        path = SPLITS_DIR / path.with_suffix(".json").name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from scribmed.data.split_protocols import BUILTIN_SPLITS

        known = ", ".join(sorted(BUILTIN_SPLITS))
        raise SplitError(path, f"split file not found (built-in splits: {known})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SplitError(path, f"cannot read split file ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SplitError(path, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise SplitError(path, "top level must be a JSON object with 'name' and 'folds'")
    missing = [k for k in ("name", "folds") if k not in data]
    if missing:
        raise SplitError(path, f"missing key(s): {', '.join(missing)}")
    if not isinstance(data["name"], str) or not data["name"]:
        raise SplitError(path, "'name' must be a non-empty string")
    unit = data.get("unit", "patient")
    if unit != "patient":
        raise SplitError(path, f"'unit' must be 'patient' (splits are by patient), got {unit!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SplitError(path, "'description' must be a string")
    rule = None
    if data.get("validation_rule") is not None:
        r = data["validation_rule"]
        if not isinstance(r, dict):
            raise SplitError(path, "'validation_rule' must be an object")
        try:
            rule = ValidationRule(
                seed=int(r.get("seed", 0)),
                fraction=float(r.get("fraction", 0.1)),
                min_count=int(r.get("min", 1)),
                how=str(r.get("how", VALIDATION_HOW)),
            )
        except (TypeError, ValueError):
            raise SplitError(path, "'validation_rule' seed/min must be integers and fraction a number") from None
    folds_raw = data["folds"]
    if not isinstance(folds_raw, list) or not folds_raw:
        raise SplitError(path, "'folds' must be a non-empty list")
    folds = []
    for k, f in enumerate(folds_raw):
        if not isinstance(f, dict):
            raise SplitError(path, f"fold {k + 1} must be an object with train/val/test")
        absent = [s for s in ("train", "test") if s not in f]
        if absent:
            raise SplitError(path, f"fold {k + 1} is missing key(s): {', '.join(absent)}")
        extra = sorted(set(f) - set(_SUBSETS))
        if extra:
            raise SplitError(path, f"fold {k + 1} has unknown key(s): {', '.join(extra)}")
        folds.append(
            Fold(*(_id_list(f.get(s, []), f"fold {k + 1} {s!r}", path) for s in _SUBSETS))
        )
    split = Split(data["name"], tuple(folds), rule, description, unit, source=path)
    _check_folds(split, path)
    return split


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
            f"(allow missing patients to run on the {len(named) - len(missing)} present ones)",
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


def resolve_split(
    spec: str | Path,
    dataset: Any,
    k: int = 5,
    seed: int = 0,
    allow_missing: bool = False,
) -> SplitReport:
    """What ``--split FILE|NAME|auto`` means: load (or make) the split and validate it on ``dataset``.

    ``"auto"`` makes a seeded ``k``-fold split of the dataset's patients (:func:`make_kfold_split`).
    """
    if str(spec) == "auto":
        split = make_kfold_split(_patient_ids(dataset), k=k, seed=seed)
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
