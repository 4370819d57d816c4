"""Mixed supervision: each sample of a batch trained with the loss of its own label type.

SAMIX supervises each label type with its own loss — full mask → Dice + CE
(:func:`~scribmed.losses.mask_dice_ce.mask_dice_ce_loss`), box → projection loss
(:func:`~scribmed.losses.box_projection.box_projection_loss`), scribble and point → partial CE
(:func:`~scribmed.losses.partial_ce.partial_cross_entropy`) — and SeSAM adds a SAM pseudo-label
term and an EMA-teacher term, each on its own pixels with the precedence weak label > SAM pseudo
label > teacher pseudo label (:func:`combine_targets`):

``L = L_weak + sam_weight * L_SAM + teacher_weight * L_teacher``

* ``L_weak = Σ_i w_{type(i)} * l_i / N`` over the samples ``i`` that have a loss (type not
  ``"none"`` and a non-empty target), ``l_i`` the sample's own per-sample loss, ``N`` their number
  (type weights are not in the denominator; all 1 by default, so ``L_weak`` is the plain mean).
* ``L_SAM`` / ``L_teacher``: partial CE pooled over the batch's pixels where that source wins
  the precedence (mean over those pixels); 0 when a map is not given or has no such pixel.
  ``sam_weight = 1.0`` and ``teacher_weight = 0.01`` are SeSAM's defaults.

Batch contract of :meth:`MixedSupervisionLoss.forward`:

* ``logits``: ``(B, C, H, W)``, ``C`` classes including background 0.
* ``supervision``: ``B`` strings from :data:`SUPERVISION_TYPES` (``"full"``, ``"box"``,
  ``"point"``, ``"scribble"``, ``"none"``), a list as PyTorch's default collate makes of a
  per-sample string; or a ``(B,)`` integer tensor of their indices in :data:`SUPERVISION_TYPES`
  (:func:`supervision_codes`), for pipelines that keep tensors only.
* ``targets``: a mapping of per-sample tensors, one row per sample of the batch; a key is
  required only when some sample has its type, and only those samples' rows are read (fill the
  others with anything of the right shape, e.g. ``ignore_index`` or ``False``):

  - ``"label"`` (``"full"``): ``(B, H, W)`` or ``(B, 1, H, W)`` integer class map (pixels equal
    to ``ignore_index``, if any, are excluded);
  - ``"scribble"`` (``"scribble"``): same shape, ``ignore_index`` where unlabelled;
  - ``"point_map"`` (``"point"``): same shape, the class at each positive point and
    ``ignore_index`` elsewhere (:meth:`scribmed.data.weak_labels.WeakLabel.point_map`);
  - ``"box_masks"`` (``"box"``): ``(B, C, H, W)`` bool, channel ``k`` the union of class ``k``'s
    boxes (:func:`~scribmed.losses.box_projection.box_masks_from_weak`; channel 0 unused).

* ``sam`` (optional): ``(B, H, W)`` SAM pseudo label, ``ignore_index`` where SAM gave none.
* ``teacher`` (optional): ``(B, H, W)`` teacher pseudo label, ``ignore_index`` where the
  teacher is not confident (:meth:`scribmed.training.ema_teacher.EMATeacher.targets`).

For the precedence, a sample's *weak pixels* are its ``label`` (full), ``scribble`` or
``point_map`` pixels that are not ``ignore_index``; box and unlabeled samples have none (a box
constrains the mask through the projection term, not pixel by pixel), so SAM and teacher
pseudo labels apply on all their pixels.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn

from scribmed.losses.box_projection import BoxProjectionLoss
from scribmed.losses.mask_dice_ce import MaskDiceCELoss
from scribmed.losses.partial_ce import (
    PartialCrossEntropy,
    as_label_map,
    partial_cross_entropy,
)

__all__ = [
    "SOURCE_NONE",
    "SOURCE_SAM",
    "SOURCE_TEACHER",
    "SOURCE_WEAK",
    "SUPERVISION_TYPES",
    "TARGET_KEYS",
    "CombinedTargets",
    "MixedSupervisionLoss",
    "combine_targets",
    "supervision_codes",
]

#: The supervision types (the same tuple as :data:`scribmed.data.weak_labels.SUPERVISION_TYPES`;
#: losses do not import the data package).
SUPERVISION_TYPES = ("full", "box", "point", "scribble", "none")
#: The ``targets`` key each supervised type reads.
TARGET_KEYS: dict[str, str] = {"full": "label", "box": "box_masks", "point": "point_map", "scribble": "scribble"}

#: Codes of :attr:`CombinedTargets.source`: which label a pixel takes.
SOURCE_NONE, SOURCE_WEAK, SOURCE_SAM, SOURCE_TEACHER = 0, 1, 2, 3


def supervision_codes(types: Sequence[str]) -> torch.Tensor:
    """``(B,)`` long tensor of each type's index in :data:`SUPERVISION_TYPES` (a tensor-only ``supervision``)."""
    unknown = sorted(set(types) - set(SUPERVISION_TYPES))
    if unknown:
        raise ValueError(f"unknown supervision type(s) {unknown} (known: {', '.join(SUPERVISION_TYPES)})")
    return torch.tensor([SUPERVISION_TYPES.index(t) for t in types], dtype=torch.long)


