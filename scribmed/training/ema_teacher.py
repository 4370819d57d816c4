"""An EMA (mean) teacher for any trainer, and the SeSAM objective built on it.

:class:`EMATeacher` holds a copy of the student network whose parameters follow the student's as
an exponential moving average (Tarvainen & Valpola, NeurIPS 2017), updated after every
optimizer step::

    t <- d * t + (1 - d) * s          d = decay (0.999, SeSAM)

With ``warmup=True`` the decay is ``min(decay, (1 + n) / (10 + n))``, ``n`` the number of updates
done before this one (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``), so the early
teacher follows the fast-changing student closely; off by default. Buffers (BatchNorm running
statistics) are **copied** from the student by default (``buffers="copy"``: the student's
statistics describe the current features; averaging them lags ~1 / (1 - d) steps) or averaged
like the parameters (``buffers="average"``); integer buffers (``num_batches_tracked``) are
always copied.

The teacher never receives gradients (its parameters have ``requires_grad=False`` and it runs
under ``torch.no_grad``), always runs in eval mode (``train()`` leaves its network in eval:
BatchNorm uses running statistics, no dropout), lives on the device of the student it was
copied from (``.to()`` moves it like any module; updates and inputs are moved to it) and its
``state_dict()`` (network + update count) resumes it from a checkpoint.

Pseudo labels: :meth:`EMATeacher.pseudo_labels` gives the teacher's argmax and confidence (its
max softmax probability); :meth:`EMATeacher.targets` keeps pixels whose confidence is >= the
threshold (0.96, SeSAM) and sets the others to ``ignore_index``.

:class:`SeSAMObjective` is ``L = L_weak + 1.0 * L_SAM + 0.01 * L_teacher`` (SeSAM's weights,
:class:`SeSAMConfig`) with :class:`~scribmed.losses.mixed_supervision.MixedSupervisionLoss` and
the precedence weak > SAM > teacher of :func:`~scribmed.losses.mixed_supervision.combine_targets`.
Used as a trainer's ``loss_function`` it moves to the device with it and its ``state_dict()``
(the teacher's) goes into the trainer's checkpoint. In a
:class:`~scribmed.training.trainer.SegmentorTrainer` subclass::

    objective.bind_student(network)            # once, before resuming
    loss = objective(logits, batch["supervision"], batch, sam=batch.get("sam"), images=batch["image"])
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED,
                              lambda e: e.loss_function.update_teacher(e.network))

(batches through that trainer keep tensors only: give ``supervision`` as the integer codes of
:func:`~scribmed.losses.mixed_supervision.supervision_codes`.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from scribmed.losses.mixed_supervision import MixedSupervisionLoss, combine_targets

__all__ = [
    "BUFFER_MODES",
    "EMATeacher",
    "SeSAMConfig",
    "SeSAMObjective",
    "confident_labels",
]

#: How :meth:`EMATeacher.update` treats floating-point buffers.
BUFFER_MODES = ("copy", "average")


def _unwrap(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (else itself).

    The rule of :func:`scribmed.training.inference.unwrap_network`, kept here so that importing the
    teacher does not pull in the inference stack (MONAI transforms).
    """
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, nn.Module) else network


