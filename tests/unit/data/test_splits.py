"""Split files, split logic and validation against real and phantom datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribmed.data.errors import SplitError
from scribmed.data.split_files import SPLITS_DIR, dumps_split, load_split, save_split
from scribmed.data.split_protocols import BUILTIN_SPLITS, acdc_5fold, chaos_mr_5fold, mscmr_split
from scribmed.data.split_types import Fold, Split
from scribmed.data.splits import carve_validation, fold_cases, make_kfold_split, resolve_split, validate_split


def _check_partition(split: Split, all_patients: list[str]) -> None:
    tests = [p for f in split.folds for p in f.test]
    assert sorted(tests) == sorted(all_patients), "test folds must partition the patients"
    for f in split.folds:
        tr, va, te = set(f.train), set(f.val), set(f.test)
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == set(all_patients)


# ------------------------------------------------------------------------- committed files


@pytest.mark.parametrize("fname", sorted(BUILTIN_SPLITS))
def test_committed_files_equal_generator_output(fname):
    path = SPLITS_DIR / fname
    assert path.read_text(encoding="utf-8") == dumps_split(BUILTIN_SPLITS[fname]())
    loaded = load_split(path)
    assert loaded == BUILTIN_SPLITS[fname]()
    assert loaded.source == path


def test_acdc_5fold_contents():
    s = load_split(SPLITS_DIR / "acdc_5fold.json")
    assert s.name == "acdc_5fold" and s.num_folds == 5
    everyone = [f"patient{i:03d}" for i in range(1, 101)]
    for k, f in enumerate(s.folds):
        assert list(f.test) == [f"patient{i:03d}" for i in range(20 * k + 1, 20 * k + 21)]
        assert len(f.val) == 8 and len(f.train) == 72
        rest = set(everyone) - set(f.test)
        assert set(f.val) < rest and set(f.train) | set(f.val) == rest
        assert list(f.train) == sorted(f.train)
        assert (list(f.train), list(f.val)) == carve_validation(rest, 0, k, 0.1, 1)
    _check_partition(s, everyone)
    assert len({f.val for f in s.folds}) == 5, "each fold holds out its own validation subset"
    assert s.validation_rule is not None and s.validation_rule.seed == 0 and s.validation_rule.fraction == 0.1
    raw = json.loads((SPLITS_DIR / "acdc_5fold.json").read_text())
    assert raw["unit"] == "patient" and raw["validation_rule"]["min"] == 1 and raw["validation_rule"]["how"]


def test_mscmr_contents():
    s = load_split("mscmr")  # bare name resolves to data_splits/
    assert s.num_folds == 1
    f = s.folds[0]
    ids = lambda xs: [f"subject{i}" for i in xs]  # noqa: E731
    assert list(f.train) == ids([2, 4, 6, 7, 9, 13, 14, 15, 18, 19, 20, 21, 22, 24, 25, 26, 27, 31, 32, 34, 37, 39, 42, 44, 45])
    assert list(f.val) == ids([1, 8, 29, 36, 41])
    assert list(f.test) == ids([3, 5, 10, 11, 12, 16, 17, 23, 28, 30, 33, 35, 38, 40, 43])
    assert len(s.patients) == 45


def test_chaos_contents():
    s = load_split(SPLITS_DIR / "chaos_mr_5fold.json")
    blocks = [{5, 36, 13, 21}, {3, 33, 8, 37}, {15, 2, 32, 1}, {39, 38, 20, 34}, {19, 31, 22, 10}]
    everyone = sorted(f"patient{i:02d}" for b in blocks for i in b)
    assert len(everyone) == 20
    for k, (f, b) in enumerate(zip(s.folds, blocks)):
        assert set(f.test) == {f"patient{i:02d}" for i in b}
        assert len(f.val) == 2 and len(f.train) == 14
        assert set(f.val) < set(everyone) - set(f.test)
    _check_partition(s, everyone)


# ----------------------------------------------------------------------------- carving


def test_carve_validation_deterministic_and_order_independent():
    pts = [f"p{i:02d}" for i in range(30)]
    a = carve_validation(pts, seed=3, fold_index=1)
    b = carve_validation(list(reversed(pts)) + pts[:5], seed=3, fold_index=1)
    assert a == b
    train, val = a
    assert len(val) == 3 and len(train) == 27 and set(train) | set(val) == set(pts)
    assert carve_validation(pts, seed=4, fold_index=1)[1] != val or carve_validation(pts, 3, 2)[1] != val


def test_carve_validation_sizes():
    assert carve_validation(["a"], 0, 0) == (["a"], [])
    assert carve_validation(["a", "b"], 0, 0, fraction=0.1, min_count=1)[1].__len__() == 1
    assert len(carve_validation([f"x{i}" for i in range(16)], 0, 0)[1]) == 2  # round_half_up(1.6)
    assert len(carve_validation([f"x{i}" for i in range(15)], 0, 0)[1]) == 2  # 1.5 -> 2
    assert len(carve_validation([f"x{i}" for i in range(5)], 0, 0, fraction=0.0, min_count=0)[1]) == 0
    assert len(carve_validation([f"x{i}" for i in range(4)], 0, 0, fraction=0.9, min_count=1)[1]) == 3
    with pytest.raises(ValueError):
        carve_validation(["a", "b"], 0, 0, fraction=1.0)


def test_make_kfold_split():
    pts = [f"patient{i:03d}" for i in range(1, 13)]
    s = make_kfold_split(pts, k=5, seed=7)
    assert s == make_kfold_split(list(reversed(pts)), k=5, seed=7)
    assert s != make_kfold_split(pts, k=5, seed=8)
    _check_partition(s, pts)
    assert sorted(len(f.test) for f in s.folds) == [2, 2, 2, 3, 3]
    assert all(len(f.val) >= 1 for f in s.folds)
    with pytest.raises(SplitError, match="cannot make 5 folds from 3 patient"):
        make_kfold_split(pts[:3], k=5)
    with pytest.raises(SplitError, match="k >= 2"):
        make_kfold_split(pts, k=1)


def test_save_split_roundtrip_atomic(tmp_path):
    s = make_kfold_split([f"c{i}" for i in range(6)], k=3, seed=1, name="mine")
    path = save_split(s, tmp_path / "sub" / "mine.json")
    assert load_split(path) == s
    assert [p.name for p in path.parent.iterdir()] == ["mine.json"], "no temporary file left behind"


# ----------------------------------------------------------------------------- bad files


def _write(tmp_path: Path, content) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


GOOD_FOLD = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "top level must be a JSON object"),
        ({"folds": [GOOD_FOLD]}, "missing key(s): name"),
        ({"name": "x"}, "missing key(s): folds"),
        ({"name": "x", "folds": []}, "'folds' must be a non-empty list"),
        ({"name": "x", "folds": [{"train": ["a"]}]}, "fold 1 is missing key(s): test"),
        ({"name": "x", "folds": [{"train": ["a", "b"], "test": ["b"]}]}, "b in both train and test"),
        ({"name": "x", "folds": [{"train": ["a"], "val": ["c"], "test": ["c"]}]}, "c in both val and test"),
        ({"name": "x", "folds": [{"train": ["a", "a"], "test": ["b"]}]}, "lists a more than once"),
        ({"name": "x", "folds": [{"train": ["a", 3], "test": ["b"]}]}, "list of non-empty patient id strings"),
        ({"name": "x", "folds": [{"train": ["a"], "test": ["b"], "extra": []}]}, "unknown key(s): extra"),
        ({"name": "x", "folds": [{"train": ["a"], "test": ["b"]}, {"train": ["a"], "test": ["b"]}]},
         "b is a test patient of both fold 1 and fold 2"),
        ({"name": "x", "folds": [{"train": [], "test": ["b"]}]}, "fold 1 has no train patients"),
        ({"name": "x", "unit": "case", "folds": [GOOD_FOLD]}, "'unit' must be 'patient'"),
        ({"name": "x", "validation_rule": {"seed": "abc"}, "folds": [GOOD_FOLD]}, "validation_rule"),
    ],
)
def test_bad_split_files(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(SplitError) as err:
        load_split(path)
    text = str(err.value)
    assert text.startswith(str(path)), "the error names the file"
    assert message in text
    assert "\n" not in text


def test_missing_split_file(tmp_path):
    with pytest.raises(SplitError, match="split file not found"):
        load_split(tmp_path / "nope.json")


def test_fold_index_out_of_range():
    with pytest.raises(SplitError, match="fold indices 0..4"):
        acdc_5fold().fold(5)


# ------------------------------------------------------------------- against real datasets


def _acdc_patients(acdc_root: Path) -> list[str]:
    files = sorted((acdc_root / "ACDC_training_volumes").glob("patient*_frame*.h5"))
    return sorted({f.name.split("_")[0] for f in files})


@pytest.mark.realdata
def test_validate_acdc_split_against_real_ids(acdc_root):
    patients = _acdc_patients(acdc_root)
    assert patients[0] == "patient001" and patients[-1] == "patient080"
    split = load_split(SPLITS_DIR / "acdc_5fold.json")
    with pytest.raises(SplitError) as err:
        validate_split(split, patients)
    msg = str(err.value)
    assert "split names 20 patients absent from the dataset: patient081, patient082" in msg
    assert "patient100" in msg and "patient080" not in msg
    assert msg.startswith(str(SPLITS_DIR / "acdc_5fold.json"))

    report = validate_split(split, patients, allow_missing=True)
    assert report.missing == [f"patient{i:03d}" for i in range(81, 101)]
    assert report.empty_folds == [4]
    assert report.split.folds[4].test == ()
    assert any(w.startswith("fold 5:") and "no test patients left" in w for w in report.warnings)
    for k in range(4):
        f = report.split.folds[k]
        assert f.test == split.folds[k].test  # test blocks 1-4 fully present
        assert all(int(p[7:]) <= 80 for p in f.train + f.val)
        assert set(f.train) | set(f.val) | set(f.test) == set(patients)


@pytest.mark.realdata
def test_validate_mscmr_split_against_real_ids(mscmr_root):
    subjects = sorted(
        {p.name.split("_")[0] for p in mscmr_root.glob("*/images/subject*_DE.nii.gz")}
    )
    assert len(subjects) == 30
    split = load_split("mscmr.json")
    with pytest.raises(SplitError, match="split names 15 patients absent from the dataset: subject3, subject5"):
        validate_split(split, subjects)
    report = validate_split(split, subjects, allow_missing=True)
    assert report.empty_folds == [0] and len(report.split.folds[0].train) == 25
    assert len(report.split.folds[0].val) == 5


def test_validate_split_nothing_in_common():
    with pytest.raises(SplitError, match="none is in the dataset"):
        validate_split(mscmr_split(), ["patient001"], allow_missing=True)


def test_validate_split_reports_unassigned():
    s = make_kfold_split(["a", "b", "c"], k=3)
    report = validate_split(s, ["a", "b", "c", "zz"])
    assert report.ok and report.unassigned == ["zz"] and report.split is s


# ----------------------------------------------------------------------- phantom datasets


@pytest.fixture(scope="module")
def phantom_acdc(tmp_path_factory):
    from scribmed.data.layouts import open_dataset
    from scribmed.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset(
        "cardiac", "acdc-h5", tmp_path_factory.mktemp("ph") / "acdc", 4, seed=3, size=64, slices=(3, 4)
    )
    return open_dataset("acdc-h5", root)


def test_fold_cases_on_phantom(phantom_acdc):
    ds = phantom_acdc
    assert ds.patients == ["patient001", "patient002", "patient003", "patient004"]
    s = make_kfold_split(ds.patients, k=2, seed=0)
    seen = []
    for k in range(2):
        fc = fold_cases(s, k, ds)
        assert set(fc) == {"train", "val", "test"}
        for subset, case_ids in fc.items():
            pts = {ds[c].patient_id for c in case_ids}
            assert pts == set(s.folds[k].subsets()[subset])
            assert len(case_ids) == 2 * len(pts), "both frames of a patient go together"
        seen += fc["test"]
    assert sorted(seen) == ds.case_ids


def test_acdc_split_on_phantom_needs_allow_missing(phantom_acdc):
    split = acdc_5fold()
    with pytest.raises(SplitError, match="split names 96 patients absent from the dataset: patient005"):
        validate_split(split, phantom_acdc)
    report = validate_split(split, phantom_acdc, allow_missing=True)
    # fold 0 keeps its 4 test patients but no training patient; folds 1-4 keep no test patient
    assert report.empty_folds == [0, 1, 2, 3, 4]
    assert any(w.startswith("fold 1:") and "no train patients left" in w for w in report.warnings)
    fc = fold_cases(report.split, 0, phantom_acdc)
    assert len(fc["test"]) == 8 and fc["train"] == [] and fc["val"] == []
    with pytest.raises(SplitError, match="fold 1 names 96 patients absent"):
        fold_cases(split, 0, phantom_acdc)


def test_resolve_split(phantom_acdc):
    auto = resolve_split("auto", phantom_acdc, k=2, seed=1)
    assert auto.ok and auto.split.num_folds == 2 and auto.split.name == "auto"
    named = resolve_split("acdc_5fold", phantom_acdc, allow_missing=True)
    assert named.missing and named.split.name == "acdc_5fold"


def test_chaos_split_on_phantom_by_patient():
    from scribmed.data.phantoms import generate_abdominal

    cases = [c.to_case() for c in generate_abdominal(3, seed=0, size=48, slices=(3, 3), scribbles=False)]
    split = chaos_mr_5fold()
    report = validate_split(split, cases, allow_missing=True)
    assert report.unassigned == []
    for k in range(5):
        if k in report.empty_folds:
            continue
        fc = fold_cases(report.split, k, cases)
        for subset, ids in fc.items():
            for pid in report.split.folds[k].subsets()[subset]:
                assert {f"T1_{pid}", f"T2_{pid}"} <= set(ids), "T1 and T2 of a patient stay together"


def test_fold_dataclass_patients():
    f = Fold(("b", "a"), ("c",), ("d",))
    assert f.patients == ["a", "b", "c", "d"]


def test_auto_split_specs():
    from scribmed.data.splits import auto_folds

    assert [auto_folds(s) for s in ("auto", "auto:3", "auto:10", "acdc_5fold", "x/auto.json")] == [5, 3, 10, 0, 0]
    for bad in ("auto:1", "auto:x", "auto:"):
        if bad == "auto:":
            assert auto_folds(bad) == 5
            continue
        with pytest.raises(SplitError, match="at least 2, e.g. auto:3"):
            auto_folds(bad)
