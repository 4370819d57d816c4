"""Seeded, resumable sampling of training slices: every draw is a pure function of a key.

An *epoch* here is ``epoch_length`` iterations (the checkpoint/validation interval), not a pass
over the data. :class:`EpochSeededSampler` yields keys ``(epoch, position)`` for the
``epoch_length * batch_size`` positions of one epoch (sharded by rank under DDP) and counts
epochs itself; the trainer sets its epoch from the engine state, so a run resumed from a
checkpoint draws exactly what the uninterrupted run would have drawn.

:class:`SliceTrainingDataset` maps a key to a sample without any hidden state:
slice = ``permutation(seed, epoch, position // N)[position % N]`` (sampling without replacement,
one fresh permutation per block of N positions), augmentation seeded by
``(seed, epoch, position)``. The result is the same with 0 or many DataLoader workers, in any
worker order.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from scribmed.runtime.seeding import derive_seed
from scribmed.training.slice_cache import SliceCache

__all__ = ["EpochSeededSampler", "IterationSampler", "SliceTrainingDataset", "slice_permutation"]


_PERM_TAG = 0x5CA1AB1E  # separates the permutation stream from the augmentation stream
_AUG_TAG = 0xA06


def slice_permutation(seed: int, epoch: int, block: int, n: int) -> np.ndarray:
    """The permutation of ``n`` slice indices used for positions ``block*n .. block*n + n - 1``."""
    return np.random.default_rng([int(seed), _PERM_TAG, int(epoch), int(block)]).permutation(n)


class _EpochSampler(Sampler):
    """The epoch counter both samplers share: ``set_epoch`` sets it, each ``iter()`` uses it and advances it."""

    def __init__(self, epoch_length: int, start_epoch: int = 0) -> None:
        self.epoch_length = int(epoch_length)
        self.epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch`` (0-based)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def _next_epoch(self) -> int:
        """The epoch this ``iter()`` produces (the counter moves on to the next)."""
        epoch = self.epoch
        self.epoch += 1
        return epoch


class EpochSeededSampler(_EpochSampler):
    """Yields ``(epoch, position)`` keys, ``epoch_length * batch_size`` per epoch for this rank.

    Under DDP each of ``world_size`` ranks takes every ``world_size``-th of the
    ``epoch_length * batch_size * world_size`` positions of the epoch, so every rank runs
    ``epoch_length`` batches of ``batch_size`` and no two ranks draw the same position.

    Each ``iter()`` uses the current epoch and then advances it; :meth:`set_epoch` sets it
    (the trainer does so at every epoch start, and on resume).

    Args:
        epoch_length: iterations per epoch.
        batch_size: samples per iteration on this rank.
        rank / world_size: this process's shard.
        start_epoch: first epoch (0-based).
    """

    def __init__(
        self, epoch_length: int, batch_size: int, rank: int = 0, world_size: int = 1, start_epoch: int = 0
    ) -> None:
        if epoch_length < 1 or batch_size < 1:
            raise ValueError(f"epoch_length and batch_size must be >= 1, got {epoch_length}, {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid shard: rank {rank} of world_size {world_size}")
        super().__init__(epoch_length, start_epoch)
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __len__(self) -> int:
        return self.epoch_length * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self._next_epoch()
        total = self.epoch_length * self.batch_size * self.world_size
        return ((epoch, p) for p in range(self.rank, total, self.world_size))


class IterationSampler(_EpochSampler):
    """Yields the 0-based iteration numbers of one epoch: ``epoch * epoch_length`` onwards.

    For datasets that build a whole batch per iteration from ``(seed, iteration)`` (the instance
    recipes' crops, :class:`~scribmed.training.instance_batches.CropBatchDataset`, loaded with
    ``batch_size=None``). Like :class:`EpochSeededSampler` each ``iter()`` uses the current epoch
    and then advances it, and the trainer sets the epoch at every epoch start and on resume.
    """

    def __init__(self, epoch_length: int, start_epoch: int = 0) -> None:
        if epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1, got {epoch_length}")
        super().__init__(epoch_length, start_epoch)

    def __len__(self) -> int:
        return self.epoch_length

    def __iter__(self) -> Iterator[int]:
        epoch = self._next_epoch()
        return iter(range(epoch * self.epoch_length, (epoch + 1) * self.epoch_length))


class SliceTrainingDataset(Dataset):
    """Map-style dataset over a :class:`SliceCache`, indexed by ``(epoch, position)`` keys.

    Args:
        cache: the pre-resized slices (needs ``scribble`` unless ``target_key`` names another).
        seed: run seed.
        transform: optional MONAI dictionary transform (e.g. ``DMPLSAugmentd``) applied to
            ``{"image": (C, h, w) float32, <target_key>: (1, h, w) uint8}``; if it is
            ``Randomizable`` it is reseeded for every key.
        target_key: the cache array used as training target (``"scribble"``, ``"label"``,
            ``"pseudo"``).
        extra_keys: further cache label arrays returned alongside (e.g. ``("pseudo",)`` for SAM
            pseudo labels); they go through ``transform`` with the target, so one spatial draw
            moves image, target and extras together.

    Returns per item: ``{"image": (C, h, w) float32 tensor, <target_key>: (h, w) int64 tensor,
    <extra key>: (h, w) int64 tensor, ..., "slice": int}``.
    """

    def __init__(
        self,
        cache: SliceCache,
        seed: int,
        transform: Optional[Callable[[Mapping[Hashable, Any]], Mapping[Hashable, Any]]] = None,
        target_key: str = "scribble",
        extra_keys: Sequence[str] = (),
    ) -> None:
        for key in (target_key, *extra_keys):
            if cache.array(key) is None:
                raise ValueError(f"the slice cache holds no {key!r} array")
        if target_key in extra_keys:
            raise ValueError(f"{target_key!r} is both the target and an extra key")
        if len(cache) == 0:
            raise ValueError("the slice cache is empty")
        self.cache = cache
        self.seed = int(seed)
        self.transform = transform
        self.target_key = target_key
        self.extra_keys = tuple(extra_keys)
        self._perm_key: tuple[int, int] | None = None
        self._perm: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.cache)

    def slice_index(self, epoch: int, position: int) -> int:
        """Cache row drawn at ``(epoch, position)``."""
        n = len(self.cache)
        block, offset = divmod(int(position), n)
        if self._perm_key != (epoch, block):
            self._perm = slice_permutation(self.seed, epoch, block, n)
            self._perm_key = (epoch, block)
        return int(self._perm[offset])  # type: ignore[index]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, position = (int(k) for k in key)
        idx = self.slice_index(epoch, position)
        item: dict[Hashable, Any] = {"image": self.cache.image[idx].copy()}
        for key in (self.target_key, *self.extra_keys):
            item[key] = self.cache.array(key)[idx][None].copy()
        if self.transform is not None:
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=derive_seed(self.seed, _AUG_TAG, epoch, position))
            item = dict(self.transform(item))
        out: dict[str, Any] = {"image": torch.as_tensor(np.ascontiguousarray(item["image"]), dtype=torch.float32)}
        for key in (self.target_key, *self.extra_keys):
            arr = torch.as_tensor(np.ascontiguousarray(item[key])).long()
            out[key] = arr.reshape(arr.shape[-2:])
        out["slice"] = idx
        return out
