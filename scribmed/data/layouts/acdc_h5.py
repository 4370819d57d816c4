"""ACDC as preprocessed HDF5 volumes (the WSL4MIS layout).

On disk::

    root/ACDC_training_volumes/patientXXX_frameYY.h5
        image     float32 (slices, H, W), scaled to [0, 1]
        label     uint8   (slices, H, W), 0 bg, 1 RV, 2 Myo, 3 LV       (optional)
        scribble  uint16  (slices, H, W), classes 0-3, 4 = unlabeled    (optional)

No spacing is stored; pass ``spacing=(dz, dy, dx)`` (mm) to get distances in mm.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import CARDIAC, Case, CaseArrays, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.validation import (
    READ_ERRORS,
    as_integer_labels,
    check_shapes,
    check_volume_ndim,
    read_error,
    spacing_option,
)
from scribmed.runtime.files import atomic_output

NAME = "acdc-h5"
VOLUMES_DIR = "ACDC_training_volumes"
_CASE_RE = re.compile(r"^(?P<patient>.+)_frame(?P<frame>\d+)$")


def _patient_of(case_id: str) -> str:
    m = _CASE_RE.match(case_id)
    return m.group("patient") if m else case_id


def _volumes_dir(root: Path) -> Path:
    if (root / VOLUMES_DIR).is_dir():
        return root / VOLUMES_DIR
    if root.name == VOLUMES_DIR and root.is_dir():
        return root
    raise DataError(root, f"no {VOLUMES_DIR}/ folder (expected {VOLUMES_DIR}/patientXXX_frameYY.h5)")


def _probe_keys(path: Path) -> Optional[set[str]]:
    """The dataset keys of an HDF5 file (header only), or ``None`` when it cannot be opened."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return set(f.keys())
    except READ_ERRORS:
        return None


def load_h5_case(path: Path, spacing: Optional[tuple[float, float, float]] = None) -> CaseArrays:
    """Read one ``patientXXX_frameYY.h5`` (image required; label/scribble when present)."""
    import h5py

    if not path.is_file():
        raise DataError(path, "missing HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            if "image" not in f:
                raise DataError(path, f"missing required key 'image' (keys: {sorted(f.keys())})")
            image = np.asarray(f["image"][()])
            label = np.asarray(f["label"][()]) if "label" in f else None
            scribble = np.asarray(f["scribble"][()]) if "scribble" in f else None
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise read_error(path, "HDF5", exc) from None
    check_volume_ndim(path, image, "image")
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    if label is not None:
        label = as_integer_labels(path, label, "label")
    if scribble is not None:
        scribble = as_integer_labels(path, scribble, "scribble")
    check_shapes(path, image, label, scribble)
    return CaseArrays(image=image, label=label, scribble=scribble, spacing=spacing, affine=None)


def read_dataset(
    root: str | Path,
    *,
    spacing: Optional[Sequence[float]] = None,
    class_map: ClassMap = CARDIAC,
) -> Dataset:
    """List ``root/ACDC_training_volumes/*.h5`` (reads only HDF5 key lists, no arrays).

    Args:
        root: the dataset folder holding ``ACDC_training_volumes/`` (or that folder itself).
        spacing: optional ``(dz, dy, dx)`` in mm applied to every case (then ``spacing_unit="mm"``).
        class_map: defaults to the cardiac map (ignore value 4).
    """
    root = Path(root)
    vol_dir = _volumes_dir(root)
    spacing_t = spacing_option(spacing)
    files = sorted(p for p in vol_dir.glob("*.h5") if p.is_file())
    if not files:
        raise DataError(vol_dir, "no .h5 volumes found (expected patientXXX_frameYY.h5)")
    cases: list[Case] = []
    meta: dict[str, dict] = {}
    for path in files:
        case_id = path.stem
        keys = _probe_keys(path)
        # An unreadable file is listed anyway; loading it raises the precise DataError.
        has_label = keys is None or "label" in keys
        has_scribble = keys is None or "scribble" in keys
        cases.append(
            Case(
                case_id=case_id,
                patient_id=_patient_of(case_id),
                source=path,
                loader=partial(load_h5_case, path, spacing_t),
                has_label=has_label,
                has_scribble=has_scribble,
            )
        )
        meta[case_id] = {"files": {"image": path}}
    return Dataset(NAME, root, class_map, cases, "mm" if spacing_t else "none", meta)


def _fit(array: np.ndarray, dtype: type, what: str) -> np.ndarray:
    """Cast an integer map to ``dtype``, refusing values it cannot hold (no silent wrap)."""
    array = as_integer_labels(what, array, what)
    info = np.iinfo(dtype)
    if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
        raise ValueError(f"{what} values must lie in [{info.min}, {info.max}] to be stored as {np.dtype(dtype)}")
    return array.astype(dtype, copy=False)


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
    """Write one case as ``root/ACDC_training_volumes/<case_id>.h5`` (atomically).

    ``case_id`` must be ``<patient_id>_frameNN`` so the reader recovers the patient id. The
    layout stores no spacing or affine; they are accepted and ignored (readers take
    ``spacing=`` instead). image is stored float32, label uint8, scribble uint16.
    """
    import h5py

    if _patient_of(case_id) != patient_id:
        raise ValueError(
            f"acdc-h5 case id must be '<patient_id>_frameNN', got {case_id!r} for patient {patient_id!r}"
        )
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (slices, H, W), got shape {image.shape}")
    check_shapes(case_id, image, label, scribble)
    label = None if label is None else _fit(np.asarray(label), np.uint8, "label")
    scribble = None if scribble is None else _fit(np.asarray(scribble), np.uint16, "scribble")
    path = Path(root) / VOLUMES_DIR / f"{case_id}.h5"
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("image", data=image, compression="gzip", compression_opts=1)
            if label is not None:
                f.create_dataset("label", data=label, compression="gzip")
            if scribble is not None:
                f.create_dataset("scribble", data=scribble, compression="gzip")
    return path
