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
from scribmed.cli.options import AMP_CHOICES, LAYOUT_NAMES, ScribmedParser
from scribmed.data.errors import DataError

__all__ = ["AMP_CHOICES", "LAYOUT_NAMES", "build_parser", "main"]

#: the commands in the order ``scribmed --help`` lists them
COMMANDS = (data, evaluate, cv, bundle, predict, demo, pseudolabel)


def build_parser(recipe_flags: bool | str = True) -> argparse.ArgumentParser:
    """The ``scribmed`` parser.

    ``recipe_flags``: ``True`` declares every recipe's ``cv`` flags, a recipe name only that recipe's
    (what ``scribmed cv --recipe NAME`` needs: importing one recipe, not all, keeps the start fast),
    ``False`` none.
    """
    parser = ScribmedParser(
        prog="scribmed",
        description="Scribble-supervised medical image segmentation: data checks, phantoms, evaluation, recipes.",
    )
    parser.add_argument("--version", action="version", version=f"scribmed {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in COMMANDS:
        command.add_parser(sub, recipe_flags)
    return parser


def _version() -> str:
    """The installed distribution's version (``unknown`` when run from a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scribmed")
    except PackageNotFoundError:
        return "unknown"


def _requested_recipe(argv: Sequence[str]) -> bool | str:
    """The value of ``--recipe`` on a ``cv`` command line (its flags are the ones to declare), else ``True``."""
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recipe="):
            return arg.split("=", 1)[1]
    return True


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    training = argv[:1] == ["cv"] and argv[1:2] not in (["status"], ["merge"], ["compare"], ["postprocess"])  # these read run folders
    recipe = _requested_recipe(argv) if training else False
    parser = build_parser(recipe_flags=recipe)
    if isinstance(recipe, str):  # only this recipe's flags are declared: name any other flag's misuse in one line
        args, unknown = parser.parse_known_args(argv)
        flags = [a.split("=", 1)[0] for a in unknown if a.startswith("--")]
        if flags:
            print(f"error: recipe {recipe!r} does not take {', '.join(flags)} (its flags: scribmed cv --recipe "
                  f"{recipe} --help)", file=sys.stderr)
            return 1
        if unknown:
            parser.parse_args(argv)  # argparse's own message for stray values
    else:
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
