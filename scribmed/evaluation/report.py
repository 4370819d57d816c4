"""Aggregate per-case metrics and write reports: ``per_case.csv``, ``summary.json``, box plots, markdown.

Aggregation is a plain function over a list of :class:`~scribmed.metrics.evaluator.CaseResult`,
so the same code summarises one fold, each fold, or all folds pooled (:func:`summarize_folds`).

Conventions written into every summary: ``hd95_units`` (mm or pixels), ``hd95_mode`` (medpy or
monai), ``empty_policy``, the count of every empty-mask event, and ``std_ddof`` (standard
deviations are population std, ``ddof=0``, as ``numpy.std``). Means skip records the policy
excludes and NaN distances (``nan_counted``), and the ``n`` of every mean says how many values
it holds.

Every file is written atomically: to a temporary file in the same directory, then
``os.replace``-d into place, so a crash never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from scribmed.runtime.files import atomic_write_bytes, atomic_write_text
from scribmed.metrics.evaluator import (
    EMPTY_EVENTS,
    CaseResult,
    ClassResult,
    EmptyPolicy,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = [
    "CSV_COLUMNS",
    "METRICS",
    "make_boxplot_figure",
    "make_fold_boxplot_figure",
    "plot_boxplots",
    "plot_fold_boxplots",
    "read_report",
    "summarize",
    "summarize_folds",
    "summary_markdown",
    "write_per_case_csv",
    "write_report",
    "write_summary_json",
]

METRICS: tuple[str, ...] = ("dice", "hd95", "asd")
CSV_COLUMNS: tuple[str, ...] = ("case", "class", "dice", "hd95", "asd", "empty", "class_index")
STD_DDOF = 0

PathLike = Union[str, os.PathLike]
FormatsArg = Union[str, Sequence[str], None]


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------


def _conventions(cases: Sequence[CaseResult]) -> dict[str, Any]:
    if not cases:
        raise ValueError("no cases to summarise")
    keys = ("hd95_units", "hd95_mode", "empty_policy", "connectivity")
    first = {k: getattr(cases[0], k) for k in keys}
    for case in cases[1:]:
        for k in keys:
            if getattr(case, k) != first[k]:
                raise ValueError(
                    f"cannot summarise cases computed with different {k}: "
                    f"{first[k]!r} ({cases[0].case_id}) vs {getattr(case, k)!r} ({case.case_id})"
                )
    return first


def _stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=STD_DDOF)), "n": int(arr.size)}


def summarize(cases: Sequence[CaseResult], checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Per-class mean/std/n of Dice, HD95 and ASD, the mean over classes, and empty-mask counts.

    Args:
        cases: results of :func:`~scribmed.metrics.evaluator.evaluate_case`, all computed with
            the same units, HD95 mode, empty policy and connectivity (else ``ValueError``).
        checkpoint: optional note of the checkpoint evaluated (e.g. ``"best"``), stored as is.

    Returns:
        A JSON-ready dict (NaN where a mean has no values; written as ``null``).
    """
    cases = list(cases)
    conv = _conventions(cases)
    by_class: dict[int, list[ClassResult]] = {}
    names: dict[int, str] = {}
    for case in cases:
        for rec in case.classes:
            by_class.setdefault(rec.class_index, []).append(rec)
            names.setdefault(rec.class_index, rec.class_name)
    per_class: dict[str, Any] = {}
    totals = {e: 0 for e in EMPTY_EVENTS}
    n_excluded = 0
    for idx in sorted(by_class):
        recs = by_class[idx]
        kept = [r for r in recs if not r.excluded]
        events = {e: sum(r.empty == e for r in recs) for e in EMPTY_EVENTS}
        for e in EMPTY_EVENTS:
            totals[e] += events[e]
        excluded = len(recs) - len(kept)
        n_excluded += excluded
        entry: dict[str, Any] = {"class_index": idx, "n": len(recs)}
        for m in METRICS:
            entry[m] = _stats([getattr(r, m) for r in kept])
        entry["empty"] = events
        entry["excluded"] = excluded
        per_class[names[idx]] = entry
    overall = {}
    for m in METRICS:
        means = [c[m]["mean"] for c in per_class.values() if not math.isnan(c[m]["mean"])]
        overall[m] = float(np.mean(means)) if means else math.nan
    summary: dict[str, Any] = {
        "n_cases": len(cases),
        "hd95_units": conv["hd95_units"],
        "hd95_mode": conv["hd95_mode"],
        "empty_policy": conv["empty_policy"],
        "connectivity": conv["connectivity"],
        "std_ddof": STD_DDOF,
        "classes": per_class,
        "overall": overall,
        "empty_events": totals,
        "n_excluded": n_excluded,
    }
    if checkpoint is not None:
        summary["checkpoint"] = checkpoint
    return summary


