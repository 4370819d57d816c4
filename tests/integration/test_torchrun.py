"""torchrun and the recipes that do not train with DistributedDataParallel.

A fold trained by two real gloo ranks, rank 0 alone writing it and its result checked against one
process of the same global batch, runs on the Slurm cluster's two-task job
(tests/cluster/test_slurm_cluster.py); two ranks under torchrun itself run a bundle's DDP overlay
(tests/integration/bundles/test_bundles_samsp.py); ``torchrun -m scribmed cv`` as a group of one
runs docs/cluster.md's block (tests/integration/test_docs_cluster.py).
"""

from __future__ import annotations

import pytest


def test_instance_recipes_refuse_torchrun(tmp_path, monkeypatch, capsys):
    """A recipe whose trainer is single-process says so instead of training twice."""
    from scribmed.runtime import distributed as dist_utils
    from scribmed.crossval.runner import run_fold

    monkeypatch.setattr(dist_utils, "is_distributed", lambda: True)
    from scribmed.data.layouts import open_dataset
    from scribmed.data.phantoms.nuclei import write_nuclei_dataset
    from scribmed.data.splits import make_kfold_split, validate_split
    from scribmed.recipes import build

    root = tmp_path / "nuclei"
    write_nuclei_dataset(root, n_images=5, seed=0, size=(64, 64))
    ds = open_dataset("dsb2018", root)
    report = validate_split(make_kfold_split(ds.patients, k=5, seed=0), ds)
    with pytest.raises(Exception, match="does not train with DistributedDataParallel"):
        run_fold(build("contour_unet", iterations=2, device="cpu"), ds, report, 1, tmp_path / "run", progress=False)
