"""Merge SAM's per-class masks (one call per class) into one multi-class pseudo label.

SAM answers each class separately, so masks overlap and leave gaps. Overlaps are settled by a
documented **priority**: classes are painted in priority order onto a background (0) canvas, and
a later class overwrites an earlier one. For cardiac data SAM-SP paints Myo, then RV, then LV
(``CARDIAC_MERGE_PRIORITY = (2, 1, 3)``), so in overlaps LV > RV > Myo. Classes present in the
masks but missing from ``priority`` are painted after the listed ones, in ascending index (so they
win their overlaps; list every class to control this). ``priority=None`` paints in ascending
index. ``overlap="confidence"`` instead gives an overlapping pixel to the most confident class.

No pixel ever gets a class whose mask is False there; pixels no mask covers stay background.

Confidence maps keep what SAM said: per class the sigmoid of its logits, background
``1 - max`` over the foreground classes, stored float16 ``(C, H, W)`` with channel = class index
(classes SAM was not asked about: 0).

All functions work on any array shape ``(..., H, W)`` (a slice or a whole ``(S, H, W)`` volume);
``*_volume`` versions take one mapping per slice, as slice-wise SAM inference produces them.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
from monai.utils import convert_to_numpy
from scipy.special import expit

from scribmed.data.case import CARDIAC, ClassMap

__all__ = [
    "default_merge_priority",
    "CARDIAC_MERGE_PRIORITY",
    "merge_class_masks",
    "merge_logits",
    "merge_volume_logits",
    "merge_volume_masks",
    "paint_order",
]

#: SAM-SP's cardiac paint order: Myo, RV, LV (later wins, so LV > RV > Myo in overlaps).
CARDIAC_MERGE_PRIORITY: tuple[int, ...] = (2, 1, 3)


def default_merge_priority(class_map: ClassMap) -> Optional[tuple[int, ...]]:
    """SAM-SP's paint order Myo, RV, LV (LV > RV > Myo) for cardiac class maps; else ``None`` (ascending index)."""
    return CARDIAC_MERGE_PRIORITY if dict(class_map.names) == dict(CARDIAC.names) else None

OverlapRule = Literal["priority", "confidence"]


def paint_order(classes: Sequence[int], priority: Sequence[int] | None) -> list[int]:
    """The order classes are painted in (last wins): listed ones first, the rest by index."""
    present = sorted({int(k) for k in classes})
    if priority is None:
        return present
    listed = [int(k) for k in dict.fromkeys(int(p) for p in priority) if int(k) in present]
    return listed + [k for k in present if k not in listed]


def _check_classes(classes: Sequence[int]) -> None:
    bad = [k for k in classes if not 1 <= int(k) <= 255]
    if bad:
        raise ValueError(f"foreground classes must be in 1..255 (0 is background), got {bad}")


def _stack(
    arrays: Mapping[int, Any], shape: Sequence[int] | None, what: str
) -> tuple[dict[int, np.ndarray], tuple[int, ...]]:
    out = {int(k): np.asarray(convert_to_numpy(v)) for k, v in arrays.items()}
    _check_classes(list(out))
    shapes = {a.shape for a in out.values()}
    if shape is not None:
        shapes.add(tuple(int(s) for s in shape))
    if not shapes:
        raise ValueError(f"no {what} and no shape: cannot tell the label's shape")
    if len(shapes) > 1:
        raise ValueError(f"{what} and shape disagree: {sorted(shapes)}")
    (common,) = shapes
    if len(common) < 2:
        raise ValueError(f"{what} must be at least 2D (..., H, W), got shape {common}")
    return out, common


def merge_class_masks(
    masks: Mapping[int, Any], priority: Sequence[int] | None = None, shape: Sequence[int] | None = None
) -> np.ndarray:
    """Paint binary class masks into one uint8 label map; later classes in ``priority`` win.

    Args:
        masks: class index (1..255) → boolean mask ``(..., H, W)`` (nonzero = inside).
        priority: paint order, e.g. :data:`CARDIAC_MERGE_PRIORITY`; classes not listed are
            painted afterwards in ascending index; ``None``: ascending index.
        shape: the label's shape; required when ``masks`` is empty, checked otherwise.

    Returns:
        uint8 label map, 0 where no mask is set.

    Raises:
        ValueError: class outside 1..255, shapes disagree, or no masks and no shape.
    """
    arrays, common = _stack(masks, shape, "masks")
    label = np.zeros(common, dtype=np.uint8)
    for k in paint_order(list(arrays), priority):
        label[arrays[k].astype(bool)] = k
    return label


