"""Connected-component instance split: order, connectivity, minimum size, array and dictionary transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from scribmed.transforms import SplitInstances, SplitInstancesd, split_instances
from scribmed.data.sesam_sampling import instance_points


def _mask() -> np.ndarray:
    m = np.zeros((12, 12), bool)
    m[0, 6] = m[1, 7] = True  # two pixels touching diagonally only
    m[4:8, 1:4] = True  # 12 px block
    m[4, 9:11] = True  # 2 px bar, first pixel on the same row as the block, further right
    m[11, 0] = True  # single pixel, last in raster order
    return m


def test_counts_and_raster_order():
    inst, n = split_instances(_mask())  # 8-connected by default
    assert n == 4 and inst.dtype == np.int32 and inst.shape == (12, 12)
    assert inst[0, 6] == inst[1, 7] == 1  # diagonal pair is one instance
    assert inst[4, 1] == 2 and inst[4, 9] == 3 and inst[11, 0] == 4  # first pixels in raster order
    assert (inst[~_mask()] == 0).all() and (inst[_mask()] > 0).all()
    assert [int((inst == i).sum()) for i in range(1, 5)] == [2, 12, 2, 1]


def test_connectivity_four_vs_eight():
    m = _mask()
    four, n4 = split_instances(m, connectivity=4)
    assert n4 == 5 and four[0, 6] == 1 and four[1, 7] == 2  # the diagonal pair splits
    for alias_a, alias_b in ((1, 4), (2, 8)):
        np.testing.assert_array_equal(split_instances(m, alias_a)[0], split_instances(m, alias_b)[0])
    with pytest.raises(ValueError, match="connectivity"):
        split_instances(m, connectivity=3)


def test_min_size_drops_small_components_and_renumbers():
    inst, n = split_instances(_mask(), min_size=2)
    assert n == 3 and inst[11, 0] == 0  # the single pixel is dropped (background)
    assert inst[0, 6] == 1 and inst[4, 1] == 2 and inst[4, 9] == 3  # order kept, consecutive
    inst, n = split_instances(_mask(), min_size=3)
    assert n == 1 and np.unique(inst).tolist() == [0, 1] and inst[4, 1] == 1
    assert split_instances(np.zeros((5, 6), bool))[1] == 0
    with pytest.raises(ValueError, match="min_size"):
        split_instances(_mask(), min_size=0)


def test_array_transform_keeps_shape_and_type_and_selects_a_class():
    label = np.zeros((1, 12, 12), np.uint8)
    label[0][_mask()] = 2
    label[0, 9:11, 5:8] = 1  # another class: ignored with class_index=2
    out = SplitInstances(class_index=2)(torch.from_numpy(label))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int32 and out.shape == (1, 12, 12)
    np.testing.assert_array_equal(out[0].numpy(), split_instances(_mask())[0])
    every = SplitInstances(connectivity=4, min_size=2)(label[0])  # non-zero = the mask
    # 4-connected, min 2 px: the two diagonal pixels and the single one go; block, bar, class-1 block stay
    assert isinstance(every, np.ndarray) and every.shape == (12, 12) and every.max() == 3


def test_dictionary_transform_in_compose():
    label = np.zeros((1, 12, 12), np.uint8)
    label[0][_mask()] = 1
    pipe = Compose([SplitInstancesd(keys="label", min_size=2, output_key="label_instances")])
    d = pipe({"label": label, "image": np.zeros((1, 12, 12), np.float32)})
    assert set(d) == {"label", "image", "label_instances"}
    assert d["label_instances"].shape == (1, 12, 12) and d["label_instances"].max() == 3
    with pytest.raises(ValueError, match="one output key per key"):
        SplitInstancesd(keys=("a", "b"), output_key="x")


def test_sesam_instance_points_use_the_same_numbering():
    m = _mask()
    inst, _ = split_instances(m)
    pts, which = instance_points(m, k=3, rng=np.random.RandomState(0))
    xy = pts.astype(int)
    np.testing.assert_array_equal(inst[xy[:, 1], xy[:, 0]], which)
    assert which.tolist() == [1, 1, 2, 2, 2, 3, 3, 4]
