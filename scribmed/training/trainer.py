"""The one training loop of the segmentor recipes: MONAI engine, exact iteration budget, resumable state.

:class:`SegmentorTrainer` is a ``monai.engines.SupervisedTrainer`` whose iteration runs the
network, the recipe's objective (the :meth:`SegmentorTrainer.compute_loss` hook, the one method a
semantic recipe's trainer overrides: DMPLS in :mod:`scribmed.recipes.dmpls.trainer`, SAM-SP and
mixsup in theirs) and an optimizer step (on CUDA mixed precision by :func:`~scribmed.runtime.device.amp_policy`:
bfloat16, or float16 with a ``GradScaler``), with the poly learning rate
``lr = base * (1 - it / total) ** power`` set before every iteration (as WSL4MIS; the :meth:`SegmentorTrainer.learning_rate` hook). An engine *epoch* is ``epoch_length`` iterations
(the validation and checkpoint interval), ``max_epochs = ceil(iterations / epoch_length)`` and
the run stops exactly at ``iterations``.

The instance recipes run the same loop (:class:`~scribmed.training.instance_trainer.InstanceTrainer`
overrides :meth:`~SegmentorTrainer.learning_rate`, :meth:`~SegmentorTrainer.forward`,
:meth:`~SegmentorTrainer.compute_loss`, :meth:`~SegmentorTrainer.after_step` and the state
hooks), with the same run record, checkpoint format and resume.

Validation lives in :mod:`scribmed.training.validation`, checkpoints/history/resume in
:mod:`scribmed.training.run_record`, the builders in :mod:`scribmed.training.assembly`.

Checkpoints hold everything an uninterrupted run would still have in memory (network,
optimizer, scaler, the loss's alpha generator, engine iteration/epoch, sampler epoch, RNG states
of every rank, best metric), so a resumed run (:func:`~scribmed.training.assembly.run_training`
with ``resume=True``) ends with the same weights as a run that was never stopped (bit-identical on CPU).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Optional, Sequence

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from scribmed.training.config import poly_lr
from scribmed.runtime.device import AmpRequest, amp_policy
from scribmed.training.inference import unwrap_network
from scribmed.training.sampling import EpochSeededSampler, IterationSampler

__all__ = ["SegmentorTrainer"]

logger = logging.getLogger(__name__)



class SegmentorTrainer(SupervisedTrainer):
    """SupervisedTrainer running a recipe's objective with poly LR and an exact iteration budget.

    Subclasses set :attr:`recipe` and :attr:`loss_terms` and override :meth:`compute_loss`.

    Args:
        device: compute device.
        network: the recipe's network (optionally DDP-wrapped); its training-mode output goes
            to :meth:`compute_loss`.
        optimizer: the optimizer over the network's parameters (SGD for the semantic recipes).
        loss_function: the recipe's loss module (its ``state_dict``, e.g. a generator state, is
            part of the checkpoint).
        train_data_loader: yields ``{"image": (B, C, h, w), "scribble": (B, h, w)}``.
        sampler: the loader's :class:`EpochSeededSampler` or :class:`IterationSampler` (its epoch
            follows the engine's).
        iterations: total iterations; the run stops exactly there.
        epoch_length: iterations per engine epoch.
        base_lr, poly_power: poly schedule.
        lr_horizon: iterations over which the poly decay reaches zero (``None``: ``iterations``).
        channels_last: run convolutions in the channels-last (NHWC) memory format; on CPUs
            oneDNN's NHWC kernels are faster (``benchmarks/train_speed.py``). The forward pass
            equals NCHW's to float rounding, but dropout masks are drawn in memory order, so an
            NHWC run is another (equally seeded, reproducible) random draw than an NCHW run.
        amp: the mixed-precision request (``True``/``"auto"``, ``"bf16"``, ``"fp16"``,
            ``False``/``"off"``), resolved for ``device`` by
            :func:`~scribmed.runtime.device.amp_policy`: on a CPU float32 unless ``"bf16"`` is
            asked (native bfloat16 only); a ``GradScaler`` only for float16. :attr:`amp_policy` is the result.
        train_handlers: extra MONAI/ignite handlers.
    """

    def __init__(
        self,
        device: torch.device,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: torch.nn.Module,
        train_data_loader: DataLoader,
        sampler: EpochSeededSampler | IterationSampler,
        iterations: int,
        epoch_length: int,
        base_lr: float,
        poly_power: float = 0.9,
        amp: AmpRequest = False,
        train_handlers: Sequence | None = None,
        lr_horizon: Optional[int] = None,
        channels_last: bool = False,
    ) -> None:
        policy = amp_policy(device, amp)
        super().__init__(
            device=device,
            max_epochs=math.ceil(iterations / epoch_length),
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            train_handlers=train_handlers,
            amp=policy.enabled and policy.device_type == "cuda",  # MONAI's flag builds a CUDA scaler
            decollate=False,
            optim_set_to_none=True,
            non_blocking=torch.device(device).type == "cuda",  # batches come from pinned memory there
        )
        self.sampler = sampler
        self.total_iterations = int(iterations)
        self.lr_horizon = int(lr_horizon) if lr_horizon is not None else self.total_iterations
        if self.lr_horizon < self.total_iterations:
            raise ValueError(f"lr_horizon ({self.lr_horizon}) must be >= iterations ({self.total_iterations})")
        self.base_lr = float(base_lr)
        self.poly_power = float(poly_power)
        self.amp_policy = policy
        self.scaler = self.amp_policy.grad_scaler()
        self.channels_last = bool(channels_last)
        if self.channels_last and not isinstance(network, torch.nn.parallel.DistributedDataParallel):
            network.to(memory_format=torch.channels_last)  # a DDP-wrapped network is converted before wrapping
        self.add_event_handler(Events.EPOCH_STARTED, self._set_sampler_epoch)
        self.add_event_handler(Events.ITERATION_STARTED, self._set_lr)
        self.add_event_handler(Events.ITERATION_COMPLETED, self._stop_at_budget)

    #: recipe name stored in checkpoints and history (resume refuses another recipe's run).
    recipe: str = ""
    #: scalar loss terms :meth:`compute_loss` logs besides the total (averaged per epoch in history).
    loss_terms: tuple[str, ...] = ()
    #: the batch key of the sparse training target (the engine output's label).
    target_key: str = "scribble"

    # -- handlers ----------------------------------------------------------------------------

    def _set_sampler_epoch(self, engine: "SegmentorTrainer") -> None:
        self.sampler.set_epoch(engine.state.epoch - 1)

    def _set_lr(self, engine: "SegmentorTrainer") -> None:
        lr = self.learning_rate(engine.state.iteration - 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def learning_rate(self, index: int) -> float:
        """The learning rate of 0-based iteration ``index`` (poly decay over :attr:`lr_horizon`)."""
        return poly_lr(self.base_lr, index, self.lr_horizon, self.poly_power)

    def _stop_at_budget(self, engine: "SegmentorTrainer") -> None:
        if engine.state.iteration >= self.total_iterations and engine.state.iteration % engine.state.epoch_length:
            engine.terminate()

    # -- iteration ---------------------------------------------------------------------------

    def _iteration(self, engine: "SegmentorTrainer", batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        dev = engine.state.device
        batch = {
            k: v.to(dev, non_blocking=engine.non_blocking) for k, v in batchdata.items() if isinstance(v, torch.Tensor)
        }
        images = batch["image"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: batch.get(self.target_key)}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with self.amp_policy.autocast():
            outputs = self.forward(images)
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
        self.after_step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def forward(self, images: torch.Tensor) -> Any:
        """The network's training-mode output for a batch (under the autocast of :attr:`amp_policy`)."""
        return self.network(images)

    def after_step(self) -> None:
        """Called after every optimizer step (e.g. a mean teacher's update); nothing by default."""

    def compute_loss(
        self, outputs: Any, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The recipe's objective on one batch: ``(loss, prediction logits, logged terms)``.

        The one hook a recipe's trainer overrides (as nnU-Net's trainer variants override
        ``_build_loss``): ``outputs`` is the network's training-mode output, ``batch`` the device
        batch (``"image"``, :attr:`target_key` and the recipe's extra keys); the logged terms are
        :attr:`loss_terms` as detached scalars, plus any other scalar worth a history column.
        """
        raise NotImplementedError(f"{type(self).__name__}.compute_loss")

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


