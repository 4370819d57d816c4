"""The ``scribmed`` command line end to end: data check, phantom, evaluate, demo, --help."""

from __future__ import annotations

import csv
import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from scribmed.cli import build_parser, main
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import write_prediction


@pytest.fixture(scope="module")
def phantom_h5(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "acdc"
    assert main(["phantom", "--kind", "cardiac", "--layout", "acdc-h5", "--out", str(out), "--patients", "3", "--seed", "1"]) == 0
    return out


def test_help_on_every_command():
    parser = build_parser()
    commands = [[], ["data"], ["data", "check"], ["phantom"], ["evaluate"], ["demo"], ["cv"], ["pseudolabel"]]
    for cmd in commands:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([*cmd, "--help"])
        assert exc.value.code == 0


def test_module_entry_point_help(monkeypatch, capsys):
    """``python -m scribmed --help``: scribmed/__main__.py run as ``-m`` runs it (in this process; the
    installed console script runs in a new one in test_wheel.py)."""
    monkeypatch.setattr(sys, "argv", ["scribmed", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("scribmed", run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in ("data", "phantom", "evaluate", "demo", "cv"):
        assert verb in out


def test_data_check_phantom(phantom_h5, capsys):
    assert main(["data", "check", "--layout", "acdc-h5", "--root", str(phantom_h5), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "acdc-h5"
    assert summary["cases"] == 6 and summary["patients"] == 3
    assert summary["classes"] == {"0": "background", "1": "RV", "2": "Myo", "3": "LV"}
    assert summary["with_label"] == 6 and summary["with_scribble"] == 6
    assert summary["spacing"] == "none"


def test_data_check_refuses_corrupt_copy(phantom_h5, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(phantom_h5, bad)
    victim = sorted((bad / "ACDC_training_volumes").glob("*.h5"))[1]
    victim.write_bytes(victim.read_bytes()[:300])
    code = main(["data", "check", "--layout", "acdc-h5", "--root", str(bad), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ") and victim.name in err


def test_data_check_split_missing_patients(phantom_h5, capsys):
    split = Path(__file__).resolve().parents[2] / "data_splits" / "acdc_5fold.json"
    code = main(["data", "check", "--layout", "acdc-h5", "--root", str(phantom_h5), "--split", str(split), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "absent from the dataset" in err and "--allow-missing" in err and len(err.splitlines()) == 1


def test_data_check_layout_mismatch(phantom_h5, capsys):
    code = main(["data", "check", "--layout", "mscmr", "--root", str(phantom_h5), "--quiet"])
    assert code == 1
    assert str(phantom_h5) in capsys.readouterr().err


def test_phantom_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    code = main(["phantom", "--kind", "cardiac", "--layout", "acdc-h5", "--out", str(tmp_path), "--patients", "2"])
    assert code == 1
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert "error:" in capsys.readouterr().err


def test_evaluate_end_to_end(phantom_h5, tmp_path, capsys):
    """Perfect predictions score Dice 1 / HD95 0; a degraded one scores lower; files are complete."""
    ds = open_dataset("acdc-h5", phantom_h5)
    preds = tmp_path / "preds"
    for i, case in enumerate(ds):
        label = case.label.copy()
        if i == 0:
            label[label == 3] = 2  # LV predicted as Myo in one case
        write_prediction(preds / f"{case.case_id}.nii.gz", label, None)
    out = tmp_path / "report"
    code = main(["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--out", str(out), "--quiet"])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 6 * 3
    assert {"case", "class", "dice", "hd95", "asd", "empty"} <= set(rows[0])
    first = ds.case_ids[0]
    lv_first = [r for r in rows if r["case"] == first and r["class"] == "LV"][0]
    assert lv_first["empty"] == "pred_empty"
    others = [r for r in rows if r["case"] != first]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in others)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hd95_units"] == "pixels"
    assert summary["empty_events"]["pred_empty"] == 1
    assert summary["classes"]["LV"]["dice"]["mean"] == pytest.approx(5 / 6)
    assert (out / "boxplot.png").stat().st_size > 1000
    assert not (out / "boxplot.pdf").exists()  # PNG only unless asked


def test_figures_flag_adds_a_vector_pdf(phantom_h5, tmp_path, capsys):
    ds = open_dataset("acdc-h5", phantom_h5)
    preds = tmp_path / "preds"
    for case in ds:
        write_prediction(preds / f"{case.case_id}.nii.gz", case.label, None)
    out = tmp_path / "report"  # the conftest fixture resets the formats --figures sets
    assert main(["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--out",
                 str(out), "--quiet", "--figures", "png,pdf"]) == 0
    assert (out / "boxplot.png").is_file() and (out / "boxplot.pdf").read_bytes().startswith(b"%PDF")
    assert main(["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--out",
                 str(tmp_path / "bad"), "--quiet", "--figures", "png,tiff"]) == 1
    assert "tiff" in capsys.readouterr().err


def test_evaluate_with_spacing_and_monai(phantom_h5, tmp_path):
    ds = open_dataset("acdc-h5", phantom_h5)
    preds = tmp_path / "preds"
    for case in ds:
        shifted = np.roll(case.label, 2, axis=2)
        write_prediction(preds / f"{case.case_id}.nii.gz", shifted, None)
    out_px, out_mm = tmp_path / "px", tmp_path / "mm"
    base = ["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--quiet"]
    assert main([*base, "--out", str(out_px)]) == 0
    assert main([*base, "--out", str(out_mm), "--spacing", "10,1.5,1.5", "--hd95", "monai"]) == 0
    s_px = json.loads((out_px / "summary.json").read_text())
    s_mm = json.loads((out_mm / "summary.json").read_text())
    assert s_mm["hd95_units"] == "mm" and s_mm["hd95_mode"] == "monai"
    # a pure in-plane shift of 2 px is 3 mm at 1.5 mm/px
    assert s_mm["classes"]["LV"]["hd95"]["mean"] == pytest.approx(1.5 * s_px["classes"]["LV"]["hd95"]["mean"], rel=0.35)


def test_evaluate_missing_prediction_is_one_line_error(phantom_h5, tmp_path, capsys):
    ds = open_dataset("acdc-h5", phantom_h5)
    preds = tmp_path / "preds"
    case = ds[0]
    write_prediction(preds / f"{case.case_id}.nii.gz", case.label, None)
    code = main(["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "no prediction for 5 of 6" in err and len(err.splitlines()) == 1
    code = main(["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--out", str(tmp_path / "r"), "--quiet", "--allow-missing"])
    assert code == 0


def test_evaluate_shape_mismatch(phantom_h5, tmp_path, capsys):
    ds = open_dataset("acdc-h5", phantom_h5)
    preds = tmp_path / "preds"
    for case in ds:
        write_prediction(preds / f"{case.case_id}.nii.gz", case.label[:, :-1], None)
    code = main(["evaluate", "--pred", str(preds), "--ref", str(phantom_h5), "--layout", "acdc-h5", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "shape" in err and ".nii.gz" in err


def test_evaluate_generic_label_folder(tmp_path):
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    ref = np.zeros((3, 20, 20), np.uint8)
    ref[1, 5:10, 5:10] = 1
    ref[1, 12:15, 12:15] = 3
    write_prediction(refs / "a.nii.gz", ref, (5.0, 1.0, 1.0))
    pred = ref.copy()
    pred[1, 5, 5:10] = 0
    write_prediction(preds / "a.nii.gz", pred, (5.0, 1.0, 1.0))
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(preds), "--ref", str(refs), "--layout", "generic", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hd95_units"] == "mm"
    assert summary["classes"]["RV"]["dice"]["mean"] == pytest.approx(2 * 20 / (20 + 25))
    assert summary["empty_events"]["both_empty"] == 1  # Myo absent in both


@pytest.mark.realdata
def test_data_check_real_mscmr(mscmr_root, capsys):
    assert main(["data", "check", "--layout", "mscmr", "--root", str(mscmr_root), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 30 and summary["patients"] == 30
    assert summary["with_scribble"] == 25 and summary["with_label"] == 5
    assert summary["spacing"] == "mm"


@pytest.mark.realdata
def test_data_check_real_acdc_with_split(acdc_root, capsys):
    split = Path(__file__).resolve().parents[2] / "data_splits" / "acdc_5fold.json"
    code = main(["data", "check", "--layout", "acdc-h5", "--root", str(acdc_root), "--split", str(split), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "patient081" in err
    code = main(["data", "check", "--layout", "acdc-h5", "--root", str(acdc_root), "--split", str(split), "--allow-missing", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and len(summary["split"]["missing_patients_dropped"]) == 20
    assert summary["cases"] == 160 and summary["patients"] == 80
    assert summary["with_label"] == 160 and summary["with_scribble"] == 160


def test_demo_runs(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "demo"), "--patients", "5", "--iterations", "2",
            "--size", "64", "--batch-size", "2", "--recipes", "dmpls", "--quiet"]
    assert main([*argv, "--split", "acdc_5fold"]) == 1  # the phantom's patients are generated: auto:K only
    assert "demo --split takes auto or auto:K" in capsys.readouterr().err
    code = main([*argv, "--split", "auto:2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "demo report:" in out and "| DMPLS |" in out and "| nearest scribble" in out
    summary = json.loads((tmp_path / "demo" / "dmpls" / "summary.json").read_text())
    assert summary["folds_merged"] == [1, 2]
    assert summary["pooled"]["n_cases"] == 5  # one frame per patient by default
    # the baseline is the `nearest` recipe, cross-validated like any other on the same folds
    base = json.loads((tmp_path / "demo" / "baseline" / "summary.json").read_text())["pooled"]
    assert base["n_cases"] == 5 and 0.3 < base["overall"]["dice"] < 1.0
    table = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["dmpls", "nearest"]
    assert table["rows"][1]["mean"]["dice"] == pytest.approx(base["overall"]["dice"])
    assert not (tmp_path / "demo" / "sam_embeddings").exists()


def test_demo_with_samsp_fake_sam(tmp_path, monkeypatch, capsys):
    """The default demo (SAM-SP then DMPLS) wired end to end; a tiny fake SAM keeps it fast."""
    from fakes import fake_backend

    import scribmed.networks.sam_registry as sb
    from scribmed.demo import run_demo

    built = []
    monkeypatch.setattr(sb, "build_sam_backend", lambda name, **kw: built.append(fake_backend()) or built[-1])
    md = run_demo(tmp_path / "demo", patients=4, iterations=2, size=32, batch_size=2, slices=(2, 2),
                  frames=("ED", "ES"), split="auto:2", progress=False)
    table = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["samsp", "dmpls", "nearest"]
    assert all(r["cases"] == 8 and 0.0 <= r["mean"]["dice"] <= 1.0 for r in table["rows"])
    assert "| SAM-SP" in md.read_text()
    # every slice encoded once for both folds (4 patients x 2 frames x 2 slices)
    assert sum(b.encoder_calls for b in built) == 16
    assert json.loads((tmp_path / "demo" / "split.json").read_text())["name"] == "demo_2fold"
    for k in range(1, 3):
        quality = json.loads((tmp_path / "demo" / "samsp" / f"fold_{k}" / "train" / "sam" / "quality.json").read_text())
        assert [e["round"] for e in quality["rounds"]] == [0, 1]


def test_cv_refuses_another_recipes_flags_and_takes_set(phantom_h5, tmp_path, capsys):
    argv = ["cv", "--recipe", "dmpls", "--layout", "acdc-h5", "--root", str(phantom_h5), "--out", str(tmp_path / "r")]
    assert main([*argv, "--rounds", "1"]) == 1
    assert "recipe 'dmpls' does not take --rounds" in capsys.readouterr().err
    assert main([*argv, "--set", "lam_typo=1"]) == 1
    assert "recipe 'dmpls' does not take lam_typo" in capsys.readouterr().err
    assert main(["cv", "--recipe", "nearest", "--layout", "acdc-h5", "--root", str(phantom_h5),
                 "--out", str(tmp_path / "n"), "--iterations", "3"]) == 1
    assert "recipe 'nearest' does not take --iterations" in capsys.readouterr().err


def test_amp_choices_are_the_engine_modes():
    """The parser spells the AMP modes out (building it imports no torch); they must stay the engine's."""
    from scribmed.cli import AMP_CHOICES
    from scribmed.runtime.device import AMP_MODES

    assert AMP_CHOICES == AMP_MODES


def test_cv_amp_flag_reaches_the_recipe_config_and_instance_recipes_refuse_it(tmp_path, capsys):
    from scribmed.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "acdc", n_patients=5, seed=3, size=(48, 48),
                                 slices=(2, 2))
    out = tmp_path / "run"
    argv = ["cv", "--recipe", "dmpls", "--layout", "acdc-h5", "--root", str(root), "--out", str(out), "--quiet",
            "--iterations", "2", "--size", "32", "--batch-size", "2", "--device", "cpu", "--fold", "1",
            "--amp", "off", "--stage", "prepare"]
    assert main(argv) == 0
    assert json.loads((out / "run.json").read_text())["config"]["amp"] == "off"
    assert main(["cv", "--recipe", "contour_unet", "--layout", "acdc-h5", "--root", str(root), "--out",
                 str(tmp_path / "other"), "--amp", "bf16"]) == 1
    assert "recipe 'contour_unet' does not take --amp" in capsys.readouterr().err


def test_version_and_help_state_the_defaults(capsys):
    import re

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.fullmatch(r"scribmed \S+\n", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["cv", "--recipe", "dmpls", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--iterations", "60000"), ("--batch-size", "12"), ("--size", "256"),
                          ("--val-interval", "100"), ("--seed", "0"), ("--upsample", "bilinear")):
        assert re.search(rf"{flag} .*?\(default: {default}\)", text), flag
    assert "(default 4; 0: no limit" in text and text.count("training (the flags") == 1
    with pytest.raises(SystemExit):
        main(["cv", "--help"])  # every recipe's flags: a shared flag whose defaults differ says so
    assert "(default: the recipe's; see scribmed cv --recipe NAME --help)" in " ".join(capsys.readouterr().out.split())


def test_a_set_value_of_the_wrong_type_is_one_line(tmp_path, capsys):
    from scribmed.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "acdc", n_patients=5, seed=3, size=(48, 48),
                                 slices=(2, 3))
    argv = ["cv", "--recipe", "dmpls", "--layout", "acdc-h5", "--root", str(root), "--out", str(tmp_path / "run"),
            "--fold", "1", "--quiet"]
    assert main([*argv, "--set", "lam=abc"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: recipe 'dmpls' option lam: 'abc' is not a number (default 0.5)"
    assert not (tmp_path / "run").exists()
