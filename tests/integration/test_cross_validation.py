"""Five-fold cross-validation runner on a tiny phantom set: on-disk contract, skip/resume, merge, CLI.

The phantom and its TINY five-fold DMPLS run are conftest's ``jobs_phantom`` and
``tiny_five_folds``, shared with the executor and Slurm tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from job_folds import TINY, TINY_FLAGS, cv_args

from scribmed.cli import main
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.crossval.runner import run_cross_validation
from scribmed.recipes import build


@pytest.fixture
def cv_run_copy(tiny_five_folds, tmp_path) -> Path:
    """A copy of conftest's ``tiny_five_folds`` (read only: other modules compare with it) for the
    tests that run into it again."""
    return Path(shutil.copytree(tiny_five_folds, tmp_path / "run"))


def test_all_folds_written(tiny_five_folds, jobs_phantom):
    ds = open_dataset("acdc-h5", jobs_phantom)
    split = json.loads((tiny_five_folds / "split.json").read_text())
    assert len(split["folds"]) == 5
    tested = []
    for k in range(1, 6):
        fold = tiny_five_folds / f"fold_{k}"
        done = json.loads((fold / "fold.json").read_text())
        assert done["checkpoint_policy"] == "best"  # every fold has a validation patient
        assert len(done["checkpoint_sha256"]) == 64
        assert (fold / "train" / "best.pt").exists() and (fold / "train" / "last.pt").exists()
        torch.load(fold / "train" / "best.pt", weights_only=True)
        test_patients = split["folds"][k - 1]["test"]
        assert not set(test_patients) & set(split["folds"][k - 1]["train"] + split["folds"][k - 1]["val"])
        preds = sorted(p.name for p in (fold / "predictions").glob("*.nii.gz"))
        expected = sorted(f"{c.case_id}.nii.gz" for c in ds if c.patient_id in test_patients)
        assert preds == expected
        for name in preds:
            case = ds[name[: -len(".nii.gz")]]
            assert read_label_nifti(fold / "predictions" / name).array.shape == case.label.shape
        assert (fold / "evaluation" / "per_case.csv").exists()
        assert list((fold / "overlays").glob("*.png"))
        tested += test_patients
    assert sorted(tested) == ds.patients  # out-of-fold covers every patient once


def test_summary_contents(tiny_five_folds):
    summary = json.loads((tiny_five_folds / "summary.json").read_text())
    assert summary["folds_merged"] == [1, 2, 3, 4, 5]
    assert set(summary["folds"]) == {f"fold_{k}" for k in range(1, 6)}
    assert summary["pooled"]["n_cases"] == 10
    assert summary["across_folds"]["n_folds"] == 5
    for name in ("RV", "Myo", "LV"):
        d = summary["across_folds"]["classes"][name]["dice"]
        assert 0.0 <= d["mean"] <= 1.0 and d["n"] == 5
    assert summary["pooled"]["checkpoint"] == "best"
    md = (tiny_five_folds / "summary.md").read_text()
    assert "mean ± std over folds" in md and "Pooled out-of-fold" in md and "| fold_5 |" in md
    assert (tiny_five_folds / "boxplot_folds.png").stat().st_size > 1000
    assert (tiny_five_folds / "run.json").exists()


def test_rerun_skips_finished_folds(cv_run_copy, jobs_phantom):
    stamps = {k: (cv_run_copy / f"fold_{k}" / "fold.json").stat().st_mtime_ns for k in range(1, 6)}
    ds = open_dataset("acdc-h5", jobs_phantom)
    run_cross_validation(build("dmpls", **TINY), ds, "auto", cv_run_copy, progress=False)
    assert stamps == {k: (cv_run_copy / f"fold_{k}" / "fold.json").stat().st_mtime_ns for k in range(1, 6)}


def test_rerun_with_other_settings_is_refused(cv_run_copy, jobs_phantom):
    ds = open_dataset("acdc-h5", jobs_phantom)
    with pytest.raises(DataError, match="other settings"):
        run_cross_validation(build("dmpls", **{**TINY, "iterations": 6}), ds, "auto", cv_run_copy, progress=False)


def test_single_folds_then_merge_equals_full_run(tiny_five_folds, jobs_phantom, tmp_path, capsys):
    """Folds run as separate jobs (--fold k) and merged afterwards give the same fold results."""
    out = tmp_path / "split_run"
    base = cv_args(jobs_phantom, out, *TINY_FLAGS, "--no-merge")
    assert main([*base, "--fold", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"folds 2 finished: {out}"
    assert main([*base, "--fold", "4"]) == 0
    assert main([*base, "--fold", "2"]) == 0  # a rerun says it skips the finished fold
    assert f"fold 2 finished earlier: skipped (delete {out / 'fold_2'} to run it again)" in capsys.readouterr().out
    assert not (out / "summary.json").exists()
    assert main(["cv", "merge", str(out)]) == 0
    assert "merged 2 of 5 folds; not finished: 1, 3, 5" in capsys.readouterr().out
    merged = json.loads((out / "summary.json").read_text())
    full = json.loads((tiny_five_folds / "summary.json").read_text())
    assert merged["folds_merged"] == [2, 4]
    for k in ("fold_2", "fold_4"):
        assert merged["folds"][k]["overall"]["dice"] == pytest.approx(full["folds"][k]["overall"]["dice"], abs=1e-12)


def test_merge_without_folds_is_an_error(tmp_path, capsys):
    assert main(["cv", "merge", str(tmp_path)]) == 1
    assert "no finished fold" in capsys.readouterr().err


def test_killed_fold_resumes(jobs_phantom, tmp_path, monkeypatch):
    """A fold killed mid-training continues from last.pt and ends with the uninterrupted run's weights."""
    from scribmed.data.splits import fold_cases, make_kfold_split
    from scribmed.recipes.dmpls import trainer as trainer_mod
    from scribmed.recipes.dmpls.config import DMPLSConfig
    from scribmed.recipes.dmpls.trainer import train_dmpls

    ds = open_dataset("acdc-h5", jobs_phantom)
    recipe = build("dmpls", **TINY)
    ids = fold_cases(make_kfold_split(ds.patients, k=5, seed=0), 0, ds)
    ref = train_dmpls([ds[c] for c in ids["train"]], [ds[c] for c in ids["val"]], ds.class_map, tmp_path / "ref",
                      DMPLSConfig.from_dict({**recipe.config.to_dict(), "progress": False}))  # fmt: skip

    out = tmp_path / "killed"
    original = trainer_mod.DMPLSTrainer._iteration
    calls = {"n": 0}

    def dies_at_third(self, engine, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # after the first epoch's checkpoint (2 iterations)
            raise KeyboardInterrupt("killed")
        return original(self, engine, batch)

    monkeypatch.setattr(trainer_mod.DMPLSTrainer, "_iteration", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_cross_validation(recipe, ds, "auto", out, folds=[1], progress=False, merge=False)
    assert not (out / "fold_1" / "fold.json").exists()
    assert torch.load(out / "fold_1" / "train" / "last.pt", weights_only=True)["trainer"]["iteration"] == 2
    monkeypatch.setattr(trainer_mod.DMPLSTrainer, "_iteration", original)
    run_cross_validation(recipe, ds, "auto", out, folds=[1], progress=False, merge=False)
    assert (out / "fold_1" / "fold.json").exists()
    got = torch.load(out / "fold_1" / "train" / "last.pt", weights_only=True)["network"]
    want = torch.load(ref.last_checkpoint, weights_only=True)["network"]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_split_naming_absent_patients(jobs_phantom, tmp_path, capsys):
    """Like the ACDC split on a dataset without patients 081-100: refused, or run on present patients."""
    from scribmed.data.split_files import save_split
    from scribmed.data.splits import make_kfold_split

    ds = open_dataset("acdc-h5", jobs_phantom)
    patients = ds.patients + ["patient098", "patient099"]
    split = make_kfold_split(patients, k=3, seed=1, name="with_absent")
    split_file = save_split(split, tmp_path / "with_absent.json")
    out = tmp_path / "run"
    with pytest.raises(DataError, match="absent from the dataset"):
        run_cross_validation(build("dmpls", **TINY), ds, split_file, out, progress=False)
    run_cross_validation(build("dmpls", **TINY), ds, split_file, out, allow_missing=True, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["missing_patients_dropped"] == ["patient098", "patient099"]
    assert json.loads((out / "split.json").read_text())["name"] == "with_absent"
    summary = json.loads((out / "summary.json").read_text())
    tested = sum(s["n_cases"] for s in summary["folds"].values())
    assert tested == len(ds)  # every present patient tested once; folds left empty are skipped


def test_fold_is_scored_from_the_predictions_in_memory(jobs_phantom, tmp_path, monkeypatch):
    """The runner never reads back the NIfTI it just wrote; a rerun after a crash reads what exists."""
    import scribmed.data.nifti as nifti

    def no_reading(*args, **kwargs):
        raise AssertionError("the CV runner read a prediction file back")

    monkeypatch.setattr(nifti, "read_label_nifti", no_reading)
    ds = open_dataset("acdc-h5", jobs_phantom)
    run_cross_validation(build("nearest"), ds, "auto", tmp_path / "run", folds=[1], progress=False, merge=False)
    fold = tmp_path / "run" / "fold_1"
    monkeypatch.undo()
    preds = sorted(p.name for p in (fold / "predictions").glob("*.nii.gz"))
    assert preds and json.loads((fold / "fold.json").read_text())["checkpoint_policy"] == "none"
    rows = (fold / "evaluation" / "per_case.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * len(preds)  # header + one row per case and foreground class


def test_a_bad_file_in_a_selected_fold_stops_cv_before_training(tmp_path, capsys):
    """A truncated test image stops `scribmed cv` with one line naming it, before the fold trains."""
    root = write_phantom_dataset("cardiac", "acdc-nifti", tmp_path / "acdc", n_patients=5, seed=3, size=(48, 48),
                                 slices=(2, 3))
    ds = open_dataset("acdc-nifti", root)
    bad = Path(ds.meta[ds.cases[-1].case_id]["files"]["image"])
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    out = tmp_path / "run"
    argv = ["cv", "--recipe", "dmpls", "--layout", "acdc-nifti", "--root", str(root), "--out", str(out), "--fold", "1",
            "--iterations", "2", "--val-interval", "1", "--batch-size", "2", "--size", "32", "--device", "cpu",
            "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and len(err.splitlines()) == 1
    assert (out / "run.json").is_file() and not (out / "fold_1").exists()  # nothing trained


def test_cv_at_the_paper_budget_on_a_cpu_stops_with_the_estimate(jobs_phantom, tmp_path, capsys):
    """Without --iterations (the paper's 60000) a CPU fold over the limit stops after a few timed iterations.

    The default limit is 4 h at 256 px; here 32 px and a 0.01 h limit make the same decision in seconds."""
    out = tmp_path / "run"
    argv = cv_args(jobs_phantom, out, "--fold", "1", "--size", "32", "--device", "cpu")
    assert main([*argv, "--max-cpu-hours", "0.01"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: this run would train for about ")
    assert "on the CPU (60000 iterations at " in err and "--max-cpu-hours 0 to go on" in err
    assert not (out / "fold_1" / "train" / "last.pt").exists()


def test_auto_split_with_a_fold_count(jobs_phantom, tmp_path, capsys):
    def cv(out, split):
        return main(["cv", "--recipe", "nearest", "--layout", "acdc-h5", "--root", str(jobs_phantom), "--out",
                     str(out), "--fold", "1", "--quiet", "--no-merge", "--split", split])

    assert cv(tmp_path / "run", "auto:3") == 0
    assert len(json.loads((tmp_path / "run" / "split.json").read_text())["folds"]) == 3
    assert cv(tmp_path / "bad", "auto:1") == 1
    assert "auto takes a fold count of at least 2" in capsys.readouterr().err
