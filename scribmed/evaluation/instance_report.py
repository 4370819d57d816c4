"""Instance reports: summaries, tables, box plots and ``per_case.csv`` of instance results.

The instance counterpart of :mod:`scribmed.metrics.evaluator` + :mod:`scribmed.evaluation.report`,
writing the same kinds of files (``per_case.csv``, ``summary.json``, ``summary.md``,
``boxplot.png``), each atomically. A reader tells the two kinds apart by ``summary.json``'s
``"task": "instance"`` (semantic summaries have no ``task`` key) and by the CSV header
(:data:`INSTANCE_CSV_COLUMNS`, first columns ``case, n_ref, n_pred``; semantic: ``case,
class``).

Conventions written into every summary (``conventions``): the DSB thresholds, the matching IoU
of F1 and PQ, strict matching (IoU > t), the AJI definition (original, Kumar et al. 2017) next
to AJI+, the empty-map values, and ``std_ddof`` 0 (population std, as the semantic reports).
Empty-map events use the semantic evaluator's names (``both_empty``, ``pred_empty``,
``ref_empty``; mutually exclusive) and are counted per summary.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

from scribmed.runtime.files import atomic_write_text
from scribmed.metrics.evaluator import EMPTY_EVENTS, empty_event
from scribmed.metrics.instance import DSB_THRESHOLDS
from scribmed.metrics.instance_evaluator import INSTANCE_METRICS, InstanceCaseResult
from scribmed.evaluation.report import (
    STD_DDOF,
    _pm,
    _stats,
    provenance_lines,
    write_summary_json,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = [
    "INSTANCE_CSV_COLUMNS",
    "instance_cv_markdown",
    "instance_summary_markdown",
    "make_instance_boxplot_figure",
    "plot_instance_boxplots",
    "plot_instance_fold_boxplots",
    "read_instance_report",
    "summarize_instance",
    "summarize_instance_folds",
    "write_instance_csv",
    "write_instance_report",
]

TASK = "instance"
INSTANCE_CSV_COLUMNS: tuple[str, ...] = ("case", "n_ref", "n_pred", *INSTANCE_METRICS, "thresholds", "match_iou")
METRIC_LABELS: dict[str, str] = {
    "dsb_score": "DSB score (IoU 0.5:0.95)",
    "f1": "F1",
    "aji": "AJI",
    "aji_plus": "AJI+",
    "pq": "PQ",
    "sq": "SQ",
    "rq": "RQ",
    "dice": "Dice (foreground)",
}

PathLike = Union[str, os.PathLike]
FormatsArg = Union[str, Sequence[str], None]


# --------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------


def _conventions(results: Sequence[InstanceCaseResult]) -> dict[str, Any]:
    if not results:
        raise ValueError("no cases to summarise")
    first = results[0]
    for res in results[1:]:
        for key in ("thresholds", "match_iou"):
            if getattr(res, key) != getattr(first, key):
                raise ValueError(
                    f"cannot summarise cases computed with different {key}: "
                    f"{getattr(first, key)!r} ({first.case_id}) vs {getattr(res, key)!r} ({res.case_id})"
                )
    return {
        "thresholds": list(first.thresholds),
        "match_iou": first.match_iou,
        "matching": "one-to-one, IoU strictly above the threshold (IoU > t); t >= 0.5: every such pair "
                    "(unique); t < 0.5: optimal assignment, most matches then largest total IoU",
        "dsb_score": "mean over thresholds of TP / (TP + FP + FN) (2018 Data Science Bowl)",
        "aji": "original (Kumar et al. 2017): each reference takes its largest-IoU overlapping prediction "
               "(ties: lowest id), a prediction may be taken by several references; unused predictions "
               "add their area to the union",
        "aji_plus": "one-to-one pairing of largest total IoU (Graham et al. 2019)",
        "pq": "Kirillov et al. 2019: SQ = mean matched IoU, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ * RQ",
        "dice": "foreground Dice of pred > 0 vs ref > 0",
        "empty": "both maps empty: every score 1.0; exactly one empty: every score 0.0",
    }


def summarize_instance(results: Sequence[InstanceCaseResult], checkpoint: Optional[str] = None) -> dict[str, Any]:
    """Mean ± std (population, ``ddof=0``) and ``n`` of every instance metric, plus counts.

    Args:
        results: per-case results, all computed with the same thresholds and matching IoU
            (else ``ValueError``).
        checkpoint: the checkpoint evaluated (``"best"``, ``"last"``, a path...), stored as is;
            ``None`` is written too, so a summary always states it.

    Returns:
        A JSON-ready dict: ``task`` ``"instance"``, ``n_cases``, ``std_ddof``, ``metrics``
        ``{name: {mean, std, n}}``, ``instances`` (totals and mean ± std per case of reference
        and predicted instances), ``empty_events`` ``{event: cases}``, ``conventions`` and
        ``checkpoint``.
    """
    results = list(results)
    conv = _conventions(results)
    events = {e: sum(r.empty == e for r in results) for e in EMPTY_EVENTS}
    return {
        "task": TASK,
        "n_cases": len(results),
        "std_ddof": STD_DDOF,
        "metrics": {m: _stats([getattr(r, m) for r in results]) for m in INSTANCE_METRICS},
        "instances": {
            "n_ref": int(sum(r.n_ref for r in results)),
            "n_pred": int(sum(r.n_pred for r in results)),
            "n_ref_per_case": _stats([float(r.n_ref) for r in results]),
            "n_pred_per_case": _stats([float(r.n_pred) for r in results]),
        },
        "empty_events": events,
        "conventions": conv,
        "checkpoint": checkpoint,
    }


def summarize_instance_folds(
    folds: Mapping[str, Sequence[InstanceCaseResult]], checkpoint: Optional[str] = None
) -> dict[str, Any]:
    """Summaries per fold, across folds (mean ± std of the fold means) and pooled out-of-fold.

    Mirrors :func:`scribmed.evaluation.report.summarize_folds`: ``folds`` ``{name: summary}``,
    ``across_folds`` (the papers' convention) ``{"metrics": {name: {mean, std, n}}, "n_folds"}``
    and ``pooled`` (all out-of-fold cases as one set, nnU-Net's convention), plus ``task``.
    """
    if not folds:
        raise ValueError("no folds to summarise")
    per_fold = {str(k): summarize_instance(v, checkpoint) for k, v in folds.items()}
    pooled = summarize_instance([r for v in folds.values() for r in v], checkpoint)
    across = {
        "metrics": {m: _stats([s["metrics"][m]["mean"] for s in per_fold.values()]) for m in INSTANCE_METRICS},
        "n_folds": len(per_fold),
    }
    return {"task": TASK, "folds": per_fold, "across_folds": across, "pooled": pooled}


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------


def _label(metric: str, conv: Mapping[str, Any]) -> str:
    if metric in ("f1", "pq", "sq", "rq"):
        return f"{METRIC_LABELS[metric]} (IoU > {conv['match_iou']:g})"
    if metric == "dsb_score" and list(conv["thresholds"]) != list(DSB_THRESHOLDS):
        return f"DSB score (IoU > {', '.join(f'{t:g}' for t in conv['thresholds'])})"
    return METRIC_LABELS[metric]


def _footnote(summary: Mapping[str, Any]) -> str:
    ev = summary["empty_events"]
    conv = summary["conventions"]
    ts = conv["thresholds"]
    inst = summary["instances"]
    text = (
        f"{summary['n_cases']} cases, {inst['n_ref']} reference and {inst['n_pred']} predicted instances; "
        f"matching one-to-one at IoU strictly above the threshold; DSB thresholds {ts[0]:g}..{ts[-1]:g} "
        f"({len(ts)} values); AJI original definition (Kumar et al. 2017); empty maps "
        f"(both_empty {ev['both_empty']}, pred_empty {ev['pred_empty']}, ref_empty {ev['ref_empty']}) "
        "score 1.0 when both are empty, 0.0 when one is; std is the population std."
    )
    if summary.get("checkpoint") is not None:
        text += f" Checkpoint: {summary['checkpoint']}."
    return text


def instance_summary_markdown(summary: Mapping[str, Any], digits: int = 3) -> str:
    """A paper-ready table ``metric | mean ± std | n`` of a :func:`summarize_instance` summary.

    Provenance lines (synthesised inputs) come first, as in the semantic report; a last line
    states the conventions, the instance and empty-map counts and the checkpoint.
    """
    conv = summary["conventions"]
    lines = [*provenance_lines(summary.get("provenance")), "| metric | mean ± std | n |", "|---|---|---|"]
    for m in INSTANCE_METRICS:
        lines.append(f"| {_label(m, conv)} | {_pm(summary['metrics'][m], digits)} | {summary['metrics'][m]['n']} |")
    lines += ["", _footnote(summary)]
    return "\n".join(lines) + "\n"


def instance_cv_markdown(summary: Mapping[str, Any], digits: int = 3) -> str:
    """The cross-validation table of a :func:`summarize_instance_folds` summary.

    ``metric | fold ... (mean ± std) | across folds (mean ± std of fold means) | pooled``; the
    last line is the pooled summary's conventions footnote.
    """
    folds = summary["folds"]
    pooled = summary["pooled"]
    conv = pooled["conventions"]
    names = list(folds)
    header = "| metric | " + " | ".join(f"fold {k}" for k in names) + " | across folds | pooled |"
    lines = [
        *provenance_lines(summary.get("provenance")),
        header,
        "|" + "---|" * (len(names) + 3),
    ]
    for m in INSTANCE_METRICS:
        cells = [_pm(folds[k]["metrics"][m], digits) for k in names]
        lines.append(
            f"| {_label(m, conv)} | " + " | ".join(cells)
            + f" | {_pm(summary['across_folds']['metrics'][m], digits)} | {_pm(pooled['metrics'][m], digits)} |"
        )
    counts = " | ".join(str(folds[k]["n_cases"]) for k in names)
    lines.append(f"| cases | {counts} | {summary['across_folds']['n_folds']} folds | {pooled['n_cases']} |")
    lines += [
        "",
        "Fold cells: mean ± std over the fold's cases; across folds: mean ± std of the fold means "
        "(the papers' convention); pooled: all out-of-fold cases as one set. " + _footnote(pooled),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _cell(res: InstanceCaseResult, name: str) -> str:
    value = getattr(res, name)
    if name == "thresholds":
        return ";".join(repr(float(t)) for t in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_instance_csv(results: Iterable[InstanceCaseResult], path: PathLike) -> Path:
    """Atomically write one row per case: :data:`INSTANCE_CSV_COLUMNS`.

    Floats at full precision (``repr``), so :func:`read_instance_report` restores them
    exactly; ``thresholds`` as ``;``-separated floats; a ``None`` case id as an empty cell.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(INSTANCE_CSV_COLUMNS)
    for res in results:
        row = ["" if res.case_id is None else res.case_id]
        row += [_cell(res, c) for c in INSTANCE_CSV_COLUMNS[1:]]
        writer.writerow(row)
    return atomic_write_text(path, buf.getvalue())


def read_instance_report(out_dir: PathLike) -> list[InstanceCaseResult]:
    """The :class:`InstanceCaseResult` list of a report folder written by :func:`write_instance_report`.

    Every field round-trips exactly (an empty case id reads back as ``None``). Lets a merge
    step summarise folds evaluated by separate processes.

    Raises:
        ValueError: the folder holds a semantic report (``summary.json`` without
            ``"task": "instance"``) or a CSV with other columns.
    """
    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "summary.json").read_text())
    if meta.get("task") != TASK:
        raise ValueError(f"{out_dir} holds a semantic report, not an instance one: read it with read_report")
    with open(out_dir / "per_case.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != INSTANCE_CSV_COLUMNS:
            raise ValueError(f"{out_dir / 'per_case.csv'} columns {reader.fieldnames} are not {INSTANCE_CSV_COLUMNS}")
        out = []
        for row in reader:
            values: dict[str, Any] = {
                "case_id": row["case"] or None,
                "n_ref": int(row["n_ref"]),
                "n_pred": int(row["n_pred"]),
                "thresholds": tuple(float(t) for t in row["thresholds"].split(";")),
                "match_iou": float(row["match_iou"]),
            }
            values.update({m: float(row[m]) for m in INSTANCE_METRICS})
            out.append(InstanceCaseResult(**{f.name: values[f.name] for f in fields(InstanceCaseResult)}))
    return out


def make_instance_boxplot_figure(
    folds: Mapping[str, Sequence[InstanceCaseResult]], title: Optional[str] = None
) -> "Figure":
    """The figure of :func:`plot_instance_fold_boxplots`: every instance metric, one box per fold.

    All metrics lie in [0, 1], so they share one axis. Boxes are coloured by fold with the
    colour-blind-safe palette (:func:`scribmed.runtime.figures.palette_colour`; a legend names
    the folds when there are several); the title is wrapped to the axes width.
    """
    from scribmed.runtime.figures import (
        BOXPLOT_STYLE,
        new_figure,
        palette_colour,
        set_title,
        style_boxes,
    )

    names = [str(k) for k in folds]
    groups = list(folds.values())
    if not names or not any(groups):
        raise ValueError("no cases to plot")
    conv = _conventions([r for g in groups for r in g])
    width = max(6.0, 1.0 + 0.45 * len(INSTANCE_METRICS) * (len(names) + 1))
    fig = new_figure((width, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    colours = [palette_colour(i) for i in range(len(names))]
    ticks = []
    for mi, m in enumerate(INSTANCE_METRICS):
        base = mi * (len(names) + 1)
        for fi, results in enumerate(groups):
            vals = [getattr(r, m) for r in results if not math.isnan(getattr(r, m))]
            box = ax.boxplot([vals if vals else [math.nan]], positions=[base + fi + 1], widths=0.7, **BOXPLOT_STYLE)
            style_boxes(box, [colours[fi]], gids=[f"fold_{names[fi]}"])
        ticks.append(base + (len(names) + 1) / 2)
    ax.set_xticks(ticks, [_label(m, conv).replace(" (", "\n(") for m in INSTANCE_METRICS], fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    if len(names) > 1:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor=c, edgecolor="black", alpha=0.45, label=f"fold {n}")
                           for c, n in zip(colours, names)],
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    n_cases = sum(len(g) for g in groups)
    set_title(ax, title or f"instance metrics, {n_cases} cases" + (", one box per fold" if len(names) > 1 else ""))
    return fig


def plot_instance_fold_boxplots(
    folds: Mapping[str, Sequence[InstanceCaseResult]], path: PathLike, title: Optional[str] = None,
    formats: FormatsArg = None,
) -> Path:
    """Box plots of every instance metric, one box per fold within each metric's group.

    matplotlib is imported here only, with the Agg canvas (no display, no global backend change);
    the figure (:func:`make_instance_boxplot_figure`) uses constrained layout and is saved with
    ``bbox_inches="tight"`` so no label is clipped. Saved atomically as PNG, plus a PDF beside it
    when ``formats`` (default :func:`scribmed.runtime.figures.figure_formats`) asks.
    """
    from scribmed.runtime.figures import save_figure

    return save_figure(make_instance_boxplot_figure(folds, title), path, formats)


def plot_instance_boxplots(
    results: Sequence[InstanceCaseResult], path: PathLike, title: Optional[str] = None, formats: FormatsArg = None
) -> Path:
    """Box plots of every instance metric of one set of cases (one box per metric), as PNG."""
    return plot_instance_fold_boxplots({"all": list(results)}, path, title, formats)


def write_instance_report(
    results: Sequence[InstanceCaseResult],
    out_dir: PathLike,
    checkpoint: Optional[str] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    plot: bool = True,
    formats: FormatsArg = None,
) -> dict[str, Path]:
    """Write ``per_case.csv``, ``summary.json``, ``summary.md`` and ``boxplot.png`` into ``out_dir``.

    Each file is written atomically (temporary file in the same folder, then ``os.replace``).
    ``provenance`` (e.g. the dataset's synthesised-scribble record) goes into ``summary.json``
    and is stated at the top of ``summary.md``. ``formats`` (default
    :func:`scribmed.runtime.figures.figure_formats`) may add ``boxplot.pdf``.

    Returns:
        ``{"per_case", "summary", "markdown", "plot"}`` → written paths (no ``plot`` if disabled).
    """
    results = list(results)
    out_dir = Path(out_dir)
    summary = summarize_instance(results, checkpoint)
    if provenance:
        summary["provenance"] = dict(provenance)
    paths = {
        "per_case": write_instance_csv(results, out_dir / "per_case.csv"),
        "summary": write_summary_json(summary, out_dir / "summary.json"),
        "markdown": atomic_write_text(out_dir / "summary.md", instance_summary_markdown(summary)),
    }
    if plot:
        paths["plot"] = plot_instance_boxplots(results, out_dir / "boxplot.png", formats=formats)
    return paths

