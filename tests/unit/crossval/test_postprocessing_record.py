"""A run's post-processing record: decided from its fold folders, written, read back, refused when it cannot be.

The run folder is built by hand (no training): run.json, per fold its predictions (the labels with a
spurious right-ventricle blob in a corner), its evaluation report and fold.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from scribmed.crossval.fold_evaluation import SemanticEvaluation
from scribmed.crossval.postprocessing import PostprocessingPlan
from scribmed.crossval.postprocessing_record import postprocess_run, read_postprocessing_plan
from scribmed.crossval.runner import write_fold_record
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import write_prediction
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.runtime.records import RUN, stamp

RV, MYO, LV = 1, 2, 3


def _prediction(label: np.ndarray) -> np.ndarray:
    """The label with a spurious RV blob in a corner; where RV and LV do not touch, the myocardium is
    left out, so keeping the largest foreground region would drop one of them."""
    pred = label.copy()
    assert (pred[:, :2, :2] == 0).all()
    pred[:, :2, :2] = RV
    if ndimage.label((label == RV) | (label == LV), np.ones((3, 3, 3)))[1] == 2:
        pred[pred == MYO] = 0
    return pred


@pytest.fixture(scope="module")
def built_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("postprocessing_record")
    root = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "data", n_patients=2, seed=0, size=(32, 32),
                                 slices=(2, 2), frames=("ED",))
    dataset = open_dataset("acdc-h5", root)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(stamp(RUN, {"recipe": "nearest", "layout": "acdc-h5", "root": str(root),
                                                         "task": "semantic", "supervision": None})))
    folds = [{"train": ["patient002"], "val": [], "test": ["patient001"]},
             {"train": ["patient001"], "val": [], "test": ["patient002"]},
             {"train": ["patient001"], "val": [], "test": ["patient002"]}]  # a third fold, never finished
    (run / "split.json").write_text(json.dumps({"name": "hand", "folds": folds}))
    for k, case in enumerate(dataset, 1):
        fold = run / f"fold_{k}"
        pred = _prediction(np.asarray(case.label))
        write_prediction(fold / "predictions" / f"{case.case_id}.nii.gz", pred, case.spacing)
        SemanticEvaluation().evaluate([case], {case.case_id: pred}, dataset.class_map, fold / "evaluation",
                                      fold / "predictions", "none", None, False)
        write_fold_record(fold, k, None, "none", None, {"test": 1})
    return run


@pytest.fixture()
def run_dir(built_run, tmp_path):
    """A copy of the hand-built run for each test (the dataset stays shared)."""
    return Path(shutil.copytree(built_run, tmp_path / "run"))


def test_the_record_and_table_of_a_run(run_dir):
    path = postprocess_run(run_dir, progress=False)
    record = json.loads(path.read_text())
    assert list(record)[0] == "schema" and record["schema"] == "scribmed.postprocessing/1"
    assert record["plan"] == {"foreground": [1, 2, 3], "foreground_as_one": False, "classes": [RV]}
    assert record["folds"] == [1, 2] and record["folds_not_finished"] == [3] and record["n_cases"] == 2
    assert record["hd95_units"] == "pixels" and record["applies"] == "keep the largest component of: RV"
    region = record["steps"][0]
    assert not region["applied"] and region["classes_worse"]  # it would drop RV or LV where they do not touch
    rv = record["classes"]["RV"]
    assert rv["keep_largest_component"] and rv["dice_before"] < rv["dice_after"] == 1.0
    assert rv["hd95_after"] < rv["hd95_before"]
    assert not record["classes"]["LV"]["keep_largest_component"]
    assert record["classes"]["LV"]["dice_before"] == record["classes"]["LV"]["dice_after"] == 1.0
    # the baseline is what the folds' evaluations said of the same files, pooled
    folds = [json.loads((run_dir / f"fold_{k}" / "evaluation" / "summary.json").read_text()) for k in (1, 2)]
    for name in ("RV", "Myo", "LV"):
        for metric in ("dice", "hd95"):
            values = [f["classes"][name][metric]["mean"] for f in folds]
            values = [v for v in values if v is not None]
            assert record["classes"][name][f"{metric}_before"] == pytest.approx(np.mean(values) if values else None)
    table = (run_dir / "postprocessing.md").read_text()
    assert "| RV | kept |" in table and "| LV | – | 1.000 | 1.000 |" in table and "Folds not finished, left out: 3" in table
    assert read_postprocessing_plan(run_dir) == PostprocessingPlan((1, 2, 3), False, (RV,))
    assert postprocess_run(run_dir, progress=False).read_text() == path.read_text()  # deterministic


def test_a_run_without_a_record_has_no_plan_and_a_newer_record_is_refused(run_dir):
    assert read_postprocessing_plan(run_dir) is None
    (run_dir / "postprocessing.json").write_text(json.dumps({"schema": "scribmed.postprocessing/2", "plan": {}}))
    with pytest.raises(DataError, match="unsupported schema version"):
        read_postprocessing_plan(run_dir)


def test_instance_runs_runs_without_finished_folds_and_missing_predictions_are_refused(run_dir):
    (run_dir / "fold_2" / "predictions" / "patient002_frame01.nii.gz").unlink()
    with pytest.raises(DataError, match="fold 2 has no prediction for patient002_frame01"):
        postprocess_run(run_dir, progress=False)
    assert not (run_dir / "postprocessing.json").exists()
    for k in (1, 2):
        (run_dir / f"fold_{k}" / "fold.json").unlink()
    with pytest.raises(DataError, match="no finished fold"):
        postprocess_run(run_dir, progress=False)
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "task": "instance"}))
    with pytest.raises(DataError, match="predicts instance maps") as err:
        postprocess_run(run_dir, progress=False)
    assert "\n" not in str(err.value)
