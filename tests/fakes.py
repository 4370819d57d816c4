"""Small stand-ins shared by several test modules: a cheap SAM backend and a decoder-call spy.

The backend has SAM's real prompt encoder and a small real mask decoder (``segment_anything``
classes) at a narrow embedding width (:data:`EMBED_DIM` channels instead of SAM's 256), with a
deterministic pooling encoder instead of a ViT, so SAM code paths run end to end in milliseconds. Import with ``from fakes import fake_backend`` (``tests/`` is on ``sys.path``
through its ``conftest.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from scribmed.networks.sam_backends import SamBackend

__all__ = ["DecodeSpy", "EMBED_DIM", "TinyEncoder", "fake_backend", "tiny_decoder"]

#: channels of the fake's image embedding and decoder width (SAM's is 256); the mask decoder's
#: upscaling path runs once per prompt, so this width sets the cost of every decode.
EMBED_DIM = 32


class TinyEncoder(nn.Module):
    """(N, 3, 256, 256) -> (N, EMBED_DIM, 64, 64) by 4x average pooling and a 1x1 conv (deterministic)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, EMBED_DIM, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.avg_pool2d(x, 4))


def tiny_decoder() -> nn.Module:
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    torch.manual_seed(0)
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=EMBED_DIM, mlp_dim=32, num_heads=2),
        transformer_dim=EMBED_DIM,
        iou_head_depth=1,
        iou_head_hidden_dim=16,
    )


def fake_backend() -> SamBackend:
    """A SAM backend with SAM's real prompt encoder, a small real mask decoder and a cheap encoder."""
    from segment_anything.modeling import PromptEncoder

    torch.manual_seed(0)
    prompt = PromptEncoder(embed_dim=EMBED_DIM, image_embedding_size=(64, 64), input_image_size=(256, 256),
                           mask_in_chans=16)
    return SamBackend("fake", TinyEncoder(), prompt, tiny_decoder(), 256, "minmax",
                      embedding_shape=(EMBED_DIM, 64, 64)).eval()


class DecodeSpy:
    """Wraps ``backend.decode`` and records every call.

    ``constant``: return that logit everywhere instead of decoding; ``blobs``: return cheap
    prompt-dependent logits (positive within 12 px of a positive point, in the 256 frame).
    """

    def __init__(self, backend: SamBackend, constant: float | None = None, blobs: bool = False) -> None:
        self.calls: list[dict] = []
        self.original = backend.decode
        self.constant = constant
        self.blobs = blobs
        backend.decode = self  # type: ignore[method-assign]

    def __call__(self, embedding, point_coords=None, point_labels=None, boxes=None, mask_inputs=None,
                 multimask_output=False):
        self.calls.append({"coords": point_coords.clone(), "labels": point_labels.clone(),
                           "boxes": boxes, "multimask": multimask_output})
        if self.constant is not None:
            k = point_coords.shape[0]
            return torch.full((k, 1, 256, 256), self.constant), torch.ones(k, 1)
        if self.blobs:
            yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
            grid = torch.stack([xx, yy], -1).reshape(1, -1, 1, 2)  # (1, 65536, 1, 2)
            d = (grid - point_coords[:, None].float()).norm(dim=-1)  # (K, 65536, P)
            d = torch.where(point_labels[:, None] == 1, d, torch.full_like(d, 1e3)).amin(-1)
            return (6.0 - d / 2.0).reshape(-1, 1, 256, 256), torch.ones(point_coords.shape[0], 1)
        return self.original(embedding, point_coords, point_labels, boxes, mask_inputs, multimask_output)
