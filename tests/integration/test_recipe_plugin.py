"""Adding a recipe is one package plus one bundle: nothing in scribmed changes.

A third-party package, written here into ``tmp_path``, holds docs/recipes.md's nearest class-mean
recipe and registers it under the ``scribmed.recipes`` entry-point group; next to it, one MONAI
bundle whose ``train#trainer`` is the generic :class:`scribmed.bundles.recipe_fold.RecipeFoldTrainer`
over ``scribmed.recipes.build("nearest_mean", **keys)``. The package is installed with pip into a
temporary folder (never into the test environment), and a new interpreter that puts that folder
on ``PYTHONPATH`` finds the recipe by its entry point: ``scribmed cv --recipe nearest_mean`` runs
it (through the console script's entry point), and ``python -m monai.bundle run`` of the bundle's
``train.yaml`` (through the module's ``__main__``, after the workflow is built and its properties
checked) gives fold 1 the same results; one interpreter for all three imports torch and MONAI once.
Everything is written under ``tmp_path``; the interpreter runs there and writes no bytecode.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
RECIPE = "nearest_mean"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "mypkg"
version = "0.1.0"
dependencies = ["scribmed"]

[project.entry-points."scribmed.recipes"]
nearest_mean = "mypkg.recipe:NearestMeanRecipe"

[tool.setuptools]
packages = ["mypkg"]
"""

# docs/recipes.md's recipe, as a module of its own package (registered by the entry point above)
RECIPE_PY = '''\
"""Per-class trimmed mean intensities learnt from the training scribbles; each voxel takes the nearest class."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scribmed import recipes
from scribmed.runtime.files import atomic_write_text, file_sha256


@dataclass
class NearestMeanConfig:
    trim: float = 0.05  # fraction of the darkest and of the brightest scribble pixels ignored per class

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NearestMeanConfig":
        return cls(**data)


class NearestMeanRecipe(recipes.Recipe):
    name = "nearest_mean"
    title = "nearest class-mean intensity"
    config_cls = NearestMeanConfig

    def train(self, train, val, class_map, out_dir, progress):
        means = {}
        for k in class_map.names:
            values = np.sort(np.concatenate([c.image[c.scribble == k] for c in train]))
            cut = int(len(values) * self.config.trim)
            means[str(k)] = float(values[cut:len(values) - cut].mean())
        path = atomic_write_text(Path(out_dir) / "means.json", json.dumps(means))
        return recipes.FoldModel(path, "last", file_sha256(path), {"means": means})

    def predict_case(self, model, case):
        classes = np.array([int(k) for k in model.extra["means"]], dtype=np.uint8)
        centres = np.array(list(model.extra["means"].values()))
        return classes[np.abs(case.image[..., None] - centres).argmin(axis=-1)]
'''

# docs/recipes.md shows this file (checked below)
TRAIN_YAML = """\
imports:
  - $import scribmed
  - $import scribmed.bundles.locate
  - $import scribmed.bundles.recipe_fold

bundle_root: .                      # pass --bundle_root <this folder>
dataset_dir: /path/to/ACDC
layout: acdc-h5
split_file: auto                    # a split JSON path, a shipped split name, or auto (seeded 5-fold)
allow_missing: false
split_seed: 0
fold: 1
output_dir: "$'runs/nearest_mean/fold_' + str(@fold)"   # must be named fold_<fold>; its parent is the run folder
merge: true                         # summarise the run folder's finished folds afterwards
device: cpu                         # MONAI property; the recipe needs no accelerator
progress: true
trim: 0.05                          # the recipe's options: scribmed.recipes.build(name, **keys)

dataset:
  _target_: scribmed.data.layouts.open_dataset
  layout: "@layout"
  root: "@dataset_dir"
recipe:
  _target_: scribmed.recipes.build
  name: nearest_mean
  trim: "@trim"

train:                              # MONAI's train properties; building them runs nothing
  dataset: "$scribmed.bundles.locate.fold_case_lists(@dataset, @split_file, @fold, @allow_missing, @split_seed)['train']"
  inferer:
    _target_: monai.inferers.SimpleInferer
  trainer:                          # run() = scribmed.bundles.recipe_fold.run_recipe_fold
    _target_: scribmed.bundles.recipe_fold.RecipeFoldTrainer
    recipe: "@recipe"
    dataset: "@dataset"
    split_file: "@split_file"
    fold: "@fold"
    output_dir: "@output_dir"
    max_epochs: 1                   # nothing iterates (a trained recipe: its validation rounds)
    allow_missing: "@allow_missing"
    seed: "@split_seed"
    progress: "@progress"
    merge: "@merge"

run:
  - "$@train#trainer.run()"
"""

METADATA = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
    "version": "0.1.0",
    "changelog": {"0.1.0": "initial"},
    "monai_version": "1.4.0",
    "pytorch_version": "2.1.0",
    "numpy_version": "1.24.0",
    "required_packages_version": {"scribmed": "0.1.0", "mypkg": "0.1.0"},
    "name": "nearest class-mean intensity on ACDC-layout scribbles",
    "task": "cardiac MRI segmentation from scribbles",
    "description": "One scribmed cross-validation fold of the nearest_mean recipe (mypkg).",
    "authors": "mypkg authors",
    "copyright": "Copyright (c) mypkg authors",
    "network_data_format": {"inputs": {}, "outputs": {}},
}


