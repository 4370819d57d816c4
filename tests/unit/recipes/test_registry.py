"""The recipe registry and contract: names, lookup, options, and a user recipe through `scribmed cv`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from scribmed import recipes
from scribmed.recipes.base import FoldModel, NoConfig, Recipe

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_builtin_names_and_lookup():
    assert {"dmpls", "samsp", "nearest"} <= set(recipes.names())
    assert recipes.get("nearest").name == "nearest"
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; known: .*dmpls"):
        recipes.get("nope")


def test_options_are_checked_against_the_config():
    r = recipes.build("dmpls", iterations=7, val_interval=3, lr_horizon=60000)
    assert (r.config.iterations, r.config.epoch_length, r.config.lr_horizon) == (7, 3, 60000)
    assert "device" not in r.config_dict()  # volatile settings stay out of run.json
    with pytest.raises(ValueError, match="recipe 'nearest' does not take iterations"):
        recipes.build("nearest", iterations=3)
    assert recipes.build("nearest").config_dict() == {}


def test_register_refuses_a_taken_name():
    class Other(Recipe):
        name = "dmpls"

    with pytest.raises(ValueError, match="already registered"):
        recipes.register(Other)


def test_fold_model_policy_is_checked():
    with pytest.raises(ValueError, match="checkpoint policy"):
        FoldModel(None, "someday")
    assert FoldModel(None, "none").extra == {}
    with pytest.raises(ValueError, match="takes none"):
        NoConfig.from_dict({"x": 1})


def test_nearest_recipe_predicts_from_the_case_scribble():
    from scribmed.data.case import CARDIAC, Case, CaseArrays

    scribble = np.full((1, 8, 8), 4, dtype=np.uint8)
    scribble[0, 1, 1], scribble[0, 6, 6] = 1, 3
    case = Case("c", "p", Path("c.h5"), lambda: CaseArrays(np.zeros((1, 8, 8), np.float32), None, scribble, None))
    r = recipes.build("nearest")
    model = r.train([case], [], CARDIAC, Path("unused"), progress=False)
    pred = r.predict_case(model, case)
    assert pred.dtype == np.uint8 and pred[0, 0, 0] == 1 and pred[0, 7, 7] == 3


def test_docs_example_recipe_runs_through_scribmed_cv(capsys):
    """docs/recipes.md's minimal recipe: one class + register(), then `scribmed cv` runs it like any other."""
    text = (DOCS / "recipes.md").read_text()
    section = text[text.index("## Adding a recipe"):]
    block = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    scope: dict = {}
    try:
        exec(compile(block, "docs/recipes.md", "exec"), scope)
        assert scope["exit_code"] == 0
        run = scope["work"] / "run"
        record = json.loads((run / "run.json").read_text())
        assert record["recipe"] == "nearest_mean" and record["config"] == {"trim": 0.1}
        fold = json.loads((run / "fold_1" / "fold.json").read_text())
        assert fold["checkpoint"] == "train/means.json" and fold["checkpoint_policy"] == "last"
        summary = scope["summary"]
        assert summary["pooled"]["n_cases"] == 10 and 0.0 < summary["pooled"]["overall"]["dice"] < 1.0
        assert summary["folds_merged"] == [1, 2, 3, 4, 5]
    finally:
        recipes._REGISTRY.pop("nearest_mean", None)


def test_a_recipe_without_probabilities_refuses_an_ensemble_in_one_line():
    from scribmed.recipes import build

    with pytest.raises(ValueError, match="recipe 'nearest' predicts label maps only: a fold ensemble"):
        build("nearest").predict_probabilities(None, None, mirror=True)
