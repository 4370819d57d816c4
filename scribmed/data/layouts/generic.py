"""Generic NIfTI triplets for any other data (and the general-domain recipes).

On disk::

    root/imagesTr/<case>.nii.gz        image (``<case>_0000.nii.gz``, nnU-Net style, also accepted)
    root/labelsTr/<case>.nii.gz        full label, optional
    root/scribblesTr/<case>.nii.gz     scribble, optional
    root/weak/<case>.json              box or point weak label (``scribmed.weak/1``), optional
    root/supervision.json              case -> training supervision type, optional
    root/dataset.json                  {"classes": {"0": "background", "1": ...},
                                        "ignore_index": N, "patients": {"<case>": "<patient>"},
                                        "provenance": {...}}

A plain folder of ``*.nii.gz`` images (no ``imagesTr/``) is read as the images of such a dataset
(what ``scribmed predict`` is given for new scans).

The class map comes from the ``class_map=`` option, ``dataset.json`` ("classes", or nnU-Net's
``"labels": {name: value}``) or the ``fallback_class_map=`` option (e.g. a checkpoint's), in
that order; one of them is required. ``ignore_index`` defaults to the
largest class value + 1 (= the number of classes for contiguous labels). Patients default to the
case id. Spacing comes from the image header. ``provenance`` (optional) becomes
``Dataset.provenance``.

Weak labels (:mod:`scribmed.data.weak_labels`) are attached lazily: ``case.weak`` reads
``weak/<case>.json`` on first access and checks it against the class map and the image's header
shape (``Dataset.validate()`` does so for every case). ``supervision.json`` is read at open time
and sets ``case.supervision``; it must name listed cases only, and each named case must have
what its type needs (``box``/``point``: its weak file, ``scribble``: its scribble, ``full``: its
label), else a DataError names the manifest. Cases it does not list have ``supervision=None``.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.nifti import (
    load_nifti_case,
    read_nifti_shape,
    strip_nifti_suffix,
    write_nifti,
)
from scribmed.data.validation import check_shapes
from scribmed.data.weak_labels import (
    WEAK_FILE_TYPES,
    WeakLabel,
    read_supervision,
    read_weak_label,
    write_supervision,
    write_weak_label,
)
from scribmed.runtime.files import atomic_output

NAME = "generic"
IMAGES, LABELS, SCRIBBLES, WEAK = "imagesTr", "labelsTr", "scribblesTr", "weak"
META_FILE = "dataset.json"
SUPERVISION_FILE = "supervision.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise DataError(path, "must hold a JSON object")
    return data


def class_map_from_json(meta: dict[str, Any], path: Path) -> Optional[ClassMap]:
    """Build a :class:`ClassMap` from ``dataset.json`` content; ``None`` when it names no classes."""
    names: dict[int, str] = {}
    try:
        if "classes" in meta:
            names = {int(k): str(v) for k, v in dict(meta["classes"]).items()}
        elif "labels" in meta:  # nnU-Net v2: {"background": 0, "liver": 1}
            names = {int(v): str(k) for k, v in dict(meta["labels"]).items()}
        else:
            return None
        ignore = int(meta["ignore_index"]) if "ignore_index" in meta else max(names) + 1
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"malformed classes/ignore_index: {exc}") from None
    if not names or 0 not in names:
        raise DataError(path, "classes must be a non-empty map that includes 0 (background)")
    if ignore in names:
        raise DataError(path, f"ignore_index {ignore} is also a class value")
    return ClassMap(names, ignore)


def _index(folder: Path, strip_channel: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        stem = strip_nifti_suffix(path.name)
        if stem is None or not path.is_file():
            continue
        if strip_channel and stem.endswith("_0000"):
            stem = stem[: -len("_0000")]
        if stem in out:
            raise DataError(path, f"duplicate file for case {stem} (also {out[stem]})")
        out[stem] = path
    return out


def _weak_index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.name[: -len(".json")]: p for p in sorted(folder.iterdir())
            if p.name.endswith(".json") and len(p.name) > len(".json") and p.is_file()}


def _load_weak(path: Path, class_map: ClassMap, image: Path, case_id: str, kind: Optional[str]) -> WeakLabel:
    """Read ``weak/<case>.json`` checked against the image's header shape and the stated supervision."""
    weak = read_weak_label(path, class_map, shape=read_nifti_shape(image),
                           kind=kind if kind in WEAK_FILE_TYPES else None)
    if weak.case_id != case_id:
        raise DataError(path, f"case_id {weak.case_id!r} does not match the file name (case {case_id})")
    return weak


def _check_supervision(path: Path, supervision: Mapping[str, str], label: Mapping[str, Path],
                       scribble: Mapping[str, Path], weak: Mapping[str, Path]) -> None:
    """Every case named by the manifest must have what its supervision type needs."""
    needs = {"full": (label, f"label in {LABELS}/"), "scribble": (scribble, f"scribble in {SCRIBBLES}/"),
             "box": (weak, f"weak-label file {WEAK}/<case>.json"), "point": (weak, f"weak-label file {WEAK}/<case>.json")}
    for case_id, kind in sorted(supervision.items()):
        if kind in needs and case_id not in needs[kind][0]:
            raise DataError(path, f"case {case_id} is supervised by {kind} but has no {needs[kind][1]}")


