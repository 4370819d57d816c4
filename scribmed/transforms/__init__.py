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
from scribmed.transforms.copy_paste import (
    ARPCopyPaste,
    ARPCopyPasted,
    arp_copy_paste,
    arp_draw,
    paste_instances,
)
from scribmed.transforms.instance_split import (
    SplitInstances,
    SplitInstancesd,
    split_instances,
)
from scribmed.transforms.intensity import (
    ScaleIntensityPercentile,
    ScaleIntensityPercentiled,
)
from scribmed.transforms.largest_component import keep_largest_component
from scribmed.transforms.prompt_boxes import mask_box, scribble_box
from scribmed.transforms.prompt_collate import collate_prompts, is_prompt_dict
from scribmed.transforms.prompt_frame import (
    boxes_from_input_frame,
    boxes_to_input_frame,
    from_input_frame,
    input_frame_shape,
    to_input_frame,
)
from scribmed.transforms.prompt_packing import PAD_LABEL
from scribmed.transforms.prompt_points import (
    CARDIAC_NEGATIVE_PRIORITY,
    default_negative_priority,
    negative_points,
    scribble_points,
)
from scribmed.transforms.prompts import ScribblePromptsd
from scribmed.transforms.resize import (
    ResizeSlice,
    ResizeSliced,
    resize_back,
    resize_slices,
)
from scribmed.transforms.sesam_points import SeSAMPointsd
from scribmed.transforms.stochastic_points import (
    StochasticInstancePoints,
    StochasticInstancePointsd,
    sample_instance_points,
)
from scribmed.transforms.weak_prompt_arrays import (
    box_prompts,
    empty_prompts,
    mask_prompts,
    merge_class_rows,
    point_prompts,
)
from scribmed.transforms.weak_prompts import (
    PROMPT_SUPERVISION_TYPES,
    BoxPromptsd,
    MaskPromptsd,
    PointPromptsd,
    WeakPromptsd,
)

__all__ = [
    "CARDIAC_NEGATIVE_PRIORITY",
    "PAD_LABEL",
    "ScribblePromptsd",
    "SeSAMPointsd",
    "boxes_from_input_frame",
    "boxes_to_input_frame",
    "collate_prompts",
    "default_negative_priority",
    "is_prompt_dict",
    "keep_largest_component",
    "from_input_frame",
    "input_frame_shape",
    "mask_box",
    "negative_points",
    "scribble_box",
    "scribble_points",
    "to_input_frame",
    "PROMPT_SUPERVISION_TYPES",
    "BoxPromptsd",
    "MaskPromptsd",
    "PointPromptsd",
    "WeakPromptsd",
    "box_prompts",
    "empty_prompts",
    "mask_prompts",
    "merge_class_rows",
    "point_prompts",
    "SplitInstances",
    "SplitInstancesd",
    "split_instances",
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
    "ARPCopyPaste",
    "ARPCopyPasted",
    "arp_copy_paste",
    "arp_draw",
    "paste_instances",
    "StochasticInstancePoints",
    "StochasticInstancePointsd",
    "sample_instance_points",
]
