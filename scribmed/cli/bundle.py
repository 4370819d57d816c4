"""``scribmed bundle list|export``: the shipped MONAI bundles."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_bundle(args: argparse.Namespace) -> int:
    from scribmed.bundles.export import describe_bundles, export_bundle

    if args.bundle_command == "list":
        for row in describe_bundles():
            print(f"{row['name']:<14} {row['version']:<8} {row['description']}")
        return 0
    dest = export_bundle(args.name, args.dir)
    print(f"exported {args.name} to {dest}; run it with:")
    print(f"  python -m monai.bundle run --config_file {dest}/configs/train.yaml "
          f"--meta_file {dest}/configs/metadata.json --bundle_root {dest} --dataset_dir /path/to/data --fold 1")
    return 0


def add_parser(sub: Any, recipe_flags: bool = True) -> None:
    """Register the command(s) on the ``scribmed`` subparsers."""
    bu = sub.add_parser("bundle", help="list the shipped MONAI bundles or export one into a folder of yours")
    bu_sub = bu.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND")
    bu_sub.required = True
    bu_sub.add_parser("list", help="name, version and title of every shipped bundle").set_defaults(func=cmd_bundle)
    ex = bu_sub.add_parser("export", help="copy a shipped bundle into DIR (then: monai.bundle run --bundle_root DIR)")
    ex.add_argument("name", help="bundle name (see 'scribmed bundle list')")
    ex.add_argument("dir", type=Path, help="new (or empty) folder to copy it into")
    ex.set_defaults(func=cmd_bundle)
