"""DMPLS training on MONAI engines, with iteration budgets, validation on held-out cases and exact resume.

:class:`DMPLSTrainer` is a ``monai.engines.SupervisedTrainer`` whose iteration runs both heads of
the dual-branch U-Net, the :class:`~scribmed.losses.dmpls.DMPLSLoss` and an SGD step (AMP with a
``GradScaler`` on CUDA), with the poly learning rate ``lr = base * (1 - it / total) ** power``
set before every iteration (as WSL4MIS). An engine *epoch* is ``epoch_length`` iterations
(the validation and checkpoint interval), ``max_epochs = ceil(iterations / epoch_length)`` and
the run stops exactly at ``iterations``.

:class:`VolumeDiceEvaluator` (a ``SupervisedEvaluator``) validates on the fold's **validation**
cases (never its test cases): slice-wise volume inference at native resolution and mean
foreground Dice per case, averaged over cases. :class:`RunRecorder` keeps ``best.pt`` (highest
validation Dice, ties keep the earlier) and ``last.pt``, a ``history.json`` and a training-curve
PNG in the run folder, all written atomically by rank 0.

Checkpoints hold everything an uninterrupted run would still have in memory (network,
optimizer, scaler, the loss's alpha generator, engine iteration/epoch, sampler epoch, RNG states
of every rank, best metric), so ``train_dmpls(..., resume=True)`` ends with the same weights as
a run that was never stopped (bit-identical on CPU).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.engine import distributed as dist_utils
from scribmed.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    file_sha256,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from scribmed.engine.device import amp_enabled, resolve_device
from scribmed.engine.inference import predict_volume, unwrap_network
from scribmed.engine.sampling import EpochSeededSampler, SliceTrainingDataset, derive_seed
from scribmed.engine.slice_cache import SliceCache
from scribmed.metrics.report import atomic_write_bytes, atomic_write_text
from scribmed.losses.dmpls import DMPLSLoss
from scribmed.networks.unet_dual import DualBranchUNet
from scribmed.transforms.augment import DMPLSAugmentd

__all__ = [
    "DMPLSTrainer",
    "MeanForegroundDice",
    "RunRecorder",
    "TrainConfig",
    "TrainResult",
    "VolumeDiceEvaluator",
    "assemble_trainer",
    "build_dmpls_trainer",
    "check_resumable",
    "plot_training_curve",
    "poly_lr",
    "run_or_resume",
    "run_training",
    "train_dmpls",
]

logger = logging.getLogger(__name__)

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
HISTORY_NAME = "history.json"
CURVE_NAME = "training_curve.png"
CHECKSUMS_NAME = "checkpoints.json"

_LOSS_SEED_TAG = 0xA1FA
_RANK_SEED_TAG = 0xDD9
_LOADER_SEED_TAG = 0x10AD


def loss_generator(seed: int) -> torch.Generator:
    """The generator of the DMPLS loss's alpha draws (its own stream, saved in checkpoints)."""
    return torch.Generator().manual_seed(derive_seed(int(seed), _LOSS_SEED_TAG))


def loader_generator(seed: int) -> torch.Generator:
    """The DataLoader's own generator, so creating iterators never consumes the global torch RNG."""
    return torch.Generator().manual_seed(derive_seed(int(seed), _LOADER_SEED_TAG))


def reseed_rank(seed: int) -> None:
    """Give DDP ranks > 0 their own dropout stream; rank 0 keeps the single-process stream."""
    rank = dist_utils.get_rank()
    if rank:
        torch.manual_seed(derive_seed(int(seed), _RANK_SEED_TAG, rank))


