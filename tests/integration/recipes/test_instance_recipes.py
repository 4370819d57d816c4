"""The instance recipes (contour_unet, sesam, s4m, wish) through ``scribmed cv`` on phantom nuclei."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import fake_backend

from scribmed.cli import main
from scribmed.data.layouts import open_dataset
from scribmed.data.nifti import read_label_nifti
from scribmed.data.phantoms import write_nuclei_dataset
from scribmed.recipes import build, get

TINY = ["--iterations", "4", "--val-interval", "2", "--batch-size", "2", "--device", "cpu",
        "--set", "patch=32", "--set", "features=[8,16]", "--quiet"]


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuclei")
    ids = write_nuclei_dataset(root, n_images=8, seed=0, size=(64, 64))
    split = root.parent / "nuclei_split.json"
    split.write_text(json.dumps({"name": "nuclei_test", "unit": "patient", "folds": [
        {"train": ids[:5], "val": ids[5:6], "test": ids[6:8]}]}))
    return root, split, ids


@pytest.fixture()
def fake_sam(monkeypatch):
    import scribmed.networks.sam_registry as sb

    built: list = []

    def fake_build(name, checkpoint=None, device="cpu", **kw):
        assert name == "lite_medsam"
        built.append(fake_backend())
        return built[-1]

    monkeypatch.setattr(sb, "build_sam_backend", fake_build)
    return built


@pytest.mark.parametrize("recipe", ["contour_unet", "sesam", "s4m", "wish"])
def test_instance_recipe_fold_through_cli(recipe, nuclei, fake_sam, tmp_path):
    root, split, ids = nuclei
    out = tmp_path / "cv"
    argv = ["cv", "--recipe", recipe, "--layout", "dsb2018", "--root", str(root), "--split", str(split),
            "--out", str(out), *TINY]
    assert main(argv) == 0
    fold = out / "fold_1"
    record = json.loads((fold / "fold.json").read_text())
    assert record["checkpoint_policy"] == "best" and record["cases"] == {"train": 5, "val": 1, "test": 2}
    assert record["weak_labels"]["simulated_from"] == "instance masks"
    summary = json.loads((fold / "evaluation" / "summary.json").read_text())
    assert summary["task"] == "instance"
    cv = json.loads((out / "summary.json").read_text())
    assert cv["task"] == "instance" and cv["run"]["task"] == "instance" and cv["run"]["recipe"] == recipe
    assert "DSB" in (out / "summary.md").read_text() or "dsb" in (out / "summary.md").read_text()
    pred = read_label_nifti(fold / "predictions" / f"{ids[6]}.nii.gz", "prediction").array
    assert pred.shape == (1, 64, 64) and pred.min() >= 0
    if recipe != "contour_unet":
        assert (out / "sam_embeddings").is_dir() and (fold / "train" / "sam" / "quality.json").is_file()
        # SAM saw training images only, never val/test (WISH: not its tag-only images)
        encoded = sum(b.encoder_calls for b in fake_sam)
        assert 0 < encoded <= 5 if recipe == "wish" else encoded == 5
    # rerun: the finished fold is skipped
    fake_sam.clear()
    assert main(argv) == 0
    assert sum(b.encoder_calls for b in fake_sam) == 0


def test_instance_recipe_predicts_from_its_checkpoint(nuclei, tmp_path):
    root, split, ids = nuclei
    ds = open_dataset("dsb2018", root)
    recipe = build("contour_unet", iterations=2, val_interval=1, batch_size=2, patch=32, features=[8, 16],
                   device="cpu", progress=False)
    model = recipe.train([ds[i] for i in ids[:3]], [ds[ids[3]]], ds.class_map, tmp_path, progress=False)
    again, m2, class_map = get("contour_unet").from_checkpoint(model.checkpoint)
    np.testing.assert_array_equal(recipe.predict_case(model, ds[ids[7]]), again.predict_case(m2, ds[ids[7]]))
    assert class_map["names"] == {0: "background", 1: "nucleus"}


def test_instance_recipes_refuse_cases_without_instance_maps(tmp_path):
    from scribmed.data.errors import DataError
    from scribmed.data.phantoms import write_phantom_dataset

    root = write_phantom_dataset("cardiac", "acdc-h5", tmp_path / "acdc", n_patients=1, seed=0, size=(32, 32),
                                 slices=(2, 2), frames=("ED",))
    ds = open_dataset("acdc-h5", root)
    with pytest.raises(DataError, match="needs instance maps"):
        build("sesam", device="cpu").train(list(ds)[:1], [], ds.class_map, tmp_path / "o", progress=False)


def test_recipe_options_are_validated():
    with pytest.raises(ValueError, match="weak"):
        build("contour_unet", weak="polygon")
    with pytest.raises(ValueError, match="mix"):
        build("wish", mix="tag:0.5,box:0.2")
    with pytest.raises(ValueError, match="labelled_fraction"):
        build("s4m", labelled_fraction=0)
    assert get("sesam").task == "instance" and get("dmpls").task == "semantic"


def test_scribmed_predict_writes_instance_maps_beyond_255(nuclei, tmp_path, monkeypatch):
    """``scribmed predict`` with an instance checkpoint keeps ids above 255 (int32 maps, not uint8)."""
    from scribmed.predict import PredictOptions, predict_folder
    from scribmed.recipes.instance_segmentor import InstanceSegmentorRecipe

    root, split, ids = nuclei
    ds = open_dataset("dsb2018", root)
    recipe = build("contour_unet", iterations=1, val_interval=1, batch_size=1, patch=32, features=[8, 16],
                   device="cpu", progress=False)
    model = recipe.train([ds[ids[0]]], [], ds.class_map, tmp_path / "train", progress=False)
    many = np.arange(64 * 64, dtype=np.int32).reshape(1, 64, 64) % 300
    monkeypatch.setattr(InstanceSegmentorRecipe, "predict_case", lambda self, m, c: many)
    paths = predict_folder(model.checkpoint, root, PredictOptions(layout="dsb2018", out_dir=tmp_path / "pred",
                                                                  device="cpu", progress=False))
    assert read_label_nifti(paths[0], "prediction").array.max() == 299


def test_s4m_gate_keeps_refinements_that_agree_with_the_teacher():
    from scribmed.recipes.s4m.recipe import gate_refinement

    teacher = np.zeros((10, 10), np.int32)
    teacher[1:5, 1:5], teacher[6:9, 6:9] = 1, 2
    refined = np.zeros_like(teacher)
    refined[1:5, 1:6] = 1          # IoU 16/20 = 0.8 with the teacher's nucleus 1: kept
    refined[0:10, 6:10] = 2        # IoU 9/40 with nucleus 2: rejected, the teacher's mask comes back
    out = gate_refinement(teacher, refined, 0.5)
    assert (out[1:5, 1:6] == 1).all()
    assert (out == 2).sum() == 9 and (out[6:9, 6:9] == 2).all()
    np.testing.assert_array_equal(gate_refinement(teacher, refined, 0.0), refined)
