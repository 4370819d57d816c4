"""Where a bundle is and what it runs on: the shipped bundle folder and the cases of a fold.

``bundle_root`` of every shipped config is :func:`bundle_dir`; the semantic bundles' ``fold_cases``
and every inference / evaluate workflow's case list come from :func:`fold_case_lists` and
:func:`select_cases` (the split checked as ``scribmed cv`` checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scribmed.data.case import Case
from scribmed.data.errors import DataError
from scribmed.data.splits import fold_cases, resolve_split
from scribmed.runtime.shipped import shipped_dir

__all__ = ["BUNDLES_DIR", "bundle_dir", "fold_case_lists", "select_cases"]

#: The bundles shipped with scribmed (inside the installed package, or ``<repo>/bundles``).
BUNDLES_DIR = shipped_dir("bundles")

_SUBSETS = ("train", "val", "test")


def bundle_dir(name: str) -> str:
    """Absolute path of the shipped bundle ``name`` (the default ``bundle_root`` of its configs).

    A copied bundle passes ``--bundle_root`` instead.

    Raises:
        DataError: no such shipped bundle.
    """
    path = BUNDLES_DIR / name
    if not (path / "configs").is_dir():
        raise DataError(path, "no such shipped bundle (see `scribmed bundle list`); pass --bundle_root <bundle folder>")
    return str(path)


def fold_case_lists(
    dataset: Any,
    split_file: str | Path,
    fold: int,
    allow_missing: bool = False,
    seed: int = 0,
) -> dict[str, list[Case]]:
    """The cases of one fold: ``{"train": [...], "val": [...], "test": [...]}``.

    Args:
        dataset: an opened :class:`~scribmed.data.dataset.Dataset`.
        split_file: split JSON path, a name in ``data_splits/`` (``acdc_5fold``) or ``"auto"``.
        fold: 1-based fold number, as on the command line and in the papers.
        allow_missing: run on the patients present when the split names absent ones
            (ACDC 001-080 against the 100-patient split).
        seed: seed of an ``"auto"`` split.

    Raises:
        SplitError: bad split file, missing patients (without ``allow_missing``), bad fold number.
        DataError: the fold has no training cases in this dataset.
    """
    report = resolve_split(split_file, dataset, seed=seed, allow_missing=allow_missing)
    ids = fold_cases(report.split, int(fold) - 1, dataset)
    if not ids["train"]:
        raise DataError(dataset.root, f"fold {fold} of split {report.split.name!r} has no training patient in this dataset")
    return {s: [dataset[c] for c in ids[s]] for s in _SUBSETS}


def select_cases(
    dataset: Any,
    which: str,
    split_file: str | Path,
    fold: int,
    allow_missing: bool = False,
    seed: int = 0,
) -> list[Case]:
    """Cases to predict: ``"all"`` cases of the dataset, or a fold's ``"test"``/``"val"``/``"train"`` cases."""
    if which == "all":
        return list(dataset.cases)
    if which not in _SUBSETS:
        raise ValueError(f"cases to predict must be 'all', 'test', 'val' or 'train', got {which!r}")
    return fold_case_lists(dataset, split_file, fold, allow_missing, seed)[which]
