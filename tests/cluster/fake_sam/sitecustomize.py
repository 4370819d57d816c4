"""Imported by every Python started with this folder on ``PYTHONPATH``: the jobs of the Slurm
tests (tests/slurm_cluster.py), whose environment ``sbatch`` passes on.

It swaps SAM for the suite's tiny stand-in (tests/fakes.py), as the in-process tests do, so a
job's SAM stage takes seconds on one CPU instead of minutes of LiteMedSAM.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for fakes.py

import scribmed.networks.sam_registry as _registry  # noqa: E402
from fakes import fake_backend  # noqa: E402

_registry.build_sam_backend = lambda name, **kw: fake_backend()
