"""One DICOM image series as a scribmed volume: slice headers, stacking geometry, pixels, writing.

A series is a set of single-frame images (one file per slice) sharing a SeriesInstanceUID. Its
slices are sorted along the slice normal ``n = row x column`` (the cross product of the two
direction cosines of ImageOrientationPatient) by the projection ``n . ImagePositionPatient``, so
slice ``z`` of the array comes from ``files[z]``. The volume is ``(z, y, x)`` = (slice, row,
column) with spacing ``(dz, dy, dx)`` in mm: ``dy``/``dx`` from PixelSpacing (row spacing, column
spacing), ``dz`` from the sorted positions. Pixel values get RescaleSlope/RescaleIntercept.

The affine is the NIfTI (x, y, z) affine a DICOM-to-NIfTI converter writes: DICOM positions are
LPS, NIfTI's are RAS, so the LPS affine ``[dx*row | dy*column | dz*n | first position]`` is
flipped in x and y. A prediction written with it (:func:`scribmed.data.nifti.write_prediction`)
overlays the series in any viewer.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Optional, Sequence

import numpy as np

from scribmed.data.case import CaseArrays
from scribmed.data.errors import DataError
from scribmed.data.nifti import default_affine
from scribmed.data.validation import short_reason
from scribmed.runtime.files import atomic_output

#: LPS (DICOM patient coordinates) <-> RAS (NIfTI world coordinates): x and y change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Slices closer than this along the normal (mm) are the same position.
DUPLICATE_MM = 1e-3
#: Allowed deviation of a slice step from the median step: this fraction of it plus 1 micrometre.
SPACING_RTOL = 1e-2
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: What pydicom raises on a corrupt, truncated or undecodable file.
DICOM_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, struct.error, ValueError, RuntimeError, KeyError, TypeError, AttributeError,
    NotImplementedError, IndexError,
)


@dataclass(frozen=True)
class SliceHeader:
    """What stacking needs from one image file (read without its pixel data).

    ``orientation`` is ImageOrientationPatient (row then column direction cosines, LPS),
    ``position`` ImagePositionPatient (mm, LPS), ``pixel_spacing`` PixelSpacing ``(dy, dx)`` mm.
    """

    path: Path
    series_uid: str
    rows: int
    columns: int
    orientation: tuple[float, ...]
    position: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    thickness: Optional[float]
    patient_id: str
    series_number: Optional[int]


@dataclass(frozen=True)
class SeriesGeometry:
    """A checked, sorted series: ``files[z]`` is slice ``z``; ``spacing`` ``(dz, dy, dx)`` mm;
    ``affine`` the NIfTI (x, y, z) RAS affine."""

    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray


def _floats(ds: Any, keyword: str, count: int, path: Path) -> tuple[float, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DataError(path, f"no {keyword}: the slice cannot be placed in space")
    try:
        many = isinstance(value, Iterable) and not isinstance(value, (str, bytes))
        values = tuple(float(v) for v in value) if many else (float(value),)
    except (TypeError, ValueError):
        raise DataError(path, f"malformed {keyword} {value!r}") from None
    if len(values) != count or not all(np.isfinite(values)):
        raise DataError(path, f"{keyword} must hold {count} finite numbers, got {value!r}")
    return values


def _check_pixel_data(path: Path, ds: Any) -> None:
    """The file holds pixel data that ends inside it (checked on the element's offset and length,
    which a header read with ``defer_size`` keeps without reading the pixels)."""
    if "PixelData" not in ds:
        raise DataError(path, "no pixel data")
    try:
        raw = ds.get_item("PixelData", keep_deferred=True)
    except TypeError:  # pragma: no cover - pydicom 2.x keeps deferred elements raw anyway
        raw = ds.get_item("PixelData")
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > path.stat().st_size:
        raise DataError(path, f"truncated: its pixel data ends at byte {tell + length}, the file has "
                        f"{path.stat().st_size}")


def slice_header(path: Path, ds: Any) -> SliceHeader:
    """The :class:`SliceHeader` of one single-frame image dataset (pydicom ``Dataset``, read with
    ``defer_size`` so that its pixel data is located but not read).

    Raises:
        DataError: no SeriesInstanceUID, a multi-frame or colour image, missing geometry, no
            pixel data or a file that ends before its pixel data does.
    """
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        raise DataError(path, "no SeriesInstanceUID: cannot tell which series the image belongs to")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(path, f"multi-frame image ({frames} frames): only one file per slice is supported")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DataError(path, "colour image: only greyscale (one sample per pixel) series are supported")
    rows, columns = int(ds.Rows), int(ds.Columns)
    _check_pixel_data(path, ds)
    thickness = ds.get("SliceThickness")
    number = ds.get("SeriesNumber")
    return SliceHeader(
        path=path,
        series_uid=uid,
        rows=rows,
        columns=columns,
        orientation=_floats(ds, "ImageOrientationPatient", 6, path),
        position=_floats(ds, "ImagePositionPatient", 3, path),  # type: ignore[arg-type]
        pixel_spacing=_floats(ds, "PixelSpacing", 2, path),  # type: ignore[arg-type]
        thickness=None if thickness in (None, "") else float(thickness),
        patient_id=str(ds.get("PatientID", "") or ""),
        series_number=None if number in (None, "") else int(number),
    )


def _first_differing(headers: Sequence[SliceHeader], key: str, close: bool) -> Optional[SliceHeader]:
    ref = np.asarray(getattr(headers[0], key), float)
    for h in headers[1:]:
        value = np.asarray(getattr(h, key), float)
        same = np.allclose(value, ref, rtol=1e-4, atol=1e-4) if close else np.array_equal(value, ref)
        if not same:
            return h
    return None


def stack_series(folder: Path, headers: Sequence[SliceHeader]) -> SeriesGeometry:
    """Sort one series' slices along their normal and check that they form a regular volume.

    Args:
        folder: named in error messages (the series' folder).
        headers: the slices of one series, any order.

    Raises:
        DataError: differing Rows/Columns, orientation or pixel spacing; duplicate positions;
            non-uniform slice spacing; slices not stacked along their normal (gantry tilt).
    """
    first = headers[0]
    for key, close, what in (("rows", False, "Rows"), ("columns", False, "Columns"),
                             ("orientation", True, "ImageOrientationPatient"),
                             ("pixel_spacing", True, "PixelSpacing")):
        other = _first_differing(headers, key, close)
        if other is not None:
            raise DataError(folder, f"{what} differs within the series ({first.path.name}: {getattr(first, key)}, "
                            f"{other.path.name}: {getattr(other, key)})")
    row, col = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise DataError(first.path, f"ImageOrientationPatient {first.orientation} is not two orthonormal directions")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.asarray([h.position for h in headers], float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    files = tuple(headers[i].path for i in order)
    steps = np.diff(along)
    if len(steps) and steps.min() < DUPLICATE_MM:
        k = int(np.argmin(steps))
        raise DataError(folder, f"two slices at the same position ({along[k]:.3f} mm along the normal): "
                        f"{files[k].name} and {files[k + 1].name}")
    if len(steps):
        dz = float(np.median(steps))
        worst = int(np.argmax(np.abs(steps - dz)))
        if abs(steps[worst] - dz) > SPACING_RTOL * dz + 1e-3:
            raise DataError(folder, f"non-uniform slice spacing: {steps[worst]:.4g} mm between {files[worst].name} and "
                            f"{files[worst + 1].name}, {dz:.4g} mm elsewhere (a gap or a missing slice)")
        sideways = (positions - positions[0]) - np.outer(along - along[0], normal)
        if np.linalg.norm(sideways, axis=1).max() > SPACING_RTOL * dz + 1e-3:
            raise DataError(folder, "slices are not stacked along their normal (gantry tilt or a sheared stack)")
    else:
        dz = first.thickness if first.thickness and first.thickness > 0 else 1.0
    dy, dx = first.pixel_spacing
    if dy <= 0 or dx <= 0:
        raise DataError(first.path, f"PixelSpacing {first.pixel_spacing} must be positive")
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dx, col * dy, normal * dz, positions[0]
    return SeriesGeometry(files, (len(files), first.rows, first.columns), (float(dz), float(dy), float(dx)),
                          LPS_TO_RAS @ lps)


def load_series(geometry: SeriesGeometry) -> CaseArrays:
    """Read the pixels of every slice (rescaled, float32) into a ``(z, y, x)`` image.

    Raises:
        DataError: a file whose pixel data cannot be decoded or does not fit Rows/Columns.
    """
    import pydicom

    image = np.empty(geometry.shape, np.float32)
    for z, path in enumerate(geometry.files):
        try:
            ds = pydicom.dcmread(path)
            pixels = np.asarray(ds.pixel_array)
        except DICOM_ERRORS as exc:
            raise DataError(path, f"cannot read DICOM pixel data: {short_reason(exc, path=path)}") from None
        if pixels.shape != geometry.shape[1:]:
            raise DataError(path, f"pixel data of shape {pixels.shape}, expected {geometry.shape[1:]}")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        image[z] = pixels.astype(np.float32) * slope + intercept
    return CaseArrays(image=image, spacing=geometry.spacing, affine=geometry.affine.copy())


def _ds(value: float) -> Any:
    """A decimal string of at most 16 characters (the DICOM DS limit)."""
    from pydicom.valuerep import DS

    return DS(float(value), auto_format=True)


def _stored_pixels(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored, slope, intercept)`` with ``image ~= stored * slope + intercept``.

    Integer images that fit 16 bits are stored as they are; others (float) as uint16 with a fixed
    point scaling over their range (the slope rounded to a DICOM decimal string first).
    """
    if np.issubdtype(image.dtype, np.integer) or image.dtype == bool:
        lo, hi = (int(image.min()), int(image.max())) if image.size else (0, 0)
        if 0 <= lo and hi <= 65535:
            return image.astype(np.uint16), 1.0, 0.0
        if -32768 <= lo and hi <= 32767:
            return image.astype(np.int16), 1.0, 0.0
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("cannot write a DICOM series of an image with NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    intercept = float(_ds(lo))
    slope = float(_ds((hi - intercept) / 65535)) if hi > intercept else 1.0
    stored = np.clip(np.round((values - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def _lps_geometry(shape: tuple[int, ...], spacing: Optional[Sequence[float]],
                  affine: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Row and column directions, the slice step (mm) and the first position of a RAS affine, in LPS,
    and its spacing ``(dz, dy, dx)``."""
    ras = default_affine(spacing) if affine is None else np.asarray(affine, float)
    lps = LPS_TO_RAS @ ras
    dx, dy, dz = (float(v) for v in np.linalg.norm(lps[:3, :3], axis=0))
    if spacing is not None and not np.allclose((dz, dy, dx), np.asarray(spacing, float), rtol=1e-3):
        raise ValueError(f"spacing {tuple(spacing)} disagrees with the affine ({dz:.6g}, {dy:.6g}, {dx:.6g})")
    row, col, step = lps[:3, 0] / dx, lps[:3, 1] / dy, lps[:3, 2] / dz
    if abs(row @ col) > 1e-4 or (shape[0] > 1 and np.linalg.norm(np.cross(step, np.cross(row, col))) > 1e-4):
        raise ValueError("a DICOM series needs orthogonal axes (the affine is sheared)")
    return np.stack([row, col, lps[:3, 2]]), lps[:3, 3], (dz, dy, dx)


def _save(ds: Any, path: Path) -> None:
    """Write ``ds`` as a DICOM file (preamble, file meta) with pydicom 2.4 or 3."""
    import pydicom

    with atomic_output(path) as tmp:
        if int(pydicom.__version__.split(".")[0]) >= 3:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.x
            ds.is_little_endian, ds.is_implicit_VR = True, False
            pydicom.dcmwrite(tmp, ds, write_like_original=False)


def write_series(
    folder: str | Path,
    image: np.ndarray,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
    *,
    patient_id: str,
    description: str = "",
) -> list[Path]:
    """Write a ``(z, y, x)`` image as an MR series, one file per slice (``folder/<z:04d>.dcm``).

    ImagePositionPatient, ImageOrientationPatient, PixelSpacing and SliceThickness come from the
    (x, y, z) RAS ``affine`` (or a diagonal one built from ``spacing`` ``(dz, dy, dx)`` mm), so
    :func:`stack_series` reads back the same geometry. Float images are stored as uint16 with
    RescaleSlope/RescaleIntercept spanning their range. UIDs are new (``generate_uid``); every
    file is written atomically. Returns the files in slice order.

    A slice axis pointing against ``row x column`` (a left-handed affine) reads back with its
    slices in the opposite order, at the same places in space.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"a DICOM series is written from a (slices, H, W) image, got shape {array.shape}")
    (row, col, step), origin, (dz, dy, dx) = _lps_geometry(array.shape, spacing, affine)
    stored, slope, intercept = _stored_pixels(array)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    now = datetime.datetime.now()
    folder = Path(folder)
    paths = []
    for z in range(array.shape[0]):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR_IMAGE_STORAGE, sop
        meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta, ds.preamble = meta, b"\0" * 128
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = f"{patient_id}^", patient_id  # family name only
        ds.PatientBirthDate, ds.PatientSex = "", ""
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "MR", "scribmed", 1, z + 1
        ds.SeriesDescription, ds.PositionReferenceIndicator = description[:64], ""
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "2D"
        ds.EchoTime = ds.EchoTrainLength = ""
        position = origin + z * step
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(dz)
        ds.SliceLocation = _ds(position @ np.cross(row, col))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
        ds.PixelData = np.ascontiguousarray(stored[z], dtype="<i2" if stored.dtype == np.int16 else "<u2").tobytes()
        path = folder / f"{z:04d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


__all__ = ["SeriesGeometry", "SliceHeader", "load_series", "slice_header", "stack_series", "write_series"]
