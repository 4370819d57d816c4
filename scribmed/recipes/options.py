"""Command-line flags of recipe config fields that several recipes share, declared once.

A recipe's :meth:`~scribmed.recipes.base.Recipe.add_arguments` declares, by default, the flag of
every field of its config that appears in :data:`SHARED_FLAGS` (``iterations`` →
``--iterations``, ...), so a new recipe whose config has an ``iterations`` field gets
``scribmed cv --iterations`` without editing the CLI, and a recipe without the field refuses the
flag. Declaring is idempotent: two recipes sharing a field share one flag (same name, same
meaning, in every command). Flags only a recipe has are declared by its own ``add_arguments``.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable, Mapping, Optional

__all__ = ["AMP_CHOICES", "SHARED_FLAGS", "add_shared_flags"]

#: precision requests (:data:`scribmed.runtime.device.AMP_MODES`, repeated here so the parser needs no torch)
AMP_CHOICES = ("auto", "bf16", "fp16", "off")

#: option name (the ``from_options`` key) -> (flag, argparse keywords)
SHARED_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "iterations": ("--iterations", {"type": int, "help": "training iterations per fold (a CPU run estimates its time first: --max-cpu-hours)"}),
    "batch_size": ("--batch-size", {"type": int, "help": "images or slices per iteration"}),
    "size": ("--size", {"type": int, "help": "network input side in pixels"}),
    "val_interval": ("--val-interval", {"type": int, "help": "iterations between validations/checkpoints"}),
    "lr_horizon": ("--lr-horizon", {
        "type": int, "help": "iterations over which the poly learning rate decays to 0 (default: --iterations; "
        "60000 follows the paper's schedule in a short run, as the reference code does)"}),
    "image_interp": ("--image-interp", {
        "choices": ("bilinear", "nearest"), "help": "image resizing to the network size for training and "
        "inference (default bilinear; the reference code uses nearest)"}),
    "upsample": ("--upsample", {
        "choices": ("transpose", "bilinear"), "help": "U-Net decoder up-steps: transpose (2x2 transposed conv, the "
        "paper) or bilinear (1x1 conv + bilinear, what the reference code runs)"}),
    "channels_last": ("--channels-last", {
        "action": argparse.BooleanOptionalAction, "default": None, "help": "NHWC memory format (1.29x faster "
        "on a CPU for DMPLS; --no-channels-last: NCHW, another reproducible dropout draw)"}),
    "device": ("--device", {"help": "auto (default), cpu, cuda, cuda:1"}),
    "amp": ("--amp", {
        "choices": AMP_CHOICES, "help": "segmentor mixed precision: auto (default: on CUDA bf16 where the GPU has it, else fp16 "
        "with a gradient scaler; float32 on a CPU), bf16 (also on CPUs with AVX512-BF16 or AMX), fp16 (CUDA), "
        "off (SAM stage: --sam-amp)"}),
    "seed": ("--seed", {"type": int, "help": "training seed"}),
    "max_cpu_hours": ("--max-cpu-hours", {
        "type": float, "help": "on a CPU, stop a fold whose training would take longer than this many hours, "
        "estimated from its first iterations (default 4; 0: no limit; never on a GPU)"}),
}


_GROUP = "training (the flags of the chosen recipe's config; see --recipe)"
_VARIES = "(default: the recipe's; see scribmed cv --recipe NAME --help)"


def _shown(value: Any) -> str:
    """A config default as ``--help`` shows it (a square size as its side)."""
    if isinstance(value, (list, tuple)) and value and all(v == value[0] for v in value):
        return str(value[0])
    return "none" if value is None else str(value)


def add_shared_flags(parser: argparse.ArgumentParser, names: Iterable[str],
                     defaults: Optional[Mapping[str, Any]] = None) -> list[str]:
    """Declare the :data:`SHARED_FLAGS` of ``names`` on ``parser`` (those not yet declared); return ``names``
    that have a shared flag (the ``dest`` of each is its option name).

    ``defaults`` (option name -> the recipe's config default) go into each flag's help; when recipes
    sharing a flag have different defaults, the help says the default is the recipe's.
    """
    group = None
    dests = []
    defaults = dict(defaults or {})
    for name in sorted(set(names) & set(SHARED_FLAGS), key=list(SHARED_FLAGS).index):
        flag, kwargs = SHARED_FLAGS[name]
        dests.append(name)
        shown = _shown(defaults[name]) if name in defaults else None
        action = parser._option_string_actions.get(flag)
        if action is not None:
            if getattr(action, "shown_default", None) not in (None, shown) and not action.help.endswith(_VARIES):
                action.help = f"{action.help.rsplit(' (default: ', 1)[0]} {_VARIES}"
            continue
        if group is None:
            group = next((g for g in parser._action_groups if g.title == _GROUP), None) or \
                parser.add_argument_group(_GROUP)
        help_text = kwargs.get("help", "")
        if shown is not None and "(default" not in help_text:
            help_text = f"{help_text} (default: {shown})"
        action = group.add_argument(flag, dest=name, **{**kwargs, "help": help_text})
        action.shown_default = shown  # type: ignore[attr-defined]
    return dests
