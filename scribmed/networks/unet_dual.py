"""Dual-branch 2D U-Net of DMPLS (Luo et al., MICCAI 2022): one encoder, two decoders.

The main decoder gives the prediction used at inference. The auxiliary decoder has its own
weights and sees every encoder feature map through channel ("feature") dropout during training,
so the two branches disagree enough for their mixture to be a useful pseudo label.

Shapes: input ``(B, in_channels, H, W)`` with H and W divisible by ``2 ** (len(features) - 1)``
(16 for the default five stages); each output ``(B, num_classes, H, W)`` logits.

The modules are TorchScript-scriptable (``torch.jit.script``, and so ``python -m monai.bundle
ckpt_export``): forward methods use ``typing.List``/``Tuple``/``Union`` annotations and only
constructs TorchScript compiles; the scripted network computes exactly what the eager one does.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["UPSAMPLE_MODES", "ConvBlock", "DualBranchUNet", "UNetDecoder", "UNetEncoder", "check_unet_input"]


class ConvBlock(nn.Sequential):
    """conv3x3-BN-LeakyReLU-Dropout-conv3x3-BN-LeakyReLU; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


def check_unet_input(x: torch.Tensor, in_channels: int, divisor: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with H and W multiples of ``divisor``."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input (B, {in_channels}, H, W), got {_shape_text(x.shape)}")
    if x.shape[-2] % divisor != 0 or x.shape[-1] % divisor != 0:
        raise ValueError(f"input spatial size {_shape_text(x.shape[-2:])} is not divisible by {divisor}")


def _shape_text(shape: List[int]) -> str:
    """``(2, 1, 64, 64)``: a shape as a tuple prints, in eager and scripted code alike."""
    return "(" + ", ".join([str(s) for s in shape]) + ")"


class UNetEncoder(nn.Module):
    """Conv blocks with 2x2 max-pooling between stages; returns every stage's feature map.

    Args:
        in_channels: image channels.
        features: channels per stage, shallow to deep.
        dropout: dropout probability inside each stage's conv block.
    """

    def __init__(self, in_channels: int, features: Sequence[int], dropout: Sequence[float]) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        prev = in_channels
        for i, (ch, p) in enumerate(zip(features, dropout)):
            block = ConvBlock(prev, ch, p)
            self.stages.append(block if i == 0 else nn.Sequential(nn.MaxPool2d(2), block))
            prev = ch

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats: List[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


UPSAMPLE_MODES = ("transpose", "bilinear")


class _BilinearUp(nn.Sequential):
    """1x1 conv to the skip width, then x2 bilinear upsampling (``align_corners=True``)."""

    def __init__(self, deep_channels: int, skip_channels: int) -> None:
        super().__init__(
            nn.Conv2d(deep_channels, skip_channels, kernel_size=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        )


class _UpBlock(nn.Module):
    """x2 upsampling, concatenation with the skip, conv block (no dropout).

    ``upsample="transpose"`` is the 2x2 transposed convolution of the DMPLS paper's text;
    ``"bilinear"`` is what the public WSL4MIS code actually runs (its ``bilinear: False`` flag is
    never passed on): a 1x1 convolution followed by bilinear upsampling.
    """

    def __init__(self, deep_channels: int, skip_channels: int, upsample: str = "transpose") -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.up: nn.Module = (
            nn.ConvTranspose2d(deep_channels, skip_channels, kernel_size=2, stride=2)
            if upsample == "transpose"
            else _BilinearUp(deep_channels, skip_channels)
        )
        self.conv = ConvBlock(2 * skip_channels, skip_channels, dropout=0.0)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(deep)], dim=1))


class UNetDecoder(nn.Module):
    """U-Net decoder from the deepest feature up to full resolution, then a 3x3 output conv."""

    def __init__(self, features: Sequence[int], num_classes: int, upsample: str = "transpose") -> None:
        super().__init__()
        feats = list(features)
        self.ups = nn.ModuleList(
            _UpBlock(feats[i + 1], feats[i], upsample) for i in reversed(range(len(feats) - 1))
        )
        self.out_conv = nn.Conv2d(feats[0], num_classes, kernel_size=3, padding=1)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        deepest = len(feats) - 1
        for i, up in enumerate(self.ups):  # skips from the second-deepest feature up to the shallowest
            x = up(x, feats[deepest - 1 - i])
        return self.out_conv(x)


class DualBranchUNet(nn.Module):
    """DMPLS network: shared encoder, main decoder and auxiliary decoder with feature dropout.

    ``forward`` returns ``(main_logits, aux_logits)`` in training mode and ``main_logits`` only in
    eval mode, so MONAI inferers (``SimpleInferer``, ``SlidingWindowInferer``) work unchanged.
    ``forward_both`` returns both in either mode (the auxiliary branch's feature dropout is active
    in training mode only, unlike the reference code whose functional dropout is always on).

    Args:
        in_channels: image channels (1 for MRI).
        num_classes: output classes including background.
        features: encoder channels per stage (DMPLS: 16/32/64/128/256).
        dropout: dropout per encoder stage (DMPLS: 0.05/0.1/0.2/0.3/0.5); decoders use none.
        aux_feature_dropout: channel-dropout probability (``nn.Dropout2d``) applied to each encoder
            map before the auxiliary decoder.
        upsample: decoder up-steps, ``"bilinear"`` (default: 1x1 conv + bilinear, what the
            WSL4MIS reference code runs and what produced the paper's numbers; it learns much faster
            at short budgets, see docs/recipes.md) or ``"transpose"`` (2x2 transposed conv, the
            DMPLS paper's text; scribmed's default before the DMPLS parity study).

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
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if len(features) != len(dropout) or len(features) < 2:
            raise ValueError(
                f"features and dropout need the same length >= 2, got {len(features)} and {len(dropout)}"
            )
        if not 0.0 <= aux_feature_dropout < 1.0:
            raise ValueError(f"aux_feature_dropout must be in [0, 1), got {aux_feature_dropout}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = tuple(int(f) for f in features)
        self.encoder = UNetEncoder(in_channels, self.features, tuple(float(p) for p in dropout))
        self.upsample = upsample
        self.main_decoder = UNetDecoder(self.features, num_classes, upsample)
        self.aux_decoder = UNetDecoder(self.features, num_classes, upsample)
        self.feature_dropout = nn.Dropout2d(aux_feature_dropout)
        self._divisor = 2 ** (len(self.features) - 1)

    __jit_unused_properties__ = ["divisor"]

    @property
    def divisor(self) -> int:
        """Input height and width must be multiples of this."""
        return self._divisor

    def _encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        check_unet_input(x, self.in_channels, self._divisor)
        return self.encoder(x)

    def forward_both(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Main and auxiliary logits, each ``(B, num_classes, H, W)``, in any mode."""
        feats = self._encode(x)
        main = self.main_decoder(feats)
        aux = self.aux_decoder([self.feature_dropout(f) for f in feats])
        return main, aux

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Training mode: ``(main_logits, aux_logits)``; eval mode: ``main_logits`` only."""
        if self.training:
            return self.forward_both(x)
        return self.main_decoder(self._encode(x))
