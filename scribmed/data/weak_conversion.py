"""Weak labels simulated from full masks (boxes, points, scribbles) and a seeded supervision mix.

Every converter takes a full label volume ``(S, H, W)`` and a ``numpy.random.Generator`` (or a
seed), so any labelled dataset can simulate any mix of supervision reproducibly:

- :func:`boxes_from_label`: one box per connected component (MedSAM style), each side jittered
  by 3-7 px (MedSAM's random box shift), clipped to the image.
- :func:`points_from_label`: K positive points per class per slice (centre-weighted, uniform,
  on the boundary, or SeSAM's skeleton-grid sampler), optional negatives.
- scribbles: :func:`scribmed.data.scribble_synthesis.synthesize_scribbles`.
- :func:`assign_supervision` (from :mod:`scribmed.data.supervision_mix`): which patient gets
  which type, by largest-remainder counts.

:func:`make_weak_dataset` writes a whole simulated dataset in the generic layout: the full labels
of every case stay as the evaluation reference, and ``supervision.json`` says what each case's
*training* supervision is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from scribmed.data.case import ABDOMINAL, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.sesam_sampling import instance_points
from scribmed.data.supervision_mix import assign_supervision, check_mix
from scribmed.data.weak_labels import SUPERVISION_TYPES, Box, PointSet, WeakLabel
from scribmed.runtime.progress import progress_bar

Rng = np.random.Generator | int | None
POINT_MODES = ("center", "random", "boundary", "skeleton")
#: MedSAM's box jitter range (px): each side moves by a random whole number of pixels in it.
DEFAULT_BOX_JITTER = (3, 7)
#: Components smaller than this (px) get no box (annotators skip specks).
DEFAULT_BOX_MIN_SIZE = 10
DEFAULT_POINTS_PER_CLASS = 5


def _gen(rng: Rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _as_volume(label: np.ndarray) -> np.ndarray:
    lab = np.asarray(label)
    if lab.ndim != 3:
        raise ValueError(f"label must be (slices, H, W), got shape {lab.shape}")
    return lab


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 or 2, got {connectivity}")
    return ndi.generate_binary_structure(2, connectivity)


def _present(lab2d: np.ndarray, class_map: ClassMap) -> list[int]:
    values = set(np.unique(lab2d).tolist())
    return [k for k in class_map.foreground if k in values]


def jitter_box(
    box: Box, hw: tuple[int, int], jitter: tuple[int, int], rng: np.random.Generator, inward: bool = False
) -> Box:
    """Move each side of the tight inclusive box ``(x0, y0, x1, y1)`` by a random ``lo..hi`` px.

    Sides move outward (the box still contains the object, as MedSAM's shift does); with
    ``inward=True`` each side moves outward or inward with equal probability, and the inward
    moves of an axis that would invert the box are made outward instead. The result is clipped
    to the image ``hw = (H, W)``.
    """
    lo, hi = jitter
    d = rng.integers(lo, hi + 1, size=4)
    sign = rng.choice(np.array([-1, 1]), size=4) if inward else np.ones(4, dtype=np.int64)
    x0, y0, x1, y1 = box
    # sign +1 = outward: x0/y0 decrease, x1/y1 increase
    nx0, ny0, nx1, ny1 = x0 - sign[0] * d[0], y0 - sign[1] * d[1], x1 + sign[2] * d[2], y1 + sign[3] * d[3]
    if nx0 > nx1:
        nx0, nx1 = x0 - d[0], x1 + d[2]
    if ny0 > ny1:
        ny0, ny1 = y0 - d[1], y1 + d[3]
    h, w = hw
    return (int(np.clip(nx0, 0, w - 1)), int(np.clip(ny0, 0, h - 1)),
            int(np.clip(nx1, 0, w - 1)), int(np.clip(ny1, 0, h - 1)))


def boxes_from_label(
    label: np.ndarray,
    class_map: ClassMap,
    jitter: Optional[tuple[int, int]] = DEFAULT_BOX_JITTER,
    rng: Rng = None,
    *,
    min_size: int = DEFAULT_BOX_MIN_SIZE,
    connectivity: int = 2,
    inward: bool = False,
    case_id: str = "",
) -> WeakLabel:
    """Boxes of every connected component of every foreground class on every slice.

    One box per component (MedSAM style: a box per object, not one box around a class's scattered
    pieces); components under ``min_size`` px get none. The tight box is the component's min/max
    column and row (inclusive), then :func:`jitter_box` moves each side by ``jitter = (lo, hi)``
    px (``None`` or ``(0, 0)``: tight boxes).

    Args:
        label: integer ``(S, H, W)`` full label; classes are ``class_map.foreground``.
        class_map: the dataset's classes.
        jitter: inclusive range of the per-side shift in px (MedSAM: 3-7 px here).
        rng: generator or seed.
        min_size: smallest component (px) that gets a box.
        connectivity: 1 (4-connected) or 2 (8-connected) components.
        inward: let sides move inward too (see :func:`jitter_box`).
        case_id: recorded in the weak label.

    Returns:
        A ``kind="box"`` :class:`WeakLabel` listing, per slice, every present class with a box.
    """
    lab = _as_volume(label)
    gen = _gen(rng)
    lo, hi = jitter if jitter is not None else (0, 0)
    if not 0 <= lo <= hi:
        raise ValueError(f"jitter must be (lo, hi) with 0 <= lo <= hi, got {jitter}")
    structure = _structure(connectivity)
    weak = WeakLabel("box", tuple(int(s) for s in lab.shape), case_id=case_id)  # type: ignore[arg-type]
    hw = (int(lab.shape[1]), int(lab.shape[2]))
    for z in range(lab.shape[0]):
        for k in _present(lab[z], class_map):
            comps, n = ndi.label(lab[z] == k, structure=structure)
            sizes = np.bincount(comps.ravel(), minlength=n + 1)
            boxes = []
            for i, sl in enumerate(ndi.find_objects(comps), start=1):
                if sl is None or sizes[i] < min_size:
                    continue
                tight = (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1)
                boxes.append(jitter_box(tight, hw, (lo, hi), gen, inward))
            if boxes:
                weak.boxes.setdefault(z, {})[k] = boxes
    return weak


def _draw(rows: np.ndarray, cols: np.ndarray, n: int, gen: np.random.Generator,
          weight: Optional[np.ndarray] = None) -> list[tuple[int, int]]:
    """``min(n, len(rows))`` distinct pixels as ``(x, y)``, with probability ``∝ weight``."""
    if n <= 0 or rows.size == 0:
        return []
    p = None if weight is None else weight / weight.sum()
    idx = gen.choice(rows.size, size=min(n, rows.size), replace=False, p=p)
    return [(int(cols[i]), int(rows[i])) for i in idx]


def _positives(mask: np.ndarray, k: int, mode: str, gen: np.random.Generator, connectivity: int) -> list[tuple[int, int]]:
    if mode == "skeleton":
        pts, _ = instance_points(mask, k, gen, connectivity)
        return [(int(round(x)), int(round(y))) for x, y in pts]
    if mode == "boundary":
        edge = mask & ~ndi.binary_erosion(mask, structure=_structure(1), border_value=0)
        rows, cols = np.nonzero(edge)
        return _draw(rows, cols, k, gen)
    rows, cols = np.nonzero(mask)
    if mode == "center":
        dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        return _draw(rows, cols, k, gen, dist[rows, cols])
    return _draw(rows, cols, k, gen)


def points_from_label(
    label: np.ndarray,
    class_map: ClassMap,
    k: int = DEFAULT_POINTS_PER_CLASS,
    mode: str = "center",
    rng: Rng = None,
    negatives: int = 0,
    *,
    connectivity: int = 2,
    case_id: str = "",
) -> WeakLabel:
    """``k`` positive points per present foreground class per slice, drawn from the full label.

    Modes (points are distinct pixels of the class; a region with fewer than ``k`` pixels, or
    boundary pixels, gives all of them):

    - ``"center"``: probability proportional to the Euclidean distance to the region's border
      (image edges count as border), so points favour the interior;
    - ``"random"``: uniform over the class region;
    - ``"boundary"``: uniform over the region's inner boundary (class pixels with a 4-neighbour
      that is not the class, or on the image edge);
    - ``"skeleton"``: SeSAM's sampler
      (:func:`scribmed.data.sesam_sampling.instance_points`): ``k`` points *per connected
      instance* (``connectivity``), on a grid over its box, biased to its skeleton.

    ``negatives`` points per class are drawn uniformly from the slice's pixels of other classes
    and background (``label != class``).

    Returns:
        A ``kind="point"`` :class:`WeakLabel`.
    """
    if mode not in POINT_MODES:
        raise ValueError(f"point mode must be one of {', '.join(POINT_MODES)}, got {mode!r}")
    if k < 1:
        raise ValueError(f"points per class must be >= 1, got {k}")
    if negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {negatives}")
    lab = _as_volume(label)
    gen = _gen(rng)
    weak = WeakLabel("point", tuple(int(s) for s in lab.shape), case_id=case_id)  # type: ignore[arg-type]
    for z in range(lab.shape[0]):
        for c in _present(lab[z], class_map):
            mask = lab[z] == c
            pos = _positives(mask, k, mode, gen, connectivity)
            neg_rows, neg_cols = np.nonzero(~mask)
            neg = _draw(neg_rows, neg_cols, negatives, gen)
            weak.points.setdefault(z, {})[c] = PointSet(pos, neg)
    return weak


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The per-case generator of :func:`make_weak_dataset`: independent of case order and process."""
    return np.random.default_rng([int(seed), zlib.crc32(case_id.encode("utf-8"))])