def _first_tensor(output: Any) -> torch.Tensor:
    """The logits of a network output: the tensor itself, or the first item of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot take logits from a network output of type {type(output).__name__}; pass select=")


def confident_labels(
    label: torch.Tensor, confidence: torch.Tensor, threshold: float, ignore_index: int
) -> torch.Tensor:
    """``label`` where ``confidence >= threshold``, ``ignore_index`` elsewhere (same shape, long)."""
    if label.shape != confidence.shape:
        raise ValueError(f"label {tuple(label.shape)} and confidence {tuple(confidence.shape)} differ in shape")
    label = label.long()
    return torch.where(confidence >= threshold, label, torch.full_like(label, int(ignore_index)))


class EMATeacher(nn.Module):
    """Exponential-moving-average copy of a student network (see the module docstring).

    Args:
        student: the network to copy (a ``DistributedDataParallel`` wrapper is unwrapped); the
            teacher starts equal to it, on its device.
        decay: EMA decay ``d`` in ``[0, 1]`` (0.999, SeSAM; 1 freezes the teacher).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` (off by default).
        buffers: ``"copy"`` (default) or ``"average"`` floating-point buffers.
        threshold: confidence a pixel needs to become a pseudo label (0.96, SeSAM).
        select: maps the network's eval-mode output to logits ``(B, C, H, W)``; by default the
            output itself, or its first item when it is a tuple/list.
    """

    def __init__(
        self,
        student: nn.Module,
        decay: float = 0.999,
        warmup: bool = False,
        buffers: str = "copy",
        threshold: float = 0.96,
        select: Optional[Callable[[Any], torch.Tensor]] = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if buffers not in BUFFER_MODES:
            raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.buffers_mode = buffers
        self.threshold = float(threshold)
        self.select = select or _first_tensor
        network = copy.deepcopy(_unwrap(student))
        network.requires_grad_(False)
        network.eval()
        self.network = network
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @property
    def device(self) -> torch.device:
        for t in self.network.parameters():
            return t.device
        return self.num_updates.device

    def train(self, mode: bool = True) -> "EMATeacher":
        """Sets the module's flag only; the teacher network stays in eval mode."""
        super().train(mode)
        self.network.eval()
        return self

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        if not self.warmup:
            return self.decay
        n = int(self.num_updates)
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, student: nn.Module) -> float:
        """One EMA step towards ``student`` (call after each optimizer step); returns the decay used.

        Raises:
            ValueError: the student's parameters or buffers do not match the teacher's names.
        """
        student = _unwrap(student)
        d = self.current_decay()
        s_params = dict(student.named_parameters())
        t_params = dict(self.network.named_parameters())
        if s_params.keys() != t_params.keys():
            raise ValueError("the student's parameters do not match the teacher's (another architecture?)")
        s_bufs = dict(student.named_buffers())
        t_bufs = dict(self.network.named_buffers())
        if s_bufs.keys() != t_bufs.keys():
            raise ValueError("the student's buffers do not match the teacher's (another architecture?)")
        for name, t in t_params.items():
            self._blend(t, s_params[name], d)
        for name, t in t_bufs.items():
            s = s_bufs[name]
            if self.buffers_mode == "average" and t.is_floating_point():
                self._blend(t, s, d)
            else:
                t.copy_(s.detach().to(device=t.device, dtype=t.dtype))
        self.num_updates += 1
        return d

    @staticmethod
    def _blend(t: torch.Tensor, s: torch.Tensor, d: float) -> None:
        s = s.detach().to(device=t.device, dtype=t.dtype)
        if t.is_floating_point():
            t.mul_(d).add_(s, alpha=1.0 - d)
        else:
            t.copy_(s)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits ``(B, C, H, W)`` (eval mode, no gradient) on the images' device."""
        self.network.eval()
        out = self.select(self.network(images.to(self.device)))
        return out.to(images.device)

    @torch.no_grad()
    def pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(label, confidence)``, both ``(B, H, W)``: the teacher's argmax (long) and its max
        softmax probability (float32), on the images' device."""
        probs = torch.softmax(self.logits(images).float(), dim=1)
        confidence, label = probs.max(dim=1)
        return label, confidence

    @torch.no_grad()
    def targets(self, images: torch.Tensor, ignore_index: int, threshold: Optional[float] = None) -> torch.Tensor:
        """``(B, H, W)`` long teacher pseudo label: the argmax where the confidence is >= ``threshold``
        (default :attr:`threshold`), ``ignore_index`` elsewhere."""
        label, confidence = self.pseudo_labels(images)
        return confident_labels(label, confidence, self.threshold if threshold is None else threshold, ignore_index)

    def extra_repr(self) -> str:
        return (
            f"decay={self.decay}, warmup={self.warmup}, buffers={self.buffers_mode!r}, "
            f"threshold={self.threshold}"
        )


@dataclass
class SeSAMConfig:
    """SeSAM's training weights and teacher settings.

    Attributes:
        sam_weight: weight of the SAM pseudo-label term (1.0).
        teacher_weight: weight of the teacher pseudo-label term (0.01).
        type_weights: per-type weights of the weak term (missing types 1).
        ema_decay: the teacher's EMA decay (0.999).
        ema_warmup: the ``min(decay, (1 + n) / (10 + n))`` warm-up (off).
        ema_buffers: ``"copy"`` or ``"average"`` the student's buffers.
        confidence: the teacher's pseudo-label threshold (0.96).
    """

    sam_weight: float = 1.0
    teacher_weight: float = 0.01
    type_weights: dict[str, float] = field(default_factory=dict)
    ema_decay: float = 0.999
    ema_warmup: bool = False
    ema_buffers: str = "copy"
    confidence: float = 0.96

    def __post_init__(self) -> None:
        for name in ("sam_weight", "teacher_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"SeSAMConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"SeSAMConfig.ema_decay must be in [0, 1], got {self.ema_decay}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"SeSAMConfig.confidence must be in [0, 1], got {self.confidence}")
        if self.ema_buffers not in BUFFER_MODES:
            raise ValueError(f"SeSAMConfig.ema_buffers must be one of {BUFFER_MODES}, got {self.ema_buffers!r}")


class SeSAMObjective(nn.Module):
    """``L = L_weak + sam_weight * L_SAM + teacher_weight * L_teacher`` with an EMA teacher.

    Args:
        num_classes: classes including background.
        ignore_index: the unlabelled value of sparse labels and pseudo labels.
        config: weights and teacher settings (SeSAM's defaults).
        student: the student network; the teacher is copied from it now, or later by
            :meth:`bind_student` (builders that create the loss before the network).

    Call ``objective(logits, supervision, targets, sam=None, images=None)``: ``logits``,
    ``supervision``, ``targets`` and ``sam`` as in
    :class:`~scribmed.losses.mixed_supervision.MixedSupervisionLoss`; ``images`` the student's
    input batch (same augmentation draw, so the teacher's labels align with the logits) — the
    teacher term is computed when it is given and ``teacher_weight > 0``. After each optimizer
    step call :meth:`update_teacher`. :attr:`last` holds the unweighted terms of the last call.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        config: Optional[SeSAMConfig] = None,
        student: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.config = config or SeSAMConfig()
        self.loss = MixedSupervisionLoss(
            num_classes,
            ignore_index,
            type_weights=self.config.type_weights,
            sam_weight=self.config.sam_weight,
            teacher_weight=self.config.teacher_weight,
        )
        self.teacher: Optional[EMATeacher] = None
        if student is not None:
            self.bind_student(student)

    def bind_student(self, student: nn.Module) -> EMATeacher:
        """Create the teacher as a copy of ``student`` (once; before loading a checkpoint into it)."""
        if self.teacher is not None:
            raise RuntimeError("this objective already has a teacher")
        self.teacher = EMATeacher(
            student,
            decay=self.config.ema_decay,
            warmup=self.config.ema_warmup,
            buffers=self.config.ema_buffers,
            threshold=self.config.confidence,
        )
        return self.teacher

    def _need_teacher(self) -> EMATeacher:
        if self.teacher is None:
            raise RuntimeError("no teacher yet: pass student= or call bind_student(network) first")
        return self.teacher

    @property
    def last(self) -> dict[str, float]:
        return self.loss.last

    def forward(
        self,
        logits: torch.Tensor,
        supervision: Sequence[str] | torch.Tensor,
        targets: Mapping[str, torch.Tensor],
        sam: Optional[torch.Tensor] = None,
        images: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        teacher = None
        if images is not None and self.config.teacher_weight > 0:
            teacher = self._need_teacher().targets(images, self.loss.ignore_index)
        return self.loss(logits, supervision, targets, sam=sam, teacher=teacher)

    def update_teacher(self, student: nn.Module) -> float:
        """One EMA step of the teacher towards ``student``; returns the decay used."""
        return self._need_teacher().update(student)