# In the package's environment: ``scribmed CV_ARGS`` through the console script's entry point; then
# the registered names and MONAI's check of the bundle's train properties (building the workflow
# builds the recipe from its keys; it trains nothing); then ``python -m monai.bundle BUNDLE_ARGS``
# through the module's own ``__main__``. Arguments: bundle folder, data folder, the number of CV
# arguments, CV_ARGS, BUNDLE_ARGS.
PROBE = """\
import json, os, runpy, sys
from scribmed.cli import main
bundle, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cv_args, bundle_args = sys.argv[4:4 + n], sys.argv[4 + n:]
assert main(cv_args) == 0
from monai.bundle import ConfigWorkflow
from scribmed import recipes
wf = ConfigWorkflow(config_file=f"{bundle}/configs/train.yaml", meta_file=f"{bundle}/configs/metadata.json",
                    logging_file=False, workflow_type="train", bundle_root=bundle, dataset_dir=data)
wf.initialize()
print(json.dumps({"names": recipes.names(), "missing_properties": wf.check_properties(),
                  "wrote_runs": os.path.exists("runs")}), flush=True)
sys.argv = ["monai.bundle", *bundle_args]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def _write_package(root: Path) -> tuple[Path, Path]:
    """``root/mypkg`` (the installable package) and ``root/mypkg/bundles/nearest_mean_acdc`` (its bundle)."""
    pkg = root / "mypkg"
    (pkg / "mypkg").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "mypkg" / "__init__.py").write_text("")
    (pkg / "mypkg" / "recipe.py").write_text(RECIPE_PY)
    bundle = pkg / "bundles" / f"{RECIPE}_acdc"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "docs").mkdir()
    (bundle / "configs" / "train.yaml").write_text(
        "# nearest_mean: one cross-validation fold, exactly `scribmed cv --recipe nearest_mean --fold k`.\n" + TRAIN_YAML)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(METADATA, indent=2))
    (bundle / "docs" / "README.md").write_text(textwrap.dedent("""\
        # nearest_mean_acdc

        `python -m monai.bundle run --config_file configs/train.yaml --bundle_root . --dataset_dir /data/ACDC --fold 1`
        is fold 1 of `scribmed cv --recipe nearest_mean --layout acdc-h5 --root /data/ACDC --split auto`.
        """))
    (bundle / "LICENSE").write_text("Apache-2.0\n")
    return pkg, bundle


def _run(cmd: list, cwd: Path, env: dict) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> dict:
    """The package written, installed into ``<tmp>/site`` and the environment that sees it."""
    root = tmp_path_factory.mktemp("plugin")
    pkg, bundle = _write_package(root)
    site = root / "site"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONDONTWRITEBYTECODE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "--target", site, pkg], cwd=root, env=env)
    env["PYTHONPATH"] = str(site)
    return {"root": root, "bundle": bundle, "site": site, "env": env}


@pytest.mark.slow  # a fresh interpreter imports torch and MONAI: about 20-30 s on the shared 2-core machine
def test_a_recipe_package_runs_through_scribmed_cv_and_its_own_bundle(plugin, tmp_path):
    from scribmed import recipes
    from scribmed.data.phantoms import write_phantom_dataset

    env, bundle = plugin["env"], plugin["bundle"]
    data = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "data", n_patients=5, seed=0,
                                 size=48, slices=(2, 2), frames=("ED",))
    assert RECIPE not in recipes.names()  # the test environment does not have the package
    cv = tmp_path / "cv"
    cv_args = ["cv", "--recipe", RECIPE, "--layout", "acdc-h5", "--root", data, "--split", "auto", "--out", cv,
               "--set", "trim=0.1", "--quiet"]
    stdout = _run([sys.executable, "-c", PROBE, bundle, data, len(cv_args), *cv_args,
                   "run", "--config_file", bundle / "configs" / "train.yaml",
                   "--meta_file", bundle / "configs" / "metadata.json", "--bundle_root", bundle, "--dataset_dir", data,
                   "--fold", "1", "--trim", "0.1", "--progress", "False"], cwd=tmp_path, env=env)
    summary = json.loads((cv / "summary.json").read_text())
    assert summary["folds_merged"] == [1, 2, 3, 4, 5]
    assert json.loads((cv / "run.json").read_text())["recipe"] == RECIPE
    found = json.loads(next(line for line in stdout.splitlines() if line.startswith('{"names"')))
    assert RECIPE in found["names"] and "dmpls" in found["names"]
    assert found["missing_properties"] == []  # MONAI's own check of the bundle's train properties
    assert found["wrote_runs"] is False  # building the workflow wrote nothing
    fold = tmp_path / "runs" / RECIPE / "fold_1"
    record = json.loads((fold / "fold.json").read_text())
    assert record["checkpoint"] == "train/means.json" and record["checkpoint_policy"] == "last"
    assert (fold / "train" / "means.json").read_text() == (cv / "fold_1" / "train" / "means.json").read_text()
    per_case = (fold / "evaluation" / "per_case.csv").read_text()
    assert per_case and per_case == (cv / "fold_1" / "evaluation" / "per_case.csv").read_text()
    assert json.loads((fold.parent / "run.json").read_text())["config"] == {"trim": 0.1}
    assert not any(plugin["bundle"].rglob("runs")), "the bundle run wrote into the bundle"



def test_docs_show_this_package():
    """docs/recipes.md's "Adding a recipe" shows the entry point and the bundle YAML used here."""
    section = (DOCS / "recipes.md").read_text().split("## Adding a recipe", 1)[1].split("\n## ", 1)[0]
    assert TRAIN_YAML in re.findall(r"```yaml\n(.*?)```", section, re.S)
    toml = re.findall(r"```toml\n(.*?)```", section, re.S)[0]
    assert '[project.entry-points."scribmed.recipes"]\nnearest_mean = "mypkg.recipe:NearestMeanRecipe"' in toml
    assert RECIPE_PY[RECIPE_PY.index("@dataclass"):] in section  # mypkg/recipe.py: the runnable example's classes
