"""The training configuration shared by the segmentor recipes, and what a training run returns.

:class:`TrainConfig` holds the schedule every 2D segmentor recipe trains with (DMPLS's: SGD, poly
decay, batch 12, 256x256 slices, the papers' defaults); each recipe subclasses it with its own
loss weights (``scribmed.recipes.dmpls.config.DMPLSConfig`` adds DMPLS's pseudo-label weight,
SAM-SP's config the alignment weight). :func:`poly_lr` is the learning-rate schedule every trainer uses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

__all__ = ["TrainConfig", "TrainResult", "poly_lr"]

logger = logging.getLogger(__name__)



@dataclass
class TrainConfig:
    """Hyper-parameters of one segmentor training run (defaults: DMPLS's paper schedule).

    Attributes:
        iterations: total SGD iterations (paper: 60000).
        batch_size: slices per iteration (per process under DDP).
        size: network input ``(h, w)``; square (rot90 augmentation) and divisible by 16.
        lr, momentum, weight_decay: SGD.
        poly_power: exponent of the poly learning-rate decay.
        lr_horizon: iterations over which the poly decay runs to zero (``None``: ``iterations``).
            WSL4MIS decays over its configured ``max_iterations`` (60000) whatever the run's
            length, so a short run at ``lr_horizon=60000`` follows the paper's schedule.
        image_interp: how images are resized to ``size`` for training and inference,
            ``"bilinear"`` (default) or ``"nearest"`` (what WSL4MIS does); labels are always nearest.
        upsample: the U-Net decoder's up-steps, ``"bilinear"`` (default: 1x1 conv + bilinear, what
            the WSL4MIS code that produced the paper's numbers runs; measured to learn much faster
            at short budgets, docs/recipes.md) or ``"transpose"`` (2x2 transposed conv as the
            DMPLS paper's text describes it).
        channels_last: train in the NHWC memory format (default: 1.29x faster than NCHW per
            iteration on a 2-core CPU, docs/recipes.md). The forward pass equals NCHW's to float
            rounding; dropout masks are drawn in memory order, so the run is another reproducible
            random draw than the NCHW run with the same seed (``False``: NCHW, as before).
        seed: seeds weights, sampling, augmentation and the loss's alpha draws.
        epoch_length: iterations between validations/checkpoints (one engine epoch).
        num_workers: DataLoader worker processes (results do not depend on it). ``None``
            (default) or ``"auto"``: none on the CPU, ``min(4, cores)`` on CUDA (with pinned
            memory and persistent workers; :func:`scribmed.runtime.device.loader_options`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: mixed precision (:func:`scribmed.runtime.device.amp_policy`): ``True`` / ``"auto"``
            (default: on CUDA bfloat16 where the GPU has it, else float16 + GradScaler; float32 on
            a CPU), ``"bf16"`` (CUDA, or a CPU with AVX512-BF16/AMX), ``"fp16"`` (CUDA; float32 on
            a CPU), ``False`` / ``"off"``.
        in_channels: image channels.
        augment: DMPLS augmentation (rot90 + flip or a rotation within +-20 degrees).
        deterministic: ``torch.use_deterministic_algorithms`` (warn-only) during training.
        val_batch_size: slices per forward pass during validation.
        progress: progress bar over iterations (rank 0); also the printed training-time estimate.
        max_cpu_hours: on a CPU, stop a run whose training would take longer than this many hours,
            estimated from its first iterations (:mod:`scribmed.training.time_estimate`); ``None``
            or ``0``: no limit. Never applies on CUDA; does not change results.
    """

    iterations: int = 60000
    batch_size: int = 12
    size: tuple[int, int] = (256, 256)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    lr_horizon: Optional[int] = None
    image_interp: str = "bilinear"
    upsample: str = "bilinear"
    channels_last: bool = True
    seed: int = 0
    epoch_length: int = 100
    num_workers: Optional[int] = None
    device: str = "auto"
    amp: bool | str = True
    in_channels: int = 1
    augment: bool = True
    deterministic: bool = True
    val_batch_size: int = 16
    progress: bool = True
    max_cpu_hours: Optional[float] = 4.0

    #: fields that change the result; a resumed run must agree on them.
    RESULT_FIELDS = (
        "iterations", "batch_size", "size", "lr", "momentum", "weight_decay", "poly_power",
        "lr_horizon", "image_interp", "upsample", "channels_last", "seed", "epoch_length", "in_channels", "augment",
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)  # type: ignore[assignment]
        for name in ("iterations", "batch_size", "epoch_length", "in_channels", "val_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_cpu_hours is not None and float(self.max_cpu_hours) < 0:
            raise ValueError(f"TrainConfig.max_cpu_hours must be >= 0 (0: no limit), got {self.max_cpu_hours}")
        if isinstance(self.num_workers, str) and self.num_workers.strip().lower() == "auto":
            self.num_workers = None
        if self.num_workers is not None:
            self.num_workers = int(self.num_workers)
            if self.num_workers < 0:
                raise ValueError(f"TrainConfig.num_workers must be >= 0 or None (auto), got {self.num_workers}")
        from scribmed.runtime.device import amp_mode

        amp_mode(self.amp)  # validates; the value is kept as given (it is part of run records)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"TrainConfig.size must be two positive ints, got {self.size}")
        if self.augment and self.size[0] != self.size[1]:
            raise ValueError(f"TrainConfig.size must be square with rot90 augmentation, got {self.size}")
        if self.lr_horizon is not None:
            self.lr_horizon = int(self.lr_horizon)
            if self.lr_horizon < self.iterations:
                raise ValueError(
                    f"TrainConfig.lr_horizon ({self.lr_horizon}) must be >= iterations ({self.iterations}) or None"
                )
        if self.image_interp not in ("bilinear", "nearest"):
            raise ValueError(f"TrainConfig.image_interp must be 'bilinear' or 'nearest', got {self.image_interp!r}")
        if self.upsample not in ("transpose", "bilinear"):
            raise ValueError(f"TrainConfig.upsample must be 'transpose' or 'bilinear', got {self.upsample!r}")
        if not self.lr > 0 or self.momentum < 0 or self.weight_decay < 0 or self.poly_power < 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0 and momentum, weight_decay, poly_power >= 0")

    @classmethod
    def result_fields(cls) -> tuple[str, ...]:
        """The fields a resumed run must agree on (:attr:`RESULT_FIELDS`)."""
        return tuple(cls.RESULT_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``size`` as a list)."""
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (typos are not ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
        d = dict(data)
        if "size" in d:
            size = d["size"]
            d["size"] = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        return cls(**d)

    @property
    def decay_iterations(self) -> int:
        """Length of the poly decay: ``lr_horizon`` or, when unset, the run's ``iterations``."""
        return int(self.lr_horizon) if self.lr_horizon is not None else int(self.iterations)

    def network_kwargs(self) -> dict[str, Any]:
        """Architecture options every recipe network takes (besides channels and classes)."""
        return {"upsample": self.upsample}

    def build_network(self, network_cls: Callable[..., Any], num_classes: int) -> Any:
        """``network_cls(in_channels, num_classes, **network_kwargs())``: the one way a segmentor recipe's
        network is built, for training and for loading a checkpoint."""
        return network_cls(in_channels=self.in_channels, num_classes=int(num_classes), **self.network_kwargs())

    @property
    def max_epochs(self) -> int:
        """Engine epochs needed for ``iterations``."""
        return math.ceil(self.iterations / self.epoch_length)


@dataclass
class TrainResult:
    """What :func:`train_dmpls` produced.

    Attributes:
        best_checkpoint: ``best.pt`` (highest validation Dice), ``None`` without validation cases.
        last_checkpoint: ``last.pt`` (state at the final iteration).
        history_path: ``history.json``.
        best_metric: best validation score (``None`` without validation): mean foreground Dice, or the
            DSB score for the instance recipes.
        best_iteration: iteration of ``best_checkpoint``.
        curve_path: training-curve PNG.
        checksums: sha256 by checkpoint name (``"best"``, ``"last"``).
        iterations: iterations completed.
    """

    best_checkpoint: Optional[Path]
    last_checkpoint: Path
    history_path: Path
    best_metric: Optional[float]
    best_iteration: Optional[int]
    curve_path: Optional[Path] = None
    checksums: dict[str, str] = field(default_factory=dict)
    iterations: int = 0

    def checkpoint(self, which: str = "best") -> Path:
        """``best`` (falls back to ``last`` when there was no validation) or ``last``."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        if which == "best" and self.best_checkpoint is not None:
            return self.best_checkpoint
        return self.last_checkpoint


def poly_lr(base_lr: float, iteration: int, total: int, power: float = 0.9) -> float:
    """Poly decay: learning rate for the 0-based ``iteration`` of ``total``."""
    return float(base_lr) * max(0.0, 1.0 - iteration / total) ** power


