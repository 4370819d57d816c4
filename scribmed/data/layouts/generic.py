"""Generic NIfTI triplets for any other data (and the general-domain recipes).

On disk::

    root/imagesTr/<case>.nii.gz        image (``<case>_0000.nii.gz``, nnU-Net style, also accepted)
    root/labelsTr/<case>.nii.gz        full label, optional
    root/scribblesTr/<case>.nii.gz     scribble, optional
    root/dataset.json                  {"classes": {"0": "background", "1": ...},
                                        "ignore_index": N, "patients": {"<case>": "<patient>"}}
    root/weak/<case>.json              reserved for weak labels (points/boxes/tags), not read yet

The class map comes from ``dataset.json`` ("classes", or nnU-Net's ``"labels": {name: value}``)
or from the ``class_map=`` option; one of the two is required. ``ignore_index`` defaults to the
largest class value + 1 (= the number of classes for contiguous labels). Patients default to the
case id. Spacing comes from the image header.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.nifti import load_nifti_case, strip_nifti_suffix, write_nifti
from scribmed.data.validation import check_shapes
from scribmed.files import atomic_output

NAME = "generic"
IMAGES, LABELS, SCRIBBLES = "imagesTr", "labelsTr", "scribblesTr"
META_FILE = "dataset.json"


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


def read_dataset(root: str | Path, *, class_map: Optional[ClassMap] = None) -> Dataset:
    """List ``imagesTr/`` with its optional ``labelsTr/`` and ``scribblesTr/`` (no voxel reads).

    Args:
        root: the dataset folder.
        class_map: overrides the classes of ``dataset.json``; required when it has none.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    meta_path = root / META_FILE
    meta = _read_json(meta_path) if meta_path.is_file() else {}
    if class_map is None:
        class_map = class_map_from_json(meta, meta_path)
    if class_map is None:
        raise DataError(
            meta_path,
            "no class map: add \"classes\" (e.g. {\"0\": \"background\", \"1\": \"organ\"}) "
            "or pass class_map=",
        )
    patients = meta.get("patients", {})
    if not isinstance(patients, dict):
        raise DataError(meta_path, "\"patients\" must map case ids to patient ids")
    images = _index(root / IMAGES, strip_channel=True)
    if not images:
        raise DataError(root / IMAGES, "no <case>.nii.gz images found")
    labels = _index(root / LABELS, strip_channel=False)
    scribbles = _index(root / SCRIBBLES, strip_channel=False)
    problems = [
        DataError(path, f"no image for case {case_id} in {IMAGES}/")
        for case_id, path in sorted({**labels, **scribbles}.items())
        if case_id not in images
    ]
    cases: list[Case] = []
    case_meta: dict[str, dict] = {}
    for case_id, image in images.items():
        label, scribble = labels.get(case_id), scribbles.get(case_id)
        cases.append(
            Case(
                case_id=case_id,
                patient_id=str(patients.get(case_id, case_id)),
                source=image,
                loader=partial(load_nifti_case, image, label, scribble),
                has_label=label is not None,
                has_scribble=scribble is not None,
            )
        )
        files = {"image": image}
        if label is not None:
            files["label"] = label
        if scribble is not None:
            files["scribble"] = scribble
        case_meta[case_id] = {"files": files}
    return Dataset(NAME, root, class_map, cases, "mm", case_meta, problems)


def write_metadata(
    root: str | Path,
    class_map: Optional[ClassMap] = None,
    patients: Optional[dict[str, str]] = None,
) -> Path:
    """Merge classes/ignore value and case->patient entries into ``root/dataset.json`` (atomic)."""
    path = Path(root) / META_FILE
    meta = _read_json(path) if path.is_file() else {}
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
) -> Path:
    """Write one case's triplet (atomically) and record its patient (and classes) in dataset.json.

    Returns the image path.
    """
    if not case_id or "/" in case_id or "\\" in case_id:
        raise ValueError(f"invalid case id {case_id!r}")
    image = np.asarray(image)
    check_shapes(case_id, image, label, scribble)
    root = Path(root)
    out = write_nifti(root / IMAGES / f"{case_id}.nii.gz", image, spacing, affine)
    if label is not None:
        write_nifti(root / LABELS / f"{case_id}.nii.gz", label, spacing, affine, is_label=True)
    if scribble is not None:
        write_nifti(root / SCRIBBLES / f"{case_id}.nii.gz", scribble, spacing, affine, is_label=True)
    write_metadata(root, class_map, {case_id: patient_id})
    return out
