"""The SAM backend registry: every backend name is offered by the CLI and the recipes, and
:func:`build_sam_backend` refuses unknown names, bad options and checkpoint backends without weights."""

from __future__ import annotations

import pytest

from scribmed.networks.sam_registry import BACKENDS, build_sam_backend

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}


def test_unknown_backend_and_options():
    with pytest.raises(ValueError, match="lite_medsam, vit_h, vit_l, vit_b, medsam_vit_b"):
        build_sam_backend("vit_x")
    with pytest.raises(ValueError, match="unknown encoder_config keys"):
        build_sam_backend("vit_b", encoder_config={"width": 3}, random_init=True)


@pytest.mark.parametrize("name", ["vit_h", "vit_l", "vit_b", "medsam_vit_b"])
def test_vit_backend_without_checkpoint_is_an_error(name):
    """A forgotten checkpoint never silently runs SAM on random weights."""
    with pytest.raises(ValueError, match=rf"SAM backend '{name}' needs the .*checkpoint.*--sam-checkpoint"):
        build_sam_backend(name, encoder_config=SMALL)


def test_random_init_only_without_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="random_init applies to the ViT and SAM2 backends"):
        build_sam_backend("lite_medsam", random_init=True)
    with pytest.raises(ValueError, match="random_init applies"):
        build_sam_backend("vit_b", checkpoint=tmp_path / "x.pth", random_init=True)
