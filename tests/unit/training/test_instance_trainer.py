"""The instance recipes in the shared training loop: learning, selection, exact resume, hooks, prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scribmed.data.case import ClassMap
from scribmed.data.phantoms import make_nuclei_image
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.runtime.records import CHECKPOINT, HISTORY, SCHEMA_KEY, schema_id
from scribmed.training.instance_batches import TrainSample
from scribmed.training.instance_inference import normalise_image, predict_instances
from scribmed.training.instance_trainer import (
    InstanceTask,
    InstanceTrainConfig,
    StudentOutput,
    cosine_lr,
    train_instance_segmentor,
)
from scribmed.networks.instance_unet import InstanceUNet
from scribmed.recipes.instance_segmentor import PartialContourLoss
from scribmed.transforms.contour_targets import IGNORE, contour_target

NUCLEI = ClassMap({0: "background", 1: "nucleus"}, ignore_index=255)
CFG = dict(iterations=6, batch_size=2, patch=32, val_interval=3, device="cpu", progress=False,
           features=(8, 16), lr=5e-3)


def nuclei(n: int, seed: int = 0, size=(64, 64)):
    rng = np.random.default_rng(seed)
    return [make_nuclei_image(rng, size=size, n_range=(3, 6)) for _ in range(n)]


def samples_of(images) -> list[TrainSample]:
    return [TrainSample(f"c{i}", normalise_image(img), {"weak": contour_target(inst)}, {"weak": IGNORE})
            for i, (img, inst) in enumerate(images)]


def task(images, objective=None, **kw) -> InstanceTask:
    return InstanceTask("test", samples_of(images), objective or PartialContourLoss({"weak": 1.0}), **kw)


@pytest.fixture(scope="module")
def data():
    return nuclei(4), [("v", normalise_image(img), inst) for img, inst in nuclei(1, seed=9)]


def test_instance_unet_shapes_and_features():
    net = InstanceUNet(1, 3, (8, 16, 32), dropout=(0.0, 0.0, 0.1)).eval()
    x = torch.randn(2, 1, 32, 48)
    logits, feats = net.forward_features(x)
    assert logits.shape == (2, 3, 32, 48) and feats.shape == (2, 8, 32, 48)
    torch.testing.assert_close(net(x), logits)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match="input"):
        net(torch.randn(1, 3, 32, 32))


def test_cosine_lr_decays_to_five_percent():
    assert cosine_lr(1.0, 0, 10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 5, 10) == pytest.approx(0.525)
    assert cosine_lr(1.0, 10, 10) == pytest.approx(0.05) == cosine_lr(1.0, 99, 10)


def test_config_result_fields_leave_out_the_volatile_ones():
    fields = InstanceTrainConfig.result_fields()
    assert "device" not in fields and "progress" not in fields and {"iterations", "seed", "features"} <= set(fields)
    assert InstanceTrainConfig(features=(8, 16), patch=32).to_dict()["features"] == [8, 16]


def test_training_learns_selects_and_resumes_exactly(tmp_path, data):
    images, val = data
    cfg = InstanceTrainConfig(**CFG)
    a = train_instance_segmentor(task(images), val, tmp_path / "a", cfg, NUCLEI)
    assert a.best_checkpoint is not None and a.last_checkpoint.is_file() and a.iterations == 6
    ck = load_checkpoint(a.last_checkpoint)
    assert ck[SCHEMA_KEY] == schema_id(CHECKPOINT) and ck["recipe"] == "test"
    assert ck["trainer"] == {"iteration": 6, "epoch": 2} and 0.0 <= ck["best"]["metric"] <= 1.0
    assert ck["config"]["features"] == [8, 16] and ck["class_map"]["names"] == {"0": "background", "1": "nucleus"}
    history = json.loads(a.history_path.read_text())
    assert history[SCHEMA_KEY] == schema_id(HISTORY) and history["validation"]["metric"] == "val_dsb_score"
    assert [e["iteration"] for e in history["epochs"]] == [3, 6] and "val_dsb_score" in history["epochs"][0]
    assert history["loss_terms"] == ["weak"] and (tmp_path / "a" / "checkpoints.json").is_file()
    assert a.curve_path is not None and a.curve_path.is_file()

    class Crash(PartialContourLoss):
        calls = 0

        def forward(self, out, batch, teacher_probs=None):
            Crash.calls += 1
            if Crash.calls == 5:
                raise KeyboardInterrupt
            return super().forward(out, batch, teacher_probs)

    with pytest.raises(KeyboardInterrupt):
        train_instance_segmentor(task(images, Crash({"weak": 1.0})), val, tmp_path / "b", cfg, NUCLEI)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["trainer"]["iteration"] == 3
    b = train_instance_segmentor(task(images), val, tmp_path / "b", cfg, NUCLEI)
    sa, sb = load_checkpoint(a.last_checkpoint)["student"], load_checkpoint(b.last_checkpoint)["student"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert [e["iteration"] for e in json.loads(b.history_path.read_text())["epochs"]] == [3, 6]
    # a finished run is not trained again; another configuration in the same folder is refused
    assert train_instance_segmentor(task(images), val, tmp_path / "b", cfg, NUCLEI).checksums == b.checksums
    with pytest.raises(Exception, match="configuration changed"):
        train_instance_segmentor(task(images), val, tmp_path / "b", InstanceTrainConfig(**{**CFG, "lr": 1e-3}), NUCLEI)
    with pytest.raises(Exception, match="another configuration"):
        train_instance_segmentor(task(images, record={"stage": "teacher"}), val, tmp_path / "b", cfg, NUCLEI)


def test_teacher_is_the_network_predicted_and_refresh_runs_after_validation(tmp_path, data):
    images, val = data
    calls: list[int] = []
    cfg = InstanceTrainConfig(**{**CFG, "predict_with": "teacher", "ema_decay": 0.5})
    res = train_instance_segmentor(task(images, refresh=lambda it, net: calls.append(it)), val, tmp_path, cfg, NUCLEI)
    assert calls == [3]  # after the first validation, not after the last
    ck = load_checkpoint(res.last_checkpoint)
    assert ck["teacher"] is not None
    net_w, student_w = ck["network"], ck["student"]
    assert any(not torch.equal(net_w[k], student_w[k]) for k in net_w if net_w[k].is_floating_point())
    teacher_w = {k[len("network."):]: v for k, v in ck["teacher"].items() if k.startswith("network.")}
    for k in net_w:
        torch.testing.assert_close(net_w[k], teacher_w[k], rtol=0, atol=0)


def test_training_reduces_the_loss_and_predicts_instances(tmp_path, data):
    images, _ = data
    cfg = InstanceTrainConfig(**{**CFG, "iterations": 30, "val_interval": 10})
    res = train_instance_segmentor(task(images), [], tmp_path, cfg, NUCLEI)
    epochs = json.loads(res.history_path.read_text())["epochs"]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert res.best_checkpoint is None  # no validation images: the last checkpoint is the model
    net = InstanceUNet(1, 3, (8, 16), dropout=(0.0, 0.05))
    net.load_state_dict(load_checkpoint(res.last_checkpoint)["network"])
    pred = predict_instances(net, normalise_image(images[0][0]), torch.device("cpu"), min_size=1)
    assert pred.shape == images[0][1].shape and pred.dtype == np.int32


def test_partial_contour_loss_precedence_and_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    weak = torch.full((1, 4, 4), IGNORE)
    weak[0, 0, 0] = 1
    sam = torch.zeros((1, 4, 4), dtype=torch.long)
    loss, parts = PartialContourLoss({"weak": 1.0, "sam": 1.0})(StudentOutput(logits), {"weak": weak, "sam": sam})
    loss.backward()
    assert logits.grad is not None and set(parts) == {"weak", "sam"}
    # with precedence the SAM term skips the weakly labelled pixel
    ce = torch.nn.functional.cross_entropy(logits.detach(), sam, reduction="none",
                                           weight=torch.tensor([1.0, 1.0, 2.0]))
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = False
    assert parts["sam"] == pytest.approx(float(ce[mask].mean()), rel=1e-5)


def test_checkpoint_bytes_are_reproducible(tmp_path):
    """The same payload gives the same file (the archive does not record the temporary name)."""
    from scribmed.runtime.checkpoint import save_checkpoint

    payload = {"network": {"w": torch.arange(6.0)}, "iteration": 3}
    assert save_checkpoint(tmp_path / "a.pt", payload) == save_checkpoint(tmp_path / "b.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
