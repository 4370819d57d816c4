"""SAM on scribbles: embedding cache, pseudo-label merging and mask-decoder fine-tuning rounds.

Builds on :mod:`scribmed.networks.sam_backends` (the backends) and never imports the engine.
Names load on first access, so the light modules (``stage_config``, ``stage_options``) import
without torch.
"""

from scribmed.runtime.lazy_exports import lazy_exports

_EXPORTS = {
    "CARDIAC_MERGE_PRIORITY": "scribmed.sam.merge",
    "DECODER_BEST": "scribmed.sam.decoder_checkpoint",
    "DECODER_LAST": "scribmed.sam.decoder_checkpoint",
    "EmbeddingCache": "scribmed.sam.embedding_cache",
    "FinetuneConfig": "scribmed.sam.finetune_config",
    "FinetuneResult": "scribmed.sam.finetune_config",
    "InstancePrompting": "scribmed.sam.instance_prompting",
    "MaskSelection": "scribmed.sam.mask_selection",
    "MaskSelectionConfig": "scribmed.sam.mask_selection",
    "MaskSelector": "scribmed.sam.mask_selection",
    "PromptConfig": "scribmed.sam.pseudo_labels",
    "RoundsConfig": "scribmed.sam.stage_config",
    "SELECTION_RULES": "scribmed.sam.mask_selection",
    "SamStageConfig": "scribmed.sam.stage_config",
    "decode_prompt_dict": "scribmed.sam.pseudo_labels",
    "decoder_state_path": "scribmed.sam.decoder_checkpoint",
    "default_merge_priority": "scribmed.sam.merge",
    "finetune_decoder": "scribmed.sam.decoder_finetune",
    "gather_masks": "scribmed.sam.mask_selection",
    "generate_case": "scribmed.sam.pseudo_labels",
    "generate_pseudo_labels": "scribmed.sam.pseudo_labels",
    "load_decoder": "scribmed.sam.decoder_checkpoint",
    "mask_stats": "scribmed.sam.mask_selection",
    "masks_to_instances": "scribmed.sam.instance_prompting",
    "merge_class_masks": "scribmed.sam.merge",
    "merge_logits": "scribmed.sam.merge",
    "merge_volume_logits": "scribmed.sam.merge",
    "merge_volume_masks": "scribmed.sam.merge",
    "paint_order": "scribmed.sam.merge",
    "predict_case": "scribmed.sam.decoder_validation",
    "prompt_instances": "scribmed.sam.instance_prompting",
    "pseudo_label_dice": "scribmed.sam.quality",
    "refine_instances": "scribmed.sam.instance_prompting",
    "run_pseudo_label_rounds": "scribmed.sam.rounds",
    "save_decoder": "scribmed.sam.decoder_checkpoint",
    "select_masks": "scribmed.sam.mask_selection",
    "sesam_instance_prompts": "scribmed.sam.instance_prompting",
    "slice_logits": "scribmed.sam.pseudo_labels",
    "validation_dice": "scribmed.sam.decoder_validation",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
