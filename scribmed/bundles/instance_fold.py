"""Helpers the instance bundles' inference and evaluate configs call (``sesam_dsb2018``, ``s4m_dsb2018``, ``wish_dsb2018``).

The instance evaluation of a folder of predictions and the one-line description of an
instance-recipe checkpoint. The fold itself (training through the CV runner), rebuilding a recipe
from a fold's checkpoint and predicting with it (int32 instance maps for an instance recipe) are
not instance-specific: :mod:`scribmed.bundles.recipe_fold`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from scribmed.data.case import Case
from scribmed.data.errors import DataError

__all__ = ["evaluate_instance_folder"]


def evaluate_instance_folder(
    pred_dir: str | Path,
    cases: Sequence[Case],
    out_dir: str | Path,
    checkpoint: Optional[str] = None,
    provenance: Optional[dict[str, Any]] = None,
    progress: bool = True,
) -> Path:
    """Instance report of ``<pred_dir>/<case_id>.nii.gz`` against each case's instance map; returns summary.json.

    Every case of ``cases`` must have a reference instance map and a prediction on its grid.
    :func:`scribmed.metrics.instance_evaluator.evaluate_instance_cases` (DSB score, F1, AJI, AJI+,
    PQ, SQ, RQ, foreground Dice per image) and
    :func:`~scribmed.evaluation.instance_report.write_instance_report` write ``per_case.csv``,
    ``summary.json`` (``"task": "instance"``, ``checkpoint`` as given), ``summary.md`` and
    ``boxplot.png`` into ``out_dir`` — the files and values of the CV runner's
    ``fold_k/evaluation/`` for the same predictions.

    Raises:
        DataError: no case; a case without an instance map, without a prediction, or whose
            prediction has another shape.
    """
    import numpy as np

    from scribmed.data.nifti import read_label_nifti
    from scribmed.evaluation.instance_report import write_instance_report
    from scribmed.metrics.instance_evaluator import evaluate_instance_cases

    pred_dir, cases = Path(pred_dir), list(cases)
    if not cases:
        raise DataError(pred_dir, "no case to evaluate")
    no_ref = [c.case_id for c in cases if not getattr(c, "has_instance", False)]
    if no_ref:
        raise DataError(cases[0].source, f"{len(no_ref)} case(s) have no reference instance map ({', '.join(no_ref[:5])})")
    missing = [c.case_id for c in cases if not (pred_dir / f"{c.case_id}.nii.gz").is_file()]
    if missing:
        raise DataError(pred_dir, f"{len(missing)} case(s) have no prediction <case_id>.nii.gz here "
                        f"({', '.join(missing[:5])}); run inference.yaml with the same cases first")

    def pairs():
        for case in cases:
            path = pred_dir / f"{case.case_id}.nii.gz"
            ref = np.asarray(case.load().instance)
            pred = np.asarray(read_label_nifti(path, "prediction").array)
            if pred.size != ref.size:
                raise DataError(path, f"prediction shape {pred.shape} does not match the reference {ref.shape}")
            yield case.case_id, pred.reshape(ref.shape), ref
            case.release()

    results = evaluate_instance_cases(pairs(), progress=bool(progress))
    return write_instance_report(results, Path(out_dir), checkpoint=checkpoint, provenance=provenance)["summary"]



