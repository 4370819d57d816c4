"""Where the files scribmed ships beside its code are: the split protocols and the MONAI bundles.

The repository keeps them at its top level (``data_splits/``, ``bundles/``); a wheel carries the
same files as package data under ``scribmed/_shipped/`` (copied at build time by ``setup.py``, no
second committed copy). :func:`shipped_dir` finds them with :mod:`importlib.resources` in an
installed wheel and falls back to the source tree for an editable install or a checkout.
Standard library only, so every layer may use it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["KINDS", "shipped_dir"]

#: what is shipped: split files and bundles
KINDS = ("data_splits", "bundles")


def shipped_dir(kind: str) -> Path:
    """The folder of shipped ``kind`` files (``"data_splits"`` or ``"bundles"``).

    Raises:
        ValueError: an unknown kind.
        FileNotFoundError: neither the installed package nor a source tree has them.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    packaged = resources.files("scribmed").joinpath("_shipped", kind)
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[2] / kind  # <repo>/scribmed/runtime/shipped.py
    if source.is_dir():
        return source
    raise FileNotFoundError(f"scribmed's {kind}/ is neither in the installed package nor in a source tree")
