"""Assembling and running a recipe's trainer: network, seeded data pipeline, SGD, evaluator, recorder.

:func:`assemble_trainer` is shared by every semantic recipe (each recipe's ``trainer`` module
calls it with its network, loss and :class:`~scribmed.training.trainer.SegmentorTrainer`
subclass); :func:`run_training` builds and runs (or resumes) any recipe's trainer (the instance
recipes' assembly is :func:`scribmed.training.instance_trainer.assemble_instance_trainer`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.runtime import distributed as dist_utils
from scribmed.training.config import TrainConfig, TrainResult
from scribmed.runtime.device import loader_options, resolve_device
from scribmed.training.inference import unwrap_network
from scribmed.training.run_record import BEST_NAME, LAST_NAME, RunRecorder, run_or_resume
from scribmed.training.sampling import EpochSeededSampler, SliceTrainingDataset
from scribmed.runtime.seeding import loader_generator, reseed_rank
from scribmed.training.slice_cache import SliceCache
from scribmed.training.time_estimate import TrainingTimeEstimate
from scribmed.training.trainer import SegmentorTrainer
from scribmed.training.validation import VolumeDiceEvaluator
from scribmed.transforms.augment import DMPLSAugmentd

__all__ = ["assemble_trainer", "run_training"]

logger = logging.getLogger(__name__)



def assemble_trainer(
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    class_map: ClassMap,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    network_cls: Callable[..., torch.nn.Module],
    loss: torch.nn.Module,
    trainer_cls: type[SegmentorTrainer],
    cache: Optional[SliceCache] = None,
    pseudo: Optional[Mapping[str, np.ndarray]] = None,
    target_key: str = "scribble",
    extra_keys: Optional[Sequence[str]] = None,
    sparse_keys: Sequence[str] = (),
) -> tuple[SegmentorTrainer, Optional[VolumeDiceEvaluator]]:
    """Assemble a recipe's trainer: network, seeded data pipeline, SGD, evaluator and recorder.

    Shared by every segmentor recipe's builder (e.g.
    :func:`scribmed.recipes.dmpls.trainer.build_dmpls_trainer`): they differ only in the
    network, the loss, the trainer's :meth:`SegmentorTrainer.compute_loss` and whether slices carry
    a pseudo label. Seeds torch with ``config.seed`` right before building the network, so two
    builds with one seed start from identical weights. Under an initialised process group
    (world size > 1) the network is wrapped in ``DistributedDataParallel`` and the sampler is
    sharded by rank.

    Args:
        train_cases: training cases (image + scribble).
        val_cases: validation cases (image + label), never the test fold; may be empty.
        class_map: classes and the scribble ignore value.
        out_dir: run folder for checkpoints and history.
        config: hyper-parameters.
        network_cls: the network class, built on the CPU by ``config.build_network(network_cls, classes)``.
        loss: the recipe's loss module (moved to the device).
        trainer_cls: :class:`SegmentorTrainer` or a subclass.
        cache: a pre-built :class:`SliceCache` of ``train_cases`` (built here when ``None``).
        pseudo: pseudo labels by case id, ``(S, H, W)`` on each case's grid; when given, every
            batch also carries ``"pseudo"`` (augmented with the same spatial draw).
        target_key: the cache array batches carry as the sparse training target (``"scribble"``;
            padded with the ignore value by rotations).
        extra_keys: further cache arrays every batch carries, moved with the image (default
            ``("pseudo",)`` when ``pseudo`` is given, else none; e.g. a prebuilt cache's extras).
        sparse_keys: extras that, like the target, are padded with the ignore value (others with 0).

    Returns:
        ``(trainer, evaluator)``; ``trainer.recorder`` is the attached :class:`RunRecorder`.
    """
    device = resolve_device(config.device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
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
    network = config.build_network(network_cls, class_map.num_classes).to(device)
    if config.channels_last:
        network = network.to(memory_format=torch.channels_last)
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
    if extra_keys is None:
        extra_keys = ("pseudo",) if pseudo is not None else ()
    extra_keys = tuple(extra_keys)
    if set(sparse_keys) - set(extra_keys):
        raise ValueError(f"sparse_keys {sorted(set(sparse_keys) - set(extra_keys))} are not extra_keys")
    transform = (
        DMPLSAugmentd(
            keys=("image", target_key, *extra_keys),
            label_keys=tuple(k for k in extra_keys if k not in sparse_keys),
            scribble_keys=(target_key, *sparse_keys),
            ignore_index=class_map.ignore_index,
        )
        if config.augment
        else None
    )
    dataset = SliceTrainingDataset(
        cache, seed=config.seed, transform=transform, target_key=target_key, extra_keys=extra_keys
    )
    sampler = EpochSeededSampler(config.epoch_length, config.batch_size, rank=rank, world_size=world)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        # workers + pinned memory on CUDA, none on the CPU (batches are keyed: results do not depend on it)
        **loader_options(device, config.num_workers, world),
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
        amp=config.amp,
        lr_horizon=config.decay_iterations,
        channels_last=config.channels_last,
    )
    evaluator = None
    if val_cases:
        evaluator = VolumeDiceEvaluator(
            device, val_cases, unwrap_network(network), class_map, config.size, config.val_batch_size, amp=config.amp,
            image_mode=config.image_interp,
        )
    trainer.recorder = RunRecorder(trainer, evaluator, Path(out_dir), config, class_map, progress=config.progress)
    TrainingTimeEstimate(config.max_cpu_hours, report=config.progress).attach(trainer)
    trainer.slice_cache = cache
    return trainer, evaluator


def run_training(
    build: Callable[[], tuple[SegmentorTrainer, Any]],
    out_dir: str | Path,
    deterministic: bool,
    has_validation: bool,
    resume: bool = False,
) -> TrainResult:
    """Build a trainer with ``build()`` and run or resume it in ``out_dir``.

    The common tail of every recipe's ``train_*`` function, semantic and instance alike.
    ``deterministic``: run with torch's deterministic algorithms (warn-only) and without cuDNN
    benchmarking, restoring the previous settings afterwards.
    """
    out_dir = Path(out_dir)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if deterministic:
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
