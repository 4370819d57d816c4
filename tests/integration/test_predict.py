"""`scribmed predict`: a trained checkpoint applied to images without labels, nothing else needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ensemble_reference import ensemble_label_map, mean_probabilities

from scribmed.cli import main
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.recipes.dmpls.trainer import train_dmpls
from scribmed.recipes.dmpls.recipe import DMPLSRecipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    root = write_phantom_dataset("cardiac", "acdc-h5", base / "data", n_patients=3, seed=3, slices=(2, 3))
    ds = open_dataset("acdc-h5", root)
    cases = list(ds)
    cfg = DMPLSConfig(iterations=2, epoch_length=2, batch_size=2, size=(32, 32), device="cpu", progress=False,
                      upsample="bilinear")
    result = train_dmpls(cases[:4], cases[4:], ds.class_map, base / "run", cfg)
    return root, result.checkpoint("best"), base


def test_predict_writes_every_case_on_its_grid_and_matches_the_recipe(trained, capsys):
    root, ckpt, base = trained
    out = base / "preds"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 6
    ds = open_dataset("acdc-h5", root)
    recipe, model, _ = DMPLSRecipe.from_checkpoint(ckpt)
    assert recipe.config.upsample == "bilinear" and recipe.config.size == (32, 32)  # the checkpoint's config
    for case in ds:
        pred = read_label_nifti(out / f"{case.case_id}.nii.gz", "prediction").array
        assert pred.shape == case.image.shape
        np.testing.assert_array_equal(pred, recipe.predict_case(model, case))
    stamp = (out / f"{ds.case_ids[0]}.nii.gz").stat().st_mtime_ns
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(out), "--quiet"]) == 0  # a rerun keeps what exists (resume)
    assert (out / f"{ds.case_ids[0]}.nii.gz").stat().st_mtime_ns == stamp
    record = json.loads((out / "predictions.json").read_text())
    assert record["schema"] == "scribmed.predictions/1" and record["mirror"] is False and record["format"] == "nifti"
    assert record["checkpoints"] == [str(ckpt.resolve())] and len(record["models"][0]) == 64  # sha256
    capsys.readouterr()
    # the same folder with other settings is refused before anything is written, not mixed in
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(out), "--tta", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds predictions made with other mirror (predictions.json)" in err
    assert (out / f"{ds.case_ids[0]}.nii.gz").stat().st_mtime_ns == stamp


def test_predict_refuses_a_foreign_class_map(trained, tmp_path, capsys):
    _, ckpt, _ = trained
    abdominal = write_phantom_dataset("abdominal", "chaos-npz", tmp_path / "abd", n_patients=1, seed=0)
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(abdominal), "--layout", "chaos-npz",
                 "--out", str(tmp_path / "p"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "does not fit the checkpoint" in err and str(abdominal) in err


def test_predict_refuses_output_inside_the_input_and_bad_checkpoints(trained, tmp_path, capsys):
    root, ckpt, _ = trained
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(root / "preds"), "--quiet"]) == 1
    assert "inside the input dataset" in capsys.readouterr().err
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["predict", "--checkpoint", str(bogus), "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(tmp_path / "p"), "--quiet"]) == 1
    assert "bogus.pt" in capsys.readouterr().err


def test_channel_count_must_fit(trained):
    from scribmed.data.case import Case, CaseArrays
    from scribmed.data.errors import DataError

    _, ckpt, _ = trained
    recipe, model, _ = DMPLSRecipe.from_checkpoint(ckpt)
    rgb = Case("c", "p", Path("c.png"), lambda: CaseArrays(np.zeros((2, 3, 32, 32), np.float32)))
    with pytest.raises(DataError, match=r"image has 3 channel\(s\) but the model was trained on 1"):
        recipe.predict_case(model, rgb)


def test_predict_on_a_plain_folder_of_nifti_images(trained, tmp_path, capsys):
    """New scans as users have them: *.nii.gz files alone; class map and channels come from the checkpoint."""
    from scribmed.data.nifti import write_nifti

    root, ckpt, _ = trained
    scans = tmp_path / "scans"
    ds = open_dataset("acdc-h5", root)
    for case in list(ds)[:2]:
        write_nifti(scans / f"{case.case_id}.nii.gz", np.asarray(case.image), spacing=(5.0, 1.5, 1.5))
    out = tmp_path / "preds"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(scans), "--out", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 2
    recipe, model, _ = DMPLSRecipe.from_checkpoint(ckpt)
    for case in list(ds)[:2]:
        pred = read_label_nifti(out / f"{case.case_id}.nii.gz", "prediction").array
        np.testing.assert_array_equal(pred, recipe.predict_case(model, case))
    assert sorted(p.name for p in scans.iterdir()) == sorted(f"{c.case_id}.nii.gz" for c in list(ds)[:2])  # untouched


# ----------------------------------------------------------------------------------- fold ensemble


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A two-fold DMPLS run on a four-patient phantom (2 iterations) and its dataset root."""
    from scribmed.crossval.runner import run_cross_validation
    from scribmed.recipes import build

    base = tmp_path_factory.mktemp("ensemble")
    root = write_phantom_dataset("cardiac", "acdc-h5", base / "data", n_patients=4, seed=5, slices=(2, 2),
                                 frames=("ED",))
    recipe = build("dmpls", iterations=2, val_interval=1, batch_size=2, size=32, device="cpu", seed=0)
    run_cross_validation(recipe, open_dataset("acdc-h5", root), "auto:2", base / "run", progress=False)
    return base / "run", root


