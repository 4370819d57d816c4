"""Round trips write -> read for every layout, axis/spacing convention, laziness, Dataset API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scribmed.data.case import ABDOMINAL, CARDIAC, ClassMap
from scribmed.data.errors import DataError
from scribmed.data.layouts import LAYOUTS, open_dataset, write_dataset
from scribmed.data.nifti import (
    read_image_nifti,
    read_label_nifti,
    write_nifti,
    write_prediction,
)

SPACING = (5.0, 0.75, 0.8)  # (dz, dy, dx) mm, all different so a swapped axis shows


def make_case(seed: int, shape=(4, 32, 28), num_classes: int = 4, ignore: int = 4):
    """A non-symmetric volume with a few blobs, its label, and a sparse scribble."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = np.zeros(shape, np.uint8)
    for k in range(1, num_classes):
        cy, cx = rng.integers(6, shape[1] - 6), rng.integers(6, shape[2] - 6)
        r = 3 + k
        label[((y - cy) ** 2 + (x - cx) ** 2 < r * r) & (z >= k % shape[0])] = k
    image = (label * 0.2 + 0.05 * rng.random(shape) + z * 0.01 + x * 0.001).astype(np.float32)
    scribble = np.full(shape, ignore, np.uint8)
    keep = rng.random(shape) < 0.1
    scribble[keep] = label[keep]
    return image, label, scribble


def _assert_same(case, image, label=None, scribble=None):
    a = case.load()
    assert a.image.shape == image.shape
    np.testing.assert_allclose(a.image, image, rtol=0, atol=1e-6)
    if label is None:
        assert a.label is None
    else:
        np.testing.assert_array_equal(a.label, label)
    if scribble is None:
        assert a.scribble is None
    else:
        np.testing.assert_array_equal(a.scribble, scribble)


# --------------------------------------------------------------------------- round trips
def test_acdc_h5_round_trip(tmp_path: Path):
    cases = []
    for i, (pid, frame) in enumerate([("patient001", 1), ("patient001", 12), ("patient002", 1)]):
        img, lab, scb = make_case(i)
        cases.append(dict(case_id=f"{pid}_frame{frame:02d}", patient_id=pid, image=img, label=lab, scribble=scb))
    cases[2].pop("label")
    write_dataset("acdc-h5", tmp_path, cases)
    ds = open_dataset("acdc-h5", tmp_path)
    assert ds.layout == "acdc-h5" and len(ds) == 3 and ds.spacing_unit == "none"
    assert ds.patients == ["patient001", "patient002"]
    assert [c.case_id for c in ds] == ["patient001_frame01", "patient001_frame12", "patient002_frame01"]
    assert ds.summary() == {
        "layout": "acdc-h5", "cases": 3, "patients": 2, "classes": CARDIAC.to_json(),
        "with_label": 2, "with_scribble": 3, "spacing": "none",
    }
    for src, case in zip(cases, ds):
        _assert_same(case, src["image"], src.get("label"), src["scribble"])
        assert case.spacing is None
    a = ds[0].load()
    assert a.image.dtype == np.float32 and a.label.dtype == np.uint8 and a.scribble.dtype == np.uint16
    ds.validate(progress=False)
    # spacing option turns distances into mm
    ds_mm = open_dataset("acdc-h5", tmp_path, spacing=SPACING)
    assert ds_mm.spacing_unit == "mm" and ds_mm[0].spacing == SPACING


def test_acdc_nifti_round_trip_spacing_and_axes(tmp_path: Path):
    img, lab, scb = make_case(3)
    write_dataset("acdc-nifti", tmp_path, [
        dict(case_id="patient007_frame01", patient_id="patient007", image=img, label=lab, scribble=scb,
             spacing=SPACING),
        dict(case_id="patient007_frame09", patient_id="patient007", image=img[::-1].copy(), spacing=SPACING),
    ])
    (tmp_path / "patient007" / "Info.cfg").write_text("ED: 1\nES: 9\n")
    write_nifti(tmp_path / "patient007" / "patient007_4d.nii.gz", img, SPACING)  # must be ignored
    assert (tmp_path / "patient007" / "patient007_frame01_gt.nii.gz").is_file()
    ds = open_dataset("acdc-nifti", tmp_path)
    assert ds.case_ids == ["patient007_frame01", "patient007_frame09"] and ds.patients == ["patient007"]
    assert ds.spacing_unit == "mm"
    _assert_same(ds[0], img, lab, scb)
    _assert_same(ds[1], img[::-1])
    assert ds[0].spacing == pytest.approx(SPACING)
    assert ds[1].has_label is False and ds[1].has_scribble is False
    # on disk the NIfTI is (x, y, z) with zooms (dx, dy, dz)
    import nibabel as nib

    raw = nib.load(str(tmp_path / "patient007" / "patient007_frame01.nii.gz"))
    assert raw.shape == (28, 32, 4)
    assert raw.header.get_zooms() == pytest.approx((0.8, 0.75, 5.0))
    np.testing.assert_allclose(np.asarray(raw.dataobj), img.transpose(2, 1, 0), atol=1e-6)
    ds.validate(progress=False)


