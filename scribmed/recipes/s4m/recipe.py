"""S4M: semi-supervised instance segmentation with SAM refinement, ARP and structural distillation.

A few training images are fully labelled (``labelled_fraction``, seeded); the rest are unlabeled.

1. **teacher**: the contour U-Net trained on the labelled images alone (``teacher_iterations``,
   its own ``teacher/`` folder, selected on the validation images);
2. **SAM refinement** of the teacher's instances on every unlabeled image: K = 3 points per
   instance drawn from the teacher's softmaxed foreground probability restricted to that
   instance (plus the instance's box, ``refine_box_margin``: LiteMedSAM is box-prompted), SAM
   prompted, its best mask by predicted IoU (``selection="sesam"``: SeSAM's rule against the
   teacher's mask), kept when it agrees with the teacher's mask (IoU >= ``refine_min_iou``, else
   the teacher's mask stays); the refined instances are the image's pseudo label
   (:func:`scribmed.sam.instance_prompting.refine_instances`), cached per image;
3. **student**, started from the teacher: labelled targets + refined pseudo labels, with S4M's
   ARP copy-paste between the two images of each pair in a batch (instances of B onto A and of A
   onto B, their labels following; :mod:`scribmed.transforms.copy_paste`) and the structural
   distillation loss (:mod:`scribmed.losses.structural_distillation`) between the student's
   decoder features and SAM's decoder features at 128 sampled points, half in the foreground,
   smooth-L1 (the public code's defaults).

CPU-budget simplifications, stated: one refinement round (the paper refines online with an EMA
teacher of decay 0.9996, a horizon of thousands of iterations); SAM's decoder features are the
prompt-free features of :func:`scribmed.sam.instance_stage.decoder_features`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch

from scribmed.data.case import Case
from scribmed.training.instance_batches import TrainSample
from scribmed.training.instance_inference import normalise_image, predict_probabilities
from scribmed.training.instance_trainer import InstanceTask, StudentOutput, train_instance_segmentor
from scribmed.recipes.instance_segmentor import (
    PartialContourLoss,
    SamInstanceConfig,
    SamInstanceRecipe,
    case_instance,
)
from scribmed.runtime.progress import progress_bar
from scribmed.sam.instance_stage import instance_quality, write_instance_quality
from scribmed.transforms.contour_targets import IGNORE, contour_target
from scribmed.transforms.instance_postprocess import instances_from_contours

__all__ = ["S4MConfig", "S4MLoss", "S4MRecipe", "gate_refinement", "labelled_subset", "sam_feature_map"]


@dataclass
class S4MConfig(SamInstanceConfig):
    """S4M's settings on top of the contour U-Net's.

    Attributes:
        labelled_fraction: share of the training images that keep their full labels (seeded by
            ``weak_seed``; at least one image).
        teacher_iterations: iterations of the teacher stage (``None``: half of ``iterations``).
        refine_points: K points per instance for SAM (3).
        refine_box_margin: also prompt with the teacher instance's box grown by this many pixels
            (``None``: points only, as S4M with SAM 2; LiteMedSAM is a box-prompted model).
        refine_min_iou: keep SAM's refined mask of an instance only when its IoU with the
            teacher's mask is at least this (else the teacher's mask stays; 0 keeps every
            refinement, as S4M). Zero-shot LiteMedSAM's refinements of nuclei are mostly worse
            than the teacher (measured on DSB2018 fold 1: DSB score 0.067 refined vs 0.260 teacher).
        selection: ``"score"`` (SAM's predicted IoU, S4M) or ``"sesam"``.
        distill_weight / distill_points: weight and P of the structural distillation (128).
        arp: copy-paste between the two images of each batch pair.
        arp_prob: probability that an instance is pasted.
    """

    weak: str = "full"
    labelled_fraction: float = 0.25
    teacher_iterations: Optional[int] = None
    refine_points: int = 3
    refine_box_margin: Optional[int] = 2
    refine_min_iou: float = 0.5
    selection: str = "score"
    distill_weight: float = 1.0
    distill_points: int = 128
    arp: bool = True
    arp_prob: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")


def labelled_subset(case_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The seeded, sorted subset of ``case_ids`` that keeps full labels (at least one)."""
    ids = sorted(case_ids)
    n = max(1, int(round(fraction * len(ids))))
    order = np.random.default_rng([int(seed), 0x54D]).permutation(len(ids))
    return sorted(ids[i] for i in order[:n])


def gate_refinement(teacher: np.ndarray, refined: np.ndarray, min_iou: float) -> np.ndarray:
    """Keep each refined instance (same id as the teacher's) whose IoU with the teacher's mask is
    >= ``min_iou``; the other instances take back the teacher's mask where no kept instance lies."""
    from scipy import ndimage as ndi

    out = refined.copy()
    rejected = []
    for i, box in enumerate(ndi.find_objects(teacher), start=1):
        if box is None:
            continue
        rbox = ndi.find_objects((refined == i).astype(np.int8))
        region = box if not rbox else tuple(slice(min(a.start, b.start), max(a.stop, b.stop))
                                             for a, b in zip(box, rbox[0]))
        t, r = teacher[region] == i, refined[region] == i
        union = int((t | r).sum())
        if union == 0 or (t & r).sum() / union < min_iou:
            rejected.append(i)
    if rejected:
        out[np.isin(out, rejected)] = 0
        back = np.isin(teacher, rejected) & (out == 0)
        out[back] = teacher[back]
    return out


def sam_feature_map(stage: Any, case: Case, hw: tuple[int, int]) -> np.ndarray:
    """SAM's decoder features of an image on its own grid, ``(C, H, W)`` float16."""
    import torch.nn.functional as F

    from scribmed.sam.instance_stage import decoder_features

    backend = stage.backend
    feats = decoder_features(backend, stage.embedding(case))  # (1, C, S/4*.., ) in the encoder frame
    s = backend.input_size
    nh, nw = backend.resized_hw(hw)
    up = F.interpolate(feats.float(), (s, s), mode="bilinear", align_corners=False)[..., :nh, :nw]
    out = F.interpolate(up, hw, mode="bilinear", align_corners=False)[0]
    return out.cpu().numpy().astype(np.float16)


class S4MLoss(PartialContourLoss):
    """Partial CE on the (pseudo) contour target + ``distill_weight`` x structural distillation."""

    uses_features = True

    def __init__(self, distill_weight: float, distill_points: int, boundary_weight: float) -> None:
        super().__init__({"target": 1.0}, boundary_weight)
        self.distill_weight = float(distill_weight)
        self.distill_points = int(distill_points)

    def forward(self, out: StudentOutput, batch: Mapping[str, torch.Tensor],
                teacher_probs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        from scribmed.losses.structural_distillation import structural_distillation_loss

        total, parts = super().forward(out, batch)
        if self.distill_weight > 0 and out.features is not None and "sam_feat" in batch:
            fg = (batch["target"] == 1) | (batch["target"] == 2)
            sd = structural_distillation_loss(out.features, batch["sam_feat"], foreground=fg,
                                              num_points=self.distill_points)  # the loop seeds torch per iteration
            total = total + self.distill_weight * sd
            parts["distill"] = float(sd.detach())
        return total, parts


class _ARPMix:
    """ARP copy-paste between items 2i and 2i+1 of a cropped batch (one draw per pair)."""

    def __init__(self, prob: float, label_keys: Sequence[str]) -> None:
        self.prob = float(prob)
        self.label_keys = tuple(label_keys)

    def __call__(self, items: list[dict[str, np.ndarray]], rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
        from scribmed.transforms.copy_paste import arp_copy_paste

        out = list(items)
        for i in range(0, len(items) - 1, 2):
            a, b = arp_copy_paste(items[i], items[i + 1], rng, prob_instance=self.prob, image_keys=("image",),
                                  instance_key="instance", label_keys=self.label_keys)
            out[i], out[i + 1] = a, b
        return out


class S4MRecipe(SamInstanceRecipe):
    """S4M on DSB2018-style instance data (see the module docstring).

    Files in a fold's ``train/``: ``teacher/`` (the teacher stage's run), ``sam/<case_id>.npz``
    (refined pseudo instances of the unlabeled images), ``sam/quality.json`` (teacher vs refined
    pseudo-label scores against the reference: a diagnostic, never used for selection), and the
    student's ``last.pt`` / ``best.pt`` / ``history.json``.
    """

    name = "s4m"
    title = "S4M"
    config_cls: ClassVar[type] = S4MConfig
    config: S4MConfig

    def prepare_samples(self, train: Sequence[Case], out_dir: Path, progress: bool) -> list[TrainSample]:
        cfg = self.config
        out_dir = Path(out_dir)
        labelled = set(labelled_subset([c.case_id for c in train], cfg.labelled_fraction, cfg.weak_seed))
        lab = [c for c in train if c.case_id in labelled]
        teacher = self._teacher(lab, out_dir, progress)
        stage = self.sam_stage(out_dir)
        samples: list[TrainSample] = []
        quality: dict[str, dict[str, float]] = {}
        device = next(teacher.parameters()).device
        for case in progress_bar(train, desc="S4M SAM refinement", unit="image", disable=not progress):
            image = normalise_image(case.image)
            hw = image.shape[-2:]
            if case.case_id in labelled:
                inst = case_instance(case)
            else:
                res = stage.cached(out_dir / "sam", case.case_id,
                                   lambda: self._refine(stage, teacher, case, image, device))
                inst = res["refined"]
                ref = case_instance(case)
                quality[case.case_id] = {**{f"teacher_{k}": v for k, v in instance_quality(res["teacher"], ref).items()},
                                         **{f"refined_{k}": v for k, v in instance_quality(inst, ref).items()}}
            maps = {"target": contour_target(inst), "instance": inst.astype(np.int32)}
            if cfg.distill_weight > 0:
                maps["sam_feat"] = stage.cached(out_dir / "sam_features", case.case_id,
                                                lambda: {"feat": sam_feature_map(stage, case, tuple(hw))})["feat"]
            samples.append(TrainSample(case.case_id, image, maps, {"target": IGNORE}))
        stage.release()
        write_instance_quality(out_dir / "sam" / "quality.json", quality, cfg.selection)
        self._teacher_state = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
        return samples

    def _teacher(self, labelled: Sequence[Case], out_dir: Path, progress: bool) -> torch.nn.Module:
        """Train (or resume) the teacher on the labelled images; return its selected network."""
        from scribmed.runtime.checkpoint import load_network_weights
        from scribmed.runtime.device import resolve_device
        from scribmed.networks.instance_unet import InstanceUNet

        cfg = self.config
        tcfg = dataclasses.replace(cfg, iterations=int(cfg.teacher_iterations or max(1, cfg.iterations // 2)),
                                   progress=progress)
        samples = [TrainSample(c.case_id, normalise_image(c.image), {"target": contour_target(case_instance(c))},
                               {"target": IGNORE}) for c in labelled]
        task = InstanceTask(f"{self.name}-teacher", samples, PartialContourLoss({"target": 1.0}, cfg.boundary_weight),
                            record={"stage": "teacher", "labelled": sorted(c.case_id for c in labelled)})
        result = train_instance_segmentor(task, getattr(self, "_val_items", []), out_dir / "teacher", tcfg,
                                          self._class_map)
        net = InstanceUNet(cfg.in_channels, 3, cfg.features)
        load_network_weights(net, result.checkpoint("best"))
        return net.to(resolve_device(cfg.device)).eval()

    def _refine(self, stage: Any, teacher: torch.nn.Module, case: Case, image: np.ndarray,
                device: torch.device) -> dict[str, np.ndarray]:
        from scribmed.sam.instance_prompting import refine_instances

        cfg = self.config
        probs = predict_probabilities(teacher, image, device)
        inst = instances_from_contours(probs, mode=cfg.postprocess, min_size=cfg.min_size)
        if inst.max() == 0:
            return {"teacher": inst, "refined": inst}
        rng = np.random.default_rng([cfg.weak_seed, 0x54F, *[ord(c) for c in case.case_id[:16]]])
        refined, _ = refine_instances(stage.backend, stage.embedding(case), tuple(image.shape[-2:]), inst,
                                      probs[1] + probs[2], k=cfg.refine_points, rule=cfg.selection, rng=rng,
                                      min_size=cfg.sam_min_size, batch_size=32,
                                      box_margin=cfg.refine_box_margin)
        refined = np.asarray(refined, dtype=np.int32)
        if cfg.refine_min_iou > 0:
            refined = gate_refinement(inst.astype(np.int32), refined, cfg.refine_min_iou)
        return {"teacher": inst.astype(np.int32), "refined": refined}

    def train(self, train, val, class_map, out_dir, progress):
        self._val_items = [(c.case_id, normalise_image(c.image), case_instance(c)) for c in val]
        self._class_map = class_map
        return super().train(train, val, class_map, out_dir, progress)

    def weak_provenance(self) -> dict[str, Any]:
        cfg = self.config
        return {"simulated_from": "instance masks", "kind": "full on a labelled subset, none elsewhere",
                "labelled_fraction": cfg.labelled_fraction, "seed": cfg.weak_seed}

    def init_state(self, out_dir: Path) -> Optional[Mapping[str, torch.Tensor]]:
        return getattr(self, "_teacher_state", None)

    def objective(self) -> Any:
        cfg = self.config
        return S4MLoss(cfg.distill_weight, cfg.distill_points, cfg.boundary_weight)

    def mix(self) -> Any:
        cfg = self.config
        if not cfg.arp:
            return None
        keys = ["target"] + (["sam_feat"] if cfg.distill_weight > 0 else [])
        return _ARPMix(cfg.arp_prob, keys)
