"""The semantic bundles' engines: the DMPLS, SAM-SP and mixsup trainer factories and what wraps them.

Each factory is its recipe's trainer with MONAI's ``max_epochs`` bundle property checked against
the iteration budget (``ceil(iterations / epoch_length)``), its deferred training set
(:func:`scribmed.bundles.deferred.deferred_slice_dataset`) built when the engine starts and the
CPU time limit of ``scribmed cv --max-cpu-hours``
(:class:`~scribmed.training.time_estimate.TrainingTimeEstimate`) attached; :func:`run_training`
runs (or resumes) it and publishes the selected checkpoint as ``models/model.pt``;
:func:`reseed_rank` and :func:`memory_format` prepare the network of the multi-GPU overlay. They
hold no training logic.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

__all__ = ["dmpls_trainer", "memory_format", "mixsup_trainer", "reseed_rank", "run_training", "samsp_trainer"]


def _attach_start_hooks(trainer: Any, loader: Any, max_cpu_hours: Optional[float], progress: bool) -> Any:
    """Build the deferred training set when the engine starts; attach the training-time estimate,
    which stops a CPU run estimated over ``max_cpu_hours`` (``None`` or ``0``: no limit) with
    :class:`~scribmed.training.time_estimate.TrainingTooLong`."""
    from scribmed.training.deferred_dataset import materialize_on_start
    from scribmed.training.time_estimate import TrainingTimeEstimate

    materialize_on_start(trainer, getattr(loader, "dataset", None))
    limit = TrainingTimeEstimate(max_cpu_hours, report=bool(progress), options=("--iterations", "--max_cpu_hours"))
    limit.attach(trainer)
    return trainer


def _check_max_epochs(max_epochs: int, iterations: int, epoch_length: int) -> None:
    """MONAI's ``max_epochs`` property must match the iteration budget: ``ceil(iterations / epoch_length)``."""
    expected = math.ceil(int(iterations) / int(epoch_length))
    if int(max_epochs) != expected:
        raise ValueError(
            f"max_epochs={max_epochs} disagrees with iterations={iterations} and epoch_length={epoch_length} "
            f"(ceil gives {expected}); change iterations instead"
        )


def dmpls_trainer(max_epochs: int, iterations: int, epoch_length: int, max_cpu_hours: Optional[float] = 4.0,
                  progress: bool = True, **kwargs: Any) -> Any:
    """A :class:`~scribmed.recipes.dmpls.trainer.DMPLSTrainer` with MONAI's ``max_epochs`` bundle property.

    The DMPLS budget is counted in iterations; ``max_epochs`` must equal
    ``ceil(iterations / epoch_length)`` (set ``iterations`` to change the length of a run). On a
    CPU, a run whose training is estimated from its first iterations to take longer than
    ``max_cpu_hours`` stops with a one-line
    :class:`~scribmed.training.time_estimate.TrainingTooLong` (``None`` or ``0``: no limit;
    ``progress`` also prints the estimate), as ``scribmed cv --max-cpu-hours`` does.

    Raises:
        ValueError: ``max_epochs`` disagrees with ``iterations`` and ``epoch_length``.
    """
    from scribmed.recipes.dmpls.trainer import DMPLSTrainer

    _check_max_epochs(max_epochs, iterations, epoch_length)
    trainer = DMPLSTrainer(iterations=iterations, epoch_length=epoch_length, **kwargs)
    return _attach_start_hooks(trainer, kwargs.get("train_data_loader"), max_cpu_hours, progress)


def samsp_trainer(max_epochs: int, iterations: int, epoch_length: int, max_cpu_hours: Optional[float] = 4.0,
                  progress: bool = True, **kwargs: Any) -> Any:
    """A :class:`~scribmed.recipes.samsp.trainer.SAMSPTrainer` with MONAI's ``max_epochs`` bundle property.

    The SAM-SP counterpart of :func:`dmpls_trainer` (same iteration budget, checks and CPU time limit); batches
    must carry ``"pseudo"`` (the SAM pseudo label).

    Raises:
        ValueError: ``max_epochs`` disagrees with ``iterations`` and ``epoch_length``.
    """
    from scribmed.recipes.samsp.trainer import SAMSPTrainer

    _check_max_epochs(max_epochs, iterations, epoch_length)
    trainer = SAMSPTrainer(iterations=iterations, epoch_length=epoch_length, **kwargs)
    return _attach_start_hooks(trainer, kwargs.get("train_data_loader"), max_cpu_hours, progress)


def mixsup_trainer(max_epochs: int, iterations: int, epoch_length: int, max_cpu_hours: Optional[float] = 4.0,
                   progress: bool = True, **kwargs: Any) -> Any:
    """A :class:`~scribmed.recipes.mixsup.trainer.MixSupTrainer` with MONAI's ``max_epochs`` bundle property.

    The mixsup counterpart of :func:`dmpls_trainer` (same iteration budget, checks and CPU time limit); the loss
    reads the per-slice supervision codes of the loader's slice cache
    (:func:`~scribmed.recipes.mixsup.trainer.mixsup_cache`); batches must carry ``weak``, ``full``,
    ``box_bits`` and ``sam``.

    Raises:
        ValueError: ``max_epochs`` disagrees with ``iterations`` and ``epoch_length``.
    """
    from scribmed.recipes.mixsup.trainer import MixSupTrainer

    _check_max_epochs(max_epochs, iterations, epoch_length)
    trainer = MixSupTrainer(iterations=iterations, epoch_length=epoch_length, **kwargs)
    return _attach_start_hooks(trainer, kwargs.get("train_data_loader"), max_cpu_hours, progress)


def run_training(recorder: Any, resume: bool = False, model_path: Optional[str] = None) -> Optional[float]:
    """Run a bundle's trainer (:func:`scribmed.training.run_record.run_or_resume`); return the best val Dice.

    With ``model_path`` (``<output_dir>/models/model.pt``), the finished run's selected checkpoint
    (``best.pt``, else ``last.pt``) is copied there (:func:`scribmed.bundles.checkpoints.publish_model`).
    """
    from scribmed.bundles.checkpoints import publish_model
    from scribmed.training.run_record import run_or_resume

    run_or_resume(recorder, resume)
    if model_path is not None:
        best = recorder.best_path
        publish_model(best if best.is_file() else recorder.last_path, model_path)
    return recorder.best_metric


def reseed_rank(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    """:func:`scribmed.runtime.seeding.reseed_rank` for configs: returns ``network`` unchanged."""
    from scribmed.runtime.seeding import reseed_rank as _reseed

    _reseed(seed)
    return network


def memory_format(network: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """``network`` in the channels-last memory format when asked (before a DDP wrap, which cannot convert)."""
    return network.to(memory_format=torch.channels_last) if channels_last else network
