"""The seeded random streams of a training run besides the global torch RNG.

The DMPLS loss's alpha draws and the DataLoader each get a generator of their own, derived from
the run seed, so creating an iterator never shifts the network's dropout stream; DDP ranks > 0
get their own dropout stream while rank 0 keeps the single-process one.
"""

from __future__ import annotations

import numpy as np
import torch

from scribmed.runtime import distributed as dist_utils

__all__ = ["derive_seed", "loader_generator", "loss_generator", "reseed_rank"]

_LOSS_SEED_TAG = 0xA1FA
_RANK_SEED_TAG = 0xDD9
_LOADER_SEED_TAG = 0x10AD


def derive_seed(*entropy: int) -> int:
    """A 31-bit seed from integers (``numpy.random.SeedSequence``), stable across platforms."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, dtype=np.uint32)[0] >> 1)


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


