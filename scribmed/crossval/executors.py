"""Folds as jobs on existing engines: submitit's local executor (a pool on this machine) or Slurm.

``scribmed cv --executor local|slurm`` plans the jobs of a run (:func:`plan_jobs`: one
``prepare`` job per fold whose recipe has a stage before training, e.g. SAM pseudo labels, and one
``train`` job per fold; finished work is left out), then

* :func:`run_local` keeps up to ``workers`` jobs running at once on this machine, one GPU per job
  when there are GPUs, and waits for them (a fold's ``train`` job starts when its ``prepare``
  job has finished);
* :func:`submit_slurm` submits two job arrays (``prepare``, then ``train`` depending on it) and
  returns: the jobs merge the summary themselves when the last fold finishes.

Jobs are :class:`~scribmed.crossval.fold_jobs.FoldJob`\\ s; the run directory holds their records
and logs (``OUT/logs/<job id>_<task>_log.{out,err}``). Nothing here schedules: submitit and Slurm do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from scribmed.data.errors import DataError
from scribmed.runtime.progress import progress_bar
from scribmed.crossval.fold_jobs import (
    FoldJob,
    read_job_record,
    update_job_record,
    write_submission,
)

__all__ = ["EXECUTORS", "JobFailure", "SlurmOptions", "plan_jobs", "require_submitit", "run_local", "submit_slurm"]

EXECUTORS = ("sequential", "local", "slurm")

Job = tuple[int, str]  # (1-based fold, stage)


def require_submitit() -> Any:
    """The ``submitit`` module, or a one-line error saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise DataError(None, "--executor local/slurm needs the submitit package: pip install 'scribmed[cluster]' "
                        "(or pip install submitit)") from None
    return submitit


def plan_jobs(out: Path, folds: Sequence[int], has_prepare: bool) -> list[Job]:
    """The jobs still to run, in order: ``(fold, "prepare")`` when the recipe has a stage before
    training and it is not finished, then ``(fold, "train")``; folds with ``fold.json`` are done."""
    from scribmed.crossval.runner import FOLD_DONE, PREPARE_DONE

    jobs: list[Job] = []
    for k in folds:
        fold_dir = Path(out) / f"fold_{k}"
        if (fold_dir / FOLD_DONE).exists():
            continue
        if has_prepare and not (fold_dir / PREPARE_DONE).exists():
            jobs.append((k, "prepare"))
        jobs.append((k, "train"))
    return jobs


@dataclass
class JobFailure:
    """A job that did not finish: which, why (the error or the last log line) and where its log is."""

    fold: int
    stage: str
    reason: str
    log: Optional[str] = None

    def __str__(self) -> str:
        where = f" (log: {self.log})" if self.log else ""
        return f"fold {self.fold} {self.stage}: {self.reason}{where}"


def last_log_line(path: Optional[str | Path]) -> Optional[str]:
    """The last non-empty line of a log (progress bars' carriage returns count as line ends)."""
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else None


def _job_paths(job: Any) -> tuple[Optional[str], Optional[str]]:
    try:
        return str(job.paths.stdout), str(job.paths.stderr)
    except Exception:  # pragma: no cover - an executor without paths
        return None, None


