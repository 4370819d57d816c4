"""Waiting on fold jobs that run in processes of their own (local executor, Slurm), for the tests.

Import with ``from job_waiting import mid_training, wait_for`` (``tests/`` is on ``sys.path``
through its ``conftest.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from scribmed.crossval.fold_jobs import read_job_record

__all__ = ["mid_training", "wait_for"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05,
             explain: Optional[Callable[[], str]] = None) -> None:
    """Poll ``predicate`` every ``poll`` seconds; after ``timeout`` seconds fail naming ``what``,
    with ``explain()`` (e.g. the scheduler's queue and the jobs' logs) appended."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(poll)


def mid_training(run: Path, k: int) -> bool:
    """Fold ``k``'s train job is running and has written its first checkpoint (``last.pt``)."""
    rec = read_job_record(run, k, "train") or {}
    return rec.get("state") == "running" and (Path(run) / f"fold_{k}" / "train" / "last.pt").exists()
