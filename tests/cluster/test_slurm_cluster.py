"""``scribmed cv --executor slurm`` against a real one-node Slurm cluster (tests/cluster/slurm.sh).

The module starts the cluster (Debian's slurmctld, slurmd and munge; installed when absent), runs
real ``sbatch`` job arrays on phantom folds, and stops it. Where a cluster cannot start here (no
root, no apt) every test is skipped with the script's one-line reason. Jobs ask for one CPU each
(``--slurm-cpus-per-task 1``, so two run at once on two cores) and no GPU; the in-process
reference runs use one thread too, so the results are compared bit for bit.

A SAM stage as a job of its own, with its fold's train job held until it has succeeded, runs on
a cluster of its own with docs/cluster.md's commands (tests/integration/test_docs_cluster.py).
What a one-node cluster cannot show is left to the stand-in ``sbatch`` of
tests/integration/test_executors.py: the job scripts' GPU, partition and memory lines for a GPU
partition, and ``--slurm-setup`` lines (``module load``) this machine has no modules for.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from fold_outputs import fold_outputs
from job_folds import LONG_FLAGS, TINY_FLAGS, cv_args
from job_waiting import mid_training
from slurm_cluster import job_state, running_cluster, wait_for_jobs, wait_until_idle

from scribmed.cli import main
from scribmed.crossval.fold_jobs import read_job_record, read_submission
from scribmed.crossval.fold_status import fold_states

pytestmark = pytest.mark.slurm

JOB = ["--executor", "slurm", "--slurm-cpus-per-task", "1", "--slurm-gpus-per-node", "0", "--slurm-mem", "3G",
       "--slurm-timeout", "15"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The running cluster's ``SLURM_CONF`` (set in this process's environment for the module)."""
    with running_cluster(tmp_path_factory.mktemp("slurm")) as conf:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the references run as the jobs do, on one thread
        try:
            yield conf
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _idle_cluster(cluster):
    """Each test starts on an idle node."""
    wait_until_idle()