def test_mscmr_round_trip_subsets(tmp_path: Path):
    items = []
    for n, subset in [(2, "train"), (4, "train"), (1, "val"), (3, "TestSet")]:
        img, lab, scb = make_case(n)
        items.append(dict(case_id=f"subject{n}", patient_id=f"subject{n}", image=img, label=lab,
                          scribble=scb, spacing=SPACING, subset=subset))
    write_dataset("mscmr", tmp_path, items)
    assert (tmp_path / "train" / "labels" / "subject2_DE_scribble.nii.gz").is_file()
    assert not (tmp_path / "train" / "labels" / "subject2_DE_manual.nii.gz").exists()
    assert (tmp_path / "val" / "labels" / "subject1_DE_manual.nii.gz").is_file()
    ds = open_dataset("mscmr", tmp_path)
    assert ds.case_ids == ["subject1", "subject2", "subject3", "subject4"]
    assert {c: ds.meta[c]["subset"] for c in ds.case_ids} == {
        "subject1": "val", "subject2": "train", "subject3": "TestSet", "subject4": "train"}
    by_id = {it["case_id"]: it for it in items}
    for case in ds:
        src = by_id[case.case_id]
        train = src["subset"] == "train"
        assert case.patient_id == case.case_id
        assert case.has_scribble == train and case.has_label == (not train)
        _assert_same(case, src["image"], None if train else src["label"], src["scribble"] if train else None)
        assert case.spacing == pytest.approx(SPACING)
    s = ds.summary()
    assert (s["with_label"], s["with_scribble"], s["spacing"]) == (2, 2, "mm")


def test_chaos_npz_round_trip_grouping(tmp_path: Path):
    items = []
    for case_id in ["T1_patient05", "T2_patient05", "T2_patient10"]:
        img, lab, scb = make_case(len(items), shape=(3, 24, 20), num_classes=5, ignore=5)
        items.append(dict(case_id=case_id, patient_id=case_id.split("_", 1)[1], image=img,
                          label=lab, scribble=scb))
    write_dataset("chaos-npz", tmp_path, items)
    files = sorted(p.name for p in tmp_path.rglob("*.npz"))
    assert len(files) == 9 and "T1_patient05_0.npz" in files
    with np.load(tmp_path / "T1_patient05" / "T1_patient05_2.npz") as npz:
        assert set(npz.files) == {"img", "lab", "scb", "uid"} and str(npz["uid"]) == "T1_patient05_2"
    ds = open_dataset("chaos-npz", tmp_path)
    assert ds.class_map == ABDOMINAL and ds.spacing_unit == "none"
    assert ds.case_ids == ["T1_patient05", "T2_patient05", "T2_patient10"]
    assert ds.patients == ["patient05", "patient10"]
    assert [c.case_id for c in ds.cases_of(["patient05"])] == ["T1_patient05", "T2_patient05"]
    for src, case in zip(items, ds):
        _assert_same(case, src["image"], src["label"], src["scribble"])
    ds.validate(progress=False)


