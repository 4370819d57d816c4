"""One report writer for semantic and instance results: the kind is read off the results.

:func:`write_results` writes ``per_case.csv``, ``summary.json``, ``summary.md`` and the box plot
of either kind (:mod:`scribmed.evaluation.report` for per-class Dice / HD95 / ASD,
:mod:`scribmed.evaluation.instance_report` for DSB score / F1 / AJI / PQ); :func:`read_results`
reads a folder back, telling the kinds apart by ``summary.json``'s ``"task"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from scribmed.metrics.instance_evaluator import InstanceCaseResult

__all__ = ["read_results", "write_results"]

PathLike = Union[str, os.PathLike]


def write_results(
    results: Sequence[Any],
    out_dir: PathLike,
    checkpoint: Optional[str] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    plot: bool = True,
) -> dict[str, Path]:
    """Write the report of ``results`` (all :class:`~scribmed.metrics.CaseResult` or all
    :class:`~scribmed.metrics.InstanceCaseResult`) into ``out_dir``; returns the written paths.

    Raises:
        TypeError: the results mix the two kinds.
    """
    kinds = {isinstance(r, InstanceCaseResult) for r in results}
    if len(kinds) > 1:
        raise TypeError("write_results: semantic and instance results cannot share one report")
    if kinds == {True}:
        from scribmed.evaluation.instance_report import write_instance_report

        return write_instance_report(results, out_dir, checkpoint=checkpoint, provenance=provenance, plot=plot)
    from scribmed.evaluation.report import write_report

    return write_report(results, out_dir, plot=plot, checkpoint=checkpoint, provenance=provenance)


def read_results(out_dir: PathLike) -> list[Any]:
    """The results of a report folder written by :func:`write_results`, of either kind."""
    meta = json.loads((Path(out_dir) / "summary.json").read_text())
    if meta.get("task") == "instance":
        from scribmed.evaluation.instance_report import read_instance_report

        return read_instance_report(out_dir)
    from scribmed.evaluation.report import read_report

    return read_report(out_dir)
