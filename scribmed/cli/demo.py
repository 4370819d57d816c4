"""``scribmed demo``: the end-to-end run on a generated phantom dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scribmed.cli.options import (
    add_common,
)


def cmd_demo(args: argparse.Namespace) -> int:
    from scribmed.demo import run_demo

    report = run_demo(
        out=args.out, patients=args.patients, seed=args.seed, iterations=args.iterations,
        size=args.size, batch_size=args.batch_size, recipes=args.recipes, rounds=args.rounds,
        sam_epochs=args.sam_epochs, split=args.split, progress=not args.quiet,
    )  # fmt: skip
    print(f"demo report: {report}")
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    demo = sub.add_parser(
        "demo",
        help="end-to-end run on a generated phantom dataset",
        description="Generate a phantom ACDC-like dataset, run a short three-fold cross-validation of SAM-SP "
        "(LiteMedSAM pseudo-label rounds + aligned segmentor) and DMPLS on it, compare with the nearest-scribble "
        "baseline, print the table and where the report is. About 15 minutes on 2 CPU cores.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    demo.add_argument("--patients", type=int, default=9, help="phantom patients to generate")
    demo.add_argument("--seed", type=int, default=0, help="seed of the phantom, the split and training")
    demo.add_argument("--iterations", type=int, default=300, help="segmentor iterations per fold (every recipe)")
    demo.add_argument("--split", default="auto:3", help="auto:K: a seeded K-fold split of the phantom's patients, as "
                      "scribmed cv --split auto:K makes")
    demo.add_argument("--recipes", type=lambda t: [v.strip() for v in t.split(",") if v.strip()],
                      default=["samsp", "dmpls"], help="comma-separated recipes to compare (default samsp,dmpls)")
    demo.add_argument("--rounds", type=int, default=1, help="SAM-SP decoder fine-tuning rounds (default 1)")
    demo.add_argument("--sam-epochs", dest="sam_epochs", type=int, default=1, help="fine-tuning epochs per round")
    demo.add_argument("--size", type=int, default=64, help="network input side (pixels)")
    demo.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="slices per iteration")
    add_common(demo)
    demo.set_defaults(func=cmd_demo)