def _check_out(out: Path, source: Path) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise DataError(out, f"is inside the source dataset {source}; write the weak dataset elsewhere")
    if out.exists():
        if not out.is_dir():
            raise DataError(out, "exists and is not a folder; choose a new output folder")
        if any(out.iterdir()):
            raise DataError(out, "folder is not empty; refusing to write into it (choose a new or empty folder)")


def make_weak_dataset(
    dataset: Dataset,
    out: str | Path,
    mix: Mapping[str, float],
    seed: int = 0,
    *,
    point_mode: str = "center",
    points_per_class: int = DEFAULT_POINTS_PER_CLASS,
    point_negatives: int = 0,
    box_jitter: tuple[int, int] = DEFAULT_BOX_JITTER,
    box_min_size: int = DEFAULT_BOX_MIN_SIZE,
    scribbles: str = "auto",
    scribble_style: str = "auto",
    progress: bool = True,
) -> Path:
    """Write a new generic-layout dataset at ``out`` that simulates the supervision ``mix``.

    Patients (not frames) get a type by :func:`assign_supervision`. Every case keeps its image
    and its **full label** (``labelsTr/``): the labels are the ground truth for scoring, the
    weak label is what training may use, and ``supervision.json`` says which that is per case.
    ``box``/``point`` cases get ``weak/<case>.json`` (:func:`boxes_from_label`,
    :func:`points_from_label`); ``scribble`` cases get ``scribblesTr/<case>.nii.gz``;
    ``full`` and ``none`` cases nothing more. ``dataset.json`` records the class map, the
    patients and a provenance record (source layout and root, mix, seed, converter settings).
    Each case draws from :func:`case_rng` ``(seed, case_id)``. The dataset is built in a
    temporary sibling folder and renamed into place; the source is only read.

    Args:
        dataset: the source; every case needs a full label.
        out: the new dataset folder (absent or empty, not inside the source).
        mix: share per supervision type, summing to 1 (:func:`check_mix`).
        seed: seed of the assignment and of every converter.
        point_mode / points_per_class / point_negatives: :func:`points_from_label` settings.
        box_jitter / box_min_size: :func:`boxes_from_label` settings.
        scribbles: ``"auto"`` (the case's own scribble when it has one, else synthesised),
            ``"synthetic"`` (always synthesised: ``ABDOMINAL_STYLE`` inside the body mask for the
            ABDOMINAL class map, the default style otherwise) or ``"source"`` (own scribbles only;
            a scribble case without one is an error).
        scribble_style: style of synthesised scribbles, a name in
            :data:`~scribmed.data.scribble_synthesis.SCRIBBLE_STYLES` (``acdc``, ``abdominal``,
            ``scribblebench``) or ``"auto"`` (``abdominal`` for the ABDOMINAL class map, else ``acdc``).
        progress: show a progress bar.

    Returns:
        ``out``.

    Raises:
        DataError: ``out`` not empty or inside the source, or a case without a label.
        ValueError: a bad mix or converter setting.
    """
    from scribmed.data.layouts import generic
    from scribmed.data.layouts.chaos_t2_nifti import body_mask
    from scribmed.data.scribble_synthesis import named_style, synthesize_scribbles

    shares = check_mix(mix)
    if scribble_style != "auto":
        named_style(scribble_style)  # unknown name: ValueError before any case is read
    if scribbles not in ("auto", "synthetic", "source"):
        raise ValueError(f"scribbles must be auto, synthetic or source, got {scribbles!r}")
    if point_mode not in POINT_MODES:
        raise ValueError(f"point mode must be one of {', '.join(POINT_MODES)}, got {point_mode!r}")
    if points_per_class < 1 or point_negatives < 0:
        raise ValueError(f"need points_per_class >= 1 and point_negatives >= 0, got {points_per_class}, "
                         f"{point_negatives}")
    if not 0 <= box_jitter[0] <= box_jitter[1]:
        raise ValueError(f"box_jitter must be (lo, hi) with 0 <= lo <= hi, got {box_jitter}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    _check_out(out, dataset.root)
    for case in dataset.cases:
        if not case.has_label:
            raise DataError(case.source, "has no label; weak labels are simulated from full labels")
    by_patient = assign_supervision(dataset.patients, shares, seed)
    abdominal = dataset.class_map == ABDOMINAL
    style_name = ("abdominal" if abdominal else "acdc") if scribble_style == "auto" else scribble_style
    style = named_style(style_name)
    supervision: dict[str, str] = {}
    synthesised: list[str] = []
    no_spacing: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for case in progress_bar(dataset.cases, desc="weak labels", unit="case", disable=not progress):
            was_cached = case._cache is not None
            arrays = case.load()
            if arrays.label is None:
                raise DataError(case.source, "listed with a label but none was loaded")
            kind = by_patient[case.patient_id]
            rng = case_rng(seed, case.case_id)
            weak = scribble = None
            if kind == "box":
                weak = boxes_from_label(arrays.label, dataset.class_map, box_jitter, rng, min_size=box_min_size)
            elif kind == "point":
                weak = points_from_label(arrays.label, dataset.class_map, points_per_class, point_mode, rng,
                                         point_negatives)
            elif kind == "scribble":
                if scribbles != "synthetic" and arrays.scribble is not None:
                    scribble = arrays.scribble
                elif scribbles == "source":
                    raise DataError(case.source, "has no scribble (scribbles='source')")
                else:
                    region = body_mask(arrays.image) if abdominal else None
                    scribble = synthesize_scribbles(arrays.label, dataset.class_map, seed=rng, style=style,
                                                    background_region=region)
                    synthesised.append(case.case_id)
            if arrays.spacing is None:
                no_spacing.append(case.case_id)
            generic.write_case(tmp, case.case_id, case.patient_id, arrays.image, arrays.label, scribble,
                               arrays.spacing, arrays.affine, class_map=dataset.class_map, weak=weak)
            supervision[case.case_id] = kind
            if not was_cached:
                case.release()
        generic.write_supervision_manifest(tmp, supervision, merge=False)
        provenance = _provenance(dataset, shares, seed, supervision, by_patient, synthesised, no_spacing,
                                 point_mode=point_mode, points_per_class=points_per_class,
                                 point_negatives=point_negatives, box_jitter=box_jitter,
                                 box_min_size=box_min_size, scribbles=scribbles, style=style,
                                 style_name=style_name)
        generic.write_metadata(tmp, provenance=provenance)
        if out.exists():
            out.rmdir()  # empty (checked above); the rename needs the name free
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _provenance(dataset: Dataset, shares: Mapping[str, float], seed: int, supervision: Mapping[str, str],
                by_patient: Mapping[str, str], synthesised: Sequence[str], no_spacing: Sequence[str],
                **settings: Any) -> dict[str, Any]:
    """The ``dataset.json`` provenance record of :func:`make_weak_dataset`."""
    import dataclasses

    style, style_name = settings.pop("style"), settings.pop("style_name")
    kinds = list(supervision.values())
    record: dict[str, Any] = {
        "weak_labels": {
            "method": "scribmed.data.weak_conversion.make_weak_dataset",
            "source": {"layout": dataset.layout, "root": str(dataset.root.resolve()), "cases": len(dataset)},
            "mix": dict(shares), "seed": int(seed), "unit": "patient",
            "cases": {t: kinds.count(t) for t in SUPERVISION_TYPES},
            "patients": {t: list(by_patient.values()).count(t) for t in SUPERVISION_TYPES},
            "box": {"jitter_px": [int(v) for v in settings["box_jitter"]], "min_size_px": settings["box_min_size"],
                    "per": "connected component (8-connected)", "sides": "outward"},
            "point": {"mode": settings["point_mode"], "points_per_class": settings["points_per_class"],
                      "negatives": settings["point_negatives"]},
            "scribble": {"source": settings["scribbles"], "synthesised_cases": len(synthesised)},
            "per_case_seed": "numpy.random.default_rng([seed, crc32(case_id)])",
            "labels": "kept for every case as the evaluation reference; supervision.json gives the training supervision",
        }
    }
    if no_spacing:
        record["weak_labels"]["spacing"] = (f"{len(no_spacing)} case(s) had no spacing in the source and were "
                                            "written with 1 mm voxels (distances are in pixels)")
    if synthesised:
        abdominal = dataset.class_map == ABDOMINAL
        record["scribbles"] = {
            "synthetic": True, "method": "scribmed.data.scribble_synthesis.synthesize_scribbles",
            "style": style_name,
            "style_values": json.loads(json.dumps(dataclasses.asdict(style))), "seed": int(seed),
            "per_case_seed": "numpy.random.default_rng([seed, crc32(case_id)])", "cases": len(synthesised),
            **({"background_region": "body mask (image > 2 % of range, opened, holes filled)"} if abdominal else {}),
            "note": "synthesised from the full labels by scribmed weak make",
        }
    elif "scribbles" in dataset.provenance and "scribble" in kinds:
        record["scribbles"] = dataset.provenance["scribbles"]
    others = {k: v for k, v in dataset.provenance.items() if k != "scribbles"}
    if others:
        record["source_provenance"] = others
    return record


__all__ = [
    "DEFAULT_BOX_JITTER",
    "DEFAULT_BOX_MIN_SIZE",
    "DEFAULT_POINTS_PER_CLASS",
    "POINT_MODES",
    "boxes_from_label",
    "case_rng",
    "jitter_box",
    "make_weak_dataset",
    "points_from_label",
]
