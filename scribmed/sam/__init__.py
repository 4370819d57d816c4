"""SAM on scribbles: embedding cache and pseudo-label merging (generation and decoder fine-tuning to follow).

Builds on :mod:`scribmed.networks.sam_backends` (the backends) and never imports the engine.
"""

from scribmed.sam.embedding_cache import EmbeddingCache
from scribmed.sam.merge import (
    CARDIAC_MERGE_PRIORITY,
    merge_class_masks,
    merge_logits,
    merge_volume_logits,
    merge_volume_masks,
    paint_order,
)

__all__ = [
    "CARDIAC_MERGE_PRIORITY",
    "EmbeddingCache",
    "merge_class_masks",
    "merge_logits",
    "merge_volume_logits",
    "merge_volume_masks",
    "paint_order",
]
