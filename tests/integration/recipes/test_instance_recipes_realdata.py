"""The instance recipes through ``scribmed cv`` on real DSB2018 images with the real LiteMedSAM (tiny budget).

Five real images (3 train, 1 val, 1 test), 2 iterations: the point is that every recipe runs end to
end on the real layout, real image sizes and real SAM, not what it scores. The bundles
(bundles/{sesam,s4m,wish}_dsb2018) train the same fold as ``scribmed cv --fold 1``
(tests/integration/bundles/test_bundles_instance.py), so this covers them on real data too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from scribmed.cli import main
from scribmed.data.nifti import read_label_nifti

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("recipe", ["sesam", "s4m", "wish"])
def test_instance_recipe_on_real_dsb2018(recipe, dsb_tiny, tmp_path):
    root, split, ids, cache = dsb_tiny["root"], dsb_tiny["split"], dsb_tiny["ids"], dsb_tiny["sam_cache"]
    out = tmp_path / recipe
    argv = ["cv", "--recipe", recipe, "--layout", "dsb2018", "--root", str(root), "--split", str(split),
            "--out", str(out), "--iterations", "2", "--val-interval", "1", "--batch-size", "2", "--device", "cpu",
            "--set", "patch=64", "--set", f"sam_cache={cache}", "--quiet"]
    if recipe == "s4m":
        argv += ["--set", "teacher_iterations=1"]
    assert main(argv) == 0
    fold = out / "fold_1"
    assert json.loads((fold / "fold.json").read_text())["cases"] == {"train": 3, "val": 1, "test": 1}
    summary = json.loads((fold / "evaluation" / "summary.json").read_text())
    assert summary["task"] == "instance" and summary["n_cases"] == 1
    pred = read_label_nifti(fold / "predictions" / f"{ids[4]}.nii.gz", "prediction").array
    from scribmed.data.layouts import open_dataset

    ref = open_dataset("dsb2018", root)[ids[4]].instance
    assert pred.shape == ref.shape and pred.min() >= 0
    quality = json.loads((fold / "train" / "sam" / "quality.json").read_text())
    assert quality["n"] >= 1 and all(0.0 <= v <= 1.0 for v in quality["mean"].values())
    assert np.isfinite(summary["metrics"]["dsb_score"]["mean"])
    assert json.loads((out / "run.json").read_text())["config"]["sam_backend"] == "lite_medsam"  # the default
