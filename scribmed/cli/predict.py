"""``scribmed predict``: apply a trained checkpoint to images without labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scribmed.data.errors import DataError
from scribmed.predict import FORMATS
from scribmed.cli.options import (
    fold_list,
    LAYOUT_NAMES,
    add_common,
    spacing_mm,
)


def cmd_predict(args: argparse.Namespace) -> int:
    from scribmed.predict import PredictOptions, predict_folder, predict_run

    if (args.checkpoint is None) == (args.run is None):
        raise DataError(None, "give one of --checkpoint CKPT (one model) or --run RUN_DIR (the ensemble of its folds)")
    if args.folds is not None and args.run is None:
        raise DataError(None, "--folds chooses folds of --run RUN_DIR")
    if args.no_postprocess and args.run is None:
        raise DataError(None, "--no-postprocess turns off the post-processing of --run RUN_DIR (a checkpoint has none)")
    options = PredictOptions(layout=args.layout, out_dir=args.out, device=args.device, spacing=args.spacing,
                             progress=not args.quiet, mirror=args.tta, output_format=args.format,
                             postprocess=not args.no_postprocess)
    if args.run is not None:
        paths = predict_run(args.run, args.input, options, folds=args.folds)
    else:
        paths = predict_folder(args.checkpoint, args.input, options)
    print(json.dumps({"predictions": str(args.out), "cases": len(paths)}))
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    pr = sub.add_parser(
        "predict",
        help="apply a trained checkpoint to images without labels (NIfTI on each image's grid, or DICOM-SEG)",
        description="Load a scribmed checkpoint (--checkpoint, e.g. RUN/fold_1/train/best.pt; its recipe, config and "
        "class map are read from it) or every finished fold of a cv run (--run RUN, an ensemble), predict every image of --input (a folder of *.nii.gz images, or a dataset read with "
        "--layout), and write OUT/<case_id>.nii.gz on each image's own grid (--format nifti) or, for DICOM series "
        "(--layout dicom), one DICOM-SEG OUT/<case_id>.dcm per series (--format dicom-seg). An input whose channel count or class map does not fit the checkpoint is "
        "refused. Existing outputs are kept (a killed run resumes).",
    )
    pr.add_argument("--checkpoint", type=Path, help="a scribmed training checkpoint (.pt): predict with this model")
    pr.add_argument("--run", type=Path, metavar="RUN_DIR",
                    help="a scribmed cv run folder: predict with the ensemble of its finished folds (their class "
                    "probabilities averaged, as nnU-Net does)")
    pr.add_argument("--folds", type=fold_list, help="with --run: the folds to ensemble, e.g. 1,3 (default: every "
                    "finished fold)")
    pr.add_argument("--no-postprocess", dest="no_postprocess", action="store_true",
                    help="with --run only: do not apply the run's post-processing (RUN_DIR/postprocessing.json from "
                    "'scribmed cv postprocess', keeping the largest connected component of the classes it chose), "
                    "which --run applies by default")
    pr.add_argument("--tta", action="store_true",
                    help="test-time mirroring: average each slice's probabilities over its flips along H, W and both "
                    "(four forward passes per slice and model, so four times the time)")
    pr.add_argument("--input", required=True, type=Path,
                    help="a folder of *.nii.gz images, or a dataset folder read with --layout (labels not needed), "
                    "e.g. a folder of DICOM series with --layout dicom")
    pr.add_argument("--layout", default="generic", choices=LAYOUT_NAMES,
                    help="how --input is read: generic (a plain folder of *.nii.gz images or nnU-Net's imagesTr/; "
                    "the class map is the checkpoint's unless its dataset.json names one), dicom (a folder tree of DICOM series, "
                    "one case per series), or a dataset layout")
    pr.add_argument("--out", required=True, type=Path, help="output folder for <case_id>.nii.gz (or .dcm)")
    pr.add_argument("--format", default="nifti", choices=FORMATS,
                    help="nifti (default): OUT/<case_id>.nii.gz, a label map with the image's spacing and affine; "
                    "dicom-seg: OUT/<case_id>.dcm, a DICOM Segmentation with one segment per foreground class of "
                    "the checkpoint's class map, referencing the input series (needs --layout dicom)")
    pr.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1")
    pr.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    add_common(pr, figures=False)
    pr.set_defaults(func=cmd_predict)
