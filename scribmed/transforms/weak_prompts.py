"""SAM prompts from any weak label type as dictionary transforms, and a dispatcher with scribbles.

:class:`BoxPromptsd`, :class:`PointPromptsd` and :class:`MaskPromptsd` prompt one slice of a box
or point :class:`~scribmed.data.weak_labels.WeakLabel` or of a full label with the array functions
of :mod:`scribmed.transforms.weak_prompt_arrays` (the prompt dict format and the row rules are
described there); :class:`WeakPromptsd` picks the one the case's supervision needs and delegates
scribbles to a :class:`~scribmed.transforms.prompts.ScribblePromptsd` (not reimplemented), so all
rows of a slice go through the same batched decoder call whatever the supervision.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from scribmed.data.case import ClassMap
from scribmed.data.weak_labels import SUPERVISION_TYPES, WeakLabel
from scribmed.transforms.prompt_frame import InputSize
from scribmed.transforms.prompt_packing import _output_keys
from scribmed.transforms.prompt_points import PointMode, _as_slice
from scribmed.transforms.prompts import ScribblePromptsd
from scribmed.transforms.weak_prompt_arrays import box_prompts, empty_prompts, mask_prompts, point_prompts

__all__ = [
    "PROMPT_SUPERVISION_TYPES",
    "BoxPromptsd",
    "MaskPromptsd",
    "PointPromptsd",
    "WeakPromptsd",
]

#: Supervision types :class:`WeakPromptsd` prompts from (``"none"`` gives no rows): all of them.
PROMPT_SUPERVISION_TYPES = SUPERVISION_TYPES


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
    :data:`PROMPT_SUPERVISION_TYPES`, and writes ``d[output_key]``, the prompt dict
    (:mod:`scribmed.transforms.weak_prompt_arrays`), from:

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
