"""Every kind of bad input gives a one-line DataError that names the file and the problem."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset, write_dataset
from scribmed.data.nifti import write_nifti

SPACING = (5.0, 0.75, 0.8)
SHAPE = (3, 16, 12)


def arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, SHAPE).astype(np.uint8)
    scribble = np.where(rng.random(SHAPE) < 0.2, label, 4).astype(np.uint8)
    return rng.random(SHAPE).astype(np.float32), label, scribble


def expect(exc_info, filename: str, *words: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    assert filename in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def h5_case(root: Path, name="patient001_frame01", **keys):
    path = root / "ACDC_training_volumes" / f"{name}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in keys.items():
            f.create_dataset(k, data=v)
    return path


def nifti_case(root: Path, image, label=None, scribble=None, label_spacing=SPACING, case="patient001_frame01"):
    folder = root / case.split("_")[0]
    write_nifti(folder / f"{case}.nii.gz", image, SPACING)
    if label is not None:
        write_nifti(folder / f"{case}_gt.nii.gz", label, label_spacing, is_label=True)
    if scribble is not None:
        write_nifti(folder / f"{case}_scribble.nii.gz", scribble, SPACING, is_label=True)


def validate(layout: str, root: Path, **options):
    open_dataset(layout, root, **options).validate(progress=False)


# --------------------------------------------------------------------------- files
def test_missing_file_after_listing(tmp_path: Path):
    image, label, scribble = arrays()
    nifti_case(tmp_path, image, label, scribble)
    ds = open_dataset("acdc-nifti", tmp_path)
    (tmp_path / "patient001" / "patient001_frame01_gt.nii.gz").unlink()
    with pytest.raises(DataError) as e:
        ds.validate(progress=False)
    expect(e, "patient001_frame01_gt.nii.gz", "missing")


def test_label_without_image_is_reported(tmp_path: Path):
    image, label, scribble = arrays()
    write_dataset("mscmr", tmp_path, [dict(case_id="subject1", patient_id="subject1", image=image,
                                           label=label, spacing=SPACING, subset="val")])
    write_nifti(tmp_path / "val" / "labels" / "subject8_DE_manual.nii.gz", label, SPACING, is_label=True)
    with pytest.raises(DataError) as e:
        validate("mscmr", tmp_path)
    expect(e, "subject8_DE_manual.nii.gz", "no image")


def test_truncated_h5(tmp_path: Path):
    image, label, scribble = arrays()
    path = h5_case(tmp_path, image=image, label=label, scribble=scribble)
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(DataError) as e:
        validate("acdc-h5", tmp_path)
    expect(e, "patient001_frame01.h5", "cannot read HDF5")


def test_corrupt_nifti(tmp_path: Path):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (4, 64, 64)).astype(np.uint8)  # big enough that the header survives
    nifti_case(tmp_path, rng.random(label.shape).astype(np.float32), label)
    gt = tmp_path / "patient001" / "patient001_frame01_gt.nii.gz"
    gt.write_bytes(gt.read_bytes()[: len(gt.read_bytes()) // 2])
    with pytest.raises(DataError) as e:
        validate("acdc-nifti", tmp_path)
    expect(e, "patient001_frame01_gt.nii.gz", "cannot read NIfTI")
    gt.write_bytes(b"this is not a nifti file at all")
    with pytest.raises(DataError) as e:
        validate("acdc-nifti", tmp_path)
    expect(e, "patient001_frame01_gt.nii.gz", "cannot read NIfTI")


def test_corrupt_npz(tmp_path: Path):
    image, label, scribble = arrays()
    write_dataset("chaos-npz", tmp_path, [dict(case_id="T1_patient01", patient_id="patient01",
                                               image=image, label=label)])
    bad = tmp_path / "T1_patient01" / "T1_patient01_1.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        validate("chaos-npz", tmp_path)
    expect(e, "T1_patient01_1.npz", "cannot read NPZ")


def test_missing_required_key(tmp_path: Path):
    image, label, scribble = arrays()
    h5_case(tmp_path, label=label, scribble=scribble)
    with pytest.raises(DataError) as e:
        validate("acdc-h5", tmp_path)
    expect(e, "patient001_frame01.h5", "missing required key 'image'")
    np.savez(tmp_path / "s_0.npz", lab=label[0])
    with pytest.raises(DataError) as e:
        validate("chaos-npz", tmp_path)
    expect(e, "s_0.npz", "missing required key 'img'")


# --------------------------------------------------------------------------- geometry
def test_shape_mismatch(tmp_path: Path):
    image, label, scribble = arrays()
    h5_case(tmp_path, image=image, label=label[:, :-1], scribble=scribble)
    with pytest.raises(DataError) as e:
        validate("acdc-h5", tmp_path)
    expect(e, "patient001_frame01.h5", "label shape", "does not match")
    other = tmp_path / "nifti"
    nifti_case(other, image, label, scribble[:2])
    with pytest.raises(DataError) as e:
        validate("acdc-nifti", other)
    expect(e, "patient001_frame01_scribble.nii.gz", "scribble shape")


def test_spacing_mismatch(tmp_path: Path):
    image, label, _ = arrays()
    nifti_case(tmp_path, image, label, label_spacing=(5.0, 0.75, 0.81))
    with pytest.raises(DataError) as e:
        validate("acdc-nifti", tmp_path)
    expect(e, "patient001_frame01_gt.nii.gz", "spacing", "differs")
    # within the 1e-3 relative tolerance: accepted
    ok = tmp_path / "ok"
    nifti_case(ok, image, label, label_spacing=(5.0, 0.75, 0.8 * (1 + 5e-4)))
    validate("acdc-nifti", ok)


# --------------------------------------------------------------------------- values
def test_label_values_outside_class_map(tmp_path: Path):
    image, label, scribble = arrays()
    label[0, 0, :3] = [7, 9, 7]
    h5_case(tmp_path, image=image, label=label, scribble=scribble)
    with pytest.raises(DataError) as e:
        validate("acdc-h5", tmp_path)
    msg = expect(e, "patient001_frame01.h5", "label values 7, 9", "class map")
    assert "4" not in msg.split("label values")[1].split("are")[0]


def test_scribble_values_outside_class_map_and_ignore(tmp_path: Path):
    image, label, scribble = arrays()
    scribble[1, 2, 2] = 5  # 4 is the ignore value, 5 is neither
    nifti_case(tmp_path, image, label, scribble)
    with pytest.raises(DataError) as e:
        validate("acdc-nifti", tmp_path)
    expect(e, "patient001_frame01_scribble.nii.gz", "scribble values 5", "ignore value 4")


def test_nan_in_image(tmp_path: Path):
    image, label, scribble = arrays()
    image[0, 1, 1] = np.nan
    image[2, 3, 3] = np.inf
    h5_case(tmp_path, image=image, label=label, scribble=scribble)
    with pytest.raises(DataError) as e:
        validate("acdc-h5", tmp_path)
    expect(e, "patient001_frame01.h5", "2 NaN/inf")


def test_non_integer_label(tmp_path: Path):
    image, label, scribble = arrays()
    bad = label.astype(np.float32)
    bad[0, 0, 0] = 1.5
    nifti_case(tmp_path, image, bad)
    with pytest.raises(DataError) as e:
        validate("acdc-nifti", tmp_path)
    expect(e, "patient001_frame01_gt.nii.gz", "non-integer", "1.5")
    # whole numbers stored as float are fine
    ok = tmp_path / "ok"
    nifti_case(ok, image, label.astype(np.float32))
    ds = open_dataset("acdc-nifti", ok)
    ds.validate(progress=False)
    assert np.issubdtype(ds[0].label.dtype, np.integer)


# --------------------------------------------------------------------------- folders/options
def test_layout_mismatch_and_options(tmp_path: Path):
    with pytest.raises(DataError) as e:
        open_dataset("acdc-h5", tmp_path)
    expect(e, str(tmp_path), "ACDC_training_volumes")
    with pytest.raises(DataError) as e:
        open_dataset("mscmr", tmp_path)
    expect(e, str(tmp_path), "train, val, TestSet")
    (tmp_path / "imagesTr").mkdir()
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz", arrays()[0], SPACING)
    with pytest.raises(DataError) as e:
        open_dataset("generic", tmp_path)
    expect(e, "dataset.json", "no class map")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError) as e:
        open_dataset("generic", tmp_path)
    expect(e, "dataset.json", "invalid JSON")
    with pytest.raises(DataError, match="spacing option"):
        open_dataset("chaos-npz", tmp_path, spacing=(1.0, -1.0, 1.0))