def run_local(
    jobs: Sequence[Job],
    make_job: Callable[[int, str], FoldJob],
    out: Path,
    workers: int = 1,
    gpus: Sequence[int] = (),
    timeout_min: float = 60 * 24 * 7,
    poll_s: float = 1.0,
    progress: bool = True,
    max_requeues: int = 3,
    on_submit: Optional[Callable[[int, str, Any], None]] = None,
) -> list[JobFailure]:
    """Run ``jobs`` with submitit's :class:`LocalExecutor`, at most ``workers`` at once; wait for all.

    Args:
        jobs: from :func:`plan_jobs`.
        make_job: the :class:`FoldJob` of ``(fold, stage)``.
        out: run directory (logs in ``out/logs/``).
        workers: jobs at once.
        gpus: GPU indices to hand out, one per running job (empty: CPU jobs). With GPUs,
            ``workers`` may not exceed their number.
        timeout_min: a job's time limit (submitit signals it, then requeues it from ``last.pt``).
        max_requeues: requeues of a job after time-outs or preemption signals.
        poll_s: seconds between looks at the running jobs.
        on_submit: called with ``(fold, stage, job)`` after each submission (tests use it).

    Returns:
        The jobs that failed (empty when all finished). A ``train`` job whose ``prepare`` job
        failed is not started.
    """
    submitit = require_submitit()
    if workers < 1:
        raise DataError(None, f"--workers must be >= 1, got {workers}")
    if gpus and workers > len(gpus):
        raise DataError(None, f"--workers {workers} but only {len(gpus)} GPU(s) visible: one GPU per job")
    waiting = list(jobs)
    running: dict[Job, tuple[Any, Optional[int]]] = {}
    done: set[Job] = set()
    failures: list[JobFailure] = []
    free = list(gpus)
    bar = progress_bar(total=len(jobs), desc="cv jobs", unit="job", disable=not (progress and jobs))
    try:
        while waiting or running:
            for item in list(waiting):
                if len(running) >= workers:
                    break
                fold, stage = item
                if stage == "train" and any(f.fold == fold and f.stage == "prepare" for f in failures):
                    waiting.remove(item)
                    failures.append(JobFailure(fold, stage, "not started: its prepare job failed"))
                    continue
                if stage == "train" and ((fold, "prepare") in running or (fold, "prepare") in waiting):
                    continue
                gpu = free.pop(0) if gpus else None
                executor = submitit.LocalExecutor(folder=Path(out) / "logs", max_num_timeout=max_requeues)
                executor.update_parameters(timeout_min=timeout_min, gpus_per_node=0 if gpu is None else 1,
                                           visible_gpus=() if gpu is None else (int(gpu),))
                job = executor.submit(make_job(fold, stage))
                stdout, stderr = _job_paths(job)
                write_submission(out, fold, stage, executor="local", job_id=str(job.job_id), stdout=stdout,
                                 stderr=stderr, gpu=gpu)
                if on_submit is not None:
                    on_submit(fold, stage, job)
                running[item] = (job, gpu)
                waiting.remove(item)
            for item, (job, gpu) in list(running.items()):
                if not job.done():
                    continue
                del running[item]
                if gpu is not None:
                    free.append(gpu)
                bar.update(1)
                failure = _local_outcome(out, item, job)
                if failure is None:
                    done.add(item)
                else:
                    failures.append(failure)
            if waiting or running:
                time.sleep(poll_s)
    finally:
        bar.close()
    return failures


def _local_outcome(out: Path, item: Job, job: Any) -> Optional[JobFailure]:
    """``None`` when the job finished, else why not (the record's error or the log's last line)."""
    fold, stage = item
    _, stderr = _job_paths(job)
    record = read_job_record(out, fold, stage) or {}
    if record.get("state") == "finished":
        return None
    reason = record.get("error") if record.get("state") == "failed" else None
    if reason is None:  # died without recording it (killed, out of memory)
        tail = last_log_line(stderr)
        reason = "the job's process ended without a result (killed?)" + (f"; last log line: {tail}" if tail else "")
        update_job_record(out, fold, stage, state="failed", ended=time.time(), error=reason)
    return JobFailure(fold, stage, reason, stderr)


