"""``scribmed demo``: the whole pipeline on a generated phantom dataset, on a CPU, in minutes."""

from __future__ import annotations

from pathlib import Path

from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import write_prediction
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.engine.evaluate_folder import evaluate_folder
from scribmed.engine.scribble_baseline import nearest_scribble_prediction


def run_demo(out: Path, patients: int = 10, seed: int = 0, progress: bool = True) -> Path:
    """Generate an ACDC-like phantom set (h5 layout), predict every case, evaluate; return the report folder.

    The predictor is the nearest-scribble baseline (no training): the floor any recipe must beat.
    A rerun reuses the phantom and the predictions already written.
    """
    out = Path(out)
    root = write_phantom_dataset("cardiac", "acdc-h5", out / "data", n_patients=patients, seed=seed)
    dataset = open_dataset("acdc-h5", root)
    pred_dir = out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for case in dataset:
        target = pred_dir / f"{case.case_id}.nii.gz"
        if not target.exists():
            pred = nearest_scribble_prediction(case.scribble, dataset.class_map.ignore_index)
            write_prediction(target, pred, case.spacing)
        case.release()
    report = out / "report"
    evaluate_folder(pred_dir, root, "acdc-h5", report, progress=progress, checkpoint="none (nearest-scribble baseline)")
    print((report / "summary.md").read_text())
    return report
