"""The instance recipes in the one training loop: a 2D contour U-Net on whole images held in memory.

The instance recipes (``contour_unet``, ``sesam``, ``s4m``, ``wish``) all train
:class:`~scribmed.networks.instance_unet.InstanceUNet`; they differ only in the per-pixel maps they
prepare for each training image (weak targets, SAM pseudo labels, SAM candidate masks, SAM
features), their :class:`InstanceObjective` and optional hooks (:class:`InstanceTask`).
:class:`InstanceTrainer` is the :class:`~scribmed.training.trainer.SegmentorTrainer` the semantic
recipes run, overriding its hooks:

* ``learning_rate``: AdamW's rate follows a cosine decay to 5 % over the run;
* ``forward``: logits, and decoder features when the objective reads them;
* ``compute_loss``: the objective, given the EMA teacher's softmax when it asks for one
  (:class:`~scribmed.training.ema_teacher.EMATeacher`), on float32 logits;
* ``after_step``: the teacher's update;
* the state hooks: ``network`` in a checkpoint is the network validated and predicted
  (``predict_with``: the student or the teacher), ``student`` / ``teacher`` resume training.

The batches are random crops (:mod:`scribmed.training.instance_batches`), validation is the mean
DSB score of whole validation images (:class:`~scribmed.training.validation.InstanceScoreEvaluator`)
every ``val_interval`` iterations, and checkpoints, history, curve and resume are the
:class:`~scribmed.training.run_record.RunRecorder`'s. Every random draw of iteration ``i``
(crops, dropout) derives from ``(seed, i)``, so a resumed run draws what an uninterrupted one
would.

``amp`` runs the student's and teacher's forward passes under
:func:`~scribmed.runtime.device.amp_policy`'s autocast on CUDA (the objective on float32 logits,
a ``GradScaler`` for float16); off by default, always off on the CPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from scribmed.data.case import ClassMap
from scribmed.data.errors import DataError
from scribmed.networks.instance_unet import InstanceUNet
from scribmed.runtime.device import AmpRequest, resolve_device
from scribmed.runtime.seeding import derive_seed
from scribmed.training.assembly import run_training
from scribmed.training.config import TrainResult
from scribmed.training.ema_teacher import EMATeacher
from scribmed.training.instance_batches import BatchMix, CropBatchDataset, TrainSample
from scribmed.training.run_record import RunRecorder
from scribmed.training.sampling import IterationSampler
from scribmed.training.time_estimate import TrainingTimeEstimate
from scribmed.training.trainer import SegmentorTrainer
from scribmed.training.validation import InstanceScoreEvaluator

__all__ = [
    "InstanceObjective",
    "InstanceTask",
    "InstanceTrainConfig",
    "InstanceTrainer",
    "StudentOutput",
    "assemble_instance_trainer",
    "train_instance_segmentor",
]

_DROP_TAG = 0xD0

#: a recipe's hook after each validation (and when a run resumes): ``refresh(iteration, student)``
Refresh = Callable[[int, torch.nn.Module], None]


@dataclass
class InstanceTrainConfig:
    """Schedule and network of the instance segmentor (CPU-sized defaults).

    Attributes:
        iterations: optimiser steps.
        batch_size: images per step (one random crop each).
        patch: side of the square training crop (divisible by 2 ** (stages - 1)).
        lr / weight_decay: AdamW; the learning rate follows a cosine decay to 5 % over the run.
        val_interval: iterations between validations (and ``last.pt`` writes).
        seed: every random draw of the run derives from it.
        in_channels: image channels (1 grey, 3 RGB; the reader's ``channels``).
        features: U-Net channels per stage.
        ema_decay: EMA teacher decay (used when the objective asks for a teacher).
        predict_with: ``"student"`` or ``"teacher"`` (the network validated, saved and predicted).
        postprocess: ``"watershed"`` or ``"components"``; ``min_size``: smallest instance kept (px).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``.
        progress: progress bar (and the printed training-time estimate).
        max_cpu_hours: on a CPU, stop a run whose training would take longer (hours, estimated from
            its first iterations); ``None`` or ``0``: no limit.
    """

    iterations: int = 400
    batch_size: int = 8
    patch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_interval: int = 50
    seed: int = 0
    in_channels: int = 1
    features: tuple[int, ...] = (16, 32, 64, 128)
    ema_decay: float = 0.999
    predict_with: str = "student"
    postprocess: str = "watershed"
    min_size: int = 10
    device: str = "auto"
    progress: bool = True
    max_cpu_hours: Optional[float] = 4.0

    #: fields that do not change results (not compared when a run resumes)
    VOLATILE: ClassVar[tuple[str, ...]] = ("device", "progress", "max_cpu_hours")

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in self.features)
        if self.predict_with not in ("student", "teacher"):
            raise ValueError(f"predict_with must be 'student' or 'teacher', got {self.predict_with!r}")
        d = 2 ** (len(self.features) - 1)
        if self.patch % d:
            raise ValueError(f"patch {self.patch} must be divisible by {d} ({len(self.features)} U-Net stages)")
        for name in ("iterations", "batch_size", "val_interval"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def result_fields(cls) -> tuple[str, ...]:
        """The fields a resumed run must agree on: all but :attr:`VOLATILE`."""
        return tuple(name for name in cls.field_names() if name not in cls.VOLATILE)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class StudentOutput:
    """What the objective sees of the student: logits ``(B, 3, h, w)`` and decoder features."""

    logits: torch.Tensor
    features: Optional[torch.Tensor] = None


class InstanceObjective(Protocol):
    """A recipe's loss. ``uses_teacher`` / ``uses_features`` say what the loop must compute."""

    uses_teacher: bool
    uses_features: bool

    def __call__(
        self, out: StudentOutput, batch: Mapping[str, torch.Tensor], teacher_probs: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@dataclass
class InstanceTask:
    """What an instance recipe trains: its images, its loss and its hooks.

    Attributes:
        recipe: the recipe's name (stored in the checkpoints; resume refuses another's run).
        samples: the training images with the maps the objective reads.
        objective: the recipe's loss (an ``nn.Module``; its state goes into the checkpoints).
        mix: optional batch step after cropping (e.g. ARP copy-paste).
        init_state: network weights to start from (e.g. S4M's teacher stage).
        refresh: called as ``refresh(iteration, student)`` after each validation's checkpoint
            (and when a run resumes), e.g. WISH re-choosing SAM candidates against the student; it
            may change the samples' maps in place.
        record: further identity of the run a resumed run must match (e.g. S4M's teacher stage
            and its labelled images).
    """

    recipe: str
    samples: Sequence[TrainSample]
    objective: Any
    mix: Optional[BatchMix] = None
    init_state: Optional[Mapping[str, torch.Tensor]] = None
    refresh: Optional[Refresh] = None
    record: Mapping[str, Any] = field(default_factory=dict)


def cosine_lr(base: float, index: int, total: int) -> float:
    """The learning rate of 0-based iteration ``index``: cosine from ``base`` down to 5 % of it at ``total``."""
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(index, total) / total)))


