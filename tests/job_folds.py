"""The phantom and the budgets the executor and Slurm tests run fold jobs at, in one place, so the
uninterrupted reference folds they compare with are computed once per test run (conftest's
``jobs_phantom`` and ``long_reference``).

Import with ``from job_folds import LONG_FLAGS, cv_args`` (``tests/`` is on ``sys.path`` through its
``conftest.py``).
"""

from __future__ import annotations

__all__ = ["LONG", "LONG_FLAGS", "PHANTOM", "TINY", "TINY_FLAGS", "cv_args", "flags"]

#: ``write_phantom_dataset("cardiac", "acdc-h5", ...)`` keywords: 5 patients, one per test fold.
PHANTOM = dict(n_patients=5, seed=3, size=(72, 64), slices=(3, 4))

#: A fold that runs in seconds.
TINY = dict(iterations=4, val_interval=2, batch_size=2, size=(32, 32), device="cpu", seed=0)

#: Long enough to be stopped mid-training whatever the load: a job is signalled once its first
#: checkpoint exists, some 70 iterations of about 90 ms each before the end (at 50 iterations a
#: Slurm fold sometimes finished first while the executor tests shared the cores); checkpointed
#: every 10 (each validation and checkpoint costs about as much as 3 iterations here).
LONG = dict(TINY, iterations=80, val_interval=10)


def flags(budget: dict) -> list[str]:
    """``scribmed cv`` flags for a budget of this module."""
    return ["--iterations", str(budget["iterations"]), "--val-interval", str(budget["val_interval"]),
            "--batch-size", str(budget["batch_size"]), "--size", str(budget["size"][0]), "--device",
            budget["device"], "--seed", str(budget["seed"])]


TINY_FLAGS = flags(TINY)
LONG_FLAGS = flags(LONG)


def cv_args(root, out, *extra: str) -> list[str]:
    """``scribmed cv`` arguments for a quiet DMPLS run of the ``acdc-h5`` phantom at ``root`` into
    ``out``, followed by ``extra`` (budget, folds, executor)."""
    return ["cv", "--recipe", "dmpls", "--layout", "acdc-h5", "--root", str(root), "--out", str(out), "--quiet",
            *extra]
