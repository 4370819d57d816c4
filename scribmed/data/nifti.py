"""NIfTI reading and writing with scribmed's axis convention (written atomically).

Convention: scribmed arrays are ``(slices, H, W)`` = ``(z, y, x)`` with spacing ``(dz, dy, dx)``
in mm. NIfTI stores ``(x, y, z)``: readers return ``data.transpose(2, 1, 0)`` and the zooms
reversed; writers store ``array.transpose(2, 1, 0)``. A prediction written with the source
case's affine therefore overlays the original image in any viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from scribmed.data.case import CaseArrays
from scribmed.data.errors import DataError
from scribmed.data.validation import (
    READ_ERRORS,
    as_integer_labels,
    check_shapes,
    check_spacing_match,
    compact_int,
    read_error,
)
from scribmed.runtime.files import atomic_output

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class NiftiVolume(NamedTuple):
    """A NIfTI volume in scribmed order: ``array`` (z, y, x), ``spacing`` (dz, dy, dx) mm."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


def strip_nifti_suffix(name: str) -> Optional[str]:
    """``"a_b.nii.gz"`` -> ``"a_b"``; ``None`` when ``name`` is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def to_canonical(data_xyz: np.ndarray) -> np.ndarray:
    """NIfTI ``(x, y, z)`` (or 2D ``(x, y)``) -> scribmed ``(z, y, x)`` (2D -> ``(1, y, x)``)."""
    if data_xyz.ndim == 2:
        data_xyz = data_xyz[:, :, None]
    return data_xyz.transpose(2, 1, 0)


def to_nifti_order(array_zyx: np.ndarray) -> np.ndarray:
    """scribmed ``(z, y, x)`` -> NIfTI ``(x, y, z)``."""
    return np.asarray(array_zyx).transpose(2, 1, 0)


def _load(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise DataError(path, "missing NIfTI file")
    try:
        img = nib.load(str(path))
    except READ_ERRORS as exc:
        raise read_error(path, "NIfTI", exc) from None
    if not hasattr(img, "dataobj") or not hasattr(img.header, "get_zooms"):
        raise DataError(path, f"cannot read NIfTI: not a NIfTI image ({type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        pass
    elif len(shape) not in (2, 3):
        raise DataError(path, f"expected a 2D or 3D NIfTI volume, got shape {tuple(shape)}")
    return img


def _spacing_of(img) -> tuple[float, float, float]:
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    while len(zooms) < 3:
        zooms.append(1.0)
    return (zooms[2], zooms[1], zooms[0])


def _read(path: Path, *, as_label: bool, what: str) -> NiftiVolume:
    img = _load(path)
    try:
        if as_label:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
    except READ_ERRORS as exc:
        raise read_error(path, "NIfTI", exc) from None
    if data.ndim == 4:
        data = data[..., 0]
    data = np.ascontiguousarray(to_canonical(np.asarray(data)))
    if as_label:
        data = as_integer_labels(path, data, what)
    return NiftiVolume(data, _spacing_of(img), np.asarray(img.affine, dtype=np.float64))


def read_image_nifti(path: str | Path) -> NiftiVolume:
    """Read an image as float32 ``(z, y, x)`` with spacing ``(dz, dy, dx)`` and its affine.

    Raises:
        DataError: missing, unreadable or non-2D/3D file.
    """
    return _read(Path(path), as_label=False, what="image")


def read_label_nifti(path: str | Path, what: str = "label") -> NiftiVolume:
    """Read a label/scribble/prediction map as an integer ``(z, y, x)`` array.

    The stored integer dtype is kept; float-stored maps must hold whole numbers and are cast to
    the smallest fitting integer type. ``what`` names the role in error messages.

    Raises:
        DataError: missing/unreadable file or non-integer values.
    """
    return _read(Path(path), as_label=True, what=what)


def read_nifti_spacing(path: str | Path) -> tuple[float, float, float]:
    """Header spacing ``(dz, dy, dx)`` without reading the voxel data."""
    return _spacing_of(_load(Path(path)))


def read_nifti_shape(path: str | Path) -> tuple[int, int, int]:
    """Header shape in scribmed order ``(slices, H, W)`` without reading the voxel data."""
    shape = [int(s) for s in _load(Path(path)).shape[:3]]
    if len(shape) == 2:
        shape.append(1)
    return (shape[2], shape[1], shape[0])


def default_affine(spacing: Optional[Sequence[float]]) -> np.ndarray:
    """Diagonal (x, y, z) affine for scribmed spacing ``(dz, dy, dx)`` (1 mm when ``None``)."""
    dz, dy, dx = (1.0, 1.0, 1.0) if spacing is None else (float(s) for s in spacing)
    return np.diag([dx, dy, dz, 1.0])


def _storage_array(array: np.ndarray, is_label: bool) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if is_label:
        if np.issubdtype(array.dtype, np.integer):
            return compact_int(array) if array.dtype.itemsize > 2 else array
        return array
    if array.dtype == np.float64:
        return array.astype(np.float32)
    return array


def write_nifti(
    path: str | Path,
    array_zyx: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
    *,
    is_label: bool = False,
) -> Path:
    """Write a ``(z, y, x)`` array as NIfTI ``(x, y, z)``, atomically.

    Args:
        path: destination (``.nii.gz`` compresses).
        array_zyx: 3D array in scribmed order (2D is treated as one slice).
        spacing: ``(dz, dy, dx)`` in mm; builds a diagonal affine when ``affine`` is ``None``.
        affine: a source case's (x, y, z) affine to reuse, so the file overlays the original. When
            both are given they must agree (the affine's column norms are the spacing).
        is_label: store integers compactly (uint8/int16) instead of keeping the input dtype.

    Returns:
        The written path.
    """
    import nibabel as nib

    path = Path(path)
    arr = np.asarray(array_zyx)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(path, f"cannot write NIfTI: expected (slices, H, W), got shape {arr.shape}")
    if affine is None:
        affine = default_affine(spacing)
    else:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise DataError(path, f"cannot write NIfTI: affine must be 4x4, got {affine.shape}")
        if spacing is not None:
            norms = np.linalg.norm(affine[:3, :3], axis=0)[::-1]  # (dz, dy, dx)
            if not np.allclose(norms, np.asarray(spacing, float), rtol=1e-3, atol=0):
                raise DataError(
                    path,
                    f"cannot write NIfTI: spacing {tuple(spacing)} disagrees with the affine "
                    f"({', '.join(f'{v:.6g}' for v in norms)})",
                )
    data = np.ascontiguousarray(to_nifti_order(_storage_array(arr, is_label)))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_output(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_prediction(
    path: str | Path,
    array_shw: np.ndarray,
    spacing: Optional[Sequence[float]],
    affine: Optional[np.ndarray] = None,
) -> Path:
    """Write a predicted label map ``(slices, H, W)`` as NIfTI on the reference's grid.

    Pass the source case's ``affine`` when known (NIfTI layouts) so the prediction overlays the
    original image; otherwise a diagonal affine is built from ``spacing`` (mm, or 1 when None).
    """
    arr = np.asarray(array_shw)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        arr = as_integer_labels(path, arr, "prediction")
    return write_nifti(path, arr, spacing, affine, is_label=True)


def load_nifti_case(
    image_path: Path,
    label_path: Optional[Path] = None,
    scribble_path: Optional[Path] = None,
) -> CaseArrays:
    """Read an image/label/scribble NIfTI triplet into :class:`CaseArrays`.

    Spacing and affine come from the image header; label and scribble must match the image's
    shape and spacing (relative tolerance 1e-3), else a :class:`DataError` names the file.
    """
    image = read_image_nifti(image_path)
    label = scribble = None
    if label_path is not None:
        label = read_label_nifti(label_path, "label")
        check_spacing_match(label_path, image.spacing, label.spacing, "label")
    if scribble_path is not None:
        scribble = read_label_nifti(scribble_path, "scribble")
        check_spacing_match(scribble_path, image.spacing, scribble.spacing, "scribble")
    check_shapes(
        image_path,
        image.array,
        None if label is None else label.array,
        None if scribble is None else scribble.array,
        label_path=label_path,
        scribble_path=scribble_path,
    )
    return CaseArrays(
        image=image.array,
        label=None if label is None else label.array,
        scribble=None if scribble is None else scribble.array,
        spacing=image.spacing,
        affine=image.affine,
    )
