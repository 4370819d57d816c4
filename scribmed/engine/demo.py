"""``scribmed demo``: the whole pipeline on a generated phantom dataset, on a CPU, in minutes.

Generates an ACDC-like phantom set (h5 layout, scribbles synthesised like the real ones), runs a
short five-fold DMPLS cross-validation on it, and compares with the nearest-scribble baseline (no
learning) on the same test folds. The budget is tiny (64x64 slices, a few hundred iterations per
fold) so it finishes in a few minutes on 2 CPU cores; the paper schedule is in the bundles.
"""

from __future__ import annotations

import json
from pathlib import Path

from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import write_prediction
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.engine.cross_validation import run_cross_validation
from scribmed.engine.evaluate_folder import evaluate_folder
from scribmed.engine.recipes import build_recipe
from scribmed.engine.scribble_baseline import nearest_scribble_prediction


def run_demo(
    out: Path,
    patients: int = 10,
    seed: int = 0,
    iterations: int = 300,
    size: int = 64,
    batch_size: int = 8,
    progress: bool = True,
) -> Path:
    """Phantom → five-fold DMPLS CV → baseline comparison; returns the CV ``summary.md``.

    A rerun with the same ``out`` reuses the phantom, skips finished folds and resumes an
    interrupted one.
    """
    out = Path(out)
    root = write_phantom_dataset("cardiac", "acdc-h5", out / "data", n_patients=patients, seed=seed)
    dataset = open_dataset("acdc-h5", root)
    recipe = build_recipe(
        "dmpls", iterations=iterations, size=size, batch_size=batch_size,
        val_interval=max(1, iterations // 3), seed=seed, device="auto",
    )  # fmt: skip
    summary_path = run_cross_validation(recipe, dataset, "auto", out / "cv", progress=progress)

    # the floor: nearest-scribble labels, no learning, scored on the same out-of-fold cases
    pred_dir = out / "baseline" / "predictions"
    for case in dataset:
        target = pred_dir / f"{case.case_id}.nii.gz"
        if not target.exists():
            write_prediction(target, nearest_scribble_prediction(case.scribble, dataset.class_map.ignore_index), case.spacing)
        case.release()
    baseline = evaluate_folder(
        pred_dir, root, "acdc-h5", out / "baseline" / "evaluation", progress=False, checkpoint="none (no learning)"
    )
    cv = json.loads(summary_path.read_text())
    base = json.loads(baseline.read_text())
    md = summary_path.parent / "summary.md"
    text = md.read_text()
    if "## Baseline" not in text:
        text += (
            "\n## Baseline\n\nNearest-scribble labels (no learning) on the same cases: "
            f"mean Dice {base['overall']['dice']:.3f}, mean HD95 {base['overall']['hd95']:.2f} {base['hd95_units']} "
            f"(DMPLS pooled: {cv['pooled']['overall']['dice']:.3f}, {cv['pooled']['overall']['hd95']:.2f}).\n"
        )
        from scribmed.metrics.report import atomic_write_text

        atomic_write_text(md, text)
    print(text)
    return md
