"""The phantom kinds, the dataset layouts each can be written in, and generation by kind."""

from __future__ import annotations

from typing import Any

from scribmed.data.phantoms.abdominal import generate_abdominal
from scribmed.data.phantoms.cardiac import generate_cardiac
from scribmed.data.phantoms.phantom_case import PhantomCase

KINDS = ("cardiac", "abdominal")
LAYOUTS_BY_KIND = {
    "cardiac": ("acdc-h5", "acdc-nifti", "mscmr", "generic", "dicom"),
    "abdominal": ("chaos-npz", "chaos-t2-nifti", "generic", "dicom"),
}


def phantom_cases(kind: str, n_patients: int, seed: int = 0, **kwargs: Any) -> list[PhantomCase]:
    """Dispatch to :func:`generate_cardiac` or :func:`generate_abdominal` by ``kind``."""
    if kind == "cardiac":
        return generate_cardiac(n_patients, seed, **kwargs)
    if kind == "abdominal":
        return generate_abdominal(n_patients, seed, **kwargs)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


__all__ = [
    "KINDS",
    "LAYOUTS_BY_KIND",
    "phantom_cases",
]
