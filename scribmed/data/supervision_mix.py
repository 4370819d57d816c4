"""The supervision mix: which patients get which supervision type, reproducibly.

A mix maps supervision types (:data:`~scribmed.data.weak_labels.SUPERVISION_TYPES`) to shares
summing to 1; :func:`mix_counts` rounds ``n * share`` by largest remainder and
:func:`assign_supervision` hands the types out over a seeded shuffle of patient ids, so every frame
of a patient shares one type and the same ids, mix and seed always give the same assignment.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from scribmed.data.weak_labels import SUPERVISION_TYPES

MIX_TOLERANCE = 1e-6


def check_mix(mix: Mapping[str, float], kinds: Sequence[str] = SUPERVISION_TYPES,
              what: str = "supervision type") -> dict[str, float]:
    """A supervision mix in ``kinds`` order (default :data:`SUPERVISION_TYPES`), checked.

    ``kinds`` / ``what`` let other mixes (e.g. the per-image weak-label kinds of the instance
    recipes) share the checks and their messages.

    Raises:
        ValueError: an unknown type, a negative or non-finite share, or shares that do not sum
            to 1 within 1e-6.
    """
    unknown = sorted(set(mix) - set(kinds))
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)} (known: {', '.join(kinds)})")
    out = {t: float(mix[t]) for t in kinds if t in mix}
    bad = [f"{t}={v}" for t, v in out.items() if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"mix shares must be finite and >= 0, got {', '.join(bad)}")
    total = sum(out.values())
    if abs(total - 1.0) > MIX_TOLERANCE:
        raise ValueError(f"mix shares must sum to 1 (within {MIX_TOLERANCE:g}), got {total:.6g}")
    return out


def parse_mix(text: str) -> dict[str, float]:
    """``"full=0.1,box=0.3,point=0.3,scribble=0.3"`` -> a checked mix (see :func:`check_mix`)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"mix entries are TYPE=SHARE, got {part!r}")
        if name in mix:
            raise ValueError(f"supervision type {name!r} given twice")
        try:
            mix[name] = float(value)
        except ValueError:
            raise ValueError(f"share of {name!r} is not a number: {value!r}") from None
    if not mix:
        raise ValueError("empty mix; give e.g. full=0.1,box=0.3,point=0.3,scribble=0.3")
    return check_mix(mix)


def mix_counts(n: int, mix: Mapping[str, float], kinds: Sequence[str] = SUPERVISION_TYPES,
               what: str = "supervision type") -> dict[str, int]:
    """How many of ``n`` units get each type: largest-remainder rounding of ``n * share``.

    Floors first; the leftover units go to the largest fractional parts, ties in ``kinds`` order
    (default :data:`SUPERVISION_TYPES`). Counts sum to ``n``; types with share 0 get 0.
    """
    shares = check_mix(mix, kinds, what)
    exact = {t: n * s for t, s in shares.items()}
    counts = {t: int(math.floor(v + 1e-9)) for t, v in exact.items()}
    left = n - sum(counts.values())
    order = sorted(shares, key=lambda t: (-(exact[t] - counts[t]), list(kinds).index(t)))
    for t in order[: max(left, 0)]:
        counts[t] += 1
    return counts


def assign_supervision(ids: Sequence[str], mix: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Deterministically give each id (a patient, so every frame of a patient shares the type) a
    supervision type, with counts from :func:`mix_counts`.

    The sorted ids are shuffled by ``numpy.random.default_rng(seed)`` and cut into consecutive
    blocks in :data:`SUPERVISION_TYPES` order. The same ids, mix and seed give the same
    assignment in any input order.

    Returns:
        ``{id: type}`` for every id.
    """
    unique = sorted(set(ids))
    if len(unique) != len(ids):
        raise ValueError("ids must be unique (pass patient ids once each)")
    counts = mix_counts(len(unique), mix)
    order = np.random.default_rng(seed).permutation(len(unique))
    kinds = [t for t in SUPERVISION_TYPES for _ in range(counts.get(t, 0))]
    return {unique[i]: kind for i, kind in zip(order, kinds)}


__all__ = ["MIX_TOLERANCE", "assign_supervision", "check_mix", "mix_counts", "parse_mix"]
