"""The ``scribmed`` command line (also ``python -m scribmed``).

Verbs read like what a researcher does: ``data check``, ``phantom``, ``weak make``, ``evaluate``, ``demo``.
Bad input ends with a one-line ``error: <file>: <problem>`` on stderr and exit status 1; results go
to stdout (JSON) or into the ``--out`` run directory, never into the dataset.

One module per command (``data``, ``evaluate``, ``cv``, ``predict``, ``bundle``, ``demo``,
``pseudolabel``), each with its ``cmd_*`` function(s) and ``add_parser``; shared argument types
in :mod:`scribmed.cli.options`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from scribmed.cli import bundle, cv, data, demo, evaluate, predict, pseudolabel
from scribmed.cli.options import AMP_CHOICES, LAYOUT_NAMES
from scribmed.data.errors import DataError

__all__ = ["AMP_CHOICES", "LAYOUT_NAMES", "build_parser", "main"]

#: the commands in the order ``scribmed --help`` lists them
COMMANDS = (data, evaluate, cv, bundle, predict, demo, pseudolabel)


def build_parser(recipe_flags: bool = True) -> argparse.ArgumentParser:
    """The ``scribmed`` parser; ``recipe_flags=False`` leaves out the recipes' own ``cv`` flags (faster start)."""
    parser = argparse.ArgumentParser(
        prog="scribmed",
        description="Scribble-supervised medical image segmentation: data checks, phantoms, evaluation, recipes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in COMMANDS:
        command.add_parser(sub, recipe_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(recipe_flags=bool(argv) and argv[0] == "cv")
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if getattr(args, "figures", None):
            from scribmed.runtime.figures import set_figure_formats

            set_figure_formats(args.figures)  # also in $SCRIBMED_FIGURES: jobs started from here inherit it
        return func(args)
    except (DataError, ValueError) as err:
        if os.environ.get("SCRIBMED_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (outputs written so far are complete; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
