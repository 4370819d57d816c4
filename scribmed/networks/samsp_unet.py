"""SAM-SP segmentor: the DMPLS dual-branch U-Net with cross-scale fused skips and a fusion head.

SAM-SP's step 4 (the aligned dual-branch segmentor). One shared encoder
(:class:`~scribmed.networks.unet_dual.UNetEncoder`), two decoders with separate weights (main and
auxiliary, as in DMPLS), and per skip level a cross-scale fusion (CSF) block:

``skip_i' = conv1x1([skip_i, CBAM(conv3x3-BN-ReLU([skip_i, up(enc_{i+1})]))])``

where ``up`` is bilinear upsampling of the next deeper *encoder* map to the skip's size and
CBAM is channel then spatial attention. The fused skip ``skip_i'`` (same width as ``skip_i``)
replaces the plain skip for **both** decoders: the CSF blocks are **shared** (computed once per
forward pass), which keeps the parameter count modest and means the decoders differ only by
their own weights and the auxiliary branch's feature dropout. The auxiliary decoder sees the
four fused skips and the bottleneck through channel dropout (``nn.Dropout2d``), active in
training mode only. A fusion head over the two decoders' last feature maps
(concat -> conv3x3-BN-ReLU -> conv1x1) gives the final ("fused") logits.

Shapes: input ``(B, in_channels, H, W)`` with H and W divisible by ``2 ** (len(features) - 1)``
(16 by default); logits ``(B, num_classes, H, W)``; bottleneck ``(B, features[-1], H/16, W/16)``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scribmed.networks.unet_dual import DualBranchUNet, UNetDecoder

__all__ = [
    "CBAM",
    "ChannelAttention",
    "CrossScaleFusion",
    "SAMSPOutput",
    "SAMSPUNet",
    "SpatialAttention",
]


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, weights ``(B, C, 1, 1)``.

    Args:
        channels: input channels.
        reduction: hidden width of the shared MLP is ``max(1, channels // reduction)``.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights in (0, 1), shape ``(B, C, 1, 1)``."""
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``sigmoid(conv_kxk([mean_c(x), max_c(x)]))``, weights ``(B, 1, H, W)``.

    Args:
        kernel_size: odd convolution size (7 in CBAM).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights in (0, 1), shape ``(B, 1, H, W)``."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel attention then spatial attention (Woo et al., 2018); keeps the input's shape.

    Args:
        channels: input channels.
        reduction: channel-attention MLP reduction ratio.
        kernel_size: spatial-attention convolution size.
    """

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


class CrossScaleFusion(nn.Module):
    """CSF block: fuse a skip with the next deeper encoder map, attend, return the skip's width.

    ``out = conv1x1([skip, CBAM(conv3x3-BN-ReLU([skip, up(deep)]))])``; ``up`` is bilinear
    resizing of ``deep`` to the skip's spatial size. The final 1x1 conv sees the original skip
    as well, so the block can pass it through unchanged if attention does not help.

    Args:
        skip_channels: channels of the skip (and of the output).
        deep_channels: channels of the deeper map.
        reduction: CBAM channel-attention reduction ratio.
    """

    def __init__(self, skip_channels: int, deep_channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.mix = nn.Sequential(
            nn.Conv2d(skip_channels + deep_channels, skip_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(skip_channels),
            nn.ReLU(inplace=True),
        )
        self.attention = CBAM(skip_channels, reduction)
        self.fuse = nn.Conv2d(2 * skip_channels, skip_channels, kernel_size=1)

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        attended = self.attention(self.mix(torch.cat([skip, up], dim=1)))
        return self.fuse(torch.cat([skip, attended], dim=1))


class SAMSPOutput(NamedTuple):
    """Training-mode output of :class:`SAMSPUNet` (unpacks like a tuple).

    Attributes:
        main: main-decoder logits ``(B, C, H, W)``.
        aux: auxiliary-decoder logits ``(B, C, H, W)``.
        fused: fusion-head logits ``(B, C, H, W)`` (the prediction used at inference).
        bottleneck: deepest encoder map ``(B, features[-1], H/16, W/16)``, not dropped out, for
            the semantic alignment loss.
    """

    main: torch.Tensor
    aux: torch.Tensor
    fused: torch.Tensor
    bottleneck: torch.Tensor


def _decode_features(decoder: UNetDecoder, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Run a :class:`UNetDecoder`'s up-blocks, returning its last feature map (before out_conv)."""
    x = feats[-1]
    for up, skip in zip(decoder.ups, reversed(feats[:-1])):
        x = up(x, skip)
    return x


class SAMSPUNet(DualBranchUNet):
    """SAM-SP segmentor (step 4, the aligned segmentor): dual-branch U-Net, shared CSF skips, fusion head.

    ``forward`` returns a :class:`SAMSPOutput` ``(main, aux, fused, bottleneck)`` in training mode
    and the fused logits only in eval mode, so MONAI inferers and ``predict_volume`` work
    unchanged. ``forward_all`` returns the full output in either mode (the auxiliary branch's
    feature dropout is active in training mode only).

    Args:
        in_channels: image channels (1 for MRI).
        num_classes: output classes including background.
        features: encoder channels per stage (16/32/64/128/256 as DMPLS).
        dropout: dropout per encoder stage (0.05/0.1/0.2/0.3/0.5); decoders use none.
        aux_feature_dropout: channel-dropout probability on every map the auxiliary decoder sees.
        reduction: CBAM channel-attention reduction ratio inside each CSF block.
        upsample: decoder up-steps (see :class:`DualBranchUNet`).

    Raises:
        ValueError: on inconsistent ``features``/``dropout`` or, in ``forward``, an input whose
            spatial size is not divisible by the total downsampling factor.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        aux_feature_dropout: float = 0.5,
        reduction: int = 8,
        upsample: str = "transpose",
    ) -> None:
        super().__init__(in_channels, num_classes, features, dropout, aux_feature_dropout, upsample)
        self.csf = nn.ModuleList(
            CrossScaleFusion(self.features[i], self.features[i + 1], reduction)
            for i in range(len(self.features) - 1)
        )
        width = self.features[0]
        self.fusion_head = nn.Sequential(
            nn.Conv2d(2 * width, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, kernel_size=1),
        )

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps with each skip replaced by its CSF-fused version; bottleneck unchanged."""
        enc = super()._encode(x)
        fused = [csf(enc[i], enc[i + 1]) for i, csf in enumerate(self.csf)]
        return [*fused, enc[-1]]

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both decoders' last feature maps ``(B, features[0], H, W)`` and the bottleneck."""
        feats = self._encode(x)
        main_feat = _decode_features(self.main_decoder, feats)
        aux_feat = _decode_features(self.aux_decoder, [self.feature_dropout(f) for f in feats])
        return main_feat, aux_feat, feats[-1]

    def forward_all(self, x: torch.Tensor) -> SAMSPOutput:
        """Main, auxiliary and fused logits plus the bottleneck, in any mode."""
        main_feat, aux_feat, bottleneck = self._decode(x)
        return SAMSPOutput(
            main=self.main_decoder.out_conv(main_feat),
            aux=self.aux_decoder.out_conv(aux_feat),
            fused=self.fusion_head(torch.cat([main_feat, aux_feat], dim=1)),
            bottleneck=bottleneck,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | SAMSPOutput:
        """Training mode: :class:`SAMSPOutput`; eval mode: fused logits ``(B, C, H, W)`` only."""
        if self.training:
            return self.forward_all(x)
        main_feat, aux_feat, _ = self._decode(x)
        return self.fusion_head(torch.cat([main_feat, aux_feat], dim=1))
