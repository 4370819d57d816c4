"""The nnunet_pl recipe's config, options and refusals (no training: see tests/integration/recipes)."""

from __future__ import annotations

import argparse
import importlib.util
import os

import pytest

from scribmed.recipes import build, get
from scribmed.recipes.nnunet_pl.config import NNUNetPLConfig
from scribmed.recipes.nnunet_pl.engine import NNUNET_MISSING, nnunet_environment
from scribmed.recipes.nnunet_pl.raw_dataset import NNUNetFolders


def test_defaults_are_nnunets():
    c = NNUNetPLConfig()
    assert (c.configuration, c.epochs, c.iterations_per_epoch, c.val_iterations_per_epoch) == ("2d", 1000, 250, 50)
    assert (c.checkpoint, c.planner, c.mirror, c.tile_step_size) == ("final", "ExperimentPlanner", True, 0.5)


@pytest.mark.parametrize("bad, match", [
    ({"configuration": "3d_lowres"}, "configuration must be one of"),
    ({"checkpoint": "latest"}, "checkpoint must be one of"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"tile_step_size": 0}, "tile_step_size"),
    ({"num_workers": -2}, "num_workers"),
])
def test_bad_settings_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        NNUNetPLConfig(**bad)


def test_options_and_set_values_reach_the_config():
    recipe = build("nnunet_pl", epochs="3", iterations_per_epoch=5, checkpoint="best", seed=2)
    assert (recipe.config.epochs, recipe.config.iterations_per_epoch, recipe.config.checkpoint) == (3, 5, "best")
    with pytest.raises(ValueError, match="does not take size"):
        build("nnunet_pl", size=128)


def test_run_record_leaves_out_what_does_not_change_results():
    d = build("nnunet_pl", num_workers=3, device="cpu").config_dict()
    assert "num_workers" not in d and "device" not in d and "progress" not in d and d["epochs"] == 1000


def test_cli_flags_are_declared_once_with_nnunets_defaults():
    parser = argparse.ArgumentParser()
    dests = get("nnunet_pl").add_arguments(parser)
    assert {"epochs", "iterations_per_epoch", "val_iterations_per_epoch", "checkpoint", "planner", "device",
            "seed", "num_workers", "configuration"} <= set(dests)
    assert "(default: 250)" in parser._option_string_actions["--iterations-per-epoch"].help
    args = parser.parse_args(["--epochs", "2", "--nnunet-checkpoint", "best"])
    assert (args.epochs, args.checkpoint, args.iterations_per_epoch) == (2, "best", None)


def test_without_nnunet_the_recipe_refuses_saying_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nnunetv2" else real(name, *a))
    with pytest.raises(ValueError) as err:
        build("nnunet_pl").check_device()
    assert str(err.value) == NNUNET_MISSING and "scribmed[nnunet]" in NNUNET_MISSING


def test_an_unavailable_device_is_refused_before_any_data():
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        build("nnunet_pl", device="cuda").check_device()


def test_nnunet_environment_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/elsewhere")
    monkeypatch.delenv("nnUNet_results", raising=False)
    with nnunet_environment(NNUNetFolders(tmp_path), workers=0):
        assert os.environ["nnUNet_raw"] == str(tmp_path / "raw")
        assert os.environ["nnUNet_results"] == str(tmp_path / "results")
        assert os.environ["nnUNet_n_proc_DA"] == "0"
    assert os.environ["nnUNet_raw"] == "/elsewhere" and "nnUNet_results" not in os.environ


def test_nnunets_plot_style_does_not_leak_into_later_figures(tmp_path):
    """nnU-Net's progress plot sets seaborn's style with font_scale 2.5 for the whole process."""
    import matplotlib
    import seaborn

    before = dict(matplotlib.rcParams)
    with nnunet_environment(NNUNetFolders(tmp_path), workers=0):
        seaborn.set(font_scale=2.5)
        assert matplotlib.rcParams["font.size"] != before["font.size"]
    assert dict(matplotlib.rcParams) == before


def _run_steps(budget, n, clock, seconds):
    step = budget.wrap(lambda batch: clock.__setitem__(0, clock[0] + seconds) or batch)
    for i in range(n):
        step(i)


def test_cpu_budget_stops_a_fold_estimated_over_the_limit(monkeypatch):
    import io
    import time

    from scribmed.recipes.nnunet_pl.engine import CpuBudget
    from scribmed.training.time_estimate import TrainingTooLong

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    log = io.StringIO()
    budget = CpuBudget(NNUNetPLConfig(max_cpu_hours=4), iterations_left=250_000, on_cpu=True, log=log)
    with pytest.raises(TrainingTooLong, match=r"about 202\.5 days.*70\.0 s each.*--epochs.*--max-cpu-hours 0"):
        _run_steps(budget, 4, clock, 70.0)
    assert "nnunet_pl: about 202.5 days of training" in log.getvalue()
    # within the limit, on a GPU, or without a limit: the estimate only
    for cfg, left, cpu in ((NNUNetPLConfig(), 44, True), (NNUNetPLConfig(), 250_000, False),
                           (NNUNetPLConfig(max_cpu_hours=0), 250_000, True)):
        _run_steps(CpuBudget(cfg, left, cpu, io.StringIO()), 6, clock, 70.0)
