"""``scribmed data check``, ``scribmed phantom``, ``scribmed weak make``: dataset utilities."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scribmed.cli.options import (
    LAYOUT_NAMES,
    add_common,
    open_from_args,
    spacing_mm,
)


def cmd_data_check(args: argparse.Namespace) -> int:
    dataset = open_from_args(args)
    split_summary = None
    if args.split is not None:  # checked first: it takes a second, the cases take minutes
        from scribmed.data.split_files import load_split
        from scribmed.data.splits import validate_split

        split = load_split(args.split)
        report = validate_split(split, dataset, allow_missing=args.allow_missing)
        split_summary = {"file": str(args.split), "name": split.name, "folds": len(split.folds)}
        dropped = getattr(report, "missing", None) if report is not None else None
        if dropped:
            split_summary["missing_patients_dropped"] = list(dropped)
    dataset.validate(progress=not args.quiet)
    summary = dataset.summary()
    if split_summary is not None:
        summary["split"] = split_summary
    print(json.dumps(summary, indent=2))
    return 0


# --- phantom ------------------------------------------------------------------------------------


def cmd_phantom(args: argparse.Namespace) -> int:
    from scribmed.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset(args.kind, args.layout, args.out, n_patients=args.patients, seed=args.seed)
    print(json.dumps({"root": str(root), "layout": args.layout, "kind": args.kind, "patients": args.patients}))
    return 0


# --- weak make ----------------------------------------------------------------------------------


def _mix(text: str) -> dict[str, float]:
    from scribmed.data.supervision_mix import parse_mix

    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _jitter(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"box jitter must be LO,HI pixels like 3,7, got {text!r}")
    if not 0 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"box jitter must satisfy 0 <= LO <= HI, got {text!r}")
    return lo, hi


def cmd_weak_make(args: argparse.Namespace) -> int:
    from scribmed.data.weak_conversion import make_weak_dataset
    from scribmed.data.weak_labels import SUPERVISION_TYPES, read_supervision

    dataset = open_from_args(args)
    out = make_weak_dataset(
        dataset, args.out, args.mix, args.seed, point_mode=args.point_mode, points_per_class=args.points_per_class,
        point_negatives=args.point_negatives, box_jitter=args.box_jitter, scribbles=args.scribbles,
        scribble_style=args.weak_scribble_style, progress=not args.quiet,
    )
    kinds = list(read_supervision(out / "supervision.json").values())
    print(json.dumps({"out": str(out), "cases": len(kinds), "patients": len(dataset.patients),
                      "counts": {t: kinds.count(t) for t in SUPERVISION_TYPES}, "seed": args.seed}, indent=2))
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sub.required = True
    check = data_sub.add_parser(
        "check",
        help="validate a dataset (and optionally a split) and print a JSON summary",
        description="Load every case once, check files, shapes, spacing, class values and intensities, "
        "and print a JSON summary. Exit 1 with a one-line reason on bad data.",
    )
    check.add_argument("--layout", required=True, choices=LAYOUT_NAMES, help="on-disk layout of --root")
    check.add_argument("--root", required=True, type=Path, help="dataset folder as distributed")
    check.add_argument("--split", help="split JSON path, or the name of a shipped split (e.g. acdc_5fold)")
    check.add_argument(
        "--allow-missing", action="store_true", help="restrict the split to present patients instead of failing"
    )
    check.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    add_common(check, figures=False)
    check.set_defaults(func=cmd_data_check)

    # phantom
    ph = sub.add_parser(
        "phantom",
        help="generate a synthetic dataset with ground truth and scribbles",
        description="Write a phantom dataset (cardiac ACDC-like or abdominal CHAOS-like) in any supported layout.",
    )
    ph.add_argument("--kind", required=True, choices=("cardiac", "abdominal"))
    ph.add_argument("--layout", required=True, choices=LAYOUT_NAMES)
    ph.add_argument("--out", required=True, type=Path, help="output folder (created; must not hold other data)")
    ph.add_argument("--patients", type=int, default=10)
    ph.add_argument("--seed", type=int, default=0)
    ph.set_defaults(func=cmd_phantom)

    # weak make
    weak = sub.add_parser("weak", help="weak labels (boxes, points, scribbles) simulated from full labels")
    weak_sub = weak.add_subparsers(dest="weak_command", metavar="SUBCOMMAND")
    weak_sub.required = True
    wm = weak_sub.add_parser(
        "make",
        help="write a generic-layout copy of a labelled dataset with a seeded mix of supervision types",
        description="Give each patient a supervision type (full, box, point, scribble, none) by --mix, convert its "
        "full labels into boxes / points / scribbles, and write a new generic dataset in --out: images, the full "
        "labels (kept as the evaluation reference), weak/<case>.json, scribblesTr/, supervision.json and "
        "dataset.json with the provenance. The source is only read. Prints a JSON summary.",
    )
    wm.add_argument("--layout", required=True, choices=LAYOUT_NAMES, help="on-disk layout of --root")
    wm.add_argument("--root", required=True, type=Path, help="labelled source dataset folder")
    wm.add_argument("--mix", required=True, type=_mix, help="shares per type summing to 1, e.g. "
                    "full=0.1,box=0.3,point=0.3,scribble=0.3 (types: full, box, point, scribble, none)")
    wm.add_argument("--seed", type=int, default=0, help="seed of the assignment and the converters (default 0)")
    wm.add_argument("--out", required=True, type=Path, help="new (or empty) folder for the generic dataset")
    wm.add_argument("--points-per-class", dest="points_per_class", type=int, default=5,
                    help="positive points per class per slice (default 5; skeleton mode: per instance)")
    wm.add_argument("--point-mode", dest="point_mode", default="center",
                    choices=("center", "random", "boundary", "skeleton"), help="point sampler (default center)")
    wm.add_argument("--point-negatives", dest="point_negatives", type=int, default=0,
                    help="negative points per class per slice (default 0)")
    wm.add_argument("--box-jitter", dest="box_jitter", type=_jitter, default=(3, 7),
                    help="per-side box shift range LO,HI in pixels (default 3,7, MedSAM)")
    wm.add_argument("--scribbles", choices=("auto", "synthetic", "source"), default="auto",
                    help="scribble cases: the source's own scribbles when present, else synthesised (auto, default)")
    wm.add_argument("--scribble-style", dest="weak_scribble_style", default="auto",
                    choices=("auto", "acdc", "abdominal", "scribblebench"),
                    help="style of synthesised scribbles: acdc (skeleton arcs like ACDC's), abdominal (the same sized "
                    "for organs), scribblebench (interior curves + partial boundaries, some slices left out), auto "
                    "(abdominal for abdominal class maps, else acdc)")
    wm.add_argument("--spacing", type=spacing_mm, help="dz,dy,dx in mm for layouts that store none")
    add_common(wm, figures=False)
    wm.set_defaults(func=cmd_weak_make)
