"""torch.distributed helpers for multi-process (DDP) training launched with ``torchrun``.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group (NCCL on
CUDA, gloo on CPU). Without those variables everything degrades to a single process, so the
same training code runs alone or under ``torchrun``. Only rank 0 writes files
(:func:`is_main_process`); training positions are sharded by rank in
:class:`scribmed.training.sampling.EpochSeededSampler`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from scribmed.runtime.device import resolve_device

__all__ = [
    "DistContext",
    "all_reduce_mean",
    "barrier",
    "cleanup_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: global ``rank`` of ``world_size``, ``local_rank`` on its node,
    the collective ``backend`` (``None`` when single-process) and the ``device`` it computes on."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, history and predictions."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (returned as a new tensor; identity when not distributed)."""
    if not is_distributed():
        return value.clone()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def _launched_by_torchrun() -> bool:
    """torchrun (or any launcher with its environment) started this process: a group of one process
    is still a group, so code written for DDP (e.g. a ``DistributedDataParallel`` wrapper) runs."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(device: str | torch.device | None = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by torchrun's environment, or describe a single process.

    Under torchrun a process group is made even for one process (``--nproc_per_node 1``), so a
    bundle's multi-GPU overlay runs on one GPU as it does on several; without torchrun's
    environment a single process joins no group.

    Args:
        device: requested device kind; with CUDA each process uses ``cuda:LOCAL_RANK``.
        timeout_s: collective timeout in seconds.

    Returns:
        The :class:`DistContext` of this process.

    Raises:
        ValueError: inconsistent ``RANK``/``WORLD_SIZE`` or fewer GPUs than local processes.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    dev = resolve_device(device)
    if dev.type == "cuda" and world_size > 1:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return DistContext(get_rank(), get_world_size(), local_rank, dist.get_backend(), dev)
    if world_size == 1 and not _launched_by_torchrun():
        return DistContext(0, 1, 0, None, dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), dev)


def cleanup_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
