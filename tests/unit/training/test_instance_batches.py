"""Crop batches of the instance recipes: one geometry for image and maps, a pure function of the iteration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scribmed.training.instance_batches import CropBatchDataset, TrainSample, collate, sample_batch
from scribmed.training.sampling import IterationSampler
from scribmed.transforms.contour_targets import IGNORE


def test_sample_batch_same_geometry_for_image_and_maps():
    img = np.arange(40 * 50, dtype=np.float32).reshape(1, 40, 50)
    s = TrainSample("a", img, {"copy": img[0].astype(np.int64)}, {})
    for item in sample_batch([s], 4, 32, np.random.default_rng(0)):
        np.testing.assert_array_equal(item["image"][0].astype(np.int64), item["copy"])
    small = TrainSample("b", np.ones((1, 10, 12), np.float32), {"t": np.zeros((10, 12), np.uint8)}, {"t": IGNORE})
    item = sample_batch([small], 1, 16, np.random.default_rng(0))[0]
    assert item["image"].shape == (1, 16, 16) and (item["t"] == IGNORE).sum() == 16 * 16 - 10 * 12


def test_collate_types():
    batch = collate([{"image": np.zeros((1, 4, 4), np.float64), "t": np.zeros((4, 4), np.uint8)}] * 3)
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (3, 1, 4, 4)
    assert batch["t"].dtype == torch.long


def test_crop_batches_depend_on_the_iteration_only():
    rng = np.random.default_rng(1)
    samples = [TrainSample(f"c{i}", rng.normal(size=(1, 40, 40)).astype(np.float32)) for i in range(3)]
    calls: list[int] = []

    def mix(items, r):
        calls.append(len(items))
        return items[::-1]

    ds = CropBatchDataset(samples, batch_size=2, patch=16, seed=7, mix=mix)
    sampler = IterationSampler(epoch_length=3)
    first = [b["image"] for b in DataLoader(ds, batch_size=None, sampler=sampler)]
    assert len(first) == 3 and first[0].shape == (2, 1, 16, 16) and calls == [2, 2, 2]
    sampler.set_epoch(0)
    again = [b["image"] for b in DataLoader(ds, batch_size=None, sampler=sampler)]
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ds[4]["image"], CropBatchDataset(samples, 2, 16, 7, mix)[4]["image"], rtol=0, atol=0)
    assert not torch.equal(ds[4]["image"], CropBatchDataset(samples, 2, 16, 8, mix)[4]["image"])
    assert list(IterationSampler(3, start_epoch=2)) == [6, 7, 8] and len(sampler) == 3
    with pytest.raises(ValueError, match="no training images"):
        CropBatchDataset([], 2, 16, 0)
