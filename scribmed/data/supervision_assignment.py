"""Applying a supervision assignment to an opened dataset (``scribmed cv --supervision`` / ``--supervision-mix``).

A manifest (``supervision.json``) or a seeded mix over the patients
(:func:`~scribmed.data.supervision_mix.assign_supervision`) says which supervision each case
trains with. :func:`apply_supervision` sets ``case.supervision`` and checks that every case has
what its type needs: a scribble, a label, or a box/point weak label. A dataset without
weak-label files (ACDC, MSCMR, CHAOS as distributed) can **simulate** them from its full labels
(``simulate=True``): the boxes and points are exactly those ``scribmed weak make`` would write
with the same seed (:func:`~scribmed.data.weak_conversion.case_rng`), computed when a recipe
first reads ``case.weak``. The returned record goes into ``run.json`` so every number says which
supervision it was trained with and whether it was simulated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from scribmed.data.case import Case
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.supervision_mix import assign_supervision, check_mix
from scribmed.data.weak_conversion import (
    DEFAULT_BOX_JITTER,
    DEFAULT_BOX_MIN_SIZE,
    DEFAULT_POINTS_PER_CLASS,
    boxes_from_label,
    case_rng,
    points_from_label,
)
from scribmed.data.weak_labels import SUPERVISION_TYPES, WEAK_FILE_TYPES

__all__ = ["apply_supervision", "apply_supervision_source", "mix_assignment"]


def mix_assignment(dataset: Dataset, mix: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Case id → type from a mix over the dataset's **patients** (all frames of a patient share it)."""
    by_patient = assign_supervision(dataset.patients, check_mix(mix), seed)
    return {c.case_id: by_patient[c.patient_id] for c in dataset.cases}


def _simulated_loader(case: Case, kind: str, dataset: Dataset, seed: int, options: Mapping[str, Any]):
    def load():
        label = case.label
        if label is None:
            raise DataError(case.source, f"case {case.case_id}: no label to simulate its {kind} weak label from")
        rng = case_rng(seed, case.case_id)
        if kind == "box":
            return boxes_from_label(label, dataset.class_map, tuple(options["box_jitter"]), rng,
                                    min_size=int(options["box_min_size"]), case_id=case.case_id)
        return points_from_label(label, dataset.class_map, int(options["points_per_class"]),
                                 str(options["point_mode"]), rng, int(options["point_negatives"]),
                                 case_id=case.case_id)

    return load


