"""The chaos-t2-nifti reader: the Q-Net CHAOS T2 layout, its label checks and the synthesised scribbles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scribmed.data.case import ABDOMINAL
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.layouts.chaos_t2_nifti import FOLDER
from scribmed.data.nifti import write_nifti
from scribmed.data.phantoms import write_phantom_dataset


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("chaos") / "CHAOS_T2"
    write_phantom_dataset("abdominal", "chaos-t2-nifti", root, n_patients=5, seed=1, size=(64, 64), slices=(5, 6))
    return root


def test_lists_the_release_layout(phantom):
    ds = open_dataset("chaos-t2-nifti", phantom)
    numbers = (1, 2, 3, 5, 8)  # the phantom takes the CHAOS MR patient ids in order
    assert ds.case_ids == [f"T2_patient{n:02d}" for n in numbers]
    assert ds.patients == [f"patient{n:02d}" for n in numbers]
    assert ds.spacing_unit == "mm" and ds.class_map == ABDOMINAL
    files = sorted(p.name for p in (phantom / FOLDER).iterdir())
    assert files == sorted(f"{k}_{n}.nii.gz" for k in ("image", "label") for n in numbers)
    assert sorted(open_dataset("chaos-t2-nifti", phantom / FOLDER).case_ids) == ds.case_ids  # the folder itself


def test_labels_are_integral_and_scribbles_synthesised_inside_them(phantom):
    ds = open_dataset("chaos-t2-nifti", phantom)
    case = ds["T2_patient02"]
    assert case.has_label and case.has_scribble
    label, scribble = case.label, case.scribble
    assert np.issubdtype(label.dtype, np.integer) and set(np.unique(label)) <= {0, 1, 2, 3, 4}
    assert scribble.shape == label.shape and len(case.spacing) == 3
    drawn = scribble != ABDOMINAL.ignore_index
    assert 0.001 < drawn.mean() < 0.1  # thin strokes, most pixels unlabeled
    assert np.array_equal(scribble[drawn], label[drawn])  # every stroke inside its class
    assert {1, 2, 3, 4} & set(np.unique(scribble[drawn]))
    # seeded per case: the same in a fresh reader, different with another seed
    again = open_dataset("chaos-t2-nifti", phantom)["T2_patient02"].scribble
    assert np.array_equal(again, scribble)
    other = open_dataset("chaos-t2-nifti", phantom, scribble_seed=7)["T2_patient02"].scribble
    assert not np.array_equal(other, scribble)


def test_provenance_says_the_scribbles_are_synthetic(phantom):
    ds = open_dataset("chaos-t2-nifti", phantom, scribble_seed=3)
    prov = ds.provenance["scribbles"]
    assert prov["synthetic"] is True and prov["seed"] == 3 and prov["style"] == "abdominal"
    assert ds.summary()["provenance"] == ds.provenance
    assert ds.subset(["T2_patient01"]).provenance == ds.provenance
    plain = open_dataset("chaos-t2-nifti", phantom, scribbles="none")
    assert plain.provenance == {} and not plain["T2_patient01"].has_scribble
    assert plain["T2_patient01"].scribble is None
    with pytest.raises(DataError, match="scribbles must be 'synthetic' or 'none'"):
        open_dataset("chaos-t2-nifti", phantom, scribbles="real")


def _pair(root, n, label):
    image = np.random.default_rng(0).random(label.shape).astype(np.float32)
    write_nifti(root / FOLDER / f"image_{n}.nii.gz", image, (7.7, 1.25, 1.25))
    write_nifti(root / FOLDER / f"label_{n}.nii.gz", label.astype(np.float32), (7.7, 1.25, 1.25))


def test_label_outside_the_class_map_names_the_file(tmp_path):
    label = np.zeros((2, 16, 16))
    label[0, 4:8, 4:8] = 7
    _pair(tmp_path, 4, label)
    case = open_dataset("chaos-t2-nifti", tmp_path)["T2_patient04"]
    with pytest.raises(DataError, match=r"label_4\.nii\.gz.*label values 7 are not CHAOS classes"):
        case.load()


def test_fractional_label_names_the_file(tmp_path):
    label = np.zeros((2, 16, 16))
    label[1, 2, 2] = 1.5
    _pair(tmp_path, 6, label)
    with pytest.raises(DataError, match=r"label_6\.nii\.gz.*non-integer values \(e\.g\. 1\.5\)"):
        open_dataset("chaos-t2-nifti", tmp_path)["T2_patient06"].load()


def test_unpaired_files_are_problems_and_empty_folders_errors(tmp_path):
    label = np.zeros((2, 16, 16))
    label[:, 3:9, 3:9] = 1
    _pair(tmp_path, 1, label)
    _pair(tmp_path, 2, label)
    (tmp_path / FOLDER / "label_2.nii.gz").unlink()
    ds = open_dataset("chaos-t2-nifti", tmp_path)
    assert ds.case_ids == ["T2_patient01"]
    with pytest.raises(DataError, match=r"image_2\.nii\.gz.*no label_2\.nii\.gz beside it"):
        ds.validate(progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no chaos_MR_T2_normalized/image_N.nii.gz files found"):
        open_dataset("chaos-t2-nifti", tmp_path / "empty")


@pytest.fixture(scope="module")
def chaos_root():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "CHAOS_T2"
    if not (root / FOLDER).is_dir():
        pytest.skip(f"{root} not present")
    return root


@pytest.mark.realdata
def test_real_chaos_t2_lists_16_patients_with_header_spacing(chaos_root):
    ds = open_dataset("chaos-t2-nifti", chaos_root)
    assert len(ds.patients) == 16 and len(ds) == 16
    assert ds.patients[:3] == ["patient01", "patient02", "patient03"]
    case = ds["T2_patient01"]
    assert case.image.shape == (37, 256, 256)
    assert case.spacing == pytest.approx((7.7, 1.25, 1.25), rel=1e-5)
    assert set(np.unique(case.label)) == {0, 1, 2, 3, 4}
    drawn = case.scribble != 5
    assert np.array_equal(case.scribble[drawn], case.label[drawn])
    assert 0.98 < 1 - drawn.mean() < 0.998
    case.release()


@pytest.mark.realdata
def test_data_check_with_the_chaos_split_reports_16_patients(chaos_root, capsys):
    from scribmed.cli import main

    assert main(["data", "check", "--layout", "chaos-t2-nifti", "--root", str(chaos_root), "--split",
                 "chaos_mr_5fold", "--allow-missing", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["patients"] == 16 and report["with_scribble"] == 16
    assert report["provenance"]["scribbles"]["synthetic"] is True
    assert sorted(report["split"]["missing_patients_dropped"]) == ["patient10", "patient19", "patient22", "patient31"]


def test_cv_records_synthetic_scribbles_in_run_json_and_reports(phantom, tmp_path):
    from scribmed.crossval.runner import run_cross_validation
    from scribmed.recipes import build

    ds = open_dataset("chaos-t2-nifti", phantom)
    out = tmp_path / "run"
    run_cross_validation(build("nearest"), ds, "auto", out, folds=[1], progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["provenance"]["scribbles"]["synthetic"] is True
    fold = out / "fold_1"
    assert json.loads((fold / "evaluation" / "summary.json").read_text())["provenance"] == ds.provenance
    assert (fold / "evaluation" / "summary.md").read_text().startswith("**Scribbles: synthetic**")
    assert "**Scribbles: synthetic**" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["run"]["provenance"] == ds.provenance


def test_scribblebench_style_is_a_layout_option(phantom):
    ds = open_dataset("chaos-t2-nifti", phantom, scribble_style="scribblebench")
    assert ds.provenance["scribbles"]["style"] == "scribblebench"
    case = ds["T2_patient02"]
    default = open_dataset("chaos-t2-nifti", phantom)["T2_patient02"]
    assert not np.array_equal(case.scribble, default.scribble)
    for k in range(5):  # every stroke inside its class
        assert np.all(case.label[case.scribble == k] == k)
    with pytest.raises(DataError, match="unknown scribble style 'dense'"):
        open_dataset("chaos-t2-nifti", phantom, scribble_style="dense")
