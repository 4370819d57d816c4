"""A real one-node Slurm cluster for a test module (tests/cluster/slurm.sh), and the queue
queries the Slurm tests share.

Import with ``from slurm_cluster import running_cluster, ...`` (``tests/`` is on ``sys.path``
through its ``conftest.py``). Every module that needs the cluster starts its own, in its own
state folder and on its own ports, so two xdist workers never share one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from job_waiting import wait_for

__all__ = ["FAKE_SAM", "SCRIPT", "job_state", "queue_is_empty", "running_cluster", "squeue", "wait_for_jobs",
           "wait_until_idle"]

SCRIPT = Path(__file__).resolve().parent / "cluster" / "slurm.sh"
#: On ``PYTHONPATH`` of a job (``sbatch`` passes the submitting environment on), this folder's
#: ``sitecustomize.py`` gives the job the suite's SAM stand-in instead of LiteMedSAM.
FAKE_SAM = SCRIPT.parent / "fake_sam"


def _free_port_pair() -> int:
    """A free TCP port whose successor is free too (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


@contextlib.contextmanager
def running_cluster(state: Path) -> Iterator[str]:
    """Start a cluster with its state in ``state``, set ``SLURM_CONF`` in this process while the
    block runs (yielded too), and stop it afterwards. Skips the calling test where no cluster can
    start here (no root, no apt), with the script's one-line reason."""
    env = {**os.environ, "SCRIBMED_SLURM_STATE": str(state), "SCRIBMED_SLURM_PORT": str(_free_port_pair())}
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    if started.returncode == 3:
        pytest.skip(started.stderr.strip().splitlines()[-1])
    assert started.returncode == 0, started.stderr
    conf = started.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", conf)
            yield conf
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)


def squeue() -> str:
    """Every job Slurm still knows: id, state, reason."""
    return subprocess.run(["squeue", "--states=all", "-o", "%i %T %r"], capture_output=True, text=True).stdout


def job_state(job_id: str) -> str:
    """Slurm's state of one job (``PENDING``, ``RUNNING``, ``COMPLETED``, ...), empty once it is purged."""
    return subprocess.run(["squeue", "-h", "-j", job_id, "--states=all", "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def queue_is_empty() -> bool:
    """No job pending or running."""
    return not subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()


def wait_for_jobs(predicate: Callable[[], bool], what: str, timeout: float = 300.0,
                  run: Optional[Path] = None) -> None:
    """:func:`job_waiting.wait_for` on cluster jobs: a time-out shows the queue and, given the run
    folder ``run``, the end of its jobs' error logs."""

    def explain() -> str:
        logs = sorted((run / "logs").glob("*.err")) if run is not None else []
        return "squeue:\n" + squeue() + "".join(f"\n{p.name}: {p.read_text()[-800:]}" for p in logs)

    wait_for(predicate, timeout, what, poll=0.2, explain=explain)


def wait_until_idle(timeout: float = 120.0, what: str = "the jobs of an earlier test to end") -> None:
    """Until no job is pending or running (by default before a test: a job of the test before may
    still be ending, merging or exiting, after the files that test waited for exist)."""
    wait_for_jobs(queue_is_empty, what, timeout)
