"""``scribmed cv status`` asks Slurm about a fold's job: ``sacct``, else ``squeue`` (no accounting)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scribmed.crossval.fold_jobs import update_job_record, write_submission
from scribmed.crossval.fold_status import fold_states

#: what ``sacct`` prints on a cluster that keeps no accounting (accounting_storage/none)
NO_ACCOUNTING = 'echo "Slurm accounting storage is disabled" >&2; exit 1'


def _slurm_tools(tmp_path: Path, monkeypatch, sacct: str, squeue: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("sacct", sacct), ("squeue", squeue)):
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def _running_slurm_fold(run: Path) -> None:
    """A one-fold run whose fold 1 job was submitted to Slurm and recorded itself running."""
    (run / "split.json").write_text('{"folds": [{"train": ["a"], "val": ["b"], "test": ["c"]}]}')
    write_submission(run, 1, "train", executor="slurm", job_id="77_0", submitted=time.time() - 10,
                     stderr=str(run / "logs" / "77_0_0_log.err"))
    update_job_record(run, 1, "train", state="running", job_id="77_0", started=time.time(), pid=1, host="node")


@pytest.mark.parametrize(("squeue", "state"), [
    ('echo RUNNING', "running"),
    ('echo PENDING', "pending"),
    ('echo CANCELLED', "failed"),
    ('echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1', "failed"),
])
def test_without_accounting_squeue_says_what_became_of_the_job(tmp_path, monkeypatch, squeue, state):
    _slurm_tools(tmp_path, monkeypatch, NO_ACCOUNTING, squeue)
    _running_slurm_fold(tmp_path)
    row = fold_states(tmp_path)[0]
    assert row["state"] == state and row["job_id"] == "77_0"
    if "Invalid" in squeue:
        assert "Slurm no longer knows job 77_0" in row["detail"]
    elif state == "failed":
        assert row["detail"].startswith("Slurm: CANCELLED")


def test_sacct_is_asked_first(tmp_path, monkeypatch):
    _slurm_tools(tmp_path, monkeypatch, "echo TIMEOUT", "echo RUNNING")
    _running_slurm_fold(tmp_path)
    row = fold_states(tmp_path)[0]
    assert row["state"] == "failed" and row["detail"].startswith("Slurm: TIMEOUT")


def test_a_controller_that_does_not_answer_leaves_the_record_as_it_is(tmp_path, monkeypatch):
    _slurm_tools(tmp_path, monkeypatch, NO_ACCOUNTING, 'echo "Unable to contact slurm controller" >&2; exit 1')
    _running_slurm_fold(tmp_path)
    assert fold_states(tmp_path)[0]["state"] == "running"
