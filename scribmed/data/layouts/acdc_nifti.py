"""ACDC in its original NIfTI layout, with scribbles as extra NIfTI files.

On disk (also found one level deeper, e.g. ``root/training/patientXXX/``)::

    root/patientXXX/patientXXX_frameYY.nii.gz            image
    root/patientXXX/patientXXX_frameYY_gt.nii.gz         label (0 bg, 1 RV, 2 Myo, 3 LV), optional
    root/patientXXX/patientXXX_frameYY_scribble.nii.gz   scribble (4 = unlabeled), optional

``patientXXX_4d.nii.gz`` and ``Info.cfg`` are ignored. Spacing comes from the image header.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import CARDIAC, Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.nifti import load_nifti_case, strip_nifti_suffix, write_nifti
from scribmed.data.validation import check_shapes

NAME = "acdc-nifti"
_FILE_RE = re.compile(r"^(?P<case>(?P<patient>.+)_frame\d+)(?P<kind>_gt|_scribble)?$")


def read_dataset(root: str | Path, *, class_map: ClassMap = CARDIAC) -> Dataset:
    """List ``patientXXX/patientXXX_frameYY*.nii.gz`` under ``root`` (depth 1 or 2); no reads.

    A label or scribble without its image is recorded in ``Dataset.problems``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    found: dict[str, dict[str, Path]] = {}
    patients: dict[str, str] = {}
    for path in sorted(list(root.glob("*/*.nii*")) + list(root.glob("*/*/*.nii*"))):
        stem = strip_nifti_suffix(path.name)
        m = _FILE_RE.match(stem) if stem else None
        if m is None or not path.is_file():
            continue  # e.g. patientXXX_4d.nii.gz
        kind = {None: "image", "_gt": "label", "_scribble": "scribble"}[m.group("kind")]
        entry = found.setdefault(m.group("case"), {})
        if kind in entry:
            raise DataError(path, f"duplicate {kind} for case {m.group('case')} (also {entry[kind]})")
        entry[kind] = path
        patients[m.group("case")] = m.group("patient")
    problems: list[DataError] = []
    cases: list[Case] = []
    meta: dict[str, dict] = {}
    for case_id, files in sorted(found.items()):
        if "image" not in files:
            other = files.get("label") or files["scribble"]
            problems.append(DataError(other, f"no image file {case_id}.nii.gz beside it"))
            continue
        image = files["image"]
        cases.append(
            Case(
                case_id=case_id,
                patient_id=patients[case_id],
                source=image,
                loader=partial(load_nifti_case, image, files.get("label"), files.get("scribble")),
                has_label="label" in files,
                has_scribble="scribble" in files,
            )
        )
        subset = image.parent.parent.relative_to(root).as_posix()
        meta[case_id] = {"files": dict(files), "subset": "" if subset == "." else subset}
    if not cases:
        raise DataError(root, "no patientXXX/patientXXX_frameYY.nii.gz images found")
    return Dataset(NAME, root, class_map, cases, "mm", meta, problems)


def write_case(
    root: str | Path,
    case_id: str,
    patient_id: str,
    image: np.ndarray,
    label: Optional[np.ndarray] = None,
    scribble: Optional[np.ndarray] = None,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
) -> Path:
    """Write ``root/<patient_id>/<case_id>{,_gt,_scribble}.nii.gz`` (atomically, (x, y, z) order).

    ``case_id`` must be ``<patient_id>_frameNN``. Returns the image path.
    """
    m = _FILE_RE.match(case_id)
    if m is None or m.group("kind") or m.group("patient") != patient_id:
        raise ValueError(
            f"acdc-nifti case id must be '<patient_id>_frameNN', got {case_id!r} for patient {patient_id!r}"
        )
    image = np.asarray(image)
    check_shapes(case_id, image, label, scribble)
    folder = Path(root) / patient_id
    out = write_nifti(folder / f"{case_id}.nii.gz", image, spacing, affine)
    if label is not None:
        write_nifti(folder / f"{case_id}_gt.nii.gz", label, spacing, affine, is_label=True)
    if scribble is not None:
        write_nifti(folder / f"{case_id}_scribble.nii.gz", scribble, spacing, affine, is_label=True)
    return out
