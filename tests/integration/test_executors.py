"""Folds as jobs: the local executor equals the sequential run, a killed job resumes to the same
results, and ``scribmed cv status`` reads the run directory.

Slurm itself, preemption included, is tested on a real one-node cluster
(tests/cluster/test_slurm_cluster.py). What a
one-node cluster cannot show stays here, with a stand-in ``sbatch`` that records the job scripts:
the lines for a GPU partition (``--gpus-per-node``, ``--partition``, ``--mem``) and
``--slurm-setup`` lines (``module load``) on a machine without GPUs or environment modules, a
resubmission's ``afterok`` dependency, and a job's error record written by submitit's entry point
in this process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import torch

from fold_outputs import fold_outputs
from job_folds import LONG_FLAGS, TINY_FLAGS, cv_args
from job_waiting import mid_training, wait_for

from scribmed.cli import main
from scribmed.crossval.executors import SlurmOptions, last_log_line, plan_jobs
from scribmed.crossval.fold_jobs import read_job_record, read_submission
from scribmed.crossval.fold_status import fold_states, format_status


@pytest.fixture(scope="module", autouse=True)
def _one_thread_everywhere():
    """Every run of this module, in-process and in jobs, on one CPU thread: jobs get their share of the
    threads of the process that starts them, and a CPU result depends on its thread count, so the
    comparisons with the sequential runs need the same count on both sides (xdist workers run one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_worker_then_rerun_finishes_with_the_same_results(jobs_phantom, long_reference, tmp_path):
    """SIGKILL one job mid-fold: the command reports it failed, status names it, a rerun resumes it.

    Also the local executor equals the sequential run: fold 2 runs undisturbed beside the killed
    fold 1 (two workers), fold 1 resumes in a second local run, and both folds' results, job
    records and merged summary equal the sequential reference's; a third run finds nothing to do.
    The command runs in a thread of the test's process (its jobs are processes of their own)."""
    run = tmp_path / "run"
    argv = cv_args(jobs_phantom, run, *LONG_FLAGS, "--folds", "1,2", "--executor", "local", "--workers", "2",
                   "--no-merge")
    outcome: dict[str, object] = {}

    def command() -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            outcome["code"] = main(argv)
        outcome["err"] = err.getvalue()

    thread = threading.Thread(target=command, daemon=True)
    thread.start()
    wait_for(lambda: mid_training(run, 1), 240.0, "fold 1 to checkpoint")
    assert not (run / "fold_1" / "fold.json").exists()
    os.kill(int(read_job_record(run, 1, "train")["pid"]), signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and outcome["code"] == 1
    err = str(outcome["err"])
    assert "did not finish" in err and "fold 1 train" in err and "rerun the same command" in err
    rows = {r["fold"]: r for r in fold_states(run)}
    assert rows[1]["state"] == "failed" and "killed" in rows[1]["detail"]
    assert rows[2]["state"] == "finished"
    assert "fold 1 log:" in format_status(list(rows.values()))
    # the rerun submits fold 1 only, which resumes from its last.pt
    assert plan_jobs(run, [1, 2], has_prepare=False) == [(1, "train")]
    rerun = cv_args(jobs_phantom, run, *LONG_FLAGS, "--folds", "1,2", "--executor", "local")  # merges this time
    assert main(rerun) == 0
    history = json.loads((run / "fold_1" / "train" / "history.json").read_text())
    assert history["resumed_from"], "fold 1 should have resumed from its checkpoint"
    # every fold's results equal the sequential run's, and the summary is merged
    for k in (1, 2):
        assert fold_outputs(run, k) == fold_outputs(long_reference, k)
        record = read_job_record(run, k, "train")
        assert record["state"] == "finished" and record["job_id"] == read_submission(run, k, "train")["job_id"]
    assert json.loads((run / "summary.json").read_text())["across_folds"] == \
        json.loads((long_reference / "summary.json").read_text())["across_folds"]
    assert [r["state"] for r in fold_states(run)] == ["finished"] * 2 + ["not started"] * 3  # folds 3-5 not run
    # a rerun finds nothing to do
    assert plan_jobs(run, (1, 2), has_prepare=False) == []
    assert main(rerun) == 0


@pytest.fixture()
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """A stand-in ``sbatch`` (records the script, answers like Slurm) and ``srun`` on the PATH."""
    bindir, record = tmp_path / "bin", tmp_path / "sbatch"
    bindir.mkdir()
    record.mkdir()
    (bindir / "sbatch").write_text(
        "#!/bin/sh\n"
        'n=$(ls "$FAKE_SLURM_DIR" | grep -c script)\n'
        "id=$((4242 + n))\n"
        'cp "$1" "$FAKE_SLURM_DIR/script_$id.sh"\n'
        'echo "Submitted batch job $id"\n'
    )
    (bindir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(record))
    return record


def test_slurm_arrays_scripts_and_dependency(jobs_phantom, tmp_path, fake_slurm, capsys):
    """SAM-SP on five folds: a prepare array, then a train array that waits task by task for it."""
    run = tmp_path / "run"
    argv = ["cv", "--recipe", "samsp", "--layout", "acdc-h5", "--root", str(jobs_phantom), "--out", str(run),
            "--quiet", "--iterations", "60000", "--executor", "slurm", "--slurm-partition", "gpu",
            "--slurm-gpus-per-node", "1", "--slurm-cpus-per-task", "6", "--slurm-mem", "48G",
            "--slurm-timeout", "720", "--slurm-array-parallelism", "3",
            "--slurm-setup", "module load cuda/12.4", "--slurm-setup", "source ~/venvs/scribmed/bin/activate"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 1 prepare: Slurm job 4242_0" in out and "fold 5 train: Slurm job 4243_4" in out
    assert f"scribmed cv status {run}" in out
    prepare = (fake_slurm / "script_4242.sh").read_text()
    train = (fake_slurm / "script_4243.sh").read_text()
    for script in (prepare, train):
        for line in ("#SBATCH --array=0-4%3", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --cpus-per-task=6", "#SBATCH --mem=48G", "#SBATCH --time=720",
                     "#SBATCH --signal=USR2@120", "module load cuda/12.4", "source ~/venvs/scribmed/bin/activate",
                     f"#SBATCH --error={run}/logs/%A_%a_0_log.err"):
            assert line in script, line
    assert "--dependency" not in prepare
    assert "#SBATCH --dependency=aftercorr:4242" in train
    rows = fold_states(run)
    assert [(r["state"], r["stage"], r["job_id"]) for r in rows] == \
        [("pending", "prepare", f"4242_{k}") for k in range(5)]
    # the same command again: the queued jobs are not submitted twice
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fold 3: prepare job 4242_2 is pending; not submitted again" in out
    assert sorted(p.name for p in fake_slurm.iterdir()) == ["script_4242.sh", "script_4243.sh"]
    assert main([*argv, "--folds", "2", "--resubmit"]) == 0
    assert (fake_slurm / "script_4244.sh").exists() and "#SBATCH --dependency=afterok:4244" in \
        (fake_slurm / "script_4245.sh").read_text()


def test_slurm_failure_is_reported_with_its_error(jobs_phantom, tmp_path, fake_slurm, monkeypatch):
    """The job fails on the node (an unreadable last.pt): its record names the error.

    submitit's job entry point (``python -m submitit.core._submit``, what the node runs) runs here as
    its ``process_job`` in this process,
    with the task's environment; the signal handlers it installs are restored afterwards."""
    from submitit.core.submission import process_job

    run = tmp_path / "run"
    assert main(cv_args(jobs_phantom, run, *TINY_FLAGS, "--fold", "1", "--executor", "slurm")) == 0
    (run / "fold_1" / "train").mkdir(parents=True)
    (run / "fold_1" / "train" / "last.pt").write_bytes(b"not a checkpoint")
    for var, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
                       "SUBMITIT_FOLDER": ""}.items():  # process_job sets SUBMITIT_FOLDER: restored after the test
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(tmp_path)
    signals = (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1, signal.SIGUSR2)
    handlers = {s: signal.getsignal(s) for s in signals}
    try:
        with pytest.raises(Exception):  # the job fails: the entry point exits with the error
            process_job(run / "logs")
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    row = fold_states(run)[0]
    assert row["state"] == "failed" and "last.pt" in row["detail"]


def test_slurm_without_a_cluster_is_a_clear_error(jobs_phantom, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    assert main(cv_args(jobs_phantom, tmp_path / "run", *TINY_FLAGS, "--executor", "slurm")) == 1
    assert "srun" in capsys.readouterr().err


def test_missing_submitit_is_a_clear_error(jobs_phantom, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(cv_args(jobs_phantom, tmp_path / "run", *TINY_FLAGS, "--executor", "local")) == 1
    assert "pip install 'scribmed[cluster]'" in capsys.readouterr().err


def test_plan_jobs_skips_finished_work(tmp_path):
    (tmp_path / "fold_1").mkdir()
    (tmp_path / "fold_1" / "fold.json").write_text("{}")
    (tmp_path / "fold_2").mkdir()
    (tmp_path / "fold_2" / "prepare.json").write_text("{}")
    assert plan_jobs(tmp_path, [1, 2, 3], has_prepare=True) == [(2, "train"), (3, "prepare"), (3, "train")]
    assert plan_jobs(tmp_path, [1, 2, 3], has_prepare=False) == [(2, "train"), (3, "train")]


def test_slurm_options_are_checked():
    params = SlurmOptions(partition="gpu", mem="32G", setup=["module load cuda"]).parameters()
    assert params["partition"] == "gpu" and params["mem"] == "32G" and params["gpus_per_node"] == 1
    assert params["setup"] == ["module load cuda"] and params["time"] == 1440
    with pytest.raises(Exception, match="slurm-timeout"):
        SlurmOptions(timeout_min=0).parameters()
    with pytest.raises(Exception, match="tasks-per-node"):
        SlurmOptions(tasks_per_node=0).parameters()


def test_last_log_line_reads_progress_bars(tmp_path):
    log = tmp_path / "job.err"
    log.write_text("loading\nit 1/10\rit 2/10\rRuntimeError: out of memory\n\n")
    assert last_log_line(log) == "RuntimeError: out of memory"
    assert last_log_line(tmp_path / "missing.err") is None


def test_status_of_a_fresh_run_and_of_a_non_run(jobs_phantom, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(cv_args(jobs_phantom, run, *TINY_FLAGS, "--fold", "1", "--stage", "prepare")) == 0
    assert main(["cv", "status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "5 not started" in out and "prepare stage done" in out
    assert main(["cv", "status", str(tmp_path)]) == 1
    assert "not a cross-validation run directory" in capsys.readouterr().err