class CombinedTargets(NamedTuple):
    """The result of :func:`combine_targets`.

    Attributes:
        label: ``(B, H, W)`` long, each pixel's label from the winning source, ``ignore_index``
            where no source labels it.
        source: ``(B, H, W)`` uint8, :data:`SOURCE_WEAK` / :data:`SOURCE_SAM` /
            :data:`SOURCE_TEACHER` / :data:`SOURCE_NONE`.
        ignore_index: the unlabelled value.
    """

    label: torch.Tensor
    source: torch.Tensor
    ignore_index: int

    def select(self, source: int) -> torch.Tensor:
        """The label where ``source`` won, ``ignore_index`` elsewhere (a partial-CE target)."""
        return torch.where(self.source == source, self.label, torch.full_like(self.label, self.ignore_index))


def combine_targets(
    weak: Optional[torch.Tensor],
    sam: Optional[torch.Tensor],
    teacher: Optional[torch.Tensor],
    ignore_index: int,
) -> CombinedTargets:
    """Per-pixel precedence weak label > SAM pseudo label > teacher pseudo label (SeSAM).

    Args:
        weak, sam, teacher: ``(B, H, W)`` or ``(B, 1, H, W)`` integer maps with ``ignore_index``
            where the source says nothing; any may be ``None`` (says nothing anywhere), not all.
        ignore_index: the unlabelled value.

    Returns:
        :class:`CombinedTargets`: each pixel takes the first source, in that order, that labels
        it; ``ignore_index`` (source :data:`SOURCE_NONE`) where none does.

    Raises:
        ValueError: all maps ``None`` or maps of different shapes.
    """
    maps = [None if m is None else as_label_map(m, 4) for m in (weak, sam, teacher)]
    given = [m for m in maps if m is not None]
    if not given:
        raise ValueError("combine_targets needs at least one of weak, sam, teacher")
    ref = given[0]
    for m in given[1:]:
        if m.shape != ref.shape:
            raise ValueError(f"label maps differ in shape: {tuple(ref.shape)} vs {tuple(m.shape)}")
    label = torch.full_like(ref, int(ignore_index))
    source = torch.full(ref.shape, SOURCE_NONE, dtype=torch.uint8, device=ref.device)
    # lowest precedence first, so each higher source overwrites
    for code, m in ((SOURCE_TEACHER, maps[2]), (SOURCE_SAM, maps[1]), (SOURCE_WEAK, maps[0])):
        if m is None:
            continue
        m = m.to(ref.device)
        has = m != ignore_index
        label = torch.where(has, m, label)
        source = torch.where(has, torch.full_like(source, code), source)
    return CombinedTargets(label, source, int(ignore_index))