def merge_logits(
    logits: Mapping[int, Any],
    priority: Sequence[int] | None = None,
    threshold: float = 0.0,
    shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    overlap: OverlapRule = "priority",
) -> tuple[np.ndarray, np.ndarray]:
    """Threshold SAM's per-class logits, merge them, and keep the confidence maps.

    Args:
        logits: class index → SAM mask logits ``(..., H, W)`` (already at the label's size).
        priority: paint order for overlaps (see :func:`merge_class_masks`).
        threshold: a pixel is in a class's mask where its logit > ``threshold`` (SAM: 0.0).
        shape: the label's shape; required when ``logits`` is empty.
        num_classes: channels of the confidence array (default: largest class + 1, at least 1).
        overlap: ``"priority"`` (paint order) or ``"confidence"`` (most confident class wins
            the overlapping pixels; ties → the one painted later).

    Returns:
        ``(label, confidence)``: uint8 label ``(..., H, W)``; float16 ``(C, ..., H, W)`` with
        ``confidence[k] = sigmoid(logits[k])`` for each given class, 0 for classes not given,
        and ``confidence[0] = 1 - max_k confidence[k]``.

    Raises:
        ValueError: bad classes/shapes, ``num_classes`` too small, unknown ``overlap``.
    """
    if overlap not in ("priority", "confidence"):
        raise ValueError(f"overlap must be 'priority' or 'confidence', got {overlap!r}")
    arrays, common = _stack(logits, shape, "logits")
    c = num_classes if num_classes is not None else max(arrays, default=0) + 1
    if arrays and c <= max(arrays):
        raise ValueError(f"num_classes={c} is too small for class {max(arrays)}")
    conf = np.zeros((c, *common), dtype=np.float32)
    for k, v in arrays.items():
        conf[k] = expit(v.astype(np.float32))
    conf[0] = 1.0 - (conf[1:].max(axis=0) if c > 1 else 0.0)
    masks = {k: v > threshold for k, v in arrays.items()}
    if overlap == "priority":
        label = merge_class_masks(masks, priority, common)
    else:
        order = paint_order(list(arrays), priority)
        label = np.zeros(common, dtype=np.uint8)
        if order:
            score = np.stack([np.where(masks[k], conf[k], -1.0) for k in order])
            best = score.shape[0] - 1 - np.argmax(score[::-1], axis=0)  # ties → painted later
            label = np.where(score.max(axis=0) >= 0, np.asarray(order, np.uint8)[best], 0).astype(np.uint8)
    return label, conf.astype(np.float16)


def merge_volume_masks(
    slices: Sequence[Mapping[int, Any]], priority: Sequence[int] | None, slice_shape: Sequence[int]
) -> np.ndarray:
    """:func:`merge_class_masks` per slice → uint8 ``(S, H, W)``; a slice may hold any classes."""
    hw = tuple(int(s) for s in slice_shape)
    if not slices:
        return np.zeros((0, *hw), dtype=np.uint8)
    return np.stack([merge_class_masks(m, priority, hw) for m in slices])


def merge_volume_logits(
    slices: Sequence[Mapping[int, Any]],
    priority: Sequence[int] | None,
    slice_shape: Sequence[int],
    threshold: float = 0.0,
    num_classes: int | None = None,
    overlap: OverlapRule = "priority",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_logits` per slice → uint8 label ``(S, H, W)`` and float16 ``(C, S, H, W)``.

    ``num_classes`` defaults to the largest class over all slices + 1, so every slice's
    confidence has the same channels (channel-first, MONAI's layout).
    """
    hw = tuple(int(s) for s in slice_shape)
    if num_classes is None:
        num_classes = max((int(k) for m in slices for k in m), default=0) + 1
    if not slices:
        return np.zeros((0, *hw), np.uint8), np.zeros((num_classes, 0, *hw), np.float16)
    parts = [merge_logits(m, priority, threshold, hw, num_classes, overlap) for m in slices]
    return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts], axis=1)
