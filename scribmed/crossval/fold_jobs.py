"""A fold (or its SAM stage) as a job: the callable a submitit executor runs, and its record on disk.

The run directory is the single source of truth. Each job stage has two records, each with one
writer so that they never race::

    OUT/fold_k/jobs/<stage>.submitted.json   by the submitter: executor, job id, log files, time
    OUT/fold_k/jobs/<stage>.json             by the job: running (host, pid), finished or failed

for the stages ``prepare`` (the fold's stage before training, e.g. SAM pseudo labels) and
``train`` (training, prediction and evaluation). Both are written atomically. A job that
is preempted or reaches its time limit is requeued by submitit (:meth:`FoldJob.checkpoint`); the
requeued job calls the same fold again, which resumes from ``fold_k/train/last.pt`` (the runner's
resume path). The last fold job to finish merges the across-fold summary.

:mod:`scribmed.crossval.fold_status` reads these records for ``scribmed cv status``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from scribmed.runtime.files import atomic_write_text

__all__ = [
    "STAGES", "FoldJob", "job_record_path", "read_job_record", "read_submission", "update_job_record",
    "write_submission",
]

#: job stages of a fold, in the order they run
STAGES = ("prepare", "train")


def job_record_path(out: Path, fold: int, stage: str) -> Path:
    """``OUT/fold_k/jobs/<stage>.json``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return Path(out) / f"fold_{int(fold)}" / "jobs" / f"{stage}.json"


def _submission_path(out: Path, fold: int, stage: str) -> Path:
    record = job_record_path(out, fold, stage)
    return record.with_name(f"{stage}.submitted.json")


def write_submission(out: Path, fold: int, stage: str, **fields: Any) -> None:
    """The submitter's record of a job (``executor``, ``job_id``, ``stdout``, ``stderr``; time added)."""
    path = _submission_path(out, fold, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"fold": int(fold), "stage": stage, "submitted": time.time(), **fields}
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def read_submission(out: Path, fold: int, stage: str) -> Optional[dict[str, Any]]:
    """The submitter's record, or ``None``."""
    try:
        return json.loads(_submission_path(out, fold, stage).read_text())
    except (OSError, ValueError):
        return None


def read_job_record(out: Path, fold: int, stage: str) -> Optional[dict[str, Any]]:
    """The job record, or ``None`` when the job was never submitted (or the file is unreadable)."""
    try:
        return json.loads(job_record_path(out, fold, stage).read_text())
    except (OSError, ValueError):
        return None


def update_job_record(out: Path, fold: int, stage: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the record (created if needed) and write it atomically; returns it."""
    path = job_record_path(out, fold, stage)
    record = read_job_record(out, fold, stage) or {"fold": int(fold), "stage": stage}
    record.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
    return record


def _job_id() -> Optional[str]:
    """This process's scheduler job id (Slurm array jobs as ``ARRAY_TASK``), when there is one."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")


def _requeue_exit_code() -> int:
    """The exit status submitit's executors read as "requeue me" (local) or "preempted" (Slurm)."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

        return int(LOCAL_REQUEUE_RETURN_CODE)
    return -1


def _global_rank() -> int:
    for name in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class FoldJob:
    """Run one stage of one fold of a CV run; submitit's callable (picklable, requeueable).

    Args:
        run: ``run(fold, stage)`` does the work in this process (the ``scribmed cv`` command
            restricted to the fold; it skips finished work and resumes unfinished training).
        out: the run directory.
        fold: 1-based fold.
        stage: ``"prepare"`` or ``"train"``.
        merge_folds: folds of the run; when ``stage == "train"`` and every one of them is
            finished, the job merges the across-fold summary (empty: never).
        tasks: processes of the job (> 1: DistributedDataParallel across its tasks; submitit's
            environment is exported as torchrun's ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR``).
        threads: intra-op CPU threads of the job's process (``torch.set_num_threads`` and
            ``OMP_NUM_THREADS`` for its children, at most the cores the process may use), so jobs
            sharing a machine do not oversubscribe it; ``None`` leaves torch's default. Recorded in the job record: a CPU run's floating
            point sums depend on it, so the same fold trained with another thread count differs
            in the last digits (and, through training, slightly in its results).
    """

    def __init__(
        self,
        run: Callable[[int, str], Any],
        out: Path,
        fold: int,
        stage: str,
        merge_folds: Sequence[int] = (),
        tasks: int = 1,
        threads: Optional[int] = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.run = run
        self.out = Path(out)
        self.fold = int(fold)
        self.stage = stage
        self.merge_folds = tuple(int(k) for k in merge_folds)
        self.tasks = int(tasks)
        self.threads = None if threads is None else max(1, int(threads))

    def __repr__(self) -> str:
        return f"FoldJob(fold={self.fold}, stage={self.stage!r}, out={str(self.out)!r})"

    def __call__(self) -> str:
        if self.tasks > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        threads = None
        if self.threads is not None:
            import torch

            from scribmed.runtime.device import usable_cores

            threads = min(self.threads, usable_cores())  # never more than the cores this process may use
            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)
        writes = _global_rank() == 0
        started = time.time()
        if writes:
            update_job_record(self.out, self.fold, self.stage, state="running", host=socket.gethostname(),
                              pid=os.getpid(), job_id=_job_id(), started=started, ended=None, error=None,
                              threads=threads)
        try:
            self.run(self.fold, self.stage)
        except BaseException as exc:
            record = read_job_record(self.out, self.fold, self.stage) or {}
            if record.get("state") == "requeued" and float(record.get("requeued") or 0) >= started:
                # submitit's preemption handler ran (checkpoint() below) and exits by raising SystemExit
                # wherever the signal landed; code in between (e.g. torch.save) may have turned it into
                # another error. Either way the job is requeued: leave with the requeue's exit status.
                if isinstance(exc, SystemExit):
                    raise
                raise SystemExit(_requeue_exit_code()) from exc
            if writes:
                message = f"{type(exc).__name__}: {exc}".strip().splitlines()
                update_job_record(self.out, self.fold, self.stage, state="failed", ended=time.time(),
                                  error=message[0] if message else type(exc).__name__)
            raise
        if writes:
            update_job_record(self.out, self.fold, self.stage, state="finished", ended=time.time())
            if self.stage == "train" and self.merge_folds:
                self._merge_when_last()
        return f"fold {self.fold} {self.stage}: finished"

    def _merge_when_last(self) -> None:
        from scribmed.crossval.runner import FOLD_DONE, merge_folds

        if all((self.out / f"fold_{k}" / FOLD_DONE).exists() for k in self.merge_folds):
            merge_folds(self.out)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption / timeout hook: requeue the same job; the rerun resumes from ``last.pt``."""
        from submitit.helpers import DelayedSubmission

        if _global_rank() == 0:
            record = read_job_record(self.out, self.fold, self.stage) or {}
            update_job_record(self.out, self.fold, self.stage, state="requeued",
                              requeues=int(record.get("requeues", 0)) + 1, requeued=time.time())
        return DelayedSubmission(self, *args, **kwargs)
