"""Boxes, points and supervision mixes from full labels; make_weak_dataset and ``scribmed weak make``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from scribmed.cli import main
from scribmed.data.case import ABDOMINAL, CARDIAC
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.data.supervision_mix import assign_supervision, mix_counts, parse_mix
from scribmed.data.weak_conversion import boxes_from_label, make_weak_dataset, points_from_label
from scribmed.data.sesam_sampling import instance_points

H, W = 40, 48


def toy_label() -> np.ndarray:
    """Two slices; tight boxes (x0, y0, x1, y1) listed in TIGHT (raster order of first pixels)."""
    lab = np.zeros((2, H, W), np.uint8)
    lab[0, 2:10, 1:6] = 1       # touches the border region: clipping at x = 0, y = 0
    lab[0, 20:30, 30:46] = 1    # second component of class 1 (near the right edge)
    lab[0, 12:18, 12:24] = 2
    lab[0, 35, 5] = 3           # a 1-px speck: below min_size, no box
    lab[1, 5:35, 10:40] = 3
    lab[1, 15:25, 20:30] = 2    # inside class 3's square: class 3 is a ring
    return lab


TIGHT = {(0, 1): [(1, 2, 5, 9), (30, 20, 45, 29)], (0, 2): [(12, 12, 23, 17)],
         (1, 2): [(20, 15, 29, 24)], (1, 3): [(10, 5, 39, 34)]}


def jittered(tight: int, got: int, direction: int, limit: int, lo: int = 3, hi: int = 7) -> bool:
    """``got`` is ``tight`` moved by lo..hi px in ``direction`` (+1/-1), clipped to [0, limit]."""
    return got in {min(max(tight + direction * d, 0), limit) for d in range(lo, hi + 1)}


@pytest.mark.parametrize("seed", range(12))
def test_boxes_follow_medsam_jitter(seed):
    weak = boxes_from_label(toy_label(), CARDIAC, rng=seed)
    assert weak.kind == "box" and weak.shape == (2, H, W)
    got = {(z, k): boxes for z, per in weak.boxes.items() for k, boxes in per.items()}
    assert set(got) == set(TIGHT)  # the speck of class 3 on slice 0 has no box
    lab = toy_label()
    for key, tights in TIGHT.items():
        assert len(got[key]) == len(tights)
        for (tx0, ty0, tx1, ty1), (x0, y0, x1, y1) in zip(tights, got[key]):
            assert jittered(tx0, x0, -1, W - 1) and jittered(ty0, y0, -1, H - 1)
            assert jittered(tx1, x1, +1, W - 1) and jittered(ty1, y1, +1, H - 1)
        z, k = key
        mask = weak.box_mask(z, k)
        assert mask[lab[z] == k].all()  # outward boxes contain their class


def test_box_jitter_range_is_used_and_options():
    shifts = set()
    for seed in range(40):
        (x0, y0, x1, y1), = boxes_from_label(toy_label(), CARDIAC, rng=seed).boxes[0][2]
        shifts |= {12 - x0, 12 - y0, x1 - 23, y1 - 17}
    assert shifts == {3, 4, 5, 6, 7}
    tight = boxes_from_label(toy_label(), CARDIAC, jitter=None)
    assert tight.boxes[1][3] == [TIGHT[(1, 3)][0]] and tight.boxes[0][1] == TIGHT[(0, 1)]
    assert 3 in boxes_from_label(toy_label(), CARDIAC, jitter=None, min_size=1).boxes[0]
    assert boxes_from_label(toy_label(), CARDIAC, jitter=None, min_size=1).boxes[0][3] == [(5, 35, 5, 35)]
    with pytest.raises(ValueError, match="jitter"):
        boxes_from_label(toy_label(), CARDIAC, jitter=(7, 3))


@pytest.mark.parametrize("seed", range(8))
def test_inward_jitter_stays_within_bounds(seed):
    weak = boxes_from_label(toy_label(), CARDIAC, rng=seed, inward=True)
    for (z, k), tights in TIGHT.items():
        for (tx0, ty0, tx1, ty1), (x0, y0, x1, y1) in zip(tights, weak.boxes[z][k]):
            assert x0 <= x1 and y0 <= y1
            assert jittered(tx0, x0, -1, W - 1) or jittered(tx0, x0, +1, W - 1)
            assert jittered(ty1, y1, +1, H - 1) or jittered(ty1, y1, -1, H - 1)


def test_boxes_deterministic_by_seed():
    a = boxes_from_label(toy_label(), CARDIAC, rng=np.random.default_rng(5))
    assert a == boxes_from_label(toy_label(), CARDIAC, rng=np.random.default_rng(5))
    assert a != boxes_from_label(toy_label(), CARDIAC, rng=np.random.default_rng(6))


@pytest.mark.parametrize("mode", ["center", "random", "boundary", "skeleton"])
def test_points_lie_inside_their_class(mode):
    lab = toy_label()
    weak = points_from_label(lab, CARDIAC, k=4, mode=mode, rng=0, negatives=3)
    assert weak.kind == "point" and weak.slices() == [0, 1]
    assert set(weak.points[0]) == {1, 2, 3} and set(weak.points[1]) == {2, 3}
    for z, per in weak.points.items():
        for k, ps in per.items():
            assert len(set(ps.positive)) == len(ps.positive)
            assert all(lab[z, y, x] == k for x, y in ps.positive)
            assert len(ps.negative) == 3 and all(lab[z, y, x] != k for x, y in ps.negative)
            if mode != "skeleton":  # skeleton: k per instance
                assert len(ps.positive) == (1 if (z, k) == (0, 3) else 4)
    assert len(weak.points[0][1].positive) == (8 if mode == "skeleton" else 4)  # two instances of class 1
    assert points_from_label(lab, CARDIAC, 4, mode, rng=0, negatives=3) == weak


def test_boundary_points_are_on_the_boundary():
    lab = toy_label()
    weak = points_from_label(lab, CARDIAC, k=20, mode="boundary", rng=1)
    for z, per in weak.points.items():
        for k, ps in per.items():
            inner = ndi.binary_erosion(lab[z] == k, structure=ndi.generate_binary_structure(2, 1))
            assert all(lab[z, y, x] == k and not inner[y, x] for x, y in ps.positive)


def test_center_mode_prefers_the_interior():
    lab = np.zeros((1, H, W), np.uint8)
    lab[0, 4:36, 6:42] = 1
    dist = ndi.distance_transform_edt(np.pad(lab[0] == 1, 1))[1:-1, 1:-1]
    mean = {}
    for mode in ("center", "random"):
        values = [dist[y, x] for s in range(40)
                  for x, y in points_from_label(lab, CARDIAC, 5, mode, rng=s).points[0][1].positive]
        mean[mode] = float(np.mean(values))
    assert mean["center"] > mean["random"] + 1.0, mean


def test_skeleton_mode_reuses_sesam_sampler():
    lab = toy_label()
    weak = points_from_label(lab[1:], CARDIAC, 5, "skeleton", rng=np.random.default_rng(3))
    gen = np.random.default_rng(3)
    expected = {}
    for k in (2, 3):
        pts, _ = instance_points(lab[1] == k, 5, gen)
        expected[k] = [(int(x), int(y)) for x, y in pts]
    assert {k: ps.positive for k, ps in weak.points[0].items()} == expected


def test_points_bad_options():
    with pytest.raises(ValueError, match="point mode"):
        points_from_label(toy_label(), CARDIAC, mode="grid")
    with pytest.raises(ValueError, match=">= 1"):
        points_from_label(toy_label(), CARDIAC, k=0)


# --- supervision mix --------------------------------------------------------------------------------


def test_mix_counts_largest_remainder():
    mix = {"full": 0.1, "box": 0.3, "point": 0.3, "scribble": 0.3}
    assert mix_counts(10, mix) == {"full": 1, "box": 3, "point": 3, "scribble": 3}
    # 4 units: exact 0.4/1.2/1.2/1.2 -> floors 0/1/1/1, the leftover to the largest remainder (full, 0.4)
    assert mix_counts(4, mix) == {"full": 1, "box": 1, "point": 1, "scribble": 1}
    assert mix_counts(7, {"full": 0.5, "box": 0.5}) == {"full": 4, "box": 3}  # tie: type order
    assert mix_counts(5, {"box": 0.25, "none": 0.75}) == {"box": 1, "none": 4}  # 1.25/3.75: remainder to none
    for n in range(0, 30):
        counts = mix_counts(n, mix)
        assert sum(counts.values()) == n
        assert all(abs(counts[t] - n * s) < 1 for t, s in mix.items())


def test_assign_supervision_is_deterministic():
    ids = [f"patient{i:03d}" for i in range(1, 11)]
    mix = {"full": 0.1, "box": 0.3, "point": 0.3, "scribble": 0.3}
    a = assign_supervision(ids, mix, seed=0)
    assert set(a) == set(ids)
    assert sorted(a.values()) == sorted(["full"] + ["box"] * 3 + ["point"] * 3 + ["scribble"] * 3)
    assert assign_supervision(list(reversed(ids)), mix, seed=0) == a
    assert any(assign_supervision(ids, mix, seed=s) != a for s in (1, 2, 3))
    with pytest.raises(ValueError, match="unique"):
        assign_supervision(["a", "a"], mix)


@pytest.mark.parametrize("text, problem", [
    ("full=0.5,mask=0.5", "unknown supervision type"),
    ("full=1.2,box=-0.2", ">= 0"),
    ("full=0.5,box=0.4", "sum to 1"),
    ("full", "TYPE=SHARE"),
    ("full=x", "not a number"),
    ("full=0.5,full=0.5", "twice"),
    ("", "empty mix"),
])
def test_parse_mix_errors(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_mix(text)


def test_parse_mix_tolerance():
    assert parse_mix("full=0.3333333,box=0.3333333,point=0.3333334") == {"full": 0.3333333, "box": 0.3333333,
                                                                           "point": 0.3333334}
    assert parse_mix(" box = 1 ") == {"box": 1.0}


# --- make_weak_dataset -----------------------------------------------------------------------------

MIX = {"full": 0.25, "box": 0.25, "point": 0.25, "scribble": 0.25}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "acdc"
    return write_phantom_dataset("cardiac", "acdc-h5", root, n_patients=4, seed=0, size=(48, 48), slices=(3, 3))


def listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def test_make_weak_dataset(source, tmp_path):
    before = listing(source)
    ds = open_dataset("acdc-h5", source)
    out = make_weak_dataset(ds, tmp_path / "weak", MIX, seed=0, progress=False)
    assert listing(source) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    weak = open_dataset("generic", out)
    assert weak.case_ids == ds.case_ids and weak.patients == ds.patients
    by_patient = assign_supervision(ds.patients, MIX, seed=0)
    assert sorted(by_patient.values()) == ["box", "full", "point", "scribble"]
    for case in weak:
        kind = by_patient[case.patient_id]  # both frames of a patient: one type
        src = ds[case.case_id]
        assert case.supervision == kind and case.has_label
        np.testing.assert_array_equal(case.label, src.label)
        np.testing.assert_allclose(case.image, src.image, atol=1e-6)
        assert case.has_weak == (kind in ("box", "point"))
        assert case.has_scribble == (kind == "scribble")
        if kind in ("box", "point"):
            assert case.weak.kind == kind and case.weak.shape == case.image.shape
            assert case.weak.case_id == case.case_id
        if kind == "scribble":  # auto: the source's own scribbles
            np.testing.assert_array_equal(case.scribble, src.scribble)
    meta = json.loads((out / "dataset.json").read_text())
    record = meta["provenance"]["weak_labels"]
    assert record["source"]["layout"] == "acdc-h5" and record["source"]["root"] == str(source.resolve())
    assert record["mix"] == MIX and record["seed"] == 0 and record["box"]["jitter_px"] == [3, 7]
    assert record["point"] == {"mode": "center", "points_per_class": 5, "negatives": 0}
    assert record["cases"] == {"full": 2, "box": 2, "point": 2, "scribble": 2, "none": 0}
    assert meta["classes"] == CARDIAC.to_json() and set(meta["patients"].values()) == set(ds.patients)
    assert weak.provenance["weak_labels"] == record
    weak.validate(progress=False)


def test_make_weak_dataset_is_deterministic_and_synthesises(source, tmp_path):
    ds = open_dataset("acdc-h5", source)
    mix = {"box": 0.25, "point": 0.25, "scribble": 0.5}
    a = make_weak_dataset(ds, tmp_path / "a", mix, seed=3, scribbles="synthetic", point_mode="skeleton",
                          progress=False)
    b = make_weak_dataset(ds, tmp_path / "b", mix, seed=3, scribbles="synthetic", point_mode="skeleton",
                          progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.json"))
    for rel in files:
        if rel.name != "dataset.json":
            assert (a / rel).read_text() == (b / rel).read_text()
    weak = open_dataset("generic", a)
    scribbled = [c for c in weak if c.supervision == "scribble"]
    assert scribbled and weak.provenance["scribbles"]["synthetic"] is True
    for case in scribbled:
        scb, lab = case.scribble, case.label
        drawn = scb != CARDIAC.ignore_index
        assert drawn.any() and (scb[drawn] == lab[drawn]).all()
        assert not np.array_equal(scb, ds[case.case_id].scribble)


def test_make_weak_dataset_abdominal_style(tmp_path):
    src = write_phantom_dataset("abdominal", "chaos-t2-nifti", tmp_path / "chaos", n_patients=2, seed=0,
                                size=(48, 48), slices=(4, 4))
    ds = open_dataset("chaos-t2-nifti", src, scribbles="none")
    out = make_weak_dataset(ds, tmp_path / "weak", {"scribble": 1.0}, seed=0, progress=False)
    weak = open_dataset("generic", out)
    assert weak.class_map == ABDOMINAL and weak.provenance["scribbles"]["style"] == "abdominal"
    for case in weak:
        drawn = case.scribble != ABDOMINAL.ignore_index
        assert case.supervision == "scribble" and drawn.any()
        assert (case.scribble[drawn] == case.label[drawn]).all()


def test_scribble_style_of_weak_make_and_its_cli_flag(tmp_path, capsys):
    from scribmed.cli import main

    src = write_phantom_dataset("abdominal", "chaos-t2-nifti", tmp_path / "chaos", n_patients=2, seed=0,
                                size=(48, 48), slices=(4, 4))
    out = tmp_path / "weak"
    assert main(["weak", "make", "--layout", "chaos-t2-nifti", "--root", str(src), "--out", str(out),
                 "--mix", "scribble=1.0", "--scribbles", "synthetic", "--scribble-style", "scribblebench",
                 "--quiet"]) == 0
    weak = open_dataset("generic", out)
    assert weak.provenance["scribbles"]["style"] == "scribblebench"
    abdominal = make_weak_dataset(open_dataset("chaos-t2-nifti", src, scribbles="none"), tmp_path / "ab",
                                  {"scribble": 1.0}, seed=0, progress=False)
    for case in weak:
        other = open_dataset("generic", abdominal)[case.case_id].scribble
        assert not np.array_equal(case.scribble, other)
        drawn = case.scribble != ABDOMINAL.ignore_index
        assert (case.scribble[drawn] == case.label[drawn]).all()
    with pytest.raises(ValueError, match="unknown scribble style 'x'"):
        make_weak_dataset(open_dataset("chaos-t2-nifti", src), tmp_path / "no", {"scribble": 1.0},
                          scribble_style="x", progress=False)


def test_make_weak_dataset_refusals(source, tmp_path):
    ds = open_dataset("acdc-h5", source)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("mine")
    with pytest.raises(DataError, match="full.*not empty"):
        make_weak_dataset(ds, full, MIX, progress=False)
    assert [p.name for p in full.iterdir()] == ["x.txt"]
    with pytest.raises(DataError, match="inside the source dataset"):
        make_weak_dataset(ds, source, MIX, progress=False)
    with pytest.raises(DataError, match="inside the source dataset"):
        make_weak_dataset(ds, source / "weak", MIX, progress=False)
    with pytest.raises(ValueError, match="sum to 1"):
        make_weak_dataset(ds, tmp_path / "w", {"box": 0.5}, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_weak_dataset(ds, empty, {"none": 1.0}, progress=False) == empty
    assert {c.supervision for c in open_dataset("generic", empty)} == {"none"}


# --- the command line ------------------------------------------------------------------------------


def test_cli_weak_make(source, tmp_path, capsys):
    out = tmp_path / "cli"
    before = listing(source)
    code = main(["weak", "make", "--layout", "acdc-h5", "--root", str(source), "--mix",
                 "full=0.25,box=0.25,point=0.5", "--seed", "1", "--out", str(out), "--points-per-class", "2",
                 "--point-mode", "skeleton", "--spacing", "10,1.5,1.5", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["cases"] == 8 and summary["patients"] == 4
    assert summary["counts"] == {"full": 2, "box": 2, "point": 4, "scribble": 0, "none": 0}
    assert listing(source) == before
    ds = open_dataset("generic", out)
    assert ds[0].spacing == pytest.approx((10.0, 1.5, 1.5))
    point = next(c for c in ds if c.supervision == "point")
    assert point.weak.kind == "point"
    assert json.loads((out / "dataset.json").read_text())["provenance"]["weak_labels"]["point"]["mode"] == "skeleton"
    # a second run into the now non-empty folder is refused with a one-line error
    code = main(["weak", "make", "--layout", "acdc-h5", "--root", str(source), "--mix", "full=1",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "not empty" in err and err.count("\n") == 1


@pytest.mark.parametrize("mix, problem", [
    ("full=0.5,tags=0.5", "unknown supervision type"),
    ("full=1.5,box=-0.5", ">= 0"),
    ("full=0.5,box=0.3", "sum to 1"),
])
def test_cli_bad_mix_is_an_argparse_error(source, tmp_path, capsys, mix, problem):
    with pytest.raises(SystemExit) as info:
        main(["weak", "make", "--layout", "acdc-h5", "--root", str(source), "--mix", mix, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "--mix" in lines[0] and problem in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_weak_help():
    with pytest.raises(SystemExit) as info:
        main(["weak", "make", "--help"])
    assert info.value.code == 0
