"""Shared part of the instance recipes: the contour U-Net trained per fold, predicted image by image.

An instance recipe (``task = "instance"``) predicts an instance map per case (``(1, H, W)``
int32, 0 background) and the CV runner judges it with the instance metrics
(:mod:`scribmed.metrics.instance`: DSB score, F1@0.5, AJI, PQ, Dice). Subclasses say which
per-pixel maps each training image gets (:meth:`InstanceSegmentorRecipe.prepare_samples`: weak
targets, SAM pseudo labels, ...) and which loss reads them (:meth:`objective`); the schedule, the
network, selection on the validation images (DSB score), checkpoints, resume and prediction live
here and in the shared training loop (:mod:`scribmed.training.instance_trainer`).

Weak labels are simulated per training image from its instance map
(:func:`scribmed.data.instance_weak_simulation.make_instance_weak`, seeded by ``weak_seed`` and the
case id) and recorded in the run's config, so the same run always sees the same labels.

Without SAM, :class:`InstanceSegmentorRecipe` itself trains on the weak targets alone: with
``weak="full"`` the same segmentor fully supervised (the ceiling of the instance recipes), with
``weak="point"`` the points-only floor (discs around the points, Voronoi-edge background).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.training.instance_batches import BatchMix, TrainSample
from scribmed.training.instance_inference import normalise_image, predict_instances
from scribmed.training.instance_trainer import (
    InstanceTask,
    InstanceTrainConfig,
    StudentOutput,
    train_instance_segmentor,
)
from scribmed.runtime.files import file_sha256
from scribmed.recipes.base import (
    FoldModel,
    Recipe,
    checkpoint_model,
    read_recipe_checkpoint,
)
from scribmed.transforms.contour_targets import IGNORE, contour_target
from scribmed.transforms.instance_weak_targets import (
    box_target,
    coarse_target,
    point_target,
    stroke_target,
)

__all__ = ["InstanceRecipeConfig", "InstanceSegmentorRecipe", "PartialContourLoss", "SamInstanceConfig",
           "SamInstanceRecipe", "case_instance", "make_weak", "weak_target"]

WEAK_KINDS = ("full", "point", "scribble", "coarse", "box")


@dataclass
class InstanceRecipeConfig(InstanceTrainConfig):
    """The trainer's settings plus how the weak labels are simulated.

    Attributes:
        weak: the training images' label: ``"full"``, ``"point"``, ``"scribble"``, ``"coarse"``
            (SeSAM's coarse masks) or ``"box"``.
        points_per_instance / point_mode: point labels (``"center"``: deepest pixel first;
            ``"random"``: uniform inside the nucleus).
        weak_seed: seed of the simulated labels (with the case id).
        point_radius: radius (px) of the interior disc a point labels.
        boundary_weight: cross-entropy weight of the boundary class (it is rare).
    """

    weak: str = "point"
    points_per_instance: int = 1
    point_mode: str = "center"
    weak_seed: int = 0
    point_radius: int = 2
    boundary_weight: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weak not in WEAK_KINDS:
            raise ValueError(f"weak must be one of {WEAK_KINDS}, got {self.weak!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InstanceRecipeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown options {unknown} for {cls.__name__} (valid: {', '.join(sorted(names))})")
        kwargs = dict(data)
        if "features" in kwargs:
            kwargs["features"] = tuple(int(f) for f in (kwargs["features"] if not isinstance(kwargs["features"], str)
                                                         else kwargs["features"].replace(",", " ").split()))
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for k, v in list(kwargs.items()):  # CLI strings -> field types
            if isinstance(v, str) and types.get(k) in ("int", "float", "bool"):
                kwargs[k] = {"int": int, "float": float, "bool": lambda s: s.lower() in ("1", "true", "yes")}[types[k]](v)
        return cls(**kwargs)


def case_instance(case: Case) -> np.ndarray:
    """The case's instance map ``(H, W)`` int32 (a one-line error when the case has none)."""
    inst = getattr(case.load(), "instance", None)
    if inst is None:
        raise DataError(case.source, f"case {case.case_id} has no instance map (an instance layout, e.g. dsb2018, "
                        "is needed)")
    inst = np.asarray(inst)
    return (inst[0] if inst.ndim == 3 else inst).astype(np.int32, copy=False)


def make_weak(case: Case, cfg: InstanceRecipeConfig, kind: Optional[str] = None) -> Any:
    """The case's simulated :class:`~scribmed.data.instance_weak_labels.InstanceWeakLabel`."""
    from scribmed.data.instance_weak_simulation import make_instance_weak

    return make_instance_weak(case_instance(case), kind or cfg.weak, seed=cfg.weak_seed, key=case.case_id,
                              points_per_instance=cfg.points_per_instance, point_mode=cfg.point_mode)


def weak_target(weak: Any, cfg: InstanceRecipeConfig) -> np.ndarray:
    """The sparse contour target ``(H, W)`` uint8 (255 = unlabeled) of a weak label."""
    shape = tuple(int(s) for s in weak.shape)
    if weak.kind == "full":
        return contour_target(weak.mask)
    if weak.kind == "point":
        return point_target(weak.points, shape, radius=cfg.point_radius)
    if weak.kind == "scribble":
        return stroke_target(weak.mask)
    if weak.kind == "coarse":
        return coarse_target(weak.mask)
    if weak.kind == "box":
        return box_target(weak.boxes, shape)
    return np.full(shape, IGNORE, dtype=np.uint8)  # tag: nothing per pixel


class PartialContourLoss(torch.nn.Module):
    """Cross-entropy over labelled pixels of several contour targets, each with its weight.

    ``terms`` maps a batch key (``(B, H, W)`` long targets, 255 = unlabeled) to its weight. With
    ``precedence=True`` a pixel counts in the first term (in order) that labels it only, which is
    SeSAM's "weak > SAM > pseudo" rule; otherwise every term sees all its labelled pixels.
    """

    uses_teacher = False
    uses_features = False

    def __init__(self, terms: Mapping[str, float], boundary_weight: float = 2.0, precedence: bool = True) -> None:
        super().__init__()
        self.terms = dict(terms)
        self.precedence = precedence
        self.register_buffer("class_weight", torch.tensor([1.0, 1.0, float(boundary_weight)]), persistent=False)

    def ce(self, logits: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        target = target.long()
        if mask is not None:
            target = torch.where(mask, target, torch.full_like(target, IGNORE))
        if not bool((target != IGNORE).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=self.class_weight.to(logits.device), ignore_index=IGNORE)

    def forward(self, out: StudentOutput, batch: Mapping[str, torch.Tensor],
                teacher_probs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        total = out.logits.sum() * 0.0
        parts: dict[str, float] = {}
        free: Optional[torch.Tensor] = None
        for key, weight in self.terms.items():
            target = batch[key]
            loss = self.ce(out.logits, target, free if self.precedence else None)
            total = total + float(weight) * loss
            parts[key] = float(loss.detach())
            labelled = target != IGNORE
            free = ~labelled if free is None else (free & ~labelled)
        return total, parts


class InstanceSegmentorRecipe(Recipe):
    """The contour U-Net on simulated weak labels, without SAM (the floor and ceiling of the instance recipes).

    Registered as ``contour_unet``: ``--set weak=full`` is the fully supervised ceiling,
    ``--set weak=point`` the points-only floor. The test images are predicted with ``best.pt``
    (highest validation DSB score), or ``last.pt`` without validation images.
    """

    name = "contour_unet"
    title = "Contour U-Net"
    task: ClassVar[str] = "instance"
    config_cls: ClassVar[type] = InstanceRecipeConfig
    volatile: ClassVar[tuple[str, ...]] = InstanceRecipeConfig.VOLATILE
    supervision_types: ClassVar[tuple[str, ...]] = ("full",)  # weak labels are simulated from the instance maps
    config: InstanceRecipeConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._network: Optional[tuple[Path, torch.nn.Module]] = None

    # -- what subclasses change ------------------------------------------------------------

    def prepare_samples(self, train: Sequence[Case], out_dir: Path, progress: bool) -> list[TrainSample]:
        """One :class:`TrainSample` per training image, with the maps :meth:`objective` reads."""
        samples = []
        for case in train:
            weak = make_weak(case, self.config)
            samples.append(TrainSample(case.case_id, normalise_image(case.image),
                                       {"weak": weak_target(weak, self.config)}, {"weak": IGNORE}))
        return samples

    def objective(self) -> Any:
        """The loss over a batch of the samples' maps."""
        return PartialContourLoss({"weak": 1.0}, self.config.boundary_weight)

    def mix(self) -> Optional[BatchMix]:
        """An optional batch step after cropping (``None``: none)."""
        return None

    def refresher(self) -> Any:
        """An optional ``(iteration, student)`` hook run after each validation (``None``: none)."""
        return None

    def training_task(self, samples: Sequence[TrainSample], out_dir: Path) -> InstanceTask:
        """What the training loop trains: the samples, :meth:`objective` and the hooks."""
        return InstanceTask(self.name, samples, self.objective(), mix=self.mix(), init_state=self.init_state(out_dir),
                            refresh=self.refresher())

    # -- the contract ----------------------------------------------------------------------

    def check_cases(self, cases: Sequence[Case]) -> None:
        missing = [c for c in cases if not getattr(c, "has_instance", False)]
        if missing:
            raise DataError(missing[0].source, f"recipe {self.name!r} needs instance maps; {len(missing)} case(s) "
                            f"have none ({', '.join(c.case_id for c in missing[:5])})")

    def train(self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path,
              progress: bool) -> FoldModel:
        self.check_cases([*train, *val])
        cfg = self.config
        out_dir = Path(out_dir)
        samples = self.prepare_samples(train, out_dir, progress and cfg.progress)
        val_items = [(c.case_id, normalise_image(c.image), case_instance(c)) for c in val]
        run_cfg = dataclasses.replace(cfg, progress=progress and cfg.progress)
        result = train_instance_segmentor(self.training_task(samples, out_dir), val_items, out_dir, run_cfg, class_map)
        policy = "best" if result.best_checkpoint is not None else "last"
        ckpt = result.checkpoint(policy)
        return FoldModel(ckpt, policy, result.checksums.get(policy) or file_sha256(ckpt), {
            "num_classes": class_map.num_classes, "best_val_dsb_score": result.best_metric,
            "best_iteration": result.best_iteration, "iterations": result.iterations,
            "weak_labels": self.weak_provenance(),
        })

    def weak_provenance(self) -> dict[str, Any]:
        """How the training labels were made (``fold.json``): simulated from the instance masks."""
        cfg = self.config
        return {"simulated_from": "instance masks", "kind": cfg.weak, "seed": cfg.weak_seed,
                **({"points_per_instance": cfg.points_per_instance, "point_mode": cfg.point_mode}
                   if cfg.weak == "point" else {})}

    def init_state(self, out_dir: Path) -> Optional[Mapping[str, torch.Tensor]]:
        """Weights the student starts from (default: random)."""
        return None

    def network(self, model: FoldModel) -> torch.nn.Module:
        """The trained network of ``model`` (loaded once, kept until :meth:`release`)."""
        if self._network is None or self._network[0] != model.checkpoint:
            from scribmed.runtime.checkpoint import load_network_weights
            from scribmed.runtime.device import resolve_device
            from scribmed.networks.instance_unet import InstanceUNet

            net = InstanceUNet(self.config.in_channels, 3, self.config.features)
            load_network_weights(net, model.checkpoint)
            self._network = (model.checkpoint, net.to(resolve_device(self.config.device)).eval())
        return self._network[1]

    def predict_case(self, model: FoldModel, case: Case) -> np.ndarray:
        image = normalise_image(case.image)
        if image.shape[0] != self.config.in_channels:
            raise DataError(case.source, f"image has {image.shape[0]} channel(s) but the model was trained on "
                            f"{self.config.in_channels}")
        net = self.network(model)
        device = next(net.parameters()).device
        return predict_instances(net, image, device, self.config.postprocess, self.config.min_size)[None]

    def release(self, model: FoldModel) -> None:
        self._network = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Path) -> tuple["InstanceSegmentorRecipe", FoldModel, dict[str, Any]]:
        checkpoint = Path(checkpoint)
        ckpt = read_recipe_checkpoint(checkpoint, cls.name)
        model, class_map = checkpoint_model(checkpoint, ckpt)
        return cls.from_stored_config(ckpt.get("config") or {}), model, class_map

    @classmethod
    def from_stored_config(cls, stored: Mapping[str, Any]) -> "InstanceSegmentorRecipe":
        """The recipe from the config a checkpoint stored (volatile fields take their defaults)."""
        kept = {k: v for k, v in stored.items() if k not in cls.volatile}
        return cls(cls.config_cls.from_dict({**kept, "progress": False}))


@dataclass
class SamInstanceConfig(InstanceRecipeConfig):
    """The instance recipes' config with a SAM.

    Attributes:
        sam_backend / sam_checkpoint: which SAM (default LiteMedSAM, packaged weights; others need
            a user checkpoint).
        sam_cache: embedding cache folder (``None``: ``OUT/sam_embeddings`` in a CV run, shared
            by every fold; else ``<train dir>/sam_embeddings``). Does not change results.
        sam_min_size: smallest SAM instance kept (px).
    """

    sam_backend: str = "lite_medsam"
    sam_checkpoint: Optional[str] = None
    sam_cache: Optional[str] = None
    sam_min_size: int = 5

    VOLATILE: ClassVar[tuple[str, ...]] = ("device", "progress", "max_cpu_hours", "sam_cache")


class SamInstanceRecipe(InstanceSegmentorRecipe):
    """An instance recipe that prompts SAM (:class:`~scribmed.sam.instance_stage.InstanceSamStage`)."""

    config_cls: ClassVar[type] = SamInstanceConfig
    volatile: ClassVar[tuple[str, ...]] = SamInstanceConfig.VOLATILE
    config: SamInstanceConfig
    prepare_stage: ClassVar[Optional[str]] = "sam"

    def prepare_fold(self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path,
                     progress: bool) -> None:
        """The SAM stage alone (``scribmed cv --stage prepare``): every image's SAM result is cached
        under ``out_dir``, so :meth:`train` reads them instead of prompting again."""
        self.check_cases([*train, *val])
        self.prepare_samples(train, Path(out_dir), progress and self.config.progress)

    def prepare_run(self, out: Path) -> None:
        """A CV run shares one embedding cache across folds (``OUT/sam_embeddings``) unless one was given."""
        if self.config.sam_cache is None:
            self.config.sam_cache = str(Path(out) / "sam_embeddings")

    def sam_stage(self, out_dir: Path) -> Any:
        """The SAM backend and embedding cache of this run."""
        from scribmed.sam.instance_stage import InstanceSamConfig, InstanceSamStage

        cfg = self.config
        cache = cfg.sam_cache if cfg.sam_cache is not None else str(Path(out_dir) / "sam_embeddings")
        return InstanceSamStage(InstanceSamConfig(cfg.sam_backend, cfg.sam_checkpoint, cache, cfg.device),
                                progress=cfg.progress)
