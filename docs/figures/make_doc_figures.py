"""Make the example figures of the docs from a generated phantom: no data, no training, ~10 s on a CPU.

Writes, beside this script:

* ``boxplot_example.png`` (shown in docs/metrics.md): the per-fold box plot that ``scribmed cv``
  writes as ``boxplot_folds.png`` (:func:`scribmed.evaluation.report.plot_fold_boxplots`), for
  10 cardiac phantom patients (ED + ES: 20 volumes) in 5 folds of 2 patients;
* ``overlay_example.png`` (shown in docs/cross_validation.md): the overlay that ``scribmed cv``
  writes into ``fold_k/overlays/`` (:func:`scribmed.evaluation.overlays.write_overlay`, which
  ``write_overlays`` calls per case) for the first volume;
* ``scribble_styles.png`` (shown in docs/data.md): the synthesised scribble styles side by side
  (``acdc`` and ``scribblebench`` on a cardiac phantom slice, ``abdominal`` and ``scribblebench``
  on an abdominal one), :func:`scribmed.data.scribble_synthesis.synthesize_scribbles`;
* ``annotation_cost_acdc_fold1.png`` (shown in bundles/mixsup_acdc/docs/README.md): the plot of
  ``benchmarks/annotation_cost.py`` drawn from the measured rows in
  ``annotation_cost_acdc_fold1.json`` (the seed 0 and seed 1 tables of that README).

The "prediction" is a nearest-scribble baseline, not a trained model: every pixel of a slice
takes the class of the nearest scribbled pixel of that slice (background strokes included), so
the figures show real, imperfect scores without a training run. Seeded: running it again gives
the same figures (with the same matplotlib).

Usage::

    python docs/figures/make_doc_figures.py            # writes the figures beside this script
    python docs/figures/make_doc_figures.py --out DIR  # elsewhere
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from scribmed.data.phantoms import generate_cardiac  # noqa: E402
from scribmed.evaluation.overlays import write_overlay  # noqa: E402
from scribmed.metrics import evaluate_case  # noqa: E402
from scribmed.evaluation.report import plot_fold_boxplots  # noqa: E402
from scribmed.recipes.nearest.recipe import nearest_scribble_prediction  # noqa: E402

N_PATIENTS = 10
N_FOLDS = 5
ANNOTATION_NOTE = ("Full masks are no ceiling at 120 iterations: Dice + CE against full masks is still in its "
                   "background-only phase (validation Dice 0 at 40 and 80 iterations). One fold; bars: lowest "
                   "to highest of 2 seeds.")


def annotation_cost_figure(out: Path) -> Path:
    """The annotation-cost plot from the measured rows beside this script."""
    import json

    sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
    from annotation_cost import make_plot_figure

    from scribmed.runtime.figures import save_figure

    rows = json.loads((HERE / "annotation_cost_acdc_fold1.json").read_text())["rows"]
    fig = make_plot_figure(rows, "Real ACDC fold 1, 120 iterations: Dice vs annotation cost", ANNOTATION_NOTE)
    return save_figure(fig, out / "annotation_cost_acdc_fold1.png", "png", dpi=150)


def scribble_styles_figure(out: Path) -> Path:
    """Each named scribble style on a cardiac and an abdominal phantom slice (seed 0)."""
    import numpy as np

    from scribmed.data.phantoms import generate_abdominal
    from scribmed.data.scribble_synthesis import named_style, synthesize_scribbles
    from scribmed.runtime.figures import new_figure, save_figure

    cardiac, abdominal = generate_cardiac(1, seed=0)[0], generate_abdominal(1, seed=0)[0]
    panels = [(cardiac, "acdc"), (cardiac, "scribblebench"), (abdominal, "abdominal"), (abdominal, "scribblebench")]
    fig = new_figure((3.2 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    colours = np.array([[0.2, 0.4, 1.0], [1.0, 0.2, 0.2], [0.2, 0.85, 0.2], [1.0, 0.85, 0.1], [0.8, 0.3, 0.9]])
    for ax, (phantom, style) in zip(axes, panels):
        label = np.asarray(phantom.label)
        z = int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(axis=1)))
        scribble = synthesize_scribbles(label[z:z + 1], phantom.class_map, seed=0, style=named_style(style))[0]
        image = np.asarray(phantom.image)[z]
        rgb = np.repeat(((image - image.min()) / (np.ptp(image) or 1))[..., None], 3, axis=-1)
        drawn = scribble != phantom.class_map.ignore_index
        rgb[drawn] = colours[scribble[drawn] % len(colours)]
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{style}\n{100 * drawn.mean():.1f} % of pixels labelled", fontsize=9)
        ax.axis("off")
    fig.suptitle("Synthesised scribble styles (blue: background; one colour per class)", fontsize=10)
    return save_figure(fig, out / "scribble_styles.png", "png", dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    phantoms = generate_cardiac(N_PATIENTS, seed=0)
    class_map = phantoms[0].class_map
    foreground = {k: class_map.names[k] for k in class_map.foreground}
    patients = sorted({p.patient_id for p in phantoms})
    per_fold = len(patients) // N_FOLDS
    folds: dict[str, list] = {f"fold_{k + 1}": [] for k in range(N_FOLDS)}
    predictions = {}
    for p in phantoms:
        pred = nearest_scribble_prediction(p.scribble, class_map.ignore_index)
        predictions[p.case_id] = pred
        fold = patients.index(p.patient_id) // per_fold
        folds[f"fold_{fold + 1}"].append(evaluate_case(pred, p.label, foreground, p.spacing, case_id=p.case_id))
    box = plot_fold_boxplots(folds, args.out / "boxplot_example.png", formats="png")
    first = phantoms[0]
    overlay = write_overlay(first.to_case(), predictions[first.case_id], class_map, args.out / "overlay_example.png",
                            checkpoint="none (nearest-scribble baseline, no training)", formats="png")
    for path in (box, overlay, annotation_cost_figure(args.out), scribble_styles_figure(args.out)):
        print(f"{path}  {path.stat().st_size / 1000:.0f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
