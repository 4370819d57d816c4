"""nnU-Net + partial loss through the real nnunetv2 package: five phantom folds end to end (tiny epochs).

One module-scoped CV run is shared: its summary's form, nnU-Net's split and ignore-label export per
fold, resuming from nnU-Net's own checkpoint, and ``scribmed predict`` with the fold's model.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scribmed.cli import main
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.recipes.nnunet_pl import engine
from scribmed.recipes.nnunet_pl.config import NNUNetPLConfig
from scribmed.recipes.nnunet_pl.raw_dataset import NNUNetFolders

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is installed by make install (scribmed[nnunet])")

TINY = ["--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations-per-epoch", "1", "--num-workers", "0",
        "--device", "cpu", "--set", "mirror=false"]  # mirroring: nnU-Net's predictor flag, 4x the predictions' time


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom_dataset("cardiac", "acdc-h5", tmp_path_factory.mktemp("nnunet") / "acdc", n_patients=5,
                                 seed=3, size=(40, 36), slices=(2, 3))


@pytest.fixture(scope="module")
def cv_run(phantom, tmp_path_factory) -> Path:
    from conftest import nnunet_in_process

    with pytest.MonkeyPatch.context() as mp:
        nnunet_in_process(mp)
        return _five_folds(phantom, tmp_path_factory)


def _five_folds(phantom, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nnunet_run") / "run"
    argv = ["cv", "--recipe", "nnunet_pl", "--layout", "acdc-h5", "--root", str(phantom), "--out", str(out)]
    assert main([*argv, *TINY, "--quiet"]) == 0
    return out


def _form(obj):
    """The shape of a JSON record: keys and the kinds of leaves, numbers' values left out."""
    if isinstance(obj, dict):
        return {k: _form(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_form(v) for v in obj[:1]]
    return type(obj).__name__ if not isinstance(obj, (int, float)) or isinstance(obj, bool) else "number"


def test_five_folds_summarise_like_every_other_recipe(cv_run, tiny_five_folds):
    """The summary has the form of a DMPLS run's (conftest's five-fold run of another phantom)."""
    ours = json.loads((cv_run / "summary.json").read_text())
    theirs = json.loads((tiny_five_folds / "summary.json").read_text())
    assert sorted(ours["folds"]) == [f"fold_{k}" for k in range(1, 6)]
    for record in (ours, theirs):
        record["run"].pop("config")  # each recipe's own options
    assert _form(ours) == _form(theirs)
    assert (cv_run / "summary.md").exists()
    for k in range(1, 6):
        fold = json.loads((cv_run / f"fold_{k}" / "fold.json").read_text())
        assert fold["checkpoint"] == "train/model.pt" and fold["checkpoint_policy"] == "last"
        assert fold["nnunet_checkpoint"] == "checkpoint_final.pth" and fold["iterations"] == 2


def test_nnunets_split_is_scribmeds_fold_and_its_labels_carry_the_ignore_label(cv_run, phantom):
    ds = open_dataset("acdc-h5", phantom)
    by_patient: dict[str, list[str]] = {}
    for case in ds:
        by_patient.setdefault(case.patient_id, []).append(case.case_id)
    split = json.loads((cv_run / "split.json").read_text())
    for k, fold in enumerate(split["folds"], start=1):
        folders = NNUNetFolders(cv_run / f"fold_{k}" / "train" / "nnunet")
        nn_split = json.loads((folders.preprocessed_dataset / "splits_final.json").read_text())
        ids = {part: sorted(c for p in fold[part] for c in by_patient[p]) for part in ("train", "val", "test")}
        assert len(nn_split) == 1
        assert sorted(nn_split[0]["train"]) == ids["train"] and sorted(nn_split[0]["val"]) == ids["val"]
        written = sorted(p.name[: -len(".nii.gz")] for p in (folders.raw_dataset / "labelsTr").iterdir())
        assert written == sorted(ids["train"] + ids["val"])  # test cases are never written
    folders = NNUNetFolders(cv_run / "fold_1" / "train" / "nnunet")
    for case in ds:
        path = folders.raw_dataset / "labelsTr" / f"{case.case_id}.nii.gz"
        if not path.exists():
            continue
        label = np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(label == ds.class_map.num_classes, case.scribble == ds.class_map.ignore_index)


def test_a_killed_fold_resumes_from_nnunets_checkpoint(cv_run, tmp_path):
    src = NNUNetFolders(cv_run / "fold_1" / "train" / "nnunet")
    folders = NNUNetFolders(tmp_path / "nnunet")
    shutil.copytree(src.root, folders.root)
    config = NNUNetPLConfig(epochs=2, iterations_per_epoch=2, val_iterations_per_epoch=1, num_workers=0,
                            device="cpu")
    plans = json.loads((folders.preprocessed_dataset / "nnUNetPlans.json").read_text())
    out = engine.trainer_folder(folders, config, "nnUNetPlans")
    # a fold killed after its first epoch: nnU-Net's latest checkpoint, no final one
    (out / "checkpoint_final.pth").rename(out / "checkpoint_latest.pth")
    log = io.StringIO()
    assert engine.train_fold(folders, config, plans, log) == out
    text = log.getvalue()
    assert "Epoch 1" in text and "Epoch 0" not in text  # it went on from epoch 1
    final = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 2 and not (out / "checkpoint_latest.pth").exists()
    stamp = (out / "checkpoint_final.pth").stat().st_mtime_ns
    engine.train_fold(folders, config, plans, io.StringIO())  # finished: not trained again
    assert (out / "checkpoint_final.pth").stat().st_mtime_ns == stamp


def test_predict_with_a_folds_model_equals_the_folds_predictions(cv_run, phantom, tmp_path):
    ckpt = cv_run / "fold_1" / "train" / "model.pt"
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(phantom), "--layout", "acdc-h5",
                 "--out", str(out), "--device", "cpu"]) == 0
    fold_preds = sorted((cv_run / "fold_1" / "predictions").glob("*.nii.gz"))
    assert fold_preds
    for path in fold_preds:
        np.testing.assert_array_equal(read_label_nifti(out / path.name).array, read_label_nifti(path).array)
    ens = tmp_path / "ensemble"
    assert main(["predict", "--run", str(cv_run), "--folds", "1,2", "--input", str(phantom), "--layout", "acdc-h5",
                 "--out", str(ens), "--device", "cpu"]) == 0
    ds = open_dataset("acdc-h5", phantom)
    for case in ds:
        assert read_label_nifti(ens / f"{case.case_id}.nii.gz").array.shape == case.image.shape


