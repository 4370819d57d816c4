"""Pseudo-label quality against ground truth: per-class Dice per round (SAM-SP's pseudo-label table).

Two summaries per class over a set of cases:

* **pooled** Dice (the headline): ``Σ 2|P∩G| / Σ (|P| + |G|)`` with
  the sums over every slice of every case — big structures weigh more, and a class missing from
  some slices never produces an undefined value unless it is absent everywhere (then ``None``);
* **mean per case**: the mean over cases of each case's 3D Dice (``1.0`` for a case where the
  class is absent in both, as :func:`scribmed.metrics.dc`).

``quality.json`` (written atomically, one entry per round, round 0 = zero-shot)::

    {"rounds": [{"round": 0, "dice": {"RV": 0.53, "Myo": 0.01, "LV": 0.72}, "cases": 6,
                 "pooled": true, "mean_per_case": {...}, "per_case": {"<case_id>": {...}}, ...}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_output
from scribmed.metrics import dc

PathLike = Union[str, Path]

__all__ = [
    "DiceSummary",
    "append_round",
    "case_dice_counts",
    "dice_summary",
    "format_quality_table",
    "pseudo_label_dice",
    "quality_entry",
    "read_quality",
]


def case_dice_counts(pred: Any, ref: Any, classes: Iterable[int]) -> dict[int, tuple[int, int]]:
    """``{class: (|P∩G|, |P| + |G|)}`` voxel counts of one case (shapes must agree)."""
    p, g = np.asarray(pred), np.asarray(ref)
    if p.shape != g.shape:
        raise ValueError(f"pseudo label shape {p.shape} differs from the reference shape {g.shape}")
    out = {}
    for k in classes:
        pk, gk = p == k, g == k
        out[int(k)] = (int(np.count_nonzero(pk & gk)), int(np.count_nonzero(pk)) + int(np.count_nonzero(gk)))
    return out


@dataclass(frozen=True)
class DiceSummary:
    """Per-class Dice over a set of cases (keys are class names; ``None`` = undefined)."""

    pooled: dict[str, Optional[float]]
    mean_per_case: dict[str, Optional[float]]
    cases: int


def dice_summary(pairs: Iterable[tuple[Any, Any]], class_map: ClassMap) -> DiceSummary:
    """Pooled and mean-per-case Dice of ``(pseudo label, reference)`` volume pairs.

    Pooled: ``Σ 2|P∩G| / Σ (|P| + |G|)`` over all slices of all cases, ``None`` when the class is
    absent from every P and G. Mean per case: mean of the cases' 3D Dice (1.0 for a case where
    the class is absent in both).
    """
    fg = class_map.foreground
    inter = {k: 0 for k in fg}
    total = {k: 0 for k in fg}
    per_case: dict[int, list[float]] = {k: [] for k in fg}
    n = 0
    for pred, ref in pairs:
        for k, (i, t) in case_dice_counts(pred, ref, fg).items():
            inter[k] += i
            total[k] += t
            per_case[k].append(1.0 if t == 0 else 2.0 * i / t)
        n += 1
    names = class_map.names
    pooled = {names[k]: (None if total[k] == 0 else 2.0 * inter[k] / total[k]) for k in fg}
    means = {names[k]: (float(np.mean(per_case[k])) if per_case[k] else None) for k in fg}
    return DiceSummary(pooled, means, n)


def pseudo_label_dice(pairs: Iterable[tuple[Any, Any]], class_map: ClassMap) -> dict[str, Optional[float]]:
    """Pooled per-class Dice ``{class name: Dice}`` of ``(pseudo label, reference)`` volume pairs.

    See :func:`dice_summary` (which also gives the mean per case).
    """
    return dice_summary(pairs, class_map).pooled


def quality_entry(
    round_index: int,
    preds: Mapping[str, Any],
    refs: Mapping[str, Any],
    class_map: ClassMap,
    **extra: Any,
) -> dict[str, Any]:
    """One ``quality.json`` round entry over the cases present in both ``preds`` and ``refs``.

    Keys: ``round``, ``dice`` (pooled, by class name), ``cases``, ``pooled`` (True),
    ``mean_per_case``, ``per_case`` (``{case_id: {class name: Dice}}``), plus ``extra``.
    """
    ids = [cid for cid in preds if cid in refs and refs[cid] is not None]
    summary = dice_summary(((preds[c], refs[c]) for c in ids), class_map)
    per_case = {}
    for cid in ids:
        p, g = np.asarray(preds[cid]), np.asarray(refs[cid])
        per_case[cid] = {class_map.names[k]: dc(p == k, g == k) for k in class_map.foreground}
    entry: dict[str, Any] = {
        "round": int(round_index),
        "dice": summary.pooled,
        "cases": summary.cases,
        "pooled": True,
        "mean_per_case": summary.mean_per_case,
        "per_case": per_case,
    }
    entry.update(extra)
    return entry


def read_quality(path: PathLike) -> dict[str, Any]:
    """The quality report (``{"rounds": []}`` when the file does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return {"rounds": []}
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise DataError(p, f"unreadable quality report ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rounds"), list):
        raise DataError(p, 'quality report is not of the form {"rounds": [...]}')
    return doc


def append_round(path: PathLike, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Add (or replace) the entry of ``entry["round"]`` in the report at ``path``, atomically.

    Returns the whole report, rounds sorted by round number.
    """
    doc = read_quality(path)
    r = int(entry["round"])
    rounds = [e for e in doc["rounds"] if int(e.get("round", -1)) != r]
    rounds.append(dict(entry))
    doc["rounds"] = sorted(rounds, key=lambda e: int(e["round"]))
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return doc


def format_quality_table(doc: Mapping[str, Any], class_names: Optional[Iterable[str]] = None) -> str:
    """A Markdown table of pooled Dice per round (what ``scribmed pseudolabel`` prints)."""
    rounds = list(doc.get("rounds", []))
    if class_names is None:
        class_names = list(rounds[0]["dice"]) if rounds else []
    names = list(class_names)

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.3f}"

    lines = [
        "| round | " + " | ".join(names) + " | cases |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for e in rounds:
        label = f"{e['round']} (zero-shot)" if int(e["round"]) == 0 else str(e["round"])
        lines.append(f"| {label} | " + " | ".join(fmt(e["dice"].get(n)) for n in names) + f" | {e['cases']} |")
    return "\n".join(lines)
