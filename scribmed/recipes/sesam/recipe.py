"""SeSAM on instances: SAM pseudo labels from instance-prior prompts + an EMA teacher.

Per training image, from its weak label (points by default; scribbles or coarse masks too):

1. **prompts per instance**: the instance's own points, or K = 5 points drawn from its stroke /
   coarse mask by SeSAM's skeleton-grid sampler (:func:`scribmed.sam.instance_prompting.sesam_instance_prompts`),
   plus the box of its clipped Voronoi cell (:mod:`scribmed.transforms.point_cells`: LiteMedSAM is
   a box-prompted model; from a point alone its masks on nuclei are nearly useless);
2. **SAM** answers each instance with three candidate masks; SeSAM's coverage / compatibility
   rule against the instance's weak region (a point's cell; a stroke's or coarse mask's pixels)
   picks one (``selection="score"`` takes SAM's predicted IoU instead) and the chosen masks
   become a pseudo instance map
   (:func:`~scribmed.sam.instance_prompting.masks_to_instances`), cached per image;
3. **segmentor**: the contour U-Net with ``L = L_weak + 1.0 L_SAM + 0.01 L_pseudo``, each a
   partial cross-entropy on its own pixels with precedence weak > SAM > pseudo; the pseudo label
   is the EMA teacher's (decay 0.999) prediction where its confidence is >= 0.96. SAM's
   outlines are uncertain, so a band of ``sam_band`` pixels around them is left to the teacher.

Not implemented from SeSAM: re-prompting SAM from the teacher's extended weak labels every 4
iterations (the pseudo labels here come from one SAM pass over the weak labels).

``use_sam=False`` trains on the weak targets alone (the points-only floor with ``weak="point"``);
``weak="full"`` with ``use_sam=False`` is the fully supervised ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch

from scribmed.data.case import Case
from scribmed.training.instance_batches import TrainSample
from scribmed.training.instance_inference import normalise_image
from scribmed.training.instance_trainer import StudentOutput
from scribmed.recipes.instance_segmentor import (
    PartialContourLoss,
    SamInstanceConfig,
    SamInstanceRecipe,
    case_instance,
    make_weak,
    weak_target,
)
from scribmed.runtime.progress import progress_bar
from scribmed.sam.instance_stage import (
    InstanceSamStage,
    instance_quality,
    write_instance_quality,
)
from scribmed.transforms.contour_targets import (
    IGNORE,
    contour_target,
    instance_boundaries,
)

PROMPT_CHUNK = 32  # instances per decoder call

__all__ = ["SeSAMInstanceConfig", "SeSAMInstanceLoss", "SeSAMRecipe", "sam_pseudo_instances", "sam_target"]


@dataclass
class SeSAMInstanceConfig(SamInstanceConfig):
    """SeSAM's settings on top of the contour U-Net's (defaults from the paper where it has them).

    Attributes:
        use_sam: prompt SAM for pseudo labels (``False``: weak targets only).
        selection: ``"sesam"`` (coverage >= ``min_coverage`` and compatibility >=
            ``min_compatibility``, most compatible) or ``"score"`` (SAM's predicted IoU).
        sam_points: K points per instance drawn from strokes / coarse masks.
        sam_weight / pseudo_weight: weights of the SAM and teacher terms (1.0 and 0.01).
        pseudo_threshold: teacher confidence a pixel needs (0.96).
        sam_band: pixels around SAM's outlines left unlabeled by the SAM term.
        prompt_box: add each instance's clipped-Voronoi-cell box to its prompt
            (:mod:`scribmed.transforms.point_cells`; LiteMedSAM answers boxes, not points).
    """

    use_sam: bool = True
    selection: str = "sesam"
    min_coverage: float = 0.3
    min_compatibility: float = 0.7
    sam_points: int = 5
    sam_weight: float = 1.0
    pseudo_weight: float = 0.01
    pseudo_threshold: float = 0.96
    sam_band: int = 2
    prompt_box: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection not in ("sesam", "score", "random"):
            raise ValueError(f"selection must be 'sesam', 'score' or 'random', got {self.selection!r}")


def instance_prompts(weak: Any, sam_points: int, rng: np.random.Generator, prompt_box: bool = True,
                     max_radius: float = 60.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``(coords (N, K, 2), labels (N, K), ids (N,), regions (N, H, W) bool, boxes (N, 4) or None)``.

    Points prompt with themselves; strokes and coarse masks with SeSAM's skeleton-grid sample of
    each instance's region. With ``prompt_box`` every instance also gets the box of its clipped
    Voronoi cell (:func:`scribmed.transforms.point_cells.point_cells`, over its points or its
    region's pixels): LiteMedSAM is a box-prompted model. The weak region ``W`` of the selection
    rule is a point's cell, or a stroke's / coarse mask's own pixels.
    """
    from scribmed.sam.instance_prompting import sesam_instance_prompts
    from scribmed.transforms.point_cells import point_cells

    h, w = (int(s) for s in weak.shape)
    if weak.kind == "point":
        cells = point_cells(weak.points, (h, w), max_radius=max_radius)
        ids = cells.ids
        k = max((len(np.asarray(weak.points[i]).reshape(-1, 2)) for i in ids), default=1)
        coords = np.zeros((len(ids), k, 2), np.float32)
        labels = -np.ones((len(ids), k), np.int64)
        for n, i in enumerate(ids):
            xy = np.asarray(weak.points[int(i)], np.float32).reshape(-1, 2)
            coords[n, :len(xy)], labels[n, :len(xy)] = xy, 1
        return coords, labels, ids, cells.regions, cells.boxes if prompt_box else None
    region_map = np.asarray(weak.regions())
    coords, labels, ids = sesam_instance_prompts(region_map, k=sam_points, rng=rng)
    ids = np.asarray(ids)
    regions = np.stack([region_map == i for i in ids]) if len(ids) else np.zeros((0, h, w), bool)
    boxes = None
    if prompt_box and len(ids):
        pixels = {int(i): np.stack(np.nonzero(region_map == i)[::-1], axis=1) for i in ids}
        boxes = point_cells(pixels, (h, w), max_radius=max_radius).boxes
    return coords, labels, ids, regions, boxes


def sam_pseudo_instances(stage: InstanceSamStage, case: Case, weak: Any, cfg: SeSAMInstanceConfig,
                         selection: Optional[str] = None) -> dict[str, np.ndarray]:
    """SAM's pseudo instance map of one image from its weak label (``instances``, ``index``, ``iou``)."""
    from scribmed.sam.instance_prompting import masks_to_instances, prompt_instances

    hw = tuple(int(s) for s in weak.shape)
    rng = np.random.default_rng([cfg.weak_seed, 0x5E5A, *[ord(c) for c in case.case_id[:16]]])
    coords, labels, ids, regions, boxes = instance_prompts(weak, cfg.sam_points, rng, cfg.prompt_box)
    if len(ids) == 0:
        return {"instances": np.zeros(hw, np.int32), "index": np.zeros(0, np.int64), "iou": np.zeros((0, 3), np.float32)}
    emb = stage.embedding(case)
    masks, index, iou = [], [], []
    for lo in range(0, len(ids), PROMPT_CHUNK):  # bounds the (n, 3, H, W) candidates on images with 300 nuclei
        part = slice(lo, lo + PROMPT_CHUNK)
        result = prompt_instances(stage.backend, emb, hw, point_coords=coords[part], point_labels=labels[part],
                                  boxes=None if boxes is None else boxes[part], regions=regions[part],
                                  rule=selection or cfg.selection, min_coverage=cfg.min_coverage,
                                  min_compatibility=cfg.min_compatibility, seed=cfg.weak_seed, keep_candidates=False)
        masks.append(np.asarray(result.masks))
        index.append(np.asarray(result.index))
        iou.append(np.asarray(result.iou, dtype=np.float32))
    index, iou = np.concatenate(index), np.concatenate(iou)
    scores = iou[np.arange(len(index)), index]
    instances = masks_to_instances(np.concatenate(masks), scores, min_size=cfg.sam_min_size)
    return {"instances": instances.astype(np.int32), "index": index.astype(np.int64), "iou": iou}


def sam_target(instances: np.ndarray, band: int) -> np.ndarray:
    """The contour target of SAM's pseudo instances with ``band`` px around their outlines unlabeled."""
    from scipy import ndimage as ndi

    target = contour_target(instances)
    if band > 0 and instances.any():
        target[ndi.binary_dilation(instance_boundaries(instances, 1), iterations=int(band))
               & (target == 0)] = IGNORE
    return target


class SeSAMInstanceLoss(PartialContourLoss):
    """``L_weak + sam_weight L_SAM + pseudo_weight L_pseudo`` with precedence weak > SAM > pseudo."""

    uses_teacher = True

    def __init__(self, sam_weight: float, pseudo_weight: float, threshold: float, boundary_weight: float,
                 use_sam: bool = True) -> None:
        terms = {"weak": 1.0, **({"sam": float(sam_weight)} if use_sam else {})}
        super().__init__(terms, boundary_weight, precedence=True)
        self.pseudo_weight = float(pseudo_weight)
        self.threshold = float(threshold)

    def forward(self, out: StudentOutput, batch: Mapping[str, torch.Tensor],
                teacher_probs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = super().forward(out, batch)
        if teacher_probs is not None and self.pseudo_weight > 0:
            free = torch.ones_like(batch["weak"], dtype=torch.bool)
            for key in self.terms:
                free &= batch[key] == IGNORE
            confidence, label = teacher_probs.max(1)
            loss = self.ce(out.logits, label, free & (confidence >= self.threshold))
            total = total + self.pseudo_weight * loss
            parts["pseudo"] = float(loss.detach())
        return total, parts


class SeSAMRecipe(SamInstanceRecipe):
    """SeSAM on DSB2018-style instance data (see the module docstring).

    Files in a fold's ``train/``: ``sam/<case_id>.npz`` (pseudo instances, chosen candidate,
    SAM's IoU per candidate), ``sam/quality.json`` (pseudo-label DSB score / AJI / Dice against
    the reference instance maps: a diagnostic, never used for selection), and the segmentor's
    ``last.pt`` / ``best.pt`` / ``history.json``.
    """

    name = "sesam"
    title = "SeSAM (instances)"
    config_cls: ClassVar[type] = SeSAMInstanceConfig
    config: SeSAMInstanceConfig

    def prepare_samples(self, train: Sequence[Case], out_dir: Path, progress: bool) -> list[TrainSample]:
        cfg = self.config
        stage = self.sam_stage(out_dir) if cfg.use_sam else None
        samples, quality = [], {}
        for case in progress_bar(train, desc="SAM pseudo labels", unit="image",
                                 disable=not progress or stage is None):
            weak = make_weak(case, cfg)
            maps = {"weak": weak_target(weak, cfg)}
            if stage is not None:
                sam = stage.cached(Path(out_dir) / "sam", case.case_id,
                                   lambda: sam_pseudo_instances(stage, case, weak, cfg))
                maps["sam"] = sam_target(sam["instances"], cfg.sam_band)
                quality[case.case_id] = instance_quality(sam["instances"], case_instance(case))
            samples.append(TrainSample(case.case_id, normalise_image(case.image), maps,
                                       {k: IGNORE for k in maps}))
        if stage is not None:
            stage.release()
            write_instance_quality(Path(out_dir) / "sam" / "quality.json", quality, cfg.selection)
        return samples

    def objective(self) -> Any:
        cfg = self.config
        return SeSAMInstanceLoss(cfg.sam_weight, cfg.pseudo_weight, cfg.pseudo_threshold, cfg.boundary_weight,
                                 use_sam=cfg.use_sam)