def test_bundle_trains_one_tiny_fold_like_scribmed_cv(cv_run, phantom, tmp_path, monkeypatch, nnunet_light):
    """The bundle's train workflow is `scribmed cv --fold 1`: same split, options and predictions."""
    from monai.bundle import ConfigWorkflow

    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    fold = tmp_path / "runs" / "fold_1"
    wf = ConfigWorkflow(config_file=str(REPO / "bundles" / "nnunet_pl_acdc" / "configs" / "train.yaml"),
                        workflow_type="train", logging_file=False, dataset_dir=str(phantom), split_file="auto",
                        allow_missing=False, fold=1, output_dir=str(fold), epochs=1, iterations_per_epoch=2,
                        val_iterations_per_epoch=1, num_workers=0, device="cpu", mirror=False, progress=False)
    wf.initialize()
    assert not fold.exists()  # initialize builds objects only
    wf.run()
    assert (fold / "fold.json").exists() and (fold / "models" / "model.pt").exists()
    ref = cv_run / "fold_1"
    assert sorted(p.name for p in (fold / "predictions").iterdir()) == sorted(p.name for p in (ref / "predictions").iterdir())
    for path in (ref / "predictions").iterdir():
        np.testing.assert_array_equal(read_label_nifti(fold / "predictions" / path.name).array,
                                      read_label_nifti(path).array)


def test_3d_fullres_trains_and_predicts_whole_volumes(phantom, tmp_path, nnunet_light):
    """``--configuration 3d_fullres``: nnU-Net's 3D U-Net on 3D patches, one fold, predictions of each
    test volume's shape."""
    out = tmp_path / "run3d"
    argv = ["cv", "--recipe", "nnunet_pl", "--layout", "acdc-h5", "--root", str(phantom), "--out", str(out),
            "--fold", "1", "--configuration", "3d_fullres", *TINY, "--quiet"]
    assert main(argv) == 0
    folders = NNUNetFolders(out / "fold_1" / "train" / "nnunet")
    plans = json.loads((folders.preprocessed_dataset / "nnUNetPlans.json").read_text())
    assert len(plans["configurations"]["3d_fullres"]["patch_size"]) == 3
    model = torch.load(out / "fold_1" / "train" / "model.pt", map_location="cpu", weights_only=True)
    assert model["nnunet"]["configuration"] == model["config"]["configuration"] == "3d_fullres"
    assert any(p.name.endswith("__3d_fullres") for p in (folders.results / folders.raw_dataset.name).iterdir())
    ds = open_dataset("acdc-h5", phantom)
    preds = sorted((out / "fold_1" / "predictions").glob("*.nii.gz"))
    assert len(preds) == json.loads((out / "fold_1" / "fold.json").read_text())["cases"]["test"] > 0
    for path in preds:
        pred = read_label_nifti(path).array
        assert pred.shape == ds[path.name[: -len(".nii.gz")]].image.shape and pred.max() < ds.class_map.num_classes