def test_five_folds_as_real_job_arrays_equal_the_sequential_run(cluster, jobs_phantom, tiny_five_folds, tmp_path,
                                                              capsys):
    run = tmp_path / "run"
    assert main(cv_args(jobs_phantom, run, *TINY_FLAGS, *JOB)) == 0
    out = capsys.readouterr().out
    array = read_submission(run, 1, "train")["job_id"].split("_")[0]
    assert all(f"fold {k} train: Slurm job {array}_{k - 1}" in out for k in range(1, 6))
    # while the array runs: every fold is queued, running or done, and the status command says so
    assert main(["cv", "status", str(run)]) == 0
    assert {r["state"] for r in fold_states(run)} <= {"pending", "running", "finished"}
    wait_for_jobs(lambda: (run / "summary.json").exists(), "the last fold job to merge the summary", run=run)
    rows = fold_states(run)
    assert [(r["state"], r["job_id"]) for r in rows] == [("finished", f"{array}_{k}") for k in range(5)]
    wait_for_jobs(lambda: {job_state(f"{array}_{k}") for k in range(5)} == {"COMPLETED"},
                  "every array task to end as COMPLETED", run=run)
    capsys.readouterr()
    assert main(["cv", "status", str(run)]) == 0
    assert "5 finished" in capsys.readouterr().out
    merged = json.loads((run / "summary.json").read_text())
    assert main(["cv", "merge", str(run), "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["across_folds"] == merged["across_folds"]
    # every fold equals the same fold run in one process, one after another
    for k in range(1, 6):
        assert fold_outputs(run, k) == fold_outputs(tiny_five_folds, k), f"fold {k}"
        assert read_job_record(run, k, "train")["threads"] == 1
    assert merged["across_folds"] == json.loads((tiny_five_folds / "summary.json").read_text())["across_folds"]


def test_preempted_and_cancelled_folds_resume_to_the_uninterrupted_results(cluster, jobs_phantom, long_reference,
                                                                          tmp_path, capsys):
    """Fold 1's job gets Slurm's preemption signal mid-training (``scancel --signal=USR2``, what
    ``--signal=USR2@120`` sends before a time limit or preemption): submitit checkpoints it and
    requeues it with ``scontrol requeue``, and it resumes from its last.pt. Fold 2's job is cancelled
    (``scancel``): ``cv status`` says failed, and the same command again (docs/cluster.md) submits
    it alone and it finishes from its last.pt."""
    run = tmp_path / "run"
    # one array task at a time: fold 2 starts once fold 1 is requeued, and fold 1 runs again once
    # fold 2 is cancelled, so each is caught mid-training whatever the machine's load
    argv = cv_args(jobs_phantom, run, *LONG_FLAGS, "--folds", "1,2", *JOB, "--slurm-array-parallelism", "1")
    assert main(argv) == 0
    jobs = {k: read_submission(run, k, "train")["job_id"] for k in (1, 2)}
    wait_for_jobs(lambda: mid_training(run, 1), "fold 1 to checkpoint", run=run)
    assert not (run / "fold_1" / "fold.json").exists()
    subprocess.run(["scancel", "--signal=USR2", jobs[1]], check=True)  # to the job steps, as Slurm signals
    # Slurm holds a requeued job for about two minutes (its begin time); the test lifts the hold
    wait_for_jobs(lambda: job_state(jobs[1]) == "PENDING", "fold 1's job to be requeued", run=run)
    subprocess.run(["scontrol", "update", f"JobId={jobs[1]}", "StartTime=now"], check=True)
    wait_for_jobs(lambda: mid_training(run, 2), "fold 2 to checkpoint", run=run)
    assert not (run / "fold_2" / "fold.json").exists()
    subprocess.run(["scancel", jobs[2]], check=True)
    wait_for_jobs(lambda: job_state(jobs[2]) == "CANCELLED", "fold 2's job to be cancelled", run=run)
    wait_for_jobs(lambda: (run / "fold_1" / "fold.json").exists(), "the requeued fold 1 to finish", run=run)
    assert json.loads((run / "fold_1" / "train" / "history.json").read_text())["resumed_from"]
    assert read_job_record(run, 1, "train")["requeues"] == 1
    assert fold_outputs(run, 1) == fold_outputs(long_reference, 1)
    rows = {r["fold"]: r for r in fold_states(run)}
    assert rows[1]["state"] == "finished"
    assert rows[2]["state"] == "failed" and "CANCELLED" in rows[2]["detail"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 2 train: Slurm job" in out and "fold 1 train" not in out
    wait_for_jobs(lambda: (run / "summary.json").exists(), "the resubmitted fold 2 to finish and merge", run=run)
    assert json.loads((run / "fold_2" / "train" / "history.json").read_text())["resumed_from"]
    assert fold_outputs(run, 2) == fold_outputs(long_reference, 2)
    assert [r["state"] for r in fold_states(run)] == ["finished"] * 2 + ["not started"] * 3


#: DDP fold vs one process with the same global batch, validation Dice (absolute): about the seed
#: spread of this phantom fold (docs/cluster.md), which each rank's BatchNorm statistics and dropout
#: draws are.
DDP_DICE_TOLERANCE = 0.1
DDP_FLAGS = ["--fold", "1", "--iterations", "80", "--val-interval", "40", "--size", "32", "--device", "cpu",
             "--seed", "0"]


def test_two_tasks_per_node_train_one_fold_with_ddp(cluster, jobs_phantom, tmp_path):
    """``--slurm-tasks-per-node 2``: srun starts two ranks (gloo on the CPU) of one fold job; rank 0
    alone writes the fold (one history entry per validation, one prediction per test case, one
    summary line, no temporary files left), and it matches one process with the same global batch
    (4 + 4 = 8). torchrun's ranks join the same process group from its environment
    (test_bundles_samsp.py runs two)."""
    run = tmp_path / "ddp"
    argv = cv_args(jobs_phantom, run, *DDP_FLAGS, "--batch-size", "4", *JOB, "--slurm-tasks-per-node", "2")
    assert main([a for a in argv if a != "--quiet"]) == 0  # the jobs report progress to their logs
    job = read_submission(run, 1, "train")["job_id"]
    wait_for_jobs(lambda: (run / "fold_1" / "fold.json").exists() and job_state(job) == "COMPLETED", "the DDP fold",
                  run=run)
    logs = sorted(p.name for p in (run / "logs").glob(f"{job}_*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # one log per rank
    assert "global_rank=1(2)" in (run / "logs" / f"{job}_1_log.out").read_text()
    history = json.loads((run / "fold_1" / "train" / "history.json").read_text())
    assert [e["iteration"] for e in history["epochs"]] == [40, 80]
    record = json.loads((run / "fold_1" / "fold.json").read_text())
    assert record["iterations"] == 80
    assert len(list((run / "fold_1" / "predictions").glob("*.nii.gz"))) == record["cases"]["test"]
    said = [(run / "logs" / f"{job}_{rank}_log.err").read_text() for rank in (0, 1)]
    assert "DMPLS" in said[0] and said[1] == "", said  # rank 0 alone reports progress and results
    assert [p.name for p in (run / "fold_1").rglob("*") if ".tmp" in p.name] == []
    single = tmp_path / "single"
    assert main(cv_args(jobs_phantom, single, *DDP_FLAGS, "--batch-size", "8")) == 0
    got, want = (json.loads((r / "fold_1" / "train" / "history.json").read_text())["epochs"][-1]["val_mean_dice"]
                 for r in (run, single))
    assert want > 0.3, f"the single-process run did not learn ({want})"
    assert abs(got - want) <= DDP_DICE_TOLERANCE, (got, want)