class MixedSupervisionLoss(nn.Module):
    """Per-sample routing of full / box / point / scribble supervision, plus SAM and teacher terms.

    See the module docstring for the objective and the batch contract.

    Args:
        num_classes: classes including background (checked against the logits).
        ignore_index: the unlabelled value of scribbles, point maps and pseudo labels.
        type_weights: weight per supervision type (``"full"``, ``"box"``, ``"point"``,
            ``"scribble"``; missing ones 1).
        sam_weight: weight of the SAM pseudo-label term (1.0, SeSAM), used when ``sam`` is given.
        teacher_weight: weight of the teacher term (0.01, SeSAM), used when ``teacher`` is given.
        mask_dice_weight, mask_ce_weight: the full-mask Dice + CE weights (1, 1).
        box_bce_weight, box_dice_weight: the box projection BCE + Dice weights (1, 1).
        check_target: validate sparse label values each call (one host sync per term).

    Call ``loss(logits, supervision, targets, sam=None, teacher=None)``; returns the scalar total.
    :attr:`last` holds the unweighted terms of the last call as floats: ``"weak"`` (``L_weak``),
    one entry per type that had a loss in the batch (the mean ``l_i`` over its samples), and
    ``"sam"`` / ``"teacher"`` when those maps were given.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        type_weights: Optional[Mapping[str, float]] = None,
        sam_weight: float = 1.0,
        teacher_weight: float = 0.01,
        mask_dice_weight: float = 1.0,
        mask_ce_weight: float = 1.0,
        box_bce_weight: float = 1.0,
        box_dice_weight: float = 1.0,
        check_target: bool = True,
    ) -> None:
        super().__init__()
        weights = {t: 1.0 for t in TARGET_KEYS}
        for t, w in (type_weights or {}).items():
            if t not in TARGET_KEYS:
                known = ", ".join(TARGET_KEYS)
                raise ValueError(f"type_weights: unknown supervision type {t!r} (weighted types: {known})")
            weights[t] = float(w)
        for name, w in [*(("type_weights[" + t + "]", v) for t, v in weights.items()),
                        ("sam_weight", sam_weight), ("teacher_weight", teacher_weight)]:
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.type_weights = weights
        self.sam_weight = float(sam_weight)
        self.teacher_weight = float(teacher_weight)
        self.check_target = bool(check_target)
        self.full = MaskDiceCELoss(mask_dice_weight, mask_ce_weight, ignore_index=self.ignore_index, reduction="none")
        self.box = BoxProjectionLoss(box_bce_weight, box_dice_weight, reduction="none")
        self.sparse = PartialCrossEntropy(self.ignore_index, check_target=self.check_target, reduction="none")
        self.last: dict[str, float] = {}

    # -- routing -----------------------------------------------------------------------------

    def _types(self, supervision: Sequence[str] | torch.Tensor, batch: int) -> list[str]:
        if isinstance(supervision, str):
            raise TypeError("supervision must be a sequence with one type per sample, not a string")
        if isinstance(supervision, torch.Tensor):
            if supervision.ndim != 1 or supervision.is_floating_point():
                raise ValueError(f"supervision codes must be a 1-D integer tensor, got {tuple(supervision.shape)} "
                                 f"{supervision.dtype}")
            codes = supervision.tolist()
            bad = sorted({c for c in codes if not 0 <= c < len(SUPERVISION_TYPES)})
            if bad:
                raise ValueError(f"supervision codes {bad} are not indices of {SUPERVISION_TYPES}")
            types = [SUPERVISION_TYPES[c] for c in codes]
        else:
            types = [str(t) for t in supervision]
        if len(types) != batch:
            raise ValueError(f"{len(types)} supervision types for a batch of {batch}")
        unknown = sorted(set(types) - set(SUPERVISION_TYPES))
        if unknown:
            raise ValueError(f"unknown supervision type(s) {unknown} (known: {', '.join(SUPERVISION_TYPES)})")
        return types

    def _target(self, targets: Mapping[str, torch.Tensor], kind: str, batch: int, device: torch.device) -> torch.Tensor:
        key = TARGET_KEYS[kind]
        if key not in targets:
            raise ValueError(f"the batch has {kind!r} samples but targets hold no {key!r}")
        value = torch.as_tensor(targets[key], device=device)
        if value.shape[0] != batch:
            raise ValueError(f"targets[{key!r}] has {value.shape[0]} rows for a batch of {batch}")
        return value

    def per_type(
        self, kind: str, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, has_loss)``, both ``(n,)``: the per-sample loss of ``kind`` on ``n`` samples of that type."""
        if kind == "box":
            values = self.box(logits, target)
            if target.shape[1] < 2:  # background only: no class can have a box
                return values, torch.zeros(target.shape[0], dtype=torch.bool, device=target.device)
            return values, target[:, 1:].flatten(1).any(1)
        label = as_label_map(target, logits.ndim)
        values = self.full(logits, label) if kind == "full" else self.sparse(logits, label)
        return values, (label != self.ignore_index).flatten(1).any(1)

    def weak_pixels(
        self, supervision: Sequence[str] | torch.Tensor, targets: Mapping[str, torch.Tensor], logits: torch.Tensor
    ) -> torch.Tensor:
        """``(B, H, W)`` long: each sample's weak per-pixel label (its full label, scribble or point
        map), ``ignore_index`` elsewhere and on box / unlabeled samples (the precedence's top layer)."""
        b = logits.shape[0]
        types = self._types(supervision, b)
        out = torch.full((b, *logits.shape[2:]), self.ignore_index, dtype=torch.long, device=logits.device)
        for kind in ("full", "point", "scribble"):
            rows = [i for i, t in enumerate(types) if t == kind]
            if rows:
                label = as_label_map(self._target(targets, kind, b, logits.device), logits.ndim)
                index = torch.as_tensor(rows, device=logits.device)
                out[index] = label.index_select(0, index)
        return out

    # -- objective ---------------------------------------------------------------------------

    def forward(
        self,
        logits: torch.Tensor,
        supervision: Sequence[str] | torch.Tensor,
        targets: Mapping[str, torch.Tensor],
        sam: Optional[torch.Tensor] = None,
        teacher: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits (B, {self.num_classes}, H, W), got {tuple(logits.shape)}")
        b, dev = logits.shape[0], logits.device
        types = self._types(supervision, b)
        zero = logits.sum() * 0.0  # keeps a graph when every term is empty
        weighted, count = zero, zero.detach()
        last: dict[str, float] = {}
        for kind in TARGET_KEYS:
            rows = [i for i, t in enumerate(types) if t == kind]
            if not rows:
                continue
            index = torch.as_tensor(rows, device=dev)
            target = self._target(targets, kind, b, dev).index_select(0, index)
            values, has = self.per_type(kind, logits.index_select(0, index), target)
            has_f = has.to(values.dtype)
            n = has_f.sum()
            kind_sum = (values * has_f).sum()
            weighted = weighted + self.type_weights[kind] * kind_sum
            count = count + n
            if bool(n > 0):
                last[kind] = float(kind_sum.detach() / n)
        weak = weighted / count.clamp_min(1.0)
        last["weak"] = float(weak.detach())
        total = weak
        if sam is not None or teacher is not None:
            combined = combine_targets(self.weak_pixels(types, targets, logits), sam, teacher, self.ignore_index)
            for name, given, code, weight in (
                ("sam", sam, SOURCE_SAM, self.sam_weight),
                ("teacher", teacher, SOURCE_TEACHER, self.teacher_weight),
            ):
                if given is None:
                    continue
                term = partial_cross_entropy(logits, combined.select(code), self.ignore_index, self.check_target)
                total = total + weight * term
                last[name] = float(term.detach())
        self.last = last
        return total

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"type_weights={self.type_weights}, sam_weight={self.sam_weight}, teacher_weight={self.teacher_weight}"
        )
