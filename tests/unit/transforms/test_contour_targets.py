"""Contour targets, weak contour targets and contour post-processing (instances back from probabilities)."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose

from scribmed.transforms.contour_targets import (
    BACKGROUND,
    BOUNDARY,
    IGNORE,
    INTERIOR,
    ContourTarget,
    ContourTargetd,
    contour_target,
    instance_boundaries,
)
from scribmed.transforms.instance_postprocess import (
    InstancesFromContours,
    InstancesFromContoursd,
    instances_from_contours,
)
from scribmed.transforms.instance_weak_targets import (
    box_target,
    coarse_target,
    point_target,
    stroke_target,
    voronoi_edges,
)


def two_touching() -> np.ndarray:
    inst = np.zeros((10, 12), np.int32)
    inst[2:8, 1:6] = 1
    inst[2:8, 6:11] = 2
    return inst


def test_contour_target_values():
    t = contour_target(two_touching())
    assert t.dtype == np.uint8 and t.shape == (10, 12)
    # the shared edge between the two instances is boundary on both sides
    assert t[4, 5] == BOUNDARY and t[4, 6] == BOUNDARY
    assert t[4, 3] == INTERIOR and t[4, 8] == INTERIOR
    assert t[0, 0] == BACKGROUND and t[2, 3] == BOUNDARY
    # interior pixels: (6-2) rows x (5-2) cols per instance
    assert int((t == INTERIOR).sum()) == 2 * 4 * 3


def test_boundary_width_and_ignore():
    inst = np.zeros((12, 12), np.int32)
    inst[1:11, 1:11] = 5
    b2 = instance_boundaries(inst, 2)
    assert b2.sum() == 10 * 10 - 6 * 6
    t = contour_target(inst, ignore=inst == 0)
    assert (t[inst == 0] == IGNORE).all()
    with pytest.raises(ValueError, match="integer"):
        contour_target(inst.astype(float))


def test_contour_transforms_in_compose():
    inst = two_touching()[None]
    out = Compose([ContourTargetd("instance", output_keys="target")])({"instance": inst})
    assert out["target"].shape == (1, 10, 12)
    np.testing.assert_array_equal(out["target"][0], contour_target(inst[0]))
    np.testing.assert_array_equal(Compose([ContourTarget()])(inst)[0], contour_target(inst[0]))


def probs_of(inst: np.ndarray) -> np.ndarray:
    t = contour_target(inst)
    return np.stack([(t == c).astype(np.float32) for c in (0, 1, 2)])


def test_postprocess_splits_touching_instances():
    inst = two_touching()
    for mode in ("watershed", "components"):
        out = instances_from_contours(probs_of(inst), mode=mode, min_size=1)
        assert out.max() == 2
        # every pixel of each reference instance has one predicted id, and the two ids differ
        a, b = np.unique(out[inst == 1]), np.unique(out[inst == 2])
        assert len(a) == 1 and len(b) == 1 and a[0] != b[0] and a[0] > 0
        assert (out[inst == 0] == 0).all()


def test_postprocess_min_size_and_orphans():
    inst = np.zeros((20, 20), np.int32)
    inst[2:10, 2:10] = 1
    inst[15, 15] = 2  # 1 pixel: all boundary, no seed -> orphan blob, then dropped by min_size
    p = probs_of(inst)
    assert instances_from_contours(p, min_size=1).max() == 2
    assert instances_from_contours(p, min_size=2).max() == 1
    with pytest.raises(ValueError, match="3, H, W"):
        instances_from_contours(p[:2])


def test_postprocess_transforms_in_compose():
    p = probs_of(two_touching())
    out = Compose([InstancesFromContoursd("probs", output_key="pred", min_size=1)])({"probs": p})
    assert out["pred"].shape == (1, 10, 12) and out["pred"].dtype == np.int32
    np.testing.assert_array_equal(Compose([InstancesFromContours(min_size=1)])(p), out["pred"])


def test_point_target_discs_and_voronoi():
    t = point_target({1: [[3, 5]], 2: [[15, 5]]}, (11, 20), radius=1)
    assert t[5, 3] == INTERIOR and t[4, 3] == INTERIOR and t[5, 15] == INTERIOR
    # the Voronoi edge runs between x = 3 and x = 15 (x = 9 is equidistant)
    assert (t[1:-1, 9] == BACKGROUND).all() or (t[1:-1, 8] == BACKGROUND).all()
    assert t[0, 0] == IGNORE
    assert voronoi_edges(np.zeros((5, 5), int)).sum() == 0
    single = point_target({1: [[2, 2]]}, (6, 6), radius=0)
    assert int((single != IGNORE).sum()) == 1


def test_stroke_coarse_box_targets():
    s = np.zeros((6, 6), np.int32)
    s[1, 1:4] = 3
    s[5, :] = -1
    t = stroke_target(s)
    assert (t[1, 1:4] == INTERIOR).all() and (t[5] == BACKGROUND).all() and t[3, 3] == IGNORE
    c = coarse_target(two_touching(), band=1)
    assert c[0, 0] == BACKGROUND and c[4, 5] == IGNORE
    b = box_target({1: [1, 2, 3, 4]}, (6, 6))
    assert (b[2:5, 1:4] == IGNORE).all() and b[0, 0] == BACKGROUND and int((b == IGNORE).sum()) == 9
