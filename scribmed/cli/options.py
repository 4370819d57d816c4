"""Argument types and options shared by the ``scribmed`` commands (no torch import: the parser starts fast)."""

from __future__ import annotations

import argparse
import json

from scribmed.data.layouts import LAYOUTS
from scribmed.recipes.options import AMP_CHOICES

LAYOUT_NAMES = tuple(LAYOUTS)  # from the registry: a new layout needs no CLI edit


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` states each option's default (when it has one and the help does not say it already)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and default not in (None, False, argparse.SUPPRESS) and default != []
                and "(default" not in text and "%(default)" not in text):
            text += " (default: %(default)s)"
        return text


class ScribmedParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help shows defaults; sub-commands' parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def key_value(text: str) -> dict[str, object]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it is JSON (numbers, true/false, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        parsed: object = json.loads(value)
    except ValueError:
        parsed = value
    return {key.strip().replace("-", "_"): parsed}


class MergeSet(argparse.Action):
    """Collects repeated ``--set KEY=VALUE`` into one dict."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        merged = dict(getattr(namespace, self.dest) or {})
        merged.update(values)
        setattr(namespace, self.dest, merged)


def fold_list(text: str) -> list[int]:
    """``--folds 1,3``: fold numbers, counted from 1 (``scribmed cv``, ``scribmed predict --run``)."""
    try:
        folds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be comma-separated numbers like 1,3, got {text!r}")
    if not folds or min(folds) < 1:
        raise argparse.ArgumentTypeError(f"folds are numbered from 1, like 1,3, got {text!r}")
    return folds


def spacing_mm(text: str | None) -> tuple[float, ...] | None:
    """``--spacing dz,dy,dx`` in mm (three positive numbers) for layouts that store none."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"spacing must be comma-separated numbers (mm), got {text!r}")
    if len(values) != 3 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be three positive numbers dz,dy,dx in mm, got {text!r}")
    return values


def open_from_args(args: argparse.Namespace):
    """The dataset of ``--layout`` / ``--root`` (and ``--spacing``, ``--scribble-style`` when given)."""
    from scribmed.data.layouts import open_dataset

    options = {}
    if getattr(args, "spacing", None) is not None:
        options["spacing"] = args.spacing
    if getattr(args, "scribble_style", None) is not None:
        options["scribble_style"] = args.scribble_style
    return open_dataset(args.layout, args.root, **options)


def add_common(p: argparse.ArgumentParser, figures: bool = True) -> None:
    """Options every command takes (``--figures`` only where the command draws figures)."""
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if not figures:
        return
    p.add_argument("--figures", metavar="FORMATS",
                   help="figure files: png (default) or png,pdf (vector PDF beside every PNG, for papers); "
                   "also $SCRIBMED_FIGURES")
