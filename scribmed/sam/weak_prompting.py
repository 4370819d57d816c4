"""SAM prompted from each case's own weak label: the mixed-supervision side of the pseudo-label rounds.

SAM-SP prompts every case with its scribble. With mixed supervision (issue 9) a case
has one of :data:`~scribmed.data.weak_labels.SUPERVISION_TYPES`, and the rounds prompt it from
that label (:class:`~scribmed.transforms.weak_prompts.WeakPromptsd`):

- ``scribble``: exactly SAM-SP's scribble prompts (the same :class:`ScribblePromptsd` call and the
  same decoding), so a scribble-only manifest reproduces SAM-SP's pseudo labels;
- ``box``: one prompt per box (several boxes of a class merged by the max of their logits);
- ``point``: the class's points; with ``point_multimask`` SAM's three candidates are decoded and
  one is chosen by :func:`~scribmed.sam.mask_selection.select_masks` against the points
  (SeSAM's coverage/compatibility rule by default);
- ``full``: the pseudo label **is** the label (``full_from_label``); for decoder fine-tuning the
  mask is prompted with its box and points along its skeleton;
- ``none``: not prompted (no pseudo label).

Fine-tuning and validation score the decoder against each case's *sparse target*
(:func:`case_target`): the scribble, the point map, the full label, or for boxes background
outside every box and unknown inside (every object is boxed, so what lies outside all boxes is
background).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.data.weak_labels import SUPERVISION_TYPES, WEAK_FILE_TYPES
from scribmed.sam.mask_selection import SELECTION_RULES, gather_masks, select_masks
from scribmed.transforms.prompts import ScribblePromptsd
from scribmed.transforms.weak_prompt_arrays import merge_class_rows
from scribmed.transforms.weak_prompts import WeakPromptsd

__all__ = [
    "WeakPromptConfig",
    "WeakPrompter",
    "case_shape",
    "case_supervision",
    "case_target",
    "merge_rows",
]


@dataclass
class WeakPromptConfig:
    """How non-scribble weak labels prompt SAM (scribbles follow the round's :class:`PromptConfig`).

    Attributes:
        box_margin: pixels added around weak boxes and full-mask boxes (0: the boxes as drawn;
            the converter's 3-7 px jitter already plays MedSAM's margin).
        full_points: positive points per class along a full mask's skeleton (fine-tuning prompts).
        point_negatives: keep negative points of point labels in their prompts.
        point_multimask: decode SAM's three candidates for point prompts and choose one by
            ``selection`` (zero-shot only; a fine-tuned decoder is trained through the single mask).
        selection: ``"sesam"`` (coverage >= ``min_coverage`` and compatibility >=
            ``min_compatibility``, most compatible), ``"score"`` (SAM's predicted IoU) or ``"random"``.
        min_coverage, min_compatibility: SeSAM's thresholds (0.3, 0.7).
        full_from_label: a fully labelled case's pseudo label is its label (SAM is not asked).
    """

    box_margin: int = 0
    full_points: int = 10
    point_negatives: bool = True
    point_multimask: bool = True
    selection: str = "sesam"
    min_coverage: float = 0.3
    min_compatibility: float = 0.7
    full_from_label: bool = True

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_RULES:
            raise ValueError(f"selection must be one of {', '.join(SELECTION_RULES)}, got {self.selection!r}")
        if int(self.box_margin) < 0 or int(self.full_points) < 1:
            raise ValueError(f"need box_margin >= 0 and full_points >= 1, got {self.box_margin}, {self.full_points}")
        for name in ("min_coverage", "min_compatibility"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WeakPromptConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown WeakPromptConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)


def case_supervision(case: Any) -> str:
    """The case's training supervision: the dataset's statement, else ``scribble`` when it has one, else ``none``.

    Raises:
        DataError: a box/point case without its weak label, a scribble case without a scribble,
            a full case without a label.
    """
    kind = getattr(case, "supervision", None) or ("scribble" if case.has_scribble else "none")
    if kind not in SUPERVISION_TYPES:
        raise DataError(case.source, f"case {case.case_id}: unknown supervision {kind!r}")
    if kind in WEAK_FILE_TYPES and not case.has_weak:
        raise DataError(case.source, f"case {case.case_id} is supervised by {kind} but has no weak-label file "
                        "(weak/<case>.json; or simulate one with --simulate-weak)")
    if kind == "scribble" and not case.has_scribble:
        raise DataError(case.source, f"case {case.case_id} is supervised by scribble but has none")
    if kind == "full" and not case.has_label:
        raise DataError(case.source, f"case {case.case_id} is supervised by full masks but has no label")
    return kind


def case_shape(case: Any) -> tuple[int, int, int]:
    """The case's ``(S, H, W)`` (a 2D image is one slice; channels of a 4D image dropped)."""
    shape = tuple(int(s) for s in np.shape(case.image))
    if len(shape) == 2:
        return (1, *shape)  # type: ignore[return-value]
    if len(shape) == 4:
        return (shape[0], shape[2], shape[3])
    return shape  # type: ignore[return-value]


def case_target(case: Any, class_map: ClassMap, kind: Optional[str] = None) -> np.ndarray:
    """The case's sparse per-pixel target ``(S, H, W)`` int64 (``class_map.ignore_index`` = unknown).

    ``scribble``: the scribble; ``point``: the positive points' classes; ``full``: the label;
    ``box``: background (0) outside every box of the slice, unknown inside; ``none``: unknown.
    This is the only view of a case's annotation that training may read.
    """
    from scribmed.sam.pseudo_labels import case_scribble

    kind = kind or case_supervision(case)
    ignore = int(class_map.ignore_index)
    shape = case_shape(case)
    if kind == "scribble":
        return case_scribble(case).astype(np.int64)
    if kind == "full":
        label = np.asarray(case.label).astype(np.int64)
        label = label[None] if label.ndim == 2 else label
        if label.shape != shape:
            raise DataError(case.source, f"label shape {label.shape} differs from the image's {shape}")
        return label
    out = np.full(shape, ignore, dtype=np.int64)
    if kind == "none":
        return out
    weak = case.weak
    if tuple(weak.shape) != shape:
        raise DataError(case.source, f"weak label shape {tuple(weak.shape)} differs from the image's {shape}")
    if kind == "point":
        for z in weak.slices():
            out[z] = weak.point_map(z, ignore)
        return out
    out[:] = 0
    for z in range(shape[0]):
        for k in weak.boxes.get(z, {}):
            out[z][weak.box_mask(z, k)] = ignore
    return out


def merge_rows(logits: torch.Tensor, classes: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Rows of the same class merged by their pixel-wise max: ``(K, H, W)`` → ``(K', H, W)`` + unique classes."""
    if len(set(classes)) == len(classes):
        return logits, list(classes)
    merged = merge_class_rows(logits, classes)
    keys = list(merged)
    return torch.stack([merged[k] for k in keys]), keys


class WeakPrompter:
    """Prompts and decoding of one slice of any supervision type (see the module docstring).

    Args:
        class_map: the classes to prompt.
        input_size: SAM's input size (``backend.input_size``).
        scribble: the round's scribble prompter (``PromptConfig.prompter`` or fine-tuning's).
        config: the weak types' settings.
        multimask: the round decodes with SAM's three candidates (zero-shot); scribble rows then
            keep the best predicted IoU (SAM-SP), point rows use ``config.selection``.
    """

    def __init__(
        self,
        class_map: ClassMap,
        input_size: int,
        scribble: ScribblePromptsd,
        config: Optional[WeakPromptConfig] = None,
        multimask: bool = False,
    ) -> None:
        self.class_map = class_map
        self.config = config or WeakPromptConfig()
        self.multimask = bool(multimask)
        self.transform = WeakPromptsd(
            class_map=class_map,
            input_size=input_size,
            box_margin=int(self.config.box_margin),
            n_points=int(self.config.full_points),
            point_negatives=bool(self.config.point_negatives),
            scribble_prompter=scribble,
            regions=True,
        )

    def slice_prompts(self, case: Any, kind: str, target: np.ndarray, z: int) -> dict[str, Any]:
        """The prompt dict of slice ``z`` (``target`` = :func:`case_target`, the scribble for scribble cases)."""
        d: dict[str, Any] = {"supervision": kind, "slice": int(z)}
        if kind == "scribble":
            d["scribble"] = target[z]
        elif kind == "full":
            d["label"] = target[z]
        elif kind in WEAK_FILE_TYPES:
            d["weak"] = case.weak
        else:
            d["image"] = np.zeros(target.shape[1:], dtype=np.float32)
        return self.transform(d)["prompts"]

    def decode(self, backend: Any, embedding: torch.Tensor, prompts: Mapping[str, Any], kind: str) -> dict[int, torch.Tensor]:
        """``{class: logits (H, W)}`` on the slice's grid from one batched decoder call."""
        from scribmed.sam.pseudo_labels import decode_prompt_dict

        classes = [int(k) for k in prompts["classes"]]
        if not classes:
            return {}
        if kind == "point" and self.multimask and self.config.point_multimask:
            hw = (int(prompts["original_size"][0]), int(prompts["original_size"][1]))
            boxes = None if prompts.get("boxes") is None else torch.from_numpy(np.asarray(prompts["boxes"], np.float32))
            low, iou = backend.decode(
                embedding,
                point_coords=torch.from_numpy(np.asarray(prompts["point_coords"], np.float32)),
                point_labels=torch.from_numpy(np.asarray(prompts["point_labels"]).astype(np.int64)),
                boxes=boxes,
                multimask_output=True,
            )
            candidates = backend.postprocess(low, hw)  # (K, 3, H, W)
            regions = torch.from_numpy(np.asarray(prompts["regions"], dtype=bool)).to(candidates.device)
            c = self.config
            sel = select_masks(candidates, regions, iou, rule=c.selection,  # type: ignore[arg-type]
                               min_coverage=c.min_coverage, min_compatibility=c.min_compatibility)
            logits = gather_masks(candidates, sel.index)
        else:
            logits = decode_prompt_dict(backend, embedding, prompts, multimask=self.multimask and kind == "scribble")
        logits, classes = merge_rows(logits, classes)
        return {k: logits[i] for i, k in enumerate(classes)}