def read_dataset(root: str | Path, *, class_map: Optional[ClassMap] = None,
                 fallback_class_map: Optional[ClassMap] = None) -> Dataset:
    """List ``imagesTr/`` with its optional ``labelsTr/``, ``scribblesTr/``, ``weak/`` (no voxel reads).

    ``supervision.json``, when present, is read and checked against the listing here. A folder
    without ``imagesTr/`` that holds ``*.nii.gz`` files itself is read as the images alone.

    Args:
        root: the dataset folder.
        class_map: overrides the classes of ``dataset.json``.
        fallback_class_map: the classes when neither ``class_map`` nor ``dataset.json`` names them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    meta_path = root / META_FILE
    meta = _read_json(meta_path) if meta_path.is_file() else {}
    if class_map is None:
        class_map = class_map_from_json(meta, meta_path)
    if class_map is None:
        class_map = fallback_class_map
    if class_map is None:
        raise DataError(
            meta_path,
            "no class map: add \"classes\" (e.g. {\"0\": \"background\", \"1\": \"organ\"}) "
            "or pass class_map=",
        )
    patients = meta.get("patients", {})
    if not isinstance(patients, dict):
        raise DataError(meta_path, "\"patients\" must map case ids to patient ids")
    flat = not (root / IMAGES).is_dir() and any(strip_nifti_suffix(p.name) for p in root.iterdir() if p.is_file())
    images = _index(root if flat else root / IMAGES, strip_channel=True)
    if not images:
        raise DataError(root / IMAGES, f"no <case>.nii.gz images found (here or in {root})")
    labels = _index(root / LABELS, strip_channel=False)
    scribbles = _index(root / SCRIBBLES, strip_channel=False)
    weak = _weak_index(root / WEAK)
    problems = [
        DataError(path, f"no image for case {case_id} in {IMAGES}/")
        for case_id, path in sorted({**weak, **labels, **scribbles}.items())
        if case_id not in images
    ]
    supervision: dict[str, str] = {}
    manifest = root / SUPERVISION_FILE
    if manifest.is_file():
        supervision = read_supervision(manifest, images)
        _check_supervision(manifest, supervision, labels, scribbles, weak)
    provenance = meta.get("provenance", {})
    if not isinstance(provenance, dict):
        raise DataError(meta_path, "\"provenance\" must be a JSON object")
    cases: list[Case] = []
    case_meta: dict[str, dict] = {}
    for case_id, image in images.items():
        label, scribble, weak_file = labels.get(case_id), scribbles.get(case_id), weak.get(case_id)
        kind = supervision.get(case_id)
        cases.append(
            Case(
                case_id=case_id,
                patient_id=str(patients.get(case_id, case_id)),
                source=image,
                loader=partial(load_nifti_case, image, label, scribble),
                has_label=label is not None,
                has_scribble=scribble is not None,
                supervision=kind,
                weak_loader=None if weak_file is None else partial(_load_weak, weak_file, class_map, image, case_id, kind),
            )
        )
        files = {"image": image}
        if label is not None:
            files["label"] = label
        if scribble is not None:
            files["scribble"] = scribble
        if weak_file is not None:
            files["weak"] = weak_file
        case_meta[case_id] = {"files": files}
    return Dataset(NAME, root, class_map, cases, "mm", case_meta, problems, provenance=provenance)


def write_metadata(
    root: str | Path,
    class_map: Optional[ClassMap] = None,
    patients: Optional[dict[str, str]] = None,
    provenance: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Merge classes/ignore value, case->patient entries and a provenance record into
    ``root/dataset.json`` (atomic); ``provenance`` replaces the stored one."""
    path = Path(root) / META_FILE
    meta = _read_json(path) if path.is_file() else {}
    if provenance is not None:
        meta["provenance"] = dict(provenance)
    if class_map is not None:
        meta.pop("labels", None)
        meta["classes"] = class_map.to_json()
        meta["ignore_index"] = class_map.ignore_index
    if patients:
        merged = dict(meta.get("patients", {}))
        merged.update(patients)
        meta["patients"] = dict(sorted(merged.items()))
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def write_case(
    root: str | Path,
    case_id: str,
    patient_id: str,
    image: np.ndarray,
    label: Optional[np.ndarray] = None,
    scribble: Optional[np.ndarray] = None,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
    class_map: Optional[ClassMap] = None,
    weak: Optional[WeakLabel] = None,
) -> Path:
    """Write one case's triplet (atomically) and record its patient (and classes) in dataset.json.

    ``weak`` (a box/point :class:`WeakLabel` on the image's grid) goes to ``weak/<case>.json``
    with its ``case_id`` set to ``case_id``. Returns the image path.
    """
    if not case_id or "/" in case_id or "\\" in case_id:
        raise ValueError(f"invalid case id {case_id!r}")
    image = np.asarray(image)
    check_shapes(case_id, image, label, scribble)
    if weak is not None and tuple(weak.shape) != tuple(image.shape):
        raise ValueError(f"{case_id}: weak-label shape {tuple(weak.shape)} does not match image shape {image.shape}")
    root = Path(root)
    out = write_nifti(root / IMAGES / f"{case_id}.nii.gz", image, spacing, affine)
    if label is not None:
        write_nifti(root / LABELS / f"{case_id}.nii.gz", label, spacing, affine, is_label=True)
    if scribble is not None:
        write_nifti(root / SCRIBBLES / f"{case_id}.nii.gz", scribble, spacing, affine, is_label=True)
    if weak is not None:
        write_weak_label(root / WEAK / f"{case_id}.json", dataclasses.replace(weak, case_id=case_id))
    write_metadata(root, class_map, {case_id: patient_id})
    return out


def write_supervision_manifest(root: str | Path, mapping: Mapping[str, str], merge: bool = True) -> Path:
    """Write ``root/supervision.json`` (case -> supervision type), merged into the existing one
    unless ``merge=False``. The reader checks it against the cases at open time."""
    path = Path(root) / SUPERVISION_FILE
    merged = dict(read_supervision(path)) if merge and path.is_file() else {}
    merged.update(mapping)
    return write_supervision(path, merged)
