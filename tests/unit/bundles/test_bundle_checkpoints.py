"""scribmed.bundles.checkpoints: the checkpoint's training size and channels, models/model.pt; the
export's README links (tiny files only: milliseconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from scribmed.bundles.checkpoints import checkpoint_size, load_weights, publish_model, trained_input
from scribmed.bundles.export import _outside_links_as_text
from scribmed.data.errors import DataError


def _ckpt(path: Path, **config) -> Path:
    torch.save({"recipe": "dmpls", "config": config, "network": {}}, path)
    return path


def test_size_comes_from_the_checkpoint_and_another_size_is_refused(tmp_path) -> None:
    ckpt = _ckpt(tmp_path / "best.pt", size=[64, 64], in_channels=1)
    assert trained_input(ckpt) == ((64, 64), 1)
    assert checkpoint_size(ckpt) == (64, 64)  # size null: the checkpoint's
    assert checkpoint_size(ckpt, 64) == checkpoint_size(ckpt, [64, 64], in_channels=1) == (64, 64)
    with pytest.raises(DataError) as err:
        checkpoint_size(ckpt, [256, 256])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(ckpt))
    assert "trained at 64x64" in msg and "asks for 256x256" in msg and "--size 64" in msg
    with pytest.raises(DataError, match=r"trained on 1 input channel\(s\), this config has in_channels 3"):
        checkpoint_size(ckpt, in_channels=3)


def test_a_checkpoint_without_a_config_needs_a_size(tmp_path) -> None:
    bare = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bare)  # a bare state dict
    assert trained_input(bare) == (None, None)
    assert checkpoint_size(bare, 32, in_channels=3) == (32, 32)
    with pytest.raises(DataError, match="records no training size: pass --size"):
        checkpoint_size(bare)


def test_load_weights_refuses_other_input_channels_before_loading(tmp_path) -> None:
    net = nn.Conv2d(3, 2, 1)
    net.in_channels = 3  # as DualBranchUNet records it
    ckpt = tmp_path / "best.pt"
    torch.save({"config": {"size": [32, 32], "in_channels": 1}, "network": nn.Conv2d(1, 2, 1).state_dict()}, ckpt)
    with pytest.raises(DataError, match="in_channels 3: set in_channels to 1"):
        load_weights(net, ckpt)


def test_publish_model_copies_the_checkpoint(tmp_path) -> None:
    best = _ckpt(tmp_path / "best.pt", size=[32, 32])
    model = publish_model(best, tmp_path / "run" / "models" / "model.pt")
    assert model == tmp_path / "run" / "models" / "model.pt" and model.read_bytes() == best.read_bytes()
    with pytest.raises(DataError, match="checkpoint not found"):
        publish_model(tmp_path / "missing.pt", model)


def test_export_writes_links_out_of_the_bundle_as_text(tmp_path) -> None:
    bundle = tmp_path / "bundles" / "b"
    (bundle / "docs").mkdir(parents=True)
    text = ("[study](../../../docs/recipes.md#parity) ![curve](../../../docs/figures/c.png) [keys](README.md#keys) "
            "[site](https://example.org/x) [top](#top)")
    out = _outside_links_as_text(text, bundle / "docs", bundle)
    assert "../" not in out
    assert "study (scribmed documentation: `docs/recipes.md#parity`)" in out
    assert "*Figure: curve (scribmed documentation: `docs/figures/c.png`)*" in out
    assert "[keys](README.md#keys)" in out and "[site](https://example.org/x)" in out and "[top](#top)" in out
