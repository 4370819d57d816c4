"""The SAM stage's settings as one object: :class:`SamStageConfig` and the :class:`RoundsConfig` it runs."""

from __future__ import annotations

import dataclasses

import pytest

from scribmed.sam.finetune_config import FinetuneConfig
from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS
from scribmed.sam.stage_config import RoundsConfig, SamStageConfig


def test_sam_stage_config_validates_coerces_and_round_trips():
    stage = SamStageConfig(rounds="1", epochs=3.0, lr=1, n_points="4", checkpoint=None, cache_dir=123)
    assert (stage.rounds, stage.epochs, stage.lr, stage.n_points, stage.cache_dir) == (1, 3, 1.0, 4, "123")
    assert SamStageConfig.from_dict(stage.to_dict()) == stage
    for bad, match in (({"rounds": -1}, "rounds"), ({"lr": 0}, "lr"), ({"n_points": 0}, "n_points"),
                       ({"loss_resolution": "half"}, "loss_resolution"), ({"amp": "fp8"}, "amp")):
        with pytest.raises(ValueError, match=match):
            SamStageConfig(**bad)
    with pytest.raises(ValueError, match="unknown SamStageConfig keys"):
        SamStageConfig.from_dict({"epoch": 1})


def test_rounds_config_from_stage_is_what_the_recipes_ran():
    stage = SamStageConfig(backend="vit_b", checkpoint="w.pth", rounds=2, epochs=3, lr=1e-4, n_points=7,
                           device="cpu", cache_dir="/c", encoder_runtime="torch", loss_resolution="full", amp="off")
    config = RoundsConfig.from_stage(stage, seed=5, progress=False)
    assert (config.backend, config.checkpoint, config.rounds, config.device, config.cache_dir) == (
        "vit_b", "w.pth", 2, "cpu", "/c")
    assert (config.encoder_runtime, config.amp, config.encoder_cache) == ("torch", "off", None)
    assert config.zero_shot_prompts == dataclasses.replace(ZERO_SHOT_PROMPTS, n_points=7)
    assert config.finetune_config == FinetuneConfig(epochs=3, lr=1e-4, n_points=7, seed=5, loss_resolution="full",
                                                    progress=False)
    assert config.finetuned_prompts is None and config.merge_priority is None and config.weak_prompts is None
    zero_shot = RoundsConfig.from_stage(dataclasses.replace(stage, rounds=0), weak_prompts="weak")
    assert zero_shot.finetune_config is None and zero_shot.rounds == 0 and zero_shot.weak_prompts == "weak"
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        RoundsConfig(rounds=-1)
