"""The cross-validation report as papers print it (mean ± std over fold means) plus nnU-Net's pooled table."""

from __future__ import annotations

from typing import Any

from scribmed.evaluation.report import provenance_lines, summary_markdown

__all__ = ["cv_markdown"]


def cv_markdown(summary: dict[str, Any]) -> str:
    """The report: the papers' table (mean ± std over fold means), the pooled table, one line per fold."""
    across = summary["across_folds"]
    pooled = summary["pooled"]
    units = pooled["hd95_units"]
    run = summary.get("run", {})
    lines = [
        f"# Cross-validation: {run.get('recipe', '?')} on {run.get('layout', '?')} ({run.get('root', '?')})",
        "",
        f"Folds merged: {', '.join(str(k) for k in summary['folds_merged'])}. "
        f"Checkpoint: {pooled.get('checkpoint', '?')} (selected on validation patients, never the test fold). "
        f"HD95 {pooled['hd95_mode']} convention, {units}; empty-mask policy {pooled['empty_policy']}.",
        "",
        *provenance_lines(run.get("provenance")),
        "## Per-fold mean of per-volume scores, mean ± std over folds (the papers' convention)",
        "",
        f"| class | Dice | HD95 ({units}) | ASD ({units}) |",
        "|---|---|---|---|",
    ]

    def pm(stat: dict[str, Any], d: int) -> str:
        if not stat or stat.get("n", 0) == 0 or stat["mean"] != stat["mean"]:
            return "n/a"
        return f"{stat['mean']:.{d}f} ± {stat['std']:.{d}f}"

    for name, entry in across["classes"].items():
        lines.append(f"| {name} | {pm(entry['dice'], 3)} | {pm(entry['hd95'], 2)} | {pm(entry['asd'], 2)} |")
    ov = across["overall"]
    lines.append(f"| **mean** | {pm(ov['dice'], 3)} | {pm(ov['hd95'], 2)} | {pm(ov['asd'], 2)} |")
    lines += ["", "## Pooled out-of-fold cases (nnU-Net's convention)", "", summary_markdown(pooled).rstrip(), ""]
    lines += ["## Per fold", "", f"| fold | cases | mean Dice | mean HD95 ({units}) |", "|---|---|---|---|"]
    for name, s in summary["folds"].items():
        lines.append(f"| {name} | {s['n_cases']} | {s['overall']['dice']:.3f} | {s['overall']['hd95']:.2f} |")
    return "\n".join(lines) + "\n"
