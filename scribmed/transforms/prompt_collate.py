"""Batching samples that carry SAM prompt dicts through a MONAI or PyTorch ``DataLoader``.

A prompt dict (:class:`~scribmed.transforms.prompts.ScribblePromptsd`'s output) is ragged: each
slice has its own number of scribbled classes ``K`` and the boxes may be ``None``, so PyTorch's
``default_collate`` (and MONAI's ``list_data_collate``) cannot stack it. :func:`collate_prompts`
collates everything else as MONAI does and keeps the prompt dicts as a list, one per sample, in
batch order::

    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_prompts)
    for batch in loader:
        images = batch["image"]                 # (B, C, H, W), stacked
        for b, prompts in enumerate(batch["prompts"]):
            ...                                  # one SAM decoder call per sample
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

__all__ = ["collate_prompts", "is_prompt_dict"]


def is_prompt_dict(value: Any) -> bool:
    """Whether ``value`` is a prompt dict (it has ``point_coords``)."""
    return isinstance(value, Mapping) and "point_coords" in value


def collate_prompts(batch: Sequence[Mapping[str, Any]], keys: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Collate dictionary samples, keeping their prompt dicts as per-sample lists.

    Args:
        batch: the samples (dicts), as a ``DataLoader`` hands them to ``collate_fn``.
        keys: the keys holding prompt dicts (default: every key whose value is one in the first sample).

    Returns:
        MONAI's ``list_data_collate`` of the other keys, plus ``{key: [prompts of sample 0, ...]}``.
    """
    from monai.data import list_data_collate

    if not batch:
        raise ValueError("collate_prompts: empty batch")
    keys = [k for k, v in batch[0].items() if is_prompt_dict(v)] if keys is None else list(keys)
    missing = [k for k in keys for item in batch if k not in item]
    if missing:
        raise ValueError(f"collate_prompts: a sample has no {missing[0]!r}")
    rest = [{k: v for k, v in item.items() if k not in keys} for item in batch]
    out = dict(list_data_collate(rest)) if rest[0] else {}
    out.update({k: [item[k] for item in batch] for k in keys})
    return out
