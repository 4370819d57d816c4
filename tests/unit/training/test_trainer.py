"""DMPLS training engine: config, slice cache, seeded sampling, a short run, checkpoints, DDP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrun_env import free_port

from scribmed.data.case import CARDIAC, Case, CaseArrays
from scribmed.data.errors import DataError
from scribmed.data.phantoms import generate_cardiac
from scribmed.runtime.checkpoint import load_checkpoint, load_network_weights
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.training.config import poly_lr
from scribmed.training.sampling import (
    EpochSeededSampler,
    SliceTrainingDataset,
    slice_permutation,
)
from scribmed.training.slice_cache import SliceCache
from scribmed.recipes.dmpls.trainer import train_dmpls
from scribmed.runtime.files import file_sha256
from scribmed.networks.unet_dual import DualBranchUNet
from scribmed.transforms.augment import DMPLSAugmentd


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    """3 patients x 2 frames of 3 slices, 56x64 pixels (tiny cardiac phantoms)."""
    return [p.to_case() for p in generate_cardiac(3, seed=0, size=(56, 64), slices=(3, 3))]


def tiny_config(**kw) -> DMPLSConfig:
    base = dict(iterations=6, batch_size=4, size=(64, 64), epoch_length=3, device="cpu", progress=False)
    base.update(kw)
    return DMPLSConfig(**base)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["network"]


# ---------------------------------------------------------------------------------- config


def test_config_roundtrip_and_validation():
    cfg = DMPLSConfig(iterations=10, size=(128, 128), seed=3)
    d = cfg.to_dict()
    assert d["size"] == [128, 128]
    assert DMPLSConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert DMPLSConfig().max_epochs == 600 and DMPLSConfig(iterations=250).max_epochs == 3
    with pytest.raises(ValueError, match="unknown DMPLSConfig keys"):
        DMPLSConfig.from_dict({"iteratons": 5})
    with pytest.raises(ValueError, match="square"):
        DMPLSConfig(size=(64, 32))
    with pytest.raises(ValueError, match="batch_size"):
        DMPLSConfig(batch_size=0)


def test_poly_lr_schedule():
    assert poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0


# ---------------------------------------------------------------------------------- data


def test_slice_cache_shapes_and_nearest_labels(cases):
    cache = SliceCache.from_cases(cases[:2], size=(64, 64), keys=("image", "scribble", "label"), progress=False)
    assert len(cache) == 6 and cache.index[:4] == [(cases[0].case_id, 0), (cases[0].case_id, 1), (cases[0].case_id, 2), (cases[1].case_id, 0)]
    assert cache.image.shape == (6, 1, 64, 64) and cache.image.dtype == np.float32
    assert cache.scribble.shape == (6, 64, 64) and cache.scribble.dtype == np.uint8
    # nearest: no new label values appear
    assert set(np.unique(cache.scribble)) <= set(np.unique(cases[0].scribble)) | set(np.unique(cases[1].scribble))
    assert set(np.unique(cache.label)) <= {0, 1, 2, 3}
    assert list(cache.slices_of(cases[1].case_id)) == [3, 4, 5]
    no_scribble = Case("x", "x", Path("/data/x.h5"), loader=lambda: CaseArrays(np.zeros((2, 8, 8), np.float32)))
    with pytest.raises(DataError, match="x.h5: case x has no scribble"):
        SliceCache.from_cases([no_scribble], size=(16, 16), progress=False)


def test_sampler_epochs_and_rank_shards():
    s = EpochSeededSampler(epoch_length=3, batch_size=4)
    first = list(s)
    assert len(first) == len(s) == 12 and {e for e, _ in first} == {0}
    assert {e for e, _ in s} == {1}  # counts epochs itself
    s.set_epoch(0)
    assert list(s) == first  # settable on resume
    shards = [list(EpochSeededSampler(3, 4, rank=r, world_size=2, start_epoch=5)) for r in range(2)]
    pos = [{p for _, p in sh} for sh in shards]
    assert len(shards[0]) == len(shards[1]) == 12 and not pos[0] & pos[1] and pos[0] | pos[1] == set(range(24))
    # iteration by iteration, the two ranks' batches of 4 are exactly one process's batch of 8 (DDP's global batch)
    single = [p for _, p in EpochSeededSampler(3, 8, start_epoch=5)]
    for i in range(3):
        both = {p for sh in shards for _, p in sh[4 * i: 4 * i + 4]}
        assert both == set(single[8 * i: 8 * i + 8])


def test_dataset_is_a_pure_function_of_the_key(cases):
    cache = SliceCache.from_cases(cases[:2], size=(64, 64), progress=False)
    aug = DMPLSAugmentd(keys=("image", "scribble"), scribble_keys=("scribble",), ignore_index=4)
    ds = SliceTrainingDataset(cache, seed=1, transform=aug)
    n = len(cache)
    # each block of n positions is a permutation of all slices (sampling without replacement)
    assert sorted(ds.slice_index(2, p) for p in range(n, 2 * n)) == list(range(n))
    assert not np.array_equal(slice_permutation(1, 0, 0, 50), slice_permutation(1, 1, 0, 50))
    keys = [(0, p) for p in range(8)] + [(3, 1)]
    forward = [ds[k] for k in keys]
    backward = [ds[k] for k in reversed(keys)][::-1]
    for a, b in zip(forward, backward):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["scribble"], b["scribble"])
    item = forward[0]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    assert item["scribble"].shape == (64, 64) and item["scribble"].dtype == torch.int64
    # the augmentation depends on the key, not on call order
    other = SliceTrainingDataset(cache, seed=2, transform=aug)
    assert any(not torch.equal(other[k]["image"], f["image"]) for k, f in zip(keys, forward))


def test_batches_do_not_depend_on_num_workers(cases):
    cache = SliceCache.from_cases(cases[:2], size=(64, 64), progress=False)
    aug = DMPLSAugmentd(keys=("image", "scribble"), scribble_keys=("scribble",), ignore_index=4)
    ds = SliceTrainingDataset(cache, seed=0, transform=aug)
    runs = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=EpochSeededSampler(2, 4), num_workers=workers)
        runs.append([b["image"] for b in loader])
    assert len(runs[0]) == 2
    assert all(torch.equal(a, b) for a, b in zip(*runs))


# ---------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def run_a(cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("dmpls") / "run_a"
    return train_dmpls(cases[:4], cases[4:], CARDIAC, out, tiny_config())


def test_run_writes_best_last_history_curve(run_a, cases):
    assert run_a.iterations == 6
    for p in (run_a.last_checkpoint, run_a.best_checkpoint, run_a.history_path, run_a.curve_path):
        assert p is not None and p.is_file() and p.stat().st_size > 0
    # weights_only loading (torch.load(weights_only=True) inside) of both checkpoints
    for path in (run_a.last_checkpoint, run_a.best_checkpoint):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["recipe"] == "dmpls" and ckpt["config"]["iterations"] == 6
    net = DualBranchUNet(1, 4)
    ckpt = load_network_weights(net, run_a.best_checkpoint)
    assert ckpt["trainer"]["iteration"] == run_a.best_iteration
    assert ckpt["val_mean_dice"] == pytest.approx(run_a.best_metric)
    last = load_checkpoint(run_a.last_checkpoint)
    assert last["trainer"] == {"iteration": 6, "epoch": 2} and last["sampler_epoch"] == 2
    # recorded checksums are those of the files
    sums = json.loads((run_a.last_checkpoint.parent / "checkpoints.json").read_text())
    assert sums["last"]["sha256"] == file_sha256(run_a.last_checkpoint) == run_a.checksums["last"]
    assert sums["best"]["sha256"] == file_sha256(run_a.best_checkpoint)
    hist = json.loads(run_a.history_path.read_text())
    rows = hist["epochs"]
    assert [r["iteration"] for r in rows] == [3, 6]
    assert set(rows[0]["val_dice"]) == {"RV", "Myo", "LV"}
    vals = [r["val_mean_dice"] for r in rows]
    assert run_a.best_metric == max(vals) and run_a.best_iteration == rows[vals.index(max(vals))]["iteration"]
    # lr of the last iteration (0-based 5 of 6) follows the poly schedule
    assert rows[-1]["lr"] == pytest.approx(poly_lr(0.01, 5, 6))


def test_same_seed_same_weights(run_a, cases, tmp_path):
    run_b = train_dmpls(cases[:4], cases[4:], CARDIAC, tmp_path / "b", tiny_config())
    wa, wb = weights(run_a.last_checkpoint), weights(run_b.last_checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    run_c = train_dmpls(cases[:4], [], CARDIAC, tmp_path / "c", tiny_config(seed=1))
    wc = weights(run_c.last_checkpoint)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert run_c.best_checkpoint is None and run_c.checkpoint("best") == run_c.last_checkpoint


def test_loss_decreases_on_learnable_phantom(cases, tmp_path):
    cfg = tiny_config(iterations=24, epoch_length=6, batch_size=4, lr=0.05, augment=False)
    result = train_dmpls(cases, [], CARDIAC, tmp_path / "learn", cfg)
    losses = [r["loss"] for r in json.loads(result.history_path.read_text())["epochs"]]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses


def test_existing_run_is_not_overwritten_and_config_must_match(run_a, cases):
    out = run_a.last_checkpoint.parent
    with pytest.raises(DataError, match="already holds a training run"):
        train_dmpls(cases[:4], cases[4:], CARDIAC, out, tiny_config())
    with pytest.raises(DataError, match=r"configuration changed \(lr: 0.01 -> 0.02\)"):
        train_dmpls(cases[:4], cases[4:], CARDIAC, out, tiny_config(lr=0.02), resume=True)
    # resuming a finished run trains nothing and reports the same result
    again = train_dmpls(cases[:4], cases[4:], CARDIAC, out, tiny_config(), resume=True)
    assert again.best_iteration == run_a.best_iteration and again.iterations == 6
    assert file_sha256(again.last_checkpoint) == run_a.checksums["last"]


def test_bad_scribble_values_are_reported(cases, tmp_path):
    arrays = cases[0].load()
    bad = Case(
        "bad", "p", Path("/data/bad.h5"),
        loader=lambda: CaseArrays(arrays.image, arrays.label, np.full_like(arrays.scribble, 9), arrays.spacing),
    )  # fmt: skip
    with pytest.raises(DataError, match=r"scribble values \[9\]"):
        train_dmpls([bad], [], CARDIAC, tmp_path / "bad", tiny_config())


# ---------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, world: int, port: int, out: str, result_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    from scribmed.runtime.distributed import cleanup_distributed, init_distributed

    ctx = init_distributed("cpu")
    try:
        from scribmed.training.inference import unwrap_network
        from scribmed.recipes.dmpls.trainer import build_dmpls_trainer

        cases = [p.to_case() for p in generate_cardiac(2, seed=0, size=(56, 64), slices=(3, 3))]
        cfg = tiny_config(iterations=4, epoch_length=2, batch_size=2)
        trainer, _ = build_dmpls_trainer(cases[:3], cases[3:], CARDIAC, out, cfg)
        wrapped = type(trainer.network).__name__
        initial = {k: v.clone() for k, v in unwrap_network(trainer.network).state_dict().items()}
        trainer.run()
        state = unwrap_network(trainer.network).state_dict()
        torch.save(
            {"rank": ctx.rank, "backend": ctx.backend, "wrapped": wrapped, "initial": initial, "state": state},
            f"{result_dir}/rank{rank}.pt",
        )
    finally:
        cleanup_distributed()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp"
    # spawned, not forked: a forked rank inherits whatever this pytest worker still holds, e.g. a
    # DDP reducer and its gloo group from an earlier in-process test, and garbage-collecting that
    # inherited group waits forever on a condition variable whose threads were not forked (seen
    # as a hung CI run); each rank uses one intra-op thread
    mp.spawn(_ddp_worker, args=(2, free_port(), str(out), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["backend"] == "gloo" and r1["rank"] == 1 and r0["wrapped"] == "DistributedDataParallel"
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["trainer"]["iteration"] == 4 and len(ckpt["rng"]) == 2  # one RNG state per rank
    hist = json.loads((out / "history.json").read_text())
    assert [r["iteration"] for r in hist["epochs"]] == [2, 4]
    # both replicas trained (weights moved) and stayed in sync (DDP all-reduces the gradients)
    params = [k for k in r0["state"] if "running" not in k and "num_batches" not in k]
    assert not all(torch.equal(r0["state"][k], r0["initial"][k]) for k in params)
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in params)
    assert all(torch.equal(r0["state"][k], ckpt["network"][k]) for k in params)


# ------------------------------------------------------------------- issue 12 training knobs


def test_lr_horizon_decays_over_its_own_length(cases, tmp_path):
    """A short run at lr_horizon=60000 trains near the base rate (the reference's schedule)."""
    res = train_dmpls(cases[:4], cases[4:], CARDIAC, tmp_path / "h", tiny_config(lr_horizon=60000))
    lrs = [e["lr"] for e in json.loads(res.history_path.read_text())["epochs"]]
    assert lrs == pytest.approx([poly_lr(0.01, it - 1, 60000) for it in (3, 6)])
    assert lrs[-1] > 0.0099
    with pytest.raises(ValueError, match="lr_horizon"):
        tiny_config(lr_horizon=3)  # shorter than the run


def test_channels_last_forward_agrees_and_training_is_reproducible(cases, tmp_path):
    """NHWC gives the NCHW forward pass to float rounding; a channels-last run is reproducible.

    Dropout masks are drawn in memory order, so an NHWC run is another (equally seeded) random
    draw than the NCHW run, not the same numbers.
    """
    torch.manual_seed(0)
    net = DualBranchUNet().eval()
    x = torch.rand(2, 1, 64, 64)
    ref = net(x)
    out = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    a = train_dmpls(cases[:4], [], CARDIAC, tmp_path / "a", tiny_config(iterations=3, channels_last=True))
    b = train_dmpls(cases[:4], [], CARDIAC, tmp_path / "b", tiny_config(iterations=3, channels_last=True))
    wa, wb = weights(a.last_checkpoint), weights(b.last_checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bilinear_upsampling_and_nearest_images_run_and_predict(cases, tmp_path):
    cfg = tiny_config(iterations=3, upsample="bilinear", image_interp="nearest")
    res = train_dmpls(cases[:4], cases[4:], CARDIAC, tmp_path / "ref_like", cfg)
    net = DualBranchUNet(upsample="bilinear")
    assert sum(p.numel() for p in net.parameters()) == 2_447_064  # the WSL4MIS UNet_CCT's count
    assert sum(p.numel() for p in DualBranchUNet(upsample="transpose").parameters()) == 2_708_184
    net.load_state_dict(weights(res.last_checkpoint))
    with pytest.raises(RuntimeError):
        DualBranchUNet(upsample="transpose").load_state_dict(weights(res.last_checkpoint))
