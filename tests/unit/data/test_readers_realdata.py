"""Readers on the real ACDC (WSL4MIS h5) and MSCMR (CycleMix NIfTI) data; 1-2 volumes loaded each."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from scribmed.data.case import CARDIAC
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset


def test_acdc_h5_listing(acdc_root: Path):
    ds = open_dataset("acdc-h5", acdc_root)
    assert len(ds) == 160 and len(ds.patients) == 80
    assert ds.patients[0] == "patient001" and ds.patients[-1] == "patient080"
    assert [c.case_id for c in ds.cases_of(["patient001"])] == ["patient001_frame01", "patient001_frame12"]
    s = ds.summary()
    assert set(s) == {"layout", "cases", "patients", "classes", "with_label", "with_scribble", "spacing"}
    assert s["classes"] == {"0": "background", "1": "RV", "2": "Myo", "3": "LV"}
    assert (s["cases"], s["patients"], s["with_label"], s["with_scribble"], s["spacing"]) == (
        160, 80, 160, 160, "none")


def test_acdc_h5_load_and_validate_two_cases(acdc_root: Path):
    ds = open_dataset("acdc-h5", acdc_root).subset(["patient001_frame01", "patient042_frame01"])
    for case in ds:
        a = case.load()
        assert a.image.ndim == 3 and a.image.shape == a.label.shape == a.scribble.shape
        assert a.image.dtype == np.float32 and 0.0 <= a.image.min() and a.image.max() <= 1.0
        assert a.label.dtype == np.uint8 and a.scribble.dtype == np.uint16
        assert set(np.unique(a.label)) <= set(CARDIAC.names)
        assert set(np.unique(a.scribble)) <= set(CARDIAC.names) | {4}
        assert (a.scribble == 4).mean() > 0.5  # most pixels unlabeled
        assert a.spacing is None and a.affine is None
    assert ds["patient001_frame01"].image.shape == (10, 256, 216)
    ds.validate(progress=False)


def test_mscmr_listing_and_two_cases(mscmr_root: Path):
    ds = open_dataset("mscmr", mscmr_root)
    assert len(ds) == 30 and len(ds.patients) == 30 and ds.spacing_unit == "mm"
    subsets = [ds.meta[c]["subset"] for c in ds.case_ids]
    assert subsets.count("train") == 25 and subsets.count("val") == 5
    for case in ds:
        train = ds.meta[case.case_id]["subset"] == "train"
        assert case.has_scribble == train and case.has_label == (not train)
    assert sorted(c.case_id for c in ds if not c.has_scribble) == [
        "subject1", "subject29", "subject36", "subject41", "subject8"]
    s = ds.summary()
    assert (s["with_label"], s["with_scribble"], s["spacing"]) == (5, 25, "mm")

    sub = ds.subset(["subject2", "subject1"])
    train, val = sub["subject2"].load(), sub["subject1"].load()
    # NIfTI (512, 512, 16) (x, y, z) -> (16, 512, 512) slices first; zooms reversed to (dz, dy, dx)
    assert train.image.shape == (16, 512, 512) and train.scribble.shape == train.image.shape
    assert train.label is None and val.scribble is None and val.label.shape == val.image.shape
    for a in (train, val):
        dz, dy, dx = a.spacing
        assert 4.9 < dz < 5.1 and 0.74 <= dy <= 0.77 and dx == pytest.approx(dy)
        assert a.affine.shape == (4, 4)
    assert set(np.unique(val.label)) <= {0, 1, 2, 3}
    assert set(np.unique(train.scribble)) <= {0, 1, 2, 3, 4}
    sub.validate(progress=False)


def test_truncated_real_h5_names_file(acdc_root: Path, tmp_path: Path):
    src = acdc_root / "ACDC_training_volumes" / "patient001_frame01.h5"
    dst = tmp_path / "ACDC_training_volumes" / src.name
    dst.parent.mkdir()
    shutil.copyfile(src, dst)
    with dst.open("r+b") as f:
        f.truncate(dst.stat().st_size // 2)
    ds = open_dataset("acdc-h5", tmp_path)
    assert len(ds) == 1
    with pytest.raises(DataError) as e:
        ds.validate(progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "patient001_frame01.h5" in msg and "cannot read HDF5" in msg