class InstanceTrainer(SegmentorTrainer):
    """The segmentor loop with the instance recipes' hooks (see the module docstring).

    Extra arguments (besides :class:`SegmentorTrainer`'s):
        objective: the recipe's :class:`InstanceObjective` (also the ``loss_function``).
        teacher: the EMA teacher (``None`` when neither the objective nor ``predict_with`` needs one).
        predict_with: ``"student"`` or ``"teacher"``.
        seed: the run seed (each iteration's dropout derives from it and the iteration).
    """

    def __init__(self, *args: Any, objective: Any, teacher: Optional[EMATeacher], predict_with: str, seed: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, loss_function=objective, **kwargs)
        self.objective = objective
        self.teacher = teacher
        self.predict_with = predict_with
        self.seed = int(seed)
        self.loss_terms = ()
        self.add_event_handler(Events.ITERATION_STARTED, self._seed_iteration)

    target_key = "target"

    @property
    def predicted_network(self) -> torch.nn.Module:
        """The network validated, saved as ``network`` and predicted with."""
        return self.teacher.network if self.predict_with == "teacher" else self.network

    def _seed_iteration(self, engine: "InstanceTrainer") -> None:
        torch.manual_seed(derive_seed(self.seed, _DROP_TAG, engine.state.iteration - 1))

    def learning_rate(self, index: int) -> float:
        return cosine_lr(self.base_lr, index, self.total_iterations)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.objective.uses_features:
            return self.network.forward_features(images)
        return self.network(images), None

    def compute_loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        logits, feats = outputs
        teacher_probs = None
        if self.objective.uses_teacher and self.teacher is not None:
            with self.amp_policy.autocast():
                teacher_probs = torch.softmax(self.teacher.logits(batch["image"]).float(), 1)
        if self.amp_policy.enabled:  # the objective in float32
            logits, feats = logits.float(), None if feats is None else feats.float()
        loss, parts = self.objective(StudentOutput(logits, feats), batch, teacher_probs)
        self.loss_terms = tuple(sorted(set(self.loss_terms) | set(parts)))
        return loss, logits, {k: torch.tensor(float(v)) for k, v in parts.items()}

    def after_step(self) -> None:
        if self.teacher is not None:
            self.teacher.update(self.network)

    def training_state(self) -> dict[str, Any]:
        state = super().training_state()
        state["network"] = self.predicted_network.state_dict()
        state["student"] = self.network.state_dict()
        state["teacher"] = None if self.teacher is None else self.teacher.state_dict()
        return state

    def load_training_state(self, ckpt: Mapping[str, Any]) -> None:
        super().load_training_state({**ckpt, "network": ckpt["student"]})
        if self.teacher is not None and ckpt.get("teacher") is not None:
            self.teacher.load_state_dict(ckpt["teacher"])


