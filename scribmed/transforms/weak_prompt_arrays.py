"""SAM prompt rows of one slice from a weak label: boxes, points and full masks (array functions).

Every function here returns a prompt dict in **exactly**
:class:`~scribmed.transforms.prompts.ScribblePromptsd`'s format, so all rows of a slice go
through the same :func:`scribmed.sam.pseudo_labels.decode_prompts` /
:func:`~scribmed.sam.pseudo_labels.decode_prompt_dict` path in one batched decoder call:

- ``"classes"``: ``list[int]``, the class of each prompt row;
- ``"point_coords"``: float32 ``(K, P, 2)`` ``(x, y)``, positives first then negatives;
- ``"point_labels"``: int32 ``(K, P)``: 1 positive, 0 negative, -1 padding (at (0, 0), as
  ``pad_points``); ``P = 0`` for box-only rows;
- ``"boxes"``: float32 ``(K, 4)`` ``(x0, y0, x1, y1)`` or ``None`` (point prompts);
- ``"negative_sources"``: ``list[int | None]`` per row (``None`` here: weak negatives are "not
  this class" pixels of no stated class);
- ``"original_size"``: ``(H, W)``; ``"input_size"``: as given.
- Only with ``regions=True``: ``"regions"``, bool ``(K, H, W)``, each row's weak-label region
  ``W`` on the slice's own grid (the box's inside, the positive points' pixels, the class mask or
  the class scribble), what :func:`scribmed.sam.mask_selection.select_masks` scores against.

Coordinates follow :mod:`scribmed.data.weak_labels` (``x`` = column, ``y`` = row, inclusive box
corners) and are mapped into SAM's input frame with the helpers ScribblePromptsd uses
(:func:`~scribmed.transforms.prompt_frame.to_input_frame`,
:func:`~scribmed.transforms.prompt_frame.boxes_to_input_frame`) when ``input_size`` is given.

Row rules:

- **box**: one row per box; a class with several boxes (one per object) gives several rows, each
  tagged with its class in ``"classes"`` (classes in the order asked, boxes in stored order).
  Merge a class's rows after decoding by the pixel-wise **max of the logits** (= the union of the
  thresholded masks), :func:`merge_class_rows`.
- **point**: one row per class with at least one positive point (a class with only negatives is
  not prompted): its positives (label 1) then, unless ``negatives=False``, its negatives (label 0),
  padded with -1 to the longest row.
- **full**: one row per class present in the label map: the class mask's tight box (grown by
  ``box_margin``, clipped) **plus** ``n_points`` positive points drawn deterministically from the
  mask: :func:`~scribmed.transforms.prompt_points.scribble_points` on the mask, i.e. evenly spaced
  along the mask's skeleton (its medial line, so inside the structure), farthest-point sampling
  over the mask's pixels when the skeleton is too short.
- **scribble**: :class:`~scribmed.transforms.weak_prompts.WeakPromptsd` delegates to a
  :class:`~scribmed.transforms.prompts.ScribblePromptsd` (not reimplemented).
- **none**: no rows (an empty prompt dict).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from scribmed.data.weak_labels import Box, PointSet
from scribmed.transforms.prompt_boxes import mask_box
from scribmed.transforms.prompt_frame import (
    InputSize,
    boxes_to_input_frame,
    to_input_frame,
)
from scribmed.transforms.prompt_packing import PAD_LABEL, _pack
from scribmed.transforms.prompt_points import PointMode, _as_slice, scribble_points

__all__ = [
    "box_prompts",
    "empty_prompts",
    "mask_prompts",
    "merge_class_rows",
    "point_prompts",
]


def _hw(original_size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in original_size)
    if h < 1 or w < 1:
        raise ValueError(f"original_size must be positive (H, W), got {tuple(original_size)}")
    return h, w


def _finish(
    classes: list[int],
    rows: list[tuple[np.ndarray, np.ndarray]],
    boxes: list[Sequence[float]] | None,
    hw: tuple[int, int],
    input_size: InputSize | None,
    regions: list[np.ndarray] | None,
) -> dict[str, Any]:
    """Pack rows and map them into SAM's frame exactly as ScribblePromptsd does."""
    coords, labels = _pack(rows)
    box_arr = None if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if input_size is not None:
        valid = labels != PAD_LABEL
        coords[valid] = to_input_frame(coords[valid], hw, input_size)
        if box_arr is not None:
            box_arr = boxes_to_input_frame(box_arr, hw, input_size)
    out: dict[str, Any] = {
        "classes": classes,
        "point_coords": coords,
        "point_labels": labels,
        "boxes": box_arr,
        "negative_sources": [None] * len(classes),
        "original_size": hw,
        "input_size": input_size,
    }
    if regions is not None:
        out["regions"] = np.stack(regions) if regions else np.zeros((0, *hw), dtype=bool)
    return out


