"""The ``dicom`` layout: series found in a folder tree, case ids, source files, one-line refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from scribmed.data.case import CARDIAC
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset, write_dataset


def _cases(n: int = 2, slices: int = 3) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"case_id": f"case{i}", "patient_id": f"p{i}", "image": rng.random((slices, 5, 4)).astype(np.float32),
             "spacing": (3.0, 1.5, 1.25)} for i in range(n)]


def _rewrite(path: Path, **changes) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return text


def test_series_folders_become_cases_with_their_source_files(tmp_path):
    import pydicom

    cases = _cases()
    write_dataset("dicom", tmp_path / "in", cases)
    (tmp_path / "in" / "README.txt").write_text("not DICOM")
    ds = open_dataset("dicom", tmp_path / "in", fallback_class_map=CARDIAC)
    assert ds.case_ids == ["case0", "case1"] and ds.patients == ["p0", "p1"]
    assert ds.class_map == CARDIAC and ds.spacing_unit == "mm"
    case = ds["case1"]
    assert case.source == tmp_path / "in" / "case1" and len(case.source_files) == 3
    np.testing.assert_allclose(case.image, cases[1]["image"], atol=1e-5)
    assert case.spacing == (3.0, 1.5, 1.25)
    for z, path in enumerate(case.source_files):  # slice z of the array is source file z
        stored = pydicom.dcmread(path)
        np.testing.assert_allclose(stored.pixel_array * float(stored.RescaleSlope) + float(stored.RescaleIntercept),
                                   case.image[z], atol=1e-5)
    assert open_dataset("dicom", tmp_path / "in").class_map.names == {0: "background"}  # images only
    ds.validate(progress=False)


def test_mixed_series_in_one_folder_are_named_by_patient_and_series_number(tmp_path):
    write_dataset("dicom", tmp_path / "w", _cases(3))
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, path in enumerate(sorted((tmp_path / "w").rglob("*.dcm"))):
        shutil.copy(path, flat / f"IM{k:04d}")  # no suffix: recognised by the DICOM preamble
    for path in sorted(flat.iterdir())[3:]:
        _rewrite(path, PatientID="p0")  # cases 1 and 2 of patient p0 too
    ds = open_dataset("dicom", flat)
    assert ds.case_ids == ["p0_1", "p0_1_2", "p0_1_3"] and ds.patients == ["p0"]
    assert all(len(c.source_files) == 3 for c in ds)


def test_ignored_files_and_repeated_folder_names(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    write_dataset("dicom", tmp_path / "in" / "a", _cases(1))
    write_dataset("dicom", tmp_path / "in" / "b", _cases(1))  # both hold a series folder "case0"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta.MediaStorageSOPInstanceUID = "1.2.840.10008.1.3.10"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir = Dataset()
    dicomdir.file_meta, dicomdir.preamble, dicomdir.SOPClassUID = meta, b"\0" * 128, "1.2.840.10008.1.3.10"
    dicomdir.save_as(tmp_path / "in" / "DICOMDIR", enforce_file_format=True)
    (tmp_path / "in" / ".partial.dcm.tmp").write_bytes(b"half a file")
    assert open_dataset("dicom", tmp_path / "in").case_ids == ["a_case0", "b_case0"]


def test_irregular_series_are_refused_in_one_line_naming_the_folder(tmp_path):
    write_dataset("dicom", tmp_path, _cases(1, slices=5))
    folder = tmp_path / "case0"
    files = sorted(folder.iterdir())
    files[2].unlink()  # a gap
    with pytest.raises(DataError) as err:
        open_dataset("dicom", tmp_path)
    assert "non-uniform slice spacing" in _one_line(err, folder)
    shutil.copy(files[1], files[2])  # the same position twice
    _rewrite(files[2], SOPInstanceUID="1.2.3.4")
    with pytest.raises(DataError) as err:
        open_dataset("dicom", tmp_path)
    assert "two slices at the same position" in _one_line(err, folder)
    _rewrite(files[2], ImagePositionPatient=[0, 0, -6.0], Rows=4, PixelData=b"\0" * 32)  # a smaller slice
    with pytest.raises(DataError) as err:
        open_dataset("dicom", tmp_path)
    assert "Rows differs within the series" in _one_line(err, folder)


def test_broken_files_are_refused_in_one_line_naming_the_file(tmp_path):
    write_dataset("dicom", tmp_path, _cases(1))
    broken = tmp_path / "case0" / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 20)
    with pytest.raises(DataError) as err:
        open_dataset("dicom", tmp_path)
    assert "cannot read DICOM" in _one_line(err, broken)
    broken.unlink()
    whole = tmp_path / "case0" / "0001.dcm"
    whole.write_bytes(whole.read_bytes()[:-20])  # truncated pixel data
    with pytest.raises(DataError) as err:
        open_dataset("dicom", tmp_path)
    assert "truncated" in _one_line(err, whole)


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no DICOM image files found"):
        open_dataset("dicom", tmp_path)
