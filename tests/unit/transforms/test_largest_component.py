"""Keep the largest connected component of one class, or of all foreground as one region (nnU-Net)."""

from __future__ import annotations

import numpy as np
import pytest

from scribmed.transforms.largest_component import keep_largest_component


def _volume() -> np.ndarray:
    labels = np.zeros((3, 12, 12), dtype=np.uint8)
    labels[:, 1:5, 1:5] = 1  # organ of class 1: 48 voxels
    labels[1, 9:11, 9:11] = 1  # spurious blob of class 1: 4 voxels
    labels[:, 1:5, 5:8] = 2  # class 2 touching class 1: 36 voxels
    labels[0, 10, 1] = 2  # lone class-2 voxel
    return labels


def test_one_class_keeps_its_largest_component_and_the_rest_becomes_background():
    labels = _volume()
    out = keep_largest_component(labels, [1])
    assert out.dtype == labels.dtype and out.shape == labels.shape
    assert (out[1, 9:11, 9:11] == 0).all() and (out[:, 1:5, 1:5] == 1).all()
    np.testing.assert_array_equal(out == 2, labels == 2)  # other classes untouched
    assert labels[1, 9, 9] == 1  # the input is not modified


def test_all_foreground_as_one_region_keeps_touching_classes_together():
    out = keep_largest_component(_volume(), [1, 2])
    assert (out[:, 1:5, 1:5] == 1).all() and (out[:, 1:5, 5:8] == 2).all()  # one component: kept with both labels
    assert out[1, 9, 9] == 0 and out[0, 10, 1] == 0


def test_connectivity_is_full_3d_corners_included():
    labels = np.zeros((3, 5, 5), dtype=np.int16)
    labels[0, 0, 0] = labels[1, 1, 1] = labels[2, 2, 2] = 3  # touching by corners only: one component
    labels[2, 4, 4] = 3  # apart
    out = keep_largest_component(labels, [3])
    assert out[0, 0, 0] == out[1, 1, 1] == out[2, 2, 2] == 3 and out[2, 4, 4] == 0


def test_components_tied_for_the_largest_are_all_kept_and_absent_classes_change_nothing():
    labels = np.zeros((1, 6, 9), dtype=np.uint8)
    labels[0, 0:2, 0:2] = 1
    labels[0, 0:2, 6:8] = 1
    labels[0, 5, 4] = 1
    out = keep_largest_component(labels, [1])
    assert out.sum() == 8 and out[0, 5, 4] == 0
    np.testing.assert_array_equal(keep_largest_component(labels, [2]), labels)


@pytest.mark.parametrize("region, match", [([], "region is empty"), ([0, 1], "background label 0")])
def test_bad_regions_are_refused(region, match):
    with pytest.raises(ValueError, match=match):
        keep_largest_component(np.zeros((2, 2, 2), np.uint8), region)


def test_float_labels_are_refused():
    with pytest.raises(ValueError, match="integer label map"):
        keep_largest_component(np.zeros((2, 2, 2), np.float32), [1])