def summarize_folds(folds: Mapping[str, Sequence[CaseResult]], checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Summaries per fold, across folds (mean ± std of the fold means) and pooled over all cases.

    ``across_folds`` is the papers' convention (per-fold mean of per-volume scores, then mean
    and std over folds); ``pooled`` treats all out-of-fold cases as one set.
    """
    if not folds:
        raise ValueError("no folds to summarise")
    per_fold = {str(k): summarize(v, checkpoint) for k, v in folds.items()}
    pooled = summarize([c for v in folds.values() for c in v], checkpoint)
    across: dict[str, Any] = {"classes": {}, "overall": {}, "n_folds": len(per_fold)}
    for name in pooled["classes"]:
        across["classes"][name] = {
            m: _stats([s["classes"][name][m]["mean"] for s in per_fold.values() if name in s["classes"]])
            for m in METRICS
        }
    for m in METRICS:
        across["overall"][m] = _stats([s["overall"][m] for s in per_fold.values()])
    return {"folds": per_fold, "across_folds": across, "pooled": pooled}


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------


def _pm(stat: Mapping[str, Any], digits: int) -> str:
    if stat["n"] == 0 or math.isnan(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def provenance_lines(provenance: Any) -> list[str]:
    """Markdown lines saying which inputs were synthesised (empty when none), for every report."""
    if not provenance:
        return []
    lines = []
    scribbles = provenance.get("scribbles") if isinstance(provenance, dict) else None
    if scribbles and scribbles.get("synthetic"):
        lines.append(f"**Scribbles: synthetic**, synthesised from the full labels ({scribbles.get('method', '?')}, "
                     f"{scribbles.get('style', '?')}, seed {scribbles.get('seed', '?')}); not annotator scribbles.")
    others = sorted(k for k in provenance if k != "scribbles")
    if others:
        lines.append("Provenance: " + "; ".join(f"{k}: {provenance[k]}" for k in others) + ".")
    return [*lines, ""] if lines else []


def summary_markdown(summary: Mapping[str, Any], digits: int = 3, hd_digits: int = 2) -> str:
    """A paper-style table: ``class | Dice (mean ± std) | HD95 <units> (mean ± std) | n``.

    The HD95 cell notes its own ``n`` when it differs from the class's (empty-mask events),
    and a last line states the conventions and the empty-mask counts.
    """
    units = summary["hd95_units"]
    lines = [
        *provenance_lines(summary.get("provenance")),
        f"| class | Dice (mean ± std) | HD95 {units} (mean ± std) | n |",
        "|---|---|---|---|",
    ]
    for name, entry in summary["classes"].items():
        hd = _pm(entry["hd95"], hd_digits)
        if entry["hd95"]["n"] != entry["n"]:
            hd += f" (n={entry['hd95']['n']})"
        lines.append(f"| {name} | {_pm(entry['dice'], digits)} | {hd} | {entry['n']} |")
    ov = summary["overall"]
    dice = "n/a" if math.isnan(ov["dice"]) else f"{ov['dice']:.{digits}f}"
    hd = "n/a" if math.isnan(ov["hd95"]) else f"{ov['hd95']:.{hd_digits}f}"
    lines.append(f"| mean | {dice} | {hd} | {summary['n_cases']} |")
    ev = summary["empty_events"]
    lines.append("")
    lines.append(
        f"HD95: {summary['hd95_mode']} convention, {units}; empty-mask policy {summary['empty_policy']} "
        f"(both_empty {ev['both_empty']}, pred_empty {ev['pred_empty']}, ref_empty {ev['ref_empty']}); "
        f"{summary['n_cases']} cases."
        + (f" Checkpoint: {summary['checkpoint']}." if "checkpoint" in summary else "")
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_ready(obj.item())
    return obj


def write_summary_json(summary: Mapping[str, Any], path: PathLike) -> Path:
    """Atomically write a summary as JSON (NaN/inf become ``null``)."""
    return atomic_write_text(path, json.dumps(_json_ready(summary), indent=2, allow_nan=False) + "\n")


def write_per_case_csv(cases: Iterable[CaseResult], path: PathLike) -> Path:
    """Atomically write one row per case and class: :data:`CSV_COLUMNS`.

    Floats are written with full precision (``repr``), NaN as ``nan``; ``empty`` is ``""`` or
    the event name.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case in cases:
        for rec in case.classes:
            writer.writerow(
                [case.case_id, rec.class_name, repr(rec.dice), repr(rec.hd95), repr(rec.asd),
                 rec.empty or "", rec.class_index]
            )
    return atomic_write_text(path, buf.getvalue())


