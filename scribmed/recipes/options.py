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
from typing import Any, Iterable

__all__ = ["AMP_CHOICES", "SHARED_FLAGS", "add_shared_flags"]

#: precision requests (:data:`scribmed.runtime.device.AMP_MODES`, repeated here so the parser needs no torch)
AMP_CHOICES = ("auto", "bf16", "fp16", "off")

#: option name (the ``from_options`` key) -> (flag, argparse keywords)
SHARED_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "iterations": ("--iterations", {"type": int, "help": "training iterations per fold (DMPLS paper: 60000)"}),
    "batch_size": ("--batch-size", {"type": int, "help": "images or slices per iteration (DMPLS paper: 12)"}),
    "size": ("--size", {"type": int, "help": "network input side in pixels (DMPLS paper: 256)"}),
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
        "action": argparse.BooleanOptionalAction, "default": None, "help": "NHWC memory format (DMPLS default: "
        "1.29x faster on a CPU; --no-channels-last: NCHW, another reproducible dropout draw; SAM-SP's segmentor "
        "defaults to NCHW)"}),
    "device": ("--device", {"help": "auto (default), cpu, cuda, cuda:1"}),
    "amp": ("--amp", {
        "choices": AMP_CHOICES, "help": "segmentor mixed precision on CUDA: auto (default: bf16 where the GPU has "
        "it, else fp16 with a gradient scaler), bf16, fp16, off; always off on a CPU (SAM stage: --sam-amp)"}),
    "seed": ("--seed", {"type": int, "help": "training seed"}),
}


def add_shared_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> list[str]:
    """Declare the :data:`SHARED_FLAGS` of ``names`` on ``parser`` (those not yet declared); return ``names``
    that have a shared flag (the ``dest`` of each is its option name)."""
    group = None
    dests = []
    for name in sorted(set(names) & set(SHARED_FLAGS), key=list(SHARED_FLAGS).index):
        flag, kwargs = SHARED_FLAGS[name]
        dests.append(name)
        if flag in parser._option_string_actions:
            continue
        if group is None:
            group = parser.add_argument_group("training (the flags of the chosen recipe's config; see --recipe)")
        group.add_argument(flag, dest=name, **kwargs)
    return dests
