"""The benchmarks' data folder: ``--data-root DIR``, else the environment variable ``SCRIBMED_DATA``.

The folder holds the public datasets in their distributed layouts (docs/data.md), one subfolder
each: ``ACDC/``, ``MSCMR/``, ``CHAOS_T2/``, ``DSB2018/``. A script adds the option with
:func:`add_data_root` and, after parsing, finds a dataset with :func:`dataset_dir`; without a data
folder, or without the dataset in it, the script stops with one line naming what is missing.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

ENV = "SCRIBMED_DATA"
DATASETS = ("ACDC", "MSCMR", "CHAOS_T2", "DSB2018")


def _holding(names) -> str:
    return ", ".join(f"{n}/" for n in names)


def add_data_root(parser: argparse.ArgumentParser, datasets=DATASETS) -> None:
    """Add ``--data-root DIR`` to ``parser``; ``datasets`` are the subfolders the script reads (for --help)."""
    parser.add_argument("--data-root", dest="data_root", type=Path, metavar="DIR", default=None,
                        help=f"data folder holding {_holding(datasets)} as distributed (docs/data.md); "
                             f"default: ${ENV}")


def data_root(args: argparse.Namespace) -> Path:
    """The data folder from ``args.data_root`` or ``$SCRIBMED_DATA``; exits with one line when there is none."""
    root = args.data_root or os.environ.get(ENV) or None
    if root is None:
        raise SystemExit(f"error: no data folder: pass --data-root DIR or set {ENV} "
                         f"(a folder holding {_holding(DATASETS)})")
    root = Path(root).expanduser()
    if not root.is_dir():
        source = "--data-root" if args.data_root else ENV
        raise SystemExit(f"error: {root}: data folder ({source}) not found")
    return root


def dataset_dir(args: argparse.Namespace, name: str, required: bool = True) -> Optional[Path]:
    """``<data root>/<name>``; when it is not a folder, exits with one line naming it (``None`` if not ``required``)."""
    path = data_root(args) / name
    if path.is_dir():
        return path
    if not required:
        return None
    raise SystemExit(f"error: {path}: not found (the data folder holds no {name}/)")