def read_report(out_dir: PathLike) -> list[CaseResult]:
    """Read back the :class:`CaseResult` list of a report folder (``per_case.csv`` + ``summary.json``).

    Lets a merge step summarise folds that were evaluated by separate processes.
    """
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "summary.json").read_text())
    policy = EmptyPolicy(meta["empty_policy"])
    cases: dict[str, list[ClassResult]] = {}
    with open(out_dir / "per_case.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            event = row["empty"] or None
            cases.setdefault(row["case"], []).append(
                ClassResult(
                    int(row["class_index"]), row["class"], float(row["dice"]), float(row["hd95"]),
                    float(row["asd"]), event, policy is EmptyPolicy.SKIP and event is not None,
                )
            )
    return [
        CaseResult(cid, tuple(recs), meta["hd95_units"], meta["hd95_mode"], meta["empty_policy"],
                   int(meta.get("connectivity", 1)))
        for cid, recs in cases.items()
    ]


def _class_values(cases: Sequence[CaseResult], metric: str, class_index: int) -> list[float]:
    """Finite values of ``metric`` for one class, excluded records left out."""
    out = []
    for case in cases:
        for rec in case.classes:
            v = getattr(rec, metric)
            if rec.class_index == class_index and not rec.excluded and not math.isnan(v):
                out.append(v)
    return out


def _class_order(cases: Iterable[CaseResult]) -> dict[int, str]:
    order: dict[int, str] = {}
    for case in cases:
        for rec in case.classes:
            order.setdefault(rec.class_index, rec.class_name)
    return dict(sorted(order.items()))


def _hd95_label(conv: Mapping[str, Any]) -> str:
    return f"HD95 ({conv['hd95_units']})"


def _short_fold(name: str) -> str:
    """``fold_3`` → ``3`` (tick labels under each box); other names are kept."""
    return name[len("fold_"):] if name.startswith("fold_") and name[len("fold_"):] else name


def make_fold_boxplot_figure(folds: Mapping[str, Sequence[CaseResult]], title: Optional[str] = None) -> "Figure":
    """The figure of :func:`plot_fold_boxplots`: Dice (top) and HD95 (bottom) per class, one box per fold.

    Boxes are coloured by class (:func:`scribmed.runtime.figures.class_colour`, the overlays'
    colours); each box is labelled with its fold under the axis, the class name below. The title
    (default: what is plotted, the folds and the HD95 convention) is wrapped to the figure width.
    """
    from scribmed.runtime.figures import (
        BOXPLOT_STYLE,
        class_colour,
        new_figure,
        set_title,
        style_boxes,
    )

    names = [str(k) for k in folds]
    all_cases = [c for v in folds.values() for c in v]
    conv = _conventions(all_cases)
    order = _class_order(all_cases)
    fig = new_figure((max(5.0, 1.5 + 0.55 * (len(names) + 1) * len(order)), 7.2))
    for row, (metric, ylabel) in enumerate((("dice", "Dice"), ("hd95", _hd95_label(conv)))):
        ax = fig.add_subplot(2, 1, row + 1)
        positions, data, colours, gids, ticks = [], [], [], [], []
        for ci, c in enumerate(order):
            base = ci * (len(names) + 1)
            for fi, name in enumerate(names):
                vals = _class_values(folds[name], metric, c)
                data.append(vals if vals else [math.nan])
                positions.append(base + fi + 1)
                colours.append(class_colour(c))
                gids.append(f"class_{c}")
            ticks.append(base + (len(names) + 1) / 2)
        box = ax.boxplot(data, positions=positions, widths=0.7, **BOXPLOT_STYLE)
        style_boxes(box, colours, gids=gids)
        ax.set_xticks(ticks, list(order.values()))
        if len(names) > 1:  # each box's fold under it, the class name below
            ax.xaxis.remove_overlapping_locs = False  # a box at a group's centre keeps its label
            ax.set_xticks(positions, [_short_fold(n) for n in names] * len(order), minor=True, fontsize=7)
            ax.tick_params(axis="x", which="major", length=0, pad=14)
        ax.set_xlim(0, len(order) * (len(names) + 1))
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        if metric == "dice":
            ax.set_ylim(-0.02, 1.02)
    folds_text = ", ".join(names)
    set_title(fig, title or (f"Dice and HD95 per class, one box per fold\n"
                             f"folds {folds_text}; HD95 {conv['hd95_mode']}, {conv['hd95_units']}"))
    return fig


def plot_fold_boxplots(
    folds: Mapping[str, Sequence[CaseResult]], path: PathLike, title: Optional[str] = None,
    formats: FormatsArg = None,
) -> Path:
    """Dice (top) and HD95 (bottom) per class, one box per fold, saved atomically as PNG.

    ``formats`` (default :func:`scribmed.runtime.figures.figure_formats`) may add a PDF beside it.
    """
    from scribmed.runtime.figures import save_figure

    return save_figure(make_fold_boxplot_figure(folds, title), path, formats)


def make_boxplot_figure(cases: Sequence[CaseResult], title: Optional[str] = None) -> "Figure":
    """The figure of :func:`plot_boxplots`: per-class Dice and HD95 box plots side by side.

    Excluded records and NaN distances are left out of the boxes; boxes are coloured by class
    (:func:`scribmed.runtime.figures.class_colour`).
    """
    from scribmed.runtime.figures import (
        BOXPLOT_STYLE,
        class_colour,
        new_figure,
        set_title,
        style_boxes,
    )

    cases = list(cases)
    conv = _conventions(cases)
    order = _class_order(cases)
    idx = list(order)
    fig = new_figure((max(6.0, 3 + 1.6 * len(idx)), 4.2))
    labels = [order[c] for c in idx]
    for k, (metric, ylabel) in enumerate((("dice", "Dice"), ("hd95", _hd95_label(conv)))):
        ax = fig.add_subplot(1, 2, k + 1)
        data = [_class_values(cases, metric, c) for c in idx]
        box = ax.boxplot([d if d else [math.nan] for d in data], **BOXPLOT_STYLE)
        style_boxes(box, [class_colour(c) for c in idx], gids=[f"class_{c}" for c in idx])
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        if metric == "dice":
            ax.set_ylim(-0.02, 1.02)
    set_title(fig, title or f"{len(cases)} cases, HD95 {conv['hd95_mode']}, empty policy {conv['empty_policy']}")
    return fig


def plot_boxplots(
    cases: Sequence[CaseResult], path: PathLike, title: Optional[str] = None, formats: FormatsArg = None
) -> Path:
    """Per-class box plots of Dice and HD95 side by side, saved atomically as PNG.

    matplotlib is imported here only, with the Agg canvas (no display, no global backend change).
    ``formats`` (default :func:`scribmed.runtime.figures.figure_formats`) may add a PDF beside it.
    """
    from scribmed.runtime.figures import save_figure

    return save_figure(make_boxplot_figure(cases, title), path, formats)


def write_report(
    cases: Sequence[CaseResult],
    out_dir: PathLike,
    plot: bool = True,
    checkpoint: Optional[str] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    formats: FormatsArg = None,
) -> dict[str, Path]:
    """Write ``per_case.csv``, ``summary.json``, ``summary.md`` and ``boxplot.png`` into ``out_dir``.

    ``provenance`` (e.g. the dataset's synthesised-scribble record) goes into ``summary.json`` and
    is stated at the top of ``summary.md``. ``formats`` (default
    :func:`scribmed.runtime.figures.figure_formats`) may add ``boxplot.pdf``.

    Returns:
        ``{"per_case", "summary", "markdown", "plot"}`` → written paths (no ``plot`` if disabled).
    """
    cases = list(cases)
    out_dir = Path(out_dir)
    summary = summarize(cases, checkpoint)
    if provenance:
        summary["provenance"] = dict(provenance)
    paths = {
        "per_case": write_per_case_csv(cases, out_dir / "per_case.csv"),
        "summary": write_summary_json(summary, out_dir / "summary.json"),
        "markdown": atomic_write_text(out_dir / "summary.md", summary_markdown(summary)),
    }
    if plot:
        paths["plot"] = plot_boxplots(cases, out_dir / "boxplot.png", formats=formats)
    return paths
