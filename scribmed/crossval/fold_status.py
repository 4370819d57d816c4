"""``scribmed cv status DIR``: each fold's state, read from the run directory alone.

A fold is ``finished`` when ``fold_k/fold.json`` exists. Otherwise its job records
(:mod:`scribmed.crossval.fold_jobs`) say whether a job is ``pending`` (submitted, not started),
``running`` (with its job id, and the training iteration reached), ``failed`` (with the error or
the last line of its log) or ``requeued``. A fold without job records is ``not started``, or
``unfinished`` when it has a training checkpoint (run by a plain ``scribmed cv``, which keeps no
job record: it may be running there or have stopped). A local job
whose process is gone without a result is reported ``failed``. On a cluster the scheduler is
asked too (``sacct``, or ``squeue`` where the cluster keeps no accounting): a job Slurm still holds
is ``pending``/``running`` whatever its record says, and one it cancelled, killed or no longer
knows is ``failed``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from scribmed.data.errors import DataError
from scribmed.crossval.fold_jobs import STAGES, read_job_record, read_submission

__all__ = ["ACTIVE", "active_folds", "fold_states", "format_status"]

#: states of a job that is still in the scheduler's hands
ACTIVE = ("pending", "running", "requeued")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def _slurm_state(job_id: str) -> Optional[str]:
    """Slurm's state of a job (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ...), if it can say.

    ``sacct`` first; on a cluster without accounting (``sacct`` answers nothing) ``squeue
    --states=all``, which knows a job for ``MinJobAge`` seconds after it ended; a job id the
    controller does not know at all is ``GONE`` (ended and purged). ``None``: no Slurm to ask.
    """
    for argv in (["sacct", "-j", job_id, "-n", "-X", "-P", "-o", "State"],
                 ["squeue", "-h", "-j", job_id, "--states=all", "-o", "%T"]):
        if not shutil.which(argv[0]):
            continue
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        states = [ln.split()[0] for ln in done.stdout.splitlines() if ln.strip()]
        if states:
            return states[0]
        if argv[0] == "squeue" and "invalid job id" in done.stderr.lower():
            return "GONE"
    return None


def _iteration(fold_dir: Path) -> Optional[int]:
    """The last validated training iteration of the fold (from any ``history.json`` under it)."""
    best = None
    for path in fold_dir.glob("train/**/history.json"):
        try:
            hist = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows = hist.get("epochs") if isinstance(hist, dict) else None
        if isinstance(rows, list) and rows and isinstance(rows[-1], dict) and "iteration" in rows[-1]:
            best = max(best or 0, int(rows[-1]["iteration"]))
    return best


def _stage_state(out: Path, fold: int, stage: str) -> Optional[dict[str, Any]]:
    """The state of one job stage from its two records (``None``: never submitted or run)."""
    from scribmed.crossval.executors import last_log_line

    sub = read_submission(out, fold, stage)
    rec = read_job_record(out, fold, stage)
    if sub is None and rec is None:
        return None
    started = (rec or {}).get("started") or 0
    job_id = (rec or {}).get("job_id") or (sub or {}).get("job_id")
    log = (sub or {}).get("stderr")
    row: dict[str, Any] = {"stage": stage, "job_id": job_id, "executor": (sub or {}).get("executor"), "log": log}
    if rec is None or (sub is not None and float(sub.get("submitted", 0)) > float(started)):
        row["state"] = "pending"  # submitted (again) and not started yet
        if row["executor"] == "local" and not _pid_alive(job_id):
            row["state"], row["detail"] = "failed", "submitted but never started (its local executor ended)"
    else:
        row["state"] = rec.get("state", "running")
        if row["state"] == "failed":
            row["detail"] = rec.get("error") or last_log_line(log)
        elif row["state"] == "running" and rec.get("host") == socket.gethostname() and \
                (sub or {}).get("executor") != "slurm" and not _pid_alive(rec.get("pid")):
            row["state"] = "failed"
            tail = last_log_line(log)
            row["detail"] = "the job's process is gone without a result" + (f"; last log line: {tail}" if tail else "")
    if row["executor"] == "slurm" and job_id and row["state"] in ("pending", "running", "requeued"):
        slurm = _slurm_state(str(job_id))
        if slurm in ("PENDING", "REQUEUED"):
            row["state"] = "pending"
        elif slurm == "RUNNING":
            row["state"] = "running"
        elif slurm == "GONE":
            row["state"] = "failed"
            row["detail"] = f"Slurm no longer knows job {job_id}; last log line: {last_log_line(log)}"
        elif slurm and slurm not in ("COMPLETED", "COMPLETING"):
            row["state"], row["detail"] = "failed", f"Slurm: {slurm}; last log line: {last_log_line(log)}"
    return row


def fold_states(out: Path) -> list[dict[str, Any]]:
    """One row per fold of the run: ``fold``, ``state``, ``stage``, ``job_id``, ``detail``, ``log``.

    Raises:
        DataError: ``out`` is not a CV run directory (no ``split.json``).
    """
    from scribmed.crossval.runner import FOLD_DONE, PREPARE_DONE, read_fold_record

    out = Path(out)
    split = out / "split.json"
    if not split.is_file():
        raise DataError(out, "not a cross-validation run directory (no split.json)")
    try:
        num_folds = len(json.loads(split.read_text())["folds"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(split, "unreadable split file") from None
    rows = []
    for k in range(1, num_folds + 1):
        fold_dir = out / f"fold_{k}"
        if (fold_dir / FOLD_DONE).exists():
            record = read_fold_record(fold_dir)
            job = read_job_record(out, k, "train") or {}
            rows.append({"fold": k, "state": "finished", "stage": "train", "job_id": job.get("job_id"),
                         "detail": f"checkpoint {record.get('checkpoint_policy')}", "log": None})
            continue
        states = [s for s in (_stage_state(out, k, st) for st in STAGES) if s is not None]
        active = next((s for s in states if s["state"] != "finished"), None)  # the first stage not done
        if active is None:
            prepared = (fold_dir / PREPARE_DONE).exists()
            it = _iteration(fold_dir)
            detail = f"iteration {it}" if it is not None else ("prepare stage done" if prepared else None)
            rows.append({"fold": k, "state": "not started" if it is None else "unfinished", "stage": None,
                         "job_id": None, "detail": detail, "log": None})
            continue
        if active["state"] == "running" and active["stage"] == "train":
            it = _iteration(fold_dir)
            if it is not None:
                active.setdefault("detail", f"iteration {it}")
        rows.append({"fold": k, "detail": None, **active})
    return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`fold_states` (one line per fold, failures with their log)."""
    header = ("fold", "state", "stage", "job", "detail")
    table = [header] + [(str(r["fold"]), r["state"], r.get("stage") or "-", str(r.get("job_id") or "-"),
                         str(r.get("detail") or "")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    logs = [f"fold {r['fold']} log: {r['log']}" for r in rows if r["state"] == "failed" and r.get("log")]
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join([*lines, *logs, summary]) + "\n"


def active_folds(out: Path, folds: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The folds among ``folds`` whose job is still pending, running or requeued (their status rows).

    A rerun of ``scribmed cv --executor ...`` leaves them alone instead of submitting them twice.
    """
    if not (Path(out) / "split.json").is_file():
        return {}
    wanted = set(int(k) for k in folds)
    return {r["fold"]: r for r in fold_states(out) if r["fold"] in wanted and r["state"] in ACTIVE}
