"""SAM 2 / SAM 2.1 backends (Hiera-T / S / B+ / L) behind the :class:`SamBackend` interface.

Built from the ``sam2`` package's own classes (``Hiera``, ``FpnNeck``, ``ImageEncoder``,
``PositionEmbeddingSine``, ``PromptEncoder``, ``MaskDecoder`` with high-resolution features);
only the image path of ``SAM2Base`` is built (no memory modules). What ``SAM2ImagePredictor``
does for one image is reproduced step by step (tested to ~1e-5 against it):

* **preprocess**: the slice scaled to [0, 1], replicated to 3 channels, resized to a square
  ``S x S`` (``S = 1024``; bilinear with antialiasing as ``torchvision``'s ``Resize``; the aspect
  ratio is *not* kept) and normalised with ImageNet's mean/std;
* **encode**: Hiera trunk -> FPN neck (strides 4 / 8 / 16), ``no_mem_embed`` added to the
  stride-16 feature (``directly_add_no_mem_embed``), the decoder's ``conv_s0`` / ``conv_s1``
  applied to the stride-4 / stride-8 features;
* **prompts**: ``(x, y)`` pixels of the original slice map to ``(x * S / W, y * S / H)``
  (SAM2's normalise-then-scale); boxes become two corner points (labels 2, 3) placed before the
  points, as the predictor does;
* **decode**: the mask decoder with the high-resolution features, SAM2's sigmoid IoU head and,
  in eval mode, its dynamic fall-back to the best of three masks when a single mask is unstable
  (``build_sam2``'s default post-processing); low-resolution logits are ``S / 4`` square;
* **postprocess**: one bilinear resize of the low-resolution logits to the original slice.

**Packed embedding.** The embedding cache stores one array per slice, so :meth:`Sam2Backend.encode`
packs everything the decoder needs along the channels: the image embedding ``(C, S/16, S/16)``,
the projected stride-4 feature ``(C/8, S/4, S/4)`` pixel-unshuffled by 4 -> ``(2C, S/16, S/16)``
and the stride-8 feature ``(C/4, S/8, S/8)`` pixel-unshuffled by 2 -> ``(C, S/16, S/16)``: in
all ``(4C, S/16, S/16)`` = ``(1024, 64, 64)`` for the published models (8 MiB per slice in
float16). Pixel (un)shuffling is a permutation, so nothing is lost.

``conv_s0`` / ``conv_s1`` live in :attr:`Sam2Backend.image_encoder` here (they shape the cached
embedding), not in :attr:`~SamBackend.mask_decoder`: fine-tuning the decoder can never make
cached embeddings stale, and decoder files hold the trainable decoder only.

Compiled encoder runtimes (OpenVINO / ONNX Runtime) are not supported for SAM2 yet: ``auto``
resolves to PyTorch, other runtimes raise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from scribmed.runtime.device import AmpRequest
from scribmed.runtime.files import file_sha256
from scribmed.networks.encoder_runtime import DEFAULT_TOLERANCE, ENCODER_RUNTIMES
from scribmed.networks.sam_architectures import (
    HIERA_CONFIGS,
    SAM2_BACKENDS,
    SAM2_CHECKPOINT_FILES,
    SAM2_DEFAULTS,
    _require_sam2,
    _sam2_image_encoder,
    _sam2_mask_decoder,
    _sam2_prompt_encoder,
)
from scribmed.networks.sam_backends import SamBackend
from scribmed.networks.sam_checkpoint import _load_sam2_into

PathLike = Union[str, Path]

__all__ = [
    "Sam2Backend",
    "Sam2ImageEncoder",
    "build_sam2_backend",
    "pack_embedding",
    "unpack_embedding",
]

_CONFIG_KEYS = (*HIERA_CONFIGS["hiera_t"], *SAM2_DEFAULTS)


# ------------------------------------------------------------------------------------------
# packing
# ------------------------------------------------------------------------------------------


def pack_embedding(image_embed: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)``, ``(N, C/8, 4h, 4w)``, ``(N, C/4, 2h, 2w)`` -> one ``(N, 4C, h, w)`` array.

    Channel blocks, in order: the image embedding, ``feat_s0`` pixel-unshuffled by 4, ``feat_s1``
    pixel-unshuffled by 2.
    """
    return torch.cat([image_embed, F.pixel_unshuffle(feat_s0, 4), F.pixel_unshuffle(feat_s1, 2)], dim=1)


