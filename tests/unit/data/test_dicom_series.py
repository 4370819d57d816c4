"""DICOM series geometry: what scribmed reads equals what SimpleITK (and its NIfTI writer) reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scribmed.data.dicom_series import (
    LPS_TO_RAS,
    load_series,
    slice_header,
    stack_series,
    write_series,
)
from scribmed.data.errors import DataError


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(spacing=(4.0, 0.8, 0.7), origin=(-12.5, 30.25, 7.0)) -> np.ndarray:
    """A right-handed oblique RAS affine for ``(dz, dy, dx)`` spacing."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0.3, -0.2, 0.5) @ np.diag(spacing[::-1])
    affine[:3, 3] = origin
    return affine


def _read(folder: Path):
    import pydicom

    headers = [slice_header(p, pydicom.dcmread(p, defer_size=1024)) for p in sorted(folder.glob("*.dcm"))]
    return stack_series(folder, headers)


@pytest.fixture()
def oblique(tmp_path):
    """A 4-slice oblique float series whose file names run against the slice order."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 30.0, (4, 6, 5)).astype(np.float32)
    affine = oblique_affine()
    files = write_series(tmp_path / "s", image, (4.0, 0.8, 0.7), affine, patient_id="p1")
    for z, path in enumerate(files):  # names sorted opposite to the slices
        path.rename(path.with_name(f"{9 - z}.dcm"))
    return tmp_path / "s", image, affine


def test_geometry_equals_simpleitk_and_its_nifti(oblique, tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    folder, image, affine = oblique
    geometry = _read(folder)
    arrays = load_series(geometry)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    assert [p.name for p in geometry.files] == ["9.dcm", "8.dcm", "7.dcm", "6.dcm"]
    assert list(reader.GetFileNames()) == [str(p) for p in geometry.files]
    np.testing.assert_allclose(arrays.image, sitk.GetArrayFromImage(ref), rtol=0, atol=1e-4)
    np.testing.assert_allclose(arrays.spacing, ref.GetSpacing()[::-1], rtol=1e-6)
    lps = LPS_TO_RAS @ arrays.affine
    np.testing.assert_allclose(lps[:3, 3], ref.GetOrigin(), atol=1e-6)
    direction = lps[:3, :3] / np.asarray(arrays.spacing[::-1])
    np.testing.assert_allclose(direction, np.reshape(ref.GetDirection(), (3, 3)), atol=1e-6)
    sitk.WriteImage(ref, str(tmp_path / "ref.nii.gz"))  # what a DICOM-to-NIfTI conversion stores
    nifti = nib.load(str(tmp_path / "ref.nii.gz"))
    np.testing.assert_allclose(arrays.affine, nifti.affine, atol=1e-4)
    np.testing.assert_allclose(arrays.image, np.asarray(nifti.dataobj).transpose(2, 1, 0), atol=1e-4)
    np.testing.assert_allclose(arrays.affine, affine, atol=1e-6)  # the written geometry
    np.testing.assert_allclose(arrays.image, image, atol=float(np.ptp(image)) / 65535)


def test_integer_images_are_stored_as_they_are(tmp_path):
    image = np.arange(-10, 50, dtype=np.int16).reshape(1, 6, 10)
    write_series(tmp_path, image, (3.0, 1.0, 1.0), patient_id="p")
    arrays = load_series(_read(tmp_path))
    assert np.array_equal(arrays.image, image) and arrays.spacing == (3.0, 1.0, 1.0)


def test_irregular_stacks_are_refused(tmp_path):
    import pydicom

    image = np.zeros((5, 3, 3), np.float32)
    files = write_series(tmp_path, image, (2.0, 1.0, 1.0), patient_id="p")
    headers = [slice_header(p, pydicom.dcmread(p, defer_size=1024)) for p in files]
    with pytest.raises(DataError, match=r"non-uniform slice spacing: 4 mm between 0001.dcm and 0003.dcm, 2 mm else"):
        stack_series(tmp_path, headers[:2] + headers[3:])
    with pytest.raises(DataError, match=r"two slices at the same position .* 0001.dcm and 0001.dcm"):
        stack_series(tmp_path, headers + [headers[1]])
    tilted = headers[:3] + [type(headers[3])(**{**headers[3].__dict__, "position": (0.5, 0.0, 6.0)})]  # x moves
    with pytest.raises(DataError, match="not stacked along their normal"):
        stack_series(tmp_path, tilted)
    wider = headers[:3] + [type(headers[3])(**{**headers[3].__dict__, "columns": 4})]
    with pytest.raises(DataError, match=r"Columns differs within the series \(0000.dcm: 3, 0003.dcm: 4\)"):
        stack_series(tmp_path, wider)


def test_a_sheared_affine_cannot_be_written(tmp_path):
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(ValueError, match="sheared"):
        write_series(tmp_path, np.zeros((2, 3, 3)), None, affine, patient_id="p")
