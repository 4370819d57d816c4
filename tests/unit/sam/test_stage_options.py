"""The SAM stage's flags: one set for `scribmed pseudolabel` and `scribmed cv`."""

from __future__ import annotations

import argparse

import pytest

from scribmed.networks.sam_registry import BACKENDS
from scribmed.sam.stage_config import SamStageConfig
from scribmed.sam.stage_options import BACKEND_NAMES, SAM_OPTIONS, add_sam_stage_arguments, sam_stage_from_args


def _sub(name: str) -> argparse.ArgumentParser:
    from scribmed.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _sam_flags(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    return {flag: tuple(a.choices or ()) for a in parser._actions for flag in a.option_strings
            if flag.startswith("--sam-") or flag in ("--rounds", "--n-points")}


def test_pseudolabel_and_cv_take_the_same_sam_flags_and_every_backend():
    pseudolabel, cv = _sam_flags(_sub("pseudolabel")), _sam_flags(_sub("cv"))
    assert pseudolabel == cv and len(cv) == len(SAM_OPTIONS)
    assert cv["--sam-backend"] == BACKEND_NAMES == tuple(BACKENDS)
    for old in ("--backend", "--checkpoint", "--cache", "--epochs", "--lr", "--device"):
        assert old not in _sub("pseudolabel")._option_string_actions


def test_defaults_parse_to_the_config_or_stay_unset_and_show_in_help():
    parser = argparse.ArgumentParser()
    assert add_sam_stage_arguments(parser) == list(SAM_OPTIONS)
    assert add_sam_stage_arguments(parser) == list(SAM_OPTIONS)  # a second recipe adds nothing
    args = parser.parse_args([])
    assert sam_stage_from_args(args) == SamStageConfig()
    assert args.sam_device == "auto" and args.rounds == 2
    args = parser.parse_args(["--sam-lr", "1e-4", "--rounds", "0", "--sam-checkpoint", "w.pth"])
    assert sam_stage_from_args(args) == SamStageConfig(lr=1e-4, rounds=0, checkpoint="w.pth")

    unset = argparse.ArgumentParser()
    add_sam_stage_arguments(unset, SamStageConfig(), leave_unset=True)
    args = unset.parse_args(["--sam-epochs", "3"])
    assert args.sam_lr is None and args.sam_epochs == 3
    base = SamStageConfig(lr=1e-3)
    assert sam_stage_from_args(args, base) == SamStageConfig(lr=1e-3, epochs=3)
    text = " ".join(unset.format_help().split())
    assert "(default: 5e-05)" in text and "(default: auto)" in text and "(default: None)" not in text


def test_pseudolabel_help_lists_the_sam_flags_with_defaults(capsys):
    from scribmed.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["pseudolabel", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--sam-device" in text and "(default: auto)" in text and "--figures" not in text


def test_the_command_line_parser_imports_no_torch():
    """``scribmed --help`` and ``--version`` start in a second: building the parser (every command but
    the recipes' own cv flags, which ``scribmed cv --recipe NAME`` adds) imports neither torch nor MONAI."""
    import subprocess
    import sys

    code = ("import sys; from scribmed.cli import build_parser; build_parser(False); "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
