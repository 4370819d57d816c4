"""`scribmed cv postprocess` on a phantom run, then `scribmed predict --run` applying what it chose.

The run's fold predictions are replaced by the labels with a spurious right-ventricle blob in a
corner (and, where RV and LV do not touch, without the myocardium, so that keeping the largest
foreground region would drop a true structure): the rule must keep RV's largest component only.
A 2-iteration model predicts background everywhere, so for `predict --run` the folds' class
probabilities are replaced by a fixed pattern with two RV blobs; the ensemble, the argmax, the
resizing and the post-processing run as they are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from scribmed.cli import main
from scribmed.crossval.postprocessing import PostprocessingPlan
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti, write_prediction
from scribmed.data.phantoms import write_phantom_dataset

RV, MYO, LV = 1, 2, 3


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    """A two-fold DMPLS run (2 iterations, 32x32) whose fold predictions carry a spurious RV blob."""
    from scribmed.crossval.runner import finished_folds, run_cross_validation
    from scribmed.recipes import build

    base = tmp_path_factory.mktemp("postprocess")
    root = write_phantom_dataset("cardiac", "acdc-h5", base / "data", n_patients=4, seed=0, size=(32, 32),
                                 slices=(2, 2), frames=("ED",))
    recipe = build("dmpls", iterations=2, val_interval=1, batch_size=2, size=32, device="cpu", seed=0)
    run = base / "run"
    dataset = open_dataset("acdc-h5", root)
    run_cross_validation(recipe, dataset, "auto:2", run, progress=False)
    assert finished_folds(run) == [1, 2]
    apart = 0
    for path in sorted(run.glob("fold_*/predictions/*.nii.gz")):
        case = dataset[path.name[: -len(".nii.gz")]]
        label = np.asarray(case.label)
        pred = label.copy()
        assert (pred[:, :2, :2] == 0).all()
        pred[:, :2, :2] = RV
        if ndimage.label((label == RV) | (label == LV), np.ones((3, 3, 3)))[1] == 2:
            pred[pred == MYO] = 0
            apart += 1
        write_prediction(path, pred, case.spacing)
    assert apart >= 1
    return run, root


def _two_rv_blobs(self, model, case, mirror=False):
    """Class probabilities ``(slices, 4, 32, 32)``: background, but RV in a large and a small blob."""
    import torch

    probs = torch.zeros((np.asarray(case.image).shape[0], 4, 32, 32))
    probs[:, 0] = 1.0
    probs[:, RV, 4:14, 4:14] = 2.0
    probs[:, RV, 22:25, 22:25] = 2.0
    return probs


def test_cv_postprocess_keeps_the_largest_rv_component_and_predict_run_applies_it(blob_run, tmp_path, capsys,
                                                                                  monkeypatch):
    from scribmed.recipes.segmentor import SegmentorRecipe

    run, root = blob_run
    assert main(["cv", "postprocess", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| RV | kept |" in out and f"post-processing: {run / 'postprocessing.json'}" in out
    record = json.loads((run / "postprocessing.json").read_text())
    assert record["schema"] == "scribmed.postprocessing/1" and record["folds"] == [1, 2] and record["n_cases"] == 4
    assert record["plan"] == {"foreground": [1, 2, 3], "foreground_as_one": False, "classes": [RV]}
    assert not record["steps"][0]["applied"] and record["classes"]["RV"]["dice_after"] == 1.0
    assert (run / "postprocessing.md").read_text() in out

    monkeypatch.setattr(SegmentorRecipe, "predict_probabilities", _two_rv_blobs)
    common = ["--input", str(root), "--layout", "acdc-h5", "--device", "cpu", "--quiet"]
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "pp"), *common]) == 0
    said = capsys.readouterr().err
    assert said.count("post-processing") == 1 and "keep the largest component of: RV" in said
    assert main(["predict", "--run", str(run), "--no-postprocess", "--out", str(tmp_path / "raw"), *common]) == 0
    assert "post-processing" not in capsys.readouterr().err
    plan = PostprocessingPlan((1, 2, 3), False, (RV,))
    changed = 0
    for path in sorted((tmp_path / "raw").glob("*.nii.gz")):
        raw = read_label_nifti(path, "prediction").array
        done = read_label_nifti(tmp_path / "pp" / path.name, "prediction").array
        np.testing.assert_array_equal(done, plan.apply(raw))
        assert (raw == RV).sum() == 2 * (100 + 9) and (done == RV).sum() == 2 * 100  # the small blob removed
        changed += 1
    assert changed == 4


def test_no_postprocess_needs_a_run(blob_run, tmp_path, capsys):
    run, root = blob_run
    assert main(["predict", "--checkpoint", str(run / "fold_1" / "train" / "best.pt"), "--no-postprocess",
                 "--input", str(root), "--layout", "acdc-h5", "--out", str(tmp_path / "x"), "--quiet"]) == 1
    assert "--no-postprocess turns off the post-processing of --run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
