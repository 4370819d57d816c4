"""Shared fixtures. Real data lives beside the repository in ``../shared/data`` (never copied in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCRIBMED_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SCRIBMED_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """The WSL4MIS ACDC folder (holds ACDC_training_volumes/)."""
    return _need(SHARED_DATA / "ACDC")


@pytest.fixture(scope="session")
def mscmr_root() -> Path:
    """The CycleMix MSCMR folder (holds train/, val/)."""
    return _need(SHARED_DATA / "MSCMR")
