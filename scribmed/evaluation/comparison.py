"""Side-by-side tables of several methods evaluated on the same cases (cross-validation runs, folders).

Each method's numbers come from a ``summary.json`` written by :func:`scribmed.crossval.runner.merge_folds`
(its ``pooled`` block: every out-of-fold case once) or by :func:`scribmed.evaluation.report.write_report`
(a plain evaluation). The table has per-class Dice and HD95 and their means, as papers print them::

    scribmed cv compare runs/compare/samsp runs/compare/dmpls --out runs/compare/comparison.md
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from scribmed.data.errors import DataError
from scribmed.runtime.files import atomic_write_text
from scribmed.runtime.migrations import upgrade_run_record

__all__ = ["comparison_markdown", "comparison_row", "compare_runs", "evaluated_cases"]


def _mean(value: Any) -> Optional[float]:
    """A summary statistic: reports store either ``{"mean": m, ...}`` or the bare mean (``None`` if absent)."""
    if isinstance(value, Mapping):
        value = value.get("mean")
    return None if value is None else float(value)


def comparison_row(name: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per-class and mean Dice / HD95 of one method from its ``summary.json`` (pooled block when present).

    Returns:
        ``{"method", "cases", "hd95_units", "classes": {name: {"dice", "hd95"}}, "mean": {"dice", "hd95"}}``.
    """
    pooled = summary.get("pooled", summary)
    if "classes" not in pooled or "overall" not in pooled:
        raise ValueError(f"{name}: not a scribmed summary (no 'classes'/'overall')")
    classes = {c: {"dice": _mean(s.get("dice")), "hd95": _mean(s.get("hd95"))} for c, s in pooled["classes"].items()}
    overall = pooled["overall"]
    return {
        "method": name,
        "cases": pooled.get("n_cases"),
        "hd95_units": pooled.get("hd95_units"),
        "classes": classes,
        "mean": {"dice": _mean(overall.get("dice")), "hd95": _mean(overall.get("hd95"))},
    }


def _fmt(v: Optional[float], digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def comparison_markdown(rows: Sequence[Mapping[str, Any]], titles: Optional[Mapping[str, str]] = None) -> str:
    """A markdown table: one row per method, per-class Dice, mean Dice, per-class HD95, mean HD95.

    Raises:
        ValueError: the methods were evaluated on different classes or case counts, or HD95 units differ.
    """
    if not rows:
        raise ValueError("nothing to compare")
    classes = list(rows[0]["classes"])
    for r in rows[1:]:
        if list(r["classes"]) != classes:
            raise ValueError(f"{r['method']} has classes {list(r['classes'])}, {rows[0]['method']} has {classes}")
        if r["cases"] != rows[0]["cases"]:
            raise ValueError(f"{r['method']} was evaluated on {r['cases']} cases, {rows[0]['method']} on {rows[0]['cases']}")
        if r["hd95_units"] != rows[0]["hd95_units"]:
            raise ValueError(f"HD95 units differ: {r['hd95_units']} vs {rows[0]['hd95_units']}")
    titles = dict(titles or {})
    units = rows[0].get("hd95_units") or "pixels"
    head = (["method"] + [f"{c} Dice" for c in classes] + ["mean Dice"]
            + [f"{c} HD95" for c in classes] + [f"mean HD95 ({units})"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [titles.get(r["method"], r["method"])]
        cells += [_fmt(r["classes"][c]["dice"], 3) for c in classes] + [f"**{_fmt(r['mean']['dice'], 3)}**"]
        cells += [_fmt(r["classes"][c]["hd95"], 2) for c in classes] + [_fmt(r["mean"]["hd95"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{rows[0]['cases']} cases per method (pooled out-of-fold for cross-validation runs); "
                 f"Dice and HD95 are means over cases, HD95 in {units}.")
    return "\n".join(lines) + "\n"


def evaluated_cases(run_dir: str | Path) -> Optional[frozenset[str]]:
    """Case ids a run evaluated, from its ``per_case.csv`` file(s) (``None`` when there are none).

    A cross-validation run keeps one per fold (``fold_k/evaluation/per_case.csv``); an evaluation
    folder keeps one at its top.
    """
    import csv

    d = Path(run_dir)
    files = sorted(d.glob("fold_*/evaluation/per_case.csv")) or ([d / "per_case.csv"] if (d / "per_case.csv").is_file() else [])
    if not files:
        return None
    ids: set[str] = set()
    for f in files:
        with f.open(newline="") as fh:
            ids.update(row["case"] for row in csv.DictReader(fh) if row.get("case"))
    return frozenset(ids)


def compare_runs(run_dirs: Sequence[str | Path], out: Optional[str | Path] = None) -> str:
    """Compare cross-validation runs (or evaluation folders) that tested the same cases.

    Args:
        run_dirs: folders holding a ``summary.json``; a CV run is named by its ``run.json`` recipe.
        out: write the markdown here (atomically) and the rows as JSON next to it.

    Returns:
        The markdown table.

    Raises:
        DataError: a folder without a readable ``summary.json``; runs that tested different cases.
    """
    rows = []
    cases: dict[str, frozenset[str]] = {}
    for d in run_dirs:
        d = Path(d)
        path = d / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            raise DataError(path, "no readable summary.json (run 'scribmed cv' or 'scribmed evaluate' first)") from None
        name = d.name
        run = d / "run.json"
        if run.is_file():
            try:
                record = json.loads(run.read_text())
            except ValueError:  # unreadable: the folder's name stays
                record = None
            if record is not None:  # a run.json of a newer schema is refused (DataError)
                name = f"{upgrade_run_record(record, run).get('recipe', name)} ({d.name})"
        try:
            rows.append(comparison_row(name, summary))
        except ValueError as err:
            raise DataError(path, str(err)) from None
        ids = evaluated_cases(d)
        if ids is not None:
            cases[str(d)] = ids
    if cases:
        first, reference = next(iter(cases.items()))
        for other, ids in cases.items():
            if ids != reference:
                only = sorted(reference ^ ids)
                raise DataError(
                    None, f"runs are not comparable: {first} and {other} evaluated different cases (e.g. {', '.join(only[:3])})"
                )
    try:
        text = comparison_markdown(rows)
    except ValueError as err:
        raise DataError(None, f"runs are not comparable: {err}") from None
    if out is not None:
        out = Path(out)
        atomic_write_text(out, text)
        atomic_write_text(out.with_suffix(".json"), json.dumps({"rows": rows}, indent=1) + "\n")
    return text
