"""SAM prompts from any weak label type: boxes, points, full masks, and a dispatcher with scribbles.

Every function and transform here returns a prompt dict in **exactly**
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
- **scribble**: delegated to a :class:`ScribblePromptsd` (not reimplemented).
- **none**: no rows (an empty prompt dict).
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from scribmed.data.case import ClassMap
from scribmed.data.weak_labels import SUPERVISION_TYPES, Box, PointSet, WeakLabel
from scribmed.transforms.prompt_boxes import mask_box
from scribmed.transforms.prompt_frame import (
    InputSize,
    boxes_to_input_frame,
    to_input_frame,
)
from scribmed.transforms.prompt_packing import PAD_LABEL, _output_keys, _pack
from scribmed.transforms.prompt_points import PointMode, _as_slice, scribble_points
from scribmed.transforms.prompts import ScribblePromptsd

__all__ = [
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
]

#: Supervision types :class:`WeakPromptsd` prompts from (``"none"`` gives no rows): all of them.
PROMPT_SUPERVISION_TYPES = SUPERVISION_TYPES


# --------------------------------------------------------------------------------------------
# array functions


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


# --------------------------------------------------------------------------------------------
# dictionary transforms


def _foreground(class_map: ClassMap | None, classes: Sequence[int] | None) -> list[int] | None:
    if classes is not None:
        return [int(k) for k in classes]
    if class_map is not None:
        return [int(k) for k in class_map.foreground]
    return None


def _weak_slice(d: Mapping[Hashable, Any], weak: Any, slice_key: str | None, kind: str) -> int:
    if not isinstance(weak, WeakLabel):
        raise TypeError(f"expected a WeakLabel, got {type(weak).__name__}")
    if weak.kind != kind:
        raise ValueError(f"expected a {kind} weak label, got a {weak.kind} one (case {weak.case_id!r})")
    if slice_key is not None and slice_key in d:
        z = int(d[slice_key])
    elif weak.shape[0] == 1:
        z = 0
    else:
        raise KeyError(f"slice index key {slice_key!r} missing and the weak label has {weak.shape[0]} slices")
    if not 0 <= z < weak.shape[0]:
        raise ValueError(f"slice {z} is outside the weak label's {weak.shape[0]} slices")
    return z


class _WeakMap(MapTransform):
    """Shared init of the weak-label dictionary transforms (one output key per key; the classes,
    SAM frame and region flag every one of them takes)."""

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str],
        allow_missing_keys: bool,
        class_map: ClassMap | None,
        classes: Sequence[int] | None,
        input_size: InputSize | None,
        regions: bool,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_key)
        self.classes = _foreground(class_map, classes)
        self.input_size = input_size
        self.regions = bool(regions)

    def prompts(self, d: Mapping[Hashable, Any], value: Any) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = self.prompts(d, d[key])
        return d


class BoxPromptsd(_WeakMap):
    """Box prompts (:func:`box_prompts`) of one slice of a box :class:`WeakLabel`.

    Input: ``d[key]`` a ``kind="box"`` WeakLabel and ``d[slice_key]`` the slice index ``z`` (may be
    absent for a one-slice label). Output ``d[output_key]``: the prompt dict, ``original_size`` =
    the label's ``(H, W)``.

    Args:
        keys: weak-label key(s).
        class_map / classes: classes to prompt and their row order (default: all, ascending).
        margin, input_size, regions: as :func:`box_prompts`.
        slice_key: the key holding ``z``.
        output_key: one per key.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection = ("weak",),
        class_map: ClassMap | None = None,
        classes: Sequence[int] | None = None,
        margin: int = 0,
        input_size: InputSize | None = None,
        regions: bool = False,
        slice_key: str | None = "slice",
        output_key: str | Sequence[str] = "prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_key, allow_missing_keys, class_map, classes, input_size, regions)
        self.margin = int(margin)
        self.slice_key = slice_key

    def prompts(self, d: Mapping[Hashable, Any], value: Any) -> dict[str, Any]:
        z = _weak_slice(d, value, self.slice_key, "box")
        return box_prompts(value.boxes.get(z, {}), value.shape[1:], self.classes, self.margin,
                           self.input_size, self.regions)


