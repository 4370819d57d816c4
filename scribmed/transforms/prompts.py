"""SAM prompts from scribbles and masks: points, negatives, boxes and SAM's input frame.

All coordinates are ``(x, y) = (column, row)`` in pixels, SAM's convention; a pixel's centre is at
its integer index (SAM's prompt encoder adds the half pixel itself). Functions work on one 2D
slice ``(H, W)``; the dictionary transforms accept ``(H, W)`` or ``(1, H, W)`` arrays or tensors.

Positive points (SAM-SP): ``n`` points evenly spaced *along* the skeleton of
the slightly dilated class scribble. The skeleton is walked as a graph (depth first from one end of
its longest path), so "evenly spaced" means equal arc length along the stroke; several strokes
share the ``n`` points in proportion to their lengths. Deterministic.

Negative points: points of exactly one other structure, the first in the class's priority list
that has a scribble on the slice, else the background scribble (value 0).

Deliberate differences from the SAM-SP reference code: background negatives come from the
background scribble (0), never from the *unlabeled* value; a slice where a class has no scribble
just omits that class (the reference blanks the whole slice when Myo is missing); the dilation never
grows into another class's scribble when the ignore value is known.

SeSAM points, K random points per connected instance of a mask, are drawn
by :class:`~scribmed.transforms.sesam_points.SeSAMPointsd`.

This module holds :class:`ScribblePromptsd`; the functions it builds on live next to it:
:mod:`~scribmed.transforms.prompt_points` (positive and negative points),
:mod:`~scribmed.transforms.prompt_boxes`, :mod:`~scribmed.transforms.prompt_frame` (SAM's input
frame) and :mod:`~scribmed.transforms.prompt_packing` (padded prompt arrays).
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from scribmed.data.case import ClassMap
from scribmed.transforms.prompt_boxes import scribble_box
from scribmed.transforms.prompt_frame import InputSize, boxes_to_input_frame, to_input_frame
from scribmed.transforms.prompt_packing import PAD_LABEL, _output_keys, _pack
from scribmed.transforms.prompt_points import (
    PointMode,
    _as_slice,
    default_negative_priority,
    negative_points,
    scribble_points,
)

__all__ = [
    "ScribblePromptsd",
]

NegativeMode = Literal["neighbour", "background", "none"]


# --------------------------------------------------------------------------------------------
# dictionary transforms


class ScribblePromptsd(MapTransform):
    """SAM point (and box) prompts for every foreground class scribbled on a slice.

    Output ``d[output_key]`` is a dict:

    - ``"classes"``: ``list[int]``, the foreground classes with a scribble on the slice (one SAM
      call each; classes without a scribble are omitted, the slice is never blanked);
    - ``"point_coords"``: float32 ``(K, P, 2)`` ``(x, y)``, positives first then negatives;
    - ``"point_labels"``: int32 ``(K, P)``: 1 positive, 0 negative, -1 padding (SAM's padding
      label, at coordinate (0, 0)) where a class has fewer than ``P`` points;
    - ``"boxes"``: float32 ``(K, 4)`` ``(x0, y0, x1, y1)`` scribble boxes, or ``None``;
    - ``"negative_sources"``: ``list[int | None]``, the label value each class's negatives came
      from;
    - ``"original_size"``: ``(H, W)``; ``"input_size"``: the ``input_size`` argument.

    Coordinates are in SAM's input frame when ``input_size`` is given (see
    :func:`to_input_frame`), else in the slice's pixels.

    Args:
        keys: scribble key(s); each value ``(H, W)`` or ``(1, H, W)``.
        class_map: gives the foreground classes and the ignore value.
        classes: explicit foreground classes (overrides ``class_map.foreground``).
        ignore_index: unlabeled value (default ``class_map.ignore_index``).
        n_points: positives per class.
        n_negatives: negatives per class (default ``n_points``).
        mode: ``"skeleton"`` or ``"pixels"`` (see :func:`scribble_points`).
        dilate: dilation before skeletonising.
        negatives: ``"neighbour"`` (priority list, then background scribble), ``"background"``
            (background scribble only) or ``"none"``.
        priority: class → neighbour classes for negatives (default
            :func:`default_negative_priority`, SAM-SP's order for cardiac data).
        background_index: the background scribble's value.
        boxes: also return each class's scribble box.
        box_margin: pixels added around scribble boxes (original frame).
        input_size: SAM's input size (int, longest side) or ``(h, w)``; ``None`` keeps pixels.
        output_key: where the prompt dict goes (one per key).
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: neither ``class_map`` nor ``classes`` given, bad options or a non-2D slice.
    """

    def __init__(
        self,
        keys: KeysCollection = ("scribble",),
        class_map: ClassMap | None = None,
        classes: Sequence[int] | None = None,
        ignore_index: int | None = None,
        n_points: int = 10,
        n_negatives: int | None = None,
        mode: PointMode = "skeleton",
        dilate: int = 1,
        negatives: NegativeMode = "neighbour",
        priority: Mapping[int, Sequence[int]] | None = None,
        background_index: int = 0,
        boxes: bool = False,
        box_margin: int = 0,
        input_size: InputSize | None = None,
        output_key: str | Sequence[str] = "prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if class_map is None and classes is None:
            raise ValueError("ScribblePromptsd needs class_map or classes")
        if negatives not in ("neighbour", "background", "none"):
            raise ValueError(f"negatives must be 'neighbour', 'background' or 'none', got {negatives!r}")
        if mode not in ("skeleton", "pixels"):
            raise ValueError(f"mode must be 'skeleton' or 'pixels', got {mode!r}")
        chosen = classes if classes is not None else class_map.foreground  # type: ignore[union-attr]
        self.classes = [int(k) for k in chosen]
        if ignore_index is None and class_map is not None:
            ignore_index = class_map.ignore_index
        self.ignore_index = ignore_index
        self.n_points = int(n_points)
        self.n_negatives = self.n_points if n_negatives is None else int(n_negatives)
        self.mode: PointMode = mode
        self.dilate = int(dilate)
        self.negatives: NegativeMode = negatives
        self.priority = dict(priority) if priority is not None else default_negative_priority(class_map)
        self.background_index = int(background_index)
        self.boxes = bool(boxes)
        self.box_margin = int(box_margin)
        self.input_size = input_size
        self.output_keys = _output_keys(self.keys, output_key)

    def prompts(self, scribble: Any) -> dict[str, Any]:
        """The prompt dict (see the class docstring) for one scribble slice."""
        s = _as_slice(scribble)
        hw = (int(s.shape[0]), int(s.shape[1]))
        present = set(np.unique(s).tolist())
        classes, rows, sources, boxes = [], [], [], []
        for k in self.classes:
            if k not in present:
                continue
            pos = scribble_points(s, k, self.n_points, self.mode, self.dilate, self.ignore_index)
            neg, source = np.zeros((0, 2), np.float32), None
            if self.negatives != "none" and self.n_negatives > 0:
                neg, source = negative_points(
                    s,
                    k,
                    self.priority if self.negatives == "neighbour" else {},
                    n=self.n_negatives,
                    use_background=True,
                    background_index=self.background_index,
                    mode=self.mode,
                    dilate=self.dilate,
                    ignore_index=self.ignore_index,
                )
            coords = np.concatenate([pos, neg], axis=0)
            labels = np.concatenate([np.ones(len(pos), np.int32), np.zeros(len(neg), np.int32)])
            classes.append(k)
            rows.append((coords, labels))
            sources.append(source)
            if self.boxes:
                boxes.append(scribble_box(s, k, self.box_margin))
        coords, labels = _pack(rows)
        box_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if self.boxes else None
        if self.input_size is not None:
            valid = labels != PAD_LABEL
            coords[valid] = to_input_frame(coords[valid], hw, self.input_size)
            if box_arr is not None:
                box_arr = boxes_to_input_frame(box_arr, hw, self.input_size)
        return {
            "classes": classes,
            "point_coords": coords,
            "point_labels": labels,
            "boxes": box_arr,
            "negative_sources": sources,
            "original_size": hw,
            "input_size": self.input_size,
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = self.prompts(d[key])
        return d