# --------------------------------------------------------------------------------------------
# configuration and result
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyper-parameters of one DMPLS training run (defaults: the paper's, DESIGN §4.1).

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
        upsample: the U-Net decoder's up-steps, ``"transpose"`` (DESIGN §4.1) or ``"bilinear"``
            (1x1 conv + bilinear, what the WSL4MIS code runs).
        lam: weight of the pseudo-label Dice term.
        seed: seeds weights, sampling, augmentation and the loss's alpha draws.
        epoch_length: iterations between validations/checkpoints (one engine epoch).
        num_workers: DataLoader workers (results do not depend on it).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: float16 autocast + GradScaler (CUDA only).
        in_channels: image channels.
        augment: DMPLS augmentation (rot90 + flip or a rotation within +-20 degrees).
        deterministic: ``torch.use_deterministic_algorithms`` (warn-only) during training.
        val_batch_size: slices per forward pass during validation.
        progress: tqdm bar over iterations (rank 0).
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
    upsample: str = "transpose"
    lam: float = 0.5
    seed: int = 0
    epoch_length: int = 100
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    in_channels: int = 1
    augment: bool = True
    deterministic: bool = True
    val_batch_size: int = 16
    progress: bool = True

    #: fields that change the result; a resumed run must agree on them.
    RESULT_FIELDS = (
        "iterations", "batch_size", "size", "lr", "momentum", "weight_decay", "poly_power",
        "lr_horizon", "image_interp", "upsample", "lam", "seed", "epoch_length", "in_channels", "augment",
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)  # type: ignore[assignment]
        for name in ("iterations", "batch_size", "epoch_length", "in_channels", "val_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0, got {self.num_workers}")
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
        if not self.lr > 0 or self.momentum < 0 or self.weight_decay < 0 or self.poly_power < 0 or self.lam < 0:
            raise ValueError("TrainConfig: lr must be > 0 and momentum, weight_decay, poly_power, lam >= 0")

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
        best_metric: best validation mean foreground Dice (``None`` without validation).
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


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Binary Dice; 1.0 when both are empty (medpy 0.5.2's convention)."""
    try:
        from scribmed.metrics.binary import dc
    except ImportError:  # metrics is optional for the engine
        inter = np.count_nonzero(pred & ref)
        total = np.count_nonzero(pred) + np.count_nonzero(ref)
        return 1.0 if total == 0 else 2.0 * inter / total
    return float(dc(pred, ref))


class MeanForegroundDice(Metric):
    """Mean over cases of the per-case mean foreground Dice; per-class means in ``per_class``.

    Expects engine outputs with ``"dice"``: a ``(n_foreground,)`` array for one case.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self.per_class: dict[str, float] = {}
        super().__init__(output_transform=lambda out: out["dice"])

    def reset(self) -> None:
        self._rows: list[np.ndarray] = []

    def update(self, output: np.ndarray) -> None:
        self._rows.append(np.asarray(output, dtype=np.float64))

    def compute(self) -> float:
        if not self._rows:
            raise RuntimeError("MeanForegroundDice: no case was evaluated")
        table = np.stack(self._rows)
        self.per_class = {n: float(v) for n, v in zip(self.class_names, table.mean(axis=0))}
        return float(table.mean(axis=1).mean())


class VolumeDiceEvaluator(SupervisedEvaluator):
    """Validation by slice-wise volume inference on whole cases at native resolution.

    Its data is the list of validation :class:`Case` objects (one engine iteration per case);
    the key metric ``val_mean_dice`` is :class:`MeanForegroundDice`.

    Args:
        device: where to infer.
        cases: validation cases (with labels).
        network: the (unwrapped) segmentation network.
        class_map: classes; Dice is computed for its foreground labels.
        size: network input ``(h, w)``.
        batch_size: slices per forward pass.
        amp: autocast on CUDA.
        image_mode: image resizing to ``size`` (``"bilinear"`` or ``"nearest"``), as in training.
    """

    def __init__(
        self,
        device: torch.device,
        cases: Sequence[Case],
        network: torch.nn.Module,
        class_map: ClassMap,
        size: Sequence[int],
        batch_size: int = 16,
        amp: bool = False,
        image_mode: str = "bilinear",
    ) -> None:
        self.cases = list(cases)
        self.image_mode = image_mode
        self.class_map = class_map
        self.size = tuple(int(s) for s in size)
        self.batch_size = int(batch_size)
        self.metric = MeanForegroundDice([class_map.names[k] for k in class_map.foreground])
        super().__init__(
            device=device,
            val_data_loader=self.cases,
            network=network,
            epoch_length=len(self.cases),
            key_val_metric={"val_mean_dice": self.metric},
            amp=amp,
            decollate=False,
        )

    def _iteration(self, engine: Any, batchdata: Case) -> dict:
        case = batchdata
        label = case.label
        if label is None:
            raise DataError(case.source, f"validation case {case.case_id} has no label")
        pred = predict_volume(
            engine.network, case.image, size=self.size, batch_size=self.batch_size, device=engine.state.device,
            amp=self.amp, image_mode=self.image_mode,
        )
        if pred.shape != label.shape:
            raise DataError(case.source, f"label shape {label.shape} differs from the image's {pred.shape}")
        dice = np.array([_dice(pred == k, label == k) for k in self.class_map.foreground])
        return {"dice": dice, "case_id": case.case_id}


# --------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------


class DMPLSTrainer(SupervisedTrainer):
    """SupervisedTrainer running the DMPLS iteration with poly LR and an exact iteration budget.

    Args:
        device: compute device.
        network: dual-branch network (optionally DDP-wrapped) returning ``(main, aux)`` logits
            in training mode.
        optimizer: SGD over the network's parameters.
        loss_function: :class:`DMPLSLoss` (its alpha generator is part of the checkpoint).
        train_data_loader: yields ``{"image": (B, C, h, w), "scribble": (B, h, w)}``.
        sampler: the loader's :class:`EpochSeededSampler` (its epoch follows the engine's).
        iterations: total iterations; the run stops exactly there.
        epoch_length: iterations per engine epoch.
        base_lr, poly_power: poly schedule.
        lr_horizon: iterations over which the poly decay reaches zero (``None``: ``iterations``).
        amp: AMP with GradScaler (use only on CUDA).
        train_handlers: extra MONAI/ignite handlers.
    """

    def __init__(
        self,
        device: torch.device,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: DMPLSLoss,
        train_data_loader: DataLoader,
        sampler: EpochSeededSampler,
        iterations: int,
        epoch_length: int,
        base_lr: float,
        poly_power: float = 0.9,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        lr_horizon: Optional[int] = None,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=math.ceil(iterations / epoch_length),
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            train_handlers=train_handlers,
            amp=amp,
            decollate=False,
            optim_set_to_none=True,
        )
        self.sampler = sampler
        self.total_iterations = int(iterations)
        self.lr_horizon = int(lr_horizon) if lr_horizon is not None else self.total_iterations
        if self.lr_horizon < self.total_iterations:
            raise ValueError(f"lr_horizon ({self.lr_horizon}) must be >= iterations ({self.total_iterations})")
        self.base_lr = float(base_lr)
        self.poly_power = float(poly_power)
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        self.add_event_handler(Events.EPOCH_STARTED, self._set_sampler_epoch)
        self.add_event_handler(Events.ITERATION_STARTED, self._set_lr)
        self.add_event_handler(Events.ITERATION_COMPLETED, self._stop_at_budget)

    #: recipe name stored in checkpoints and history (resume refuses another recipe's run).
    recipe: str = "dmpls"
    #: scalar loss terms :meth:`compute_loss` logs besides the total (averaged per epoch in history).
    loss_terms: tuple[str, ...] = ("pce", "dice")

    # -- handlers ----------------------------------------------------------------------------

    def _set_sampler_epoch(self, engine: "DMPLSTrainer") -> None:
        self.sampler.set_epoch(engine.state.epoch - 1)

    def _set_lr(self, engine: "DMPLSTrainer") -> None:
        lr = poly_lr(self.base_lr, engine.state.iteration - 1, self.lr_horizon, self.poly_power)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _stop_at_budget(self, engine: "DMPLSTrainer") -> None:
        if engine.state.iteration >= self.total_iterations and engine.state.iteration % engine.state.epoch_length:
            engine.terminate()

    # -- iteration ---------------------------------------------------------------------------

    def _iteration(self, engine: "DMPLSTrainer", batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        dev = engine.state.device
        batch = {
            k: v.to(dev, non_blocking=engine.non_blocking) for k, v in batchdata.items() if isinstance(v, torch.Tensor)
        }
        images = batch["image"]
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: batch["scribble"]}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.scaler is not None):
            outputs = engine.network(images)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss, pred, parts = self.compute_loss(outputs, batch)
        engine.state.output[Keys.PRED] = pred.detach()
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.state.output.update(parts)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            self.scaler.step(engine.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def compute_loss(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The recipe's objective on one batch: ``(loss, prediction logits, logged terms)``.

        DMPLS: ``outputs`` is ``(main, aux)``, the target ``batch["scribble"]``; the logged terms
        are :attr:`loss_terms` (detached scalars) plus the iteration's ``alpha``.
        """
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise TypeError("the DMPLS network must return (main_logits, aux_logits) in training mode")
        main, aux = outputs
        loss, parts = self.loss_function(main.float(), aux.float(), batch["scribble"])
        return loss, main, {"pce": parts["pce"], "dice": parts["dice"], "alpha": float(parts["alpha"])}

    def run(self) -> None:  # type: ignore[override]
        """Run (or continue) training; unlike ``Trainer.run`` it keeps the restored GradScaler."""
        Workflow.run(self)

    # -- state -------------------------------------------------------------------------------

    def training_state(self) -> dict[str, Any]:
        """Everything but RNG/bookkeeping needed to continue this run (weights_only-safe)."""
        return {
            "network": unwrap_network(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "loss": self.loss_function.state_dict(),
            "trainer": {"iteration": int(self.state.iteration), "epoch": int(self.state.epoch)},
            "sampler_epoch": int(self.sampler.epoch),
        }

    def load_training_state(self, ckpt: Mapping[str, Any]) -> None:
        """Restore what :meth:`training_state` captured (engine counters included)."""
        unwrap_network(self.network).load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.loss_function.load_state_dict(ckpt["loss"])
        self.state.iteration = int(ckpt["trainer"]["iteration"])
        self.state.epoch = int(ckpt["trainer"]["epoch"])
        self.sampler.set_epoch(int(ckpt["sampler_epoch"]))


# --------------------------------------------------------------------------------------------
# run bookkeeping: validation, checkpoints, history, progress
# --------------------------------------------------------------------------------------------


class RunRecorder:
    """Epoch-end bookkeeping of a training run (attached by :func:`build_dmpls_trainer`).

    At every engine epoch end (and at the final iteration): validate (rank 0), update the best
    metric (strictly greater wins, so ties keep the earlier checkpoint), write ``last.pt`` and,
    when improved, ``best.pt``, append to ``history.json``; all ranks contribute their RNG state.

    Args:
        trainer: the trainer.
        evaluator: validation engine or ``None`` (then no ``best.pt``).
        out_dir: run folder.
        config: the run's configuration (stored in checkpoints and history).
        class_map: stored in checkpoints and history.
        progress: tqdm bar over iterations on rank 0.
    """

    def __init__(
        self,
        trainer: DMPLSTrainer,
        evaluator: Optional[VolumeDiceEvaluator],
        out_dir: Path,
        config: TrainConfig,
        class_map: ClassMap,
        progress: bool = True,
    ) -> None:
        self.trainer = trainer
        self.evaluator = evaluator
        self.out_dir = Path(out_dir)
        self.config = config
        self.class_map = class_map
        self.progress = progress
        self.best_metric: Optional[float] = None
        self.best_iteration: Optional[int] = None
        self.history: dict[str, Any] = {
            "format": "scribmed-history-v1",
            "recipe": trainer.recipe,
            "loss_terms": list(trainer.loss_terms),
            "config": config.to_dict(),
            "class_map": {"names": class_map.to_json(), "ignore_index": class_map.ignore_index},
            "resumed_from": [],
            "epochs": [],
        }
        self.checksums: dict[str, str] = {}
        self.last_saved_iteration = -1
        self._bar: Any = None
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._epoch_start = time.perf_counter()
        trainer.add_event_handler(Events.STARTED, self._on_started)
        trainer.add_event_handler(Events.EPOCH_STARTED, self._reset_epoch)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.end_of_epoch)
        trainer.add_event_handler(Events.COMPLETED, self._on_completed)

    @property
    def is_main(self) -> bool:
        return dist_utils.is_main_process()

    @property
    def last_path(self) -> Path:
        return self.out_dir / LAST_NAME

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST_NAME

    @property
    def history_path(self) -> Path:
        return self.out_dir / HISTORY_NAME

    @property
    def curve_path(self) -> Path:
        return self.out_dir / CURVE_NAME

    # -- handlers ----------------------------------------------------------------------------

    def _on_started(self, engine: DMPLSTrainer) -> None:
        self.last_saved_iteration = max(self.last_saved_iteration, engine.state.iteration)
        if self.progress and self.is_main and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=engine.total_iterations, initial=engine.state.iteration, desc=engine.recipe.upper(), unit="it", dynamic_ncols=True
            )

    def _reset_epoch(self, engine: DMPLSTrainer) -> None:
        self._sums = {}
        self._count = 0
        self._epoch_start = time.perf_counter()

    def _accumulate(self, engine: DMPLSTrainer) -> None:
        out = engine.state.output
        for key in (Keys.LOSS, *engine.loss_terms):
            value = out[key].detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()
        self._count += 1
        if self._bar is not None:
            self._bar.update(1)
            if engine.state.iteration % 10 == 0 or engine.state.iteration == engine.total_iterations:
                self._bar.set_postfix(loss=f"{float(out[Keys.LOSS]):.4f}", refresh=False)

    def _on_completed(self, engine: DMPLSTrainer) -> None:
        if engine.state.iteration != self.last_saved_iteration:
            self.end_of_epoch(engine)
        if self.is_main:
            plot_training_curve(self.history, self.curve_path)
        self.close()

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def end_of_epoch(self, engine: DMPLSTrainer) -> None:
        """Validate, update best, write checkpoints and history (all ranks must call it)."""
        iteration = int(engine.state.iteration)
        if iteration == self.last_saved_iteration:
            return
        means = {k: float(v) / max(self._count, 1) for k, v in self._sums.items()}
        if self._count and not math.isfinite(means[Keys.LOSS]):
            raise FloatingPointError(
                f"{engine.recipe} training diverged: mean loss {means[Keys.LOSS]} in the iterations up to {iteration}"
            )
        rng = capture_rng_state()
        rng_all = [rng]
        if dist_utils.is_distributed():
            rng_all = [None] * dist_utils.get_world_size()
            torch.distributed.all_gather_object(rng_all, rng)
        if self.is_main:
            val, per_class = None, {}
            if self.evaluator is not None:
                self.evaluator.run(global_epoch=engine.state.epoch)
                val = float(self.evaluator.state.metrics["val_mean_dice"])
                per_class = dict(self.evaluator.metric.per_class)
            improved = val is not None and (self.best_metric is None or val > self.best_metric)
            if improved:
                self.best_metric, self.best_iteration = val, iteration
            payload = {
                "format": CHECKPOINT_FORMAT,
                "recipe": engine.recipe,
                **engine.training_state(),
                "rng": rng_all,
                "config": self.config.to_dict(),
                "class_map": {"names": self.class_map.to_json(), "ignore_index": self.class_map.ignore_index},
                "val_mean_dice": val,
                "best": {"metric": self.best_metric, "iteration": self.best_iteration},
            }
            self.checksums["last"] = save_checkpoint(self.last_path, payload)
            if improved:
                self.checksums["best"] = save_checkpoint(self.best_path, payload)
            self._write_checksums(iteration)
            self.history["epochs"].append(
                {
                    "epoch": int(engine.state.epoch),
                    "iteration": iteration,
                    "lr": float(engine.optimizer.param_groups[0]["lr"]),
                    "loss": means.get(Keys.LOSS),
                    **{term: means.get(term) for term in engine.loss_terms},
                    "val_mean_dice": val,
                    "val_dice": per_class,
                    "best_metric": self.best_metric,
                    "best_iteration": self.best_iteration,
                    "seconds": round(time.perf_counter() - self._epoch_start, 3),
                }
            )
            self.history["best"] = {"metric": self.best_metric, "iteration": self.best_iteration}
            atomic_write_text(self.history_path, json.dumps(self.history, indent=1))
            if self._bar is not None and val is not None:
                self._bar.set_postfix(loss=f"{means.get(Keys.LOSS, float('nan')):.4f}", val_dice=f"{val:.4f}")
        self.last_saved_iteration = iteration
        dist_utils.barrier()

    def _write_checksums(self, iteration: int) -> None:
        data = {
            name: {"path": str(self.out_dir / (LAST_NAME if name == "last" else BEST_NAME)), "sha256": digest}
            for name, digest in self.checksums.items()
        }
        data["last"]["iteration"] = iteration
        if "best" in data:
            data["best"]["iteration"] = self.best_iteration
        atomic_write_text(self.out_dir / CHECKSUMS_NAME, json.dumps(data, indent=1))

    # -- resume ------------------------------------------------------------------------------

    def restore(self, ckpt: Mapping[str, Any], path: Path) -> None:
        """Resume from a checkpoint: trainer state, RNG of this rank, best metric, history."""
        self.trainer.load_training_state(ckpt)
        rng_all = ckpt["rng"]
        rank = dist_utils.get_rank()
        if len(rng_all) != dist_utils.get_world_size():
            logger.warning(
                "%s was written by %d process(es), resuming with %d: RNG streams differ from an uninterrupted run",
                path, len(rng_all), dist_utils.get_world_size(),
            )
        restore_rng_state(rng_all[rank] if rank < len(rng_all) else rng_all[0])
        best = ckpt.get("best") or {}
        self.best_metric = best.get("metric")
        self.best_iteration = best.get("iteration")
        iteration = int(ckpt["trainer"]["iteration"])
        self.last_saved_iteration = iteration
        digest = file_sha256(path)
        self.checksums["last"] = digest
        if self.best_path.is_file():
            self.checksums["best"] = file_sha256(self.best_path)
        if self.history_path.is_file():
            try:
                old = json.loads(self.history_path.read_text())
                self.history["epochs"] = [e for e in old.get("epochs", []) if e.get("iteration", 0) <= iteration]
                self.history["resumed_from"] = list(old.get("resumed_from", []))
            except (OSError, ValueError):
                logger.warning("%s is unreadable; starting a new history", self.history_path)
        self.history["resumed_from"].append({"checkpoint": str(path), "sha256": digest, "iteration": iteration})


