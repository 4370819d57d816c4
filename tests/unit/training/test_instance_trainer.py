"""The instance segmentor's training loop: learning, selection, exact resume, prediction; the contour U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scribmed.data.phantoms import make_nuclei_image
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.training.instance_trainer import (
    InstanceTrainConfig,
    TrainSample,
    normalise_image,
    predict_instances,
    sample_batch,
    train_instance_segmentor,
)
from scribmed.networks.instance_unet import InstanceUNet
from scribmed.recipes.instance_segmentor import PartialContourLoss
from scribmed.transforms.contour_targets import IGNORE, contour_target


def nuclei(n: int, seed: int = 0, size=(64, 64)):
    rng = np.random.default_rng(seed)
    return [make_nuclei_image(rng, size=size, n_range=(3, 6)) for _ in range(n)]


def samples_of(images) -> list[TrainSample]:
    return [TrainSample(f"c{i}", normalise_image(img), {"weak": contour_target(inst)}, {"weak": IGNORE})
            for i, (img, inst) in enumerate(images)]


CFG = dict(iterations=6, batch_size=2, patch=32, val_interval=3, device="cpu", progress=False,
           features=(8, 16), lr=5e-3)


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


def test_sample_batch_same_geometry_for_image_and_maps():
    img = np.arange(40 * 50, dtype=np.float32).reshape(1, 40, 50)
    s = TrainSample("a", img, {"copy": img[0].astype(np.int64)}, {})
    for item in sample_batch([s], 4, 32, np.random.default_rng(0)):
        np.testing.assert_array_equal(item["image"][0].astype(np.int64), item["copy"])
    small = TrainSample("b", np.ones((1, 10, 12), np.float32), {"t": np.zeros((10, 12), np.uint8)}, {"t": IGNORE})
    item = sample_batch([small], 1, 16, np.random.default_rng(0))[0]
    assert item["image"].shape == (1, 16, 16) and (item["t"] == IGNORE).sum() == 16 * 16 - 10 * 12


def test_training_learns_selects_and_resumes_exactly(tmp_path):
    images = nuclei(4)
    val = [("v", normalise_image(img), inst) for img, inst in nuclei(1, seed=9)]
    cfg = InstanceTrainConfig(**CFG)
    a = train_instance_segmentor(samples_of(images), val, PartialContourLoss({"weak": 1.0}), tmp_path / "a", cfg,
                                 "test", {"config": "x"})
    assert a.best_checkpoint is not None and a.last_checkpoint.is_file() and a.iterations == 6
    ck = load_checkpoint(a.last_checkpoint)
    assert ck["iteration"] == 6 and len(ck["history"]["epochs"]) == 2
    assert 0.0 <= ck["best_metric"] <= 1.0 and "val_dsb_score" in ck["history"]["epochs"][0]

    class Crash(PartialContourLoss):
        calls = 0

        def forward(self, out, batch, teacher_probs=None):
            Crash.calls += 1
            if Crash.calls == 5:
                raise KeyboardInterrupt
            return super().forward(out, batch, teacher_probs)

    with pytest.raises(KeyboardInterrupt):
        train_instance_segmentor(samples_of(images), val, Crash({"weak": 1.0}), tmp_path / "b", cfg, "test",
                                 {"config": "x"})
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 3
    b = train_instance_segmentor(samples_of(images), val, PartialContourLoss({"weak": 1.0}), tmp_path / "b", cfg,
                                 "test", {"config": "x"})
    sa, sb = load_checkpoint(a.last_checkpoint)["student"], load_checkpoint(b.last_checkpoint)["student"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    # another configuration in the same folder is refused
    with pytest.raises(Exception, match="another configuration"):
        train_instance_segmentor(samples_of(images), val, PartialContourLoss({"weak": 1.0}), tmp_path / "b", cfg,
                                 "test", {"config": "y"})


def test_training_reduces_the_loss_and_predicts_instances(tmp_path):
    images = nuclei(4)
    cfg = InstanceTrainConfig(**{**CFG, "iterations": 30, "val_interval": 10})
    res = train_instance_segmentor(samples_of(images), [], PartialContourLoss({"weak": 1.0}), tmp_path, cfg, "test",
                                   {"config": "x"})
    epochs = load_checkpoint(res.last_checkpoint)["history"]["epochs"]
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
    from scribmed.training.instance_trainer import StudentOutput

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
