"""S4M stochastic points: shapes, probability weighting, small and zero-probability instances, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from scribmed.transforms import (
    StochasticInstancePoints,
    StochasticInstancePointsd,
    sample_instance_points,
)


def _instances() -> np.ndarray:
    inst = np.zeros((12, 14), np.int32)
    inst[1:5, 1:6] = 3  # 20 px
    inst[7:11, 8:13] = 1  # 20 px
    inst[10, 1:3] = 7  # 2 px
    return inst


def _at(inst: np.ndarray, coords: np.ndarray) -> np.ndarray:
    xy = coords.astype(int)
    return inst[xy[..., 1], xy[..., 0]]


def test_shapes_ids_and_points_inside_their_instance():
    inst = _instances()
    prob = np.random.default_rng(0).random(inst.shape)
    coords, labels, ids = sample_instance_points(prob, inst, k=3, rng=0)
    assert coords.shape == (3, 3, 2) and coords.dtype == np.float32
    assert labels.shape == (3, 3) and labels.dtype == np.int64 and (labels == 1).all()
    np.testing.assert_array_equal(ids, [1, 3, 7])
    np.testing.assert_array_equal(_at(inst, coords), np.repeat(ids[:, None], 3, axis=1))
    for row in range(2):  # >= k pixels: distinct points
        assert len({tuple(p) for p in coords[row].tolist()}) == 3
    assert len({tuple(p) for p in coords[2].tolist()}) <= 2  # 2 px instance: with replacement


def test_draws_follow_the_probability_within_the_mask():
    inst = np.zeros((4, 4), np.int32)
    inst[0, :2] = 1
    prob = np.zeros((4, 4))
    prob[0, 0], prob[0, 1] = 0.9, 0.1
    prob[3, 3] = 100.0  # outside the instance: never drawn
    gen = np.random.default_rng(1)
    hits = [sample_instance_points(prob, inst, k=1, rng=gen)[0][0, 0, 0] for _ in range(2000)]
    assert abs(np.mean(np.asarray(hits) == 0) - 0.9) < 0.03
    # a pixel of probability 0 is never drawn while positive ones remain
    prob[0, 1] = 0.0
    assert all(sample_instance_points(prob, inst, k=1, rng=s)[0][0, 0, 0] == 0 for s in range(20))


def test_zero_probability_masks_and_partially_zero_masks():
    inst = np.zeros((6, 6), np.int32)
    inst[1:4, 1:4] = 2  # 9 px
    zero = np.zeros(inst.shape)
    seen = set()
    for s in range(60):  # uniform when the mask's probabilities sum to 0
        c, _, _ = sample_instance_points(zero, inst, k=1, rng=s)
        seen.add(tuple(c[0, 0].tolist()))
    assert len(seen) == 9
    prob = zero.copy()
    prob[1, 1] = prob[3, 3] = 0.5  # only 2 positive pixels for k = 3
    c, _, _ = sample_instance_points(prob, inst, k=3, rng=0)
    pts = {tuple(p) for p in c[0].astype(int).tolist()}
    assert {(1, 1), (3, 3)} <= pts and len(pts) == 3


def test_inputs_ids_and_errors():
    inst = _instances()
    prob = np.ones(inst.shape, np.float32)
    a = sample_instance_points(prob[None], torch.from_numpy(inst)[None], k=2, rng=5)
    b = sample_instance_points(torch.from_numpy(prob), inst, k=2, rng=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c, _, ids = sample_instance_points(prob, inst, k=2, rng=0, ids=[7, 3])
    np.testing.assert_array_equal(ids, [7, 3])
    assert (_at(inst, c) == np.array([[7, 7], [3, 3]])).all()
    c, lab, ids = sample_instance_points(prob, np.zeros_like(inst), k=4)
    assert c.shape == (0, 4, 2) and lab.shape == (0, 4) and ids.shape == (0,)
    with pytest.raises(ValueError, match="not in the instance map"):
        sample_instance_points(prob, inst, ids=[2])
    with pytest.raises(ValueError, match=">= 0"):
        sample_instance_points(-prob, inst)
    with pytest.raises(ValueError, match="same"):
        sample_instance_points(prob[:5], inst)
    with pytest.raises(ValueError, match="k must"):
        StochasticInstancePoints(k=0)


def test_array_and_dict_transforms_in_compose_are_reproducible():
    inst = _instances()
    prob = np.random.default_rng(2).random(inst.shape)
    arr = Compose([StochasticInstancePoints(k=3)], map_items=False, unpack_items=True).set_random_state(seed=4)
    first = arr((prob, inst))
    arr.set_random_state(seed=4)
    again = arr((prob, inst))
    third = arr((prob, inst))
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], third[0])  # the state advances between calls
    dt = Compose([StochasticInstancePointsd("prob", "instance", k=3)]).set_random_state(seed=4)
    out = dt({"prob": prob[None], "instance": inst[None], "image": np.zeros((1, 12, 14))})
    np.testing.assert_array_equal(out["point_coords"], first[0])  # same draws as the array version
    assert out["point_labels"].shape == (3, 3) and list(out["point_ids"]) == [1, 3, 7] and "image" in out
    renamed = StochasticInstancePointsd("p", "i", coords_key="c", labels_key="l", ids_key="n")({"p": prob, "i": inst})
    assert {"c", "l", "n"} <= set(renamed)
    with pytest.raises(KeyError, match="needs keys"):
        StochasticInstancePointsd("prob", "instance")({"prob": prob})
    assert StochasticInstancePointsd("prob", "instance", allow_missing_keys=True)({"prob": prob}).keys() == {"prob"}
