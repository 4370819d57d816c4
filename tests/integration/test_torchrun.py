"""DDP inside a fold: ``torchrun --nproc_per_node 2 -m scribmed cv --fold 1`` with gloo on CPU.

Rank 0 alone writes the fold. How a DDP fold compares with one process of the same global batch
is tested once, on the Slurm cluster's two-task job (tests/cluster/test_slurm_cluster.py): both
launchers set up the same process group (both gave validation Dice 0.428 on this phantom fold at
80 iterations). Here the fold is short: what is checked is who writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scribmed.data.phantoms import write_phantom_dataset

FLAGS = ["--recipe", "dmpls", "--layout", "acdc-h5", "--fold", "1", "--iterations", "8", "--val-interval", "4",
         "--size", "32", "--device", "cpu", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "acdc"
    return write_phantom_dataset("cardiac", "acdc-h5", out, n_patients=5, seed=3, size=(72, 64), slices=(3, 4))


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [shutil.which("torchrun") or "torchrun"]


@pytest.fixture(scope="module")
def ddp_run(phantom, tmp_path_factory) -> tuple[Path, str]:
    """The fold trained by two gloo ranks under torchrun (4 slices each); its folder and stdout."""
    ddp = tmp_path_factory.mktemp("ddp_run") / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                         "MASTER_PORT")}
    done = subprocess.run([*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "scribmed", "cv", *FLAGS,
                           "--root", str(phantom), "--out", str(ddp), "--batch-size", "4"],
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return ddp, done.stdout


def test_two_gloo_ranks_write_the_fold_once(ddp_run):
    ddp, stdout = ddp_run
    # written once, by rank 0: one history entry per validation, one prediction per test case
    history = json.loads((ddp / "fold_1" / "train" / "history.json").read_text())
    assert [e["iteration"] for e in history["epochs"]] == [4, 8]
    record = json.loads((ddp / "fold_1" / "fold.json").read_text())
    assert record["iterations"] == 8
    assert len(list((ddp / "fold_1" / "predictions").glob("*.nii.gz"))) == record["cases"]["test"]
    assert stdout.count("summary: ") == 1  # rank 0 alone reports
    leftovers = [p.name for p in (ddp / "fold_1").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


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
