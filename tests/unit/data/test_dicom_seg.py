"""DICOM-SEG written from a label map reads back (highdicom, pydicom) as the same map, one segment per class."""

from __future__ import annotations

import numpy as np
import pytest

from scribmed.data.case import CARDIAC
from scribmed.data.dicom_seg import segment_map, write_dicom_seg
from scribmed.data.dicom_series import write_series
from scribmed.data.errors import DataError


@pytest.fixture()
def series(tmp_path):
    image = np.random.default_rng(0).random((3, 6, 5)).astype(np.float32)
    return write_series(tmp_path / "series", image, (2.0, 1.0, 1.0), patient_id="p7")


def _labels(values=(0, 1, 3)) -> np.ndarray:
    return np.random.default_rng(1).choice(values, size=(3, 6, 5)).astype(np.uint8)


def test_written_segments_are_the_classes_and_rebuild_the_label_map(series, tmp_path):
    import highdicom as hd
    import pydicom

    labels = _labels()  # class 2 (Myo) absent: still a segment, all zeros
    path = write_dicom_seg(tmp_path / "out" / "c.dcm", labels, CARDIAC.names, series, recipe="dmpls",
                           version="1.2.3")
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.dcm"]  # nothing else left behind
    seg = hd.seg.segread(path)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in series]
    assert seg.number_of_segments == 3
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == ["RV", "Myo", "LV"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == "p7"
    numbers = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], combine_segments=True)
    values = np.array([0, *CARDIAC.foreground])  # segment number -> class value
    np.testing.assert_array_equal(values[numbers], labels)
    myo = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], segment_numbers=[2])
    assert myo.shape == (3, 6, 5, 1) and not myo.any()
    algorithm = seg.get_segment_description(1).algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("scribmed", "1.2.3")
    assert "dmpls" in algorithm.AlgorithmParameters
    assert seg.get_segment_description(3).segmented_property_type.meaning == "Left ventricle"
    assert seg.SegmentationType == "BINARY" and seg.SoftwareVersions == "1.2.3"


def test_values_outside_the_class_map_and_a_foreign_grid_are_refused(series, tmp_path):
    with pytest.raises(DataError, match=r"label values \[7\] are not classes"):
        write_dicom_seg(tmp_path / "a.dcm", _labels((0, 7)), CARDIAC.names, series, recipe="r", version="v")
    with pytest.raises(DataError, match=r"not on the source series' grid \(3, 6, 5\)"):
        write_dicom_seg(tmp_path / "b.dcm", np.zeros((2, 6, 5), np.uint8), CARDIAC.names, series, recipe="r",
                        version="v")
    with pytest.raises(DataError, match="no source DICOM files"):
        write_dicom_seg(tmp_path / "c.dcm", _labels(), CARDIAC.names, [], recipe="r", version="v")
    assert not list(tmp_path.glob("*.dcm"))


def test_segment_numbers_follow_class_values():
    labels = np.array([[[0, 2, 5, 5]]])
    assert segment_map(labels, {0: "bg", 2: "a", 5: "b"}, "x").tolist() == [[[0, 1, 2, 2]]]