def unpack_embedding(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_embedding`: ``(N, 4C, h, w)`` -> ``(image_embed, feat_s0, feat_s1)``."""
    if packed.ndim != 4 or packed.shape[1] % 32:
        raise ValueError(f"a packed SAM2 embedding is (N, 4C, h, w) with C a multiple of 8, got {tuple(packed.shape)}")
    c = int(packed.shape[1]) // 4
    image_embed, s0, s1 = torch.split(packed, [c, 2 * c, c], dim=1)
    return image_embed, F.pixel_shuffle(s0, 4), F.pixel_shuffle(s1, 2)


# ------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------


class Sam2ImageEncoder(nn.Module):
    """SAM2's image path as one module: ``(N, 3, S, S)`` -> packed ``(N, 4C, S/16, S/16)``.

    Attributes:
        backbone: ``sam2``'s ``ImageEncoder`` (Hiera trunk + FPN neck, scalp 1).
        conv_s0 / conv_s1: the mask decoder's 1x1 projections of the stride-4 / stride-8
            features (``SAM2Base.forward_image``).
        no_mem_embed: ``(1, 1, C)``, added to the stride-16 feature (an image has no memory).
        d_model: ``C``, the neck / decoder width.
    """

    def __init__(self, backbone: nn.Module, conv_s0: nn.Module, conv_s1: nn.Module, d_model: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.conv_s0 = conv_s0
        self.conv_s1 = conv_s1
        self.d_model = int(d_model)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.d_model))
        nn.init.trunc_normal_(self.no_mem_embed, std=0.02)  # as SAM2Base initialises it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fpn = self.backbone(images)["backbone_fpn"]  # strides 4, 8, 16
        image_embed = fpn[-1] + self.no_mem_embed.reshape(1, self.d_model, 1, 1)
        return pack_embedding(image_embed, self.conv_s0(fpn[0]), self.conv_s1(fpn[1]))


class Sam2Backend(SamBackend):
    """A SAM 2 / SAM 2.1 model: frozen image path + ``sam2``'s prompt encoder and mask decoder.

    Same interface as :class:`SamBackend`; the differences: ``normalisation = "imagenet"``, a
    square input frame (:meth:`resized_hw` is ``(S, S)``, :attr:`prompt_input_size` ``(S, S)``),
    the packed ``embedding_shape`` ``(4C, S/16, S/16)``, low-resolution logits ``(S/4, S/4)``
    (``mask_inputs`` the same), and PyTorch as the only encoder runtime.

    Attributes:
        d_model: ``C`` (256 for the published models).
        low_res_size: side of the low-resolution logits, ``S / 4``.
    """

    def __init__(
        self,
        name: str,
        image_encoder: Sam2ImageEncoder,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        input_size: int,
        checkpoint_sha256: Optional[str] = None,
        checkpoint_path: Optional[PathLike] = None,
        encoder_sha256: Optional[str] = None,
    ) -> None:
        d, side = int(image_encoder.d_model), int(input_size) // 16
        super().__init__(name, image_encoder, prompt_encoder, mask_decoder, input_size, "imagenet",
                         checkpoint_sha256, checkpoint_path, encoder_sha256, embedding_shape=(4 * d, side, side))
        self.d_model = d
        self.low_res_size = int(input_size) // 4

    # -------------------------------------------------------------------- geometry

    @property
    def prompt_input_size(self) -> tuple[int, int]:
        """``(S, S)``: prompt transforms map ``(x, y)`` by ``(S / W, S / H)``, SAM2's square frame."""
        return self.input_size, self.input_size

    def resized_hw(self, original_hw: Sequence[int]) -> tuple[int, int]:
        """``(S, S)`` for any slice: SAM2 resizes to a square (aspect not kept)."""
        h, w = int(original_hw[0]), int(original_hw[1])
        if h < 1 or w < 1:
            raise ValueError(f"original size must be positive (H, W), got {tuple(original_hw)}")
        return self.input_size, self.input_size

    def use_encoder_runtime(
        self,
        runtime: str = "auto",
        cache_dir: Optional[PathLike] = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> "Sam2Backend":
        """PyTorch only for now: ``"torch"`` and ``"auto"`` keep it, a compiled runtime raises ``ValueError``."""
        if runtime not in ENCODER_RUNTIMES:
            raise ValueError(f"unknown encoder runtime {runtime!r}; choose one of {', '.join(ENCODER_RUNTIMES)}")
        if runtime not in ("auto", "torch"):
            raise ValueError(f"{self.name}: the {runtime} encoder runtime does not support SAM2 backends yet; "
                             "use encoder_runtime 'torch' or 'auto' (CLI: --encoder-runtime / --sam-encoder-runtime)")
        self._compiled = None
        return self

    # -------------------------------------------------------------------- prompts -> masks

    def decode(
        self,
        embedding: torch.Tensor,
        point_coords: Optional[torch.Tensor] = None,
        point_labels: Optional[torch.Tensor] = None,
        boxes: Optional[torch.Tensor] = None,
        mask_inputs: Optional[torch.Tensor] = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode K prompt sets against one slice's packed embedding in a single batched call.

        Same arguments and semantics as :meth:`SamBackend.decode` (coordinates in the ``S x S``
        frame, see :meth:`to_input_coords`), except ``embedding`` is ``(1, 4C, S/16, S/16)`` and
        ``mask_inputs`` ``(K, 1, S/4, S/4)``. Differentiable w.r.t. the prompt encoder and mask
        decoder.

        Returns:
            ``(low_res_logits (K, M, S/4, S/4), iou_predictions (K, M))``, unclamped (the predictor
            clamps the logits it returns to [-32, 32]; its masks come from the unclamped ones).
        """
        embedding, points, boxes, mask_inputs = self._decoder_inputs(
            embedding, point_coords, point_labels, boxes, mask_inputs
        )
        image_embed, feat_s0, feat_s1 = unpack_embedding(embedding)
        if boxes is not None:  # corners as points with labels 2 / 3, before the points (SAM2ImagePredictor)
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int64, device=boxes.device).expand(corners.shape[0], 2)
            if points is None:
                points = (corners, corner_labels)
            elif points[0].shape[0] != corners.shape[0]:
                raise ValueError(f"boxes give {corners.shape[0]} prompt sets, points {points[0].shape[0]}: they must agree")
            else:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1]], dim=1))
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=mask_inputs)
        low_res, iou, _, _ = self.mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=True,
            high_res_features=[feat_s0, feat_s1],
        )
        return low_res, iou

    @torch.no_grad()
    def decoder_features(self, embedding: torch.Tensor) -> torch.Tensor:
        """Prompt-free decoder features ``(1, C/8, S/4, S/4)`` of one packed embedding (no grad).

        The mask decoder's upscaling path applied to the image embedding plus the prompt
        encoder's "no mask" dense embedding, mixing in the high-resolution features exactly as
        ``MaskDecoder.predict_masks`` does: the per-pixel features SAM2's masks are read out of
        (used by :func:`scribmed.sam.instance_stage.decoder_features`, e.g. S4M's distillation).
        """
        emb = embedding if embedding.ndim == 4 else embedding[None]
        if emb.shape[0] != 1 or tuple(emb.shape[1:]) != self.embedding_shape:
            want = ", ".join(str(v) for v in (1, *self.embedding_shape))
            raise ValueError(f"embedding must be ({want}), got {tuple(embedding.shape)}")
        image_embed, feat_s0, feat_s1 = unpack_embedding(emb.to(self.device, torch.float32))
        src = image_embed + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        up1, norm, act1, up2, act2 = self.mask_decoder.output_upscaling
        return act2(up2(act1(norm(up1(src) + feat_s1))) + feat_s0)

    def postprocess(self, low_res_logits: torch.Tensor, original_hw: Sequence[int]) -> torch.Tensor:
        """Low-resolution logits ``(N, M, S/4, S/4)`` -> logits ``(N, M, H, W)`` (one bilinear resize, differentiable)."""
        return F.interpolate(low_res_logits, (int(original_hw[0]), int(original_hw[1])), mode="bilinear",
                             align_corners=False)


# ------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------


def _weights_name(name: str) -> str:
    version, arch = ("SAM 2.1", name[len("sam2.1_"):]) if name.startswith("sam2.1_") else ("SAM 2", name[len("sam2_"):])
    size = arch.split("_")[1].upper()
    return f"the {version} Hiera-{size} checkpoint ({SAM2_CHECKPOINT_FILES[name]})"


def _config(name: str, encoder_config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The published config of ``name`` with ``encoder_config`` applied and checked."""
    config: dict[str, Any] = {**HIERA_CONFIGS[SAM2_BACKENDS[name]], **SAM2_DEFAULTS}
    if encoder_config is not None:
        unknown = set(encoder_config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown encoder_config keys {sorted(unknown)}; use {sorted(_CONFIG_KEYS)}")
        config.update(encoder_config)
    if int(config["d_model"]) < 16 or int(config["d_model"]) % 16:
        raise ValueError(f"SAM2 d_model must be a positive multiple of 16, got {config['d_model']}")
    size, window = int(config["image_size"]), int(config["window_spec"][0])
    if size < 32 or size % 32 or (size // 4) % window:
        raise ValueError(f"SAM2 image_size must be a multiple of 32 whose quarter is a multiple of window_spec[0] "
                         f"({window}), got {size}")
    return config


def build_sam2_backend(
    name: str,
    checkpoint: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    *,
    encoder_config: Optional[Mapping[str, Any]] = None,
    random_init: bool = False,
    encoder_runtime: str = "torch",
    encoder_cache: Optional[PathLike] = None,
    amp: AmpRequest = "off",
) -> Sam2Backend:
    """Build a SAM 2 / SAM 2.1 backend and load its weights (``build_sam_backend`` calls this for SAM2 names).

    Args:
        name: ``"sam2_hiera_t"`` / ``_s`` / ``_b+`` / ``_l`` or ``"sam2.1_hiera_t"`` / ``_s`` / ``_b+`` / ``_l``.
        checkpoint: Meta's file for that model (e.g. ``sam2.1_hiera_tiny.pt``: ``{"model":
            SAM2Base state dict}``), read with ``weights_only=True``; only the image path, prompt
            encoder and mask decoder are taken (all required), the memory entries are ignored.
            A scribmed SAM2 backend's own ``state_dict()`` is accepted too.
        device: where the modules live.
        encoder_config: override the published config: the Hiera keys (``embed_dim``,
            ``num_heads``, ``stages``, ``global_att_blocks``, ``window_pos_embed_bkg_spatial_size``,
            ``window_spec``), ``d_model`` (256) and ``image_size`` (1024). Small models for tests.
        random_init: random weights without a checkpoint (tests only).
        encoder_runtime: ``"torch"`` or ``"auto"`` (both PyTorch); compiled runtimes raise.
        encoder_cache: unused (compiled runtimes are not supported for SAM2 yet).
        amp: mixed precision of encoding and decoder fine-tuning on CUDA (``"off"`` default,
            ``"auto"``, ``"bf16"``, ``"fp16"``; :meth:`SamBackend.use_amp`).

    Raises:
        ValueError: unknown name or config key, no checkpoint without ``random_init``, both.
        MissingDependencyError: the ``sam2`` package is not installed (a ``ValueError`` too).
        DataError: an unreadable checkpoint or one that does not match (see
            :func:`~scribmed.networks.sam_checkpoint._load_sam2_into`).
    """
    if name not in SAM2_BACKENDS:
        raise ValueError(f"unknown SAM2 backend {name!r}; choose one of {', '.join(SAM2_BACKENDS)}")
    if random_init and checkpoint is not None:
        raise ValueError("random_init applies to the ViT and SAM2 backends without a checkpoint only")
    if checkpoint is None and not random_init:
        raise ValueError(
            f"SAM backend {name!r} needs {_weights_name(name)}: pass checkpoint= (CLI: --sam-checkpoint / "
            "--checkpoint); weights are never downloaded at run time"
        )
    config = _config(name, encoder_config)
    _require_sam2()
    d_model, image_size = int(config["d_model"]), int(config["image_size"])
    decoder = _sam2_mask_decoder(d_model)
    conv_s0, conv_s1 = decoder.conv_s0, decoder.conv_s1
    del decoder.conv_s0, decoder.conv_s1  # the image path owns them (they shape the cached embedding)
    encoder = Sam2ImageEncoder(_sam2_image_encoder(config), conv_s0, conv_s1, d_model)
    backend = Sam2Backend(name, encoder, _sam2_prompt_encoder(d_model, image_size), decoder, image_size)
    if checkpoint is not None:
        _load_sam2_into(backend, checkpoint)
        backend.checkpoint_sha256 = backend._encoder_sha256 = file_sha256(checkpoint)
        backend.checkpoint_path = str(checkpoint)
    backend.image_encoder.requires_grad_(False)
    backend = backend.to(device).eval()
    return backend.use_encoder_runtime(encoder_runtime, encoder_cache).use_amp(amp)
