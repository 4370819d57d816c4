"""Helpers the instance bundles' inference and evaluate configs call (``sesam_dsb2018``, ``s4m_dsb2018``, ``wish_dsb2018``).

Prediction of int32 instance maps with a recipe rebuilt from a checkpoint, the instance evaluation
of a folder of predictions and the one-line description of an instance-recipe checkpoint. The
fold itself (training through the CV runner) and rebuilding a recipe from a fold's checkpoint are
not instance-specific: :mod:`scribmed.bundles.recipe_fold`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from scribmed.data.case import Case
from scribmed.data.errors import DataError

__all__ = ["evaluate_instance_folder", "predict_instance_cases", "predict_with_loaded"]


def predict_with_loaded(loaded: Any, cases: Sequence[Case], out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """The instance inference bundles' engine: ``loaded()`` (the checkpoint, read now, not at
    ``initialize()``) then :func:`predict_instance_cases` with its recipe and model."""
    found = loaded()
    return predict_instance_cases(found["recipe"], found["model"], cases, out_dir, **kwargs)


def predict_instance_cases(
    recipe: Any,
    model: Any,
    cases: Sequence[Case],
    out_dir: str | Path,
    overwrite: bool = True,
    progress: bool = True,
    dataset_root: Optional[str | Path] = None,
) -> list[Path]:
    """Write ``recipe.predict_case(model, case)`` as an int32 instance map ``<out_dir>/<case_id>.nii.gz``.

    :func:`scribmed.training.inference.predict_to_folder` with ``dtype=np.int32`` (the CV runner's
    loop for instance recipes): files on each case's grid, written atomically; with ``overwrite``
    false, files already there are kept (an interrupted run resumes).

    Raises:
        DataError: ``out_dir`` inside ``dataset_root`` (nothing is written into a dataset); an
            image whose channel count does not fit the checkpoint.
    """
    import numpy as np

    from scribmed.training.inference import predict_to_folder

    out = Path(out_dir)
    if dataset_root is not None:
        root = Path(dataset_root).resolve()
        if out.resolve() == root or root in out.resolve().parents:
            raise DataError(out, "the prediction folder lies inside the dataset folder; choose a folder outside it")
    paths: list[Path] = []
    try:
        for case, path, _ in predict_to_folder(list(cases), lambda c: recipe.predict_case(model, c), out,
                                               overwrite=bool(overwrite), progress=bool(progress), dtype=np.int32):
            paths.append(path)
            case.release()
    finally:
        recipe.release(model)
    return paths


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



