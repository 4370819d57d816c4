"""DICOM image series: one case per series, images only (input of ``scribmed predict``).

On disk: any folder tree of DICOM files, searched recursively, e.g.::

    root/<series folder>/*.dcm     one series per folder (case id = folder name)
    root/*.dcm                     or several series mixed (case id = PatientID_SeriesNumber)

Every single-frame greyscale image file is grouped by SeriesInstanceUID; a series becomes a case
whose slices are sorted along the slice normal (:mod:`scribmed.data.dicom_series`), so slice
``z`` of the array comes from ``case.source_files[z]``. Files that are not images are ignored
(DICOMDIR, reports, DICOM-SEG, non-DICOM files, hidden files); a ``.dcm`` file or a file with the
DICOM preamble that cannot be read is an error, as is a series with differing Rows/Columns or
orientation, duplicate positions or non-uniform slice spacing. All of that is checked when the
folder is opened (headers only); pixels are read on first access.

Case id: the series folder's name when every series has a folder of its own (its path below
``root`` when names repeat), else ``PatientID_SeriesNumber``; characters other than letters,
digits, ``.``, ``_``, ``-`` become ``_`` and repeats get ``_2``, ``_3``, ... Patient id:
PatientID (the case id when empty). Spacing and the NIfTI (RAS) affine come from the headers, so
NIfTI predictions overlay the series.

The layout stores no labels. Its class map is the ``class_map=`` option, else the
``fallback_class_map=`` option (``scribmed predict`` passes the checkpoint's), else background
only.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.dicom_series import (
    DICOM_ERRORS,
    SliceHeader,
    load_series,
    slice_header,
    stack_series,
    write_series,
)
from scribmed.data.errors import DataError
from scribmed.data.validation import short_reason

NAME = "dicom"
#: SOP classes that are never slices of an image series (DICOMDIR, segmentations, RT structures).
_NOT_IMAGES = {"1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.3"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _has_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise DataError(path, f"cannot read: {short_reason(exc, path=path)}") from None
    return len(head) == 132 and head[128:] == b"DICM"


def read_header(path: Path) -> Optional[SliceHeader]:
    """The slice header of an image file; ``None`` for a file that is no DICOM image.

    Raises:
        DataError: a ``.dcm`` file or a file with the DICOM preamble that cannot be read, or an
            image that cannot be placed (see :func:`~scribmed.data.dicom_series.slice_header`).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    dicom_named = path.suffix.lower() == ".dcm"
    if not _has_preamble(path) and not dicom_named:
        return None
    try:
        ds = pydicom.dcmread(path, defer_size=1024, force=dicom_named)  # pixels located, not read
    except (InvalidDicomError, *DICOM_ERRORS) as exc:
        raise DataError(path, f"cannot read DICOM: {short_reason(exc, path=path)}") from None
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not sop_class:
        raise DataError(path, "cannot read DICOM: no SOPClassUID (not a DICOM object, or a damaged one)")
    if sop_class in _NOT_IMAGES or str(ds.get("Modality", "")) == "SEG" or "Rows" not in ds or "Columns" not in ds:
        return None
    try:
        return slice_header(path, ds)
    except DICOM_ERRORS as exc:
        raise DataError(path, f"cannot read DICOM: {short_reason(exc, path=path)}") from None


def _scan(root: Path) -> dict[str, list[SliceHeader]]:
    """The image headers below ``root`` by SeriesInstanceUID (hidden files and folders skipped)."""
    series: dict[str, list[SliceHeader]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not path.is_file():
            continue
        header = read_header(path)
        if header is not None:
            series[header.series_uid].append(header)
    return dict(series)


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "series"


def _unique(names: dict[str, str]) -> dict[str, str]:
    """``names`` (uid -> name) with repeats suffixed ``_2``, ``_3``, ... in uid order."""
    seen: dict[str, int] = {}
    out = {}
    for uid in sorted(names, key=lambda u: (names[u], u)):
        base = names[uid]
        seen[base] = seen.get(base, 0) + 1
        out[uid] = base if seen[base] == 1 else f"{base}_{seen[base]}"
    return out


def case_ids(root: Path, series: dict[str, list[SliceHeader]]) -> dict[str, str]:
    """Case id by SeriesInstanceUID (module docstring)."""
    folders = {uid: {h.path.parent for h in headers} for uid, headers in series.items()}
    own = all(len(f) == 1 for f in folders.values()) and len({min(f) for f in folders.values()}) == len(folders)
    if own:
        names = {uid: _safe(min(f).name) for uid, f in folders.items()}
        if len(set(names.values())) < len(names):
            names = {uid: _safe("_".join(min(f).relative_to(root).parts) or root.name) for uid, f in folders.items()}
    else:
        names = {}
        for uid, headers in series.items():
            first = headers[0]
            number = "" if first.series_number is None else f"_{first.series_number}"
            names[uid] = _safe(f"{first.patient_id or 'series'}{number}")
    return _unique(names)


def _series_folder(headers: Sequence[SliceHeader]) -> Path:
    """The deepest folder holding every file of the series (named in its error messages)."""
    return Path(os.path.commonpath([str(h.path.parent) for h in headers]))


def read_dataset(root: str | Path, *, class_map: Optional[ClassMap] = None,
                 fallback_class_map: Optional[ClassMap] = None) -> Dataset:
    """Read every image header below ``root``, group and check the series (no pixel reads).

    Args:
        root: a folder of DICOM files (any depth).
        class_map: the classes (the layout stores none).
        fallback_class_map: the classes when ``class_map`` is not given (a checkpoint's).

    Raises:
        DataError: no DICOM image series, an unreadable DICOM file or an irregular series (one
            line naming the file or the series folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    series = _scan(root)
    if not series:
        raise DataError(root, "no DICOM image files found (searched recursively)")
    ids = case_ids(root, series)
    cases, meta = [], {}
    for uid, headers in series.items():
        folder = _series_folder(headers)
        geometry = stack_series(folder, headers)
        case_id = ids[uid]
        cases.append(Case(
            case_id=case_id,
            patient_id=headers[0].patient_id or case_id,
            source=folder,
            loader=partial(load_series, geometry),
            source_files=geometry.files,
        ))
        meta[case_id] = {"files": {"image": folder}, "series_uid": uid}
    classes = class_map or fallback_class_map or ClassMap({0: "background"}, ignore_index=1)
    return Dataset(NAME, root, classes, cases, "mm", meta)


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
    """Write one case's image as an MR series in ``root/<case_id>/`` (one file per slice).

    Geometry comes from ``affine`` (NIfTI, RAS) or ``spacing`` ``(dz, dy, dx)`` mm; see
    :func:`~scribmed.data.dicom_series.write_series`. ``label`` and ``scribble`` are not
    written (the layout holds images only). Returns the series folder.
    """
    if not case_id or _safe(case_id) != case_id:
        raise ValueError(f"invalid case id {case_id!r} for a DICOM series folder")
    folder = Path(root) / case_id
    write_series(folder, image, spacing, affine, patient_id=patient_id, description=case_id)
    return folder
