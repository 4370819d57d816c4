"""MSCMR LGE MRI in the CycleMix layout.

On disk (any of the three subsets may be absent)::

    root/{train,val,TestSet}/images/subjectN_DE.nii.gz
    root/<subset>/labels/subjectN_DE_manual.nii.gz     full label (val, TestSet)
    root/<subset>/labels/subjectN_DE_scribble.nii.gz   scribble, 4 = unlabeled (train)

case id = patient id = ``subjectN``; ``dataset.meta[case_id]["subset"]`` records the subset.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from scribmed.data.case import CARDIAC, Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.nifti import load_nifti_case, strip_nifti_suffix, write_nifti
from scribmed.data.validation import check_shapes

NAME = "mscmr"
SUBSETS = ("train", "val", "TestSet")
_IMAGE_RE = re.compile(r"^(?P<case>.+)_DE$")
_LABEL_RE = re.compile(r"^(?P<case>.+)_DE_(?P<kind>manual|scribble)$")

Subset = Literal["train", "val", "TestSet"]


def _nifti_files(folder: Path) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        stem = strip_nifti_suffix(path.name)
        if stem is not None and path.is_file():
            out.append((stem, path))
    return out


def read_dataset(root: str | Path, *, class_map: ClassMap = CARDIAC) -> Dataset:
    """List the images and labels of every present subset (no voxel data is read).

    A label without its image is recorded in ``Dataset.problems``; the same subject in two
    subsets is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    present = [s for s in SUBSETS if (root / s).is_dir()]
    if not present:
        raise DataError(root, f"none of the subset folders {', '.join(SUBSETS)} exists")
    cases: list[Case] = []
    meta: dict[str, dict] = {}
    problems: list[DataError] = []
    seen: dict[str, Path] = {}
    for subset in present:
        images = {}
        for stem, path in _nifti_files(root / subset / "images"):
            m = _IMAGE_RE.match(stem)
            if m:
                images[m.group("case")] = path
        labels: dict[str, dict[str, Path]] = {}
        for stem, path in _nifti_files(root / subset / "labels"):
            m = _LABEL_RE.match(stem)
            if m:
                labels.setdefault(m.group("case"), {})[
                    "label" if m.group("kind") == "manual" else "scribble"
                ] = path
        for case_id, files in sorted(labels.items()):
            if case_id not in images:
                for path in files.values():
                    problems.append(DataError(path, f"no image {case_id}_DE.nii.gz in {subset}/images"))
        for case_id, image in sorted(images.items()):
            if case_id in seen:
                raise DataError(image, f"subject {case_id} also appears in {seen[case_id]}")
            seen[case_id] = image
            files = labels.get(case_id, {})
            cases.append(
                Case(
                    case_id=case_id,
                    patient_id=case_id,
                    source=image,
                    loader=partial(load_nifti_case, image, files.get("label"), files.get("scribble")),
                    has_label="label" in files,
                    has_scribble="scribble" in files,
                )
            )
            meta[case_id] = {"subset": subset, "files": {"image": image, **files}}
    if not cases:
        raise DataError(root, "no <subset>/images/subjectN_DE.nii.gz images found")
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
    subset: Subset = "train",
) -> Path:
    """Write one subject the way CycleMix distributes it (atomically).

    ``subset="train"`` writes the scribble as ``labels/<case>_DE_scribble.nii.gz`` and drops the
    full label; ``"val"``/``"TestSet"`` write ``labels/<case>_DE_manual.nii.gz`` and drop the
    scribble. ``case_id`` must equal ``patient_id``. Returns the image path.
    """
    if subset not in SUBSETS:
        raise ValueError(f"mscmr subset must be one of {SUBSETS}, got {subset!r}")
    if case_id != patient_id:
        raise ValueError(f"mscmr case id must equal the patient id, got {case_id!r} / {patient_id!r}")
    image = np.asarray(image)
    check_shapes(case_id, image, label, scribble)
    base = Path(root) / subset
    out = write_nifti(base / "images" / f"{case_id}_DE.nii.gz", image, spacing, affine)
    if subset == "train":
        if scribble is not None:
            write_nifti(
                base / "labels" / f"{case_id}_DE_scribble.nii.gz", scribble, spacing, affine, is_label=True
            )
    elif label is not None:
        write_nifti(base / "labels" / f"{case_id}_DE_manual.nii.gz", label, spacing, affine, is_label=True)
    return out