def test_predict_run_is_the_argmax_of_the_folds_and_flips_mean_probabilities(cv_run, tmp_path, capsys):
    import torch

    run, root = cv_run
    out = tmp_path / "ens"
    assert main(["predict", "--run", str(run), "--tta", "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    ds = open_dataset("acdc-h5", root)
    assert json.loads(capsys.readouterr().out)["cases"] == len(ds.case_ids)
    loaded = [DMPLSRecipe.from_checkpoint(run / f"fold_{k}" / "train" / "best.pt") for k in (1, 2)]
    networks = [recipe.network(model) for recipe, model, _ in loaded]
    # the recipes' probabilities are the main head's softmax averaged over the flips, and flipping matters
    first = list(ds)[0]
    for (recipe, model, _), net in zip(loaded, networks):
        got = recipe.predict_probabilities(model, first, mirror=True)
        assert torch.allclose(got, mean_probabilities(net, np.asarray(first.image), (32, 32), mirror=True), atol=1e-6)
        assert not torch.allclose(got, recipe.predict_probabilities(model, first, mirror=False), atol=1e-6)
    for case in ds:
        want = ensemble_label_map(networks, np.asarray(case.image), (32, 32), mirror=True)
        np.testing.assert_array_equal(read_label_nifti(out / f"{case.case_id}.nii.gz", "prediction").array, want)


def test_one_fold_of_a_run_without_mirroring_is_the_checkpoint_prediction(cv_run, tmp_path):
    run, root = cv_run
    assert main(["predict", "--run", str(run), "--folds", "2", "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(tmp_path / "f2"), "--quiet"]) == 0
    assert main(["predict", "--checkpoint", str(run / "fold_2" / "train" / "best.pt"), "--input", str(root),
                 "--layout", "acdc-h5", "--out", str(tmp_path / "ck"), "--quiet"]) == 0
    for path in sorted((tmp_path / "ck").glob("*.nii.gz")):
        np.testing.assert_array_equal(read_label_nifti(path, "p").array,
                                      read_label_nifti(tmp_path / "f2" / path.name, "p").array)


def test_predict_run_refusals_are_one_line(cv_run, tmp_path, capsys):
    run, root = cv_run
    base = ["--input", str(root), "--layout", "acdc-h5", "--out", str(tmp_path / "x"), "--quiet"]
    assert main(["predict", "--run", str(run), "--folds", "3", *base]) == 1
    assert "folds [3] are not finished (finished: [1, 2])" in capsys.readouterr().err
    assert main(["predict", *base]) == 1
    assert "give one of --checkpoint CKPT" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(run / "fold_1" / "train" / "best.pt"), "--folds", "1", *base]) == 1
    assert "--folds chooses folds of --run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_run_without_models_is_refused_in_one_line(tmp_path, capsys):
    from scribmed.crossval.runner import run_cross_validation
    from scribmed.recipes import build

    root = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "data", n_patients=2, seed=1, slices=(2, 2),
                                 frames=("ED",))
    run_cross_validation(build("nearest"), open_dataset("acdc-h5", root), "auto:2", tmp_path / "run", progress=False)
    assert main(["predict", "--run", str(tmp_path / "run"), "--tta", "--input", str(root), "--layout", "acdc-h5",
                 "--out", str(tmp_path / "p"), "--quiet"]) == 1
    assert "fold 1 keeps no model checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