@dataclass
class SlurmOptions:
    """Resources of every job of a ``--executor slurm`` run (``scribmed cv --slurm-*`` flags).

    Attributes:
        partition: Slurm partition (``None``: the cluster's default).
        gpus_per_node: GPUs per job (one fold per GPU: 1).
        tasks_per_node: processes per job; more than 1 trains the fold with DDP across them
            (set it to ``gpus_per_node``).
        cpus_per_task: CPU cores per process (data loading, SAM prompting).
        mem: memory per job, Slurm syntax (``"32G"``).
        timeout_min: time limit per job in minutes; a job that reaches it is requeued (at most
            ``max_requeues`` times) and resumes from its last checkpoint.
        array_parallelism: array tasks running at once.
        setup: shell lines run before the job (``module load ...``, ``conda activate ...``).
        max_requeues: requeues after preemption or time-out.
        job_name: Slurm job name.
    """

    partition: Optional[str] = None
    gpus_per_node: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 8
    mem: Optional[str] = None
    timeout_min: int = 24 * 60
    array_parallelism: int = 5
    setup: list[str] = field(default_factory=list)
    max_requeues: int = 3
    job_name: str = "scribmed-cv"

    def parameters(self) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` keywords."""
        if self.tasks_per_node < 1 or self.gpus_per_node < 0 or self.cpus_per_task < 1:
            raise DataError(None, "--slurm-tasks-per-node and --slurm-cpus-per-task must be >= 1, "
                            "--slurm-gpus-per-node >= 0")
        if self.timeout_min < 1 or self.array_parallelism < 1:
            raise DataError(None, "--slurm-timeout and --slurm-array-parallelism must be >= 1")
        params: dict[str, Any] = {
            "job_name": self.job_name, "time": int(self.timeout_min), "gpus_per_node": int(self.gpus_per_node),
            "ntasks_per_node": int(self.tasks_per_node), "cpus_per_task": int(self.cpus_per_task),
            "array_parallelism": int(self.array_parallelism), "setup": list(self.setup),
            "signal_delay_s": 120,
        }
        if self.partition:
            params["partition"] = self.partition
        if self.mem:
            params["mem"] = self.mem
        return params


def _dependency(prepare_jobs: Sequence[Any], prepare_folds: Sequence[int], train_folds: Sequence[int]) -> str:
    """Slurm dependency of the train array: task by task when both arrays cover the same folds
    (``aftercorr``), else on every prepare job (``afterok``)."""
    ids = [str(j.job_id) for j in prepare_jobs]
    if len(ids) > 1 and list(prepare_folds) == list(train_folds) and all("_" in i for i in ids):
        return f"aftercorr:{ids[0].split('_')[0]}"
    return "afterok:" + ":".join(ids)


def submit_slurm(
    jobs: Sequence[Job],
    make_job: Callable[[int, str], FoldJob],
    out: Path,
    options: SlurmOptions,
) -> list[dict[str, Any]]:
    """Submit ``jobs`` as up to two Slurm job arrays (``prepare``, then ``train`` after it); return
    one row per job (fold, stage, job id, log). Does not wait."""
    submitit = require_submitit()
    out = Path(out)
    rows: list[dict[str, Any]] = []
    prepare = [k for k, s in jobs if s == "prepare"]
    train = [k for k, s in jobs if s == "train"]
    submitted: dict[str, list[Any]] = {}
    for stage, folds in (("prepare", prepare), ("train", train)):
        if not folds:
            continue
        try:
            executor = submitit.SlurmExecutor(folder=out / "logs", max_num_timeout=options.max_requeues)
        except RuntimeError as exc:  # no srun: not on a Slurm cluster
            raise DataError(None, f"--executor slurm: {exc} (run it on the cluster's login node)") from None
        executor.update_parameters(**options.parameters())
        if stage == "train" and submitted.get("prepare"):
            executor.update_parameters(additional_parameters={
                "dependency": _dependency(submitted["prepare"], prepare, train), "kill_on_invalid_dep": "yes"})
        with executor.batch():
            handles = [executor.submit(make_job(k, stage)) for k in folds]
        submitted[stage] = handles
        for k, job in zip(folds, handles):
            stdout, stderr = _job_paths(job)
            write_submission(out, k, stage, executor="slurm", job_id=str(job.job_id), stdout=stdout, stderr=stderr)
            rows.append({"fold": k, "stage": stage, "job_id": str(job.job_id), "log": stderr})
    return rows
