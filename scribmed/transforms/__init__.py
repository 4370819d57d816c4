"""MONAI-style transforms (array ``Foo`` and dictionary ``Food`` versions); no engine imports."""

from scribmed.transforms.augment import (
    DMPLSAugmentd,
    RandRot90Flip,
    RandRot90Flipd,
    RandRotateSmall,
    RandRotateSmalld,
    rot90_flip,
    rotate_slices,
)
from scribmed.transforms.intensity import (
    ScaleIntensityPercentile,
    ScaleIntensityPercentiled,
)
from scribmed.transforms.prompts import (
    CARDIAC_NEGATIVE_PRIORITY,
    PAD_LABEL,
    ScribblePromptsd,
    SeSAMPointsd,
    boxes_from_input_frame,
    boxes_to_input_frame,
    default_negative_priority,
    from_input_frame,
    input_frame_shape,
    instance_points,
    mask_box,
    negative_points,
    scribble_box,
    scribble_points,
    to_input_frame,
)
from scribmed.transforms.resize import (
    ResizeSlice,
    ResizeSliced,
    resize_back,
    resize_slices,
)

__all__ = [
    "CARDIAC_NEGATIVE_PRIORITY",
    "PAD_LABEL",
    "ScribblePromptsd",
    "SeSAMPointsd",
    "boxes_from_input_frame",
    "boxes_to_input_frame",
    "default_negative_priority",
    "from_input_frame",
    "input_frame_shape",
    "instance_points",
    "mask_box",
    "negative_points",
    "scribble_box",
    "scribble_points",
    "to_input_frame",
    "DMPLSAugmentd",
    "RandRot90Flip",
    "RandRot90Flipd",
    "RandRotateSmall",
    "RandRotateSmalld",
    "ResizeSlice",
    "ResizeSliced",
    "ScaleIntensityPercentile",
    "ScaleIntensityPercentiled",
    "resize_back",
    "resize_slices",
    "rot90_flip",
    "rotate_slices",
]
