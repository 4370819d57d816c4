"""Networks: plain torch modules (no engine imports)."""

from scribmed.networks.unet_dual import ConvBlock, DualBranchUNet, UNetDecoder, UNetEncoder

__all__ = ["ConvBlock", "DualBranchUNet", "UNetDecoder", "UNetEncoder"]
