"""``scribmed predict``: apply a trained checkpoint to images without labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scribmed.cli.options import (
    LAYOUT_NAMES,
    add_common,
    spacing_mm,
)


def cmd_predict(args: argparse.Namespace) -> int:
    from scribmed.predict import predict_folder

    paths = predict_folder(args.checkpoint, args.input, args.layout, args.out, device=args.device,
                           spacing=args.spacing, progress=not args.quiet)
    print(json.dumps({"predictions": str(args.out), "cases": len(paths)}))
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    pr = sub.add_parser(
        "predict",
        help="apply a trained checkpoint to images without labels (NIfTI on each image's grid)",
        description="Load a scribmed checkpoint (e.g. RUN/fold_1/train/best.pt; its recipe, config and class map "
        "are read from it), predict every image of --input (a folder of *.nii.gz images, or a dataset read with "
        "--layout), and write OUT/<case_id>.nii.gz on each image's own grid. An input whose channel count or class map does not fit the checkpoint is "
        "refused. Existing outputs are kept (a killed run resumes).",
    )
    pr.add_argument("--checkpoint", required=True, type=Path, help="a scribmed training checkpoint (.pt)")
    pr.add_argument("--input", required=True, type=Path,
                    help="a folder of *.nii.gz images, or a dataset folder read with --layout (labels not needed)")
    pr.add_argument("--layout", default="generic", choices=LAYOUT_NAMES,
                    help="how --input is read: generic (a plain folder of *.nii.gz images or nnU-Net's imagesTr/; "
                    "the class map is the checkpoint's unless its dataset.json names one), or a dataset layout")
    pr.add_argument("--out", required=True, type=Path, help="output folder for <case_id>.nii.gz")
    pr.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    pr.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    add_common(pr, figures=False)
    pr.set_defaults(func=cmd_predict)