def assemble_instance_trainer(
    task: InstanceTask,
    val: Sequence[tuple[str, np.ndarray, np.ndarray]],
    out_dir: Path,
    cfg: InstanceTrainConfig,
    class_map: ClassMap,
    amp: AmpRequest = False,
) -> tuple[InstanceTrainer, Optional[InstanceScoreEvaluator]]:
    """Network, teacher, AdamW, crop batches, DSB evaluator and run recorder of an instance run.

    Seeds torch from ``cfg.seed`` right before building the network, so two builds start from
    identical weights (then ``task.init_state`` when given).
    """
    if not task.samples:
        raise DataError(out_dir, "no training images")
    device = resolve_device(cfg.device)
    torch.manual_seed(derive_seed(cfg.seed, _DROP_TAG))
    student = InstanceUNet(cfg.in_channels, 3, cfg.features).to(device)
    if task.init_state is not None:
        student.load_state_dict(task.init_state)
    objective = task.objective
    teacher = EMATeacher(student, decay=cfg.ema_decay) if (objective.uses_teacher or cfg.predict_with == "teacher") \
        else None
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = IterationSampler(cfg.val_interval)
    loader = DataLoader(CropBatchDataset(task.samples, cfg.batch_size, cfg.patch, cfg.seed, task.mix),
                        batch_size=None, sampler=sampler, num_workers=0)
    trainer = InstanceTrainer(
        device=device, network=student, optimizer=optimizer, train_data_loader=loader, sampler=sampler,
        iterations=cfg.iterations, epoch_length=cfg.val_interval, base_lr=cfg.lr, amp=amp,
        objective=objective.to(device) if hasattr(objective, "to") else objective, teacher=teacher,
        predict_with=cfg.predict_with, seed=cfg.seed,
    )
    trainer.recipe = task.recipe
    evaluator = None
    if val:
        evaluator = InstanceScoreEvaluator(device, val, trainer.predicted_network, cfg.postprocess, cfg.min_size)
    trainer.recorder = RunRecorder(trainer, evaluator, Path(out_dir), cfg, class_map, progress=cfg.progress,
                                   record=task.record)
    TrainingTimeEstimate(cfg.max_cpu_hours, report=cfg.progress).attach(trainer)
    if task.refresh is not None:
        refresh = task.refresh

        def after_validation(engine: InstanceTrainer) -> None:
            if 0 < engine.state.iteration < engine.total_iterations:
                refresh(int(engine.state.iteration), engine.network)

        trainer.add_event_handler(Events.STARTED, after_validation)  # a resumed run
        trainer.add_event_handler(Events.EPOCH_COMPLETED, after_validation)  # after the recorder's checkpoint
    return trainer, evaluator


def train_instance_segmentor(
    task: InstanceTask,
    val: Sequence[tuple[str, np.ndarray, np.ndarray]],
    out_dir: Path,
    cfg: InstanceTrainConfig,
    class_map: ClassMap,
    amp: AmpRequest = False,
) -> TrainResult:
    """Train the contour U-Net, resuming ``out_dir/last.pt`` when there is one.

    Args:
        task: the recipe's images, loss and hooks.
        val: ``(case_id, normalised image (C, H, W), reference instance map (H, W))`` for selection.
        out_dir: ``last.pt``, ``best.pt``, ``history.json``, ``checkpoints.json``, ``training_curve.png``.
        cfg: schedule and network (a recipe passes its own config, an :class:`InstanceTrainConfig`
            subclass: it is stored in the checkpoints and compared on resume).
        class_map: the dataset's classes (stored in the checkpoints).
        amp: mixed precision (``"auto"``/``True``, ``"bf16"``, ``"fp16"``, ``False``/``"off"``,
            the default; :func:`~scribmed.runtime.device.amp_policy`: on a CPU only ``"bf16"``
            autocasts, where native).

    Raises:
        DataError: no training images; ``last.pt`` was written by another configuration.
    """
    out_dir = Path(out_dir)
    return run_training(lambda: assemble_instance_trainer(task, val, out_dir, cfg, class_map, amp), out_dir,
                        deterministic=False, has_validation=bool(val), resume=True)
