"""Phantom generator: anatomy, variation, determinism, and writing every layout."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from scribmed.data.errors import DataError
from scribmed.data.phantoms import (
    MARKER,
    PhantomCase,
    generate_abdominal,
    generate_cardiac,
    mscmr_subsets,
    write_phantom_dataset,
)

SMALL = dict(size=80, slices=(6, 7))


@pytest.fixture(scope="module")
def cardiac() -> list[PhantomCase]:
    return generate_cardiac(3, seed=11, **SMALL)


@pytest.fixture(scope="module")
def abdominal() -> list[PhantomCase]:
    return generate_abdominal(2, seed=4, size=96, slices=(8, 8))


def test_cardiac_ids_shapes_types(cardiac):
    assert [c.case_id for c in cardiac][:2] == ["patient001_frame01", f"patient001_frame{cardiac[1].meta['frame']:02d}"]
    assert [c.patient_id for c in cardiac] == ["patient001"] * 2 + ["patient002"] * 2 + ["patient003"] * 2
    for c in cardiac:
        assert c.image.dtype == np.float32 and c.image.ndim == 3 and c.image.shape[1:] == (80, 80)
        assert 6 <= c.image.shape[0] <= 7
        assert c.image.min() == 0.0 and c.image.max() == 1.0
        assert np.mean(c.image >= 0.999) < 0.03, "clipped at the 99th percentile"
        assert c.label.dtype == np.uint8 and set(np.unique(c.label)) == {0, 1, 2, 3}
        assert c.scribble.dtype == np.uint16 and c.scribble.shape == c.label.shape
        dz, dy, dx = c.spacing
        assert dz in (8.0, 10.0) and 200 / 80 <= dy == dx <= 260 / 80
    es = [c.meta["frame"] for c in cardiac if c.meta["phase"] == "ES"]
    assert all(8 <= f <= 16 for f in es)


def test_cardiac_anatomy(cardiac):
    for c in cardiac:
        lab, img = c.label, c.image
        per_slice = np.stack([np.bincount(s.ravel(), minlength=4) for s in lab])
        assert (per_slice[:, 3] > 0).all() and (per_slice[:, 2] > 0).all(), "LV and Myo in every slice"
        assert per_slice[-1, 3] < 0.6 * per_slice[0, 3], "apex smaller than base"
        assert per_slice[0, 1] > 0, "RV at the base"
        # contrast (cine): blood bright, myocardium dark
        assert img[lab == 3].mean() > img[lab == 2].mean() + 0.2
        assert img[lab == 1].mean() > img[lab == 2].mean() + 0.2
        assert img[lab == 3].std() > 0.01, "noise, not flat regions"
        # myocardium surrounds the LV: no LV pixel touches background or RV
        from scipy import ndimage as ndi

        in_plane = np.array([np.zeros((3, 3)), ndi.generate_binary_structure(2, 1), np.zeros((3, 3))], bool)
        lv_ring = ndi.binary_dilation(lab == 3, structure=in_plane) & (lab != 3)
        assert np.all(lab[lv_ring] == 2)
    apical_without_rv = [c for c in cardiac if np.bincount(c.label[-1].ravel(), minlength=4)[1] == 0]
    assert apical_without_rv, "some apical slices have no RV"


def test_ed_es_differ(cardiac):
    for ed, es in zip(cardiac[0::2], cardiac[1::2]):
        assert ed.meta["phase"] == "ED" and es.meta["phase"] == "ES" and ed.patient_id == es.patient_id
        assert (es.label == 3).sum() < 0.85 * (ed.label == 3).sum(), "ES: smaller LV cavity"
        # mean wall thickness ~ myo area / endocardial perimeter: thicker at ES
        def thickness(lab):
            lv = lab == 3
            from scipy import ndimage as ndi

            perim = (lv & ~ndi.binary_erosion(lv)).sum()
            return (lab == 2).sum() / perim

        assert thickness(es.label) > 1.1 * thickness(ed.label)
        assert ed.spacing == es.spacing and ed.image.shape == es.image.shape


def test_patients_vary(cardiac):
    eds = cardiac[0::2]
    lv = [int((c.label == 3).sum()) for c in eds]
    assert len(set(lv)) == len(lv)
    centres = [tuple(np.round(np.argwhere(c.label[0] == 3).mean(axis=0))) for c in eds]
    assert len(set(centres)) == len(centres)


def test_deterministic_and_patient_independent_of_count(cardiac):
    again = generate_cardiac(2, seed=11, **SMALL)
    for a, b in zip(cardiac[:4], again):
        assert a.case_id == b.case_id
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert np.array_equal(a.scribble, b.scribble)
    other = generate_cardiac(1, seed=12, **SMALL)
    assert not np.array_equal(other[0].label, cardiac[0].label) or other[0].image.shape != cardiac[0].image.shape


def test_scribbles_realistic(cardiac, abdominal):
    for c in cardiac + abdominal:
        ign = c.class_map.ignore_index
        assert (c.scribble == ign).mean() > 0.95
        for k in c.class_map.names:
            assert not np.any((c.scribble == k) & (c.label != k))
            if (c.label == k).any():
                assert (c.scribble == k).any(), f"{c.case_id}: class {k} has a scribble"


def test_lge_contrast():
    (c,) = generate_cardiac(1, seed=2, frames=("ED",), contrast="lge", **SMALL)
    assert c.case_id == "patient001_frame01" and c.meta["contrast"] == "lge"
    assert c.image[c.label == 3].mean() > c.image[c.label == 2].mean()


def test_abdominal(abdominal):
    assert [c.case_id for c in abdominal] == ["T1_patient01", "T2_patient01", "T1_patient02", "T2_patient02"]
    for c in abdominal:
        lab = c.label
        assert c.class_map.ignore_index == 5 and set(np.unique(c.scribble)) <= {0, 1, 2, 3, 4, 5}
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4}
        counts = np.bincount(lab.ravel(), minlength=5)
        assert counts[1] == counts[1:].max(), "liver is the largest organ"
        w = lab.shape[2]
        col = lambda k: np.argwhere(lab == k)[:, 2].mean()  # noqa: E731
        assert col(1) < w / 2 < col(4), "liver on the image left, spleen on the right"
        assert col(2) < w / 2 < col(3), "right kidney on the image left, left kidney on the right"
    t1, t2 = abdominal[0], abdominal[1]
    m = lambda c, k: c.image[c.label == k].mean()  # noqa: E731
    assert m(t1, 1) > m(t1, 4) and m(t2, 1) < m(t2, 4), "T1: liver brighter than spleen; T2: darker"


def test_to_case(cardiac):
    case = cardiac[0].to_case()
    assert case.case_id == "patient001_frame01" and case.has_label and case.has_scribble
    assert case.image is cardiac[0].image and case.spacing == cardiac[0].spacing


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_cardiac(0)
    with pytest.raises(ValueError, match="contrast"):
        generate_cardiac(1, contrast="ct")
    with pytest.raises(ValueError, match="frames"):
        generate_cardiac(1, frames=("XX",))
    with pytest.raises(ValueError, match="modalities"):
        generate_abdominal(1, modalities=("CT",))
    with pytest.raises(ValueError, match="can be written as"):
        write_phantom_dataset("abdominal", "acdc-h5", "/nonexistent/x", 1)
    with pytest.raises(ValueError, match="kind"):
        write_phantom_dataset("brain", "generic", "/nonexistent/x", 1)


def test_mscmr_subsets():
    pairs = mscmr_subsets(6)
    subsets = [s for _, s in pairs]
    assert subsets.count("train") == 5 and subsets.count("val") == 1
    assert pairs[0] == ("subject2", "train") and ("subject1", "val") in pairs
    assert {s for _, s in mscmr_subsets(4, include_test=True)} == {"train", "val", "TestSet"}
    with pytest.raises(ValueError):
        mscmr_subsets(1)


# ------------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    "kind, layout, n_cases",
    [
        ("cardiac", "acdc-h5", 4),
        ("cardiac", "acdc-nifti", 4),
        ("cardiac", "mscmr", 2),
        ("cardiac", "generic", 4),
        ("abdominal", "chaos-npz", 4),
        ("abdominal", "generic", 4),
        ("cardiac", "dicom", 4),
    ],
)
def test_write_every_layout(tmp_path, kind, layout, n_cases):
    from scribmed.data.layouts import open_dataset

    opts = dict(size=48, slices=(3, 3))
    root = write_phantom_dataset(kind, layout, tmp_path / "ds", 2, seed=1, **opts)
    assert root == tmp_path / "ds"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"], "no temporary folder left"
    ds = open_dataset(layout, root)
    assert len(ds) == n_cases and len(ds.patients) == 2
    ds.validate(progress=False)
    if layout == "mscmr":
        assert ds.patients == ["subject1", "subject2"]
        assert {m["subset"] for m in ds.meta.values()} == {"train", "val"}
        train = ds["subject2"]
        assert train.has_scribble and not train.has_label
    else:
        mem = (generate_cardiac if kind == "cardiac" else generate_abdominal)(2, seed=1, **opts)
        case = ds[mem[0].case_id]
        assert case.patient_id == mem[0].patient_id
        np.testing.assert_allclose(case.image, mem[0].image, atol=1e-5 if layout == "dicom" else 1e-6)  # 16-bit
        if layout != "dicom":  # images only
            assert np.array_equal(case.label, mem[0].label) and np.array_equal(case.scribble, mem[0].scribble)
        if ds.spacing_unit == "mm":
            np.testing.assert_allclose(case.spacing, mem[0].spacing, rtol=1e-5)


def test_write_refuses_foreign_folder_and_reuses_same_phantom(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a scribmed phantom"):
        write_phantom_dataset("cardiac", "acdc-h5", foreign, 1, size=48, slices=(3, 3))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    root = write_phantom_dataset("cardiac", "acdc-h5", empty, 1, size=48, slices=(3, 3))
    marker = json.loads((root / MARKER).read_text())
    assert marker["kind"] == "cardiac" and marker["n_patients"] == 1
    files = sorted(root.rglob("*.h5"))
    stamp = [os.stat(f).st_mtime_ns for f in files]
    again = write_phantom_dataset("cardiac", "acdc-h5", empty, 1, size=48, slices=(3, 3))
    assert again == root and [os.stat(f).st_mtime_ns for f in files] == stamp, "reused, not rewritten"
    with pytest.raises(DataError, match="other parameters"):
        write_phantom_dataset("cardiac", "acdc-h5", empty, 2, size=48, slices=(3, 3))

    from scribmed.data.scribble_synthesis import ScribbleStyle

    styled = tmp_path / "styled"
    opts = dict(size=48, slices=(3, 3), scribble_style=ScribbleStyle(thicken_prob=0.0))
    first = write_phantom_dataset("cardiac", "generic", styled, 1, **opts)
    assert write_phantom_dataset("cardiac", "generic", styled, 1, **opts) == first
    assert json.loads((first / MARKER).read_text())["options"]["scribble_style"]["thicken_prob"] == 0.0

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        write_phantom_dataset("cardiac", "acdc-h5", a_file, 1)