def plot_training_curve(history: Mapping[str, Any] | str | Path, png_path: str | Path) -> Optional[Path]:
    """Plot loss terms and validation Dice against iterations into a PNG (matplotlib Agg).

    Args:
        history: a history dict or the path of ``history.json``.
        png_path: output PNG (written atomically).

    Returns:
        The PNG path, or ``None`` when the history has no epochs yet.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(history, Mapping):
        history = json.loads(Path(history).read_text())
    epochs = history.get("epochs", [])
    if not epochs:
        return None
    its = [e["iteration"] for e in epochs]
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    terms = history.get("loss_terms") or ["pce", "dice"]
    for key, style in zip(["loss", *terms], ["-", "--", ":", "-.", (0, (1, 3)), (0, (5, 5))]):
        vals = [np.nan if e.get(key) is None else e[key] for e in epochs]
        ax.plot(its, vals, style, label=f"train {key}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    val = [np.nan if e.get("val_mean_dice") is None else e["val_mean_dice"] for e in epochs]
    lines, labels = ax.get_legend_handles_labels()
    if not all(np.isnan(val)):
        ax2 = ax.twinx()
        ax2.plot(its, val, "o-", color="tab:red", markersize=3, label="val mean Dice")
        ax2.set_ylabel("validation mean foreground Dice")
        ax2.set_ylim(0, 1)
        l2, lb2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lb2
    ax.legend(lines, labels, loc="upper right", fontsize=8)
    ax.set_title(f"{str(history.get('recipe', 'dmpls')).upper()} training")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------


def assemble_trainer(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    make_network: Callable[[], torch.nn.Module],
    loss: torch.nn.Module,
    trainer_cls: type[DMPLSTrainer],
    cache: Optional[SliceCache] = None,
    pseudo: Optional[Mapping[str, np.ndarray]] = None,
) -> tuple[DMPLSTrainer, Optional[VolumeDiceEvaluator]]:
    """Assemble a recipe's trainer: network, seeded data pipeline, SGD, evaluator and recorder.

    Shared by :func:`build_dmpls_trainer` and the SAM-SP builder
    (:func:`scribmed.engine.samsp_trainer.build_samsp_trainer`): they differ only in the
    network, the loss, the trainer's :meth:`DMPLSTrainer.compute_loss` and whether slices carry
    a pseudo label. Seeds torch with ``config.seed`` right before ``make_network()``, so two
    builds with one seed start from identical weights. Under an initialised process group
    (world size > 1) the network is wrapped in ``DistributedDataParallel`` and the sampler is
    sharded by rank.

    Args:
        train_cases: training cases (image + scribble).
        val_cases: validation cases (image + label), never the test fold; may be empty.
        class_map: classes and the scribble ignore value.
        out_dir: run folder for checkpoints and history.
        config: hyper-parameters.
        make_network: builds the (untrained) network on the CPU.
        loss: the recipe's loss module (moved to the device).
        trainer_cls: :class:`DMPLSTrainer` or a subclass.
        cache: a pre-built :class:`SliceCache` of ``train_cases`` (built here when ``None``).
        pseudo: pseudo labels by case id, ``(S, H, W)`` on each case's grid; when given, every
            batch also carries ``"pseudo"`` (augmented with the same spatial draw).

    Returns:
        ``(trainer, evaluator)``; ``trainer.recorder`` is the attached :class:`RunRecorder`.
    """
    device = resolve_device(config.device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    use_amp = amp_enabled(device, config.amp)
    if cache is None:
        cache = SliceCache.from_cases(
            train_cases,
            size=config.size,
            keys=("image", "scribble"),
            pseudo=pseudo,
            progress=config.progress and rank == 0,
            image_mode=config.image_interp,
        )
    if tuple(cache.size) != tuple(config.size):
        raise ValueError(f"slice cache size {cache.size} differs from config.size {config.size}")
    if pseudo is not None and cache.pseudo is None:
        raise ValueError("pseudo labels were given but the slice cache holds none")
    if cache.image.shape[1] != config.in_channels:
        raise DataError(
            train_cases[0].source if train_cases else None,
            f"images have {cache.image.shape[1]} channel(s) but config.in_channels={config.in_channels}",
        )
    if cache.scribble is not None and cache.scribble.size:
        bad = np.setdiff1d(np.unique(cache.scribble), [*class_map.names, class_map.ignore_index])
        if bad.size:
            raise DataError(
                None, f"scribble values {bad.tolist()} are neither classes {sorted(class_map.names)} nor the ignore value {class_map.ignore_index}"
            )
    if pseudo is not None and cache.pseudo is not None and cache.pseudo.size:
        bad = np.setdiff1d(np.unique(cache.pseudo), list(class_map.names))
        if bad.size:
            raise DataError(None, f"pseudo-label values {bad.tolist()} are not classes {sorted(class_map.names)}")

    torch.manual_seed(config.seed)
    network = make_network().to(device)
    divisor = getattr(network, "divisor", 1)
    if config.size[0] % divisor or config.size[1] % divisor:
        raise ValueError(f"config.size {config.size} must be divisible by {divisor}")
    loss = loss.to(device)
    if world > 1:
        # different dropout masks per rank (rank 0 keeps the single-process stream)
        reseed_rank(config.seed)
        network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.SGD(
        network.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    extra_keys = ("pseudo",) if pseudo is not None else ()
    transform = (
        DMPLSAugmentd(
            keys=("image", "scribble", *extra_keys),
            label_keys=extra_keys,
            scribble_keys=("scribble",),
            ignore_index=class_map.ignore_index,
        )
        if config.augment
        else None
    )
    dataset = SliceTrainingDataset(
        cache, seed=config.seed, transform=transform, target_key="scribble", extra_keys=extra_keys
    )
    sampler = EpochSeededSampler(config.epoch_length, config.batch_size, rank=rank, world_size=world)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        # the loader's own generator: creating iterators must not consume the global torch RNG
        generator=loader_generator(config.seed),
    )
    trainer = trainer_cls(
        device=device,
        network=network,
        optimizer=optimizer,
        loss_function=loss,
        train_data_loader=loader,
        sampler=sampler,
        iterations=config.iterations,
        epoch_length=config.epoch_length,
        base_lr=config.lr,
        poly_power=config.poly_power,
        amp=use_amp,
        lr_horizon=config.decay_iterations,
    )
    evaluator = None
    if val_cases:
        evaluator = VolumeDiceEvaluator(
            device, val_cases, unwrap_network(network), class_map, config.size, config.val_batch_size, amp=use_amp,
            image_mode=config.image_interp,
        )
    trainer.recorder = RunRecorder(trainer, evaluator, Path(out_dir), config, class_map, progress=config.progress)
    trainer.slice_cache = cache
    return trainer, evaluator


def build_dmpls_trainer(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: TrainConfig,
    cache: Optional[SliceCache] = None,
) -> tuple[DMPLSTrainer, Optional[VolumeDiceEvaluator]]:
    """The DMPLS trainer (:class:`DualBranchUNet` + :class:`DMPLSLoss`), see :func:`assemble_trainer`.

    Returns:
        ``(trainer, evaluator)``; ``trainer.recorder`` is the attached :class:`RunRecorder`.
    """
    loss = DMPLSLoss(
        class_map.num_classes,
        class_map.ignore_index,
        lam=config.lam,
        generator=loss_generator(config.seed),
    )
    return assemble_trainer(
        train_cases,
        val_cases,
        class_map,
        out_dir,
        config,
        make_network=lambda: DualBranchUNet(
            in_channels=config.in_channels, num_classes=class_map.num_classes, **config.network_kwargs()
        ),
        loss=loss,
        trainer_cls=DMPLSTrainer,
        cache=cache,
    )


def check_resumable(ckpt: Mapping[str, Any], path: Path, config: TrainConfig, class_map: ClassMap) -> None:
    """Raise ``DataError`` unless ``ckpt`` was written with the same result-affecting config and class map."""
    stored = ckpt.get("config") or {}
    current = config.to_dict()
    # checkpoints written before a field existed ran with that field's default
    defaults = type(config)().to_dict()
    diff = [
        f"{k}: {stored.get(k, defaults[k])!r} -> {current[k]!r}"
        for k in type(config).RESULT_FIELDS
        if stored.get(k, defaults[k]) != current[k]
    ]
    if diff:
        raise DataError(path, "cannot resume, the configuration changed (" + "; ".join(diff) + ")")
    cm = ckpt.get("class_map") or {}
    if cm.get("names") != class_map.to_json() or cm.get("ignore_index") != class_map.ignore_index:
        raise DataError(path, f"cannot resume, the class map changed ({cm} vs {class_map.to_json()})")


def run_or_resume(recorder: "RunRecorder", resume: bool) -> None:
    """Run a trainer to its budget in ``recorder.out_dir``, refusing or resuming an earlier run there.

    An existing ``last.pt`` is an error unless ``resume``; when resuming, the checkpoint must come
    from the same result-affecting configuration and class map, and network, optimizer, loss
    generator, engine counters, RNG states and best metric are restored. A finished run is not
    trained again. Shared by :func:`train_dmpls` and the bundles' training workflow.

    Raises:
        DataError: the folder holds a run and ``resume`` is False; an incompatible checkpoint.
    """
    last = recorder.last_path
    if last.exists():
        if not resume:
            raise DataError(
                recorder.out_dir,
                "already holds a training run (last.pt); resume it or use another output folder",
            )
        ckpt = load_checkpoint(last)
        recipe = recorder.trainer.recipe
        if ckpt.get("recipe") != recipe or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise DataError(last, f"not a scribmed {recipe} training checkpoint (found {ckpt.get('recipe')!r})")
        check_resumable(ckpt, last, recorder.config, recorder.class_map)
        recorder.restore(ckpt, last)
    elif resume:
        logger.info("no %s to resume from; starting a new run", last)
    if dist_utils.is_main_process():
        recorder.out_dir.mkdir(parents=True, exist_ok=True)
    trainer = recorder.trainer
    try:
        if trainer.state.iteration < trainer.total_iterations:
            trainer.run()
        elif dist_utils.is_main_process() and not recorder.curve_path.exists():
            plot_training_curve(recorder.history, recorder.curve_path)
    finally:
        recorder.close()
    dist_utils.barrier()


def run_training(
    build: Callable[[], tuple[DMPLSTrainer, Optional[VolumeDiceEvaluator]]],
    out_dir: str | Path,
    config: TrainConfig,
    has_validation: bool,
    resume: bool = False,
) -> TrainResult:
    """Build a trainer with ``build()`` and run or resume it in ``out_dir`` (deterministic mode as configured).

    The common tail of :func:`train_dmpls` and :func:`scribmed.engine.samsp_trainer.train_samsp`.
    """
    out_dir = Path(out_dir)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        trainer, _ = build()
        recorder: RunRecorder = trainer.recorder
        run_or_resume(recorder, resume)
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
    best = out_dir / BEST_NAME
    return TrainResult(
        best_checkpoint=best if has_validation and best.exists() else None,
        last_checkpoint=out_dir / LAST_NAME,
        history_path=recorder.history_path,
        best_metric=recorder.best_metric,
        best_iteration=recorder.best_iteration,
        curve_path=recorder.curve_path if recorder.curve_path.exists() else None,
        checksums=dict(recorder.checksums),
        iterations=int(trainer.state.iteration),
    )


def train_dmpls(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: Optional[TrainConfig] = None,
    resume: bool = False,
) -> TrainResult:
    """Train DMPLS on ``train_cases``, validating on ``val_cases``; one call for the CV runner.

    Args:
        train_cases: training cases (image + scribble).
        val_cases: validation cases (image + label; held out from training, never the test
            fold). May be empty: then only ``last.pt`` is kept.
        class_map: classes and scribble ignore value.
        out_dir: run folder (``last.pt``, ``best.pt``, ``history.json``, ``checkpoints.json``,
            ``training_curve.png``).
        config: hyper-parameters (defaults: the paper's).
        resume: continue from ``out_dir/last.pt`` (started afresh when there is none). The
            resumed run ends with the weights an uninterrupted run would have.

    Returns:
        :class:`TrainResult`.

    Raises:
        DataError: ``out_dir`` already holds a run and ``resume`` is False; the checkpoint's
            configuration or class map differ from the given ones; unusable cases.
    """
    config = config or TrainConfig()
    return run_training(
        lambda: build_dmpls_trainer(train_cases, val_cases, class_map, out_dir, config),
        out_dir,
        config,
        has_validation=bool(val_cases),
        resume=resume,
    )
