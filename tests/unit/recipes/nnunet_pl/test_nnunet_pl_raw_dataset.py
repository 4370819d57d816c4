"""A fold as an nnU-Net raw dataset: the ignore label exactly where scribbles are unlabeled, geometry kept, split."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scribmed.data.case import CARDIAC, Case, CaseArrays, ClassMap
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.recipes.nnunet_pl.raw_dataset import (
    NNUNetFolders,
    dataset_json,
    ignore_label_scribble,
    write_raw_dataset,
    write_split,
)


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> object:
    root = write_phantom_dataset("cardiac", "acdc-nifti", tmp_path_factory.mktemp("nn") / "acdc", n_patients=2,
                                 seed=1, size=(40, 36), slices=(3, 3))
    return open_dataset("acdc-nifti", root)


def _case(case_id: str, image: np.ndarray, scribble: np.ndarray, spacing=None) -> Case:
    return Case(case_id, case_id, Path(f"/data/{case_id}.h5"),
                lambda: CaseArrays(image=image, scribble=scribble, spacing=spacing), has_scribble=True)


def test_ignore_label_is_the_value_above_the_classes_exactly_where_unlabeled():
    rng = np.random.default_rng(0)
    scribble = rng.integers(0, 5, size=(3, 8, 9))  # 4 = CARDIAC's unlabeled value
    out = ignore_label_scribble(scribble, CARDIAC)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out == 4, scribble == 4)
    np.testing.assert_array_equal(out[scribble != 4], scribble[scribble != 4])
    # an unlabeled value that is not right above the classes still becomes num_classes
    cmap = ClassMap({0: "background", 1: "a", 2: "b"}, ignore_index=255)
    s = np.where(scribble == 4, 255, scribble % 3)
    out = ignore_label_scribble(s, cmap)
    np.testing.assert_array_equal(out == 3, s == 255)
    assert set(np.unique(out)) <= {0, 1, 2, 3}


def test_a_value_outside_the_class_map_names_the_file():
    with pytest.raises(DataError, match=r"x\.h5.*value\(s\) \[7\]"):
        ignore_label_scribble(np.array([[[0, 7, 4]]]), CARDIAC, "x.h5")


def test_dataset_json_declares_ignore_as_the_highest_label():
    d = dataset_json(CARDIAC, channels=1, num_training=3)
    assert d["labels"] == {"background": 0, "RV": 1, "Myo": 2, "LV": 3, "ignore": 4}
    assert d["channel_names"] == {"0": "MRI"} and d["numTraining"] == 3 and d["file_ending"] == ".nii.gz"
    assert dataset_json(CARDIAC, channels=3, num_training=1)["channel_names"] == {
        "0": "channel_0", "1": "channel_1", "2": "channel_2"}


def test_export_keeps_geometry_and_marks_unlabeled_pixels(acdc, tmp_path):
    cases = acdc.cases[:3]
    folders = NNUNetFolders(tmp_path / "nnunet")
    ids = write_raw_dataset(cases, acdc.class_map, folders.raw_dataset)
    assert ids == [c.case_id for c in cases]
    meta = json.loads((folders.raw_dataset / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"]["ignore"] == acdc.class_map.num_classes
    for case in cases:
        img = nib.load(folders.raw_dataset / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        lab = nib.load(folders.raw_dataset / "labelsTr" / f"{case.case_id}.nii.gz")
        np.testing.assert_allclose(img.affine, case.affine, atol=1e-5)
        np.testing.assert_allclose(lab.affine, case.affine, atol=1e-5)
        image = np.asarray(img.dataobj).transpose(2, 1, 0)
        label = np.asarray(lab.dataobj).transpose(2, 1, 0)
        np.testing.assert_allclose(image, case.image.astype(np.float32))
        np.testing.assert_array_equal(label == acdc.class_map.num_classes, case.scribble == acdc.class_map.ignore_index)
        labelled = case.scribble != acdc.class_map.ignore_index
        np.testing.assert_array_equal(label[labelled], case.scribble[labelled])
    # the input folder holds nothing new
    assert not any(p.name.endswith("_0000.nii.gz") for p in Path(acdc.root).rglob("*"))


def test_export_resumes_and_keeps_written_cases(acdc, tmp_path):
    folders = NNUNetFolders(tmp_path / "nnunet")
    write_raw_dataset(acdc.cases[:2], acdc.class_map, folders.raw_dataset)
    first = folders.raw_dataset / "labelsTr" / f"{acdc.cases[0].case_id}.nii.gz"
    stamp = first.stat().st_mtime_ns
    write_raw_dataset(acdc.cases[:2], acdc.class_map, folders.raw_dataset)
    assert first.stat().st_mtime_ns == stamp


def test_layout_without_spacing_gets_1mm_and_multichannel_images_one_file_per_channel(tmp_path):
    image = np.random.default_rng(0).random((2, 3, 6, 5)).astype(np.float32)
    scribble = np.full((2, 6, 5), 4)
    scribble[0, 2, 2] = 1
    folders = NNUNetFolders(tmp_path)
    write_raw_dataset([_case("c1", image, scribble)], CARDIAC, folders.raw_dataset)
    for ch in range(3):
        img = nib.load(folders.raw_dataset / "imagesTr" / f"c1_{ch:04d}.nii.gz")
        assert img.header.get_zooms() == (1.0, 1.0, 1.0)
        np.testing.assert_allclose(np.asarray(img.dataobj).transpose(2, 1, 0), image[:, ch])


def test_bad_cases_are_refused_before_writing(tmp_path):
    folders = NNUNetFolders(tmp_path)
    no_scribble = Case("c0", "c0", Path("/data/c0.h5"), lambda: CaseArrays(image=np.zeros((1, 4, 4))))
    with pytest.raises(DataError, match=r"c0\.h5.*no scribble: c0"):
        write_raw_dataset([no_scribble], CARDIAC, folders.raw_dataset)
    assert not folders.raw_dataset.exists()
    wrong = _case("c2", np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
    with pytest.raises(DataError, match=r"c2\.h5.*scribble shape \(1, 4, 5\) differs"):
        write_raw_dataset([wrong], CARDIAC, folders.raw_dataset)


def test_split_is_the_fold_and_an_empty_validation_set_validates_on_training(tmp_path):
    write_split(tmp_path / "splits_final.json", ["a", "b"], ["c"])
    assert json.loads((tmp_path / "splits_final.json").read_text()) == [{"train": ["a", "b"], "val": ["c"]}]
    write_split(tmp_path / "splits_final.json", ["a", "b"], [])
    assert json.loads((tmp_path / "splits_final.json").read_text()) == [{"train": ["a", "b"], "val": ["a", "b"]}]


def test_folders_point_nnunet_at_the_run(tmp_path):
    env = NNUNetFolders(tmp_path).environment()
    assert env == {"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "preprocessed"),
                   "nnUNet_results": str(tmp_path / "results")}
