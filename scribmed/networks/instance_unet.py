"""The CPU-sized instance segmentor: the project's U-Net with a background / interior / boundary head.

One encoder and one decoder built from :mod:`scribmed.networks.unet_dual`'s blocks (the DMPLS
U-Net without its auxiliary branch). The three output classes are those of
:mod:`scribmed.transforms.contour_targets`; instances come from the probabilities by seeded
watershed or connected components (:mod:`scribmed.transforms.instance_postprocess`).

:meth:`InstanceUNet.forward_features` also returns the decoder's last feature map
``(B, features[0], H, W)``, the student features S4M's structural distillation compares with SAM's.

Shapes: input ``(B, in_channels, H, W)`` with H and W divisible by ``2 ** (len(features) - 1)``;
output ``(B, 3, H, W)`` logits. Runs on CUDA when the module is moved there.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from scribmed.networks.unet_dual import UNetDecoder, UNetEncoder, check_unet_input

__all__ = ["InstanceUNet"]


class InstanceUNet(nn.Module):
    """U-Net with a contour head (background / interior / boundary logits).

    Args:
        in_channels: image channels (1 grey, 3 RGB).
        num_classes: output classes (3: background, interior, boundary).
        features: channels per stage, shallow to deep (default four stages, CPU-sized).
        dropout: dropout per encoder stage (default 0, 0.05, 0.1, 0.2, ...).
        upsample: decoder up-steps, ``"bilinear"`` or ``"transpose"`` (see :class:`UNetDecoder`).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        features: Sequence[int] = (16, 32, 64, 128),
        dropout: Optional[Sequence[float]] = None,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if dropout is None:  # none on the first stage, then 0.05, 0.1, 0.2, ... (at most 0.5)
            dropout = [0.0] + [min(0.05 * 2 ** i, 0.5) for i in range(len(features) - 1)]
        if len(features) != len(dropout) or len(features) < 2:
            raise ValueError(f"features and dropout need the same length >= 2, got {len(features)} and {len(dropout)}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.features = tuple(int(f) for f in features)
        self.encoder = UNetEncoder(self.in_channels, self.features, tuple(float(p) for p in dropout))
        self.decoder = UNetDecoder(self.features, self.num_classes, upsample)

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (len(self.features) - 1)

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_unet_input(x, self.in_channels, self.divisor)
        return self.encoder(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, 3, H, W), decoder features (B, features[0], H, W))``."""
        feats = self._encode(x)
        y = feats[-1]
        for up, skip in zip(self.decoder.ups, reversed(feats[:-1])):
            y = up(y, skip)
        return self.decoder.out_conv(y), y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, H, W)``."""
        return self.decoder(self._encode(x))