class PointPromptsd(_WeakMap):
    """Point prompts (:func:`point_prompts`) of one slice of a point :class:`WeakLabel`.

    Input as :class:`BoxPromptsd` (a ``kind="point"`` WeakLabel and ``d[slice_key]``).

    Args:
        keys: weak-label key(s).
        class_map / classes: classes to prompt and their row order.
        negatives, input_size, regions: as :func:`point_prompts`.
        slice_key, output_key, allow_missing_keys: as :class:`BoxPromptsd`.
    """

    def __init__(
        self,
        keys: KeysCollection = ("weak",),
        class_map: ClassMap | None = None,
        classes: Sequence[int] | None = None,
        negatives: bool = True,
        input_size: InputSize | None = None,
        regions: bool = False,
        slice_key: str | None = "slice",
        output_key: str | Sequence[str] = "prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_key, allow_missing_keys, class_map, classes, input_size, regions)
        self.negatives = bool(negatives)
        self.slice_key = slice_key

    def prompts(self, d: Mapping[Hashable, Any], value: Any) -> dict[str, Any]:
        z = _weak_slice(d, value, self.slice_key, "point")
        return point_prompts(value.points.get(z, {}), value.shape[1:], self.classes, self.negatives,
                             self.input_size, self.regions)


class MaskPromptsd(_WeakMap):
    """Box + point prompts (:func:`mask_prompts`) from a full label slice ``d[key]`` (``(H, W)`` or ``(1, H, W)``).

    Args:
        keys: label key(s).
        class_map / classes: classes to prompt and their row order (default: every non-zero value).
        n_points, box_margin, points_mode, input_size, regions: as :func:`mask_prompts`.
        output_key, allow_missing_keys: as :class:`BoxPromptsd`.
    """

    def __init__(
        self,
        keys: KeysCollection = ("label",),
        class_map: ClassMap | None = None,
        classes: Sequence[int] | None = None,
        n_points: int = 10,
        box_margin: int = 0,
        points_mode: PointMode = "skeleton",
        input_size: InputSize | None = None,
        regions: bool = False,
        output_key: str | Sequence[str] = "prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        if points_mode not in ("skeleton", "pixels"):
            raise ValueError(f"points_mode must be 'skeleton' or 'pixels', got {points_mode!r}")
        super().__init__(keys, output_key, allow_missing_keys, class_map, classes, input_size, regions)
        self.n_points = int(n_points)
        self.box_margin = int(box_margin)
        self.points_mode: PointMode = points_mode

    def prompts(self, d: Mapping[Hashable, Any], value: Any) -> dict[str, Any]:
        return mask_prompts(value, self.classes, self.n_points, self.box_margin, self.points_mode,
                            self.input_size, self.regions)


class WeakPromptsd(MapTransform):
    """The prompts of one slice from whatever supervision its case has.

    Reads ``d[supervision_key]`` (or the fixed ``supervision``), one of
    :data:`PROMPT_SUPERVISION_TYPES`, and writes ``d[output_key]``, the prompt dict (module
    docstring), from:

    - ``"box"`` / ``"point"``: ``d[weak_key]`` (the case's :class:`WeakLabel` of that kind) at
      slice ``d[slice_key]`` (as :class:`BoxPromptsd` / :class:`PointPromptsd`);
    - ``"scribble"``: ``d[scribble_key]`` (``(H, W)`` slice), **delegated** to
      ``scribble_prompter.prompts`` (a :class:`ScribblePromptsd`; default one built from
      ``class_map`` / ``classes``, ``input_size`` and ``scribble_options``), so the output is
      identical to ScribblePromptsd's;
    - ``"full"``: ``d[label_key]`` (``(H, W)`` slice): the mask's box plus ``n_points`` points
      along its skeleton per class (:func:`mask_prompts`);
    - ``"none"``: no rows (``original_size`` from whichever of scribble, label, weak, image is present).

    Rows are restricted to ``class_map.foreground`` / ``classes`` (in that order) for every type.

    Args:
        class_map / classes: the foreground classes (one of them is required for scribbles).
        supervision: a fixed type for every call (then ``supervision_key`` is not read).
        input_size: SAM's input size for every type; ``None`` keeps pixels.
        box_margin: pixels around weak boxes and full-mask boxes.
        n_points: positives per class for ``"full"``.
        point_negatives: keep the negatives of point labels.
        full_points_mode: ``"skeleton"`` or ``"pixels"`` for ``"full"``.
        scribble_prompter: the ScribblePromptsd to delegate to (e.g. ``PromptConfig.prompter``);
            its ``input_size`` must equal ``input_size``.
        scribble_options: keyword arguments of the default ScribblePromptsd (e.g. ``n_points``,
            ``negatives``, ``boxes``, ``box_margin``).
        regions: add ``"regions"`` (each row's weak-label region) for every type.
        supervision_key, scribble_key, label_key, weak_key, slice_key, image_key: input keys.
        output_key: where the prompt dict goes.
        allow_missing_keys: return the dict unchanged when the supervision type is absent.
    """

    def __init__(
        self,
        class_map: ClassMap | None = None,
        classes: Sequence[int] | None = None,
        supervision: str | None = None,
        input_size: InputSize | None = None,
        box_margin: int = 0,
        n_points: int = 10,
        point_negatives: bool = True,
        full_points_mode: PointMode = "skeleton",
        scribble_prompter: ScribblePromptsd | None = None,
        scribble_options: Mapping[str, Any] | None = None,
        regions: bool = False,
        supervision_key: str = "supervision",
        scribble_key: str = "scribble",
        label_key: str = "label",
        weak_key: str = "weak",
        slice_key: str = "slice",
        image_key: str = "image",
        output_key: str = "prompts",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, (supervision_key,), allow_missing_keys)
        if supervision is not None and supervision not in PROMPT_SUPERVISION_TYPES:
            raise ValueError(f"supervision must be one of {', '.join(PROMPT_SUPERVISION_TYPES)}, got {supervision!r}")
        self.supervision = supervision
        self.classes = _foreground(class_map, classes)
        self.input_size = input_size
        self.regions = bool(regions)
        if scribble_prompter is None:
            if self.classes is not None:
                scribble_prompter = ScribblePromptsd(keys=(scribble_key,), class_map=class_map, classes=classes,
                                                     input_size=input_size, **dict(scribble_options or {}))
        else:
            if scribble_options:
                raise ValueError("give scribble_prompter or scribble_options, not both")
            if scribble_prompter.input_size != input_size:
                raise ValueError(f"scribble_prompter.input_size {scribble_prompter.input_size!r} differs from "
                                 f"input_size {input_size!r}: all types must share SAM's frame")
        self.scribble_prompter = scribble_prompter
        self.box = BoxPromptsd((weak_key,), classes=self.classes, margin=box_margin, input_size=input_size,
                               regions=regions, slice_key=slice_key)
        self.point = PointPromptsd((weak_key,), classes=self.classes, negatives=point_negatives,
                                   input_size=input_size, regions=regions, slice_key=slice_key)
        self.full = MaskPromptsd((label_key,), classes=self.classes, n_points=n_points, box_margin=box_margin,
                                 points_mode=full_points_mode, input_size=input_size, regions=regions)
        self.supervision_key = supervision_key
        self.scribble_key, self.label_key, self.weak_key = scribble_key, label_key, weak_key
        self.image_key = image_key
        self.output_key = output_key

    def _hw_of(self, d: Mapping[Hashable, Any]) -> tuple[int, int]:
        for key in (self.scribble_key, self.label_key, self.image_key):
            if key in d:
                s = _as_slice(d[key], str(key))
                return int(s.shape[0]), int(s.shape[1])
        if isinstance(d.get(self.weak_key), WeakLabel):
            return tuple(int(v) for v in d[self.weak_key].shape[1:])  # type: ignore[return-value]
        raise KeyError(f"supervision 'none': no {self.scribble_key!r}, {self.label_key!r}, {self.weak_key!r} "
                       f"or {self.image_key!r} to take the slice size from")

    def prompts(self, d: Mapping[Hashable, Any], supervision: str) -> dict[str, Any]:
        """The prompt dict of the slice in ``d`` for ``supervision``."""
        if supervision == "box":
            return self.box.prompts(d, d[self.weak_key])
        if supervision == "point":
            return self.point.prompts(d, d[self.weak_key])
        if supervision == "full":
            return self.full.prompts(d, d[self.label_key])
        if supervision == "scribble":
            if self.scribble_prompter is None:
                raise ValueError("scribble prompts need class_map or classes (or a scribble_prompter)")
            scribble = d[self.scribble_key]
            out = self.scribble_prompter.prompts(scribble)
            if self.regions:
                s = _as_slice(scribble)
                out["regions"] = (np.stack([s == k for k in out["classes"]]) if out["classes"]
                                  else np.zeros((0, *s.shape), dtype=bool))
            return out
        if supervision == "none":
            return empty_prompts(self._hw_of(d), self.input_size, self.regions)
        raise ValueError(f"unknown supervision type {supervision!r} (known: {', '.join(PROMPT_SUPERVISION_TYPES)})")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.supervision is not None:
            kind = self.supervision
        elif self.supervision_key in d:
            kind = str(d[self.supervision_key])
        elif self.allow_missing_keys:
            return d
        else:
            raise KeyError(f"no supervision type: key {self.supervision_key!r} missing (or pass supervision=)")
        d[self.output_key] = self.prompts(d, kind)
        return d
