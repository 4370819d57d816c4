"""Process groups: one under torchrun's environment (even of one process), none without it."""

from __future__ import annotations

import pytest
import torch.distributed as dist
from torchrun_env import group_of_one

from scribmed.runtime.distributed import cleanup_distributed, init_distributed

TORCHRUN = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def test_a_plain_process_joins_no_group(monkeypatch):
    for var in TORCHRUN:
        monkeypatch.delenv(var, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend) == (0, 1, None) and not dist.is_initialized()


def test_torchrun_with_one_process_makes_a_group_of_one(monkeypatch):
    env = group_of_one()
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    try:
        ctx = init_distributed("cpu")
        assert dist.is_initialized() and ctx.backend == "gloo" and ctx.world_size == 1 and ctx.is_main
        assert init_distributed("cpu").backend == "gloo"  # a second call joins the same group
    finally:
        cleanup_distributed()
    assert not dist.is_initialized()


def test_an_inconsistent_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        init_distributed("cpu")
