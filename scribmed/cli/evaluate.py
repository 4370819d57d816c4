"""``scribmed evaluate``: Dice / HD95 / ASD of a folder of predictions against a dataset's labels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scribmed.cli.options import (
    LAYOUT_NAMES,
    add_common,
    spacing_mm,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from scribmed.evaluation.folder import evaluate_folder

    summary_path = evaluate_folder(
        pred_dir=args.pred,
        ref_root=args.ref,
        layout=args.layout,
        out_dir=args.out,
        hd95_mode=args.hd95,
        empty_policy=args.empty,
        spacing=args.spacing,
        allow_missing=args.allow_missing,
        progress=not args.quiet,
    )
    print(f"report: {summary_path.parent}")
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    ev = sub.add_parser(
        "evaluate",
        help="Dice / HD95 / ASD of a folder of predictions against a dataset's labels",
        description="Predictions are NIfTI files named <case_id>.nii.gz. Writes per_case.csv, summary.json, "
        "summary.md and a box plot into --out.",
    )
    ev.add_argument("--pred", required=True, type=Path, help="folder of <case_id>.nii.gz predictions")
    ev.add_argument(
        "--ref", required=True, type=Path, help="dataset root read with --layout (generic: or a folder of labels)"
    )
    ev.add_argument("--layout", required=True, choices=LAYOUT_NAMES)
    ev.add_argument("--out", required=True, type=Path, help="report folder")
    ev.add_argument("--hd95", choices=("medpy", "monai"), default="medpy", help="HD95 convention (default medpy)")
    ev.add_argument("--empty", default=None, help="empty-mask policy (see docs/metrics.md); default: the library's")
    ev.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    ev.add_argument("--allow-missing", action="store_true", help="skip reference cases without a prediction")
    add_common(ev)
    ev.set_defaults(func=cmd_evaluate)