def empty_prompts(original_size: Sequence[int], input_size: InputSize | None = None, regions: bool = False) -> dict[str, Any]:
    """A prompt dict with no rows (``K = 0``; ``boxes`` ``None``)."""
    return _finish([], [], None, _hw(original_size), input_size, [] if regions else None)


def _order(present: Iterable[int], classes: Sequence[int] | None) -> list[int]:
    have = {int(k) for k in present}
    if classes is None:
        return sorted(have)
    return [int(k) for k in classes if int(k) in have]


def box_prompts(
    boxes: Mapping[int, Sequence[Box]],
    original_size: Sequence[int],
    classes: Sequence[int] | None = None,
    margin: int = 0,
    input_size: InputSize | None = None,
    regions: bool = False,
) -> dict[str, Any]:
    """Box prompts of one slice: one row per box, tagged with its class.

    Args:
        boxes: ``{class: [(x0, y0, x1, y1), ...]}`` inclusive pixel corners (``WeakLabel.boxes[z]``).
        original_size: the slice's ``(H, W)``.
        classes: classes to prompt, in this order (default: every class with a box, ascending).
        margin: pixels added on every side (then clipped to the image).
        input_size: SAM's input size (int longest side, or ``(h, w)``); ``None`` keeps pixels.
        regions: add ``"regions"``: each row's box inside (the weak box, without ``margin``).

    Returns:
        The prompt dict (module docstring); ``point_coords`` ``(K, 0, 2)``, ``boxes`` ``(K, 4)``.
    """
    h, w = _hw(original_size)
    out_classes, rows, out_boxes, masks = [], [], [], []
    for k in _order((c for c, bs in boxes.items() if len(bs)), classes):
        for box in boxes[k]:
            x0, y0, x1, y1 = (int(v) for v in box)
            if x0 > x1 or y0 > y1:
                raise ValueError(f"class {k}: box {[x0, y0, x1, y1]} has x0 > x1 or y0 > y1")
            out_classes.append(k)
            rows.append((np.zeros((0, 2), np.float32), np.zeros(0, np.int32)))
            out_boxes.append((max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, w - 1), min(y1 + margin, h - 1)))
            if regions:
                m = np.zeros((h, w), dtype=bool)
                m[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
                masks.append(m)
    return _finish(out_classes, rows, out_boxes, (h, w), input_size, masks if regions else None)


def _point_set(entry: Any) -> tuple[list, list]:
    if isinstance(entry, PointSet) or hasattr(entry, "positive"):
        return list(entry.positive), list(entry.negative)
    return list(entry), []  # a plain list of positive (x, y)


def point_prompts(
    points: Mapping[int, PointSet | Sequence[Sequence[int]]],
    original_size: Sequence[int],
    classes: Sequence[int] | None = None,
    negatives: bool = True,
    input_size: InputSize | None = None,
    regions: bool = False,
) -> dict[str, Any]:
    """Point prompts of one slice: one row per class with a positive point.

    Args:
        points: ``{class: PointSet}`` (``WeakLabel.points[z]``) or ``{class: [(x, y), ...]}`` positives.
        original_size: the slice's ``(H, W)``.
        classes: classes to prompt, in this order (default: every class with a positive, ascending).
        negatives: append the class's negative points (label 0).
        input_size: SAM's input size; ``None`` keeps pixels.
        regions: add ``"regions"``: each row's positive point pixels.

    Returns:
        The prompt dict (module docstring); ``boxes`` is ``None``.
    """
    h, w = _hw(original_size)
    sets = {int(k): _point_set(v) for k, v in points.items()}
    out_classes, rows, masks = [], [], []
    for k in _order((c for c, (pos, _) in sets.items() if pos), classes):
        pos, neg = sets[k]
        neg = neg if negatives else []
        coords = np.asarray([*pos, *neg], dtype=np.float32).reshape(-1, 2)
        labels = np.concatenate([np.ones(len(pos), np.int32), np.zeros(len(neg), np.int32)])
        out_classes.append(k)
        rows.append((coords, labels))
        if regions:
            m = np.zeros((h, w), dtype=bool)
            p = np.asarray(pos, dtype=np.int64).reshape(-1, 2)
            m[p[:, 1], p[:, 0]] = True
            masks.append(m)
    return _finish(out_classes, rows, None, (h, w), input_size, masks if regions else None)


def mask_prompts(
    label_2d: Any,
    classes: Sequence[int] | None = None,
    n_points: int = 10,
    box_margin: int = 0,
    points_mode: PointMode = "skeleton",
    input_size: InputSize | None = None,
    regions: bool = False,
) -> dict[str, Any]:
    """Box + point prompts from a full label slice: one row per present class.

    Each row: the class mask's tight box (:func:`~scribmed.transforms.prompt_boxes.mask_box`,
    grown by ``box_margin``) and ``n_points`` positives from
    :func:`~scribmed.transforms.prompt_points.scribble_points` on the mask (no dilation):
    ``"skeleton"`` = evenly along the mask's skeleton, ``"pixels"`` = farthest-point sampling.
    Deterministic.

    Args:
        label_2d: ``(H, W)`` or ``(1, H, W)`` integer label map.
        classes: classes to prompt, in this order (default: every non-zero value, ascending).
        n_points: positives per class.
        box_margin: pixels added around each box (clipped to the image).
        points_mode: ``"skeleton"`` or ``"pixels"``.
        input_size: SAM's input size; ``None`` keeps pixels.
        regions: add ``"regions"``: each row's class mask.
    """
    lab = _as_slice(label_2d, "label")
    hw = (int(lab.shape[0]), int(lab.shape[1]))
    present = [int(v) for v in np.unique(lab) if v != 0]
    out_classes, rows, boxes, masks = [], [], [], []
    for k in _order(present, classes):
        pts = scribble_points(lab, k, n_points, points_mode, dilate=0)
        out_classes.append(k)
        rows.append((pts, np.ones(len(pts), np.int32)))
        boxes.append(mask_box(lab == k, box_margin))
        if regions:
            masks.append(lab == k)
    return _finish(out_classes, rows, boxes, hw, input_size, masks if regions else None)


def merge_class_rows(logits: Any, classes: Sequence[int]) -> dict[int, Any]:
    """Merge prompt rows of the same class: ``(K, H, W)`` logits → ``{class: (H, W)}`` pixel-wise max.

    The max of the logits thresholded at ``t`` is the union of the rows' masks at ``t``. Numpy
    or torch in, the same out; classes in first-appearance order.
    """
    if len(classes) != int(logits.shape[0]):
        raise ValueError(f"{len(classes)} classes for {int(logits.shape[0])} logit rows")
    out: dict[int, Any] = {}
    for k in dict.fromkeys(int(c) for c in classes):
        idx = [i for i, c in enumerate(classes) if int(c) == k]
        rows = logits[idx]
        out[k] = rows.amax(dim=0) if isinstance(rows, torch.Tensor) else np.max(rows, axis=0)
    return out