def apply_supervision(
    dataset: Dataset,
    assignment: Mapping[str, str],
    *,
    simulate: bool = False,
    seed: int = 0,
    source: Optional[str] = None,
    point_mode: str = "center",
    points_per_class: int = DEFAULT_POINTS_PER_CLASS,
    point_negatives: int = 0,
    box_jitter: tuple[int, int] = DEFAULT_BOX_JITTER,
    box_min_size: int = DEFAULT_BOX_MIN_SIZE,
) -> dict[str, Any]:
    """Set every listed case's ``supervision`` (in place) and return the record for ``run.json``.

    Args:
        dataset: the opened dataset.
        assignment: case id → type (:data:`~scribmed.data.weak_labels.SUPERVISION_TYPES`); cases
            not listed keep what the dataset states.
        simulate: give box/point cases without a weak-label file one simulated from their label
            (the ``scribmed weak make`` converters, seeded by ``(seed, case_id)``).
        seed: seed of the simulation.
        source: what the assignment came from (the manifest path or the mix), for the record.
        point_mode, points_per_class, point_negatives, box_jitter, box_min_size: converter settings.

    Raises:
        DataError: an unknown case or type; a case whose type it cannot satisfy (no scribble, no
            label, no weak label and ``simulate`` off).
    """
    known = {c.case_id: c for c in dataset.cases}
    unknown = sorted(set(assignment) - set(known))
    if unknown:
        raise DataError(dataset.root, f"supervision names case(s) absent from the dataset: {', '.join(unknown[:5])}")
    options = {"point_mode": point_mode, "points_per_class": int(points_per_class),
               "point_negatives": int(point_negatives), "box_jitter": [int(v) for v in box_jitter],
               "box_min_size": int(box_min_size)}
    simulated: list[str] = []
    for case_id, kind in sorted(assignment.items()):
        if kind not in SUPERVISION_TYPES:
            raise DataError(dataset.root, f"case {case_id}: unknown supervision type {kind!r} "
                            f"(known: {', '.join(SUPERVISION_TYPES)})")
        case = known[case_id]
        if kind == "scribble" and not case.has_scribble:
            raise DataError(case.source, f"case {case_id} is assigned scribble supervision but has no scribble")
        if kind == "full" and not case.has_label:
            raise DataError(case.source, f"case {case_id} is assigned full supervision but has no label")
        if kind in WEAK_FILE_TYPES:
            stored = case.weak if case.has_weak else None
            if stored is not None and stored.kind == kind:
                pass
            elif simulate:
                if not case.has_label:
                    raise DataError(case.source, f"case {case_id}: no label to simulate its {kind} weak label from")
                case.weak_loader = _simulated_loader(case, kind, dataset, seed, options)
                case._weak = None
                simulated.append(case_id)
            else:
                raise DataError(case.source, f"case {case_id} is assigned {kind} supervision but has no {kind} "
                                "weak-label file (weak/<case>.json); pass --simulate-weak to simulate it from the label")
        case.supervision = kind
    kinds = [known[c].supervision for c in sorted(assignment)]
    digest = hashlib.sha256(json.dumps(dict(sorted(assignment.items()))).encode()).hexdigest()
    record: dict[str, Any] = {
        "source": source,
        "cases": {t: kinds.count(t) for t in SUPERVISION_TYPES},
        "assignment_sha256": digest,
    }
    if simulated:
        record["simulated_weak_labels"] = {"cases": len(simulated), "seed": int(seed), **options,
                                           "method": "scribmed.data.weak_conversion (as scribmed weak make)"}
    return record


def apply_supervision_source(
    dataset: Dataset,
    manifest: Optional[str | Path] = None,
    mix: Optional[str] = None,
    seed: int = 0,
    simulate: bool = False,
    names: tuple[str, str, str] = ("--supervision", "--supervision-mix", "--simulate-weak"),
) -> Optional[dict[str, Any]]:
    """A manifest file or a mix text applied to ``dataset`` (``scribmed cv`` and the bundles); its record, or ``None``.

    Args:
        dataset: the opened dataset (changed in place).
        manifest: a ``supervision.json`` path; box/point cases without a file are simulated only
            with ``simulate``.
        mix: ``"full=0.1,box=0.3,..."`` over the patients; its boxes and points are always simulated.
        seed: seed of the mix and of the simulation.
        simulate: see ``manifest``.
        names: how the caller calls the manifest, mix and simulate options (for the error messages).

    Raises:
        DataError: both given; ``simulate`` without either; a bad mix or manifest; an unsatisfiable case.
    """
    from scribmed.data.supervision_mix import parse_mix
    from scribmed.data.weak_labels import read_supervision

    man_name, mix_name, sim_name = names
    if manifest is None and mix is None:
        if simulate:
            raise DataError(None, f"{sim_name} needs {man_name} or {mix_name}")
        return None
    if manifest is not None and mix is not None:
        raise DataError(manifest, f"give {man_name} or {mix_name}, not both")
    if manifest is not None:
        assignment = read_supervision(manifest, [c.case_id for c in dataset.cases])
        source = str(Path(manifest).resolve())
    else:
        try:
            shares = parse_mix(str(mix))
        except ValueError as err:
            raise DataError(None, f"{mix_name}: {err}") from None
        assignment = mix_assignment(dataset, shares, int(seed))
        source = f"mix {mix} over patients, seed {int(seed)}"
        simulate = True  # a mix on a dataset is a simulation by definition
    return apply_supervision(dataset, assignment, simulate=bool(simulate), seed=int(seed), source=source)
