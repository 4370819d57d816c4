"""The smallest ACDC-layout phantom that every fold of the shipped ``acdc_5fold`` split can run on
(test helper for the docs pages, whose commands name that split with ``--allow-missing``)."""

from __future__ import annotations

import json
from pathlib import Path

from scribmed.data.phantoms import write_phantom_dataset

REPO = Path(__file__).resolve().parents[1]


def write_acdc_5fold_phantom(base: Path, size: tuple[int, int], seed: int = 5) -> Path:
    """An ``acdc-h5`` phantom under ``base / "ACDC"`` holding two test and two validation patients
    of every fold of ``acdc_5fold`` (17 of the 100 it names; the others of a fold's training
    patients are other folds' test and validation patients), one ED frame of 2 slices of ``size``
    each. The split's other patients are absent, as in a copy without patients 081-100."""
    full = write_phantom_dataset("cardiac", "acdc-h5", base / "phantom_100", n_patients=100, seed=seed, size=size,
                                 slices=(2, 2), frames=("ED",))
    folds = json.loads((REPO / "data_splits" / "acdc_5fold.json").read_text())["folds"]
    keep = {p for f in folds for p in (*f["test"][:2], *f["val"][:2])}
    acdc = base / "ACDC"
    for path in sorted(full.rglob("*.h5")):
        if path.name.split("_")[0] in keep:
            target = acdc / path.relative_to(full)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
    return acdc