def test_chaos_npz_slice_order_folders_and_missing_uid(tmp_path: Path):
    """Slices numbered 2, 10, 1 stack in numeric order; a modality folder names the case."""
    rng = np.random.default_rng(0)
    slices = {i: rng.random((8, 6)).astype(np.float32) for i in (2, 10, 1)}
    (tmp_path / "T2").mkdir()
    for i, img in slices.items():
        np.savez(tmp_path / "T2" / f"patient03_{i}.npz", img=img, lab=np.zeros((8, 6), np.int64))
    ds = open_dataset("chaos-npz", tmp_path, spacing=(8.0, 1.5, 1.5))
    assert ds.case_ids == ["T2_patient03"] and ds.patients == ["patient03"]
    a = ds[0].load()
    np.testing.assert_array_equal(a.image, np.stack([slices[1], slices[2], slices[10]]))
    assert a.spacing == (8.0, 1.5, 1.5) and ds.spacing_unit == "mm"
    assert ds[0].has_label and not ds[0].has_scribble and a.scribble is None


def test_generic_round_trip_with_class_map_and_patients(tmp_path: Path):
    cmap = ClassMap({0: "background", 1: "tumour", 2: "organ"}, ignore_index=3)
    img, lab, scb = make_case(7, num_classes=3, ignore=3)
    write_dataset("generic", tmp_path, [
        dict(case_id="caseA", patient_id="p1", image=img, label=lab, scribble=scb, spacing=SPACING),
        dict(case_id="caseB", patient_id="p1", image=img[:, ::-1].copy(), scribble=scb, spacing=SPACING),
    ], class_map=cmap)
    ds = open_dataset("generic", tmp_path)
    assert ds.class_map == cmap and ds.patients == ["p1"]
    _assert_same(ds["caseA"], img, lab, scb)
    _assert_same(ds["caseB"], img[:, ::-1], None, scb)
    assert ds["caseA"].spacing == pytest.approx(SPACING)
    ds.validate(progress=False)
    # nnU-Net style channel suffix and "labels" map are accepted too
    other = tmp_path / "nn"
    write_nifti(other / "imagesTr" / "x_0000.nii.gz", img, SPACING)
    (other / "dataset.json").write_text('{"labels": {"background": 0, "a": 1, "b": 2, "c": 3}}')
    ds2 = open_dataset("generic", other)
    assert ds2.case_ids == ["x"] and ds2.class_map.ignore_index == 4


def test_every_layout_is_registered():
    assert set(LAYOUTS) == {"acdc-h5", "acdc-nifti", "mscmr", "chaos-npz", "chaos-t2-nifti", "generic", "dsb2018", "dicom"}


# --------------------------------------------------------------------------- NIfTI helpers
def test_write_prediction_reuses_source_affine(tmp_path: Path):
    img, lab, _ = make_case(1)
    affine = np.array([[0, 0, -5.0, 10], [0, -0.75, 0, 20], [0.8, 0, 0, -3], [0, 0, 0, 1]])
    write_nifti(tmp_path / "img.nii.gz", img, affine=affine)
    src = read_image_nifti(tmp_path / "img.nii.gz")
    assert src.spacing == pytest.approx(SPACING)
    out = write_prediction(tmp_path / "pred.nii.gz", lab, src.spacing, src.affine)
    back = read_label_nifti(out)
    np.testing.assert_array_equal(back.array, lab)
    np.testing.assert_allclose(back.affine, affine)
    assert back.spacing == pytest.approx(SPACING) and back.array.dtype == np.uint8
    # no affine: a diagonal one from the spacing
    back2 = read_label_nifti(write_prediction(tmp_path / "p2.nii.gz", lab.astype(np.int64), SPACING))
    np.testing.assert_allclose(np.diag(back2.affine), [0.8, 0.75, 5.0, 1.0])
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic: no leftovers
    with pytest.raises(DataError, match="disagrees with the affine"):
        write_prediction(tmp_path / "p3.nii.gz", lab, (1.0, 1.0, 1.0), affine)


# --------------------------------------------------------------------------- laziness and API
def _counting(ds):
    calls = {}
    for case in ds:
        inner = case.loader

        def counted(inner=inner, cid=case.case_id):
            calls[cid] = calls.get(cid, 0) + 1
            return inner()

        case.loader = counted
    return calls


