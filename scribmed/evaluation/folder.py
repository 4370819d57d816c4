"""Evaluate a folder of NIfTI predictions against a dataset's reference labels (``scribmed evaluate``).

Predictions are paired with references by :func:`scribmed.evaluation.pairing.PairedCases`.

Predictions are ``<pred_dir>/<case_id>.nii.gz`` in scribmed's NIfTI convention (what
:func:`scribmed.data.nifti.write_prediction` writes), so they read back on the reference grid.
Spacing comes from the reference dataset (mm), or from ``spacing=`` for layouts that store none;
otherwise HD95/ASD are in pixels and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from scribmed.data.case import CARDIAC, ClassMap
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import NIFTI_SUFFIXES, strip_nifti_suffix
from scribmed.evaluation.pairing import PairedCases, Reference
from scribmed.evaluation.report import write_report
from scribmed.metrics import CaseResult, EmptyPolicy, evaluate_cases


def find_predictions(pred_dir: Path) -> dict[str, Path]:
    """``case_id -> file`` for every NIfTI file in ``pred_dir`` (not recursive)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(pred_dir, "prediction folder does not exist")
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        case_id = strip_nifti_suffix(path.name)
        if case_id is not None and path.is_file():
            found[case_id] = path
    return found


def _label_folder_dataset(ref_dir: Path, class_map: ClassMap) -> list[tuple[str, Path]]:
    """``(case_id, label file)`` for a plain folder of NIfTI label maps (generic ``--ref``)."""
    items = [(strip_nifti_suffix(p.name), p) for p in sorted(ref_dir.iterdir()) if strip_nifti_suffix(p.name)]
    if not items:
        raise DataError(ref_dir, f"no NIfTI label files ({', '.join(NIFTI_SUFFIXES)}) found")
    return items  # type: ignore[return-value]


def evaluate_folder(
    pred_dir: Path,
    ref_root: Path,
    layout: str,
    out_dir: Path,
    hd95_mode: str = "medpy",
    empty_policy: Optional[str] = None,
    spacing: Optional[Sequence[float]] = None,
    allow_missing: bool = False,
    progress: bool = True,
    class_map: Optional[ClassMap] = None,
    checkpoint: Optional[str] = None,
) -> Path:
    """Evaluate every labelled reference case that has a prediction; write the report.

    Args:
        pred_dir: folder of ``<case_id>.nii.gz`` predictions.
        ref_root: dataset root read with ``layout``; for ``generic`` also a plain folder of label maps.
        layout: reader name (``acdc-h5``, ``acdc-nifti``, ``mscmr``, ``chaos-npz``, ``generic``).
        out_dir: report folder (``per_case.csv``, ``summary.json``, ``summary.md``, ``boxplot.png``).
        hd95_mode: ``"medpy"`` (default) or ``"monai"``.
        empty_policy: see :class:`scribmed.metrics.EmptyPolicy`; ``None`` = library default.
        spacing: mm per axis ``(dz, dy, dx)`` for layouts that store none.
        allow_missing: skip reference cases without a prediction instead of failing.
        class_map: classes for a plain label folder (default: cardiac).
        checkpoint: which checkpoint produced the predictions, stated in the summary.

    Returns:
        Path of ``summary.json``.
    """
    pred_dir, ref_root, out_dir = Path(pred_dir), Path(ref_root), Path(out_dir)
    policy = EmptyPolicy(empty_policy) if empty_policy is not None else EmptyPolicy.NAN_COUNTED
    preds = find_predictions(pred_dir)
    if not preds:
        raise DataError(pred_dir, "no NIfTI predictions (<case_id>.nii.gz) found")

    if layout == "generic" and ref_root.is_dir() and not (ref_root / "imagesTr").is_dir():
        cmap = class_map or CARDIAC
        references = [Reference.from_file(cid, path) for cid, path in _label_folder_dataset(ref_root, cmap)]
    else:
        options = {"spacing": tuple(spacing)} if spacing is not None and layout in ("acdc-h5", "chaos-npz") else {}
        dataset = open_dataset(layout, ref_root, **options)
        cmap = class_map or dataset.class_map
        references = [c for c in dataset if c.has_label]
        if not references:
            raise DataError(dataset.root, f"no case of this {dataset.layout} dataset has a reference label")
    pairs = PairedCases(references, preds, spacing=spacing, allow_missing=allow_missing, where=pred_dir)

    foreground = {k: v for k, v in cmap.names.items() if k != 0}
    results: list[CaseResult] = evaluate_cases(
        pairs, foreground, hd95_mode=hd95_mode, empty_policy=policy, progress=progress
    )
    paths = write_report(results, out_dir, checkpoint=checkpoint)
    return paths["summary"]
