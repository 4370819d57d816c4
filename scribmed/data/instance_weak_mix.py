"""The per-image mix of instance weak-label kinds (WISH's heterogeneous supervision).

:func:`assign_weak_kinds` gives each image of a dataset one kind of
:data:`~scribmed.data.instance_weak_labels.INSTANCE_WEAK_KINDS` in given ratios, by
largest-remainder counts (:func:`kind_counts`, the rules of
:mod:`scribmed.data.supervision_mix`) over a seeded shuffle.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from scribmed.data.instance_weak_labels import INSTANCE_WEAK_KINDS
from scribmed.data.supervision_mix import check_mix, mix_counts


def check_kind_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Ratios per kind in :data:`INSTANCE_WEAK_KINDS` order, checked: known kinds, finite, >= 0, sum 1 (1e-6)."""
    return check_mix(ratios, INSTANCE_WEAK_KINDS, "weak-label kind")


def kind_counts(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Images per kind out of ``n``: largest-remainder rounding of ``n * ratio`` (ties in kind order)."""
    return mix_counts(n, ratios, INSTANCE_WEAK_KINDS, "weak-label kind")


def assign_weak_kinds(case_ids: Sequence[str], ratios: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """WISH's heterogeneous mix: one weak-label kind per image, in the given ratios.

    Counts come from :func:`kind_counts`; the sorted ids are shuffled by
    ``numpy.random.default_rng(seed)`` and dealt the kinds in :data:`INSTANCE_WEAK_KINDS` order,
    so the same ids, ratios and seed give the same assignment in any input order.

    Raises:
        ValueError: repeated ids, unknown kinds, negative ratios or ratios not summing to 1.
    """
    unique = sorted(set(case_ids))
    if len(unique) != len(case_ids):
        raise ValueError("case ids must be unique")
    counts = kind_counts(len(unique), ratios)
    order = np.random.default_rng(seed).permutation(len(unique))
    kinds = [t for t in INSTANCE_WEAK_KINDS for _ in range(counts.get(t, 0))]
    return {unique[i]: kind for i, kind in zip(order, kinds)}


__all__ = [
    "assign_weak_kinds",
    "check_kind_ratios",
    "kind_counts",
]
