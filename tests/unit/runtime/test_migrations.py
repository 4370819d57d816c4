"""Versioned records: older ones (the fixture written by the code before schemas, hand-written v1
dicts) upgrade to the current schema in one place; newer or foreign ones are refused naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scribmed import recipes
from scribmed.crossval.runner import open_run, read_fold_record, read_run_record
from scribmed.data.case import CARDIAC, Case, CaseArrays
from scribmed.data.errors import DataError
from scribmed.data.layouts import open_dataset
from scribmed.data.phantoms import write_phantom_dataset
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.runtime.checkpoint import load_checkpoint, save_checkpoint
from scribmed.runtime.migrations import (
    SEGMENTOR_CONFIG_V1_VALUES,
    upgrade_checkpoint,
    upgrade_fold_record,
    upgrade_history_record,
    upgrade_pseudo_label_record,
    upgrade_run_record,
    upgrade_sam_decoder_checkpoint,
    upgrade_sam_rounds_record,
)
from scribmed.runtime.records import CHECKPOINT, CURRENT_VERSIONS, FOLD, RUN, schema_id, stamp
from scribmed.training.run_record import check_resumable

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "records"
OLD_CHECKPOINT = FIXTURES / "contour_unet_best.pt"
OLD_RUN = FIXTURES / "cv_nearest"


# -- the fixture written by the code before schemas ------------------------------------------------


def test_old_contour_unet_checkpoint_loads_in_the_current_schema():
    ckpt = load_checkpoint(OLD_CHECKPOINT)
    assert ckpt["schema"] == schema_id(CHECKPOINT) == "scribmed.checkpoint/3" and "format" not in ckpt
    assert ckpt["recipe"] == "contour_unet" and ckpt["trainer"] == {"iteration": 200, "epoch": 4}
    assert ckpt["record"] == {} and ckpt["best"]["iteration"] in (50, 100, 150, 200) and "history" not in ckpt


def test_old_contour_unet_checkpoint_predicts_what_the_old_code_predicted():
    image = np.load(FIXTURES / "contour_unet_input.npy")
    expected = np.load(FIXTURES / "contour_unet_prediction.npy")
    assert len(np.unique(expected)) > 10  # many nuclei: the weights matter, not only their shapes
    recipe, model, _ = recipes.get("contour_unet").from_checkpoint(OLD_CHECKPOINT)
    assert tuple(recipe.config.features) == (4, 8) and recipe.config.iterations == 200
    case = Case("old_case", "old_case", FIXTURES / "contour_unet_input.npy", loader=lambda: CaseArrays(image=image))
    predicted = recipe.predict_case(model, case)
    assert predicted.dtype == expected.dtype and np.array_equal(predicted, expected)


def _v1_dmpls_checkpoint(path: Path) -> torch.nn.Module:
    """A DMPLS checkpoint as the code before schemas wrote it before ``lr_horizon``, ``image_interp``,
    ``upsample`` and ``channels_last`` existed (the network weights of a seeded transposed-conv U-Net)."""
    from scribmed.networks.unet_dual import DualBranchUNet

    torch.manual_seed(0)
    net = DualBranchUNet(in_channels=1, num_classes=4, upsample="transpose").eval()
    config = {k: v for k, v in DMPLSConfig(iterations=2, size=(32, 32), device="cpu", progress=False).to_dict().items()
              if k not in SEGMENTOR_CONFIG_V1_VALUES}
    torch.save({"format": "scribmed-checkpoint-v1", "recipe": "dmpls", "network": net.state_dict(),
                "trainer": {"iteration": 2, "epoch": 1}, "config": config,
                "class_map": {"names": {str(k): v for k, v in CARDIAC.names.items()},
                              "ignore_index": CARDIAC.ignore_index}}, path)
    return net


def test_old_dmpls_checkpoint_without_the_later_fields_loads_and_predicts_with_its_network(tmp_path):
    from scribmed.training.inference import predict_volume

    path = tmp_path / "last.pt"
    net = _v1_dmpls_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert ckpt["schema"] == "scribmed.checkpoint/3" and set(DMPLSConfig().to_dict()) == set(ckpt["config"])
    check_resumable(ckpt, path, DMPLSConfig.from_dict(ckpt["config"]), CARDIAC)  # resumable as it is
    recipe, model, class_map = recipes.get("dmpls").from_checkpoint(path)
    assert recipe.config.upsample == "transpose" and recipe.config.channels_last is False  # what such runs used
    assert class_map == {"names": CARDIAC.names, "ignore_index": CARDIAC.ignore_index}
    image = np.random.default_rng(0).random((2, 40, 48), dtype=np.float32)
    case = Case("old_case", "old_patient", path, loader=lambda: CaseArrays(image=image))
    expected = predict_volume(net, image, size=(32, 32), batch_size=16, device="cpu", amp=False,
                              image_mode="bilinear")
    assert np.array_equal(recipe.predict_case(model, case), expected)


def test_old_run_and_fold_records_upgrade():
    old_run = json.loads((OLD_RUN / "run.json").read_text())
    run = read_run_record(OLD_RUN)
    assert "schema" not in old_run and run["schema"] == schema_id(RUN) == "scribmed.run/2"
    assert run == {"schema": "scribmed.run/2", **old_run, "task": "semantic", "supervision": None}
    old_fold = json.loads((OLD_RUN / "fold_1" / "fold.json").read_text())
    fold = read_fold_record(OLD_RUN / "fold_1")
    assert fold == {"schema": schema_id(FOLD), **old_fold} and fold["schema"] == "scribmed.fold/2"


def test_a_run_folder_of_the_old_code_is_the_same_run(tmp_path):
    """A rerun compares run.json after upgrading it: the schema key does not make it another run."""
    root = write_phantom_dataset("cardiac", "acdc-nifti", tmp_path / "phantom", 5, seed=0, size=(32, 32), slices=(2, 2))
    dataset = open_dataset("acdc-nifti", root)
    out = tmp_path / "run"
    out.mkdir()
    old = json.loads((OLD_RUN / "run.json").read_text())
    text = json.dumps({**old, "root": str(Path(root).resolve())}, indent=2) + "\n"  # the old record, moved here
    (out / "run.json").write_text(text)
    open_run(recipes.build("nearest"), dataset, "auto", out)
    assert (out / "run.json").read_text() == text  # accepted, and left as it was
    with pytest.raises(DataError, match="other settings"):
        open_run(recipes.build("dmpls"), dataset, "auto", out)


def test_records_written_now_carry_the_schema(tmp_path):
    root = write_phantom_dataset("cardiac", "acdc-nifti", tmp_path / "phantom", 5, seed=0, size=(32, 32), slices=(2, 2))
    out = tmp_path / "run"
    open_run(recipes.build("nearest"), open_dataset("acdc-nifti", root), "auto", out)
    record = json.loads((out / "run.json").read_text())
    assert list(record)[0] == "schema" and record["schema"] == "scribmed.run/2"
    assert record["task"] == "semantic" and record["supervision"] is None


# -- refused: newer, foreign -----------------------------------------------------------------------


@pytest.mark.parametrize("name, reader, kind", [
    ("run.json", lambda p: read_run_record(p.parent), "scribmed.run"),
    ("fold.json", lambda p: read_fold_record(p.parent), "scribmed.fold"),
])
def test_a_newer_json_record_is_refused_naming_the_file(tmp_path, name, reader, kind):
    path = tmp_path / name
    path.write_text(json.dumps({"schema": f"{kind}/{CURRENT_VERSIONS[kind] + 1}", "recipe": "dmpls"}))
    with pytest.raises(DataError, match="unsupported schema version") as err:
        reader(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_a_newer_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"schema": "scribmed.checkpoint/4", "recipe": "dmpls", "network": {}})
    with pytest.raises(DataError, match="unsupported schema version 'scribmed.checkpoint/4'") as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("record, message", [
    ({"schema": "scribmed.fold/2"}, "unknown schema 'scribmed.fold/2'"),
    ({"schema": "scribmed.run/two"}, "unknown schema"),
    ({"schema": "scribmed.run/0"}, "unknown schema"),
])
def test_a_foreign_or_malformed_schema_is_refused(record, message):
    with pytest.raises(DataError, match=message):
        upgrade_run_record(record, "x/run.json")


def test_unknown_checkpoint_formats_are_refused_and_foreign_dicts_pass_untouched():
    with pytest.raises(DataError, match="unsupported format 'scribmed-checkpoint-v7'"):
        upgrade_checkpoint({"format": "scribmed-checkpoint-v7"}, "last.pt")
    with pytest.raises(DataError, match="unknown schema 'scribmed.sam_decoder/2'"):
        upgrade_checkpoint({"schema": "scribmed.sam_decoder/2"}, "decoder_best.pt")
    state = {"conv.weight": torch.zeros(2)}  # a bare state dict is no record
    assert upgrade_checkpoint(state) is state
    sam = {"model": {"mask_decoder.w": torch.zeros(1)}}  # a SAM checkpoint from elsewhere
    assert upgrade_sam_decoder_checkpoint(sam) is sam


# -- each step on hand-written version-1 records ---------------------------------------------------


def test_checkpoint_v1_to_current_segmentor():
    v1 = {"format": "scribmed-checkpoint-v1", "recipe": "dmpls", "trainer": {"iteration": 3, "epoch": 1},
          "config": {"iterations": 5, "lam": 0.3, "upsample": "bilinear"}}
    v2 = upgrade_checkpoint(v1, "last.pt")
    assert list(v2)[0] == "schema" and v2["schema"] == "scribmed.checkpoint/3" and "format" not in v2
    assert v2["config"] == {"iterations": 5, "lam": 0.3, "upsample": "bilinear", "lr_horizon": None,
                            "image_interp": "bilinear", "channels_last": False}  # a stored value wins
    assert v2["trainer"] == v1["trainer"] and v1["format"] == "scribmed-checkpoint-v1"  # the input is untouched
    other = upgrade_checkpoint({**v1, "recipe": "samsp", "config": {"lam": 0.5, "align_weight": 1.0}})
    assert other["config"] == {"align_weight": 1.0, **SEGMENTOR_CONFIG_V1_VALUES}  # lam is DMPLS's alone now
    assert upgrade_checkpoint(v2) == v2  # current: unchanged


def test_checkpoint_v1_to_current_instance_trainer():
    v1 = {"format": "scribmed-checkpoint-v1", "recipe": "sesam", "record": {"config": {"lr": 1e-3}},
          "config": {"lr": 1e-3}, "iteration": 4}
    assert upgrade_checkpoint(v1) == {"schema": "scribmed.checkpoint/3", "recipe": "sesam", "config": {"lr": 1e-3},
                                      "record": {}, "trainer": {"iteration": 4, "epoch": 4}, "sampler_epoch": 4,
                                      "loss": {}, "rng": None, "best": {"metric": None, "iteration": None},
                                      "val_dsb_score": None}


def test_checkpoint_v2_to_v3_instance_trainer_takes_the_shared_loops_layout():
    v2 = {"schema": "scribmed.checkpoint/2", "recipe": "s4m-teacher", "network": {"w": 1}, "student": {"w": 2},
          "teacher": None, "optimizer": {}, "scaler": {}, "config": {"val_interval": 50, "iterations": 120},
          "class_map": {"names": {"0": "background"}, "ignore_index": 255},
          "record": {"config": {"val_interval": 50}, "class_map": {}, "stage": "teacher", "labelled": ["a"]},
          "iteration": 120, "best_metric": 0.4, "best_iteration": 100,
          "history": {"epochs": [{"iteration": 100, "val_dsb_score": 0.4}, {"iteration": 120, "val_dsb_score": 0.3}]}}
    v3 = upgrade_checkpoint(v2, "last.pt")
    assert v3["schema"] == "scribmed.checkpoint/3" and v3["record"] == {"stage": "teacher", "labelled": ["a"]}
    assert v3["trainer"] == {"iteration": 120, "epoch": 3} and v3["sampler_epoch"] == 3 and v3["rng"] is None
    assert v3["best"] == {"metric": 0.4, "iteration": 100} and v3["val_dsb_score"] == 0.3
    assert "history" not in v3 and "iteration" not in v3 and v3["student"] == {"w": 2} and v3["loss"] == {}
    segmentor = {**v2, "recipe": "dmpls", "trainer": {"iteration": 3, "epoch": 1}}
    del segmentor["record"]
    assert upgrade_checkpoint(segmentor) == {**segmentor, "schema": "scribmed.checkpoint/3"}


def test_history_v1_to_v2_names_its_validation_score():
    semantic = {"format": "scribmed-history-v1", "recipe": "dmpls", "epochs": [{"iteration": 5, "val_mean_dice": 0.5}]}
    v2 = upgrade_history_record(semantic)
    assert list(v2)[0] == "schema" and v2["schema"] == "scribmed.history/2" and "format" not in v2
    assert v2["validation"] == {"metric": "val_mean_dice", "label": "validation mean foreground Dice"}
    instance = upgrade_history_record({"recipe": "wish", "epochs": [{"iteration": 5, "val_dsb_score": 0.2}]})
    assert instance["validation"]["metric"] == "val_dsb_score" and upgrade_history_record(v2) == v2


def test_sam_decoder_v1_to_v2():
    identity = {"config": {"lr": 5e-5}, "train": ["a"], "val": ["b"], "backend": "lite_medsam"}
    v1 = {"format": "scribmed-sam-decoder-v1", "backend": "lite_medsam", "epoch": 2,
          "config": {"lr": 5e-5, "epochs": 2}, "identity": identity}
    v2 = upgrade_sam_decoder_checkpoint(v1, "decoder_last.pt")
    assert v2["schema"] == "scribmed.sam_decoder/2" and "format" not in v2
    assert v2["config"] == {"lr": 5e-5, "epochs": 2, "loss_resolution": "full"}
    assert v2["identity"] == {**identity, "config": {"lr": 5e-5, "loss_resolution": "full"},
                              "weak_prompts": None, "supervision": None}
    assert "loss_resolution" not in identity["config"]  # the input is untouched
    low = upgrade_sam_decoder_checkpoint({**v1, "config": {"loss_resolution": "low"}})
    assert low["config"] == {"loss_resolution": "low"}


def test_run_record_v1_to_v2():
    v1 = {"recipe": "dmpls", "layout": "acdc-h5", "config": {"lam": 0.5, "iterations": 10}}
    assert upgrade_run_record(v1) == {"schema": "scribmed.run/2", **v1, "task": "semantic", "supervision": None}
    instance = upgrade_run_record({"recipe": "sesam", "task": "instance", "supervision": {"source": "x"}})
    assert instance["task"] == "instance" and instance["supervision"] == {"source": "x"}
    mixsup = upgrade_run_record({"recipe": "mixsup", "config": {"lam": 0.5, "sam_weight": 1.0}})
    assert mixsup["config"] == {"sam_weight": 1.0}


def test_fold_record_v1_to_v2():
    v1 = {"fold": 2, "checkpoint": "train/best.pt", "checkpoint_policy": "best", "checkpoint_sha256": "ab"}
    assert upgrade_fold_record(v1) == {"schema": "scribmed.fold/2", **v1}


def test_sam_rounds_record_v1_to_v2():
    v1 = {"backend": "lite_medsam", "rounds": 2, "finetune": {"epochs": 2, "lr": 5e-5}}
    v2 = upgrade_sam_rounds_record(v1, "run.json")
    assert v2 == {"schema": "scribmed.sam_rounds/2", **v1, "finetune": {"epochs": 2, "lr": 5e-5, "loss_resolution": "full"},
                  "weak_prompts": None, "supervision": None}
    zero_shot = upgrade_sam_rounds_record({"rounds": 0, "finetune": None})
    assert zero_shot["finetune"] is None


def test_pseudo_label_record_v1_to_v2():
    v1 = {"backend": "lite_medsam", "decoder": None, "prompts": {"n_points": 10}}
    assert upgrade_pseudo_label_record(v1) == {"schema": "scribmed.pseudo_labels/2", **v1, "weak_prompts": None}
    weak = {**v1, "weak_prompts": {"selection": "sesam"}}
    assert upgrade_pseudo_label_record(weak)["weak_prompts"] == {"selection": "sesam"}


def test_stamp_sets_the_current_schema_first():
    assert stamp(RUN, {"recipe": "dmpls", "schema": "scribmed.run/1"}) == {"schema": "scribmed.run/2", "recipe": "dmpls"}
    assert list(stamp(FOLD, {"fold": 1}))[0] == "schema"
    with pytest.raises(ValueError, match="unknown record kind"):
        stamp("scribmed.nothing", {})