def test_lazy_loading_and_cache(tmp_path: Path, monkeypatch):
    import scribmed.data.nifti as nifti_mod

    img, lab, scb = make_case(0)
    for n in (1, 2, 3):
        write_dataset("mscmr", tmp_path, [dict(case_id=f"subject{n}", patient_id=f"subject{n}", image=img,
                                               scribble=scb, spacing=SPACING)])
    opened = []
    real_load = nifti_mod._load
    monkeypatch.setattr(nifti_mod, "_load", lambda p: (opened.append(p), real_load(p))[1])
    ds = open_dataset("mscmr", tmp_path)
    assert opened == [] and all(c._cache is None for c in ds)  # listing reads nothing
    calls = _counting(ds)
    first = ds["subject2"].image
    assert ds["subject2"].scribble is not None and ds["subject2"].spacing is not None
    assert calls == {"subject2": 1} and len(opened) == 2  # image + scribble, once
    assert ds["subject2"].image is first  # cached array reused
    sub = ds.subset(["subject2"])
    assert sub["subject2"].image is first  # subsets share the cache
    ds.validate(progress=False)
    assert calls == {"subject1": 1, "subject2": 1, "subject3": 1}
    assert ds["subject1"]._cache is None and ds["subject2"]._cache is not None  # validate releases


def test_dataset_api_errors(tmp_path: Path):
    img, lab, scb = make_case(0)
    write_dataset("acdc-h5", tmp_path, [dict(case_id="patient001_frame01", patient_id="patient001",
                                             image=img, label=lab, scribble=scb)])
    ds = open_dataset("acdc-h5", tmp_path)
    assert ds[0] is ds["patient001_frame01"] and "patient001_frame01" in ds
    with pytest.raises(KeyError, match="patient099_frame01"):
        ds["patient099_frame01"]
    with pytest.raises(KeyError, match="patient077"):
        ds.cases_of(["patient001", "patient077"])
    assert len(ds.cases_of(["patient001", "patient077"], strict=False)) == 1
    with pytest.raises(KeyError, match="nope"):
        ds.subset(["nope"])
    with pytest.raises(DataError, match="unknown layout 'acdc'.*acdc-h5.*generic"):
        open_dataset("acdc", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        open_dataset("acdc-h5", tmp_path / "missing")
    with pytest.raises(DataError, match="not supported"):
        open_dataset("mscmr", tmp_path, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="frameNN"):
        LAYOUTS["acdc-h5"].write_case(tmp_path, "caseX", "patient001", img)


def test_acdc_nifti_nested_training_folder(tmp_path: Path):
    img, lab, scb = make_case(5)
    write_dataset("acdc-nifti", tmp_path / "training", [
        dict(case_id="patient003_frame01", patient_id="patient003", image=img, label=lab, spacing=SPACING)])
    ds = open_dataset("acdc-nifti", tmp_path)
    assert ds.case_ids == ["patient003_frame01"] and ds.meta["patient003_frame01"]["subset"] == "training"
    _assert_same(ds[0], img, lab)


def test_atomic_output_publishes_shareable_files_and_cleans_up(tmp_path: Path):
    """mkstemp makes owner-only files; what atomic_output publishes has the umask's usual permissions."""
    import os
    import stat

    import torch

    from scribmed.runtime.checkpoint import save_checkpoint
    from scribmed.runtime.files import atomic_output

    umask = os.umask(0)
    os.umask(umask)
    with atomic_output(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    digest = save_checkpoint(tmp_path / "last.pt", {"w": torch.zeros(2)})
    for name in ("a.json", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert len(digest) == 64
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "b.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "last.pt"]


def test_generic_reads_a_plain_folder_of_images_with_a_fallback_class_map(tmp_path: Path):
    """New scans as users have them: *.nii.gz files alone (nnU-Net channel suffix accepted)."""
    from scribmed.data.nifti import write_nifti

    image = np.random.default_rng(0).random((2, 8, 9)).astype(np.float32)
    write_nifti(tmp_path / "scan_a.nii.gz", image, (5.0, 1.0, 1.0))
    write_nifti(tmp_path / "scan_b_0000.nii.gz", image, (5.0, 1.0, 1.0))
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no class map"):
        open_dataset("generic", tmp_path)
    ds = open_dataset("generic", tmp_path, fallback_class_map=CARDIAC)
    assert ds.case_ids == ["scan_a", "scan_b"] and ds.class_map == CARDIAC
    np.testing.assert_array_equal(ds["scan_a"].image, image)
    assert not ds["scan_a"].has_label
    (tmp_path / "dataset.json").write_text('{"classes": {"0": "background", "1": "organ"}}')
    assert open_dataset("generic", tmp_path, fallback_class_map=CARDIAC).class_map.names == {0: "background", 1: "organ"}
