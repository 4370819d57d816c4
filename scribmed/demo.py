"""``scribmed demo``: the whole pipeline on a generated phantom dataset, on a CPU, in minutes.

Generates an ACDC-like phantom set (h5 layout, scribbles synthesised like the real ones), runs a
short three-fold cross-validation (by patient) of each requested recipe on it — by default SAM-SP
(LiteMedSAM pseudo-label rounds, then the aligned dual-branch segmentor) and DMPLS — and compares
them with the nearest-scribble baseline (no learning) on the same out-of-fold cases. The budget
is tiny (one frame per patient, 3-4 slices, 64x64 network input, 300 iterations per fold, one
decoder fine-tuning round of one epoch, three folds) so it finishes in under ten minutes on 2 CPU
cores; the paper schedules (five folds, 60k iterations, two rounds) are in the bundles.

Run folder::

    out/data/              the phantom dataset (acdc-h5 layout)
    out/split.json         the seeded k-fold split by patient every recipe uses
    out/sam_embeddings/    LiteMedSAM embeddings, computed once per slice for all folds
    out/samsp/, out/dmpls/ one cross-validation run per recipe (see scribmed.crossval.runner)
    out/baseline/          the nearest-scribble recipe's cross-validation run (no learning)
    out/summary.md         the comparison table (pooled out-of-fold Dice and HD95 per class)
    out/summary.json       the same numbers
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from scribmed import recipes as recipe_registry
from scribmed.data.layouts import open_dataset
from scribmed.data.errors import SplitError
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.data.split_files import save_split
from scribmed.data.splits import auto_folds, make_kfold_split
from scribmed.crossval.runner import run_cross_validation
from scribmed.evaluation.comparison import comparison_markdown, comparison_row
from scribmed.runtime.files import atomic_write_text

__all__ = ["BASELINE", "DEMO_RECIPES", "run_demo"]

#: Recipes the demo runs by default, in table order.
DEMO_RECIPES: tuple[str, ...] = ("samsp", "dmpls")
#: The no-learning floor every demo table ends with.
BASELINE = "nearest"


def run_demo(
    out: Path,
    patients: int = 9,
    seed: int = 0,
    iterations: int = 300,
    size: int = 64,
    batch_size: int = 8,
    recipes: Sequence[str] = DEMO_RECIPES,
    rounds: int = 1,
    sam_epochs: int = 1,
    slices: tuple[int, int] = (3, 4),
    frames: Sequence[str] = ("ED",),
    split: str = "auto:3",
    progress: bool = True,
) -> Path:
    """Phantom → k-fold CV of each recipe → baseline comparison; returns ``out/summary.md``.

    Args:
        out: run folder (reused: a rerun skips finished folds and resumes an interrupted one).
        patients: phantom patients.
        seed: phantom, split and training seed.
        iterations, size, batch_size: segmentor budget per fold (the same for every recipe).
        recipes: registered recipe names (:func:`scribmed.recipes.names`); each gets the options
            below that it takes (:meth:`~scribmed.recipes.base.Recipe.option_names`).
        rounds, sam_epochs: SAM-SP decoder fine-tuning rounds and epochs per round.
        slices: short-axis slices per phantom volume (min, max); SAM encodes each slice once.
        frames: cardiac phases per patient (``("ED",)`` or ``("ED", "ES")``); one keeps the SAM
            encoder and fine-tuning inside the CPU budget.
        split: ``"auto:K"``: a seeded K-fold split by patient (``"auto"``: five folds), as
            ``scribmed cv --split auto:K`` makes.

    Raises:
        SplitError: ``split`` is not ``auto`` or ``auto:K`` with K >= 2 (the phantom's patients are
            generated, so no split file names them).
        progress: progress bars.
    """
    folds = auto_folds(split)
    if not folds:
        raise SplitError(None, f"demo --split takes auto or auto:K (a K-fold split of the phantom's patients), "
                               f"got {split!r}")
    known = recipe_registry.names()
    unknown = [r for r in recipes if r not in known]
    if unknown or not recipes:
        raise ValueError(f"recipes must be a non-empty subset of {known}, got {list(recipes)}")
    out = Path(out)
    root = write_phantom_dataset("cardiac", "acdc-h5", out / "data", n_patients=patients, seed=seed,
                                 slices=tuple(slices), frames=tuple(frames))
    dataset = open_dataset("acdc-h5", root)
    split_file = out / "split.json"
    if not split_file.exists():
        save_split(make_kfold_split(dataset.patients, k=folds, seed=seed, name=f"demo_{folds}fold"), split_file)
    options = dict(iterations=iterations, size=size, batch_size=batch_size, val_interval=max(1, iterations // 3),
                   seed=seed, device="auto", rounds=rounds, sam_epochs=sam_epochs,
                   sam_cache=str(out / "sam_embeddings"))
    summaries: dict[str, dict[str, Any]] = {}
    titles: dict[str, str] = {}
    # the floor last: nearest-scribble labels, no learning, scored on the same out-of-fold cases
    for name in [*recipes, *([BASELINE] if BASELINE not in recipes else [])]:
        cls = recipe_registry.get(name)
        recipe = cls.from_options(**{k: v for k, v in options.items() if k in cls.option_names()})
        run_dir = out / ("baseline" if name == BASELINE else name)
        summary_path = run_cross_validation(recipe, dataset, split_file, run_dir, progress=progress)
        summaries[name] = json.loads(summary_path.read_text())
        titles[name] = cls.title or name

    rows = [comparison_row(name, s) for name, s in summaries.items()]
    setup = (f"{patients} cardiac phantom patients ({len(frames)} frame(s), {slices[0]}-{slices[1]} slices), "
             f"{folds} folds by patient; "
             f"every recipe trains {iterations} iterations per fold at {size}x{size}, batch {batch_size}"
             + (f"; SAM-SP: LiteMedSAM zero-shot pseudo labels, then {rounds} decoder fine-tuning round(s) of "
                f"{sam_epochs} epoch(s)" if "samsp" in recipes else "") + ".")
    text = "# scribmed demo\n\n" + setup + "\n\n" + comparison_markdown(rows, titles) + (
        "\nEach patient is tested once, by the fold that did not train on it. Per-recipe reports: "
        "`<recipe>/summary.md` (mean ± std over folds, per fold, box plots, overlays).\n")
    atomic_write_text(out / "summary.json", json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    atomic_write_text(out / "summary.md", text)
    print(text)
    return out / "summary.md"
