"""SAM on scribbles: embedding cache, pseudo-label merging and mask-decoder fine-tuning rounds.

Builds on :mod:`scribmed.networks.sam_backends` (the backends) and never imports the engine.
"""

from scribmed.sam.decoder_checkpoint import DECODER_BEST, DECODER_LAST, decoder_state_path, load_decoder, save_decoder
from scribmed.sam.decoder_finetune import finetune_decoder
from scribmed.sam.decoder_validation import predict_case, validation_dice
from scribmed.sam.embedding_cache import EmbeddingCache
from scribmed.sam.finetune_config import FinetuneConfig, FinetuneResult
from scribmed.sam.instance_prompting import (
    InstancePrompting,
    masks_to_instances,
    prompt_instances,
    refine_instances,
    sesam_instance_prompts,
)
from scribmed.sam.mask_selection import (
    SELECTION_RULES,
    MaskSelection,
    MaskSelectionConfig,
    MaskSelector,
    gather_masks,
    mask_stats,
    select_masks,
)
from scribmed.sam.merge import (
    CARDIAC_MERGE_PRIORITY,
    default_merge_priority,
    merge_class_masks,
    merge_logits,
    merge_volume_logits,
    merge_volume_masks,
    paint_order,
)
from scribmed.sam.pseudo_labels import (
    PromptConfig,
    decode_prompt_dict,
    generate_case,
    generate_pseudo_labels,
    slice_logits,
)
from scribmed.sam.quality import pseudo_label_dice
from scribmed.sam.rounds import run_pseudo_label_rounds
from scribmed.sam.stage_config import RoundsConfig, SamStageConfig

__all__ = [
    "CARDIAC_MERGE_PRIORITY",
    "DECODER_BEST",
    "DECODER_LAST",
    "EmbeddingCache",
    "FinetuneConfig",
    "FinetuneResult",
    "PromptConfig",
    "RoundsConfig",
    "SamStageConfig",
    "decoder_state_path",
    "default_merge_priority",
    "finetune_decoder",
    "generate_case",
    "generate_pseudo_labels",
    "load_decoder",
    "predict_case",
    "pseudo_label_dice",
    "run_pseudo_label_rounds",
    "save_decoder",
    "slice_logits",
    "validation_dice",
    "merge_class_masks",
    "merge_logits",
    "merge_volume_logits",
    "merge_volume_masks",
    "paint_order",
    "SELECTION_RULES",
    "MaskSelection",
    "MaskSelectionConfig",
    "MaskSelector",
    "decode_prompt_dict",
    "gather_masks",
    "mask_stats",
    "select_masks",
    "InstancePrompting",
    "masks_to_instances",
    "prompt_instances",
    "refine_instances",
    "sesam_instance_prompts",
]
